"""A model registered in MLflow pre-labels new batches (issue 19, section 1), on the real stack: `labelflow train` on
a published version, the registered baseline's predictions on a new batch's Label Studio tasks, and the one-line
refusals of a wrong model URI and of a model whose classes are not the spec's labels, before any task exists."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.simulate import build_annotators, run
from labelflow.tasks.spec import ProjectSpec, SpecError, parse_spec
from labelflow.tasks.training import train_baseline

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["positive", "negative"]
TRAIN_REVIEWS = 40
NEW_REVIEWS = 8


def labelflow(*args: str) -> subprocess.CompletedProcess[str]:
    """`labelflow ARGS` in a subprocess (the stack's settings come from the environment the suite set)."""
    return subprocess.run(
        [sys.executable, "-m", "labelflow.cli", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=900,
    )


def reviews() -> list[dict[str, str]]:
    """The demo's Chinese reviews (text, label), in the corpus's order."""
    lines = (files("labelflow") / "demo_data" / "reviews_zh.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def write_spec(folder: Path, body: dict[str, Any]) -> tuple[Path, ProjectSpec]:
    path = folder / f"{body['name'].replace(' ', '-')}.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path, parse_spec(body)


def all_tasks(ls: LabelStudioClient, project_id: int) -> list[dict[str, Any]]:
    response = ls._request(
        "GET",
        "/api/tasks",
        "list",
        params={"project": project_id, "page_size": 500, "fields": "all", "resolve_uri": "false"},
    )
    return list(response.json()["tasks"])


@pytest.fixture
def projects(label_studio: LabelStudioClient) -> Iterator[list[str]]:
    """Titles of the Label Studio projects a test creates, deleted afterwards (the stack is shared)."""
    titles: list[str] = []
    yield titles
    for title in titles:
        if (project_id := label_studio.find_project(title)) is not None:
            label_studio.delete_project(project_id)


def test_a_baseline_trained_on_a_published_version_prelabels_a_new_batch(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
    projects: list[str],
) -> None:
    from labelflow.flows.collect import collect
    from labelflow.flows.ingest import ingest

    corpus = reviews()
    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    for i, row in enumerate(corpus[:TRAIN_REVIEWS]):  # the folder is the simulated annotators' truth
        object_store.put_bytes(source, f"reviews/{row['label']}/{i:04d}.txt", row["text"].encode())
    new = corpus[TRAIN_REVIEWS : TRAIN_REVIEWS + NEW_REVIEWS]
    for i, row in enumerate(new):
        object_store.put_bytes(source, f"new/{i:04d}.txt", row["text"].encode())
    base = {
        "source": f"s3://{source}/reviews/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 1,
        "quality": {"route_low_agreement": False},
    }
    train_body = {**base, "name": f"train {unique_name}", "state": f"s3://{source}/state/train/"}
    train_path, train_spec = write_spec(tmp_path, {**train_body, "dataset": {"name": unique_name}})
    projects.append(train_spec.name)
    assert ingest(str(train_path))["tasks_created"] == TRAIN_REVIEWS
    record = read_project_record(object_store, train_spec)
    assert record is not None
    annotators = build_annotators([1.0], spammers=0, prefix=unique_name)
    assert run(label_studio, train_spec, int(record["project_id"]), annotators, seed=1)["annotations_created"] == 40
    published = collect(str(train_path))["dataset"]
    assert published["published"] and published["version"] == 1

    # `labelflow train` on the latest version: registered as models:/<dataset>-baseline, version 1.
    trained = labelflow("train", str(train_path), "--json")
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads(trained.stdout)
    model_name = f"{unique_name}-baseline"
    assert summary["model_uri"] == f"models:/{model_name}/1" and summary["dataset_version"] == 1
    assert summary["train_rows"] + summary["holdout_rows"] == TRAIN_REVIEWS and summary["holdout_rows"] == 8
    assert 0.0 <= summary["holdout_accuracy"] <= 1.0 and summary["classes"] == LABELS
    version = mlflow_tracking.client.get_model_version(model_name, "1")
    training_run = mlflow_tracking.client.get_run(version.run_id)
    assert training_run.info.status == "FINISHED"
    assert training_run.data.metrics["holdout_accuracy"] == summary["holdout_accuracy"]
    (dataset_input,) = training_run.inputs.dataset_inputs  # mlflow.log_input: the dataset version it learned from
    dataset = DatasetRegistry(object_store, mlflow_tracking).resolve(unique_name, 1)
    assert dataset_input.dataset.name == unique_name and dataset_input.dataset.digest == dataset.digest[:32]
    assert json.loads(dataset_input.dataset.source)["uri"] == f"{dataset.location}consensus.parquet"
    assert training_run.data.tags["labelflow.dataset.version"] == "1"

    # Read by people: the model URI and version, the held-out accuracy; errors in one line each (exit 2).
    again = labelflow("train", str(train_path), "--version", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    first_line = again.stdout.splitlines()[0]
    assert first_line.startswith(f"models:/{model_name}/2 (version 2 of {model_name}): trained on {unique_name} v1")
    assert "held-out accuracy" in first_line
    missing = labelflow("train", str(train_path), "--version", "7")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1] == (
        f"train: dataset {unique_name!r} has no published version 7 (published: [1])"
    )

    # A new batch pre-labeled by models:/<name>/latest: each task's prediction names the resolved version.
    prelabel = {"predictor": "mlflow", "model_uri": f"models:/{model_name}/latest"}
    new_body = {**base, "source": f"s3://{source}/new/", "name": f"prelabel {unique_name}"}
    new_path, new_spec = write_spec(tmp_path, {**new_body, "state": f"s3://{source}/state/new/", "prelabel": prelabel})
    projects.append(new_spec.name)
    ingested = ingest(str(new_path))
    assert ingested["tasks_created"] == NEW_REVIEWS and ingested["predictions"] == NEW_REVIEWS
    assert ingested["prediction_failures"] == 0
    tasks = all_tasks(label_studio, ingested["project_id"])
    assert len(tasks) == NEW_REVIEWS
    for task in tasks:
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == f"models:/{model_name}/2"
        (result,) = prediction["result"]
        assert result["type"] == "choices" and result["value"]["choices"][0] in LABELS
        assert 0.5 <= prediction["score"] <= 1.0
    right = sum(
        t["predictions"][0]["result"][0]["value"]["choices"][0] == new[int(t["data"]["source_key"][4:8])]["label"]
        for t in tasks
    )
    assert right >= NEW_REVIEWS // 2  # a baseline from 40 reviews; its real accuracy is measured in bench/

    # A model the registry does not have: one line, before any project or task exists.
    wrong_body = {**new_body, "name": f"wrong {unique_name}", "state": f"s3://{source}/state/wrong/"}
    wrong_path, wrong_spec = write_spec(
        tmp_path, {**wrong_body, "prelabel": {**prelabel, "model_uri": f"models:/{unique_name}-nope/latest"}}
    )
    projects.append(wrong_spec.name)
    refused = labelflow("ingest", str(wrong_path))
    message = (
        f"spec: prelabel.model_uri: MLflow at {mlflow_tracking.settings.tracking_uri} has no model "
        f"models:/{unique_name}-nope/latest: RESOURCE_DOES_NOT_EXIST: Registered Model with name={unique_name}-nope "
        "not found"
    )
    # Prefect's flow-run lines come first on stderr; the error is said once, on the last line, without a traceback.
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.strip().splitlines()[-1] == message, refused.stderr[-3000:]
    assert refused.stderr.count("prelabel.model_uri") == 1 and "Traceback" not in refused.stderr
    assert label_studio.find_project(wrong_spec.name) is None
    no_dataset = labelflow("train", str(wrong_path))
    assert no_dataset.returncode == 2 and no_dataset.stderr.strip().splitlines() == [
        f"spec: spec {wrong_spec.name!r} has no dataset section: it publishes no version to train on"
    ]

    # A model whose classes are not the spec's labels: one line, nothing created.
    mismatch_body = {**wrong_body, "name": f"mismatch {unique_name}", "labels": [*LABELS, "neutral"]}
    mismatch_path, mismatch_spec = write_spec(tmp_path, {**mismatch_body, "prelabel": prelabel})
    projects.append(mismatch_spec.name)
    with pytest.raises(SpecError) as raised:
        ingest(str(mismatch_path))
    assert str(raised.value) == (
        f"prelabel.model_uri: models:/{model_name}/2 predicts the classes positive, negative, not the spec's "
        "labels positive, negative, neutral (missing: neutral)"
    )
    assert label_studio.find_project(mismatch_spec.name) is None


def stripes(kind: str, seed: int) -> bytes:
    """A 32x32 PNG of horizontal or vertical stripes with a little noise."""
    rng = np.random.default_rng(seed)
    row = (np.arange(32) // 4 % 2 * 200).astype(np.float64)
    pixels = np.tile(row, (32, 1)) if kind == "vertical" else np.tile(row[:, None], (1, 32))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8), mode="L").save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def test_an_image_model_registered_in_mlflow_prelabels_images_from_their_bytes(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
    projects: list[str],
) -> None:
    from labelflow.flows.ingest import ingest

    kinds = ["vertical", "horizontal"]
    source = f"{unique_name}-img"
    object_store.ensure_bucket(source)
    for i in range(6):
        object_store.put_bytes(source, f"new/{kinds[i % 2]}-{i}.png", stripes(kinds[i % 2], 100 + i), "image/png")
    body = {
        "name": f"images {unique_name}",
        "source": f"s3://{source}/new/",
        "state": f"s3://{source}/state/",
        "task": "image-classification",
        "labels": kinds,
    }
    spec = parse_spec(body)
    examples = {f"s3://x/{kinds[i % 2]}-{i}.png": stripes(kinds[i % 2], i) for i in range(12)}
    frame = pd.DataFrame(
        {"task_id": range(12), "source_uri": list(examples), "label": [kinds[i % 2] for i in range(12)]}
    )
    model = train_baseline(spec, frame, examples.__getitem__).model
    experiment_id = mlflow_tracking.ensure_experiment(f"training/{unique_name}")
    run_id = mlflow_tracking.start_run(experiment_id, "stripes", {})
    version = mlflow_tracking.log_model(
        run_id, model, f"{unique_name}-stripes", model.metadata, model.input_types, model.output_types
    )
    mlflow_tracking.finish_run(run_id)
    prelabel = {"predictor": "mlflow", "model_uri": f"models:/{unique_name}-stripes/{version}"}
    path, spec = write_spec(tmp_path, {**body, "prelabel": prelabel})
    projects.append(spec.name)
    ingested = ingest(str(path))
    assert ingested["tasks_created"] == 6 and ingested["predictions"] == 6
    for task in all_tasks(label_studio, ingested["project_id"]):
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == f"models:/{unique_name}-stripes/{version}"
        truth = task["data"]["source_key"].split("/")[-1].split("-")[0]
        assert prediction["result"][0]["value"]["choices"] == [truth]
        assert prediction["result"][0]["to_name"] == "image"
