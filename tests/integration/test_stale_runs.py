"""A flow run whose process was killed (kill -9) is marked Crashed by the next run of the same flow and project."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.spec import parse_spec
from tests.conftest import RunningStack

ROOT = Path(__file__).resolve().parents[2]


def flow_runs_of(spec_path: Path, flow_name: str) -> list[Any]:
    """Every run of a flow for this spec file, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), sort=FlowRunSort.START_TIME_DESC, limit=200
        )
    return [run for run in runs if run.parameters.get("spec_path") == str(spec_path)]


def test_process_tags_tell_dead_processes_from_live_and_foreign_ones() -> None:
    from labelflow.flows.locks import process_is_gone, process_tag, read_process_tag

    host, pid, started = read_process_tag([process_tag(), "labelflow"])
    assert (host, pid) == (socket.gethostname(), os.getpid()) and process_is_gone(host, pid, started) is False
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child_started = int(psutil.Process(child.pid).create_time())
    child.wait()
    assert process_is_gone(host, child.pid, child_started) is True
    assert process_is_gone(host, pid, started - 1000) is True, "a reused pid is not the run's process"
    assert process_is_gone("some-other-host", child.pid, child_started) is None, "other hosts cannot be judged"
    assert read_process_tag(["labelflow", "project:x"]) is None


def test_a_killed_ingest_run_is_marked_crashed_by_the_next_run(
    local_stack: RunningStack,
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    total = 600
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: object_store.put_bytes(source, f"k/{i:04d}.txt", f"stale {i}".encode()), range(total)))
    body = {
        "name": f"stale {unique_name}",
        "source": f"s3://{source}/k/",
        "state": f"s3://{unique_name}-state/s/",
        "task": "text-classification",
        "labels": ["x", "y"],
        "ingest": {"batch_size": 5, "chunk_objects": 100},
    }
    spec = parse_spec(body)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(body), encoding="utf-8")

    process = subprocess.Popen(
        [sys.executable, "-m", "labelflow.cli", "ingest", str(spec_path)],
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": prefect_api},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    killed = None
    while time.monotonic() < deadline and killed is None:
        assert process.poll() is None, "ingest finished before it could be killed"
        runs = [r for r in flow_runs_of(spec_path, "labelflow-ingest") if r.state and r.state.type.value == "RUNNING"]
        try:
            record = json.loads(object_store.get_bytes(f"{unique_name}-state", "s/project.json"))
            created = label_studio.count_tasks(int(record["project_id"]))
        except Exception:
            created = 0
        if runs and created >= 20:
            os.killpg(process.pid, signal.SIGKILL)
            killed = runs[0]
        time.sleep(0.2)
    process.wait(timeout=30)
    assert killed is not None, "the run never got going"
    time.sleep(2)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(killed.id).state.type.value == "RUNNING", "Prefect cannot know the process died"

    from labelflow.flows.ingest import ingest

    began = time.monotonic()
    summary = ingest(str(spec_path))
    assert summary["listed"] == total
    with get_client(sync_client=True) as client:
        stale = client.read_flow_run(killed.id)
        assert stale.state.type.value == "CRASHED", stale.state
        assert str(process.pid) in (stale.state.message or ""), stale.state.message
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[killed.id])))
        assert all(t.state.type.value != "RUNNING" for t in task_runs), [t.state for t in task_runs]
    newest = flow_runs_of(spec_path, "labelflow-ingest")[0]
    assert newest.id != killed.id and f"project:{spec.slug}" in newest.tags
    assert any(tag.startswith("labelflow:process:") for tag in newest.tags)
    print(f"next run finished {time.monotonic() - began:.0f} s after the kill (the dead run's slot lease expires)")
