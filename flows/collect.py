"""Collect flow: changed annotations out of Label Studio -> current table -> agreement, consensus, annotator tiers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.utilities.annotations import quote

from integrations.label_studio import LabelStudioClient
from integrations.object_store import ObjectStore
from integrations.settings import LabelStudioSettings, S3Settings, load_settings
from tasks.annotation_store import AnnotationStore
from tasks.collect import (
    collect_changes,
    judge_annotations,
    load_gold,
    recorded_project,
    route_back,
    tasks_to_route,
)
from tasks.quality_report import markdown, write_quality_report
from tasks.spec import ProjectSpec, load_spec


@flow(name="labelflow-collect-annotations")
def collect_annotations(spec_path: str, full: bool = False) -> dict[str, Any]:
    """Collect a spec's new annotations and judge their quality; returns the run summary."""
    return collect_spec(load_spec(spec_path), full=full)


def collect_spec(
    spec: ProjectSpec, full: bool = False, store: ObjectStore | None = None, ls: LabelStudioClient | None = None
) -> dict[str, Any]:
    """The collect wiring for a loaded spec (inside a flow; clients default to the settings)."""
    logger = get_run_logger()
    store = store or ObjectStore(load_settings(S3Settings))
    ls = ls or LabelStudioClient(load_settings(LabelStudioSettings))
    table = AnnotationStore(store, spec.state_location)
    q_store, q_ls, q_spec, q_table = quote(store), quote(ls), quote(spec), quote(table)
    project_id = recorded_project(q_store, q_spec)
    stats = collect_changes(q_ls, q_table, q_spec, project_id, full=full)
    logger.info(
        "%s collection: %d changed tasks, %d annotations, %d deleted tasks",
        stats.mode,
        stats.changed_tasks,
        stats.annotation_rows,
        stats.deleted_tasks,
    )
    gold = load_gold(q_store, q_spec)
    report = judge_annotations(q_table, q_spec, quote(gold))
    routes = tasks_to_route(report, spec)
    routed = route_back(q_ls, q_table, quote(routes)) if routes else 0
    run_name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    location = write_quality_report(q_store, q_spec, quote(report), quote(stats.as_dict()), run_name)
    create_markdown_artifact(
        key=f"quality-{spec.slug}"[:100].lower(),
        markdown=markdown(spec, report, stats.as_dict(), routed, location),
        description=f"labelflow annotation quality for {spec.name}",
    )
    return {
        "project": spec.name,
        "project_id": project_id,
        "label_studio_url": f"{ls.settings.base_url}/projects/{project_id}",
        "collection": stats.as_dict(),
        "quality": report.metrics,
        "annotators": report.annotators.to_dict("records"),
        "routed_back": routed,
        "report": location,
    }
