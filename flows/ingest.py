"""Ingest flow: raw objects in S3 -> cleaned -> Label Studio tasks, incrementally and idempotently."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.utilities.annotations import quote

from labelflow.flows.locks import stage_lock
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.integrations.resources import Resources
from labelflow.tasks.ingest import (
    IngestStats,
    check_sources,
    clean_objects,
    ensure_project,
    ensure_storage_connections,
    import_and_record,
    iter_new_objects,
    load_ledger,
    prelabel_objects,
    recover_interrupted_batches,
    summary_markdown,
    write_run_report,
)
from labelflow.tasks.ledger import IngestLedger
from labelflow.tasks.prelabel import build_predictor
from labelflow.tasks.spec import ProjectSpec, load_spec

INGEST_TIMEOUT_SECONDS = 6 * 3600  # 100k+ objects fit comfortably; a hung run is failed, not left running


@flow(
    name="labelflow-ingest",
    # No flow retries: the tasks retry transient errors themselves, and the stage is idempotent, so the next
    # scheduled or event-triggered run picks up whatever a failed run left.
    timeout_seconds=INGEST_TIMEOUT_SECONDS,
    persist_result=True,
)
def ingest(spec_path: str, limit: int | None = None) -> dict[str, Any]:
    """Ingest the new objects of a spec's sources into its Label Studio project; returns the run summary."""
    spec = load_spec(spec_path)
    with stage_lock("ingest", spec):
        return ingest_spec(spec, limit=limit)


def ingest_spec(
    spec: ProjectSpec,
    limit: int | None = None,
    store: ObjectStore | None = None,
    ls: LabelStudioClient | None = None,
    resources: Resources | None = None,
) -> dict[str, Any]:
    """The ingest wiring for an already-loaded spec (called inside the flow; clients default to the settings)."""
    logger = get_run_logger()
    resources = resources or Resources.from_settings()
    store = store or resources.store
    ls = ls or resources.label_studio_client
    stats = IngestStats()
    # Arguments are quoted: Prefect otherwise walks every argument on every task call, and walking the ledger
    # index made each call cost time proportional to the project's whole history (10 s per call at 100k objects).
    q_store, q_ls, q_spec, q_stats = quote(store), quote(ls), quote(spec), quote(stats)
    check_sources(q_store, q_spec)
    project_id = ensure_project(q_ls, q_store, q_spec)
    if spec.modality == "image":
        # The read-only identity is resolved first: without one, nothing is connected (never the admin key).
        ensure_storage_connections(q_ls, q_store, q_spec, project_id, quote(resources.reader_settings))
    ledger = IngestLedger(store, spec.state_location)
    q_ledger = quote(ledger)
    with stats.timed("ledger"):
        index = load_ledger(q_ledger)
        stats.recovered = recover_interrupted_batches(q_ls, q_ledger, quote(index), project_id)
    q_index = quote(index)
    predictor = build_predictor(spec)
    for chunk in iter_new_objects(store, spec, index, stats, limit=limit):
        cleaned, rejected = clean_objects(q_store, q_spec, quote(chunk), q_index, q_stats)
        predictions = None
        if predictor and cleaned:
            predictions = prelabel_objects(quote(predictor), q_spec, quote(cleaned), q_stats)
        import_and_record(
            q_ls, q_ledger, q_index, q_spec, project_id, quote(cleaned), quote(rejected), quote(predictions), q_stats
        )
        logger.info(
            "chunk done: %d tasks created, %d quarantined so far", stats.tasks_created, sum(stats.quarantined.values())
        )
    summary = {
        "project": spec.name,
        "project_id": project_id,
        "label_studio_url": f"{ls.settings.base_url}/projects/{project_id}",
        **stats.as_dict(),
    }
    run_name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    report_uri = write_run_report(
        q_store, quote(spec.state_location), run_name, quote(summary), quote(stats.quarantine_rows)
    )
    summary["quarantine_report"] = report_uri
    create_markdown_artifact(
        key=f"ingest-{spec.slug}"[:100].lower(),
        markdown=summary_markdown(spec, project_id, summary, stats.quarantine_rows, report_uri),
        description=f"labelflow ingest summary for {spec.name}",
    )
    return summary
