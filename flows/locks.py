"""One run at a time per stage and project: a Prefect global concurrency limit of 1 for each pair."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from tasks.spec import ProjectSpec

# A run waits this long for the previous run of the same stage and project before failing with a TimeoutError.
LOCK_WAIT_SECONDS = 4 * 3600


def lock_name(stage: str, spec: ProjectSpec) -> str:
    """The concurrency-limit name guarding one stage of one project, e.g. `labelflow-ingest-reviews-1a2b3c4d`."""
    return f"labelflow-{stage}-{spec.slug}"


@contextmanager
def stage_lock(stage: str, spec: ProjectSpec, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold the stage's slot for this project; a second run of the same pair waits, other projects run at once."""
    name = lock_name(stage, spec)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit=1)
    get_run_logger().info("waiting for concurrency slot %s", name)
    # Leases are renewed while the run is alive; a crashed run's slot frees itself when its lease expires.
    with concurrency(name, occupy=1, timeout_seconds=wait_seconds, strict=True, lease_duration=120):
        get_run_logger().info("holding concurrency slot %s", name)
        yield
