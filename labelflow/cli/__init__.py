"""The `labelflow` command line: the Typer app and its commands, in the order `labelflow --help` lists them.

Each command parses its arguments, calls a flow or a query and renders the result; the commands live by group
(stack, pipeline, datasets, deployments), what they print in `render`, and how they fail in `errors`.
"""

from __future__ import annotations

import typer

from labelflow.cli import annotators, datasets, deployments, exams, generate, pipeline, stack, train
from labelflow.cli.open import open_link
from labelflow.infra.ports import ports_help

__all__ = ["app"]

app = typer.Typer(
    name="labelflow",
    help="Workflow-orchestrated data labeling: object storage -> Label Studio -> quality -> validation -> MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: Typer's rich help imports markdown-it and rich's traceback module (about 0.8 s) on every --help.
    rich_markup_mode=None,
)

app.command(epilog=ports_help())(stack.up)
app.command()(stack.down)
app.command()(stack.status)
app.command()(pipeline.smoke)
app.command()(generate.generate)
app.command()(pipeline.ingest)
app.command()(pipeline.collect)
app.command()(datasets.pull)
app.command()(datasets.datasets)
app.command()(train.train)
app.command()(annotators.annotators)
app.add_typer(exams.exam_app, name="exam")
app.command(name="open")(open_link)
app.command()(pipeline.simulate)
app.command()(deployments.deploy)
app.command()(deployments.worker)
app.command()(deployments.listen)
app.command()(stack.demo)
