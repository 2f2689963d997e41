"""What a published version looks like in MLflow: links to its model-training pages, the experiment's kind, the run's
description, and a dataset input whose schema MLflow is given rather than left to infer (and warn about)."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace
from typing import Any

import pandas as pd

from labelflow.integrations.mlflow_tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    RUN_DESCRIPTION_TAG,
    MLflowTracking,
    dataset_schema,
    experiment_runs_url,
    version_run_url,
)
from labelflow.integrations.settings import MLflowSettings
from labelflow.tasks.registry import experiment_name
from tests.unit.test_collect_stage import annotated, collect


def test_links_open_the_runs_table_and_the_run_with_the_model_training_workflow() -> None:
    assert (
        experiment_runs_url("http://mlflow:5000/", "7")
        == "http://mlflow:5000/#/experiments/7/runs?workflowType=machine_learning&compareRunsMode=TABLE"
    )
    assert (
        version_run_url("http://mlflow:5000", "7", "abc123")
        == "http://mlflow:5000/#/experiments/7/runs/abc123?workflowType=machine_learning"
    )
    tracking = MLflowTracking(MLflowSettings(tracking_uri="http://mlflow:5000"))
    assert tracking.run_url("7", "abc123") == version_run_url("http://mlflow:5000", "7", "abc123")
    assert tracking.experiment_url("7") == experiment_runs_url("http://mlflow:5000", "7")


def test_a_published_version_is_described_linked_and_its_experiment_shown_as_model_training() -> None:
    clients, spec, project_id = annotated()
    tracking = clients.tracking
    summary, _ = collect(clients, spec)
    dataset = summary["dataset"]
    (run,) = tracking.live_runs()
    assert dataset["mlflow_url"] == version_run_url(tracking.settings.tracking_uri, run.experiment_id, run.run_id)
    assert dataset["mlflow_versions_url"] == experiment_runs_url(tracking.settings.tracking_uri, run.experiment_id)
    assert tracking.experiment_tags(run.experiment_id)[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND

    note = run.tags[RUN_DESCRIPTION_TAG]
    validation = summary["validation"]
    first, project, files = note.split("\n\n")  # the run page shows the first lines: what, verdict, from where
    assert first.startswith("**reviews version 1**: 6 rows (positive 2, negative 2, neutral 2). Validation passed: ")
    assert f"{validation['evaluated']} of {validation['evaluated']} expectations met" in first
    assert project.startswith(f"From Label Studio project {project_id} ({summary['label_studio_url']}), spec ")
    assert f"**{spec.name}** (`{spec.slug}`, text-classification" in project
    assert files.startswith("4 files (`consensus.parquet`") and f"content digest `{dataset['digest']}`" in files
    assert f"Collection batch `{summary['batch']}`, 6 source objects" in files
    assert f"Validation result `{validation['result_uri']}`" in files

    # An experiment made before labelflow tagged its kind (or retagged by hand) is tagged again at the next publish,
    # also when the content is unchanged; a kind the UI already shows as model training is left alone.
    tracking.set_experiment_tags(run.experiment_id, {EXPERIMENT_KIND_TAG: "genai_development"})
    again, _ = collect(clients, spec)
    assert not again["dataset"]["published"] and again["dataset"]["mlflow_versions_url"]
    assert tracking.experiment_tags(run.experiment_id)[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    tracking.set_experiment_tags(run.experiment_id, {EXPERIMENT_KIND_TAG: "classification"})
    collect(clients, spec)
    assert tracking.experiment_tags(run.experiment_id)[EXPERIMENT_KIND_TAG] == "classification"
    assert tracking.experiment_id(experiment_name("reviews")) == run.experiment_id


class RecordingClient:
    """Stands in for MlflowClient: keeps what `log_inputs` was given."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []

    def log_inputs(self, run_id: str, datasets: list[Any]) -> None:
        self.inputs.append(SimpleNamespace(run_id=run_id, datasets=datasets))


def test_the_dataset_input_carries_its_schema_and_logging_it_warns_about_nothing() -> None:
    frame = pd.DataFrame(
        {
            "task_id": [1, 2, 3],
            "annotations": pd.array([3, None, 2], dtype="Int64"),
            "agreement": [1.0, 0.5, float("nan")],
            "finished": [True, True, False],
            "label": ["positive", "negative", None],
            "regions": [[], [{"start": 0, "end": 3}], []],
        }
    )
    tracking = MLflowTracking(MLflowSettings(tracking_uri="http://mlflow.invalid"))
    tracking.client = RecordingClient()  # type: ignore[assignment]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracking.log_dataset_input(
            "run1", frame, name="reviews", source="s3://d/reviews/v1/consensus.parquet", digest="d1"
        )
    assert [str(w.message) for w in caught if "schema" in str(w.message).lower()] == []

    (logged,) = tracking.client.inputs
    (entity,) = logged.datasets
    assert entity.dataset.name == "reviews" and entity.dataset.digest == "d1"
    assert json.loads(entity.dataset.source)["uri"] == "s3://d/reviews/v1/consensus.parquet"
    assert json.loads(entity.dataset.profile) == {"num_rows": 3, "num_elements": 18}
    columns = {c["name"]: c for c in json.loads(entity.dataset.schema)["mlflow_colspec"]}
    assert {name: c["type"] for name, c in columns.items()} == {
        "task_id": "long",
        "annotations": "long",
        "agreement": "double",
        "finished": "boolean",
        "label": "string",
        "regions": "string",
    }
    assert [name for name, c in columns.items() if not c.get("required", True)] == ["annotations", "agreement", "label"]
    assert dataset_schema(frame.iloc[:0]).input_names() == list(frame.columns)
