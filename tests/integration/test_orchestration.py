"""Deployments on a real worker: schedules, object-store and Label Studio webhooks, one run per stage and project."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.layout import PROJECT_DIR
from labelflow.orchestration import Deployed, deploy_spec, parse_every
from labelflow.tasks.collect import recorded_project
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.spec import load_spec
from labelflow.tasks.task_types.classification import choice_result
from tests.conftest import RunningStack


@pytest.fixture(scope="module")
def worker(local_stack: RunningStack) -> Iterator[None]:
    """`labelflow worker` as the stack runs it (`labelflow up --with-worker`); stopped after if started here.

    It starts on a stack that has been up (with its event listener) all along, as after `labelflow up` + later
    `labelflow worker`: the filer's notifications must still arrive promptly.
    """
    already = local_stack.stack.running("worker")
    local_stack.stack.up(with_worker=True)
    yield
    if not already:
        local_stack.stack.stop("worker")


@pytest.fixture
def prefect_client(prefect_api: str) -> Iterator[Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


def write_spec(folder: Path, name: str, bucket: str) -> Path:
    path = folder / f"{name}.yaml"
    spec = {
        "name": name,
        "source": f"s3://{bucket}/texts/",
        "task": "text-classification",
        "labels": ["pos", "neg"],
        "overlap": 1,
        "dataset": {"name": name},
    }
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def deploy(client: Any, spec_path: Path, **every: str) -> dict[str, Deployed]:
    intervals = {stage: parse_every(every.get(stage, "off")) for stage in ("ingest", "collect", "pipeline")}
    deployed = deploy_spec(client, load_spec(spec_path), spec_path, intervals, PROJECT_DIR)
    return {d.stage: d for d in deployed}


def runs_of(client: Any, deployment_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])), limit=200
    )


def wait_for(condition: Callable[[], Any], timeout: float, what: str, stack: RunningStack | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what}" + (listener_state(stack) if stack else "")
    )


def listener_state(stack: RunningStack) -> str:
    """The event listener's counters and last log lines, for a failure message."""
    config = stack.stack.config
    try:
        health = httpx.get(f"http://127.0.0.1:{config.listener_port}/health", timeout=5).text
    except httpx.HTTPError as exc:
        health = f"unreachable: {exc}"
    log = stack.stack.log_path("listener")
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:] if log.is_file() else []
    return f"\nlistener /health: {health}\nlistener log:\n" + "\n".join(tail)


def finished(runs: list[Any], tag: str) -> list[Any]:
    failed = [r for r in runs if tag in r.tags and r.state_type.value in {"FAILED", "CRASHED"}]
    assert not failed, f"{failed[0].name}: {failed[0].state.message}"
    return [r for r in runs if tag in r.tags and r.state_type.value == "COMPLETED"]


def remove(client: Any, deployed: dict[str, Deployed]) -> None:
    for d in deployed.values():
        for run in runs_of(client, d.deployment_id):
            if run.state_type.value == "SCHEDULED":
                client.delete_flow_run(run.id)
        client.delete_deployment(d.deployment_id)


def test_uploads_trigger_one_debounced_ingest_and_an_annotation_triggers_collect(
    tmp_path: Path,
    worker: None,
    prefect_client: Any,
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    local_stack: RunningStack,
) -> None:
    spec_path = write_spec(tmp_path, unique_name, unique_name)
    object_store.ensure_bucket(unique_name)
    deployed = deploy(prefect_client, spec_path)  # no schedules: only events can start runs
    try:
        for i in range(60):  # a burst: one filer notification each
            object_store.put_bytes(unique_name, f"texts/{i:03d}.txt", f"review number {i}".encode())
        object_store.put_bytes(unique_name, "elsewhere/x.txt", b"outside the source: no run")
        ingest_id = deployed["ingest"].deployment_id
        done = wait_for(
            lambda: finished(runs_of(prefect_client, ingest_id), "trigger:seaweedfs"),
            180,
            "a triggered ingest run",
            local_stack,
        )
        spec = load_spec(spec_path)
        project_id = recorded_project(object_store, spec)
        wait_for(lambda: label_studio.count_tasks(project_id) == 60, 120, "60 tasks in Label Studio")
        triggered = [r for r in runs_of(prefect_client, ingest_id) if "trigger:seaweedfs" in r.tags]
        assert 1 <= len(triggered) <= 3, [r.name for r in triggered]  # 61 events, a handful of runs
        assert done[0].state.name == "Completed"

        # The stack's event listener registered the project's webhook once ingest recorded the project.
        hooks = wait_for(lambda: label_studio.webhooks(project_id), 60, "the Label Studio webhook", local_stack)
        assert hooks[0]["url"].endswith("/hooks/label-studio")
        for task_id in label_studio.task_ids(project_id)[:2]:
            label_studio.create_annotation(task_id, choice_result("label", "text", "pos"))
        collect_id = deployed["collect"].deployment_id
        wait_for(
            lambda: finished(runs_of(prefect_client, collect_id), "trigger:label-studio"),
            240,
            "a collect run",
            local_stack,
        )
        registry = DatasetRegistry(object_store, mlflow_tracking)
        versions = registry.versions(unique_name)
        assert [v.version for v in versions] == [1]
        assert versions[0].tags["labelflow.dataset.rows"] == "2"
    finally:
        remove(prefect_client, deployed)


def test_a_schedule_runs_on_the_worker_and_runs_of_one_stage_and_project_never_overlap(
    tmp_path: Path, worker: None, prefect_client: Any, object_store: ObjectStore, unique_name: str
) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    spec_path = write_spec(tmp_path, unique_name, unique_name)
    object_store.ensure_bucket(unique_name)
    object_store.put_bytes(unique_name, "texts/a.txt", b"first")
    deployed = deploy(prefect_client, spec_path, ingest="20s")
    ingest_id = deployed["ingest"].deployment_id
    try:
        schedules = prefect_client.read_deployment_schedules(ingest_id)
        assert [s.schedule.interval.total_seconds() for s in schedules] == [20.0]
        wait_for(lambda: len(finished(runs_of(prefect_client, ingest_id), "auto-scheduled")) >= 2, 240, "2 runs")

        # Two runs of the same stage and project started together: the second waits for the first's slot.
        from prefect.deployments import run_deployment

        for run in runs_of(prefect_client, ingest_id):
            if run.state_type.value == "SCHEDULED":
                prefect_client.delete_flow_run(run.id)
        prefect_client.delete_deployment_schedule(ingest_id, schedules[0].id)
        pair = [run_deployment(deployed["ingest"].deployment, timeout=0, tags=["overlap-test"]) for _ in range(2)]
        wait_for(lambda: len(finished(runs_of(prefect_client, ingest_id), "overlap-test")) == 2, 240, "both runs")
        spans = []
        for run in pair:
            tasks = prefect_client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            spans.append((min(t.start_time for t in tasks), max(t.end_time for t in tasks)))
        spans.sort()
        assert spans[0][1] <= spans[1][0], f"task runs overlap: {spans}"
    finally:
        remove(prefect_client, deployed)
