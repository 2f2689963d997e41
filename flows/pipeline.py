"""The whole pipeline for one spec: the ingest flow, then the collect flow (collect, validate, register), as subflows."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from labelflow.flows.collect import COLLECT_TIMEOUT_SECONDS, collect
from labelflow.flows.ingest import INGEST_TIMEOUT_SECONDS, ingest
from labelflow.tasks.validate import ValidationFailed


@flow(name="labelflow-pipeline", timeout_seconds=INGEST_TIMEOUT_SECONDS + COLLECT_TIMEOUT_SECONDS, persist_result=True)
def pipeline(spec_path: str, full: bool = False, dask_address: str | None = None) -> dict[str, Any]:
    """Ingest new objects, then collect, validate and register; a failed validation fails the run after ingest."""
    ingested = ingest(spec_path)
    try:
        collected = collect(spec_path, full=full, dask_address=dask_address)
    except ValidationFailed:
        get_run_logger().error(
            "ingest done (%d new tasks); validation failed, nothing published", ingested["tasks_created"]
        )
        raise
    return {"ingest": ingested, "collect": collected}
