"""text-pair on the real stack: the example's en/zh/de/fr pairs plus bad records -> ingest (bad ones quarantined with
their reason) -> simulated annotators and a reviewer through the Label Studio API -> collect, validate, publish -> pull:
pairs.jsonl is the published consensus."""

from __future__ import annotations

import csv
import io
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

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SPEC = ROOT / "examples" / "specs" / "text-pair.yaml"
EXAMPLE_DATA = ROOT / "examples" / "data" / "text-pair" / "pairs-1.jsonl"
CLASSES = {"aligned", "partial", "not_aligned"}


def example_records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()]


def bad_records() -> list[dict[str, Any]]:
    """One pair with a blank side, one whose text is only a zero-width space, two malformed language codes."""
    base = {"text_a": "Where is the station?", "text_b": "Wo ist der Bahnhof?", "lang_a": "en", "lang_b": "de"}
    return [
        {**base, "id": "bad-blank", "text_b": "  \u3000 "},
        {**base, "id": "bad-invisible", "text_a": "\u200b"},
        {**base, "id": "bad-name", "lang_b": "german"},
        {**base, "id": "bad-underscore", "lang_a": "en_GB"},
    ]


def pairs_project(store: ObjectStore, tmp_path: Path, name: str, reviewer: str) -> tuple[Path, ProjectSpec, dict]:
    from labelflow.flows.ingest import ingest

    store.ensure_bucket(f"{name}-src")
    lines = [json.dumps(record, ensure_ascii=False) for record in [*example_records(), *bad_records()]]
    store.put_bytes(f"{name}-src", "pairs/part-1.jsonl", ("\n".join(lines) + "\n").encode(), "application/x-ndjson")
    body = yaml.safe_load(EXAMPLE_SPEC.read_text(encoding="utf-8"))
    body |= {
        "name": f"text pairs {name}",
        "source": f"s3://{name}-src/pairs/",
        "state": f"s3://{name}-state/labelflow/",
        "quality": {**body["quality"], "route_low_agreement": False, "reviewers": [reviewer]},
        "dataset": {"name": name},
    }
    path = tmp_path / "text-pair.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path, parse_spec(body), ingest(str(path))


