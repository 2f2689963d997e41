"""preference on the real stack: a JSONL file of 30 response pairs (with model names and gold) -> ingest -> three
simulated annotators and a reviewer's hand-written answer through the Label Studio API -> collect (consensus, model
leaderboard) -> validate and publish -> pull: preference.jsonl holds the DPO pairs of the published consensus. A
result that picks neither response is then refused by the gate. The chat interface is accepted by Label Studio."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.collect import hidden_record_fields, read_batch
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.label_config import build_label_config
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.simulate import build_annotators, run
from labelflow.tasks.spec import ProjectSpec, parse_spec
from labelflow.tasks.task_types.preference import preference_result
from labelflow.tasks.validate import ValidationFailed

RECORDS = 30
STRENGTH = {"model-strong": 3, "model-mid": 2, "model-weak": 1}
MATCHUPS = [("model-strong", "model-mid"), ("model-mid", "model-weak"), ("model-weak", "model-strong")]
FIELDS = {
    "prompt": "question",
    "response_a": "answers.0.text",
    "response_b": "answers.1.text",
    "model_a": "answers.0.model",
    "model_b": "answers.1.model",
    "gold": "preferred",
}


def records() -> list[dict[str, Any]]:
    """Pairs where the stronger model's answer is preferred, except for a few ties and one pair of bad answers."""
    rows = []
    for i in range(RECORDS):
        model_a, model_b = MATCHUPS[i % 3]
        preferred = "A" if STRENGTH[model_a] > STRENGTH[model_b] else "B"
        if i in (9, 19):
            preferred = "tie"
        if i == 29:
            preferred = "both-bad"
        question = f"问题 {i}：天空为什么是蓝色的？" if i % 7 == 0 else f"Question {i}: why is the sky blue?"
        answers = [
            {"model": model, "text": f"{model} answers question {i}: {'Rayleigh scattering. ' * STRENGTH[model]}"}
            for model in (model_a, model_b)
        ]
        rows.append({"id": f"pair-{i}", "question": question, "answers": answers, "preferred": preferred})
    return rows


def preference_project(
    store: ObjectStore, tmp_path: Path, name: str, reviewer: str
) -> tuple[Path, ProjectSpec, list[dict[str, Any]]]:
    from labelflow.flows.ingest import ingest

    rows = records()
    store.ensure_bucket(f"{name}-src")
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    store.put_bytes(f"{name}-src", "pairs/batch-1.jsonl", payload, "application/x-ndjson")
    body = {
        "name": f"preference {name}",
        "source": f"s3://{name}-src/pairs/",
        "state": f"s3://{name}-state/labelflow/",
        "task": "preference",
        "overlap": 3,
        "records": {"format": "jsonl", "fields": FIELDS, "id": "id"},
        "quality": {"route_low_agreement": False, "reviewers": [reviewer]},
        "dataset": {"name": name},
    }
    path = tmp_path / "preference.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    spec = parse_spec(body)
    assert ingest(str(path))["tasks_created"] == RECORDS
    return path, spec, rows


