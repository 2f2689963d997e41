"""Whether an ingest has nothing to do, found in a few requests before any flow machinery starts.

A listing ingest that completes records its summary with a fingerprint of its inputs: the spec, labelflow's own
revision, the Label Studio it ran against and, for stored media, the read-only identity its storage connections
got. The next ingest has nothing to do when the fingerprint is the same, the recorded Label Studio project still
exists with the spec's settings (and its storage connections), no batch of an interrupted run is pending, and a
listing of the sources finds no object version the ledger does not already hold. It then answers with this
listing's counts instead of starting a flow run. Any doubt (no record, a source bucket gone, a ledger due for
compaction) answers None: the real flow runs and says what is wrong.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from labelflow.integrations.object_store import ObjectStoreError
from labelflow.tasks.ingest import (
    IngestStats,
    check_sources,
    iter_new_objects,
    read_project_record,
    settings_to_update,
    state_index_key,
)
from labelflow.tasks.ledger import COMPACT_AFTER_PARTS, IngestLedger
from labelflow.tasks.ports import LabelStudioPort, ObjectStorePort
from labelflow.tasks.run_records import now_iso, read_run_record, write_run_record
from labelflow.tasks.spec import STATE_BUCKET, ProjectSpec, SpecError

LAST_RUN_KEY = "ingest/last-run.json"


def ingest_fingerprint(spec: ProjectSpec, label_studio_url: str, reader_access_key: str | None) -> str:
    """A digest of everything besides the sources' objects that decides an ingest's outcome."""
    from labelflow.tasks.registry import pipeline_revision

    digest = hashlib.sha256()
    digest.update(spec.model_dump_json().encode())
    digest.update(b"\0" + pipeline_revision().encode())
    digest.update(b"\0" + label_studio_url.rstrip("/").encode())
    # Only the key's name (never its secret): a new read-only identity is work, the storages get it (stored media).
    digest.update(b"\0" + (reader_access_key or "").encode())
    return digest.hexdigest()


def save_last_run(store: ObjectStorePort, spec: ProjectSpec, fingerprint: str, summary: dict[str, Any]) -> None:
    """Record a complete listing ingest: its summary and the fingerprint of its inputs."""
    record = {
        "fingerprint": fingerprint,
        "project_id": summary["project_id"],
        "ingested_at": now_iso(),
        "summary": summary,
    }
    write_run_record(store, spec.state_location, LAST_RUN_KEY, record)


def unchanged_summary(
    store: ObjectStorePort, ls: LabelStudioPort, spec: ProjectSpec, reader_access_key: str | None
) -> dict[str, Any] | None:
    """This ingest's summary when it has nothing to do (no flow run needed); None when there is work or any doubt."""
    began = time.perf_counter()
    record = read_run_record(store, spec.state_location, LAST_RUN_KEY)
    if record is None:
        return None
    if record.get("fingerprint") != ingest_fingerprint(spec, ls.settings.base_url, reader_access_key):
        return None
    project_id = _project_as_recorded(store, ls, spec, record)
    if project_id is None:
        return None
    if store.head(STATE_BUCKET, state_index_key(spec.state_location)) is None:
        return None  # the flow registers the state location again
    try:
        check_sources(store, spec)
    except (SpecError, ObjectStoreError):
        return None  # a source bucket gone, or another project's state in a source: the flow says so
    ledger = IngestLedger(store, spec.state_location)
    try:
        if ledger.pending_batches():
            return None  # an interrupted run's batch: the flow reconciles it
        if sum(1 for _ in store.list_objects(spec.state_location.bucket, ledger.parts_prefix)) > COMPACT_AFTER_PARTS:
            return None  # the flow compacts the ledger; a check writes nothing
        index = ledger.load()
    except ObjectStoreError as exc:
        if exc.not_found:
            return None  # a part or marker gone between listing and reading: a run (holding the lock) is busy
        raise
    stats = IngestStats()
    for listed in iter_new_objects(store, spec, index):
        if listed.objects:
            return None  # a new object version: work to do
        stats.add_listing(listed)
    stats.seconds.clear()
    stats.seconds["check"] = time.perf_counter() - began
    return {
        "project": spec.name,
        "project_id": project_id,
        "label_studio_url": f"{ls.settings.base_url}/projects/{project_id}",
        **stats.as_dict(),
        "quarantine_report": record["summary"].get("quarantine_report"),
        "unchanged_since": record["ingested_at"],
    }


def _project_as_recorded(
    store: ObjectStorePort, ls: LabelStudioPort, spec: ProjectSpec, record: dict[str, Any]
) -> int | None:
    """The recorded Label Studio project when it is still the spec's, set up as the flow leaves it; else None."""
    recorded = read_project_record(store, spec)
    if recorded is None or recorded.get("title") != spec.name or recorded.get("project_id") != record["project_id"]:
        return None
    project_id = int(recorded["project_id"])
    current = ls.get_project(project_id)
    if current is None or current.get("title") != spec.name:
        return None  # the flow refuses with the reason
    if settings_to_update(spec, current):
        return None  # edited in Label Studio since: the flow puts the spec's settings back
    if spec.task_type.stored_media:
        connected = {(s.get("bucket"), s.get("prefix") or "") for s in ls.s3_import_storages(project_id)}
        if any((source.bucket, source.prefix) not in connected for source in spec.sources):
            return None  # a storage connection was removed: the flow adds it again
    return project_id
