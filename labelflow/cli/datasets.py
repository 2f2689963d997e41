"""Commands over published datasets: pull one version, list a dataset's versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labelflow.cli import render
from labelflow.cli.errors import json_stdout, reported_failures


def pull(
    reference: Annotated[str, typer.Argument(metavar="NAME[:VERSION|latest]", help="Dataset name and version")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the files into")],
    as_json: Annotated[bool, typer.Option("--json", help="Print what was pulled as JSON")] = False,
) -> None:
    """Download a published dataset version and verify every file's SHA-256 against its manifest."""
    from labelflow.datasets import dataset_registry
    from labelflow.integrations.errors import AdapterError
    from labelflow.tasks.registry import DatasetIntegrityError, DatasetNotFound, parse_reference

    # AdapterError: the object store's and MLflow's errors (MLflow's client is never imported to read a version).
    with (
        json_stdout(as_json) as print_json,
        reported_failures("pull", DatasetIntegrityError, AdapterError, bad_input=(DatasetNotFound, ValueError)),
    ):
        name, version = parse_reference(reference)
        pulled = dataset_registry().pull(name, version, out)
        if as_json:
            print_json(render.pulled_as_json(pulled))
            return
    render.pulled_dataset(pulled)


def datasets(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """List the published versions of a dataset."""
    from labelflow.datasets import dataset_registry
    from labelflow.integrations.errors import AdapterError

    with json_stdout(as_json) as print_json, reported_failures("datasets", AdapterError):
        registry = dataset_registry()
        rows = render.dataset_version_rows(registry, registry.versions(name))
        if as_json:
            print_json(rows)
            return
    render.dataset_versions(name, rows)