def test_text_pairs_are_ingested_labeled_reviewed_published_and_pulled(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect

    records = example_records()
    reviewer = f"{unique_name}-reviewer@labelflow.local"
    path, spec, ingested = pairs_project(object_store, tmp_path, unique_name, reviewer)

    # Bad records are quarantined with a reason naming the field; the good ones of the same file become tasks.
    assert ingested["tasks_created"] == len(records)
    assert ingested["quarantined_by_reason"] == {"empty": 2, "invalid_language": 2}
    bucket, key = ingested["quarantine_report"].removeprefix("s3://").split("/", 1)
    rows = csv.DictReader(io.StringIO(object_store.get_bytes(bucket, key).decode("utf-8")))
    report = {row["record_id"]: row for row in rows}
    assert report["bad-name"]["detail"].startswith("target_lang: 'german' is not a BCP 47 language tag")
    assert report["bad-name"]["reason"] == report["bad-underscore"]["reason"] == "invalid_language"
    assert "did you mean 'en-GB'?" in report["bad-underscore"]["detail"]
    assert report["bad-invisible"]["reason"] == report["bad-blank"]["reason"] == "empty"
    assert report["bad-blank"]["record_index"] == str(len(records) + 1)

    project = read_project_record(object_store, spec)
    assert project is not None
    project_id = int(project["project_id"])
    project_info = label_studio.get_project(project_id)
    assert project_info is not None
    config = project_info["label_config"]
    assert '<Choices name="label" toName="text_a"' in config and 'alias="not_aligned"' in config
    assert '<Rating name="score" toName="text_b" maxRating="5"/>' in config
    tasks = {task["data"]["record_id"]: task for task in label_studio.export_tasks(project_id)}
    assert set(tasks) == {record["id"] for record in records}
    assert tasks["p19"]["data"]["target_lang"] == "zh-Hant-TW" and "gold" not in tasks["p19"]["data"]

    # Two perfect annotators and one at 90%: the majority of (gold, gold, x) is the gold class on every task.
    annotators = build_annotators([1.0, 1.0, 0.9], spammers=0, prefix=unique_name)
    simulated = run(label_studio, spec, project_id, annotators, seed=5, hidden=hidden_record_fields(object_store, spec))
    assert simulated["annotations_created"] == 3 * len(records) and simulated["tasks_with_truth"] == len(records)

    # One hand-written annotation: the reviewer judges p04 (gold partial) aligned, with a score of 4.
    reviewed_task = int(tasks["p04"]["id"])
    reviewer_id = label_studio.create_user(reviewer)
    result = [
        {"from_name": "label", "to_name": "text_a", "type": "choices", "value": {"choices": ["aligned"]}},
        {"from_name": "score", "to_name": "text_b", "type": "rating", "value": {"rating": 4}},
    ]
    annotation_id = label_studio.create_annotation(reviewed_task, result, completed_by=reviewer_id, lead_time=9.0)
    (stored,) = [a for a in label_studio.get_task(reviewed_task)["annotations"] if a["id"] == annotation_id]
    assert {item["type"] for item in stored["result"]} == {"choices", "rating"}

    outcome = collect(str(path))
    assert outcome["validation"]["success"], outcome["validation"]
    quality = outcome["quality"]
    assert quality["finished_tasks"] == len(records) and quality["invalid_annotations"] == 0
    assert quality["gold_tasks"] == len(records)
    assert quality["consensus_accuracy_on_gold"] == pytest.approx((len(records) - 1) / len(records))
    assert quality["krippendorff_alpha"] > 0.7 and quality["krippendorff_alpha_ordinal"] > 0.5
    assert 0.5 < quality["scored_share"] < 1.0  # the score is optional
    dataset = outcome["dataset"]
    assert dataset["published"] and dataset["version"] == 1 and dataset["rows"] == len(records)

    pulled = DatasetRegistry(object_store, mlflow_tracking).pull(unique_name, None, tmp_path / "pulled")
    consensus = pd.read_parquet(pulled.path("consensus")).set_index("task_id")
    export = pulled.path("training-export")
    pairs = [json.loads(line) for line in export.read_text("utf-8").splitlines()]
    assert export.name == "pairs.jsonl" and len(pairs) == len(records)
    by_id = {record["id"]: record for record in records}
    for pair in pairs:
        assert set(pair) == {"source", "target", "source_lang", "target_lang", "label", "score", "task_id"}
        row = consensus.loc[pair["task_id"]]
        record, answer = json.loads(row["record"]), json.loads(row["answer"])
        original = by_id[record["record_id"]]
        assert (pair["source"], pair["target"]) == (original["text_a"], original["text_b"])
        assert (pair["source_lang"], pair["target_lang"]) == (original["lang_a"], original["lang_b"])
        assert pair["label"] == row["label"] == answer["label"] and pair["label"] in CLASSES
        assert pair["score"] == answer["score"] and (pair["score"] is None or 1 <= pair["score"] <= 5)
        if pair["task_id"] != reviewed_task:
            assert pair["label"] == original["judgement"] and row["method"] == "majority"
    reviewed = next(pair for pair in pairs if pair["task_id"] == reviewed_task)
    assert (reviewed["label"], reviewed["score"]) == ("aligned", 4)
    assert consensus.loc[reviewed_task, "method"] == "review"
    chinese = next(pair for pair in pairs if pair["target_lang"] == "zh-Hant-TW")
    assert chinese["target"] == "請小心月台與列車之間的空隙。" and chinese["source_lang"] == "en-GB"

    # Lineage: every published pair names its file and its line; the quarantined lines are not in the version.
    sources = pd.read_parquet(pulled.path("sources"))
    assert set(sources["key"]) == {"pairs/part-1.jsonl"}
    assert sorted(sources["record_index"].tolist()) == list(range(1, len(records) + 1))
