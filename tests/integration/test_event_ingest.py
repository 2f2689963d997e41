"""Event-driven ingest on the real stack: a run given the keys its events name reads those objects (a HEAD each) and
never lists the source; the listener turns an upload's notification into a run whose parameters carry the key."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore, StoredObject
from labelflow.layout import PROJECT_DIR
from labelflow.orchestration import build_listener, deploy_spec
from labelflow.tasks.collect import recorded_project
from labelflow.tasks.spec import load_spec


def write_spec(folder: Path, name: str) -> Path:
    """A text-classification spec over s3://NAME/texts/."""
    path = folder / f"{name}.yaml"
    spec = {"name": name, "source": f"s3://{name}/texts/", "task": "text-classification", "labels": ["pos", "neg"]}
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (bucket, prefix) any ObjectStore of this process lists while the test runs."""
    calls: list[tuple[str, str]] = []
    real_list = ObjectStore.list_objects

    def list_objects(self: ObjectStore, bucket: str, prefix: str = "", start_after: str = "") -> Iterator[StoredObject]:
        calls.append((bucket, prefix))
        return real_list(self, bucket, prefix, start_after)

    monkeypatch.setattr(ObjectStore, "list_objects", list_objects)
    return calls


def test_a_run_given_one_new_key_ingests_exactly_it_without_listing_the_source(
    tmp_path: Path,
    prefect_api: str,
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    unique_name: str,
    listings: list[tuple[str, str]],
) -> None:
    from labelflow.flows.ingest import ingest

    bucket = unique_name
    object_store.ensure_bucket(bucket)
    for i in range(40):
        object_store.put_bytes(bucket, f"texts/{i:03d}.txt", f"review number {i}".encode())
    spec_path = write_spec(tmp_path, unique_name)
    first = ingest(str(spec_path))
    assert first["listed"] == 40 and first["tasks_created"] == 40
    assert (bucket, "texts/") in listings, "the spy sees the listing of a run without keys"
    project_id = recorded_project(object_store, load_spec(spec_path))
    try:
        object_store.put_bytes(bucket, "texts/new 新.txt", b"a review uploaded after the first run")
        object_store.put_bytes(bucket, "texts/gone.txt", b"deleted before the run")
        object_store.delete(bucket, "texts/gone.txt")
        listings.clear()

        summary = ingest(
            str(spec_path),
            keys=[f"s3://{bucket}/texts/new 新.txt", f"s3://{bucket}/texts/000.txt", f"s3://{bucket}/texts/gone.txt"],
        )

        assert [call for call in listings if call[0] == bucket] == [], "no listing of the source"
        assert summary["listed"] == 0 and summary["checked"] == 3
        assert summary["tasks_created"] == 1 and summary["already_ingested_or_quarantined"] == 1
        assert summary["named_keys"]["missing"] == [f"s3://{bucket}/texts/gone.txt"]
        assert label_studio.count_tasks(project_id) == 41

        one = ingest(str(spec_path), keys=[f"s3://{bucket}/texts/new 新.txt"])  # the same event again
        assert one["listed"] == 0 and one["checked"] == 1 and one["tasks_created"] == 0
        assert label_studio.count_tasks(project_id) == 41
    finally:
        label_studio.delete_project(project_id)


class WebhooksNotRegistered:
    """Label Studio as the listener sees it, minus the webhooks: the test's listener must not touch other projects."""

    def ensure_webhook(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_an_upload_notification_becomes_a_run_whose_keys_parameter_names_the_object(
    tmp_path: Path, prefect_api: str, object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from labelflow.flows.ingest import ingest

    bucket = unique_name
    object_store.ensure_bucket(bucket)
    spec_path = write_spec(tmp_path, unique_name)
    spec = load_spec(spec_path)
    with get_client(sync_client=True) as client:
        no_schedules = {"ingest": None, "collect": None, "pipeline": None}
        deployed = {d.stage: d for d in deploy_spec(client, spec, spec_path, no_schedules, PROJECT_DIR)}
        ingest_id = deployed["ingest"].deployment_id

        def runs() -> list[Any]:
            ids = DeploymentFilter(id=DeploymentFilterId(any_=[ingest_id]))
            return client.read_flow_runs(deployment_filter=ids)

        # A long debounce: the run must still be waiting when the test reads it (a worker may be polling).
        listener = build_listener(client, "http://127.0.0.1:9", "token", object_store, WebhooksNotRegistered(), 600)
        try:
            listener.refresh(force=True)
            for key in ("texts/a.txt", "texts/b c.txt", "elsewhere/x.txt"):
                object_store.put_bytes(bucket, key, f"{key} as uploaded".encode())
                # As S3 (MinIO, AWS) posts it: the stack's own listener gets the filer's notices, tagged seaweedfs.
                record = {
                    "eventName": "s3:ObjectCreated:Put",
                    "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key)}},
                }
                assert listener.accept("s3", {"Records": [record]}) == 1
            for _ in range(3):
                listener.step(timeout=0)
            time.sleep(listener.sync_seconds)
            listener.step(timeout=0)  # the keys absorbed into the waiting run reach its parameters

            [run] = [r for r in runs() if "trigger:s3" in r.tags]
            assert run.state_type.value == "SCHEDULED"
            assert run.parameters == {
                "spec_path": str(spec_path.resolve()),
                "keys": [f"s3://{bucket}/texts/a.txt", f"s3://{bucket}/texts/b c.txt"],
            }
            summary = ingest(**run.parameters)  # what the worker will run
            assert summary["listed"] == 0 and summary["checked"] == 2
            # The stack's listener may have had a run of its own ingest them first: either way, each once.
            assert summary["tasks_created"] + summary["already_ingested_or_quarantined"] == 2
            assert label_studio.count_tasks(summary["project_id"]) == 2
            label_studio.delete_project(summary["project_id"])
        finally:
            for run in runs():
                client.delete_flow_run(run.id)
            for d in deployed.values():
                client.delete_deployment(d.deployment_id)
