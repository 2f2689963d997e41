"""`labelflow open`: a path or URL a browser can open for a spec's report, Data Docs, project or dataset version."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from labelflow.cli.errors import fail, json_stdout
from labelflow.cli.render import err_console

if TYPE_CHECKING:
    from labelflow.tasks.links import Link


class Target(StrEnum):
    """What `labelflow open` finds."""

    report = "report"
    docs = "docs"
    project = "project"
    dataset = "dataset"
    quarantine = "quarantine"


def open_link(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML)")],
    target: Annotated[
        Target,
        typer.Argument(
            help="report: the latest quality report; docs: the latest Data Docs; quarantine: the latest ingest's "
            "quarantine report (these three copied to a local cache); project: the Label Studio project; "
            "dataset: the MLflow run of the latest dataset version"
        ),
    ],
    browser: Annotated[bool, typer.Option("--browser", help="Also open it in a web browser")] = False,
    cache: Annotated[
        Path | None, typer.Option(help="Folder for the local copies (default: the stack home's cache/)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the link as one JSON object")] = False,
) -> None:
    """Print a path or URL a browser can open (file:// for reports and Data Docs, copied from the object store)."""
    with json_stdout(as_json) as print_json:
        link = _find(spec, target.value, cache)
        if as_json:
            print_json(link.as_dict())
    if not as_json:
        typer.echo(link.url)
        if link.source and link.path:
            err_console.print(
                f"{link.target} of run {link.run}, copied from {link.source}: {link.downloaded} files downloaded, "
                f"{link.unchanged} unchanged, {link.removed} removed",
                markup=False,
            )
    if browser:
        import webbrowser

        if not webbrowser.open(link.url):
            raise fail("open", RuntimeError("no web browser could be started here: open the URL above yourself"), 1)


def _find(spec_path: Path, target: str, cache: Path | None) -> Link:
    """The link, or one error line and the exit code."""
    from labelflow.integrations.errors import AdapterError, SettingsError
    from labelflow.tasks.links import LinkNotFound
    from labelflow.tasks.spec import SpecError

    try:
        return _link(spec_path, target, cache)
    except SpecError as exc:
        raise fail("spec", exc, 2) from None
    except SettingsError as exc:
        raise fail("configuration", exc, 2) from None
    except (LinkNotFound, AdapterError) as exc:  # nothing to open yet, or a service is down
        raise fail("open", exc, 1) from None


def _link(spec_path: Path, target: str, cache: Path | None) -> Link:
    """Find (and for report, docs and quarantine, copy) the target of one spec."""
    from labelflow.integrations.resources import Resources
    from labelflow.integrations.settings import labelflow_home
    from labelflow.tasks import links
    from labelflow.tasks.spec import load_spec

    spec = load_spec(spec_path)
    resources = Resources.from_settings(label_studio_timeout=15)
    shown = str(spec_path)
    copied = {"report": links.report_link, "docs": links.docs_link, "quarantine": links.quarantine_link}
    try:
        if target in copied:
            return copied[target](resources.store, spec, cache or labelflow_home() / "cache", shown)
        if target == "project":
            project_id = links.recorded_project_id(resources.store, spec, shown)
            return links.project_link(resources.label_studio_client, spec, project_id)
        links.dataset_name(spec)  # a spec without a dataset fails before the registry is loaded
        from labelflow.datasets import dataset_registry

        # The readers' registry: MLflow's REST API, without importing MLflow's client (seconds).
        registry = dataset_registry()
        return links.dataset_link(registry, spec, registry.tracking.settings.tracking_uri)
    finally:
        resources.close()
