"""The ingest shortcut's decision on in-memory fakes: a re-run with nothing new is answered without a flow run, and
anything the flow would act on (a new object version, a pending batch, a changed spec, a project edited or gone in
Label Studio, a storage connection removed, a source bucket gone, a ledger due for compaction) is work."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

import labelflow.tasks.registry as registry
from labelflow.flows.ingest import ingest_spec
from labelflow.tasks.ingest import project_record_key
from labelflow.tasks.ingest_shortcut import LAST_RUN_KEY, unchanged_summary
from labelflow.tasks.ledger import COMPACT_AFTER_PARTS, IngestLedger, LedgerRow
from labelflow.tasks.spec import ProjectSpec, parse_spec
from tests.unit.fakes import FakeClients, PlainSteps
from tests.unit.stage_fixtures import SOURCE_BUCKET, ingest, text_spec, upload_reviews


def check(clients: FakeClients, spec: ProjectSpec, reader_key: str | None = None) -> dict[str, Any] | None:
    """What the CLI's check answers before starting the flow."""
    return unchanged_summary(clients.store, clients.label_studio_client, spec, reader_key)


@pytest.fixture
def ingested() -> tuple[FakeClients, ProjectSpec, dict[str, Any]]:
    """Six reviews ingested by a complete run, which recorded itself for the shortcut."""
    clients, spec = FakeClients(), text_spec()
    upload_reviews(clients, 0, 6)
    first = ingest(clients, spec)
    assert first["tasks_created"] == 6
    return clients, spec, first


def test_nothing_new_is_answered_with_the_listings_counts(ingested: tuple[FakeClients, ProjectSpec, dict]) -> None:
    clients, spec, first = ingested
    writes = list(clients.store.writes)
    summary = check(clients, spec)
    assert summary is not None
    assert summary["listed"] == 6 and summary["already_ingested_or_quarantined"] == 6
    assert summary["new"] == summary["tasks_created"] == summary["quarantined"] == 0
    assert summary["project_id"] == first["project_id"] and summary["label_studio_url"] == first["label_studio_url"]
    assert summary["quarantine_report"] == first["quarantine_report"] and summary["unchanged_since"]
    assert set(summary["seconds"]) == {"check"}
    assert set(first) - {"unchanged_since"} <= set(summary), "the same summary shape as the flow's"
    assert clients.store.writes == writes, "the check writes nothing"


def test_a_new_or_changed_object_is_work(ingested: tuple[FakeClients, ProjectSpec, dict]) -> None:
    clients, spec, _ = ingested
    upload_reviews(clients, 6, 1)
    assert check(clients, spec) is None
    assert ingest(clients, spec)["tasks_created"] == 1
    assert check(clients, spec) is not None, "the run that took it recorded itself"
    clients.store.put_object(SOURCE_BUCKET, "reviews/positive/000.txt", b"edited: a new version of the object")
    assert check(clients, spec) is None


def test_a_quarantined_object_is_not_work_again(ingested: tuple[FakeClients, ProjectSpec, dict]) -> None:
    clients, spec, _ = ingested
    clients.store.put_object(SOURCE_BUCKET, "reviews/positive/empty.txt", b"")
    assert ingest(clients, spec)["quarantined"] == 1
    assert check(clients, spec)["already_ingested_or_quarantined"] == 7  # type: ignore[index]


def test_a_pending_batch_of_an_interrupted_run_is_work(ingested: tuple[FakeClients, ProjectSpec, dict]) -> None:
    clients, spec, _ = ingested
    ledger = IngestLedger(clients.store, spec.state_location)
    row = LedgerRow(SOURCE_BUCKET, "reviews/positive/100.txt", "e", 3, "f" * 64, "ingested", batch_id="b1")
    ledger.mark_pending("b1", [row])
    assert check(clients, spec) is None


