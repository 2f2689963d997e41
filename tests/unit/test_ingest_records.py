"""Files of records on the in-memory fakes: one task per record, per-record quarantine with reasons, incremental by
record (appended, changed, unchanged), a run that dies mid-file resumed record by record, and a mapping that fits no
record refused before anything is created."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any

import pandas as pd
import pytest

from labelflow.integrations.label_studio import LabelStudioError
from labelflow.tasks.ingest_records import RecordFieldsError
from labelflow.tasks.ledger import IngestLedger
from labelflow.tasks.spec import ProjectSpec, parse_spec
from tests.unit.fakes import FakeClients
from tests.unit.stage_fixtures import LABELS, ingest

BUCKET = "corpus"


def records_spec(**extra: Any) -> ProjectSpec:
    """Text classification over JSONL files of reviews in s3://corpus/reviews/ (`body` holds the text)."""
    body = {
        "name": "review records",
        "source": f"s3://{BUCKET}/reviews/",
        "task": "text-classification",
        "labels": LABELS,
        "records": {"format": "auto", "fields": {"text": "review.body"}, "id": "id", "max_chars": 60},
        **extra,
    }
    return parse_spec(body)


def jsonl(records: list[Any]) -> bytes:
    """A JSONL file: dicts as JSON objects, strings as raw lines."""
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records).encode()


def review(i: int, text: str | None = None) -> dict[str, Any]:
    return {"id": f"r{i}", "review": {"body": text or f"review {i}: {LABELS[i % 3]}"}}


def tasks_by_record(clients: FakeClients, project_id: int) -> Counter[str]:
    """How many tasks each (file, record index) has."""
    return Counter(
        f"{t['data']['source_uri']}#{t['data']['record_index']}"
        for t in clients.label_studio_client.project_tasks(project_id)
    )


def quarantine_report(clients: FakeClients, summary: dict[str, Any]) -> list[dict[str, str]]:
    bucket, key = summary["quarantine_report"].removeprefix("s3://").split("/", 1)
    return list(csv.DictReader(io.StringIO(clients.store.get_bytes(bucket, key).decode())))


def test_each_record_becomes_a_task_and_bad_records_are_quarantined_with_reasons() -> None:
    clients = FakeClients()
    clients.store.put_object(
        BUCKET,
        "reviews/part-1.jsonl",
        jsonl([
            review(1),
            "{not json",
            {"id": "r3", "review": {}},
            review(4, "   "),
            review(5, "x" * 61),
            review(6, "review 1: negative"),  # same text as record 1: a duplicate
            review(7, "好评 7"),
        ]),
    )  # fmt: skip
    summary = ingest(clients, records_spec())
    assert summary["tasks_created"] == 2 and summary["records"]["records_read"] == 7
    assert summary["quarantined_by_reason"] == {
        "duplicate": 1, "empty": 1, "malformed_record": 1, "missing_field": 1, "too_long": 1,
    }  # fmt: skip
    tasks = clients.label_studio_client.project_tasks(summary["project_id"])
    data = {t["data"]["record_index"]: t["data"] for t in tasks}
    assert data[1]["text"] == "review 1: negative" and data[1]["record_id"] == "r1"
    assert data[7]["text"] == "好评 7" and data[7]["source_uri"] == f"s3://{BUCKET}/reviews/part-1.jsonl"
    assert len(data[7]["content_sha256"]) == 64
    report = {row["record_index"]: row for row in quarantine_report(clients, summary)}
    assert report["2"]["reason"] == "malformed_record" and "line 2" in report["2"]["detail"]
    assert report["3"]["reason"] == "missing_field" and "review.body" in report["3"]["detail"]
    assert report["6"]["reason"] == "duplicate" and report["6"]["record_id"] == "r6"
    assert all(row["uri"] == f"s3://{BUCKET}/reviews/part-1.jsonl" for row in report.values())


def test_appended_records_create_only_their_tasks_and_a_changed_record_one_new_task() -> None:
    clients = FakeClients()
    spec = records_spec()
    clients.store.put_object(BUCKET, "reviews/part-1.jsonl", jsonl([review(i) for i in range(10)]))
    first = ingest(clients, spec)
    project_id = first["project_id"]
    assert first["tasks_created"] == 10

    again = ingest(clients, spec)
    assert again["tasks_created"] == 0 and again["new"] == 0, "an unchanged file is not read again"

    clients.store.put_object(BUCKET, "reviews/part-1.jsonl", jsonl([review(i) for i in range(15)]))
    appended = ingest(clients, spec)
    assert appended["tasks_created"] == 5 and appended["records"]["unchanged"] == 10
    assert appended["quarantined"] == 0 and appended["records"]["changed"] == 0

    edited = [review(i) for i in range(15)]
    edited[3] = review(3, "review 3: edited")
    clients.store.put_object(BUCKET, "reviews/part-1.jsonl", jsonl(edited))
    changed = ingest(clients, spec)
    assert changed["tasks_created"] == 1 and changed["records"]["unchanged"] == 14
    [named] = changed["records"]["changed_records"]
    assert named["record"] == f"s3://{BUCKET}/reviews/part-1.jsonl#4" and named["record_id"] == "r3"
    per_record = tasks_by_record(clients, project_id)
    assert sum(per_record.values()) == 16 and per_record[f"s3://{BUCKET}/reviews/part-1.jsonl#4"] == 2
    texts = [t["data"]["text"] for t in clients.label_studio_client.project_tasks(project_id)]
    assert "review 3: edited" in texts and "review 3: positive" in texts, "the old task stays"


