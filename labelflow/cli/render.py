"""What the commands print for people: the console streams, and each command's tables and summary lines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, ConsoleDimensions
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from labelflow.infra.local_stack import ServiceStatus, UpReport
    from labelflow.orchestration import Deployed
    from labelflow.tasks.registry import DatasetRegistry, DatasetVersion, PulledDataset
    from labelflow.tasks.validate import ValidationSummary

# Wide enough that no line of a pipe or a file is ever wrapped or cut (tables fit their content, URLs stay whole).
UNLIMITED_WIDTH = 100_000


class WholeLinesWhenPiped(Console):
    """A console that, writing to a pipe or a file, neither wraps nor cuts lines; at a terminal, the terminal's width."""

    @property
    def size(self) -> ConsoleDimensions:
        """The terminal's size, or an unlimited width when the output is not a terminal."""
        size = super().size
        if self.is_terminal or self._width is not None:
            return size
        return ConsoleDimensions(UNLIMITED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = WholeLinesWhenPiped()
# Messages are never hard-wrapped, at a terminal either: a wrapped line splits the S3 addresses and URLs in it.
err_console = WholeLinesWhenPiped(stderr=True, soft_wrap=True)

INGEST_COUNTS = (
    "listed",
    "already_ingested_or_quarantined",
    "new",
    "tasks_created",
    "duplicates",
    "quarantined",
    "predictions",
)
ANNOTATOR_COLUMNS = (
    "annotator", "tier", "score", "95% interval", "basis", "tasks scored", "annotations", "gold acc.", "agreement",
    "median lead s",
)  # fmt: skip


def stack_started(home: Path, reports: list[UpReport]) -> None:
    """`labelflow up`: each service's state and URL."""
    table = Table(title=f"labelflow local stack ({home})")
    for column in ("service", "state", "ready in", "url"):
        table.add_column(column, overflow="fold")  # never cut a URL or path
    for report in reports:
        ready = f"{report.seconds:.1f} s" if report.action == "started" else "-"
        table.add_row(report.name, report.action, ready, report.url)
    console.print(table)


def stack_login(login: dict[str, str], seconds: float) -> None:
    """After `labelflow up`: where to log in to Label Studio, and how long it all took."""
    console.print(
        f"Label Studio UI: {login['url']}  (user {login['username']}, password in `labelflow status --json`)\n"
        f"Total {seconds:.1f} s. Stop with `labelflow down`."
    )


def stack_status(home: Path, statuses: list[ServiceStatus]) -> None:
    """`labelflow status`: each service's process, health, URL and log."""
    # Cells as text, never markup or emoji codes: a path or an error message is printed as it is (and rich's emoji
    # table, 20 ms to load, stays out of the command people run most).
    table = Table(title=Text(f"labelflow local stack ({home})", style="table.title"))
    for column in ("service", "pid", "health", "url", "log"):
        table.add_column(Text(column), overflow="fold")  # never cut a URL or path
    for s in statuses:
        health = Text.assemble(("healthy", "green") if s.healthy else (s.detail, "red"))
        table.add_row(Text(s.name), Text(str(s.pid or "-")), health, Text(s.url), Text(s.log))
    console.print(table)


def ingest_summary(summary: dict[str, Any], spec_path: str | None = None) -> None:
    """The ingest flow's summary: object counts, quarantine reasons, time per stage, where to look next."""
    from labelflow.tasks.links import open_hint

    table = Table(title=f"ingest: {summary['project']}")
    table.add_column("")
    table.add_column("count", justify="right")
    for key in INGEST_COUNTS:
        table.add_row(key.replace("_", " "), str(summary[key]))
    for reason, count in summary["quarantined_by_reason"].items():
        table.add_row(f"  quarantined: {reason}", str(count))
    if summary.get("prediction_failures"):  # items the pre-labeling model failed on: people label them without one
        table.add_row("prediction failures", str(summary["prediction_failures"]))
    console.print(table)
    console.print("seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["seconds"].items()))
    console.print(f"Label Studio project: {summary['label_studio_url']}")
    console.print(
        f"quarantine report: {summary['quarantine_report']} (open it: {open_hint(spec_path, 'quarantine')})",
        markup=False,
    )


def collect_summary(summary: dict[str, Any], spec_path: str | None = None) -> None:
    """The collect flow's summary: what was collected, quality, annotators, validation and the dataset version."""
    # Imported here: the fewer modules --help loads, the faster it answers.
    from rich.markup import escape

    from labelflow.tasks.links import open_hint
    from labelflow.tasks.report_values import format_value

    stats = summary["collection"]
    console.print(
        f"[bold]{summary['project']}[/bold]: {stats['mode']} collection, {stats['changed_tasks']} changed tasks, "
        f"{stats['annotation_rows']} annotations, {stats['deleted_tasks']} deleted tasks "
        f"({sum(stats['seconds'].values()):.1f} s)"
    )
    console.print(_quality_table(summary["quality"]))
    console.print(_annotators_table(summary["annotators"]))
    console.print(f"routed back to Label Studio for another annotation: {summary['routed_back']} tasks")
    automation = summary["quality"].get("automation")
    if automation:
        console.print(f"automated labeling ({automation['status']}): {automation['reason']}", markup=False)
    console.print(
        f"quality report: {summary['report']}report.html (open it: {open_hint(spec_path, 'report')})", markup=False
    )
    validation = summary["validation"]
    if validation.get("skipped"):
        console.print(f"validation: skipped ({validation['skipped']})")
    else:
        console.print(
            f"validation: [green]passed[/green] {validation['evaluated']} expectations "
            f"(Data Docs: {validation['docs_index']}; open them: {escape(open_hint(spec_path, 'docs'))})"
        )
    dataset = summary["dataset"]
    if dataset.get("published"):
        console.print(
            f"[bold green]published[/bold green] dataset [bold]{dataset['dataset']}[/bold] version {dataset['version']}: "
            f"{dataset['rows']} rows at {dataset['location']}"
        )
    elif "version" in dataset:
        console.print(f"dataset [bold]{dataset['dataset']}[/bold]: no new version ({dataset['reason']})")
    else:
        console.print(f"dataset: not published ({dataset['reason']})")
    if "label_distribution" in dataset:
        console.print("labels: " + ", ".join(f"{k} {v}" for k, v in dataset["label_distribution"].items()))
        agreement = summary["quality"].get("mean_task_agreement")
        console.print(f"mean task agreement: {format_value(agreement)}")
        console.print(f"MLflow: {dataset['mlflow_url']}")
    console.print(f"Label Studio project: {summary['label_studio_url']}")


# Failed expectations a failed collect lists (two lines each); the rest are in the full result it links to.
SHOWN_FAILED_EXPECTATIONS = 3


def validation_failure(summary: ValidationSummary, spec_path: str | None = None) -> str:
    """A failed validation in a few lines: the verdict, the first failed expectations with examples, the full result."""
    from labelflow.tasks.links import open_hint

    lines = summary.text().splitlines()
    head, failures, tail = lines[0], lines[1:], []
    if summary.docs_index:
        failures, tail = failures[:-1], failures[-1:]
    # each failed expectation is a "- ..." line and at most one indented detail line
    starts = [i for i, line in enumerate(failures) if line.startswith("- ")]
    if len(starts) > SHOWN_FAILED_EXPECTATIONS:
        hidden = len(starts) - SHOWN_FAILED_EXPECTATIONS
        failures = [*failures[: starts[SHOWN_FAILED_EXPECTATIONS]], f"- and {hidden} more failed expectations"]
    if tail:
        tail.append(f"open the Data Docs: {open_hint(spec_path, 'docs')}")
    return "\n".join([f"nothing was published. {head}", *failures, *tail])


def _quality_table(quality: dict[str, Any]) -> Table:
    """The batch's quality metrics, one per row."""
    from labelflow.tasks.report_values import metrics_lines

    metrics = Table(title="quality")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    for name, value in metrics_lines(quality):
        metrics.add_row(name, value)
    return metrics


def _annotators_table(annotators: list[dict[str, Any]]) -> Table:
    """Each annotator's tier, score with its 95% interval, and what it rests on."""
    from labelflow.tasks.report_values import format_value

    def interval(row: dict[str, Any]) -> str:
        # As the report shows it; "–" without one (or in a summary written before intervals were kept).
        low, high = row.get("score_low"), row.get("score_high")
        if format_value(low) == "–" or format_value(high) == "–":
            return "–"
        return f"{float(low):.1%}–{float(high):.1%}"

    people = Table(title="annotators")
    for column in ANNOTATOR_COLUMNS:
        people.add_column(column)
    for row in annotators:
        people.add_row(
            str(row["annotator_email"] or row["annotator_id"]),
            row["tier"],
            format_value(row["score"], "score"),
            interval(row),
            str(row["score_basis"] or "–"),
            format_value(row.get("score_tasks")),
            str(row["annotations"]),
            format_value(row["gold_accuracy"], "gold_accuracy"),
            format_value(row["agreement_with_consensus"], "agreement_with_consensus"),
            format_value(row["median_lead_time_seconds"]),
        )
    return people


def pulled_as_json(pulled: PulledDataset) -> dict[str, Any]:
    """What `labelflow pull --json` prints: the version, its local files and its manifest."""
    payload = {
        "name": pulled.name,
        "version": pulled.version,
        "files": {k: str(v) for k, v in pulled.files.items()},
    }
    return payload | {"manifest": pulled.manifest}


def pulled_dataset(pulled: PulledDataset) -> None:
    """`labelflow pull`: each verified file, its role, size and digest."""
    table = Table(title=f"{pulled.name} version {pulled.version}: {pulled.manifest['rows']} rows, verified")
    for column in ("file", "role", "bytes", "sha256"):
        table.add_column(column, overflow="fold")  # never cut a URL or path
    for entry in pulled.manifest["files"]:
        table.add_row(str(pulled.files[entry["path"]]), entry["role"], str(entry["bytes"]), entry["sha256"][:16] + "…")
    console.print(table)


def dataset_version_rows(registry: DatasetRegistry, versions: list[DatasetVersion]) -> list[dict[str, Any]]:
    """One row per published version, as `labelflow datasets` shows it (and prints it with --json)."""
    return [
        {
            "version": v.version,
            "rows": v.tags.get("labelflow.dataset.rows"),
            "digest": v.digest,
            "location": v.location,
            "git_revision": v.tags.get("labelflow.git.revision"),
            "mlflow_url": registry.tracking.run_url(v.experiment_id, v.run_id),
        }
        for v in versions
    ]


def dataset_versions(name: str, rows: list[dict[str, Any]]) -> None:
    """`labelflow datasets`: the published versions of one dataset."""
    table = Table(title=f"dataset {name}: {len(rows)} published versions")
    for column in ("version", "rows", "digest", "location", "MLflow"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["version"]), str(row["rows"]), row["digest"][:12], row["location"], row["mlflow_url"])
    console.print(table)


def simulation(project_id: int, result: dict[str, Any]) -> None:
    """`labelflow simulate`: each simulated annotator's configured and observed accuracy."""
    table = Table(title=f"simulated annotation of project {project_id}")
    for column in ("annotator", "configured accuracy", "annotations", "observed accuracy"):
        table.add_column(column, overflow="fold")  # never cut a URL or path
    for row in result["annotators"]:
        configured = "spammer" if row["spammer"] else f"{row['configured_accuracy']:.0%}"
        observed = "–" if row["observed_accuracy"] is None else f"{row['observed_accuracy']:.1%}"
        table.add_row(row["email"], configured, str(row["annotations"]), observed)
    console.print(table)
    console.print(
        f"{result['annotations_created']} annotations created on {result['tasks_with_truth']} tasks with a known truth"
    )


def deployment_rows(deployed: list[Deployed]) -> list[dict[str, Any]]:
    """What `labelflow deploy --json` prints: each stage's deployment and schedule."""
    return [
        {
            "stage": d.stage,
            "deployment": d.deployment,
            "id": str(d.deployment_id),
            "every_seconds": d.every and d.every.total_seconds(),
        }
        for d in deployed
    ]


def deployments(project: str, deployed: list[Deployed], ui: str) -> None:
    """`labelflow deploy`: each stage's deployment, schedule and Prefect UI page, then how runs happen."""
    table = Table(title=f"deployments for {project}")
    for column in ("stage", "deployment", "schedule", "URL"):
        table.add_column(column, overflow="fold")  # never cut a URL or path
    for d in deployed:
        table.add_row(
            d.stage,
            d.deployment,
            f"every {d.every}" if d.every else "none",
            f"{ui}/deployments/deployment/{d.deployment_id}",
        )
    console.print(table)
    console.print(
        "Runs need a worker: `labelflow worker` (or `labelflow up --with-worker`). The event listener (`labelflow "
        "listen`, part of the local stack) turns new objects in the sources and new annotations into runs. Run one now: "
        f"`prefect deployment run '{deployed[0].deployment}'`"
    )
