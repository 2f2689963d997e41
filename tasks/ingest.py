"""Ingest steps: list new objects, clean them, create Label Studio tasks in crash-safe batches, record everything."""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from labelflow.integrations.label_studio import LabelStudioError
from labelflow.integrations.object_store import ObjectStoreError, StoredObject
from labelflow.integrations.settings import S3StorageSettings
from labelflow.tasks.cleaning import (
    Inspection,
    Reason,
    decoded_size_estimate,
    inspect_content,
    read_image_header,
    unaddressable_reason,
)
from labelflow.tasks.guidelines import instruction_html, instruction_is_current, record_version, utc_now
from labelflow.tasks.label_config import build_label_config
from labelflow.tasks.ledger import IngestLedger, LedgerIndex, LedgerRow
from labelflow.tasks.memory_budget import MemoryBudget, return_freed_memory
from labelflow.tasks.ports import LabelStudioPort, ObjectStorePort
from labelflow.tasks.prelabel import Predictor
from labelflow.tasks.spec import STATE_BUCKET, ProjectSpec, S3Location, SpecError

log = logging.getLogger("labelflow.ingest")
BATCH_FIELD = "labelflow_batch"


@dataclass(frozen=True)
class CleanedObject:
    """A new object that passed cleaning, ready to become a task."""

    obj: StoredObject
    inspection: Inspection


@dataclass(frozen=True)
class ListedChunk:
    """New objects to clean and import, with what the listing (or the lookup of named keys) counted since the
    previous chunk."""

    objects: list[StoredObject]
    listed: int
    already_known: int
    new: int
    seconds: float
    stage: str = "list"  # where `seconds` went: "list", or "check" for the HEADs of named keys
    checked: int = 0  # named keys looked up (a HEAD each) instead of listed
    missing: tuple[str, ...] = ()  # named keys whose object was gone when looked up


@dataclass(frozen=True)
class NamedKeys:
    """The objects a run given keys reads: those within the spec's sources, and the keys outside every source."""

    objects: list[tuple[str, str]]  # (bucket, key), sorted as a listing returns them
    outside_sources: list[str]


@dataclass(frozen=True)
class CleanedChunk:
    """A chunk after cleaning: the objects that become tasks, the rejected ones, and those deleted meanwhile."""

    accepted: list[CleanedObject]
    rejected: list[LedgerRow]
    vanished: int
    seconds: float


@dataclass(frozen=True)
class Prelabels:
    """One prediction (or None) per cleaned object of a chunk."""

    predictions: list[dict | None]
    seconds: float
    failures: int = 0  # items the predictor failed on (a model that crashed on them): they go to people


@dataclass(frozen=True)
class ImportedChunk:
    """What a chunk's import recorded in the ledger: one row per task created, and the rejected objects."""

    ingested: list[LedgerRow]
    rejected: list[LedgerRow]
    import_seconds: float
    record_seconds: float


