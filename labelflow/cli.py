"""The `labelflow` command line."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labelflow.infra.ports import ports_help
from labelflow.integrations.errors import SettingsError
from labelflow.layout import PROJECT_DIR, WORK_POOL
from labelflow.runtime import prefect_connection

if TYPE_CHECKING:
    from labelflow.infra.local_stack import LocalStack

app = typer.Typer(
    name="labelflow",
    help="Workflow-orchestrated data labeling: object storage -> Label Studio -> quality -> validation -> MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: Typer's rich help imports markdown-it and rich's traceback module (about 0.8 s) on every --help.
    rich_markup_mode=None,
)
console = Console()
err_console = Console(stderr=True)


def _stack(home: Path | None, **ports: int | None) -> LocalStack:
    """Stack configuration from options, then LABELFLOW_STACK_* variables, then defaults."""
    # Imported here: only up, down and status need the local stack's machinery (and its clients).
    from labelflow.infra.local_stack import LocalStack, StackConfig

    overrides = {key: value for key, value in ports.items() if value is not None}
    if home is not None:
        overrides["home"] = home.resolve()
    return LocalStack(StackConfig(**overrides))


HomeOption = Annotated[
    Path | None,
    typer.Option(help="State, logs and data directory of the local stack [default: $LABELFLOW_HOME or ./.labelflow]"),
]


@app.command(epilog=ports_help())
def up(
    home: HomeOption = None,
    s3_port: Annotated[int | None, typer.Option(help="S3 port (env LABELFLOW_STACK_S3_PORT; default 8333)")] = None,
    label_studio_port: Annotated[
        int | None, typer.Option(help="Label Studio port (env LABELFLOW_STACK_LABEL_STUDIO_PORT; default 8080)")
    ] = None,
    mlflow_port: Annotated[
        int | None, typer.Option(help="MLflow port (env LABELFLOW_STACK_MLFLOW_PORT; default 5000)")
    ] = None,
    prefect_port: Annotated[
        int | None, typer.Option(help="Prefect port (env LABELFLOW_STACK_PREFECT_PORT; default 4200)")
    ] = None,
    listener_port: Annotated[
        int | None, typer.Option(help="Event listener port (env LABELFLOW_STACK_LISTENER_PORT; default 8700)")
    ] = None,
    with_worker: Annotated[
        bool, typer.Option(help="Also start `labelflow worker` (runs the deployments' flow runs)")
    ] = False,
) -> None:
    """Start the local stack (event listener, SeaweedFS S3, Label Studio, MLflow, Prefect) on 127.0.0.1; idempotent."""
    stack = _stack(
        home,
        s3_port=s3_port,
        label_studio_port=label_studio_port,
        mlflow_port=mlflow_port,
        prefect_port=prefect_port,
        listener_port=listener_port,
    )
    from labelflow.infra.local_stack import StackError

    began = time.monotonic()
    try:
        reports = stack.up(echo=lambda line: console.print(f"[dim]{line}[/dim]"), with_worker=with_worker)
    except StackError as exc:
        raise _fail("labelflow up failed", exc, 1) from None
    table = Table(title=f"labelflow local stack ({stack.config.home})")
    for column in ("service", "state", "ready in", "url"):
        table.add_column(column)
    for report in reports:
        ready = f"{report.seconds:.1f} s" if report.action == "started" else "-"
        table.add_row(report.name, report.action, ready, report.url)
    console.print(table)
    login = stack.connection()["label_studio_login"]
    console.print(
        f"Label Studio UI: {login['url']}  (user {login['username']}, password in `labelflow status --json`)\n"
        f"Total {time.monotonic() - began:.1f} s. Stop with `labelflow down`."
    )


@app.command()
def down(home: HomeOption = None) -> None:
    """Stop exactly the processes `labelflow up` started (data is kept)."""
    stack = _stack(home)
    for name, outcome in stack.down().items():
        console.print(f"{name}: {outcome}")


@app.command()
def status(
    home: HomeOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable URLs, health and local credentials")
    ] = False,
) -> None:
    """Show each local service, its URL and health; exit 1 if any is down."""
    stack = _stack(home)
    statuses = stack.status()
    if as_json:
        payload = {"services": [s.as_dict() for s in statuses]}
        if (stack.config.home / "credentials.json").is_file():
            payload.update(stack.connection())
        typer.echo(json.dumps(payload, indent=2))
    else:
        table = Table(title=f"labelflow local stack ({stack.config.home})")
        for column in ("service", "pid", "health", "url", "log"):
            table.add_column(column)
        for s in statuses:
            health = "[green]healthy[/green]" if s.healthy else f"[red]{s.detail}[/red]"
            table.add_row(s.name, str(s.pid or "-"), health, s.url, s.log)
        console.print(table)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@app.command()
def smoke() -> None:
    """Round-trip one object through every service of the configured stack and report what each did."""
    try:
        with prefect_connection() as prefect:
            from labelflow.flows.smoke import smoke_check

            for line in smoke_check():
                console.print(f"[green]ok[/green] {line}")
    except SettingsError as exc:
        raise _fail("configuration", exc, 2) from None
    console.print(f"[green]ok[/green] Prefect: flow run recorded at {prefect.url.removesuffix('/api')}/runs")


def _fail(kind: str, exc: Exception, code: int) -> typer.Exit:
    # One line at any terminal width (no soft wrapping), and the error's own text is never read as markup.
    err_console.print(f"[bold red]{kind}[/bold red]: {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code)


class _WithoutTracebacksOf(logging.Formatter):
    """Prefect's console format, minus the traceback of errors the CLI reports itself in one line."""

    def __init__(self, inner: logging.Formatter | None, expected: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.expected = expected

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info and isinstance(record.exc_info[1], self.expected)):
            return self.inner.format(record)
        exc_info, exc_text = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:  # other handlers (the Prefect API's run logs) still get the traceback
            record.exc_info, record.exc_text = exc_info, exc_text


