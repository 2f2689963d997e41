"""Ingest of files of records: each record of a JSONL, JSON, CSV, TSV or Parquet source file becomes one task.

A file is streamed from the object store and parsed record by record (tasks/records.py), so memory stays bounded
whatever its size. Records are recorded in the ingest ledger one row each (file, record_index, record_id,
record_sha256, task id), chunk by chunk, with the same pending-batch protocol as objects: a run that dies mid-file
reads the file again and skips every record already recorded. A record is identified by its `id` column when the
spec names one, else by its place in the file:
- the same record (same identity, same record_sha256) is skipped;
- a record whose content changed gets a new task, named in the run report (its old task stays);
- a record with the mapped content of an existing task is quarantined as a `duplicate`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from labelflow.integrations.object_store import ObjectStoreError, StoredObject
from labelflow.tasks.ingest import BATCH_FIELD, NewTask, import_and_record
from labelflow.tasks.ledger import FILE_READ, IngestLedger, LedgerIndex, LedgerRow
from labelflow.tasks.ports import LabelStudioPort, ObjectStorePort
from labelflow.tasks.prelabel import Predictor
from labelflow.tasks.records import (
    ParsedRecord,
    RecordReason,
    RecordsSummary,
    RejectedRecord,
    format_from_name,
    iter_records,
)
from labelflow.tasks.spec import ProjectSpec, SpecError

STREAM_CHUNK_BYTES = 1 << 20
# Task data held before a chunk is imported: long records (documents, chats) are imported in smaller chunks, so the
# memory a chunk takes stays bounded whatever the record size (about three copies exist while it is imported).
CHUNK_CHARS = 32 * 1024 * 1024
MAX_REJECTED_PER_CHUNK = 10_000  # rejected records are recorded at least this often, even in a file of bad records
CHANGED_IN_SUMMARY = 1000  # changed records listed in the run summary (all are in the run's changes report)


class RecordFieldsError(SpecError):
    """A mapped field is missing in every record read: the spec's `records.fields` does not fit the files."""


@dataclass
class RecordFileResult:
    """What ingesting one file of records did."""

    uri: str
    format: str | None = None
    encoding: str | None = None
    records: int = 0  # records read, accepted or not
    unchanged: int = 0  # recorded by an earlier run, skipped
    tasks_created: int = 0
    predictions: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    quarantine_rows: list[LedgerRow] = field(default_factory=list)
    changed: list[LedgerRow] = field(default_factory=list)  # new tasks for records whose content changed
    file_rejected: bool = False  # the file (or its rest) could not be read; it is recorded as quarantined
    seconds: Counter[str] = field(default_factory=Counter)


def _optional(spec: ProjectSpec) -> frozenset[str]:
    """The task type's optional record fields: a record may lack them."""
    return frozenset(spec.task_type.optional_record_fields)


def _short(sha256: str | None) -> int:
    return int(sha256[:16], 16) if sha256 else 0


def record_task_data(
    spec: ProjectSpec, obj: StoredObject, record: ParsedRecord, encoding: str | None
) -> dict[str, Any]:
    """Label Studio task data of one record: what the type shows, plus lineage back to the file and the record."""
    hidden = spec.task_type.hidden_record_fields
    shown = {name: value for name, value in record.fields.items() if name not in hidden}
    data: dict[str, Any] = spec.task_type.record_task_data(shown, spec)
    data.update(
        {
            "source_uri": obj.uri,
            "source_bucket": obj.bucket,
            "source_key": obj.key,
            "source_etag": obj.etag,
            "record_index": record.index,
            "content_sha256": record.sha256,
            BATCH_FIELD: "",
        }
    )
    if record.record_id is not None:
        data["record_id"] = record.record_id
    if encoding and encoding not in ("utf-8", "utf_8"):
        data["source_encoding"] = encoding
    return data


