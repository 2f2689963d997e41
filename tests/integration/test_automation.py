"""Automated labeling on the real stack: a model registered in MLflow labels the tasks it is sure of, a share is
audited by people, and audit disagreements stop it (issue 19, section 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.label_config import label_interface
from labelflow.tasks.model_loop import RECORD_NAME
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.run_records import read_run_record
from labelflow.tasks.simulate import build_annotators, run
from labelflow.tasks.spec import ProjectSpec, parse_spec
from labelflow.tasks.task_types.classification import choice_result
from tests.integration.test_publish import project_id

LABELS = ["positive", "negative", "neutral"]
WORDS = {
    "positive": "好 great wonderful 喜欢",
    "negative": "差 awful terrible 讨厌",
    "neutral": "一般 okay average 还行",
}


def upload_reviews(store: ObjectStore, bucket: str, start: int, count: int) -> None:
    """Reviews whose words give their class away, so a small model is sure of them."""
    store.ensure_bucket(bucket)
    for i in range(start, start + count):
        label = LABELS[i % len(LABELS)]
        store.put_bytes(bucket, f"reviews/{label}/{i:04d}.txt", f"评论 {i}: {WORDS[label]} {i % 7}".encode())


def write_spec(tmp_path: Path, body: dict[str, Any]) -> tuple[Path, ProjectSpec]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path, parse_spec(body)


def consensus_of(store: ObjectStore, location: str) -> pd.DataFrame:
    bucket, prefix = location.removeprefix("s3://").split("/", 1)
    import io

    return pd.read_parquet(io.BytesIO(store.get_bytes(bucket, f"{prefix}consensus.parquet")))


def manifest_of(store: ObjectStore, location: str) -> dict[str, Any]:
    bucket, prefix = location.removeprefix("s3://").split("/", 1)
    return json.loads(store.get_bytes(bucket, f"{prefix}manifest.json"))


def test_a_registered_model_labels_sure_tasks_keeps_audits_for_people_and_stops_on_disagreement(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect
    from labelflow.flows.ingest import ingest
    from labelflow.flows.train import train

    bucket = f"{unique_name}-src"
    upload_reviews(object_store, bucket, 0, 60)
    body: dict[str, Any] = {
        "name": f"automate {unique_name}",
        "source": f"s3://{bucket}/reviews/",
        "state": f"s3://{unique_name}-state/labelflow/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 1,
        "quality": {"route_low_agreement": "off", "find_label_errors": False},
        "dataset": {"name": unique_name},
    }
    path, spec = write_spec(tmp_path, body)
    assert ingest(str(path))["tasks_created"] == 60
    project = project_id(object_store, spec)
    people = build_annotators([1.0], spammers=0, prefix=f"{unique_name}p")
    assert run(label_studio, spec, project, people, seed=1)["annotations_created"] == 60
    first = collect(str(path))
    assert first["dataset"]["published"] and first["dataset"]["rows"] == 60

    trained = train(str(path))
    model_uri = f"models:/{unique_name}-baseline/latest"
    assert trained["model_uri"] == f"models:/{unique_name}-baseline/1"

    # The model pre-labels the next batch, and labels the tasks it is sure of.
    body["prelabel"] = {"predictor": "mlflow", "model_uri": model_uri}
    body["automate"] = {
        "target_accuracy": 0.9,
        "audit_share": 0.25,
        "min_human_labels": 40,
        "min_items_above_threshold": 20,
    }
    path, spec = write_spec(tmp_path, body)
    upload_reviews(object_store, bucket, 60, 60)
    assert ingest(str(path))["tasks_created"] == 60
    second = collect(str(path))
    outcome = second["quality"]["automation"]
    assert outcome["status"] == "running", outcome["reason"]
    assert outcome["model_version"] == f"models:/{unique_name}-baseline/1"
    assert outcome["human_labels"] == 60 and outcome["accuracy_low"] >= 0.9
    machine, audits = outcome["machine_labeled"], outcome["audit_tasks"]
    assert machine > 0 and audits > 0 and machine + audits <= 60
    version = second["dataset"]
    assert version["published"] and version["rows"] == 60 + machine
    rows = consensus_of(object_store, version["location"])
    by_method = rows["method"].value_counts().to_dict()
    assert by_method.get("model") == machine
    machine_rows = rows[rows["method"] == "model"]
    assert (machine_rows["model_version"] == outcome["model_version"]).all()
    assert machine_rows["confidence"].ge(outcome["threshold"] - 1e-4).all()  # stored to 4 places
    manifest = manifest_of(object_store, version["location"])
    assert manifest["automation"]["machine_labeled_rows"] == machine
    low, high = manifest["automation"]["accuracy_interval"]
    assert low <= manifest["automation"]["estimated_accuracy"] <= high
    assert manifest["lineage"]["models"]["labeled_rows"] == [outcome["model_version"]]
    registry = DatasetRegistry(object_store, mlflow_tracking)
    tags = mlflow_tracking.client.get_run(registry.resolve(unique_name).run_id).data.tags
    assert tags["labelflow.automation.machine_labeled_rows"] == str(machine)
    assert float(tags["labelflow.automation.accuracy_low"]) == round(low, 4)

    # Machine-labeled tasks left people's queue; the audits stayed in it.
    record = read_run_record(object_store, spec.state_location, RECORD_NAME)
    assert record is not None and sorted(record["held"]) == sorted(machine_rows["task_id"].tolist())
    held = label_studio.get_task(int(machine_rows["task_id"].iloc[0]))
    assert held["is_labeled"] is True
    published = set(rows["task_id"].astype(int))
    open_tasks = [t for t in label_studio.task_ids(project) if t not in published]  # the audits, still to label
    assert len(open_tasks) == audits
    assert all(label_studio.get_task(t)["is_labeled"] is False for t in open_tasks)

    # People label every audit differently from the model: the measured accuracy falls below the target.
    interface = label_interface(spec)
    for task_id in open_tasks:
        task = label_studio.get_task(task_id)
        predicted = task["predictions"][0]["result"][0]["value"]["choices"][0]
        wrong = next(label for label in LABELS if label != predicted)
        label_studio.create_annotation(task_id, choice_result(interface.from_name, interface.to_name, wrong))
    third = collect(str(path))
    stopped = third["quality"]["automation"]
    assert stopped["status"] == "stopped"
    assert stopped["audit_disagreements"] == audits and "fell below the target 90.0%" in stopped["reason"]
    rows = consensus_of(object_store, third["dataset"]["location"])
    assert "model" not in set(rows["method"]) and len(rows) == 60 + audits
    # The machine-labeled tasks went back to people.
    assert all(label_studio.get_task(int(t))["is_labeled"] is False for t in machine_rows["task_id"])
    record = read_run_record(object_store, spec.state_location, RECORD_NAME)
    assert record is not None and record["held"] == [] and outcome["model_version"] in record["stopped"]