def test_preference_records_are_ingested_annotated_judged_published_and_pulled_as_dpo_pairs(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect, collect_annotations

    reviewer = label_studio.whoami()["email"]
    path, spec, rows = preference_project(object_store, tmp_path, unique_name, reviewer)
    record = read_project_record(object_store, spec)
    assert record is not None
    project_id = int(record["project_id"])

    # The tasks carry the mapped fields and their lineage.
    tasks = {int(t["data"]["record_index"]): t for t in label_studio.export_tasks(project_id)}
    assert sorted(tasks) == list(range(1, RECORDS + 1))  # JSONL line numbers
    first = tasks[1]["data"]
    assert first["prompt"] == rows[0]["question"] and first["response_b"] == rows[0]["answers"][1]["text"]
    assert first["record_id"] == "pair-0"
    # Gold answers and model names never reach Label Studio (annotators would see them); the ledger keeps them.
    assert not {"model_a", "model_b", "gold"} & {key for task in tasks.values() for key in task["data"]}
    hidden = hidden_record_fields(object_store, spec)
    assert json.loads(hidden[int(tasks[1]["id"])]) == {"gold": "A", "model_a": "model-strong", "model_b": "model-mid"}

    annotators = build_annotators([0.95, 0.9, 0.85], spammers=0, prefix=unique_name)
    simulated = run(label_studio, spec, project_id, annotators, seed=7, hidden=hidden_record_fields(object_store, spec))
    assert simulated["annotations_created"] == RECORDS * 3 and simulated["tasks_with_truth"] == RECORDS

    # The reviewer's own answer, written as Label Studio stores a Pairwise click (Pairwise.js: value.selected is
    # left or right) and a TextArea: it overrides the annotators on record 2 (whose gold is B).
    reviewed_task = int(tasks[2]["id"])
    hand_written = [
        {"from_name": "label", "to_name": "response_a,response_b", "type": "pairwise", "value": {"selected": "left"}},
        {"from_name": "reason", "to_name": "prompt", "type": "textarea", "value": {"text": ["A cites the physics."]}},
    ]
    review_id = label_studio.create_annotation(reviewed_task, hand_written, lead_time=12.0)
    stored = next(a for a in label_studio.get_task(reviewed_task)["annotations"] if a["id"] == review_id)
    assert [item["value"] for item in stored["result"]] == [{"selected": "left"}, {"text": ["A cites the physics."]}]

    judged = collect_annotations(str(path))
    quality = judged["quality"]
    assert quality["finished_tasks"] == RECORDS and quality["invalid_annotations"] == 0
    assert quality["gold_tasks"] == RECORDS and quality["consensus_accuracy_on_gold"] >= 0.8
    assert quality["percent_agreement"] > 0.6 and 0.4 < quality["krippendorff_alpha"] <= 1.0
    board = quality["model_leaderboard"]
    assert [row["model"] for row in board] == ["model-strong", "model-mid", "model-weak"]
    assert abs(sum(row["strength"] for row in board) - 1.0) < 1e-9
    _, batch = read_batch(object_store, judged["batch"])
    consensus = batch["consensus"].set_index("task_id")
    assert consensus.loc[reviewed_task, "label"] == "A" and consensus.loc[reviewed_task, "method"] == "review"
    assert json.loads(consensus.loc[reviewed_task, "answer"])["reasons"] == ["A cites the physics."]
    # Every finished task with an A, B or tie consensus (between two different models) is one comparison.
    decided = consensus[consensus["finished"] & consensus["label"].isin(["A", "B", "tie"])]
    assert {row["model"]: row["wins"] + row["losses"] + row["ties"] for row in board} == {
        row["model"]: row["comparisons"] for row in board
    }
    assert sum(row["comparisons"] for row in board) == 2 * len(decided)

    published = collect(str(path))
    assert published["validation"]["success"], published["validation"]
    version = published["dataset"]
    assert version["published"] and version["version"] == 1 and version["rows"] == RECORDS - quality["flagged_tasks"]

    pulled = DatasetRegistry(object_store, mlflow_tracking).pull(unique_name, 1, tmp_path / "v1")
    rows_published = pd.read_parquet(pulled.path("consensus")).sort_values("task_id")
    assert len(rows_published) == version["rows"] and set(rows_published["label"]) <= {"A", "B", "tie", "both-bad"}
    expected = []
    for record_text, label in rows_published[["record", "label"]].itertuples(index=False):
        fields = json.loads(record_text)
        if label in ("A", "B"):
            chosen, rejected = ("response_a", "response_b") if label == "A" else ("response_b", "response_a")
            expected.append({"prompt": fields["prompt"], "chosen": fields[chosen], "rejected": fields[rejected]})
    export = pulled.path("training-export")
    assert export.name == "preference.jsonl"
    pairs = [json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    assert pairs == expected and len(pairs) == (rows_published["label"].isin(["A", "B"])).sum() >= 20
    assert any(p["prompt"].startswith("问题") for p in pairs)
    sources = pd.read_parquet(pulled.path("sources"))
    assert sources["key"].eq("pairs/batch-1.jsonl").all() and sources["record_index"].between(1, RECORDS).all()

    # The gate: an answer that picks neither response (only a reason) fails validation; nothing new is published.
    label_studio.create_annotation(
        int(tasks[5]["id"]),
        [{"from_name": "reason", "to_name": "prompt", "type": "textarea", "value": {"text": ["cannot decide"]}}],
        lead_time=3.0,
    )
    with pytest.raises(ValidationFailed) as failure:
        collect(str(path))
    failed = {(f["batch"], f["column"]) for f in failure.value.summary.failed}
    assert ("annotations", "picks_a_response") in failed and ("annotations", "problem") in failed
    assert [v.version for v in DatasetRegistry(object_store, mlflow_tracking).versions(unique_name)] == [1]


def test_the_chat_interface_is_accepted_and_its_results_read_back(
    label_studio: LabelStudioClient, unique_name: str
) -> None:
    spec = parse_spec(
        {
            "name": "chat",
            "source": "s3://raw/chat/",
            "task": "preference",
            "options": {"chat": True},
            "records": {"fields": {"prompt": "messages", "response_a": "a", "response_b": "b", "gold": "g"}},
        }
    )
    chat = json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}])
    data = spec.task_type.record_task_data({"prompt": chat, "response_a": "Scattering.", "response_b": "Paint."}, spec)
    project_id = label_studio.create_project(f"{unique_name}-chat-{uuid.uuid4().hex[:6]}", build_label_config(spec))
    try:
        (task_id,) = label_studio.import_tasks(project_id, [data])
        assert label_studio.get_task(task_id)["data"]["prompt"][1] == {
            "role": "user",
            "content": "Why is the sky blue?",
        }
        answers = {"B": preference_result("B", "A is too vague."), "both-bad": preference_result("both-bad")}
        for result in answers.values():
            label_studio.create_annotation(task_id, result, lead_time=2.0)
        stored = label_studio.get_task(task_id)["annotations"]
        read = [spec.task_type.parse_answer(a["result"], data, spec) for a in stored]
        assert sorted((label, problems) for label, _, problems in read) == [("B", []), ("both-bad", [])]
    finally:
        label_studio.delete_project(project_id)
