"""ranking on the real stack: JSONL records of 4 responses with a gold order -> ingest -> simulated rankers, a bad
ranking that the gate refuses, and a reviewer, all through the Label Studio API -> collect, validate, publish ->
pull: ranking.jsonl is the published consensus order and ranking_pairs.jsonl holds every implied pair."""

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
from labelflow.tasks.validate import ValidationFailed

RECORDS = 6
GOLD = ["2>1>4>3", "1>2>3>4", "4>3>2>1", "3>1>2>4", "2>4>1>3", "1>3>4>2"]
FIELDS = {
    "prompt": "question",
    "responses": [f"candidates.{i}.text" for i in range(4)],
    "models": [f"candidates.{i}.model" for i in range(4)],
    "gold": "best_order",
}


def records_jsonl() -> bytes:
    """Prompts with four candidate answers each (one set in Chinese) and the expert's order, best first."""
    lines = []
    for i in range(RECORDS):
        texts = [f"Answer {k} to question {i}: {'detail ' * k}".strip() for k in range(1, 5)]
        if i == 3:
            texts = ["巴黎是法国的首都。", "是巴黎。", "里昂。", "我不知道。"]
        candidates = [{"text": text, "model": f"model-{k % 3}"} for k, text in enumerate(texts)]
        record = {"id": f"q{i}", "question": f"Question {i}?", "candidates": candidates, "best_order": GOLD[i]}
        lines.append(json.dumps(record, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def ranking_project(store: ObjectStore, tmp_path: Path, name: str, reviewer: str) -> tuple[Path, ProjectSpec]:
    from labelflow.flows.ingest import ingest

    store.ensure_bucket(f"{name}-src")
    store.put_bytes(f"{name}-src", "candidates/batch-1.jsonl", records_jsonl(), "application/x-ndjson")
    body = {
        "name": f"ranking {name}",
        "source": f"s3://{name}-src/candidates/",
        "state": f"s3://{name}-state/labelflow/",
        "task": "ranking",
        "overlap": 3,
        "records": {"format": "jsonl", "fields": FIELDS, "id": "id"},
        "quality": {"route_low_agreement": False, "reviewers": [reviewer]},
        "dataset": {"name": name},
    }
    path = tmp_path / "ranking.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    spec = parse_spec(body)
    assert ingest(str(path))["tasks_created"] == RECORDS
    return path, spec


def ranker_result(*ids: str) -> list[dict[str, Any]]:
    """What Label Studio's Ranker stores (Ranker.jsx): the ids in order under the Ranker's own name."""
    return [{"from_name": "label", "to_name": "responses", "type": "ranker", "value": {"ranker": {"label": list(ids)}}}]


def test_ranking_records_are_ingested_ranked_gated_reviewed_published_and_pulled(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect

    reviewer = f"{unique_name}-reviewer@labelflow.local"
    path, spec = ranking_project(object_store, tmp_path, unique_name, reviewer)
    project = read_project_record(object_store, spec)
    assert project is not None
    project_id = int(project["project_id"])
    # The reviewer has a Label Studio account from the start: collect refuses a spec naming an unknown reviewer.
    reviewer_id = label_studio.create_user(reviewer)

    # Label Studio holds the type's interface and each record's responses as List items, in record order.
    project_info = label_studio.get_project(project_id)
    assert project_info is not None
    assert '<Ranker name="label" toName="responses"/>' in project_info["label_config"]
    tasks = {task["data"]["record_id"]: task for task in label_studio.export_tasks(project_id)}
    assert set(tasks) == {f"q{i}" for i in range(RECORDS)}
    chinese = tasks["q3"]["data"]
    assert [item["id"] for item in chinese["items"]] == ["r1", "r2", "r3", "r4"]
    assert chinese["items"][1] == {"id": "r2", "title": "Response 2", "body": "是巴黎。"}

    # Two perfect rankers and one at 90% (a miss swaps one adjacent pair): Borda gives the gold order everywhere.
    annotators = build_annotators([1.0, 1.0, 0.9], spammers=0, prefix=unique_name)
    simulated = run(
        label_studio, spec, project_id, annotators, seed=11, hidden=hidden_record_fields(object_store, spec)
    )
    assert simulated["annotations_created"] == 3 * RECORDS and simulated["tasks_with_truth"] == RECORDS

    # A hand-written ranking that repeats a response is not a permutation: the gate refuses the batch.
    sloppy = label_studio.create_user(f"{unique_name}-sloppy@labelflow.local")
    bad_task = int(tasks["q0"]["id"])
    bad = label_studio.create_annotation(bad_task, ranker_result("r2", "r2", "r1", "r3"), sloppy, 4.0)
    with pytest.raises(ValidationFailed) as refused:
        collect(str(path))
    failed = {(f["batch"], f["column"]) for f in refused.value.summary.failed}
    assert ("annotations", "is_permutation") in failed, refused.value.summary.text()
    assert DatasetRegistry(object_store, mlflow_tracking).versions(unique_name) == []
    label_studio.delete_annotation(bad)

    # The reviewer reverses record q1 (gold 1>2>3>4): their order replaces the Borda consensus there.
    reviewed_task = int(tasks["q1"]["id"])
    label_studio.create_annotation(reviewed_task, ranker_result("r4", "r3", "r2", "r1"), reviewer_id, 20.0)

    outcome = collect(str(path))
    assert outcome["validation"]["success"], outcome["validation"]
    quality = outcome["quality"]
    assert quality["finished_tasks"] == RECORDS and quality["invalid_annotations"] == 0
    assert quality["gold_tasks"] == RECORDS
    assert quality["consensus_accuracy_on_gold"] == pytest.approx((RECORDS - 1) / RECORDS)
    assert quality["mean_kendall_tau_on_gold"] == pytest.approx((RECORDS - 1 - 1) / RECORDS)  # q1's tau is -1
    assert quality["mean_kendalls_w"] > 0.9
    dataset = outcome["dataset"]
    assert dataset["published"] and dataset["version"] == 1 and dataset["rows"] == RECORDS

    pulled = DatasetRegistry(object_store, mlflow_tracking).pull(unique_name, None, tmp_path / "pulled")
    consensus = pd.read_parquet(pulled.path("consensus")).set_index("task_id")
    export = pulled.path("training-export")
    ranked = [json.loads(line) for line in export.read_text("utf-8").splitlines()]
    assert export.name == "ranking.jsonl" and len(ranked) == RECORDS
    for line in ranked:
        row = consensus.loc[line["task_id"]]
        record, answer = json.loads(row["record"]), json.loads(row["answer"])
        assert line["order"] == answer["order"] and row["label"] == ">".join(map(str, line["order"]))
        assert line["prompt"] == record["prompt"]
        assert line["ranked"] == [record["responses"][k - 1] for k in line["order"]]
        assert line["models"] == [record["models"][k - 1] for k in line["order"]]
        if line["task_id"] == reviewed_task:
            assert line["order"] == [4, 3, 2, 1] and row["method"] == "review"
        else:
            assert row["label"] == record["gold"] and row["method"] == "borda" and row["agreement"] > 0.9

    # Lineage: every published order names its file and its line in it.
    sources = pd.read_parquet(pulled.path("sources"))
    assert set(sources["key"]) == {"candidates/batch-1.jsonl"}
    assert sorted(sources["record_index"].tolist()) == list(range(1, RECORDS + 1))

    # Every implied pair, better response as `chosen`: 4 * 3 / 2 per task (needs dataset.py to register the file).
    pairs_file = pulled.files["ranking_pairs.jsonl"]
    pairs = [json.loads(line) for line in pairs_file.read_text("utf-8").splitlines()]
    assert len(pairs) == 6 * RECORDS
    expected = {
        (line["prompt"], line["ranked"][i], line["ranked"][j])
        for line in ranked
        for i in range(4)
        for j in range(i + 1, 4)
    }
    assert {(p["prompt"], p["chosen"], p["rejected"]) for p in pairs} == expected
