"""Collect flows: annotations out of Label Studio -> quality -> Great Expectations gate -> versioned dataset in MLflow."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.utilities.annotations import quote

from labelflow.flows.locks import stage_lock
from labelflow.integrations.great_expectations import GreatExpectations
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.integrations.resources import Resources
from labelflow.tasks.annotation_store import AnnotationStore
from labelflow.tasks.collect import (
    collect_changes,
    judge_annotations,
    load_current,
    load_gold,
    read_batch,
    recorded_project,
    route_back,
    tasks_to_route,
    write_batch,
)
from labelflow.tasks.publish import check_dataset_owner, publish_dataset
from labelflow.tasks.quality_report import markdown, write_quality_report
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.spec import ProjectSpec, load_spec
from labelflow.tasks.validate import ValidationFailed, ValidationSummary, expectations_dir, run_validation

COLLECT_TIMEOUT_SECONDS = 4 * 3600


@flow(
    name="labelflow-collect",
    # No flow retries: tasks retry transient errors, a failed validation must not be retried, and the stage is
    # idempotent (watermark + content digest), so the next run completes what a failed one did not.
    timeout_seconds=COLLECT_TIMEOUT_SECONDS,
    persist_result=True,
)
def collect(spec_path: str, full: bool = False, dask_address: str | None = None) -> dict[str, Any]:
    """Collect, judge, validate and register one spec's annotations: the whole stage as subflows."""
    spec = load_spec(spec_path)
    with stage_lock("collect", spec):
        return collect_validate_register(spec, spec_path, full, dask_address)


def collect_validate_register(
    spec: ProjectSpec, spec_path: str, full: bool, dask_address: str | None = None
) -> dict[str, Any]:
    """The three subflows in order, under the caller's stage lock; judging runs on Dask when given an address."""
    if spec.dataset is not None:
        # Another project's dataset is refused here, not after collecting, judging and validating the batch.
        resources = Resources.from_settings()
        registry = DatasetRegistry(resources.store, resources.tracking)
        check_dataset_owner(quote(registry), quote(spec))
    collecting = collect_annotations
    if dask_address:
        from prefect_dask import DaskTaskRunner

        collecting = collect_annotations.with_options(task_runner=DaskTaskRunner(address=dask_address))
    collected = collecting(spec_path, full=full)
    validation = validate_batch(spec_path, collected["batch"])
    summary = {**collected, "validation": validation}
    if validation.get("skipped"):
        summary["dataset"] = {"published": False, "reason": f"validation skipped: {validation['skipped']}"}
    elif spec.dataset is None:
        summary["dataset"] = {"published": False, "reason": "the spec has no `dataset` section"}
    else:
        summary["dataset"] = register_dataset(spec_path, collected["batch"], validation)
    return summary


@flow(name="labelflow-collect-annotations", persist_result=True)
def collect_annotations(spec_path: str, full: bool = False) -> dict[str, Any]:
    """Collect a spec's new annotations and judge their quality; returns the run summary."""
    return collect_spec(load_spec(spec_path), full=full)


def collect_spec(
    spec: ProjectSpec, full: bool = False, store: ObjectStore | None = None, ls: LabelStudioClient | None = None
) -> dict[str, Any]:
    """The collect wiring for a loaded spec (inside a flow; clients default to the settings)."""
    logger = get_run_logger()
    resources = Resources.from_settings()
    store = store or resources.store
    ls = ls or resources.label_studio_client
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
    tasks, annotations = load_current(q_table)
    # The one CPU-heavy step, submitted to the flow's task runner: threads by default, a Dask cluster when the
    # collect flow is given `dask_address` (its inputs are plain tables, so they travel to remote workers).
    # Unquoted: Dask serializes Prefect's `quote` wrapper as a bare tuple; DataFrames are not walked anyway.
    report = judge_annotations.submit(tasks, annotations, spec, gold).result()
    routes = tasks_to_route(report, spec)
    routed = route_back(q_ls, q_table, quote(routes)) if routes else 0
    run_name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    location = write_quality_report(q_store, q_spec, quote(report), quote(stats.as_dict()), run_name)
    label_studio_url = f"{ls.settings.base_url}/projects/{project_id}"
    meta = {
        "project": spec.name,
        "project_id": project_id,
        "label_studio_url": label_studio_url,
        "watermark": stats.watermark or table.watermark().updated_at,
        "collected_at": run_name,
        "quality": report.metrics,
        "batch_uri": location,
    }
    write_batch(q_store, location, quote(tasks), quote(annotations), quote(meta))
    create_markdown_artifact(
        key=f"quality-{spec.slug}"[:100].lower(),
        markdown=markdown(spec, report, stats.as_dict(), routed, location),
        description=f"labelflow annotation quality for {spec.name}",
    )
    return {
        "project": spec.name,
        "project_id": project_id,
        "label_studio_url": label_studio_url,
        "collection": stats.as_dict(),
        "quality": report.metrics,
        "annotators": report.annotators.to_dict("records"),
        "routed_back": routed,
        "report": location,
        "batch": location,
    }


