"""Ingest's reconciliation on in-memory fakes: a run that dies between Label Studio's import and the ledger write
is completed by the next run, which records what was imported and imports the rest, never a task twice."""

from __future__ import annotations

from collections import Counter

import pytest

import labelflow.tasks.ingest as ingest_steps
from labelflow.integrations.label_studio import LabelStudioError
from labelflow.integrations.object_store import ObjectStoreError
from labelflow.tasks.ledger import IngestLedger
from labelflow.tasks.spec import ProjectSpec
from tests.unit.fakes import FakeClients
from tests.unit.stage_fixtures import ingest, text_spec, upload_reviews


def project(existing: int = 6) -> tuple[FakeClients, ProjectSpec, int, IngestLedger]:
    """A project whose first `existing` objects are ingested, importing 3 tasks per request."""
    clients = FakeClients()
    spec = text_spec(ingest={"batch_size": 3})
    upload_reviews(clients, 0, existing)
    first = ingest(clients, spec)
    assert first["tasks_created"] == existing
    return clients, spec, int(first["project_id"]), IngestLedger(clients.store, spec.state_location)


def assert_one_recorded_task_per_object(
    clients: FakeClients, ledger: IngestLedger, project_id: int, total: int
) -> None:
    """Label Studio has one task per object, and the ledger records exactly those tasks, each once."""
    tasks = clients.label_studio_client.project_tasks(project_id)
    by_uri = Counter(task["data"]["source_uri"] for task in tasks)
    assert len(by_uri) == total and set(by_uri.values()) == {1}
    rows = ledger.read_all().to_pandas()
    ingested = rows[rows["status"] == "ingested"]
    assert len(ingested) == total and ingested["key"].is_unique
    recorded = {f"s3://{row.bucket}/{row.key}": row.task_id for row in ingested.itertuples()}
    assert recorded == {task["data"]["source_uri"]: task["id"] for task in tasks}
    assert ledger.pending_batches() == {}


def test_tasks_imported_by_a_run_that_died_before_its_ledger_write_are_recorded_not_imported_again() -> None:
    clients, spec, project_id, ledger = project()
    upload_reviews(clients, 6, 6)
    clients.store.fail_on("put", ledger.parts_prefix)  # the process dies as it writes the chunk's ledger part
    with pytest.raises(ObjectStoreError):
        ingest(clients, spec)
    assert len(clients.label_studio_client.project_tasks(project_id)) == 12, "Label Studio has the new tasks"
    assert ledger.read_all().num_rows == 6 and len(ledger.pending_batches()) == 2

    requests = clients.label_studio_client.import_requests
    resumed = ingest(clients, spec)
    assert resumed["recovered_from_interrupted_run"] == 6 and resumed["tasks_created"] == 0
    assert resumed["new"] == 0 and resumed["already_ingested_or_quarantined"] == 12
    assert clients.label_studio_client.import_requests == requests, "nothing was imported again"
    assert_one_recorded_task_per_object(clients, ledger, project_id, 12)


def test_a_run_that_died_between_two_imports_records_the_first_batch_and_imports_the_rest() -> None:
    clients, spec, project_id, ledger = project()
    ls = clients.label_studio_client
    upload_reviews(clients, 6, 6)
    ls.failing_imports = {ls.import_requests + 2}  # the second batch's request of the next run never succeeds
    with pytest.raises(LabelStudioError):
        ingest(clients, spec)
    assert len(ls.project_tasks(project_id)) == 9 and len(ledger.pending_batches()) == 2

    resumed = ingest(clients, spec)
    assert resumed["recovered_from_interrupted_run"] == 3
    assert resumed["new"] == 3 and resumed["tasks_created"] == 3, "only the batch that never arrived is imported"
    assert_one_recorded_task_per_object(clients, ledger, project_id, 12)


def test_a_run_that_died_after_its_ledger_write_leaves_markers_the_next_run_only_clears() -> None:
    clients, spec, project_id, ledger = project()
    upload_reviews(clients, 6, 3)
    clients.store.fail_on("delete", ledger.pending_prefix)  # dies as it clears the batch's pending marker
    with pytest.raises(ObjectStoreError):
        ingest(clients, spec)
    assert ledger.read_all().num_rows == 9 and len(ledger.pending_batches()) == 1

    resumed = ingest(clients, spec)
    assert resumed["recovered_from_interrupted_run"] == 0 and resumed["tasks_created"] == 0
    assert ledger.read_all().num_rows == 9, "the recorded batch is not recorded twice"
    assert_one_recorded_task_per_object(clients, ledger, project_id, 9)


def test_an_import_whose_answer_was_lost_is_looked_up_not_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_steps.time, "sleep", lambda seconds: None)  # the backoff between attempts
    clients, spec, project_id, ledger = project()
    ls = clients.label_studio_client
    upload_reviews(clients, 6, 3)
    ls.lost_answers = {ls.import_requests + 1}  # the tasks are created, the answer never arrives
    summary = ingest(clients, spec)
    assert summary["tasks_created"] == 3 and summary["recovered_from_interrupted_run"] == 0
    assert_one_recorded_task_per_object(clients, ledger, project_id, 9)


def test_a_second_run_finds_nothing_new_and_content_already_imported_is_quarantined_as_a_duplicate() -> None:
    clients, spec, project_id, ledger = project(3)
    again = ingest(clients, spec)
    assert again["listed"] == 3 and again["new"] == 0 and again["tasks_created"] == 0
    existing = clients.store.get_bytes("raw", "reviews/positive/000.txt")
    clients.store.put_object("raw", "reviews/copy.txt", existing)
    copy = ingest(clients, spec)
    assert copy["new"] == 1 and copy["tasks_created"] == 0 and copy["quarantined_by_reason"] == {"duplicate": 1}
    assert_one_recorded_task_per_object(clients, ledger, project_id, 3)
