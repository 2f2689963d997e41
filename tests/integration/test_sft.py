"""The `sft` type on the real stack: a JSONL file of prompts and drafts (English and Chinese) is ingested, answered by
simulated annotators and a reviewer through the Label Studio API, collected, validated, published and pulled; the
pulled sft.jsonl is the consensus as chat messages, and an unedited draft later stops the next publication."""

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
from labelflow.tasks.task_types.record_task import answer_of, record_of
from labelflow.tasks.task_types.sft import textarea_result
from labelflow.tasks.validate import ValidationFailed

RECORDS = [
    ("p1", "How do I cook pasta?", "Boil it.", "Boil salted water, add the pasta, cook ten minutes, drain and serve."),
    ("p2", "怎么煮面条？", "煮一下。", "把水烧开，放入面条煮十分钟，然后沥干水分，趁热食用。"),
    ("p3", "What is photosynthesis?", "Plants eat light.", "Plants turn light, water and CO2 into sugar and oxygen."),
    ("p4", "如何泡绿茶？", "用开水泡。", "用八十度左右的水冲泡绿茶，浸泡两到三分钟后饮用。"),
    ("p5", "Name a prime number above 10.", "12", "11 is the smallest prime number above 10."),
]
REVIEWED_ANSWER = "先把水烧开，再下面条，煮八到十分钟，捞出沥干即可。"


def write_spec(tmp_path: Path, body: dict[str, Any]) -> tuple[Path, ProjectSpec]:
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path, parse_spec(body)


def jsonl(records: list[tuple[str, str, str, str]]) -> bytes:
    lines = [
        {"id": rid, "question": q, "draft": {"text": d, "model": "draft-model-1"}, "reference": ref}
        for rid, q, d, ref in records
    ]
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")


def test_sft_records_are_answered_reviewed_published_and_pulled_as_chat_messages(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect
    from labelflow.flows.ingest import ingest

    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    object_store.put_bytes(source, "prompts/batch-1.jsonl", jsonl(RECORDS))
    reviewer = f"lead-{unique_name}@example.com"
    body = {
        "name": f"sft {unique_name}",
        "source": f"s3://{source}/prompts/",
        "state": f"s3://{unique_name}-state/labelflow/",
        "task": "sft",
        "records": {
            "format": "jsonl",
            "fields": {"prompt": "question", "draft": "draft.text", "draft_model": "draft.model", "gold": "reference"},
            "id": "id",
        },
        "options": {"forbid_unedited_draft": True},
        "overlap": 2,
        "quality": {"route_low_agreement": False, "reviewers": [reviewer]},
        "dataset": {"name": unique_name},
    }
    path, spec = write_spec(tmp_path, body)
    assert ingest(str(path))["tasks_created"] == len(RECORDS)
    record = read_project_record(object_store, spec)
    assert record is not None
    project_id = int(record["project_id"])

    # Two careful simulated annotators edit the reference; a reviewer writes one answer by hand through the API.
    annotators = build_annotators([1.0, 1.0], spammers=0, prefix=unique_name)
    assert run(label_studio, spec, project_id, annotators, seed=3, hidden=hidden_record_fields(object_store, spec))[
        "annotations_created"
    ] == 2 * len(RECORDS)
    tasks = {task["data"]["record_id"]: task for task in label_studio.export_tasks(project_id)}
    assert tasks["p2"]["data"]["draft"] == "煮一下。" and tasks["p2"]["data"]["prompt"] == "怎么煮面条？"
    reviewer_id = label_studio.create_user(reviewer)
    label_studio.create_annotation(tasks["p2"]["id"], textarea_result(REVIEWED_ANSWER), reviewer_id, 30.0)

    first = collect(str(path))
    assert first["validation"]["success"], first["validation"]
    assert first["dataset"]["published"] and first["dataset"]["rows"] == len(RECORDS)
    assert first["quality"]["flagged_tasks"] == 0

    registry = DatasetRegistry(object_store, mlflow_tracking)
    pulled = registry.pull(unique_name, None, tmp_path / "v1")
    consensus = pd.read_parquet(pulled.path("consensus")).sort_values("task_id")
    exported = [json.loads(line) for line in pulled.path("training-export").read_text(encoding="utf-8").splitlines()]
    assert pulled.path("training-export").name == "sft.jsonl" and len(exported) == len(consensus) == len(RECORDS)
    for row, line in zip(consensus.itertuples(index=False), exported, strict=True):
        prompt, answer = record_of(row.record)["prompt"], answer_of(row.answer)["text"]
        assert line == {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}
    by_record = {record_of(row.record)["record_id"]: row for row in consensus.itertuples(index=False)}
    assert by_record["p2"].method == "review" and answer_of(by_record["p2"].answer)["text"] == REVIEWED_ANSWER
    assert {by_record[r].method for r in ("p1", "p3", "p4", "p5")} == {"medoid"}
    assert all(by_record[r].agreement >= spec.quality.min_agreement for r in ("p1", "p3", "p4", "p5"))
    assert "把水烧开" in pulled.path("training-export").read_text(encoding="utf-8")  # Chinese kept as text

    # An annotator who submits the draft unchanged makes the next collect fail validation: nothing is published.
    lazy = label_studio.create_user(f"lazy-{unique_name}@example.com")
    label_studio.create_annotation(tasks["p1"]["id"], textarea_result("Boil it."), lazy, 1.0)
    with pytest.raises(ValidationFailed) as failure:
        collect(str(path))
    failed = {(f["batch"], f["column"]) for f in failure.value.summary.failed}
    assert {("annotations", "same_as_draft"), ("annotations", "problem")} <= failed, failure.value.summary.text()
    assert [v.version for v in registry.versions(unique_name)] == [1]