@dataclass
class IngestStats:
    """Counters and per-stage seconds for one ingest run: the flow adds up what its steps return."""

    listed: int = 0
    checked: int = 0
    already_known: int = 0
    new: int = 0
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    vanished: int = 0
    tasks_created: int = 0
    predictions: int = 0
    prediction_failures: int = 0
    recovered: int = 0
    seconds: Counter[str] = field(default_factory=Counter)
    quarantine_rows: list[LedgerRow] = field(default_factory=list)
    # files of records
    record_files: int = 0
    records_read: int = 0
    records_unchanged: int = 0
    changed_rows: list[LedgerRow] = field(default_factory=list)
    # runs given keys (by object-store events) instead of listing the sources
    named_keys: int | None = None  # how many keys the run was given; None for a run that lists
    missing_keys: list[str] = field(default_factory=list)
    keys_outside_sources: list[str] = field(default_factory=list)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the enclosed wall time to a stage."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - began

    def add_listing(self, chunk: ListedChunk) -> None:
        """Count what the listing found for one chunk."""
        self.listed += chunk.listed
        self.checked += chunk.checked
        self.missing_keys.extend(chunk.missing)
        self.already_known += chunk.already_known
        self.new += chunk.new
        self.seconds[chunk.stage] += chunk.seconds

    def add_cleaning(self, cleaned: CleanedChunk) -> None:
        """Count one chunk's rejected and vanished objects."""
        self.seconds["clean"] += cleaned.seconds
        self.vanished += cleaned.vanished
        for row in cleaned.rejected:
            self.quarantined[row.reason] += 1
            if row.reason == Reason.DUPLICATE:
                self.duplicates += 1

    def add_prelabels(self, prelabels: Prelabels) -> None:
        """Count one chunk's predictions."""
        self.seconds["prelabel"] += prelabels.seconds
        self.predictions += sum(1 for p in prelabels.predictions if p)
        self.prediction_failures += prelabels.failures

    def add_import(self, imported: ImportedChunk) -> None:
        """Count one chunk's created tasks and keep its quarantine rows for the report."""
        self.seconds["import"] += imported.import_seconds
        self.seconds["record"] += imported.record_seconds
        self.tasks_created += len(imported.ingested)
        self.quarantine_rows.extend(imported.rejected)

    def add_record_file(self, result: Any) -> None:
        """Count one file of records (a tasks.ingest_records.RecordFileResult)."""
        self.record_files += 1
        self.records_read += result.records
        self.records_unchanged += result.unchanged
        self.tasks_created += result.tasks_created
        self.predictions += result.predictions
        self.quarantined.update(result.quarantined)
        self.duplicates += result.quarantined.get(str(Reason.DUPLICATE), 0)
        self.quarantine_rows.extend(result.quarantine_rows)
        self.changed_rows.extend(result.changed)
        self.seconds.update(result.seconds)

    def records_dict(self) -> dict[str, Any]:
        """What the run did with files of records: counts, and the records whose content changed."""
        return {
            "files_read": self.record_files,
            "records_read": self.records_read,
            "unchanged": self.records_unchanged,
            "changed": len(self.changed_rows),
            "changed_records": [
                {"record": row.task_key, "record_id": row.record_id, "new_task_id": row.task_id}
                for row in self.changed_rows[:1000]
            ],
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (without the per-object quarantine rows)."""
        extra = {"records": self.records_dict()} if self.record_files else {}
        if self.named_keys is not None:
            extra["named_keys"] = {
                "named": self.named_keys,
                "checked": self.checked,
                "missing": self.missing_keys[:1000],
                "outside_sources": self.keys_outside_sources[:1000],
            }
        return {**extra, **self._counts()}

    def _counts(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "checked": self.checked,
            "already_ingested_or_quarantined": self.already_known,
            "new": self.new,
            "ingested": self.tasks_created,  # each ingested object is exactly one new task
            "duplicates": self.duplicates,
            "quarantined": sum(self.quarantined.values()),
            "quarantined_by_reason": dict(sorted(self.quarantined.items())),
            "vanished_during_run": self.vanished,
            "tasks_created": self.tasks_created,
            "predictions": self.predictions,
            "prediction_failures": self.prediction_failures,
            "recovered_from_interrupted_run": self.recovered,
            "seconds": {stage: round(value, 3) for stage, value in self.seconds.items()},
        }


# --- project and storage ----------------------------------------------------------------------------------
STATE_INDEX_PREFIX = "index/state-locations/"  # in the state bucket: one key per project state location


class StateOwnershipError(SpecError):
    """The spec's state location or sources belong to another project: refused before anything is changed."""


def state_index_key(state: S3Location) -> str:
    """Index key naming a project's state location (listing the index is enough to know every project's state)."""
    encoded = base64.urlsafe_b64encode(str(state).encode("utf-8")).decode("ascii").rstrip("=")
    return f"{STATE_INDEX_PREFIX}{encoded}"


def state_location_of_index_key(key: str) -> S3Location | None:
    """The state location an index key names, or None for a key that is not an index entry."""
    encoded = key.removeprefix(STATE_INDEX_PREFIX)
    try:
        return S3Location.parse(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8"))
    except ValueError:
        return None


def check_record_owner(record: dict[str, Any], spec: ProjectSpec, label_studio_title: str | None = None) -> None:
    """Refuse a state record (or its Label Studio project) made for another project: adopting it would rewrite it."""
    state = spec.state_location
    recorded_title = record.get("title")
    if recorded_title != spec.name:
        raise StateOwnershipError(
            f"state location {state} belongs to project {recorded_title!r} (Label Studio project "
            f"{record.get('project_id')}), not to this spec's {spec.name!r}: give this spec its own `state` location"
        )
    if label_studio_title is not None and label_studio_title != spec.name:
        raise StateOwnershipError(
            f"Label Studio project {record.get('project_id')} recorded in {state} is titled {label_studio_title!r}, "
            f"not this spec's {spec.name!r}: rename it back in Label Studio or give this spec its own `state` location"
        )


def project_record_key(spec: ProjectSpec) -> str:
    """Key (in the state bucket) of the record naming the spec's Label Studio project."""
    return spec.state_location.join("project.json")


def read_project_record(store: ObjectStorePort, spec: ProjectSpec) -> dict[str, Any] | None:
    """The recorded Label Studio project of a spec, or None before the first ingest."""
    try:
        return json.loads(store.get_bytes(spec.state_location.bucket, project_record_key(spec)))
    except ObjectStoreError as exc:
        if not exc.not_found:
            raise  # an unreadable record must never be taken for "no project yet": that would create a second one
        return None


def project_settings(spec: ProjectSpec) -> dict[str, Any]:
    """The Label Studio project settings the spec decides (ensure_project keeps the project in line with them)."""
    return {
        "label_config": build_label_config(spec),
        "maximum_annotations": spec.overlap,
        "overlap_cohort_percentage": 100,
        # The guideline file, when the spec names one, as safe HTML ending with its version (tasks/guidelines.py).
        "expert_instruction": instruction_html(spec) if spec.guidelines else spec.instructions or "",
        "show_instruction": bool(spec.instructions or spec.guidelines),
        # Label Studio then disables Submit until the annotation holds an answer: an empty one blocks publishing
        # (a typed answer is `required` instead: TaskType.refuse_empty_annotations).
        "enable_empty_annotation": not spec.task_type.refuse_empty_annotations,
    }


def settings_to_update(spec: ProjectSpec, current: dict[str, Any]) -> dict[str, Any]:
    """The spec's project settings Label Studio does not hold (guidelines are compared by their version)."""
    return {
        key: value
        for key, value in project_settings(spec).items()
        if current.get(key) != value
        and not (key == "expert_instruction" and instruction_is_current(spec, current.get(key)))
    }


def ensure_project(ls: LabelStudioPort, store: ObjectStorePort, spec: ProjectSpec) -> int:
    """Find (state file, then title) or create the Label Studio project, and keep its settings in line with the spec."""
    state = spec.state_location
    store.ensure_bucket(state.bucket)
    record_key = project_record_key(spec)
    recorded = read_project_record(store, spec)
    settings = project_settings(spec)
    if recorded is not None:
        check_record_owner(recorded, spec)
        project_id = int(recorded["project_id"])
        current = ls.get_project(project_id)
        if current is None:
            raise LabelStudioError(
                f"project {project_id} recorded in s3://{state.bucket}/{record_key} no longer exists in Label Studio; "
                f"its ingest ledger would be wrong for a new project. Delete s3://{state.bucket}/{state.prefix}/ "
                "or give the spec another `state` location to start over."
            )
        check_record_owner(recorded, spec, label_studio_title=current.get("title"))
    else:
        project_id = ls.find_project(spec.name) or ls.create_project(title=spec.name, **settings)
        current = ls.get_project(project_id) or {}
        payload = {"project_id": project_id, "title": spec.name, "label_studio_url": ls.settings.base_url}
        store.put_bytes(state.bucket, record_key, json.dumps(payload).encode(), "application/json")
    register_state_location(store, spec)
    pushed_at = utc_now()  # before the push: what is saved after it was made under these guidelines
    changed = settings_to_update(spec, current)
    if changed:
        ls.update_project(project_id, **changed)
    record_version(store, spec, pushed_at)  # the guideline history (nothing to do when the version is known)
    return project_id


def ensure_storage_connections(
    ls: LabelStudioPort, store: ObjectStorePort, spec: ProjectSpec, project_id: int, reader: S3StorageSettings
) -> list[int]:
    """One S3 import storage per source location, so Label Studio resolves the tasks' s3:// URIs.

    Label Studio keeps a storage's keys in its database, so it gets the read-only identity
    (LABELFLOW_S3_STORAGE_*), never the pipeline's own key.
    """
    reader_s3 = store.settings.model_copy(update={"access_key": reader.access_key, "secret_key": reader.secret_key})
    storages = ls.s3_import_storages(project_id)
    sources = {(source.bucket, source.prefix) for source in spec.sources}
    for storage in storages:
        # Label Studio 1.23 does not show a storage's key, so a connection of a source may hold any key (labelflow
        # before the read-only identity gave it the admin key): give it the reader's, one PATCH per source.
        ours = (storage.get("bucket"), storage.get("prefix") or "") in sources
        if ours and storage.get("aws_access_key_id") != reader.access_key:
            ls.update_s3_import_storage_keys(int(storage["id"]), reader_s3)
    existing = {(s.get("bucket"), s.get("prefix") or ""): int(s["id"]) for s in storages}
    ids = []
    for source in spec.sources:
        key = (source.bucket, source.prefix)
        if key not in existing:
            existing[key] = ls.add_s3_import_storage(
                project_id,
                source.bucket,
                source.prefix,
                reader_s3,
                presign=spec.storage.presign,
                presign_ttl_minutes=spec.storage.presign_ttl_minutes,
                title=f"labelflow: {source}",
            )
        ids.append(existing[key])
    return ids


def check_sources(store: ObjectStorePort, spec: ProjectSpec) -> None:
    """Fail fast when a source bucket is missing or a source would read another project's state."""
    for source in spec.sources:
        if not store.bucket_exists(source.bucket):
            raise ObjectStoreError(f"source bucket {source.bucket!r} (from {source}) does not exist")
    own_state = spec.state_location
    for state in registered_state_locations(store):
        if str(state) == str(own_state):
            continue
        for source in spec.sources:
            if source.overlaps(state.folder):
                raise StateOwnershipError(
                    f"source {source} overlaps another project's state location {state}: "
                    "labelflow never ingests its own files"
                )


def registered_state_locations(store: ObjectStorePort) -> list[S3Location]:
    """Every project's state location, from the index in the state bucket (spec validation knows only defaults)."""
    if not store.bucket_exists(STATE_BUCKET):
        return []
    found = (state_location_of_index_key(item.key) for item in store.list_objects(STATE_BUCKET, STATE_INDEX_PREFIX))
    return [state for state in found if state is not None]


def register_state_location(store: ObjectStorePort, spec: ProjectSpec) -> None:
    """Add the spec's state location to the index so that no other project's source can read it."""
    store.ensure_bucket(STATE_BUCKET)
    payload = {"project": spec.name, "state": str(spec.state_location)}
    store.put_bytes(
        STATE_BUCKET, state_index_key(spec.state_location), json.dumps(payload).encode(), "application/json"
    )


# --- ledger -----------------------------------------------------------------------------------------------
def load_ledger(ledger: IngestLedger) -> LedgerIndex:
    """Read what was already ingested or quarantined for the project."""
    return ledger.load()


def recover_interrupted_batches(
    ls: LabelStudioPort, ledger: IngestLedger, index: LedgerIndex, project_id: int
) -> list[LedgerRow]:
    """Record the tasks of batches an interrupted run imported but did not record; return the rows recorded.

    A pending batch is one whose import may or may not have reached Label Studio before its run died. The tasks
    Label Studio holds for it (found by their batch id) are recorded with their task ids; its other objects are not,
    so the listing sees them as new and they are imported normally. The caller adds the rows to its index.
    """
    recovered: list[LedgerRow] = []
    recorded: set[tuple[str, str, str, int | None]] = set()  # an object in two pending batches is recorded once
    for batch_id, rows in ledger.pending_batches().items():
        found = {task_key(t["data"]): int(t["id"]) for t in ls.tasks_where(project_id, BATCH_FIELD, batch_id)}
        done = []
        for row in rows:
            task_id = found.get(row.task_key)
            version = (row.bucket, row.key, row.etag, row.record_index)
            if row.record_index is None:
                known = index.is_known(row.bucket, row.key, row.etag)
            else:
                known = index.record_hash(row.bucket, row.key, row.record_index, row.record_id) == _short_hash(
                    row.sha256
                )
            if task_id is not None and not known and version not in recorded:
                done.append(LedgerRow(**{**row.__dict__, "task_id": task_id}))
                recorded.add(version)
        ledger.append(done)
        ledger.clear_pending(batch_id)
        recovered.extend(done)
    return recovered


# --- listing and cleaning ---------------------------------------------------------------------------------
def iter_new_objects(
    store: ObjectStorePort,
    spec: ProjectSpec,
    index: LedgerIndex,
    limit: int | None = None,
    keys: Iterable[str] | None = None,
) -> Iterator[ListedChunk]:
    """Stream the sources' listings (or, given `keys`, look up only those objects), skipping known object versions,
    in chunks bounded by count and bytes.

    Each chunk carries the counts since the previous one; the last one may hold no objects, only counts.
    """
    if keys is not None:
        yield from _named_chunks(store, spec, index, resolve_named_keys(spec, keys), limit)
        return

    def listings() -> Iterator[StoredObject]:
        for source in spec.sources:
            yield from store.list_objects(source.bucket, source.prefix)

    yield from _new_object_chunks(listings(), spec, index, limit, stage="list")


def _is_state_key(spec: ProjectSpec, bucket: str, key: str) -> bool:
    """True for a key under the spec's own state location, which is never ingested."""
    state = spec.state_location
    return bucket == state.bucket and key.startswith(state.prefix.rstrip("/") + "/")


def resolve_named_keys(spec: ProjectSpec, keys: Iterable[str]) -> NamedKeys:
    """The objects named keys stand for, within the spec's sources, as a listing of the sources would find them.

    A key is an object URI (`s3://bucket/key`, as the event listener passes them) or a bare key, looked up in the
    bucket of every source whose prefix holds it. Keys outside every source, or under labelflow's own state, are
    returned apart: a listing would not have found them either.
    """
    sources = spec.sources
    objects: set[tuple[str, str]] = set()
    outside: dict[str, None] = {}
    for named in keys:
        if named.startswith("s3://"):
            bucket, _, key = named.removeprefix("s3://").partition("/")
            candidates = [(bucket, key)]
        else:
            candidates = list(dict.fromkeys((source.bucket, named) for source in sources))
        found = [
            (bucket, key)
            for bucket, key in candidates
            if key
            and not _is_state_key(spec, bucket, key)
            and any(source.bucket == bucket and key.startswith(source.prefix) for source in sources)
        ]
        if found:
            objects.update(found)
        else:
            outside[named] = None
    return NamedKeys(sorted(objects), list(outside))


def _named_chunks(
    store: ObjectStorePort, spec: ProjectSpec, index: LedgerIndex, named: NamedKeys, limit: int | None
) -> Iterator[ListedChunk]:
    """The chunks of named objects, found with a HEAD each (in parallel) instead of a listing."""
    missing: list[str] = []

    def looked_up() -> Iterator[StoredObject]:
        with ThreadPoolExecutor(max_workers=spec.ingest.download_workers) as pool:
            heads = pool.map(lambda bucket_key: store.head(*bucket_key), named.objects)
            for (bucket, key), obj in zip(named.objects, heads, strict=True):
                if obj is None:
                    missing.append(f"s3://{bucket}/{key}")  # deleted since its event; re-uploading names it again
                elif not (obj.key.endswith("/") and not obj.size):  # a folder marker, as listings skip them
                    yield obj

    previous: ListedChunk | None = None
    for chunk in _new_object_chunks(looked_up(), spec, index, limit, stage="check"):
        if previous is not None:
            yield previous
        previous = chunk
    assert previous is not None  # _new_object_chunks always yields a last chunk
    # The last chunk is known only once every HEAD has answered: it carries the totals of the lookups.
    yield replace(previous, checked=len(named.objects), missing=tuple(missing))


def _new_object_chunks(
    found: Iterator[StoredObject], spec: ProjectSpec, index: LedgerIndex, limit: int | None, stage: str
) -> Iterator[ListedChunk]:
    """Chunks of the found objects that are new versions (state, repeats and known versions skipped)."""
    chunk: list[StoredObject] = []
    chunk_bytes = 0
    seen = already_known = new = 0
    new_in_run = 0
    seconds = 0.0
    byte_budget = max(spec.ingest.max_object_bytes, 256 * 1024 * 1024)
    seen_this_run: set[tuple[str, str]] = set()

    def counted() -> ListedChunk:
        return ListedChunk(chunk, seen if stage == "list" else 0, already_known, new, seconds, stage=stage)

    while True:
        began = time.perf_counter()
        obj = next(found, None)
        seconds += time.perf_counter() - began
        if obj is None:
            break
        if _is_state_key(spec, obj.bucket, obj.key):
            continue  # never ingest labelflow's own state
        if (obj.bucket, obj.key) in seen_this_run:
            continue  # overlapping source prefixes
        seen_this_run.add((obj.bucket, obj.key))
        seen += 1
        if index.is_known(obj.bucket, obj.key, obj.etag):
            already_known += 1
            continue
        if limit is not None and new_in_run >= limit:
            continue
        new += 1
        new_in_run += 1
        chunk.append(obj)
        chunk_bytes += min(obj.size, spec.ingest.max_object_bytes)
        if len(chunk) >= spec.ingest.chunk_objects or chunk_bytes >= byte_budget:
            yield counted()
            chunk, chunk_bytes = [], 0
            seen = already_known = new = 0
            seconds = 0.0
    yield counted()


def _quarantine(obj: StoredObject, sha256: str, reason: Reason, detail: str) -> LedgerRow:
    return LedgerRow(
        bucket=obj.bucket,
        key=obj.key,
        etag=obj.etag,
        size=obj.size,
        sha256=sha256,
        status="quarantined",
        reason=str(reason),
        detail=detail,
    )


TRIM_AFTER_DECODED_BYTES = 32 * 1024 * 1024  # smaller decodes are not worth a malloc_trim


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.3g} MiB"


def fetch_and_inspect(
    store: ObjectStorePort, spec: ProjectSpec, obj: StoredObject, budget: MemoryBudget
) -> Inspection | None:
    """Download and inspect one object while its bytes, and its decoded size, are held in the pool's shared budget."""
    options = spec.ingest
    need = min(obj.size, options.max_object_bytes)  # as listed (an object changed since is caught below)
    if need > budget.capacity:
        detail = f"{obj.size} bytes: more than ingest.memory_budget_bytes ({_mib(budget.capacity)})"
        return Inspection("", "", Reason.TOO_LARGE, detail)
    while True:
        with budget.reserve(need):
            try:
                data = store.get_bytes(obj.bucket, obj.key, max_bytes=options.max_object_bytes + 1)
            except ObjectStoreError as exc:
                if exc.not_found:
                    return None  # deleted between listing and reading; it will be seen again if re-uploaded
                raise
            if len(data) > options.max_object_bytes:
                return Inspection("", "", Reason.TOO_LARGE, f"grew past max_object_bytes {options.max_object_bytes}")
            decoded = decoded_size_estimate(data, spec.modality, options.max_image_pixels)  # from the header
            total = len(data) + decoded
            if total > budget.capacity:
                header = read_image_header(data)
                what = f"{header.width}x{header.height} {header.mode} image" if header else f"{len(data)}-byte object"
                detail = (
                    f"{what} needs about {_mib(total)} to download and decode: "
                    f"more than ingest.memory_budget_bytes ({_mib(budget.capacity)})"
                )
                return Inspection("", "", Reason.TOO_LARGE, detail)
            extra = total - need
            if extra <= 0 or budget.try_reserve(extra):
                try:
                    inspection = inspect_content(
                        data,
                        spec.modality,  # type: ignore[arg-type]  (record sources never reach object cleaning)
                        options.text_encodings,
                        options.max_image_pixels,
                        options.max_duration_seconds,
                    )
                    if decoded >= TRIM_AFTER_DECODED_BYTES:
                        return_freed_memory()  # before the bytes go back to the budget, or RSS outgrows it
                    return inspection
                finally:
                    if extra > 0:
                        budget.release(extra)
        # No room to decode now. Waiting while holding the download could deadlock the pool (every worker holding
        # one, all waiting for more), so let go of everything, wait for the whole amount, and read the object again.
        del data
        need = total


def clean_objects(
    store: ObjectStorePort,
    spec: ProjectSpec,
    objects: list[StoredObject],
    index: LedgerIndex,
    budget: MemoryBudget | None = None,
) -> CleanedChunk:
    """Download and inspect new objects in parallel, within one memory budget; reject with a reason, never silently."""
    rejected: list[LedgerRow] = []
    to_fetch: list[StoredObject] = []
    for obj in objects:
        if obj.size > spec.ingest.max_object_bytes:
            rejected.append(
                _quarantine(
                    obj, "", Reason.TOO_LARGE, f"{obj.size} bytes > max_object_bytes {spec.ingest.max_object_bytes}"
                )
            )
        elif spec.task_type.stored_media and (why := unaddressable_reason(obj.key)):
            rejected.append(_quarantine(obj, "", Reason.UNADDRESSABLE_KEY, why))
        else:
            to_fetch.append(obj)
    # One budget for the whole pool: download_workers bounds the parallelism, this bounds the memory.
    shared_budget = budget or MemoryBudget(spec.ingest.memory_budget_bytes)

    def fetch_and_inspect_one(obj: StoredObject) -> tuple[StoredObject, Inspection | None]:
        return obj, fetch_and_inspect(store, spec, obj, shared_budget)

    accepted: list[CleanedObject] = []
    first_in_chunk: dict[str, str] = {}
    vanished = 0
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=spec.ingest.download_workers) as pool:
        for obj, inspection in pool.map(fetch_and_inspect_one, to_fetch):
            if inspection is None:
                vanished += 1
                continue
            if not inspection.accepted:
                rejected.append(_quarantine(obj, inspection.sha256, inspection.reason, inspection.detail))  # type: ignore[arg-type]
                continue
            earlier_task = index.task_by_hash.get(inspection.sha256)
            if earlier_task is not None:
                rejected.append(
                    _quarantine(obj, inspection.sha256, Reason.DUPLICATE, f"same content as task {earlier_task}")
                )
                continue
            if inspection.sha256 in first_in_chunk:
                rejected.append(
                    _quarantine(
                        obj, inspection.sha256, Reason.DUPLICATE, f"same content as {first_in_chunk[inspection.sha256]}"
                    )
                )
                continue
            first_in_chunk[inspection.sha256] = obj.uri
            accepted.append(CleanedObject(obj, inspection))
    return CleanedChunk(accepted, rejected, vanished, time.perf_counter() - began)