def test_a_changed_spec_or_revision_or_label_studio_is_work(
    ingested: tuple[FakeClients, ProjectSpec, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    clients, spec, _ = ingested
    assert check(clients, text_spec(instructions="new instructions")) is None
    assert check(clients, text_spec(ingest={"max_object_bytes": 1000})) is None
    revision = registry.pipeline_revision()
    monkeypatch.setattr(registry, "pipeline_revision", lambda: revision + ".next")
    assert check(clients, spec) is None
    monkeypatch.undo()
    clients.label_studio_client.settings = clients.label_studio_client.settings.model_copy(
        update={"url": "http://other-label-studio.fake"}
    )
    assert check(clients, spec) is None


def test_a_project_edited_or_gone_in_label_studio_is_work(ingested: tuple[FakeClients, ProjectSpec, dict]) -> None:
    clients, spec, first = ingested
    ls = clients.label_studio_client
    project_id = int(first["project_id"])
    ls.update_project(project_id, maximum_annotations=1)
    assert check(clients, spec) is None
    ingest(clients, spec)  # puts the spec's settings back
    assert ls.get_project(project_id)["maximum_annotations"] == 3  # type: ignore[index]
    assert check(clients, spec) is not None
    ls.update_project(project_id, title="renamed")
    assert check(clients, spec) is None
    del ls.projects[project_id]
    assert check(clients, spec) is None


def test_no_record_or_a_record_of_another_project_is_work(ingested: tuple[FakeClients, ProjectSpec, dict]) -> None:
    clients, spec, _ = ingested
    state = spec.state_location
    record = clients.store.get_bytes(state.bucket, project_record_key(spec))
    clients.store.put_bytes(state.bucket, project_record_key(spec), record.replace(b'"reviews"', b'"other"'))
    assert check(clients, spec) is None
    clients.store.put_bytes(state.bucket, project_record_key(spec), record)
    assert check(clients, spec) is not None
    clients.store.delete(state.bucket, state.join(LAST_RUN_KEY))
    assert check(clients, spec) is None


def test_a_missing_source_bucket_or_a_ledger_due_for_compaction_is_left_to_the_flow(
    ingested: tuple[FakeClients, ProjectSpec, dict],
) -> None:
    clients, spec, _ = ingested
    ledger = IngestLedger(clients.store, spec.state_location)
    for _ in range(COMPACT_AFTER_PARTS):
        ledger.append([LedgerRow(SOURCE_BUCKET, "reviews/old.txt", "e", 1, "", "quarantined", reason="empty")])
    writes = list(clients.store.writes)
    assert check(clients, spec) is None
    assert clients.store.writes == writes, "the check never compacts"
    clients.store.buckets.discard(SOURCE_BUCKET)
    assert check(clients, spec) is None


def test_stored_media_need_their_storage_connections_and_the_same_reader() -> None:
    clients = FakeClients()
    spec = parse_spec(
        {"name": "photos", "source": f"s3://{SOURCE_BUCKET}/img/", "task": "image-classification", "labels": ["a"]}
    )
    image = io.BytesIO()
    Image.new("RGB", (8, 6), "red").save(image, "PNG")
    clients.store.put_object(SOURCE_BUCKET, "img/1.png", image.getvalue())
    first = ingest(clients, spec)
    assert first["tasks_created"] == 1
    assert check(clients, spec, "reader") is not None
    assert check(clients, spec, "another-reader") is None
    ls = clients.label_studio_client
    ls.storages.clear()
    assert check(clients, spec, "reader") is None


def test_event_driven_runs_given_keys_record_nothing() -> None:
    clients, spec = FakeClients(), text_spec()
    upload_reviews(clients, 0, 2)
    ingest_spec(spec, clients=clients, steps=PlainSteps(), keys=[f"s3://{SOURCE_BUCKET}/reviews/positive/000.txt"])
    assert check(clients, spec) is None
    assert (spec.state_location.bucket, spec.state_location.join(LAST_RUN_KEY)) not in clients.store.objects
