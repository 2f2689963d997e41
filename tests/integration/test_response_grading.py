"""response-grading on the real stack: JSONL records with gold scores -> ingest -> simulated graders and a reviewer
through the Label Studio API -> collect, validate, publish -> pull: grades.jsonl is the published consensus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.collect import hidden_record_fields
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.simulate import build_annotators, run
from labelflow.tasks.spec import ProjectSpec, parse_spec

RUBRIC = ["factually correct", "polite", "cites a source"]
RECORDS = 9
FIELDS = {"prompt": "question", "response": "answer.text", "model": "answer.model", "gold": "expert_score"}


def records_jsonl() -> bytes:
    """Support answers with an expert score (1..5) each, one of them in Chinese.

    Every record names its model and score: today a record missing a mapped field is quarantined, optional or not.
    """
    lines = []
    for i in range(RECORDS):
        record: dict[str, Any] = {
            "id": f"r{i}",
            "question": f"How do I reset my password? (case {i})",
            "answer": {"text": f"Open Settings, choose Security, then Reset ({i}).", "model": f"model-{i % 2}"},
            "expert_score": i % 5 + 1,
        }
        if i == 4:
            record["answer"]["text"] = "请打开设置，选择安全，然后点击重置。"
        lines.append(json.dumps(record, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def grading_project(store: ObjectStore, tmp_path: Path, name: str, reviewer: str) -> tuple[Path, ProjectSpec]:
    from labelflow.flows.ingest import ingest

    store.ensure_bucket(f"{name}-src")
    store.put_bytes(f"{name}-src", "answers/batch-1.jsonl", records_jsonl(), "application/x-ndjson")
    body = {
        "name": f"grading {name}",
        "source": f"s3://{name}-src/answers/",
        "state": f"s3://{name}-state/labelflow/",
        "task": "response-grading",
        "overlap": 3,
        "records": {"format": "jsonl", "fields": FIELDS, "id": "id"},
        "options": {"scale": 5, "rubric": RUBRIC},
        "quality": {"route_low_agreement": False, "reviewers": [reviewer]},
        "dataset": {"name": name},
    }
    path = tmp_path / "grading.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    spec = parse_spec(body)
    assert ingest(str(path))["tasks_created"] == RECORDS
    return path, spec


def test_grading_records_are_ingested_graded_reviewed_published_and_pulled(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect

    reviewer = f"{unique_name}-reviewer@labelflow.local"
    path, spec = grading_project(object_store, tmp_path, unique_name, reviewer)
    project = read_project_record(object_store, spec)
    assert project is not None
    project_id = int(project["project_id"])

    # The interface Label Studio accepted is the type's: a Rating up to 5 on the response, the rubric as choices.
    project_info = label_studio.get_project(project_id)
    assert project_info is not None
    config = project_info["label_config"]
    assert '<Rating name="label" toName="response" maxRating="5" required="true"/>' in config
    assert '<Choices name="rubric" toName="response" choice="multiple">' in config

    # Two perfect graders and one at 90%: the lower median of (gold, gold, x) is the gold score on every task.
    annotators = build_annotators([1.0, 1.0, 0.9], spammers=0, prefix=unique_name)
    simulated = run(label_studio, spec, project_id, annotators, seed=5, hidden=hidden_record_fields(object_store, spec))
    assert simulated["annotations_created"] == 3 * RECORDS and simulated["tasks_with_truth"] == RECORDS

    # One hand-written annotation: the reviewer grades record r1 (expert score 2) as 4, polite only.
    tasks = {task["data"]["record_id"]: task for task in label_studio.export_tasks(project_id)}
    reviewed_task = int(tasks["r1"]["id"])
    reviewer_id = label_studio.create_user(reviewer)
    result = [
        {"from_name": "label", "to_name": "response", "type": "rating", "value": {"rating": 4}},
        {"from_name": "rubric", "to_name": "response", "type": "choices", "value": {"choices": ["polite"]}},
    ]
    annotation_id = label_studio.create_annotation(reviewed_task, result, completed_by=reviewer_id, lead_time=12.0)
    (stored,) = [a for a in label_studio.get_task(reviewed_task)["annotations"] if a["id"] == annotation_id]
    rating = next(item for item in stored["result"] if item["type"] == "rating")
    assert rating["value"] == {"rating": 4} and rating["from_name"] == "label"

    outcome = collect(str(path))
    assert outcome["validation"]["success"], outcome["validation"]
    quality = outcome["quality"]
    assert quality["finished_tasks"] == RECORDS and quality["invalid_annotations"] == 0
    assert quality["gold_tasks"] == RECORDS
    # Every task's consensus is its gold score except r1, where the reviewer's 4 replaced the median 2.
    assert quality["consensus_accuracy_on_gold"] == pytest.approx((RECORDS - 1) / RECORDS)
    assert quality["consensus_mean_absolute_error_on_gold"] == pytest.approx(2 / RECORDS)
    assert quality["krippendorff_alpha_ordinal"] > 0.8
    dataset = outcome["dataset"]
    assert dataset["published"] and dataset["version"] == 1 and dataset["rows"] == RECORDS

    pulled = DatasetRegistry(object_store, mlflow_tracking).pull(unique_name, None, tmp_path / "pulled")
    consensus = pd.read_parquet(pulled.path("consensus")).set_index("task_id")
    grades = [json.loads(line) for line in pulled.path("training-export").read_text("utf-8").splitlines()]
    assert pulled.path("training-export").name == "grades.jsonl" and len(grades) == RECORDS
    for grade in grades:
        row = consensus.loc[grade["task_id"]]
        record, answer = json.loads(row["record"]), json.loads(row["answer"])
        assert grade["score"] == int(row["label"]) == answer["score"]
        assert grade["rubric"] == answer["rubric"] and set(grade["rubric"]) == set(RUBRIC)
        assert (grade["prompt"], grade["response"]) == (record["prompt"], record["response"])
        assert grade.get("model") == record.get("model")
        if grade["task_id"] != reviewed_task:
            assert grade["score"] == int(record["gold"]) and row["method"] == "median"
    by_task = {grade["task_id"]: grade for grade in grades}
    assert by_task[reviewed_task]["score"] == 4 and consensus.loc[reviewed_task, "method"] == "review"
    assert by_task[reviewed_task]["rubric"] == {"factually correct": False, "polite": True, "cites a source": False}
    chinese = next(grade for grade in grades if grade["response"].startswith("请"))
    assert chinese["model"] == "model-0" and chinese["prompt"].endswith("(case 4)")

    # Lineage: every published grade names its file and its line in it.
    sources = pd.read_parquet(pulled.path("sources"))
    assert set(sources["key"]) == {"answers/batch-1.jsonl"}
    assert sorted(sources["record_index"].tolist()) == list(range(1, RECORDS + 1))
    assert set(sources["record_id"]) == {f"r{i}" for i in range(RECORDS)}