@flow(name="labelflow-validate-batch", persist_result=True)
def validate_batch(spec_path: str, batch_uri: str) -> dict[str, Any]:
    """Run the Great Expectations gate on a collected batch; the flow fails when the batch does not pass."""
    spec = load_spec(spec_path)
    store = Resources.from_settings().store
    validator = GreatExpectations(expectations_dir(spec, spec_path), examples=spec.validation.examples)
    _, tables = read_batch(store, batch_uri)
    run_name = batch_uri.rstrip("/").rsplit("/", 1)[-1]
    summary = run_validation(
        quote(store),
        quote(spec),
        quote(validator),
        quote(tables["annotations"]),
        quote(tables["consensus"]),
        quote(tables["tasks"]),
        run_name,
    )
    create_markdown_artifact(
        key=f"validation-{spec.slug}"[:100].lower(),
        markdown=validation_markdown(spec, summary),
        description=f"labelflow validation for {spec.name}",
    )
    if not summary.success:
        raise ValidationFailed(summary)
    get_run_logger().info(summary.text())
    return summary.as_dict()


@flow(name="labelflow-register-dataset", persist_result=True)
def register_dataset(spec_path: str, batch_uri: str, validation: dict[str, Any]) -> dict[str, Any]:
    """Publish a validated batch as a new immutable dataset version in MLflow (only when its content changed)."""
    spec = load_spec(spec_path)
    resources = Resources.from_settings()
    store = resources.store
    registry = DatasetRegistry(store, resources.tracking)
    meta, tables = read_batch(store, batch_uri)
    summary = ValidationSummary(**validation)
    result = publish_dataset(quote(store), quote(registry), quote(spec), quote(tables), quote(meta), quote(summary))
    logger = get_run_logger()
    if result["published"]:
        logger.info(
            "published %s version %d (%d rows) at %s",
            result["dataset"],
            result["version"],
            result["rows"],
            result["location"],
        )
    else:
        logger.info("no new version of %s: %s", result["dataset"], result["reason"])
    return result


def validation_markdown(spec: ProjectSpec, summary: ValidationSummary) -> str:
    """The Prefect artifact for a validation: verdict, failed expectations with examples, links to the full result."""
    lines = [f"# Validation of {spec.name}: {'passed' if summary.success else 'FAILED'}", ""]
    if summary.skipped:
        return "\n".join([*lines, f"Skipped: {summary.skipped}"])
    lines += [
        f"{summary.evaluated - len(summary.failed)} of {summary.evaluated} expectations met; rows: "
        + ", ".join(f"{k} {v}" for k, v in summary.rows.items()),
        "",
        f"Full result: `{summary.result_uri}`  ",
        f"Data Docs (open offline): `{summary.docs_index}`",
        "",
    ]
    if summary.failed:
        lines += [
            "| table | column | expectation | from | unexpected | guards | examples |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in summary.failed:
            examples = "; ".join(str(e) for e in (f.get("examples") or [])[:3]).replace("|", "/")
            lines.append(
                f"| {f['batch']} | {f.get('column') or ''} | {f['type']} | {f['origin']} | "
                f"{f.get('unexpected_count')} of {f.get('element_count')} | {f['notes']} | {examples} |"
            )
    return "\n".join(lines)
