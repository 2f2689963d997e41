"""Label-error detection on the real stack: labels flipped on purpose are listed as suspects in the quality report,
and with `quality.review_suspects` they get one more annotation in Label Studio and stay out of the published version
until someone has labeled them again."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pandas as pd

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.escalation import MAIN_TASK_KEY, REASON_KEY
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.label_errors import STATE_NAME, SUSPECT_REASON
from labelflow.tasks.quality_report import task_url
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.run_records import read_run_record
from labelflow.tasks.spec import ProjectSpec, S3Location, load_spec
from labelflow.tasks.task_types.classification import choice_result
from tests.integration.test_ingest import all_tasks, write_spec

WORDS = {
    "sport": ["football", "goal", "striker", "match", "referee", "league", "penalty", "stadium"],
    "cooking": ["recipe", "oven", "garlic", "simmer", "flour", "butter", "skillet", "onion"],
    "weather": ["rain", "forecast", "cloudy", "storm", "humid", "breeze", "thunder", "sunny"],
}
LABELS = list(WORDS)
TEXTS = 90


def planted_project(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    unique_name: str,
    tmp_path: Path,
    quality: dict[str, Any],
) -> tuple[Path, ProjectSpec, int, dict[int, str]]:
    """An ingested topic project, each task labeled once, five of them with the wrong topic:
    (spec path, spec, project id, flipped task id -> the label given)."""
    from labelflow.flows.ingest import ingest

    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    rng = random.Random(11)
    for i in range(TEXTS):
        topic = LABELS[i % 3]
        text = " ".join(rng.choice(WORDS[topic]) for _ in range(8))
        object_store.put_bytes(source, f"topics/{topic}/{i:03d}.txt", text.encode())
    body = {
        "name": f"label errors {unique_name}",
        "source": f"s3://{source}/topics/",
        "state": f"s3://{unique_name}-state/labelflow/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 1,
        "quality": quality,
        "dataset": {"name": unique_name},
    }
    spec_path = write_spec(tmp_path, body)
    assert ingest(str(spec_path))["tasks_created"] == TEXTS
    spec = load_spec(spec_path)
    record = read_project_record(object_store, spec)
    assert record is not None
    project_id = int(record["project_id"])
    annotator = label_studio.create_user(f"{unique_name}-annotator@example.com")
    flipped: dict[int, str] = {}
    for n, task in enumerate(sorted(all_tasks(label_studio, project_id), key=lambda t: t["id"])):
        truth = task["data"]["source_key"].split("/")[1]
        label = truth
        if n % 18 == 5:  # five labels turned to the next topic
            label = LABELS[(LABELS.index(truth) + 1) % 3]
            flipped[int(task["id"])] = label
        label_studio.create_annotation(task["id"], choice_result("label", "text", label), annotator, 4.0)
    return spec_path, spec, project_id, flipped


def held_back(object_store: ObjectStore, spec: ProjectSpec) -> set[int]:
    """The tasks the suspects record holds back."""
    state = read_run_record(object_store, spec.state_location, STATE_NAME)
    assert state is not None
    return {int(t) for t in state["held"]}


def test_planted_flips_are_listed_routed_back_and_held_out_of_the_version(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect

    quality = {"route_low_agreement": "overlap", "review_suspects": True}
    spec_path, spec, project_id, flipped = planted_project(object_store, label_studio, unique_name, tmp_path, quality)
    first = collect(str(spec_path))
    found = first["quality"]["label_errors"]
    assert found["rows_checked"] == TEXTS and found["routed_to"] == "annotators", found
    held = held_back(object_store, spec)
    assert held <= set(flipped) and len(held) * 2 > len(flipped), (held, flipped)
    assert found["held_back"] == len(held) and first["routed_back"] == len(held)

    # The report lists each with a link to its Label Studio task, the given and the suggested label.
    report = S3Location.parse(first["report"])
    page = object_store.get_bytes(report.bucket, report.join("report.html")).decode()
    suspects = page.split("<h2 id='suspects'>", 1)[1]
    base = label_studio.settings.base_url
    for task_id in held:
        assert f"<a href='{task_url(base, project_id, task_id)}'" in suspects
    listed = pd.read_csv(io.BytesIO(object_store.get_bytes(report.bucket, report.join("suspects.csv"))))
    listed = listed.set_index("task_id")
    assert all(listed.loc[t, "given_label"] == flipped[t] for t in held)

    # Routed back: Label Studio asks for a second annotation; the version leaves them out.
    assert all(label_studio.get_task(t)["overlap"] == 2 for t in held)
    assert first["dataset"]["published"] and first["dataset"]["rows"] == TEXTS - len(held)
    registry = DatasetRegistry(object_store, mlflow_tracking)
    pulled = registry.pull(unique_name, first["dataset"]["version"], tmp_path / "v1")
    assert pulled.manifest["held_back_suspects"] == len(held)
    assert not set(pd.read_parquet(pulled.path("consensus"))["task_id"]) & held

    # A second annotator labels them again (agreeing with the first): resolved, so the next version holds them.
    second_annotator = label_studio.create_user(f"{unique_name}-second@example.com")
    for task_id in held:
        result = choice_result("label", "text", flipped[task_id])
        label_studio.create_annotation(task_id, result, second_annotator, 4.0)
    second = collect(str(spec_path))
    assert second["quality"]["label_errors"]["resolved"] == len(held)
    assert second["quality"]["label_errors"]["held_back"] == 0
    assert second["dataset"]["published"] and second["dataset"]["rows"] == TEXTS, second["dataset"]


def test_with_escalation_suspects_go_to_the_review_project_and_the_reviewer_decides_them(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect

    reviewer = label_studio.whoami()["email"]
    quality = {"route_low_agreement": "expert", "reviewers": [reviewer], "review_suspects": True}
    spec_path, spec, _, flipped = planted_project(object_store, label_studio, unique_name, tmp_path, quality)

    first = collect(str(spec_path))
    held = held_back(object_store, spec)
    assert held <= set(flipped) and len(held) * 2 > len(flipped), (held, flipped)
    assert first["quality"]["label_errors"]["routed_to"] == "review" and first["routed_back"] == 0
    assert first["quality"]["expert_review"]["escalated_now"] == len(held)
    assert first["dataset"]["rows"] == TEXTS - len(held)
    review_id = first["quality"]["expert_review"]["review_project_id"]
    in_review = {int(t["data"][MAIN_TASK_KEY]): t for t in label_studio.export_tasks(review_id)}
    assert set(in_review) == held
    for task in in_review.values():
        assert task["data"][REASON_KEY] == f"{SUSPECT_REASON}: the model suggests {suggested_topic(task)}"

    # The reviewer gives each its true topic: decided, so the next version holds them with `method: expert`.
    for task in in_review.values():
        truth = task["data"]["source_key"].split("/")[1]
        label_studio.create_annotation(task["id"], choice_result("label", "text", truth), lead_time=6.0)
    second = collect(str(spec_path))
    assert second["quality"]["label_errors"]["resolved"] == len(held)
    assert second["dataset"]["published"] and second["dataset"]["rows"] == TEXTS, second["dataset"]
    pulled = DatasetRegistry(object_store, mlflow_tracking).pull(
        unique_name, second["dataset"]["version"], tmp_path / "v2"
    )
    consensus = pd.read_parquet(pulled.path("consensus")).set_index("task_id")
    assert (consensus.loc[sorted(held), "method"] == "expert").all()
    assert all(consensus.loc[t, "label"] != flipped[t] for t in held)


def suggested_topic(task: dict[str, Any]) -> str:
    """The topic the model should suggest for a review task: the one its words are drawn from."""
    return str(task["data"]["source_key"].split("/")[1])
