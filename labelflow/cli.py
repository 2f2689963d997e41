"""The `labelflow` command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infra.local_stack import LocalStack, StackConfig, StackError
from integrations.settings import SettingsError
from labelflow.runtime import prefect_connection

app = typer.Typer(
    name="labelflow",
    help="Workflow-orchestrated data labeling: object storage -> Label Studio -> quality -> validation -> MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _stack(home: Path | None, **ports: int | None) -> LocalStack:
    """Stack configuration from options, then LABELFLOW_STACK_* variables, then defaults."""
    overrides = {key: value for key, value in ports.items() if value is not None}
    if home is not None:
        overrides["home"] = home.resolve()
    return LocalStack(StackConfig(**overrides))


HomeOption = Annotated[
    Path | None,
    typer.Option(help="State, logs and data directory of the local stack [default: $LABELFLOW_HOME or ./.labelflow]"),
]


@app.command()
def up(
    home: HomeOption = None,
    s3_port: Annotated[int | None, typer.Option(help="S3 port [env LABELFLOW_STACK_S3_PORT; 8333]")] = None,
    label_studio_port: Annotated[
        int | None, typer.Option(help="Label Studio port [env LABELFLOW_STACK_LABEL_STUDIO_PORT; 8080]")
    ] = None,
    mlflow_port: Annotated[int | None, typer.Option(help="MLflow port [env LABELFLOW_STACK_MLFLOW_PORT; 5000]")] = None,
    prefect_port: Annotated[
        int | None, typer.Option(help="Prefect port [env LABELFLOW_STACK_PREFECT_PORT; 4200]")
    ] = None,
) -> None:
    """Start the local stack (SeaweedFS S3, Label Studio, MLflow, Prefect) on 127.0.0.1; idempotent."""
    stack = _stack(
        home, s3_port=s3_port, label_studio_port=label_studio_port, mlflow_port=mlflow_port, prefect_port=prefect_port
    )
    began = time.monotonic()
    try:
        reports = stack.up(echo=lambda line: console.print(f"[dim]{line}[/dim]"))
    except StackError as exc:
        err_console.print(f"[bold red]labelflow up failed[/bold red]: {exc}")
        raise typer.Exit(1) from None
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
            from flows.smoke import smoke_check

            for line in smoke_check():
                console.print(f"[green]ok[/green] {line}")
    except SettingsError as exc:
        raise _fail("configuration", exc, 2) from None
    console.print(f"[green]ok[/green] Prefect: flow run recorded at {prefect.url.removesuffix('/api')}/runs")


def _fail(kind: str, exc: Exception, code: int) -> typer.Exit:
    err_console.print(f"[bold red]{kind}[/bold red]: {exc}")
    return typer.Exit(code)


@app.command()
def ingest(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML)")],
    limit: Annotated[int | None, typer.Option(help="Ingest at most this many new objects in this run")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON")] = False,
) -> None:
    """Ingest new objects from the spec's sources into its Label Studio project (incremental, idempotent)."""
    from integrations.label_studio import LabelStudioError
    from integrations.object_store import ObjectStoreError
    from tasks.spec import SpecError, load_spec

    try:
        load_spec(spec)  # fail on a broken spec before any server is contacted
        with prefect_connection():
            from flows.ingest import ingest as ingest_flow

            summary = ingest_flow(str(spec.resolve()), limit=limit)
    except SpecError as exc:
        raise _fail("spec", exc, 2) from None
    except SettingsError as exc:
        raise _fail("configuration", exc, 2) from None
    except (LabelStudioError, ObjectStoreError) as exc:
        raise _fail("ingest failed", exc, 1) from None
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


if __name__ == "__main__":
    app()
