"""Commands that run the pipeline's steps once, in this process: smoke, ingest, collect, simulate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from labelflow.cli import render
from labelflow.cli.errors import console_logs_without_tracebacks_of, fail, reported_failures
from labelflow.cli.render import console, err_console
from labelflow.integrations.errors import SettingsError
from labelflow.runtime import prefect_connection


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
    from labelflow.integrations.label_studio import LabelStudioError
    from labelflow.integrations.object_store import ObjectStoreError
    from labelflow.integrations.openai_compatible import MalformedAnswerError, OpenAICompatibleError
    from labelflow.tasks.spec import SpecError, load_spec

    # A judge endpoint that answers garbage is bad input (exit 2); one that refuses or is down fails the run.
    with reported_failures(
        "ingest", LabelStudioError, ObjectStoreError, OpenAICompatibleError, bad_input=(MalformedAnswerError,)
    ):
        load_spec(spec)  # fail on a broken spec before any server is contacted
        with prefect_connection():
            from labelflow.flows.ingest import ingest as ingest_flow

            console_logs_without_tracebacks_of(
                SpecError, LabelStudioError, ObjectStoreError, OpenAICompatibleError, MalformedAnswerError
            )
            summary = ingest_flow(str(spec.resolve()), limit=limit)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    render.ingest_summary(summary)


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
                summary = collect_flow(str(spec.resolve()), full=full)
    except ValidationFailed as exc:
        err_console.print(f"[bold red]validation failed[/bold red]: nothing was published\n{exc}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
        return
    render.collect_summary(summary)


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
    from labelflow.tasks.quality import parse_gold
    from labelflow.tasks.simulate import build_annotators
    from labelflow.tasks.spec import load_spec

    # Malformed --accuracy, a bad truth file or an unusable simulation setup are input errors (exit 2).
    with reported_failures(
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
        project_id, result = simulate_annotations(
            resources, project_spec, people, gold, truth_pattern, per_task, limit, seed
        )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    render.simulation(project_id, result)
