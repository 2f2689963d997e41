"""Validate and publish against the real stack: version 1, no-change runs, version 2 with lineage, the gate,
atomic publication after a crash, tamper detection on pull, and the README's plain-MLflow recipe."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.integrations.settings import read_stack_connection
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.label_config import build_label_config, control_of
from labelflow.tasks.registry import DatasetIntegrityError, DatasetNotFound, DatasetRegistry, experiment_name
from labelflow.tasks.simulate import build_annotators, run
from labelflow.tasks.spec import ProjectSpec, parse_spec
from labelflow.tasks.validate import ValidationFailed

LABELS = ["positive", "negative", "neutral"]
ROOT = Path(__file__).resolve().parents[2]


def write_spec(tmp_path: Path, body: dict[str, Any]) -> tuple[Path, ProjectSpec]:
    path = tmp_path / f"{body['dataset']['name']}.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path, parse_spec(body)


def upload_texts(store: ObjectStore, bucket: str, start: int, count: int) -> None:
    store.ensure_bucket(bucket)
    for i in range(start, start + count):
        label = LABELS[i % len(LABELS)]
        store.put_bytes(bucket, f"reviews/{label}/{i:04d}.txt", f"评论 {i}: a {label} review".encode())


def text_project(store: ObjectStore, tmp_path: Path, name: str, count: int) -> tuple[Path, ProjectSpec]:
    from labelflow.flows.ingest import ingest

    upload_texts(store, f"{name}-src", 0, count)
    body = {
        "name": f"publish {name}",
        "source": f"s3://{name}-src/reviews/",
        "state": f"s3://{name}-state/labelflow/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 3,
        "quality": {"route_low_agreement": False},
        "dataset": {"name": name},
    }
    path, spec = write_spec(tmp_path, body)
    assert ingest(str(path))["tasks_created"] == count
    return path, spec


def project_id(store: ObjectStore, spec: ProjectSpec) -> int:
    record = read_project_record(store, spec)
    assert record is not None
    return int(record["project_id"])


def annotate(ls: LabelStudioClient, store: ObjectStore, spec: ProjectSpec, prefix: str) -> int:
    annotators = build_annotators([1.0, 1.0, 0.9], spammers=0, prefix=prefix)
    return run(ls, spec, project_id(store, spec), annotators, seed=3)["annotations_created"]


def collect(path: Path) -> dict[str, Any]:
    from labelflow.flows.collect import collect as collect_flow

    return collect_flow(str(path))


def test_publish_v1_then_nothing_then_v2_with_lineage_pull_verifies_and_detects_tampering(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    path, spec = text_project(object_store, tmp_path, unique_name, 9)
    assert annotate(label_studio, object_store, spec, f"{unique_name}a") == 27
    registry = DatasetRegistry(object_store, mlflow_tracking)

    first = collect(path)
    assert first["validation"]["success"] and first["validation"]["evaluated"] >= 15
    v1 = first["dataset"]
    assert v1["published"] and v1["version"] == 1
    assert v1["rows"] == 9 - first["quality"]["flagged_tasks"] > 0
    published = registry.resolve(unique_name)
    assert published.version == 1 and published.location == f"s3://labelflow-datasets/{unique_name}/v1/"
    run1 = mlflow_tracking.client.get_run(published.run_id)
    tags = run1.data.tags
    assert tags["labelflow.dataset.name"] == unique_name and tags["labelflow.dataset.digest"] == v1["digest"]
    assert tags["labelflow.label_studio.project_id"] == str(first["project_id"])
    assert tags["labelflow.validation.success"] == "true" and tags["labelflow.validation.result"].startswith("s3://")
    assert tags["labelflow.collection.watermark"] not in ("", "None")
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", tags["labelflow.git.revision"])
    assert run1.info.status == "FINISHED" and run1.info.run_name == "v1"
    (dataset_input,) = run1.inputs.dataset_inputs
    assert dataset_input.dataset.name == unique_name
    assert json.loads(dataset_input.dataset.source)["uri"] == f"{published.location}consensus.parquet"
    assert mlflow_tracking.experiment_id(experiment_name(unique_name)) == published.experiment_id

    # The validation result and offline Data Docs are kept in the object store.
    result_uri = first["validation"]["result_uri"]
    bucket, key = result_uri.removeprefix("s3://").split("/", 1)
    result = json.loads(object_store.get_bytes(bucket, key))
    assert result["summary"]["success"] and set(result["results"]) == {"annotations", "consensus"}
    docs_bucket, docs_key = first["validation"]["docs_index"].removeprefix("s3://").split("/", 1)
    assert b"<html" in object_store.get_bytes(docs_bucket, docs_key).lower()

    # No change: no new version, and the run says so.
    second = collect(path)
    assert not second["dataset"]["published"] and second["dataset"]["version"] == 1
    assert "unchanged" in second["dataset"]["reason"]
    assert [v.version for v in registry.versions(unique_name)] == [1]

    # New objects, ingested and annotated: version 2, whose lineage names the new source objects.
    from labelflow.flows.ingest import ingest

    upload_texts(object_store, f"{unique_name}-src", 9, 3)
    assert ingest(str(path))["tasks_created"] == 3
    assert annotate(label_studio, object_store, spec, f"{unique_name}b") == 9
    third = collect(path)
    v2 = third["dataset"]
    assert v2["published"] and v2["version"] == 2 and v2["rows"] > v1["rows"]
    out1, out2 = tmp_path / "v1", tmp_path / "v2"
    pulled1 = registry.pull(unique_name, 1, out1)
    pulled2 = registry.pull(unique_name, None, out2)
    assert pulled2.version == 2 and pulled2.manifest["lineage"]["label_studio"]["project_id"] == first["project_id"]
    sources1 = pd.read_parquet(pulled1.path("sources"))
    sources2 = pd.read_parquet(pulled2.path("sources"))
    new_keys = set(sources2["key"]) - set(sources1["key"])
    assert {k.rsplit("/", 1)[-1] for k in new_keys} <= {"0009.txt", "0010.txt", "0011.txt"} and new_keys
    assert sources2["etag"].str.len().gt(0).all() and sources2["sha256"].str.fullmatch("[0-9a-f]{64}").all()
    consensus2 = pd.read_parquet(pulled2.path("consensus"))
    assert len(consensus2) == v2["rows"] and set(consensus2["label"]) <= set(LABELS)
    assert consensus2["text"].str.startswith("评论").all()
    train = [json.loads(line) for line in pulled2.path("training-export").read_text(encoding="utf-8").splitlines()]
    assert len(train) == v2["rows"] and {"text", "label", "task_id", "source_uri"} <= set(train[0])
    assert (
        pulled2.manifest["lineage"]["label_studio"]["watermark"]
        >= pulled1.manifest["lineage"]["label_studio"]["watermark"]
    )

    # load_dataset: the trainer's one call.
    from labelflow import load_dataset
    from labelflow.tasks.registry import PulledDataset

    frame = load_dataset(unique_name, cache_dir=tmp_path / "cache")
    assert frame.attrs["labelflow"]["version"] == 2 and len(frame) == v2["rows"]
    assert load_dataset(unique_name, version=1, cache_dir=tmp_path / "cache").attrs["labelflow"]["version"] == 1
    assert isinstance(pulled2, PulledDataset)

    # Tampering with a published file is detected by pull, through the API and the CLI.
    folder = registry.resolve(unique_name, 2).folder
    object_store.put_bytes(folder.bucket, folder.join("consensus.parquet"), b"not the published bytes")
    with pytest.raises(DatasetIntegrityError, match=r"consensus\.parquet does not match its manifest"):
        registry.pull(unique_name, 2, tmp_path / "tampered")
    from labelflow.cli import app

    result = CliRunner().invoke(app, ["pull", f"{unique_name}:2", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 1 and "does not match its manifest" in result.output
    result = CliRunner().invoke(app, ["pull", f"{unique_name}:7", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2 and "no published version 7" in result.output
    assert not (tmp_path / "cli" / "consensus.parquet").exists()


def test_a_crash_before_the_ready_mark_leaves_no_visible_version_and_the_next_run_replaces_it(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.tasks.collect import read_batch
    from labelflow.tasks.dataset import build_dataset
    from labelflow.tasks.ledger import IngestLedger
    from labelflow.tasks.publish import dataset_base
    from labelflow.tasks.validate import publishable

    path, spec = text_project(object_store, tmp_path, unique_name, 6)
    annotate(label_studio, object_store, spec, unique_name)
    from labelflow.flows.collect import collect_annotations

    batch = collect_annotations(str(path))["batch"]
    _, tables = read_batch(object_store, batch)
    registry = DatasetRegistry(object_store, mlflow_tracking)
    ledger = IngestLedger(object_store, spec.state_location).read_all().to_pandas()
    built = build_dataset(
        tmp_path, spec, publishable(tables["consensus"]), tables["annotations"], tables["tasks"], ledger
    )
    # What a process killed after uploading the files, before marking the version ready, leaves behind:
    orphan = registry.begin(unique_name, built.digest, dataset_base(spec), {})
    registry.upload(orphan, built)
    assert registry.versions(unique_name) == []
    with pytest.raises(DatasetNotFound):
        registry.resolve(unique_name)
    folder = orphan.folder
    assert any(object_store.list_objects(folder.bucket, folder.prefix))

    summary = collect(path)
    assert summary["dataset"]["published"] and summary["dataset"]["version"] == 1
    (ready,) = registry.versions(unique_name, ready_only=False)
    assert ready.status == "ready" and ready.run_id != orphan.run_id
    assert mlflow_tracking.client.get_run(orphan.run_id).info.lifecycle_stage == "deleted"
    assert registry.pull(unique_name, 1, tmp_path / "pulled").manifest["rows"] == summary["dataset"]["rows"]


def _png(width: int, height: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, shade)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_annotations_injected_through_label_studio_fail_validation_and_publish_nothing(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.ingest import ingest

    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    for i in range(2):
        object_store.put_bytes(source, f"images/{i}.png", _png(200, 100, 100 + i))
        object_store.put_bytes(source, f"texts/{i}.txt", f"Anna met 王小明 in Berlin, case {i}".encode())
    projects = {
        "object-detection": {"source": f"s3://{source}/images/", "labels": ["car", "person"]},
        "ner": {"source": f"s3://{source}/texts/", "labels": ["PER", "LOC"]},
        "text-classification": {"source": f"s3://{source}/texts/", "labels": LABELS},
    }
    bad_result = {
        "object-detection": lambda f, t: [
            {
                "from_name": f,
                "to_name": t,
                "type": "rectanglelabels",
                "original_width": 200,
                "original_height": 100,
                "value": {"x": 80, "y": 10, "width": 40, "height": 20, "rotation": 0, "rectanglelabels": ["car"]},
            }
        ],
        "ner": lambda f, t: [
            {
                "from_name": f,
                "to_name": t,
                "type": "labels",
                "value": {"start": 4, "end": 4, "text": "", "labels": ["PER"]},
            }
        ],
        "text-classification": lambda f, t: [
            {"from_name": f, "to_name": t, "type": "choices", "value": {"choices": ["sarcastic"]}}
        ],
    }
    expected_failure = {
        "object-detection": ("annotations", "box_overflow_px"),
        "ner": ("annotations", "span_length"),
        "text-classification": ("annotations", "label"),
    }
    for task_type, extra in projects.items():
        name = f"{unique_name}-{task_type.split('-')[0]}"
        body = {
            "name": f"gate {name}",
            "state": f"s3://{unique_name}-state/{task_type}/",
            "task": task_type,
            "overlap": 1,
            "quality": {"route_low_agreement": False},
            "dataset": {"name": name},
            **extra,
        }
        path, spec = write_spec(tmp_path, body)
        assert ingest(str(path))["tasks_created"] == 2
        pid = project_id(object_store, spec)
        from_name, to_name, _ = control_of(build_label_config(spec))
        task_ids = label_studio.task_ids(pid)
        label_studio.create_annotation(task_ids[0], bad_result[task_type](from_name, to_name), lead_time=2.0)
        with pytest.raises(ValidationFailed) as failure:
            collect(path)
        summary = failure.value.summary
        assert not summary.success
        assert expected_failure[task_type] in {(f["batch"], f["column"]) for f in summary.failed}, summary.text()
        assert summary.result_uri and summary.docs_index
        assert DatasetRegistry(object_store, mlflow_tracking).versions(name) == []
        assert mlflow_tracking.experiment_id(experiment_name(name)) is None  # nothing was even begun

    from labelflow.cli import app

    result = CliRunner().invoke(app, ["collect", str(path)])
    assert result.exit_code == 1
    assert "validation failed" in result.output and "nothing was published" in result.output
    assert "annotations.label" in result.output and "sarcastic" in result.output


def test_readme_plain_mlflow_recipe_works_as_written(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    path, spec = text_project(object_store, tmp_path, unique_name, 6)
    annotate(label_studio, object_store, spec, unique_name)
    published = collect(path)["dataset"]
    assert published["published"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    recipe = re.search(r"<!-- plain-mlflow-recipe -->\s*```python\n(.*?)```", readme, re.S)
    assert recipe, "README lost its plain-MLflow recipe"
    script = tmp_path / "recipe.py"
    script.write_text(recipe.group(1), encoding="utf-8")
    connection = read_stack_connection()
    env = {
        **os.environ,
        "DATASET": unique_name,
        "MLFLOW_TRACKING_URI": connection["MLFLOW_TRACKING_URI"],
        "MLFLOW_S3_ENDPOINT_URL": connection["LABELFLOW_S3_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": connection["LABELFLOW_S3_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": connection["LABELFLOW_S3_SECRET_KEY"],
    }
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{unique_name} v1: {published['rows']} rows, every SHA-256 verified" in done.stdout
