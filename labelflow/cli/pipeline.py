"""Commands that run the pipeline's steps once, in this process: smoke, ingest, collect, simulate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labelflow.cli import render
from labelflow.cli.errors import console_logs_without_tracebacks_of, fail, json_stdout, reported_failures
from labelflow.cli.render import console
from labelflow.integrations.errors import SettingsError
from labelflow.runtime import prefect_connection

if TYPE_CHECKING:
    from labelflow.tasks.spec import ProjectSpec


def smoke() -> None:
    """Round-trip one object through every service of the configured stack and report what each did."""
    try:
        with prefect_connection() as prefect:
            from labelflow.flows.smoke import smoke_check

            for line in smoke_check():
                console.print(f"[green]ok[/green] {line}")
    except SettingsError as exc:
        raise fail("configuration", exc, 2) from None
    console.print(f"[green]ok[/green] Prefect: flow run recorded at {prefect.url.removesuffix('/api')}/runs")


def ingest(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML)")],
    limit: Annotated[int | None, typer.Option(help="Ingest at most this many new objects in this run")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON")] = False,
) -> None:
    """Ingest new objects from the spec's sources into its Label Studio project (incremental, idempotent)."""
    from labelflow.integrations.errors import AdapterError
    from labelflow.integrations.label_studio import LabelStudioError
    from labelflow.integrations.object_store import ObjectStoreError
    from labelflow.integrations.openai_compatible import MalformedAnswerError, OpenAICompatibleError
    from labelflow.tasks.spec import SpecError, load_spec

    # A judge endpoint that answers garbage is bad input (exit 2); one that refuses or is down fails the run.
    with (
        json_stdout(as_json) as print_json,
        reported_failures(
            "ingest",
            LabelStudioError,
            ObjectStoreError,
            OpenAICompatibleError,
            # The mlflow pre-labeler's registry, down or refusing (MLflowError): named by its base class, since
            # importing the MLflow adapter loads MLflow, which an ingest with nothing new never needs.
            AdapterError,
            bad_input=(MalformedAnswerError,),
        ),
    ):
        project_spec = load_spec(spec)  # fail on a broken spec before any server is contacted
        # Nothing new since the last complete ingest: this listing's counts, found before Prefect loads. `--limit`
        # only caps new objects, so with none it changes nothing.
        summary = _unchanged_since_last_ingest(project_spec)
        if summary is None:
            with prefect_connection():
                from labelflow.flows.ingest import ingest as ingest_flow

                console_logs_without_tracebacks_of(
                    SpecError,
                    LabelStudioError,
                    ObjectStoreError,
                    OpenAICompatibleError,
                    MalformedAnswerError,
                    AdapterError,
                )
                summary = ingest_flow(str(spec.resolve()), limit=limit)
        if as_json:
            print_json(summary)
            return
    render.ingest_summary(summary, str(spec))
    if "unchanged_since" in summary:
        console.print(f"nothing new since the ingest of {summary['unchanged_since']} (no flow run)", markup=False)


def _unchanged_since_last_ingest(spec: ProjectSpec) -> dict[str, Any] | None:
    """This ingest's summary when it has nothing to do (None: there is work), without Prefect."""
    from labelflow.integrations.resources import Resources
    from labelflow.tasks.ingest_shortcut import unchanged_summary

    resources = Resources.from_settings()
    try:
        try:
            reader_key = resources.reader_settings.access_key if spec.task_type.stored_media else None
        except SettingsError:
            return None  # the flow reports it where it needs the identity
        return unchanged_summary(resources.store, resources.label_studio_client, spec, reader_key)
    finally:
        resources.close()


def collect(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML)")],
    full: Annotated[bool, typer.Option(help="Re-read every task (also notices tasks deleted in Label Studio)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON")] = False,
) -> None:
    """Collect annotations, judge quality, validate the batch and publish a new dataset version when it changed."""
    with json_stdout(as_json) as print_json:
        # Nothing changed since the last complete collect: its summary, found before Prefect, GX or MLflow load.
        summary = None if full else _unchanged_since_last_collect(spec)
        if summary is None:
            summary = _collect_summary(spec, full)
        if as_json:
            print_json(summary)
            return
    render.collect_summary(summary, str(spec))


def _collect_summary(spec: Path, full: bool) -> dict[str, Any]:
    """Run the collect flow once; expected failures as one line and an exit code."""
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
        with reported_failures(
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

                console_logs_without_tracebacks_of(
                    SpecError,
                    CollectError,
                    GoldError,
                    LabelStudioError,
                    ObjectStoreError,
                    MLflowError,
                    ValidationFailed,
                )
                return collect_flow(str(spec.resolve()), full=full)
    except ValidationFailed as exc:
        raise fail("validation failed", RuntimeError(render.validation_failure(exc.summary, str(spec))), 1) from None


def _unchanged_since_last_collect(spec: Path) -> dict[str, Any] | None:
    """The last collect's summary when nothing changed since (None: there is work), without Prefect, GX or MLflow."""
    from labelflow.integrations.errors import AdapterError
    from labelflow.integrations.resources import Resources
    from labelflow.tasks.collect_shortcut import unchanged_summary
    from labelflow.tasks.spec import load_spec

    with reported_failures("collect", AdapterError):
        project_spec = load_spec(spec)
        resources = Resources.from_settings()
        try:
            return unchanged_summary(resources.store, resources.label_studio_client, project_spec, str(spec.resolve()))
        finally:
            resources.label_studio_client.close()


def _read_bytes(path: str) -> bytes:
    """A local file or an s3:// object."""
    if path.startswith("s3://"):
        from labelflow.integrations.resources import Resources
        from labelflow.tasks.spec import S3Location

        location = S3Location.parse(path)
        return Resources.from_settings().store.get_bytes(location.bucket, location.prefix)
    return Path(path).read_bytes()


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
    from labelflow.flows.simulate import simulate_annotations
    from labelflow.integrations.label_studio import LabelStudioError
    from labelflow.integrations.object_store import ObjectStoreError
    from labelflow.tasks.collect import CollectError
    from labelflow.tasks.quality import gold_label_set, parse_gold
    from labelflow.tasks.simulate import build_annotators
    from labelflow.tasks.spec import load_spec

    # Malformed --accuracy, a bad truth file or an unusable simulation setup are input errors (exit 2).
    with (
        json_stdout(as_json) as print_json,
        reported_failures(
            "simulate", CollectError, LabelStudioError, ObjectStoreError, OSError, bad_input=(ValueError,)
        ),
    ):
        project_spec = load_spec(spec)
        rates = [float(value) for value in accuracy.split(",") if value.strip()]
        count = annotators if annotators is not None else len(rates)
        cycled = [rates[i % len(rates)] for i in range(count)] if rates else []
        people = build_annotators(cycled, spammers)
        gold = parse_gold(_read_bytes(truth), truth, gold_label_set(project_spec)) if truth else None
        from labelflow.integrations.resources import Resources

        resources = Resources.from_settings(label_studio_timeout=600)
        project_id, result = simulate_annotations(
            resources, project_spec, people, gold, truth_pattern, per_task, limit, seed
        )
        if as_json:
            print_json(result)
            return
    render.simulation(project_id, result)