def prelabel_objects(predictor: Predictor, spec: ProjectSpec, cleaned: list[CleanedObject]) -> Prelabels:
    """Run the spec's predictor over a chunk; one prediction or None per object."""
    began = time.perf_counter()
    failed_before = getattr(predictor, "failures", 0)
    predictions = predictor.predict([task_data(spec, item, batch_id="") for item in cleaned])
    failures = getattr(predictor, "failures", 0) - failed_before
    return Prelabels(predictions, time.perf_counter() - began, failures)


# --- import -----------------------------------------------------------------------------------------------
def task_data(spec: ProjectSpec, item: CleanedObject, batch_id: str) -> dict[str, Any]:
    """Label Studio task data: what annotators see plus metadata back to the source object."""
    obj, inspection = item.obj, item.inspection
    data: dict[str, Any] = {
        spec.data_key: inspection.text if spec.modality == "text" else obj.uri,
        "source_uri": obj.uri,
        "source_bucket": obj.bucket,
        "source_key": obj.key,
        "source_etag": obj.etag,
        "content_sha256": inspection.sha256,
        BATCH_FIELD: batch_id,
    }
    if inspection.encoding:
        data["source_encoding"] = inspection.encoding
    if inspection.width:
        data["image_width"], data["image_height"] = inspection.width, inspection.height
    if inspection.duration_seconds is not None:
        data["audio_duration"] = inspection.duration_seconds
        data["audio_sample_rate"], data["audio_channels"] = inspection.sample_rate, inspection.channels
    return data