def _console_logs_without_tracebacks_of(*expected: type[BaseException]) -> None:
    """Prefect logs failed tasks and flows with tracebacks on stderr; expected errors keep only their message."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _WithoutTracebacksOf):
            handler.setFormatter(_WithoutTracebacksOf(handler.formatter, expected))


@contextmanager
def _reported_failures(
    stage: str, *failures: type[Exception], bad_input: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Expected errors as one line and an exit code: 2 for a bad spec, configuration or input, 1 for a failed run."""
    from labelflow.tasks.spec import SpecError

    try:
        yield
    except SpecError as exc:
        raise _fail("spec", exc, 2) from None
    except SettingsError as exc:
        raise _fail("configuration", exc, 2) from None
    except bad_input as exc:
        raise _fail(stage, exc, 2) from None
    except failures as exc:
        raise _fail(f"{stage} failed", exc, 1) from None


@app.command()
def ingest(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML)")],
    limit: Annotated[int | None, typer.Option(help="Ingest at most this many new objects in this run")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON")] = False,
) -> None:
    """Ingest new objects from the spec's sources into its Label Studio project (incremental, idempotent)."""
    from labelflow.integrations.label_studio import LabelStudioError
    from labelflow.integrations.object_store import ObjectStoreError
    from labelflow.tasks.spec import SpecError, load_spec

    with _reported_failures("ingest", LabelStudioError, ObjectStoreError):
        load_spec(spec)  # fail on a broken spec before any server is contacted
        with prefect_connection():
            from labelflow.flows.ingest import ingest as ingest_flow

            _console_logs_without_tracebacks_of(SpecError, LabelStudioError, ObjectStoreError)
            summary = ingest_flow(str(spec.resolve()), limit=limit)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"ingest: {summary['project']}")
    table.add_column("")
    table.add_column("count", justify="right")
    for key in (
        "listed",
        "already_ingested_or_quarantined",
        "new",
        "tasks_created",
        "duplicates",
        "quarantined",
        "predictions",
    ):
        table.add_row(key.replace("_", " "), str(summary[key]))
    for reason, count in summary["quarantined_by_reason"].items():
        table.add_row(f"  quarantined: {reason}", str(count))
    console.print(table)
    console.print("seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["seconds"].items()))
    console.print(f"Label Studio project: {summary['label_studio_url']}")
    console.print(f"quarantine report: {summary['quarantine_report']}")


@app.command()
def collect(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML)")],
    full: Annotated[bool, typer.Option(help="Re-read every task (also notices tasks deleted in Label Studio)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON")] = False,
) -> None:
    """Collect annotations, judge quality, validate the batch and publish a new dataset version when it changed."""
    from labelflow.integrations.great_expectations import OfflineDocsError, SuiteError
    from labelflow.integrations.label_studio import LabelStudioError
    from labelflow.integrations.mlflow_tracking import MLflowError
    from labelflow.integrations.object_store import ObjectStoreError
    from labelflow.tasks.collect import CollectError
    from labelflow.tasks.quality import GoldError
    from labelflow.tasks.registry import DatasetIntegrityError
    from labelflow.tasks.spec import SpecError, load_spec
    from labelflow.tasks.validate import ValidationFailed

    try:
        with _reported_failures(
            "collect",
            CollectError,
            GoldError,
            LabelStudioError,
            ObjectStoreError,
            MLflowError,
            DatasetIntegrityError,
            OfflineDocsError,
            bad_input=(SuiteError,),
        ):
            load_spec(spec)
            with prefect_connection():
                from labelflow.flows.collect import collect as collect_flow

                _console_logs_without_tracebacks_of(
                    SpecError,
                    CollectError,
                    GoldError,
                    LabelStudioError,
                    ObjectStoreError,
                    MLflowError,
                    ValidationFailed,
                )
                summary = collect_flow(str(spec.resolve()), full=full)
    except ValidationFailed as exc:
        err_console.print(f"[bold red]validation failed[/bold red]: nothing was published\n{exc}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
        return
    from labelflow.tasks.quality_report import format_value, metrics_lines

    stats = summary["collection"]
    console.print(
        f"[bold]{summary['project']}[/bold]: {stats['mode']} collection, {stats['changed_tasks']} changed tasks, "
        f"{stats['annotation_rows']} annotations, {stats['deleted_tasks']} deleted tasks "
        f"({sum(stats['seconds'].values()):.1f} s)"
    )
    metrics = Table(title="quality")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    for name, value in metrics_lines(summary["quality"]):
        metrics.add_row(name, value)
    console.print(metrics)
    people = Table(title="annotators")
    for column in ("annotator", "tier", "score", "basis", "annotations", "gold acc.", "agreement", "median lead s"):
        people.add_column(column)
    for row in summary["annotators"]:
        people.add_row(
            str(row["annotator_email"] or row["annotator_id"]),
            row["tier"],
            format_value(row["score"], "score"),
            str(row["score_basis"] or "–"),
            str(row["annotations"]),
            format_value(row["gold_accuracy"], "gold_accuracy"),
            format_value(row["agreement_with_consensus"], "agreement_with_consensus"),
            format_value(row["median_lead_time_seconds"]),
        )
    console.print(people)
    console.print(f"routed back to Label Studio for another annotation: {summary['routed_back']} tasks")
    console.print(f"quality report: {summary['report']}report.html")
    validation = summary["validation"]
    if validation.get("skipped"):
        console.print(f"validation: skipped ({validation['skipped']})")
    else:
        console.print(
            f"validation: [green]passed[/green] {validation['evaluated']} expectations "
            f"(Data Docs: {validation['docs_index']})"
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


@app.command()
def pull(
    reference: Annotated[str, typer.Argument(metavar="NAME[:VERSION|latest]", help="Dataset name and version")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the files into")],
    as_json: Annotated[bool, typer.Option("--json", help="Print what was pulled as JSON")] = False,
) -> None:
    """Download a published dataset version and verify every file's SHA-256 against its manifest."""
    from labelflow.datasets import dataset_registry
    from labelflow.integrations.mlflow_tracking import MLflowError
    from labelflow.integrations.object_store import ObjectStoreError
    from labelflow.tasks.registry import DatasetIntegrityError, DatasetNotFound, parse_reference

    with _reported_failures(
        "pull", DatasetIntegrityError, ObjectStoreError, MLflowError, bad_input=(DatasetNotFound, ValueError)
    ):
        name, version = parse_reference(reference)
        pulled = dataset_registry().pull(name, version, out)
    if as_json:
        payload = {
            "name": pulled.name,
            "version": pulled.version,
            "files": {k: str(v) for k, v in pulled.files.items()},
        }
        typer.echo(json.dumps(payload | {"manifest": pulled.manifest}, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{pulled.name} version {pulled.version}: {pulled.manifest['rows']} rows, verified")
    for column in ("file", "role", "bytes", "sha256"):
        table.add_column(column)
    for entry in pulled.manifest["files"]:
        table.add_row(str(pulled.files[entry["path"]]), entry["role"], str(entry["bytes"]), entry["sha256"][:16] + "…")
    console.print(table)


@app.command()
def datasets(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """List the published versions of a dataset."""
    from labelflow.datasets import dataset_registry
    from labelflow.integrations.mlflow_tracking import MLflowError

    with _reported_failures("datasets", MLflowError):
        registry = dataset_registry()
        versions = registry.versions(name)
    rows = [
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
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"dataset {name}: {len(rows)} published versions")
    for column in ("version", "rows", "digest", "location", "MLflow"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["version"]), str(row["rows"]), row["digest"][:12], row["location"], row["mlflow_url"])
    console.print(table)


def _read_bytes(path: str) -> bytes:
    """A local file or an s3:// object."""
    if path.startswith("s3://"):
        from labelflow.integrations.resources import Resources
        from labelflow.tasks.spec import S3Location

        location = S3Location.parse(path)
        return Resources.from_settings().store.get_bytes(location.bucket, location.prefix)
    return Path(path).read_bytes()


@app.command()
def simulate(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML) of an ingested classification project")],
    annotators: Annotated[
        int | None, typer.Option(help="Number of simulated annotators (default: one per accuracy)")
    ] = None,
    accuracy: Annotated[
        str, typer.Option(help="Comma-separated accuracies, cycled over the annotators")
    ] = "0.95,0.8,0.6",
    spammers: Annotated[int, typer.Option(help="Extra annotators who answer uniformly at random")] = 0,
    per_task: Annotated[int | None, typer.Option(help="Annotators per task (default: the spec's overlap)")] = None,
    limit: Annotated[int | None, typer.Option(help="Create at most this many annotations")] = None,
    truth: Annotated[
        str | None, typer.Option(help="CSV/JSONL (local or s3://) of source_uri|source_key|content_sha256 and label")
    ] = None,
    truth_pattern: Annotated[
        str | None, typer.Option(help="Regex with a (?P<label>...) group applied to each source URI")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (the same seed gives the same answers)")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Create Label Studio users that annotate the project's tasks through the API with known accuracy."""
    from labelflow.integrations.label_studio import LabelStudioError
    from labelflow.integrations.object_store import ObjectStoreError
    from labelflow.tasks.collect import CollectError, recorded_project
    from labelflow.tasks.quality import parse_gold
    from labelflow.tasks.simulate import build_annotators, run
    from labelflow.tasks.spec import load_spec

    # Malformed --accuracy, a bad truth file or an unusable simulation setup are input errors (exit 2).
    with _reported_failures(
        "simulate", CollectError, LabelStudioError, ObjectStoreError, OSError, bad_input=(ValueError,)
    ):
        project_spec = load_spec(spec)
        rates = [float(value) for value in accuracy.split(",") if value.strip()]
        count = annotators if annotators is not None else len(rates)
        cycled = [rates[i % len(rates)] for i in range(count)] if rates else []
        people = build_annotators(cycled, spammers)
        gold = parse_gold(_read_bytes(truth), truth, project_spec.labels) if truth else None
        from labelflow.integrations.resources import Resources

        resources = Resources.from_settings(label_studio_timeout=600)
        store, ls = resources.store, resources.label_studio_client
        project_id = recorded_project.fn(store, project_spec)
        result = run(ls, project_spec, project_id, people, gold, truth_pattern, per_task, limit, seed)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"simulated annotation of project {project_id}")
    for column in ("annotator", "configured accuracy", "annotations", "observed accuracy"):
        table.add_column(column)
    for row in result["annotators"]:
        configured = "spammer" if row["spammer"] else f"{row['configured_accuracy']:.0%}"
        observed = "–" if row["observed_accuracy"] is None else f"{row['observed_accuracy']:.1%}"
        table.add_row(row["email"], configured, str(row["annotations"]), observed)
    console.print(table)
    console.print(
        f"{result['annotations_created']} annotations created on {result['tasks_with_truth']} tasks with a known truth"
    )


@app.command()
def deploy(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML)")],
    ingest_every: Annotated[str, typer.Option(help="Ingest schedule: 30s, 10m, 2h, 1d or off")] = "10m",
    collect_every: Annotated[str, typer.Option(help="Collect + validate + register schedule, or off")] = "30m",
    pipeline_every: Annotated[str, typer.Option(help="Whole-pipeline schedule, or off")] = "off",
    pool: Annotated[str | None, typer.Option(help="Work pool [default: the one in prefect.yaml]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was registered as JSON")] = False,
) -> None:
    """Register this spec's ingest, collect and pipeline deployments (from prefect.yaml) with their schedules."""
    import httpx

    from labelflow.orchestration import DeployError, deploy_spec, parse_every
    from labelflow.tasks.spec import load_spec

    with _reported_failures("deploy", httpx.HTTPError, bad_input=(DeployError,)):
        project_spec = load_spec(spec)
        every = {
            "ingest": parse_every(ingest_every),
            "collect": parse_every(collect_every),
            "pipeline": parse_every(pipeline_every),
        }
        with prefect_connection() as prefect:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                deployed = deploy_spec(client, project_spec, spec, every, PROJECT_DIR, pool)
    ui = prefect.url.removesuffix("/api")
    if as_json:
        rows = [
            {
                "stage": d.stage,
                "deployment": d.deployment,
                "id": str(d.deployment_id),
                "every_seconds": d.every and d.every.total_seconds(),
            }
            for d in deployed
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"deployments for {project_spec.name}")
    for column in ("stage", "deployment", "schedule", "URL"):
        table.add_column(column)
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


@app.command()
def worker(
    pool: Annotated[str, typer.Option(help="Work pool to take flow runs from")] = WORK_POOL,
    health_port: Annotated[
        int | None, typer.Option(help="Serve Prefect's worker health check on 127.0.0.1:PORT/health [off]")
    ] = None,
    project_dir: Annotated[Path | None, typer.Option(help="Checkout the flows run from [this one]")] = None,
) -> None:
    """Run a Prefect process worker for the pool (creating the pool if needed); flows run from the checkout."""
    import os

    import httpx
    from prefect.client.orchestration import get_client

    from labelflow.orchestration import ensure_work_pool, prefect_worker_command, worker_environment

    directory = (project_dir or PROJECT_DIR).resolve()
    with _reported_failures("worker", OSError), prefect_connection() as prefect, get_client(sync_client=True) as client:
        try:
            ensure_work_pool(client, pool)
        except httpx.HTTPError as exc:
            raise ConnectionError(f"cannot reach the Prefect server at {prefect.url}: {exc}") from exc
    env = worker_environment(directory) | {"PREFECT_API_URL": prefect.url}
    if health_port:
        env |= {"PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1", "PREFECT_WORKER_WEBSERVER_PORT": str(health_port)}
    command = prefect_worker_command(pool, health_port)
    err_console.print(f"labelflow worker: pool {pool}, flows from {directory}")
    os.chdir(directory)
    os.execve(command[0], command, env)  # the worker replaces this process: signals and exit code are its own


@app.command()
def listen(
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 in a container)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port [the stack's 8700]")] = 8700,
    debounce: Annotated[float, typer.Option(help="Seconds a triggered run waits, gathering more events")] = 15.0,
) -> None:
    """Turn object-store and Label Studio webhooks into debounced ingest and collect runs of deployed specs."""
    import logging

    from prefect.client.orchestration import get_client

    from labelflow.integrations.settings import ListenerSettings, load_settings
    from labelflow.orchestration import build_listener, serve_until_stopped

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with _reported_failures("listen", OSError), prefect_connection(), get_client(sync_client=True) as client:
        from labelflow.integrations.resources import Resources

        settings = load_settings(ListenerSettings)
        resources = Resources.from_settings()
        listener = build_listener(
            client,
            settings.base_url,
            settings.token.get_secret_value(),
            resources.store,
            resources.label_studio_client,
            debounce,
        )
        server = listener.server(host, port)  # a busy port fails here, before anything starts
        listener.start()  # servers still starting are fine: routes are retried
        err_console.print(f"labelflow listen: http://{host}:{port}/hooks/{{seaweedfs,s3,label-studio}}")
        serve_until_stopped(server, listener.stop)


@app.command()
def demo(
    images: Annotated[
        int, typer.Option(help="Digit images to label (of scikit-learn's 1,797; the rest test the model)")
    ] = 200,
    texts: Annotated[
        int, typer.Option(help="Chinese reviews to label (of the 800 bundled; the rest test the model)")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Random seed for the sample and the simulated annotators")] = 0,
    home: HomeOption = None,
) -> None:
    """The whole pipeline on real sample data: stack up, upload, ingest, annotate, judge, validate, publish, train."""
    import os

    from labelflow.integrations.label_studio import LabelStudioError
    from labelflow.integrations.mlflow_tracking import MLflowError
    from labelflow.integrations.object_store import ObjectStoreError
    from labelflow.tasks.validate import ValidationFailed

    if not 100 <= images <= 1500 or not 50 <= texts <= 700:
        # fewer leaves a digit class without enough published rows, and the validation gate refuses to publish
        raise _fail("demo", ValueError("--images must be 100-1500 and --texts 50-700 (the rest are the test sets)"), 2)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # the report prints the URLs
    began = time.monotonic()
    from labelflow.infra.local_stack import StackError

    stack = _stack(home)
    if not all(s.healthy for s in stack.status()):
        console.print("[bold]Starting the local stack[/bold] (the first time installs Label Studio: a few minutes)")
        try:
            stack.up(echo=lambda line: console.print(f"[dim]{line}[/dim]"))
        except StackError as exc:
            raise _fail("labelflow up failed", exc, 1) from None
    from labelflow.demo import report, run_demo

    with (
        _reported_failures("demo", LabelStudioError, ObjectStoreError, MLflowError, ValidationFailed),
        prefect_connection() as prefect,
    ):
        projects = run_demo(console, stack.config.home / "demo", images, texts, seed)
    report(console, projects, prefect.url.removesuffix("/api"))
    console.print(f"Demo finished in {time.monotonic() - began:.0f} s. Run it again: it is incremental and idempotent.")


if __name__ == "__main__":
    app()