def hidden_fields_json(spec: ProjectSpec, record: ParsedRecord) -> str | None:
    """The record's fields kept out of Label Studio, as JSON for the ledger (None when it has none)."""
    hidden = {name: value for name, value in record.fields.items() if name in spec.task_type.hidden_record_fields}
    return json.dumps(hidden, ensure_ascii=False, sort_keys=True) if hidden else None


def _row(
    obj: StoredObject, status: str, sha256: str, index: int | None, record_id: str | None, **extra: Any
) -> LedgerRow:
    return LedgerRow(
        bucket=obj.bucket,
        key=obj.key,
        etag=obj.etag,
        size=obj.size,
        sha256=sha256,
        status=status,
        record_index=index,
        record_id=record_id,
        **extra,
    )


def check_record_fields(
    store: ObjectStorePort,
    spec: ProjectSpec,
    sample_records: int | None = None,
    files: list[tuple[str, str]] | None = None,
) -> None:
    """Before anything is created: refuse a spec whose mapped field is missing in every record of a first file.

    Reads the start of the first file of records in the sources (or, given `files`, the first of those that still
    exists: a run given keys lists nothing), at most `sample_records` records, by default ingest.chunk_objects: the
    same records the first chunk of an ingest would import.
    """
    assert spec.records is not None
    limit = sample_records or spec.ingest.chunk_objects
    if files is None:
        candidates: Iterator[tuple[str, str]] = (
            (obj.bucket, obj.key) for source in spec.sources for obj in store.list_objects(source.bucket, source.prefix)
        )
    else:
        candidates = iter(files)
    for bucket, key in candidates:
        if format_from_name(key, spec.records.format) is None:
            continue
        summary = RecordsSummary()
        chunks = store.iter_chunks(bucket, key, STREAM_CHUNK_BYTES)
        try:
            for _ in zip(
                range(limit),
                iter_records(
                    chunks, key, spec.records, spec.ingest.text_encodings, summary=summary, optional=_optional(spec)
                ),
                strict=False,
            ):
                pass
        except ObjectStoreError as exc:
            if files is None or not exc.not_found:
                raise
            continue  # a named file deleted since its event: the run skips it too
        finally:
            chunks.close()  # type: ignore[attr-defined]
        if message := summary.missing_field_error(f"s3://{bucket}/{key}"):
            raise RecordFieldsError(message)
        return