def request_batches(payloads: list[dict[str, Any]], max_tasks: int, max_bytes: int) -> Iterator[list[int]]:
    """Indices of payloads grouped into import requests within the task-count and byte limits."""
    batch: list[int] = []
    size = 0
    for i, payload in enumerate(payloads):
        payload_size = len(json.dumps(payload, ensure_ascii=False).encode("utf-8"))
        if batch and (len(batch) >= max_tasks or size + payload_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(i)
        size += payload_size
    if batch:
        yield batch


def _gave_up(exc: LabelStudioError, attempts: int) -> LabelStudioError:
    """The last transient error, saying how often the batch was tried (retries within a request say it already)."""
    message = str(exc) if "retried" in str(exc) else f"{exc} (retried {attempts - 1} times with backoff)"
    return LabelStudioError(message, transient=True, status=exc.status)


def import_batch_idempotently(
    ls: LabelStudioPort, project_id: int, payloads: list[dict[str, Any]], batch_id: str, attempts: int = 5
) -> dict[str, int]:
    """Import one batch; after a transient failure, look the batch up before retrying so nothing is created twice."""
    delay = 1.0
    for attempt in range(1, attempts + 1):
        try:
            ids = ls.import_tasks(project_id, payloads)
            if len(ids) == len(payloads):
                return {task_key(p["data"]): task_id for p, task_id in zip(payloads, ids, strict=True)}
        except LabelStudioError as exc:
            if not exc.transient:
                raise
            if attempt == attempts:
                raise _gave_up(exc, attempts) from exc
            log.warning("import of batch %s failed (%s); retrying in %.0f s", batch_id, exc, delay)
        time.sleep(delay)
        delay *= 2
        try:
            existing = {task_key(t["data"]): int(t["id"]) for t in ls.tasks_where(project_id, BATCH_FIELD, batch_id)}
        except LabelStudioError as exc:
            # Still down: the lookup must back off like the import, or one failed lookup ends the run early.
            if not exc.transient:
                raise
            if attempt == attempts:
                raise _gave_up(exc, attempts) from exc
            log.warning("looking up batch %s failed (%s); retrying", batch_id, exc)
            continue
        if len(existing) >= len(payloads):
            return existing
        payloads = [p for p in payloads if task_key(p["data"]) not in existing]
        if not payloads:
            return existing
    raise LabelStudioError(f"import of batch {batch_id} did not complete after {attempts} attempts", transient=True)


@dataclass(frozen=True)
class NewTask:
    """A task to create: its Label Studio data (without the batch id) and its ledger row (without the task id)."""

    data: dict[str, Any]
    row: LedgerRow


def new_object_tasks(spec: ProjectSpec, cleaned: list[CleanedObject]) -> list[NewTask]:
    """The tasks of cleaned objects: one per object."""
    return [
        NewTask(
            task_data(spec, item, batch_id=""),
            LedgerRow(
                bucket=item.obj.bucket,
                key=item.obj.key,
                etag=item.obj.etag,
                size=item.obj.size,
                sha256=item.inspection.sha256,
                status="ingested",
            ),
        )
        for item in cleaned
    ]


def import_and_record(
    ls: LabelStudioPort,
    ledger: IngestLedger,
    spec: ProjectSpec,
    project_id: int,
    new_tasks: list[NewTask],
    rejected: list[LedgerRow],
    predictions: list[dict | None] | None,
) -> ImportedChunk:
    """Create tasks batch by batch (each marked pending first), then record the chunk's outcomes in one ledger part.

    Not to be repeated as a whole: each batch is retried inside (`import_batch_idempotently`), and a run that dies
    between an import and the ledger write is reconciled by the next run (`recover_interrupted_batches`).
    """
    rows: list[LedgerRow] = []
    batch_ids: list[str] = []
    payloads = []
    for i, new in enumerate(new_tasks):
        payload: dict[str, Any] = {"data": dict(new.data)}
        if predictions and predictions[i]:
            payload["predictions"] = [predictions[i]]
        payloads.append(payload)
    began = time.perf_counter()
    for indices in request_batches(payloads, spec.ingest.batch_size, spec.ingest.max_request_bytes):
        batch_id = uuid.uuid4().hex
        batch_payloads = [payloads[i] for i in indices]
        for payload in batch_payloads:
            payload["data"][BATCH_FIELD] = batch_id
        pending = [LedgerRow(**{**new_tasks[i].row.__dict__, "batch_id": batch_id}) for i in indices]
        ledger.mark_pending(batch_id, pending)
        batch_ids.append(batch_id)
        task_ids = import_batch_idempotently(ls, project_id, batch_payloads, batch_id)
        for row in pending:
            rows.append(LedgerRow(**{**row.__dict__, "task_id": task_ids[row.task_key]}))
    imported = time.perf_counter()
    ledger.append([*rows, *rejected])
    for batch_id in batch_ids:
        ledger.clear_pending(batch_id)
    return ImportedChunk(rows, rejected, imported - began, time.perf_counter() - imported)


def task_key(data: dict[str, Any]) -> str:
    """What identifies a task among those labelflow created: its source URI, plus `#index` for a record."""
    uri = str(data.get("source_uri"))
    index = data.get("record_index")
    return uri if index is None else f"{uri}#{index}"


def _short_hash(sha256: str) -> int:
    return int(sha256[:16], 16) if sha256 else 0


# --- reports ----------------------------------------------------------------------------------------------
def quarantine_csv(rows: list[LedgerRow]) -> str:
    """The run's quarantine report: one line per rejected object with its reason."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["uri", "reason", "detail", "size", "etag", "sha256", "record_index", "record_id"])
    for row in rows:
        writer.writerow(
            [
                f"s3://{row.bucket}/{row.key}",
                row.reason,
                row.detail,
                row.size,
                row.etag,
                row.sha256,
                "" if row.record_index is None else row.record_index,
                row.record_id or "",
            ]
        )
    return buffer.getvalue()


def summary_markdown(
    spec: ProjectSpec, project_id: int, summary: dict[str, Any], rows: list[LedgerRow], report_uri: str
) -> str:
    """Human summary of a run, for the Prefect artifact."""
    lines = [
        f"# Ingest: {spec.name} (Label Studio project {project_id})",
        "",
        "| listed | already known | new | tasks created | duplicates | quarantined | predictions |",
        "|---|---|---|---|---|---|---|",
        f"| {summary['listed']} | {summary['already_ingested_or_quarantined']} | {summary['new']} | "
        f"{summary['tasks_created']} | {summary['duplicates']} | {summary['quarantined']} | {summary['predictions']} |",
        "",
        "Seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["seconds"].items()),
        "",
    ]
    named = summary.get("named_keys")
    if named:
        lines += [
            f"Run given {named['named']} keys by object-store events: {named['checked']} looked up (no listing), "
            f"{len(named['missing'])} gone before the run, {len(named['outside_sources'])} outside the sources.",
            "",
        ]
    records = summary.get("records")
    if records:
        lines += [
            f"Files of records read: {records['files_read']}; records read: {records['records_read']}, "
            f"unchanged since an earlier run: {records['unchanged']}, changed (a new task each; the old task stays): "
            f"{records['changed']}.",
            "",
        ]
        if records["changed_records"]:
            lines += ["## Changed records", "", "| record | id | new task |", "|---|---|---|"]
            for item in records["changed_records"][:50]:
                lines.append(f"| `{item['record']}` | {item['record_id'] or ''} | {item['new_task_id']} |")
            lines.append("")
    if rows:
        lines += [
            f"## Quarantined ({len(rows)}; full report: `{report_uri}`)",
            "",
            "| object | reason | detail |",
            "|---|---|---|",
        ]
        for row in rows[:50]:
            detail = row.detail.replace("|", "\\|")[:120]
            lines.append(f"| `{row.task_key}` | {row.reason} | {detail} |")
        if len(rows) > 50:
            lines.append(f"| ... {len(rows) - 50} more in the report | | |")
    return "\n".join(lines)


def write_run_report(
    store: ObjectStorePort, state: S3Location, run_name: str, summary: dict[str, Any], rows: list[LedgerRow]
) -> str:
    """Store the run's summary and quarantine report next to the project's other state; return the report URI."""
    base = state.join("ingest", "runs", run_name)
    store.put_bytes(state.bucket, f"{base}/summary.json", json.dumps(summary, indent=2).encode(), "application/json")
    store.put_bytes(
        state.bucket, f"{base}/quarantine.csv", quarantine_csv(rows).encode("utf-8"), "text/csv; charset=utf-8"
    )
    return f"s3://{state.bucket}/{base}/quarantine.csv"
