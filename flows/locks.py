"""One run at a time per stage and project (a Prefect global concurrency limit of 1 for each pair), and the truth
about runs whose process died: the next run of the same stage and project marks them Crashed."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psutil
from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext

from labelflow.tasks.spec import ProjectSpec

# A run waits this long for the previous run of the same stage and project before failing with a TimeoutError.
LOCK_WAIT_SECONDS = 4 * 3600
# Tag recording which process runs a flow run: `labelflow:process:HOST:PID:START` (START, the process' start time in
# whole seconds, tells a reused pid apart). A run killed with -9 stays Running in Prefect; this makes it detectable.
PROCESS_TAG = "labelflow:process:"


def lock_name(stage: str, spec: ProjectSpec) -> str:
    """The concurrency-limit name guarding one stage of one project, e.g. `labelflow-ingest-reviews-1a2b3c4d`."""
    return f"labelflow-{stage}-{spec.slug}"


def project_tag(spec: ProjectSpec) -> str:
    """The tag every run of a project carries (deployments set it too), e.g. `project:reviews-1a2b3c4d`."""
    return f"project:{spec.slug}"


def process_tag() -> str:
    """This process' tag: host, pid and start time."""
    pid = os.getpid()
    return f"{PROCESS_TAG}{socket.gethostname()}:{pid}:{int(psutil.Process(pid).create_time())}"


def read_process_tag(tags: Iterable[str]) -> tuple[str, int, int] | None:
    """(host, pid, start time) of a run's process tag, or None when it has none."""
    for tag in tags:
        if tag.startswith(PROCESS_TAG):
            parts = tag.removeprefix(PROCESS_TAG).rsplit(":", 2)
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                return parts[0], int(parts[1]), int(parts[2])
    return None


def process_is_gone(host: str, pid: int, started: int) -> bool | None:
    """True when that process has exited, False while it runs, None on another host (nothing to check there)."""
    if host != socket.gethostname():
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        return abs(int(process.create_time()) - started) > 1  # another process now has that pid
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # it exists but may not be inspected (another user's): not ours to judge
        return False


def _crash(client: Any, flow_run_id: UUID, message: str) -> list[UUID]:
    """Force a flow run, its Running subflow runs and their Running task runs to Crashed; returns the flow run ids."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    running = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
    crashed, frontier = [flow_run_id], [flow_run_id]
    while frontier:  # subflows ran in the same (dead) process
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier), state=running)
        )
        frontier = [child.id for child in children if child.id not in crashed]
        crashed.extend(frontier)
    for run_id in crashed:
        client.set_flow_run_state(run_id, Crashed(message=message), force=True)
    task_runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=crashed)),
        task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING]))),
    )
    for task_run in task_runs:
        client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
    return crashed


def mark_dead_runs_crashed(client: Any, flow_run_id: UUID, tag: str) -> list[UUID]:
    """Tag this flow run with its process and project; crash Running runs of its flow and project whose process
    on this host is gone. Runs of other hosts are left alone (Prefect's heartbeats cover those); returns crashed ids.
    """
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    current = client.read_flow_run(flow_run_id)
    mine = process_tag()
    client.update_flow_run(flow_run_id, tags=sorted({*current.tags, tag, mine}))
    stale_runs = client.read_flow_runs(
        flow_filter=FlowFilter(id=FlowFilterId(any_=[current.flow_id])),
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[tag]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
        ),
    )
    crashed: list[UUID] = []
    for run in stale_runs:
        process = read_process_tag(run.tags)
        if run.id == flow_run_id or process is None or not process_is_gone(*process):
            continue
        host, pid, _ = process
        message = (
            f"process {pid} on {host} running this flow run is gone (killed or crashed); "
            f"marked by flow run {current.name} ({flow_run_id})"
        )
        crashed.extend(_crash(client, run.id, message))
        crashed.extend(_crash_parents(client, run, message))
    return crashed


def _crash_parents(client: Any, run: Any, message: str) -> list[UUID]:
    """A dead subflow's Running parents (e.g. `labelflow-pipeline`) ran in the same process: crash them too."""
    from prefect.states import Crashed

    crashed = []
    while run.parent_task_run_id is not None:
        run = client.read_flow_run(client.read_task_run(run.parent_task_run_id).flow_run_id)
        if run.state is None or run.state.type.value != "RUNNING":
            break
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        crashed.append(run.id)
    return crashed


@contextmanager
def stage_lock(stage: str, spec: ProjectSpec, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold the stage's slot for this project; a second run of the same pair waits, other projects run at once."""
    name = lock_name(stage, spec)
    logger = get_run_logger()
    context = FlowRunContext.get()
    with get_client(sync_client=True) as client:
        if context is not None and context.flow_run is not None:
            try:
                for run_id in mark_dead_runs_crashed(client, context.flow_run.id, project_tag(spec)):
                    logger.warning("flow run %s was left Running by a process that is gone: marked Crashed", run_id)
            except Exception as exc:  # housekeeping: a failure here must not fail the run itself
                logger.warning("could not check for flow runs left Running by dead processes: %s", exc)
        client.upsert_global_concurrency_limit_by_name(name, limit=1)
    logger.info("waiting for concurrency slot %s", name)
    # Leases are renewed while the run is alive; a crashed run's slot frees itself when its lease expires.
    with concurrency(name, occupy=1, timeout_seconds=wait_seconds, strict=True, lease_duration=120):
        logger.info("holding concurrency slot %s", name)
        yield
