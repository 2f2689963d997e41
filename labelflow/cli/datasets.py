"""Commands over published datasets: pull one version, list a dataset's versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from labelflow.cli import render
from labelflow.cli.errors import reported_failures


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

    with reported_failures(
        "pull", DatasetIntegrityError, ObjectStoreError, MLflowError, bad_input=(DatasetNotFound, ValueError)
    ):
        name, version = parse_reference(reference)
        pulled = dataset_registry().pull(name, version, out)
    if as_json:
        typer.echo(json.dumps(render.pulled_as_json(pulled), indent=2, ensure_ascii=False))
        return
    render.pulled_dataset(pulled)


def datasets(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """List the published versions of a dataset."""
    from labelflow.datasets import dataset_registry
    from labelflow.integrations.mlflow_tracking import MLflowError

    with reported_failures("datasets", MLflowError):
        registry = dataset_registry()
        versions = registry.versions(name)
    rows = render.dataset_version_rows(registry, versions)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    render.dataset_versions(name, rows)
