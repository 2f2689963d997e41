"""The durable record of what was ingested or quarantined for a project, kept as Parquet in the object store."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from labelflow.tasks.ports import ObjectStorePort
from labelflow.tasks.spec import S3Location
from labelflow.tasks.tables import conform, read_parquet

LEDGER_SCHEMA = pa.schema(
    [
        ("bucket", pa.string()),
        ("key", pa.string()),
        ("etag", pa.string()),
        ("size", pa.int64()),
        ("sha256", pa.string()),
        ("status", pa.string()),  # "ingested" or "quarantined"
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("task_id", pa.int64()),
        ("batch_id", pa.string()),
        ("recorded_at", pa.float64()),
        # Files of records: one row per record (its 1-based place in the file and its own id), and one `file` row
        # once the whole file version was read. Ledgers written before these columns read them as null.
        ("record_index", pa.int64()),
        ("record_id", pa.string()),
        # A record's fields kept out of Label Studio (gold answers, model names, generation lineage), as JSON:
        # annotators must not see them; collect joins them back (tasks.collect.with_hidden_record_fields).
        ("record_hidden", pa.string()),
    ]
)
COMPACT_AFTER_PARTS = 64


# A file of records gets one row per record (`record_index` set) and, once the whole file version was read, one
# row with this status: only that row makes the listing skip the file, so a run that dies mid-file reads it again and
# skips the records already recorded.
FILE_READ = "read"


@dataclass(frozen=True)
class LedgerRow:
    """One object's outcome, or one record's (`record_index` set) for files of records."""

    bucket: str
    key: str
    etag: str
    size: int
    sha256: str  # the object's content hash, or the record's record_sha256
    status: str  # "ingested", "quarantined", or FILE_READ
    reason: str = ""
    detail: str = ""
    task_id: int | None = None
    batch_id: str = ""
    record_index: int | None = None
    record_id: str | None = None
    record_hidden: str | None = None

    @property
    def task_key(self) -> str:
        """What identifies the row's task in Label Studio's data: the source URI, plus `#index` for a record."""
        uri = f"s3://{self.bucket}/{self.key}"
        return uri if self.record_index is None else f"{uri}#{self.record_index}"


def record_identity(bucket: str, key: str, record_index: int, record_id: str | None) -> int:
    """A 64-bit key naming one record of a file: by its own id when it has one, else by its place in the file."""
    import hashlib

    name = f"{bucket}\0{key}\0{'id:' + record_id if record_id else f'#{record_index}'}"
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big")


def _short(sha256: str) -> int:
    return int(sha256[:16], 16) if sha256 else 0


@dataclass
class LedgerIndex:
    """In-memory lookup of the ledger: what was seen (by key+etag) and which content hashes have tasks."""

    seen: dict[tuple[str, str], str] = field(default_factory=dict)
    task_by_hash: dict[str, int] = field(default_factory=dict)
    # Records of files: record identity (record_identity) -> the first 64 bits of the record_sha256 last recorded
    # for it (0 for a record quarantined before it had a hash). Ints, so a million records take about 100 MB.
    records: dict[int, int] = field(default_factory=dict)
    ingested: int = 0
    quarantined: int = 0

    def add(
        self,
        bucket: str,
        key: str,
        etag: str,
        sha256: str,
        status: str,
        task_id: int | None,
        record_index: int | None = None,
        record_id: str | None = None,
    ) -> None:
        """Account for one recorded outcome."""
        if record_index is None:
            self.seen[(bucket, key)] = etag  # a record's row never marks its file as read: the FILE_READ row does
        else:
            self.records[record_identity(bucket, key, record_index, record_id)] = _short(sha256 or "")
        if status == "ingested":
            self.ingested += 1
            if task_id is not None:
                self.task_by_hash.setdefault(sha256, task_id)
        elif status != FILE_READ:
            self.quarantined += 1

    def add_row(self, row: LedgerRow) -> None:
        """Account for one ledger row."""
        self.add(row.bucket, row.key, row.etag, row.sha256, row.status, row.task_id, row.record_index, row.record_id)

    def record_hash(self, bucket: str, key: str, record_index: int, record_id: str | None) -> int | None:
        """The (short) hash last recorded for this record of a file, or None for a record never seen."""
        return self.records.get(record_identity(bucket, key, record_index, record_id))

    def add_rows(self, rows: Iterable[LedgerRow]) -> None:
        """Account for ledger rows a step recorded."""
        for row in rows:
            self.add_row(row)

    def add_table(self, table: pa.Table) -> None:
        """Account for a whole ledger part at once: column operations instead of one `add` per row."""
        import pyarrow.compute as pc

        status = table.column("status")
        is_record = pc.is_valid(table.column("record_index"))
        objects = table.filter(pc.invert(is_record)).select(["bucket", "key", "etag"]).to_pydict()
        # Later rows win, as with `add`: dict() keeps the last value of a repeated key.
        self.seen.update(zip(zip(objects["bucket"], objects["key"], strict=True), objects["etag"], strict=True))
        records = table.filter(is_record).select(["bucket", "key", "record_index", "record_id", "sha256"]).to_pydict()
        if records["bucket"]:
            self.records.update(
                (record_identity(b, k, i, r), _short(h or "")) for b, k, i, r, h in zip(*records.values(), strict=True)
            )
        ingested = _equal(status, "ingested")
        tasks = table.filter(pc.and_(ingested, pc.is_valid(table.column("task_id")))).select(["sha256", "task_id"])
        hashes, task_ids = tasks.column("sha256").to_pylist(), tasks.column("task_id").to_pylist()
        # The first task recorded for a content hash wins, as with `add`'s setdefault: reversed, dict() keeps it.
        first = dict(zip(reversed(hashes), reversed(task_ids), strict=True))
        known = self.task_by_hash
        known.update({h: t for h, t in first.items() if h not in known})  # cost follows the part, not the history
        self.ingested += pc.sum(pc.cast(ingested, pa.int64())).as_py() or 0
        other = pc.invert(pc.or_(ingested, _equal(status, FILE_READ)))
        self.quarantined += pc.sum(pc.cast(other, pa.int64())).as_py() or 0

    def is_known(self, bucket: str, key: str, etag: str) -> bool:
        """True when this exact version of the object was already ingested or quarantined."""
        return self.seen.get((bucket, key)) == etag


def _equal(column: pa.ChunkedArray, text: str) -> pa.ChunkedArray:
    """Where a string column holds exactly `text` (a letters-only word)."""
    import pyarrow.compute as pc

    # A pattern option, not a Python scalar: pyarrow converts a Python value by importing pandas (a second or more).
    return pc.match_substring_regex(column, pattern=f"^{text}$")


class IngestLedger:
    """Append-only Parquet parts under `<state>/ingest/ledger/`, plus pending-batch markers for crash recovery."""

    def __init__(self, store: ObjectStorePort, state: S3Location) -> None:
        self.store = store
        self.state = state
        self.parts_prefix = state.join("ingest", "ledger") + "/"
        self.pending_prefix = state.join("ingest", "pending") + "/"

    def load(self) -> LedgerIndex:
        """Read every part into an index; compacts the parts when there are many."""
        self.store.ensure_bucket(self.state.bucket)
        index = LedgerIndex()
        parts = [obj.key for obj in self.store.list_objects(self.state.bucket, self.parts_prefix)]
        tables = []
        for key in parts:
            table = read_parquet(self.store.get_bytes(self.state.bucket, key))
            tables.append(table)
            index.add_table(conform(table, LEDGER_SCHEMA))
        if len(parts) > COMPACT_AFTER_PARTS:
            self._compact(parts, tables)
        return index

    def _compact(self, parts: list[str], tables: list[pa.Table]) -> None:
        """Merge many small parts into one, writing the merged part before deleting the old ones."""
        merged = pa.concat_tables([conform(t, LEDGER_SCHEMA) for t in tables])
        self._write_table(merged, prefix="compacted")
        for key in parts:
            self.store.delete(self.state.bucket, key)

    def _write_table(self, table: pa.Table, prefix: str = "part") -> str:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        key = f"{self.parts_prefix}{prefix}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        self.store.put_bytes(self.state.bucket, key, buffer.getvalue(), content_type="application/vnd.apache.parquet")
        return key

    def append(self, rows: Iterable[LedgerRow]) -> int:
        """Durably record outcomes as one new part; returns how many rows were written."""
        rows = list(rows)
        if not rows:
            return 0
        now = time.time()
        table = pa.Table.from_pylist(
            [{**row.__dict__, "recorded_at": now} for row in rows],
            schema=LEDGER_SCHEMA,
        )
        self._write_table(table)
        return len(rows)

    def read_all(self) -> pa.Table:
        """The whole ledger as one table (for reports and tests)."""
        tables = [
            conform(read_parquet(self.store.get_bytes(self.state.bucket, obj.key)), LEDGER_SCHEMA)
            for obj in self.store.list_objects(self.state.bucket, self.parts_prefix)
        ]
        return pa.concat_tables(tables) if tables else LEDGER_SCHEMA.empty_table()

    # --- pending batches: written before an import, removed once the ledger has it --------------------
    def mark_pending(self, batch_id: str, rows: list[LedgerRow]) -> None:
        """Record that a batch is about to be imported, so a crash can be reconciled on the next run."""
        payload = json.dumps([row.__dict__ for row in rows], ensure_ascii=False).encode("utf-8")
        self.store.put_bytes(self.state.bucket, f"{self.pending_prefix}{batch_id}.json", payload, "application/json")

    def pending_batches(self) -> dict[str, list[LedgerRow]]:
        """Batches whose import may or may not have reached Label Studio."""
        result = {}
        for obj in self.store.list_objects(self.state.bucket, self.pending_prefix):
            batch_id = obj.key.removeprefix(self.pending_prefix).removesuffix(".json")
            rows = json.loads(self.store.get_bytes(self.state.bucket, obj.key))
            result[batch_id] = [LedgerRow(**row) for row in rows]
        return result

    def clear_pending(self, batch_id: str) -> None:
        """The batch is fully recorded."""
        self.store.delete(self.state.bucket, f"{self.pending_prefix}{batch_id}.json")
