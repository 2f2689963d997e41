"""Files of records against the real stack: one task per record with its lineage, incremental by record, a run
SIGKILLed mid-file resumed record by record, and a mapping that fits no record refused in one line (exit 2)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelflow.cli import app
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from tests.integration.test_ingest import all_tasks, ingest_killed_after, run_ingest, write_spec


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


@pytest.fixture
def buckets(object_store: ObjectStore, unique_name: str) -> tuple[str, str]:
    source, state = f"{unique_name}-rec", f"{unique_name}-rec-state"
    object_store.ensure_bucket(source)
    return source, state


def test_records_become_tasks_with_lineage_and_reruns_create_only_new_and_changed_records(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    buckets: tuple[str, str],
    tmp_path: Path,
    prefect_api: str,
) -> None:
    source, state = buckets
    records = [{"id": f"q{i}", "meta": {"text": f"评论 {i}: record text"}} for i in range(40)]
    records[5] = {"id": "q5", "meta": {}}  # quarantined: missing_field
    object_store.put_bytes(source, "part/a.jsonl", jsonl(records))
    object_store.put_bytes(source, "part/b.csv", b'id,meta.text\nc1,from csv\nc2,"two\nlines"\n')
    spec_path = write_spec(
        tmp_path,
        {
            "name": f"records {source}",
            "source": f"s3://{source}/part/",
            "state": f"s3://{state}/p/",
            "task": "text-classification",
            "labels": ["x", "y"],
            "records": {"fields": {"text": "meta.text"}, "id": "id"},
        },
    )
    first = run_ingest(spec_path)
    assert first["tasks_created"] == 41 and first["quarantined_by_reason"] == {"missing_field": 1}
    project_id = first["project_id"]
    tasks = {
        (t["data"]["source_key"], t["data"]["record_index"]): t["data"] for t in all_tasks(label_studio, project_id)
    }
    assert (
        tasks[("part/a.jsonl", 1)]["text"] == "评论 0: record text" and tasks[("part/a.jsonl", 1)]["record_id"] == "q0"
    )
    assert tasks[("part/b.csv", 3)]["text"] == "two\nlines" and tasks[("part/b.csv", 3)]["record_id"] == "c2"
    assert all(len(data["content_sha256"]) == 64 for data in tasks.values())

    assert run_ingest(spec_path)["tasks_created"] == 0
    records.extend({"id": f"q{i}", "meta": {"text": f"appended {i}"}} for i in range(40, 50))
    records[7] = {"id": "q7", "meta": {"text": "评论 7: edited"}}
    object_store.put_bytes(source, "part/a.jsonl", jsonl(records))
    again = run_ingest(spec_path)
    assert again["tasks_created"] == 11 and again["records"]["changed"] == 1
    assert again["records"]["changed_records"][0]["record"] == f"s3://{source}/part/a.jsonl#8"
    assert again["quarantined"] == 0, "a record quarantined before, unchanged, is not reported again"
    assert len(all_tasks(label_studio, project_id)) == 52


def test_sigkill_mid_file_then_resume_gives_exactly_one_task_per_record(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    buckets: tuple[str, str],
    tmp_path: Path,
    prefect_api: str,
) -> None:
    source, state = buckets
    total = 3000
    object_store.put_bytes(source, "k/big.jsonl", jsonl([{"t": f"document {i} 文档"} for i in range(total)]))
    spec_path = write_spec(
        tmp_path,
        {
            "name": f"kill records {source}",
            "source": f"s3://{source}/k/",
            "state": f"s3://{state}/k/",
            "task": "text-classification",
            "labels": ["x", "y"],
            "records": {"fields": {"text": "t"}},
            "ingest": {"batch_size": 25, "chunk_objects": 200},
        },
    )
    project_id, killed_at = ingest_killed_after(spec_path, prefect_api, object_store, label_studio, state, 300)
    assert 300 <= killed_at < total, killed_at

    resumed = run_ingest(spec_path)
    assert resumed["records"]["unchanged"] + resumed["recovered_from_interrupted_run"] >= 300
    per_record = Counter(t["data"]["record_index"] for t in all_tasks(label_studio, project_id))
    assert len(per_record) == total and set(per_record.values()) == {1}
    assert run_ingest(spec_path)["tasks_created"] == 0


def test_a_field_missing_in_every_record_is_one_line_exit_2_and_creates_nothing(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    buckets: tuple[str, str],
    tmp_path: Path,
    prefect_api: str,
) -> None:
    source, state = buckets
    object_store.put_bytes(source, "q/a.jsonl", jsonl([{"query": f"question {i}"} for i in range(20)]))
    spec_path = write_spec(
        tmp_path,
        {
            "name": f"wrong mapping {source}",
            "source": f"s3://{source}/q/",
            "state": f"s3://{state}/q/",
            "task": "text-classification",
            "labels": ["x", "y"],
            "records": {"fields": {"text": "question"}},
        },
    )
    result = CliRunner().invoke(app, ["ingest", str(spec_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"spec: records.fields.text: field 'question' is missing in every record of s3://{source}/q/a.jsonl"
    ]
    assert label_studio.find_project(f"wrong mapping {source}") is None
    assert not object_store.bucket_exists(state)
