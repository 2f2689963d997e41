"""The collected annotation table in the object store: append-only Parquet parts plus a durable watermark.

Layout under `<state>/collect/`:
- `tasks/part-<seq>.parquet`: one row per task collected in that run (its state then, or a deletion marker);
- `annotations/part-<seq>.parquet`: the task's non-cancelled annotations as they were in that run;
- `watermark.json`: the Label Studio project id, the newest task `updated_at` collected, and the tasks seen at
  that edge (so a re-read safety window never produces work twice).

The current table is, for every task, the rows of the newest part that holds it: an edited annotation is
replaced, a deleted one disappears. Parts are merged once there are many (compaction), which is the only time
history is rewritten.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from labelflow.integrations.object_store import ObjectStoreError
from labelflow.tasks.ports import ObjectStorePort
from labelflow.tasks.spec import S3Location
from labelflow.tasks.timestamps import parse_time

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow and the table schemas (labelflow.tasks.annotations, which loads the agreement statistics: scipy, pandas)
# are imported by the functions that read or write parts: the collect shortcut reads only the watermark, and must
# answer "nothing changed" without them.

COMPACT_AFTER_PARTS = 48
PARQUET = "application/vnd.apache.parquet"


@dataclass
class Watermark:
    """Where the last successful collection stopped."""

    project_id: int | None = None
    updated_at: str | None = None  # Label Studio's own timestamp string of the newest task collected
    edge: dict[str, str] = field(default_factory=dict)  # task id -> updated_at, for tasks the next run re-reads
    read_at: str | None = None  # Label Studio's clock when the last export started
    seq: int = 0
    collected_at: float = 0.0

    def to_json(self) -> bytes:
        """Serialized form."""
        return json.dumps(self.__dict__, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, payload: bytes) -> Watermark:
        """Parse the stored form (fields written by other versions are ignored)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in json.loads(payload).items() if k in known})


@dataclass
class CurrentTable:
    """The current collected state of a project: one row per live task and one per live annotation."""

    tasks: pa.Table
    annotations: pa.Table
    parts: int


def _read_parquet(store: ObjectStorePort, bucket: str, key: str, schema: pa.Schema) -> pa.Table:
    from labelflow.tasks.tables import conform, read_parquet

    return conform(read_parquet(store.get_bytes(bucket, key)), schema)


