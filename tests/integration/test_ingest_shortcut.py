"""`labelflow ingest` with nothing new answers without a Prefect flow run, on the real stack, as a user runs it; a new
object, a changed spec or a project edited in Label Studio still get the real flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from tests.integration.test_ingest import all_tasks, write_spec
from tests.unit.test_cli_imports import HEAVY, modules_loaded_by

ROOT = Path(__file__).resolve().parents[2]


def labelflow(*args: str) -> subprocess.CompletedProcess[str]:
    """`labelflow ARGS` in a subprocess, stdout and stderr pipes."""
    return subprocess.run(
        [sys.executable, "-m", "labelflow.cli", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )


def ingest_json(spec_path: Path) -> dict[str, Any]:
    """`labelflow ingest SPEC --json`: exactly one JSON document on stdout."""
    result = labelflow("ingest", str(spec_path), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def ingest_flow_runs(spec_path: Path) -> int:
    """How many `labelflow-ingest` flow runs Prefect holds for this spec file."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["labelflow-ingest"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=200,
        )
    return sum(1 for run in runs if run.parameters.get("spec_path") == str(spec_path.resolve()))


@pytest.fixture
def project(
    object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """Three reviews in a fresh bucket, and a spec over them."""
    object_store.ensure_bucket(unique_name)
    for i in range(3):
        object_store.put_bytes(unique_name, f"in/{i}.txt", f"评论 {i}: review number {i}".encode())
    spec = {
        "name": f"shortcut {unique_name}",
        "source": f"s3://{unique_name}/in/",
        "state": f"s3://{unique_name}/state/",
        "task": "text-classification",
        "labels": ["好评", "差评"],
        "overlap": 2,
    }
    yield {"bucket": unique_name, "spec": spec, "path": write_spec(tmp_path, spec), "tmp": tmp_path}
    project_id = label_studio.find_project(spec["name"])
    if project_id:
        label_studio.delete_project(project_id)
    for item in list(object_store.list_objects(unique_name)):
        object_store.delete(unique_name, item.key)


def test_nothing_new_skips_the_flow_and_new_work_runs_it(
    object_store: ObjectStore, label_studio: LabelStudioClient, project: dict[str, Any], prefect_api: str
) -> None:
    spec_path, bucket = project["path"], project["bucket"]
    first = ingest_json(spec_path)
    assert first["tasks_created"] == 3 and "unchanged_since" not in first
    project_id = int(first["project_id"])
    assert ingest_flow_runs(spec_path) == 1

    again = ingest_json(spec_path)
    assert again["unchanged_since"] and again["seconds"].keys() == {"check"}
    assert again["listed"] == 3 and again["already_ingested_or_quarantined"] == 3 and again["new"] == 0
    assert again["tasks_created"] == 0 and again["project_id"] == project_id
    assert again["quarantine_report"] == first["quarantine_report"]
    assert ingest_flow_runs(spec_path) == 1, "no flow run for an ingest with nothing to do"
    plain = labelflow("ingest", str(spec_path))
    assert plain.returncode == 0 and "nothing new since the ingest of" in plain.stdout, plain.stderr[-2000:]
    assert modules_loaded_by(("ingest", str(spec_path)), HEAVY) == ["boto3", "minio"], "only the S3 clients load"

    object_store.put_bytes(bucket, "in/3.txt", "新的评论：物流很快".encode())
    third = ingest_json(spec_path)
    assert "unchanged_since" not in third and third["new"] == 1 and third["tasks_created"] == 1
    assert ingest_flow_runs(spec_path) == 2
    assert {task["data"]["source_key"] for task in all_tasks(label_studio, project_id)} == {
        f"in/{i}.txt" for i in range(4)
    }
    assert "unchanged_since" in ingest_json(spec_path), "the run that took the object recorded itself"

    # A project edited in Label Studio is put back by the flow, not skipped.
    label_studio.update_project(project_id, maximum_annotations=5)
    restored = ingest_json(spec_path)
    assert "unchanged_since" not in restored and label_studio.get_project(project_id)["maximum_annotations"] == 2
    assert ingest_flow_runs(spec_path) == 3


def test_a_changed_spec_bypasses_the_shortcut(
    label_studio: LabelStudioClient, project: dict[str, Any], prefect_api: str
) -> None:
    spec_path = project["path"]
    first = ingest_json(spec_path)
    assert "unchanged_since" in ingest_json(spec_path)

    write_spec(project["tmp"], {**project["spec"], "instructions": "选择情感 / choose the sentiment"})
    changed = ingest_json(spec_path)
    assert "unchanged_since" not in changed and changed["tasks_created"] == 0
    project_settings = label_studio.get_project(int(first["project_id"]))
    assert project_settings["expert_instruction"] == "选择情感 / choose the sentiment"
    assert ingest_flow_runs(spec_path) == 2
    assert "unchanged_since" in ingest_json(spec_path)
