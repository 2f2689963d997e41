"""Ingest of the keys object-store events name (on the in-memory fakes): a HEAD per key, no listing, and the same
cleaning, quarantine, ledger and idempotency as listed objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from labelflow.integrations.object_store import StoredObject
from labelflow.tasks.ingest import resolve_named_keys
from labelflow.tasks.spec import ProjectSpec, parse_spec
from tests.unit.fakes import FakeClients, PlainSteps
from tests.unit.stage_fixtures import SOURCE_BUCKET, ingest, text_spec, upload_reviews


def listing_spy(clients: FakeClients) -> list[tuple[str, str]]:
    """Record every (bucket, prefix) the store is asked to list."""
    store = clients.store
    calls: list[tuple[str, str]] = []
    real_list = store.list_objects

    def list_objects(bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        calls.append((bucket, prefix))
        return real_list(bucket, prefix)

    store.list_objects = list_objects  # type: ignore[method-assign]
    return calls


def ingest_keys(
    clients: FakeClients, spec: ProjectSpec, keys: list[str], steps: PlainSteps | None = None
) -> dict[str, Any]:
    from labelflow.flows.ingest import ingest_spec

    return ingest_spec(spec, clients=clients, steps=steps or PlainSteps(), keys=keys)


def source_listings(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [call for call in calls if call[0] == SOURCE_BUCKET]


def test_named_keys_resolve_to_objects_of_the_sources_like_a_listing_would_find_them() -> None:
    spec = parse_spec(
        {
            "name": "reviews",
            "source": ["s3://raw/reviews/", "s3://other/", "s3://raw/reviews/en/"],
            "task": "text-classification",
            "labels": ["a", "b"],
        }
    )
    named = resolve_named_keys(
        spec,
        [
            "s3://raw/reviews/1.txt",
            "s3://raw/reviews/en/2.txt",  # under two overlapping sources: once
            "s3://raw/reviews/1.txt",  # named twice: once
            "reviews/3.txt",  # a bare key: every source bucket whose prefix holds it
            "s3://raw/elsewhere/4.txt",  # outside every source
            "s3://unknown/reviews/5.txt",  # a bucket no source reads
            "s3://other/x/中文 6.txt",
        ],
    )
    assert named.objects == [
        ("other", "reviews/3.txt"),
        ("other", "x/中文 6.txt"),
        ("raw", "reviews/1.txt"),
        ("raw", "reviews/3.txt"),
        ("raw", "reviews/en/2.txt"),
    ]
    assert named.outside_sources == ["s3://raw/elsewhere/4.txt", "s3://unknown/reviews/5.txt"]


def test_named_keys_are_ingested_with_a_head_each_and_no_listing_of_the_source() -> None:
    clients, spec = FakeClients(), text_spec()
    upload_reviews(clients, 0, 30)
    first = ingest(clients, spec)
    assert first["tasks_created"] == 30 and first["listed"] == 30
    clients.store.put_object(SOURCE_BUCKET, "reviews/positive/new.txt", b"a new review, named by its event")
    clients.store.put_object(SOURCE_BUCKET, "reviews/positive/gone.txt", b"deleted before the run")
    clients.store.delete(SOURCE_BUCKET, "reviews/positive/gone.txt")
    calls = listing_spy(clients)
    reads_before = len(clients.store.reads)
    steps = PlainSteps()

    summary = ingest_keys(
        clients,
        spec,
        [
            f"s3://{SOURCE_BUCKET}/reviews/positive/new.txt",
            f"s3://{SOURCE_BUCKET}/reviews/positive/000.txt",  # already ingested: known, not read again
            f"s3://{SOURCE_BUCKET}/reviews/positive/gone.txt",  # deleted since its event
            f"s3://{SOURCE_BUCKET}/elsewhere/x.txt",  # outside the source
        ],
        steps,
    )

    assert source_listings(calls) == []
    assert summary["listed"] == 0 and summary["checked"] == 3
    assert summary["new"] == 1 and summary["tasks_created"] == 1
    assert summary["already_ingested_or_quarantined"] == 1
    assert summary["named_keys"] == {
        "named": 4,
        "checked": 3,
        "missing": [f"s3://{SOURCE_BUCKET}/reviews/positive/gone.txt"],
        "outside_sources": [f"s3://{SOURCE_BUCKET}/elsewhere/x.txt"],
    }
    assert (
        "Run given 4 keys by object-store events: 3 looked up (no listing), 1 gone before the run"
        in (steps.artifacts[f"ingest-{spec.slug}"])
    )
    assert [key for key in clients.store.reads[reads_before:] if key.startswith("reviews/")] == [
        "reviews/positive/new.txt"
    ]
    project = clients.label_studio_client.project_tasks(first["project_id"])
    assert sorted(t["data"]["source_key"] for t in project)[-1] == "reviews/positive/new.txt"
    assert len(project) == 31

    again = ingest_keys(clients, spec, [f"s3://{SOURCE_BUCKET}/reviews/positive/new.txt"])  # a repeated event
    assert again["tasks_created"] == 0 and again["already_ingested_or_quarantined"] == 1
    full = ingest(clients, spec)  # the scheduled run still lists everything, and finds nothing left to do
    assert full["listed"] == 31 and full["new"] == 0 and full["checked"] == 0


def test_named_keys_are_cleaned_quarantined_and_deduplicated_like_listed_objects() -> None:
    clients, spec = FakeClients(), text_spec()
    upload_reviews(clients, 0, 3)
    ingest(clients, spec)
    copy = clients.store.objects[(SOURCE_BUCKET, "reviews/positive/000.txt")][0]
    clients.store.put_object(SOURCE_BUCKET, "reviews/copy.txt", copy)
    clients.store.put_object(SOURCE_BUCKET, "reviews/empty.txt", b"   ")
    clients.store.put_object(SOURCE_BUCKET, "reviews/positive/000.txt", b"review 0, rewritten: a new version")
    clients.store.put_object(SOURCE_BUCKET, "reviews/folder/", b"")  # a folder marker, as listings skip it
    keys = ["reviews/copy.txt", "reviews/empty.txt", "reviews/positive/000.txt", "reviews/folder/"]

    summary = ingest_keys(clients, spec, keys)  # bare keys: looked up in the source's bucket

    assert summary["checked"] == 4 and summary["new"] == 3
    assert summary["tasks_created"] == 1  # the rewritten object is a new version
    assert summary["duplicates"] == 1 and summary["quarantined_by_reason"] == {"duplicate": 1, "empty": 1}
    clients.store.delete(SOURCE_BUCKET, "reviews/folder/")  # the fake lists folder markers; the real store does not
    assert ingest(clients, spec)["new"] == 0, "the keyed run recorded its objects in the ledger"


def test_a_limit_applies_to_named_keys_as_to_a_listing() -> None:
    clients, spec = FakeClients(), text_spec()
    for i in range(5):
        clients.store.put_object(SOURCE_BUCKET, f"reviews/{i}.txt", f"review {i}".encode())
    from labelflow.flows.ingest import ingest_spec

    keys = [f"reviews/{i}.txt" for i in range(5)]
    first = ingest_spec(spec, clients=clients, steps=PlainSteps(), limit=2, keys=keys)
    assert first["tasks_created"] == 2 and first["checked"] == 5
    assert ingest_keys(clients, spec, keys)["tasks_created"] == 3


def test_no_named_keys_means_nothing_to_read() -> None:
    clients, spec = FakeClients(), text_spec()
    upload_reviews(clients, 0, 3)
    ingest(clients, spec)
    calls = listing_spy(clients)
    summary = ingest_keys(clients, spec, [])
    assert source_listings(calls) == [] and summary["checked"] == 0 and summary["tasks_created"] == 0


@pytest.mark.parametrize("first_run_keyed", [False, True])
def test_named_files_of_records_are_read_record_by_record(first_run_keyed: bool) -> None:
    clients = FakeClients()
    spec = parse_spec(
        {
            "name": "review records",
            "source": "s3://corpus/reviews/",
            "task": "text-classification",
            "labels": ["positive", "negative", "neutral"],
            "records": {"format": "auto", "fields": {"text": "body"}, "id": "id"},
        }
    )

    def records(ids: range) -> bytes:
        return "".join(json.dumps({"id": f"r{i}", "body": f"review {i}"}) + "\n" for i in ids).encode()

    clients.store.put_object("corpus", "reviews/a.jsonl", records(range(0, 4)))
    clients.store.put_object("corpus", "reviews/b.jsonl", records(range(10, 13)))
    first = ingest_keys(clients, spec, ["s3://corpus/reviews/a.jsonl"]) if first_run_keyed else ingest(clients, spec)
    assert first["tasks_created"] == (4 if first_run_keyed else 7)
    clients.store.put_object("corpus", "reviews/a.jsonl", records(range(0, 6)))  # two records appended
    calls = listing_spy(clients)

    summary = ingest_keys(clients, spec, ["s3://corpus/reviews/a.jsonl"])

    assert [call for call in calls if call[0] == "corpus"] == []
    assert summary["listed"] == 0 and summary["checked"] == 1
    assert summary["records"]["files_read"] == 1 and summary["records"]["unchanged"] == 4
    assert summary["tasks_created"] == 2