def _latest_per_task(table: pa.Table) -> pa.Table:
    """Keep, for each task id, only the row(s) of its highest seq."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return table
    newest = table.group_by("task_id").aggregate([("seq", "max")]).rename_columns(["task_id", "newest_seq"])
    joined = table.join(newest, "task_id")
    return joined.filter(pc.equal(joined["seq"], joined["newest_seq"])).drop_columns(["newest_seq"])


class AnnotationStore:
    """Reads and appends a project's collected annotations under its state location."""

    def __init__(self, store: ObjectStorePort, state: S3Location) -> None:
        self.store = store
        self.state = state
        self.bucket = state.bucket
        self.tasks_prefix = state.join("collect", "tasks") + "/"
        self.annotations_prefix = state.join("collect", "annotations") + "/"
        self.watermark_key = state.join("collect", "watermark.json")
        self.routed_key = state.join("collect", "routed.json")

    def watermark(self) -> Watermark:
        """The stored watermark, or an empty one before the first collection."""
        try:
            return Watermark.from_json(self.store.get_bytes(self.bucket, self.watermark_key))
        except ObjectStoreError as exc:
            if exc.not_found:
                return Watermark()
            raise

    def save_watermark(self, watermark: Watermark) -> None:
        """Record a successful collection (written after its parts, so a crash only means re-reading)."""
        self.store.put_bytes(self.bucket, self.watermark_key, watermark.to_json(), "application/json")

    def routed(self) -> dict[int, int]:
        """Tasks sent back for more annotations: task id -> the overlap asked for (exports do not carry it)."""
        try:
            return {int(k): int(v) for k, v in json.loads(self.store.get_bytes(self.bucket, self.routed_key)).items()}
        except ObjectStoreError as exc:
            if exc.not_found:
                return {}
            raise

    def save_routed(self, routed: dict[int, int]) -> None:
        """Record the overlap asked for each routed task."""
        payload = json.dumps({str(k): v for k, v in sorted(routed.items())}).encode("utf-8")
        self.store.put_bytes(self.bucket, self.routed_key, payload, "application/json")

    def next_seq(self, watermark: Watermark) -> int:
        """A sequence number greater than every part written so far."""
        return max(time.time_ns(), watermark.seq + 1)

    def append(self, seq: int, tasks: pa.Table, annotations: pa.Table) -> None:
        """Write one collection's parts: annotations first, then tasks (a task part makes its annotations live)."""
        from labelflow.tasks.annotations import ANNOTATION_SCHEMA, TASK_SCHEMA
        from labelflow.tasks.tables import conform

        self.store.ensure_bucket(self.bucket)
        self._put(f"{self.annotations_prefix}part-{seq:020d}.parquet", conform(annotations, ANNOTATION_SCHEMA))
        self._put(f"{self.tasks_prefix}part-{seq:020d}.parquet", conform(tasks, TASK_SCHEMA))

    def _put(self, key: str, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self.store.put_bytes(self.bucket, key, buffer.getvalue(), content_type=PARQUET)

    def _parts(self, prefix: str) -> dict[int, str]:
        parts = {}
        for obj in self.store.list_objects(self.bucket, prefix):
            name = obj.key.removeprefix(prefix)
            if name.startswith("part-") and name.endswith(".parquet"):
                parts[int(name.removeprefix("part-").removesuffix(".parquet"))] = obj.key
        return parts

    def load(self, compact: bool = True) -> CurrentTable:
        """The current table; merges the parts into one when there are many."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from labelflow.tasks.annotations import ANNOTATION_SCHEMA, TASK_SCHEMA

        task_parts = self._parts(self.tasks_prefix)
        annotation_parts = self._parts(self.annotations_prefix)
        # A task part written without its annotation part cannot happen (annotations go first); an annotation
        # part without a task part is an interrupted write and is ignored until a later run replaces it.
        seqs = sorted(task_parts)
        task_tables = [_read_parquet(self.store, self.bucket, task_parts[s], TASK_SCHEMA) for s in seqs]
        annotation_tables = [
            _read_parquet(self.store, self.bucket, annotation_parts[s], ANNOTATION_SCHEMA)
            for s in seqs
            if s in annotation_parts
        ]
        all_tasks = pa.concat_tables(task_tables) if task_tables else TASK_SCHEMA.empty_table()
        all_annotations = pa.concat_tables(annotation_tables) if annotation_tables else ANNOTATION_SCHEMA.empty_table()
        tasks = _latest_per_task(all_tasks)
        live = tasks.filter(pc.invert(tasks["deleted"])).select(["task_id", "seq"])
        # Keep an annotation row when its part is the newest one of its (live) task. A lookup instead of a join:
        # Arrow's hash join cannot carry the nested `regions` column.
        position = pc.index_in(all_annotations["task_id"], value_set=live["task_id"])
        newest_seq = pc.take(live["seq"], position)
        annotations = all_annotations.filter(pc.fill_null(pc.equal(all_annotations["seq"], newest_seq), False))
        annotations = annotations.sort_by([("task_id", "ascending"), ("annotation_id", "ascending")])
        tasks = tasks.sort_by([("task_id", "ascending")])
        if compact and len(seqs) > COMPACT_AFTER_PARTS:
            self._compact(seqs, task_parts, annotation_parts, tasks, annotations)
        return CurrentTable(tasks=tasks, annotations=annotations, parts=len(seqs))

    def _compact(
        self,
        seqs: list[int],
        task_parts: dict[int, str],
        annotation_parts: dict[int, str],
        tasks: pa.Table,
        annotations: pa.Table,
    ) -> None:
        """Replace many parts with one holding the current state (written before the old parts are deleted)."""
        import pyarrow as pa

        newest = seqs[-1]
        # Every live row is rewritten under the newest seq, so the merged part wins over nothing but itself.
        tasks = tasks.set_column(
            tasks.schema.get_field_index("seq"), "seq", pa.array([newest] * tasks.num_rows, pa.int64())
        )
        annotations = annotations.set_column(
            annotations.schema.get_field_index("seq"), "seq", pa.array([newest] * annotations.num_rows, pa.int64())
        )
        self.append(newest, tasks, annotations)
        for seq in seqs[:-1]:
            self.store.delete(self.bucket, task_parts[seq])
            if seq in annotation_parts:
                self.store.delete(self.bucket, annotation_parts[seq])

    def reset(self) -> None:
        """Forget everything collected (used when the Label Studio project was replaced)."""
        for prefix in (self.tasks_prefix, self.annotations_prefix):
            for obj in list(self.store.list_objects(self.bucket, prefix)):
                self.store.delete(self.bucket, obj.key)
        for key in (self.watermark_key, self.routed_key):
            try:
                self.store.delete(self.bucket, key)
            except ObjectStoreError as exc:
                if not exc.not_found:
                    raise


def edge_of(task_times: dict[int, str], since: str) -> dict[str, str]:
    """The tasks the next run re-reads (updated after `since`), to recognise them unchanged."""
    start = parse_time(since)
    assert start is not None
    edge = {}
    for task_id, stamp in task_times.items():
        moment = parse_time(stamp)
        if moment is not None and moment > start:
            edge[str(task_id)] = stamp
    return edge


def next_window_start(newest: str | None, read_at: str | None, window_seconds: float) -> str | None:
    """Where the next run starts reading: the newest collected change, or earlier if the last read was recent.

    An annotation saved in a transaction that commits late carries an `updated_at` older than its commit. Such a
    transaction started before the export did, so `read_at - window` bounds it: tasks are re-read only while the
    last read is younger than the window, and a quiet project re-reads nothing.
    """
    from datetime import timedelta

    newest_time = parse_time(newest)
    if newest_time is None:
        return None
    read_time = parse_time(read_at)
    start: datetime = (
        newest_time if read_time is None else min(newest_time, read_time - timedelta(seconds=window_seconds))
    )
    return start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def window_start(watermark: Watermark, window_seconds: float) -> str | None:
    """The Label Studio filter value for 'updated after' of the next collection."""
    return next_window_start(watermark.updated_at, watermark.read_at, window_seconds)
