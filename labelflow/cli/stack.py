"""The local stack's commands: up, down, status, and demo (which starts the stack when it is not running)."""

from __future__ import annotations

import os
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from labelflow.cli import render
from labelflow.cli.errors import fail, json_stdout, reported_failures
from labelflow.cli.render import console
from labelflow.runtime import prefect_connection

if TYPE_CHECKING:
    from labelflow.infra.local_stack import LocalStack


def _stack(home: Path | None, **settings: int | str | None) -> LocalStack:
    """Stack configuration from options, then LABELFLOW_STACK_* variables, then defaults."""
    # Imported here: only up, down and status need the local stack's machinery (and its clients).
    from labelflow.infra.local_stack import LocalStack, StackConfig

    overrides = {key: value for key, value in settings.items() if value is not None}
    if home is not None:
        overrides["home"] = home.resolve()
    return LocalStack(StackConfig(**overrides))


class DatabaseChoice(StrEnum):
    """What `up --db` accepts."""

    sqlite = "sqlite"
    postgres = "postgres"


HomeOption = Annotated[
    Path | None,
    typer.Option(help="State, logs and data directory of the local stack [default: $LABELFLOW_HOME or ./.labelflow]"),
]


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
    db: Annotated[
        DatabaseChoice | None,
        typer.Option(
            "--db",
            help="The services' databases: SQLite files, or one PostgreSQL server (port env "
            "LABELFLOW_STACK_POSTGRES_PORT; default 5433) as in production. Kept for later runs "
            "[default: what this home last used, else sqlite]",
        ),
    ] = None,
) -> None:
    """Start the local stack (event listener, SeaweedFS S3, Label Studio, MLflow, Prefect) on 127.0.0.1; idempotent."""
    stack = _stack(
        home,
        s3_port=s3_port,
        label_studio_port=label_studio_port,
        mlflow_port=mlflow_port,
        prefect_port=prefect_port,
        listener_port=listener_port,
        db=db.value if db else None,
    )
    from labelflow.infra.local_stack import StackError

    began = time.monotonic()
    try:
        reports = stack.up(echo=lambda line: console.print(f"[dim]{line}[/dim]"), with_worker=with_worker)
    except StackError as exc:
        raise fail("labelflow up failed", exc, 1) from None
    render.stack_started(stack.config.home, reports)
    render.stack_login(stack.connection()["label_studio_login"], time.monotonic() - began)


def down(home: HomeOption = None) -> None:
    """Stop exactly the processes `labelflow up` started (data is kept)."""
    stack = _stack(home)
    for name, outcome in stack.down().items():
        console.print(f"{name}: {outcome}")


def status(
    home: HomeOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable URLs, health and local credentials")
    ] = False,
) -> None:
    """Show each local service, its URL and health; exit 1 if any is down."""
    with json_stdout(as_json) as print_json:
        stack = _stack(home)
        statuses = stack.status()
        if as_json:
            payload = {"services": [s.as_dict() for s in statuses]}
            if (stack.config.home / "credentials.json").is_file():
                payload.update(stack.connection())
            print_json(payload)
        else:
            render.stack_status(stack.config.home, statuses)
        if not all(s.healthy for s in statuses):
            raise typer.Exit(1)


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
    from labelflow.integrations.label_studio import LabelStudioError
    from labelflow.integrations.mlflow_tracking import MLflowError
    from labelflow.integrations.object_store import ObjectStoreError
    from labelflow.tasks.validate import ValidationFailed

    if not 100 <= images <= 1500 or not 50 <= texts <= 700:
        # fewer leaves a digit class without enough published rows, and the validation gate refuses to publish
        raise fail("demo", ValueError("--images must be 100-1500 and --texts 50-700 (the rest are the test sets)"), 2)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # the report prints the URLs
    began = time.monotonic()
    from labelflow.infra.local_stack import StackError

    stack = _stack(home)
    # The demo's clients read their connection settings from the stack's home: the one --home names, not ./.labelflow.
    os.environ["LABELFLOW_HOME"] = str(stack.config.home)
    if not all(s.healthy for s in stack.status()):
        console.print("[bold]Starting the local stack[/bold] (the first time installs Label Studio: a few minutes)")
        try:
            stack.up(echo=lambda line: console.print(f"[dim]{line}[/dim]"))
        except StackError as exc:
            raise fail("labelflow up failed", exc, 1) from None
    from labelflow.demo import demo_pool, report, run_demo

    with (
        reported_failures("demo", LabelStudioError, ObjectStoreError, MLflowError, ValidationFailed),
        prefect_connection() as prefect,
    ):
        projects = run_demo(console, stack.config.home / "demo", images, texts, seed)
        from labelflow.integrations.resources import Resources

        pool = demo_pool(Resources.from_settings().store)
    report(console, projects, prefect.url.removesuffix("/api"), pool)
    console.print(f"Demo finished in {time.monotonic() - began:.0f} s. Run it again: it is incremental and idempotent.")
