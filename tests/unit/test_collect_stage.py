"""The collect flow's logic on in-memory fakes: collect -> judge -> validate -> register, one batch written once,
unchanged content publishing nothing, the gate, and publications a crashed or a live publisher left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from labelflow.tasks.publish import dataset_base, dataset_publisher
from labelflow.tasks.registry import PUBLISHING, READY, DatasetRegistry
from labelflow.tasks.spec import ProjectSpec, S3Location
from labelflow.tasks.validate import ValidationFailed
from tests.unit.fakes import FakeClients, choice
from tests.unit.stage_fixtures import annotate_all, collect, ingest, text_spec, upload_reviews

SUMMARY_KEYS = [
    "project",
    "project_id",
    "label_studio_url",
    "collection",
    "quality",
    "annotators",
    "routed_back",
    "report",
    "batch",
    "validation",
    "dataset",
]
STEPS = [
    "check_dataset_owner",
    "recorded_project",
    "collect_changes",
    "load_gold",
    "load_current",
    "judge_annotations",
    "suspects_for_collect",  # label-error detection, on by default for text classification (too few rows here: skipped)
    "record_evidence",
    "write_quality_report",
    "write_batch",
    "run_validation",
    "publish_dataset",
]


def annotated(count: int = 6, **spec_extra: object) -> tuple[FakeClients, ProjectSpec, int]:
    """A project with a dataset, `count` tasks, each answered with its true label by three annotators."""
    clients = FakeClients()
    spec = text_spec(dataset={"name": "reviews"}, **spec_extra)
    upload_reviews(clients, 0, count)
    project_id = int(ingest(clients, spec)["project_id"])
    annotate_all(clients, project_id)
    return clients, spec, project_id


def registry_of(clients: FakeClients) -> DatasetRegistry:
    return DatasetRegistry(clients.store, clients.tracking)


def test_collect_publishes_v1_then_nothing_while_unchanged_then_v2_when_an_answer_changes(tmp_path: Path) -> None:
    clients, spec, project_id = annotated()
    store, tracking = clients.store, clients.tracking

    first, steps = collect(clients, spec)
    assert list(first) == SUMMARY_KEYS and steps.calls == STEPS
    assert first["project_id"] == project_id and first["collection"]["mode"] == "full"
    assert first["quality"]["finished_tasks"] == 6 and first["validation"]["success"]
    assert first["validation"]["rows"] == {"annotations": 18, "consensus": 6}
    v1 = first["dataset"]
    assert v1["published"] and v1["version"] == 1 and v1["rows"] == 6 and v1["version_conflicts"] == 0
    assert v1["label_distribution"] == {"positive": 2, "negative": 2, "neutral": 2}
    assert set(steps.artifacts) == {f"quality-{spec.slug}", f"validation-{spec.slug}"}

    # The batch is written once, next to the report, and nothing reads it back: validation and registration ran
    # on the tables the flow held.
    batch = S3Location.parse(first["batch"])
    folder = batch.prefix.rstrip("/") + "/"
    files = {key.removeprefix(folder) for key in store.keys(batch.bucket, folder)}
    assert {"tasks.parquet", "annotations.parquet", "consensus.parquet", "batch.json"} <= files
    assert store.writes.count(batch.join("batch.json")) == 1
    assert [key for key in store.reads if key.startswith(folder)] == []
    record = json.loads(store.get_bytes(batch.bucket, batch.join("batch.json")))
    assert record["batch_uri"] == first["batch"] and record["project_id"] == project_id
    assert record["watermark"] == first["collection"]["watermark"]

    # The version's lineage names that batch, its validation and its Label Studio project.
    (run,) = tracking.live_runs()
    assert run.status == "FINISHED" and run.tags["labelflow.dataset.status"] == READY
    assert run.tags["labelflow.collection.batch"] == first["batch"]
    assert run.tags["labelflow.validation.result"] == first["validation"]["result_uri"]
    assert run.tags["labelflow.label_studio.project_id"] == str(project_id)
    assert run.metrics["rows"] == 6.0 and "manifest.json" in run.artifacts
    pulled = registry_of(clients).pull("reviews", 1, tmp_path / "v1")
    assert pulled.manifest["lineage"]["collection_batch"] == first["batch"]
    assert len(pd.read_parquet(pulled.path("consensus"))) == 6

    # Nothing changed: no new version, and the summary says which version holds this content.
    second, _ = collect(clients, spec)
    unchanged = second["dataset"]
    assert not unchanged["published"] and unchanged["version"] == 1 and unchanged["digest"] == v1["digest"]
    assert "content unchanged since version 1" in unchanged["reason"] and "version_conflicts" not in unchanged
    assert len(tracking.live_runs()) == 1 and [v.version for v in registry_of(clients).versions("reviews")] == [1]

    # One annotator changes an answer: the consensus changes, so does the content: version 2.
    ls = clients.label_studio_client
    task = ls.project_tasks(project_id)[0]
    truth = task["data"]["source_key"].split("/")[1]
    ls.relabel(task["annotations"][0]["id"], next(label for label in ("positive", "negative") if label != truth))
    ls.clock.tick(5)
    third, _ = collect(clients, spec)
    assert third["collection"]["changed_tasks"] == 1
    v2 = third["dataset"]
    assert v2["published"] and v2["version"] == 2 and v2["digest"] != v1["digest"]
    assert [v.version for v in registry_of(clients).versions("reviews")] == [1, 2]


def test_a_spec_without_a_dataset_collects_and_validates_but_registers_nothing() -> None:
    clients = FakeClients()
    spec = text_spec()
    upload_reviews(clients, 0, 3)
    annotate_all(clients, int(ingest(clients, spec)["project_id"]))
    summary, steps = collect(clients, spec)
    assert summary["validation"]["success"]
    assert summary["dataset"] == {"published": False, "reason": "the spec has no `dataset` section"}
    assert "check_dataset_owner" not in steps.calls and "publish_dataset" not in steps.calls
    assert clients.tracking.experiments == {}


def test_nothing_annotated_yet_skips_validation_and_publishes_nothing() -> None:
    clients = FakeClients()
    spec = text_spec(dataset={"name": "reviews"})
    upload_reviews(clients, 0, 3)
    ingest(clients, spec)
    summary, steps = collect(clients, spec)
    assert summary["validation"]["skipped"] == "no annotations yet"
    assert summary["dataset"] == {"published": False, "reason": "validation skipped: no annotations yet"}
    assert "publish_dataset" not in steps.calls and clients.tracking.live_runs() == []


def test_a_batch_failing_validation_raises_and_publishes_nothing() -> None:
    clients, spec, project_id = annotated(3)
    ls = clients.label_studio_client
    task = ls.project_tasks(project_id)[0]
    task["annotations"][0]["result"] = choice("sarcastic")  # an answer outside the spec's label set
    task["updated_at"] = ls.clock.tick(1)
    with pytest.raises(ValidationFailed) as failed:
        collect(clients, spec)
    summary = failed.value.summary
    assert not summary.success
    assert [(f["batch"], f["column"], f["unexpected_count"]) for f in summary.failed] == [("annotations", "label", 1)]
    assert summary.result_uri is not None
    bucket, key = summary.result_uri.removeprefix("s3://").split("/", 1)
    assert json.loads(clients.store.get_bytes(bucket, key))["summary"]["success"] is False
    assert clients.tracking.experiments == {}, "nothing was even begun"


def test_a_version_left_publishing_by_a_crashed_publisher_is_taken_over_and_its_leftovers_removed(
    tmp_path: Path,
) -> None:
    clients, spec, _ = annotated()
    registry = registry_of(clients)
    # What a publisher killed after claiming v1 and writing part of it leaves: a `publishing` run, its claim, a file.
    crashed = registry.begin("reviews", "0" * 64, dataset_base(spec), {}, dataset_publisher(spec))
    folder = crashed.folder
    clients.store.put_bytes(folder.bucket, folder.join("consensus.parquet"), b"half written")
    assert registry.versions("reviews") == [] and crashed.status == PUBLISHING

    summary, _ = collect(clients, spec)
    published = summary["dataset"]
    assert published["published"] and published["version"] == 1 and published["version_conflicts"] == 0
    assert clients.tracking.runs[crashed.run_id].deleted
    (ready,) = registry.versions("reviews", ready_only=False)
    assert ready.status == READY and ready.run_id != crashed.run_id
    pulled = registry.pull("reviews", 1, tmp_path / "v1")  # every file matches its manifest: none is a leftover
    assert pulled.manifest["digest"] == published["digest"]
    assert pd.read_parquet(pulled.path("consensus"))["label"].notna().all()


def test_a_version_a_live_publisher_elsewhere_is_writing_is_left_alone(tmp_path: Path) -> None:
    clients, spec, _ = annotated()
    elsewhere = registry_of(clients)
    elsewhere.host = "another-host"  # its heartbeat is fresh, and its pid means nothing on this host
    live = elsewhere.begin("reviews", "0" * 64, dataset_base(spec), {}, dataset_publisher(spec))
    clients.store.put_bytes(live.folder.bucket, live.folder.join("consensus.parquet"), b"being written")

    summary, _ = collect(clients, spec)
    published = summary["dataset"]
    assert published["published"] and published["version"] == 2 and published["version_conflicts"] == 1
    assert not clients.tracking.runs[live.run_id].deleted
    assert clients.store.get_bytes(live.folder.bucket, live.folder.join("consensus.parquet")) == b"being written"
    assert [v.version for v in registry_of(clients).versions("reviews")] == [2]
