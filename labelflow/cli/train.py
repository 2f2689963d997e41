"""`labelflow train`: a baseline classifier on a published dataset version, registered in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from labelflow.cli.errors import console_logs_without_tracebacks_of, json_stdout, reported_failures
from labelflow.cli.render import console
from labelflow.runtime import prefect_connection


def train(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML) of a classification project")],
    version: Annotated[
        int | None, typer.Option("--version", help="Dataset version to train on (default: the latest)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Train a baseline on a published version, log it to MLflow and register it as models:/<dataset>-baseline."""
    from labelflow.integrations.mlflow_tracking import MLflowError
    from labelflow.integrations.object_store import ObjectStoreError
    from labelflow.tasks.registry import DatasetIntegrityError, DatasetNotFound
    from labelflow.tasks.spec import SpecError, load_spec
    from labelflow.tasks.training import TrainingError, trainable_dataset

    with (
        json_stdout(as_json) as print_json,
        reported_failures(
            "train",
            MLflowError,
            ObjectStoreError,
            DatasetIntegrityError,
            bad_input=(DatasetNotFound, TrainingError),
        ),
    ):
        trainable_dataset(load_spec(spec))  # a spec that cannot train fails before Prefect loads
        with prefect_connection():
            from labelflow.flows.train import train as train_flow

            console_logs_without_tracebacks_of(
                SpecError, MLflowError, ObjectStoreError, DatasetIntegrityError, DatasetNotFound, TrainingError
            )
            summary = train_flow(str(spec.resolve()), version)
        if as_json:
            print_json(summary)
            return
    trained(summary)


def trained(summary: dict[str, Any]) -> None:
    """What a trained baseline prints: its model URI and version, the version it learned from, its accuracy."""
    console.print(
        f"[bold]{summary['model_uri']}[/bold] (version {summary['model_version']} of {summary['model_name']}): "
        f"trained on {summary['dataset']} v{summary['dataset_version']}, "
        f"held-out accuracy [bold]{summary['holdout_accuracy']:.1%}[/bold] on {summary['holdout_rows']} rows "
        f"({summary['train_rows']} to learn from; the registered model is refitted on all of them)",
        soft_wrap=True,
    )
    console.print(f"MLflow run: {summary['run_url']}", soft_wrap=True)
    console.print(f"model: {summary['model_url']}", soft_wrap=True)
    console.print(
        f"pre-label with it: prelabel: {{predictor: mlflow, model_uri: {summary['model_uri']}}}",
        soft_wrap=True,
        markup=False,
    )