def test_a_run_that_dies_mid_file_is_resumed_record_by_record() -> None:
    clients = FakeClients()
    spec = records_spec(ingest={"chunk_objects": 4, "batch_size": 2})
    clients.store.put_object(BUCKET, "reviews/part-1.jsonl", jsonl([review(i) for i in range(12)]))
    clients.label_studio_client.failing_imports.add(4)  # the 4th import request (2nd chunk) is refused
    with pytest.raises(LabelStudioError):
        ingest(clients, spec)
    project_id = clients.label_studio_client.find_project(spec.name)
    assert project_id is not None and len(clients.label_studio_client.project_tasks(project_id)) == 6

    resumed = ingest(clients, spec)
    # The second chunk's first batch reached Label Studio before the refusal: recorded from its pending marker.
    assert resumed["recovered_from_interrupted_run"] == 2 and resumed["records"]["unchanged"] == 6
    assert resumed["tasks_created"] == 6
    per_record = tasks_by_record(clients, project_id)
    assert len(per_record) == 12 and set(per_record.values()) == {1}, "every record exactly once"
    ledger = IngestLedger(clients.store, spec.state_location).read_all().to_pandas()
    ingested = ledger[ledger["status"] == "ingested"]
    assert sorted(ingested["record_index"]) == list(range(1, 13)) and ledger["task_id"].dropna().is_unique


def test_a_field_missing_in_every_record_is_refused_before_anything_is_created() -> None:
    clients = FakeClients()
    clients.store.put_object(BUCKET, "reviews/part-1.jsonl", jsonl([{"id": i, "text": "t"} for i in range(5)]))
    with pytest.raises(RecordFieldsError) as failure:
        ingest(clients, records_spec())
    assert str(failure.value) == (
        f"records.fields.text: field 'review.body' is missing in every record of s3://{BUCKET}/reviews/part-1.jsonl"
    )
    assert clients.label_studio_client.find_project("review records") is None


def test_csv_and_parquet_records_carry_their_row_as_record_index() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    clients = FakeClients()
    spec = records_spec(records={"fields": {"text": "body"}})
    clients.store.put_object(BUCKET, "reviews/a.csv", b'body,other\nfirst text,1\n"multi\nline",2\n')
    buffer = io.BytesIO()
    pq.write_table(pa.table({"body": ["parquet one", "parquet two"]}), buffer)
    clients.store.put_object(BUCKET, "reviews/b.parquet", buffer.getvalue())
    summary = ingest(clients, spec)
    assert summary["tasks_created"] == 4 and summary["records"]["files_read"] == 2
    found = {
        (t["data"]["source_key"], t["data"]["record_index"]): t["data"]["text"]
        for t in clients.label_studio_client.project_tasks(summary["project_id"])
    }
    assert found == {
        ("reviews/a.csv", 2): "first text",
        ("reviews/a.csv", 3): "multi\nline",
        ("reviews/b.parquet", 1): "parquet one",
        ("reviews/b.parquet", 2): "parquet two",
    }


def test_optional_fields_may_be_absent_and_a_record_the_type_cannot_show_is_quarantined() -> None:
    clients = FakeClients()
    spec = parse_spec(
        {
            "name": "chats",
            "source": f"s3://{BUCKET}/chats/",
            "task": "preference",
            "options": {"chat": True},
            "records": {"fields": {"prompt": "chat", "response_a": "a", "response_b": "b", "gold": "winner"}},
        }
    )
    chat = [{"role": "user", "content": "你好"}]
    clients.store.put_object(
        BUCKET,
        "chats/part.jsonl",
        jsonl([
            {"chat": chat, "a": "hello", "b": "go away", "winner": "A"},
            {"chat": chat, "a": "hi there", "b": "bye"},  # no gold: still a task
            {"chat": chat, "a": "hey", "b": "no", "winner": None},  # null gold: still a task
            {"chat": "not a chat", "a": "x", "b": "y"},  # the prompt must be a list of messages
        ]),
    )  # fmt: skip
    summary = ingest(clients, spec)
    assert summary["tasks_created"] == 3 and summary["quarantined_by_reason"] == {"malformed_record": 1}
    tasks = {
        t["data"]["record_index"]: t["data"] for t in clients.label_studio_client.project_tasks(summary["project_id"])
    }
    assert all("gold" not in data for data in tasks.values()), "annotators never see a gold answer"
    assert tasks[1]["prompt"] == chat
    ledger = IngestLedger(clients.store, spec.state_location).read_all().to_pandas()
    hidden = dict(zip(ledger["record_index"], ledger["record_hidden"], strict=True))
    assert json.loads(hidden[1]) == {"gold": "A"} and pd.isna(hidden[2]) and pd.isna(hidden[3])
    [row] = quarantine_report(clients, summary)
    assert row["record_index"] == "4" and row["reason"] == "malformed_record"


def test_an_sft_record_without_its_optional_draft_gets_an_empty_one_label_studio_accepts() -> None:
    clients = FakeClients()
    spec = parse_spec(
        {
            "name": "answers",
            "source": f"s3://{BUCKET}/sft/",
            "task": "sft",
            "records": {"fields": {"prompt": "q", "draft": "d"}},
        }
    )
    clients.store.put_object(BUCKET, "sft/a.jsonl", jsonl([{"q": "怎么煮面条？", "d": "烧水。"}, {"q": "Hi?"}]))
    summary = ingest(clients, spec)
    assert summary["tasks_created"] == 2
    drafts = sorted(t["data"]["draft"] for t in clients.label_studio_client.project_tasks(summary["project_id"]))
    assert drafts == ["", "烧水。"]
