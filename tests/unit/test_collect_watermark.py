"""The collect watermark on in-memory fakes: only tasks updated since the watermark minus the window are re-read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from labelflow.tasks.annotation_store import AnnotationStore
from labelflow.tasks.collect import CollectStats, collect_changes
from labelflow.tasks.spec import ProjectSpec
from tests.unit.fakes import LS_TIME, FakeClients
from tests.unit.stage_fixtures import ingest, text_spec, upload_reviews

WINDOW = 60.0


def project(count: int = 6) -> tuple[FakeClients, ProjectSpec, int, datetime]:
    """A project of `count` tasks created at t0 (returned) with a 60 s re-read window."""
    clients = FakeClients()
    spec = text_spec(collect={"window_seconds": WINDOW})
    upload_reviews(clients, 0, count)
    t0 = clients.label_studio_client.clock.now
    return clients, spec, int(ingest(clients, spec)["project_id"]), t0


def at(t0: datetime, seconds: float) -> str:
    """Label Studio's timestamp `seconds` after t0."""
    return (t0 + timedelta(seconds=seconds)).strftime(LS_TIME)


def collector(
    clients: FakeClients, spec: ProjectSpec, project_id: int
) -> tuple[Callable[..., CollectStats], AnnotationStore]:
    """The collect step on the project, and the annotation table it keeps."""
    table = AnnotationStore(clients.store, spec.state_location)

    def collect(full: bool = False) -> CollectStats:
        return collect_changes(clients.label_studio_client, table, spec, project_id, full=full)

    return collect, table


def test_incremental_collection_rereads_only_the_window_before_the_watermark() -> None:
    clients, spec, project_id, t0 = project()
    ls, clock = clients.label_studio_client, clients.label_studio_client.clock
    collect, table = collector(clients, spec, project_id)

    clock.tick(10)  # t0+10
    first = collect()
    assert first.mode == "full" and ls.exports[-1] is None, "no watermark yet: everything is read"
    assert first.changed_tasks == 6 and first.annotation_rows == 0
    watermark = table.watermark()
    assert (watermark.project_id, watermark.updated_at, watermark.read_at) == (project_id, at(t0, 0), at(t0, 10))

    clock.tick(10)  # t0+20: the last read is younger than the window, so its window is read again ...
    again = collect()
    assert ls.exports[-1] == at(t0, 10 - WINDOW)
    assert again.mode == "incremental" and again.exported_tasks == 6
    assert again.changed_tasks == 0 and again.unchanged_at_edge == 6, "... and recognised as already collected"

    clock.tick(1000)  # t0+1020: two tasks get an annotation each
    user = ls.add_user("a@labelflow.fake")
    changed = [task["id"] for task in ls.project_tasks(project_id)[:2]]
    for task_id in changed:
        ls.annotate(task_id, "positive", user)
    clock.tick(10)  # t0+1030
    second = collect()
    assert ls.exports[-1] == at(t0, 20 - WINDOW)
    assert second.changed_tasks == 2 and second.annotation_rows == 2 and second.unchanged_at_edge == 4

    clock.tick(500)  # t0+1530: only what changed within the window before the last read is read again
    third = collect()
    assert ls.exports[-1] == at(t0, 1030 - WINDOW)
    assert third.exported_tasks == 2 and third.changed_tasks == 0 and third.unchanged_at_edge == 2

    clock.tick(500)  # t0+2030: the last read is older than the window: nothing before the newest change is read
    quiet = collect()
    assert ls.exports[-1] == at(t0, 1020)
    assert quiet.exported_tasks == 0 and quiet.changed_tasks == 0

    full = collect(full=True)
    assert ls.exports[-1] is None and full.mode == "full"
    assert full.exported_tasks == 6 and full.changed_tasks == 6 and full.deleted_tasks == 0
    current = table.load()
    assert current.tasks.num_rows == 6 and sorted(current.annotations["task_id"].to_pylist()) == sorted(changed)


def test_a_change_committed_late_with_an_older_stamp_is_still_collected() -> None:
    # A transaction that began before an export can commit after it, with an `updated_at` older than the newest
    # change that export saw: the window before the last read is what catches it.
    clients, spec, project_id, t0 = project(3)
    ls, clock = clients.label_studio_client, clients.label_studio_client.clock
    collect, table = collector(clients, spec, project_id)
    first_task, late_task, _ = (task["id"] for task in ls.project_tasks(project_id))
    user = ls.add_user("a@labelflow.fake")
    clock.tick(100)
    ls.annotate(first_task, "positive", user)  # t0+100
    clock.tick(5)
    assert collect().annotation_rows == 1  # read at t0+105; the newest change seen is t0+100
    late = ls.annotate(late_task, "negative", user, stamp=at(t0, 75))  # committed now, stamped t0+75
    clock.tick(20)
    caught = collect()
    assert ls.exports[-1] == at(t0, 105 - WINDOW)
    assert caught.changed_tasks == 1 and late in table.load().annotations["annotation_id"].to_pylist()


def test_without_a_window_a_late_commit_is_missed_until_a_full_collection() -> None:
    clients, spec, project_id, t0 = project(3)
    spec = spec.model_copy(update={"collect": spec.collect.model_copy(update={"window_seconds": 0.0})})
    ls, clock = clients.label_studio_client, clients.label_studio_client.clock
    collect, table = collector(clients, spec, project_id)
    first_task, late_task, _ = (task["id"] for task in ls.project_tasks(project_id))
    user = ls.add_user("a@labelflow.fake")
    clock.tick(100)
    ls.annotate(first_task, "positive", user)
    clock.tick(5)
    collect()
    late = ls.annotate(late_task, "negative", user, stamp=at(t0, 75))
    clock.tick(20)
    assert collect().changed_tasks == 0 and ls.exports[-1] == at(t0, 100)
    assert late not in table.load().annotations["annotation_id"].to_pylist()
    assert collect(full=True).changed_tasks == 3
    assert late in table.load().annotations["annotation_id"].to_pylist()


def test_a_full_collection_notices_tasks_deleted_in_label_studio() -> None:
    clients, spec, project_id, _ = project(4)
    ls, clock = clients.label_studio_client, clients.label_studio_client.clock
    collect, table = collector(clients, spec, project_id)
    collect()
    gone = ls.project_tasks(project_id)[0]["id"]
    del ls.tasks[gone]
    clock.tick(500)
    assert collect().deleted_tasks == 0, "an incremental export cannot see a deletion"
    full = collect(full=True)
    assert full.deleted_tasks == 1 and full.changed_tasks == 3
    tasks = table.load().tasks.to_pandas().set_index("task_id")
    assert bool(tasks.loc[gone, "deleted"]) and not tasks.drop(index=gone)["deleted"].any()


def test_a_replaced_label_studio_project_starts_the_table_over() -> None:
    clients, spec, project_id, _ = project(2)
    ls = clients.label_studio_client
    collect, table = collector(clients, spec, project_id)
    collect()
    assert table.load().tasks.num_rows == 2
    replacement = ls.create_project("reviews again", "<View/>")
    (new_task,) = ls.import_tasks(replacement, [{"data": {"text": "t", "source_uri": "s3://raw/reviews/new.txt"}}])
    ls.clock.tick(10)
    stats = collect_changes(ls, table, spec, replacement)
    assert stats.mode == "full" and ls.exports[-1] is None
    assert table.load().tasks["task_id"].to_pylist() == [new_task], "the old project's rows are forgotten"
    assert table.watermark().project_id == replacement