def ingest_record_file(
    store: ObjectStorePort,
    ls: LabelStudioPort,
    ledger: IngestLedger,
    spec: ProjectSpec,
    project_id: int,
    obj: StoredObject,
    index: LedgerIndex,
    predictor: Predictor | None = None,
) -> RecordFileResult:
    """Stream one file of records into tasks, chunk by chunk; the index is updated as each chunk is recorded.

    Not to be repeated as a whole within a run (its imports are not reconciled until the next run's recovery);
    a failed file is picked up by the next run, which skips the records already recorded.
    """
    assert spec.records is not None
    result = RecordFileResult(obj.uri)
    summary = RecordsSummary()
    new_tasks: list[NewTask] = []
    rejected: list[LedgerRow] = []
    checked_fields = False
    changed_keys: set[str] = set()  # records of this chunk whose place (or id) held other content before
    chunk_chars = 0

    def flush() -> None:
        nonlocal new_tasks, rejected, checked_fields, chunk_chars
        if not checked_fields:
            if message := summary.missing_field_error(obj.uri):
                raise RecordFieldsError(message)  # before the file's first import: nothing of it is created
            checked_fields = True
        predictions = None
        if predictor is not None and new_tasks:
            began = time.perf_counter()
            predictions = predictor.predict([task.data for task in new_tasks])
            result.seconds["prelabel"] += time.perf_counter() - began
            result.predictions += sum(1 for p in predictions if p)
        imported = import_and_record(ls, ledger, spec, project_id, new_tasks, rejected, predictions)
        result.seconds["import"] += imported.import_seconds
        result.seconds["record"] += imported.record_seconds
        result.tasks_created += len(imported.ingested)
        result.changed.extend(row for row in imported.ingested if row.task_key in changed_keys)
        changed_keys.clear()
        index.add_rows([*imported.ingested, *imported.rejected])
        new_tasks, rejected, chunk_chars = [], [], 0

    chunks = store.iter_chunks(obj.bucket, obj.key, STREAM_CHUNK_BYTES)
    began = time.perf_counter()
    parsed = iter_records(
        chunks, obj.key, spec.records, spec.ingest.text_encodings, summary=summary, optional=_optional(spec)
    )
    pending_in_chunk: set[str] = set()
    try:
        for item in parsed:
            result.records += 1
            if isinstance(item, RejectedRecord):
                if item.index is None:  # the file, or its rest, cannot be read: recorded once, as the file's
                    result.records -= 1
                    result.file_rejected = True
                    row = _row(obj, "quarantined", "", None, None, reason=str(item.reason), detail=item.message)
                    rejected.append(row)
                    result.quarantine_rows.append(row)
                    result.quarantined[str(item.reason)] += 1
                    continue
                if index.record_hash(obj.bucket, obj.key, item.index, item.record_id) == _short(item.sha256):
                    result.unchanged += 1  # quarantined by an earlier run, for the same content
                    continue
                row = _row(
                    obj, "quarantined", item.sha256 or "", item.index, item.record_id,
                    reason=str(item.reason), detail=item.message,
                )  # fmt: skip
                rejected.append(row)
                result.quarantine_rows.append(row)
                result.quarantined[str(item.reason)] += 1
            else:
                known = index.record_hash(obj.bucket, obj.key, item.index, item.record_id)
                if known == _short(item.sha256):
                    result.unchanged += 1
                    continue
                earlier = index.task_by_hash.get(item.sha256)
                if earlier is not None or item.sha256 in pending_in_chunk:
                    what = f"task {earlier}" if earlier is not None else "another record of this run"
                    row = _row(
                        obj, "quarantined", item.sha256, item.index, item.record_id,
                        reason=str(RecordReason.DUPLICATE), detail=f"same mapped fields as {what}",
                    )  # fmt: skip
                    rejected.append(row)
                    result.quarantine_rows.append(row)
                    result.quarantined[str(RecordReason.DUPLICATE)] += 1
                    continue
                row = _row(
                    obj, "ingested", item.sha256, item.index, item.record_id,
                    record_hidden=hidden_fields_json(spec, item),
                )  # fmt: skip
                try:
                    spec.task_type.check_record(item.fields)
                    data = record_task_data(spec, obj, item, summary.encoding)
                except ValueError as exc:  # the type refuses it (RecordRejected says why) or cannot show it
                    reason = getattr(exc, "reason", str(RecordReason.MALFORMED_RECORD))
                    row = _row(
                        obj, "quarantined", item.sha256, item.index, item.record_id, reason=reason, detail=str(exc),
                    )  # fmt: skip
                    rejected.append(row)
                    result.quarantine_rows.append(row)
                    result.quarantined[reason] += 1
                    continue
                if known is not None and known != 0:
                    changed_keys.add(row.task_key)
                new_tasks.append(NewTask(data, row))
                pending_in_chunk.add(item.sha256)
                chunk_chars += sum(len(v) if isinstance(v, str) else sum(map(len, v)) for v in item.fields.values())
            full = len(new_tasks) >= spec.ingest.chunk_objects or chunk_chars >= CHUNK_CHARS
            if full or len(rejected) >= MAX_REJECTED_PER_CHUNK:
                result.seconds["parse"] += time.perf_counter() - began
                flush()
                pending_in_chunk.clear()
                began = time.perf_counter()
        result.seconds["parse"] += time.perf_counter() - began
        result.format, result.encoding = summary.format, summary.encoding
        if not result.file_rejected:
            # The file version is read in full: the listing skips it from now on (recorded with the last chunk).
            rejected.append(_row(obj, FILE_READ, "", None, None))
        flush()
    finally:
        chunks.close()  # type: ignore[attr-defined]
    return result
