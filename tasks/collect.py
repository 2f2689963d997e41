"""Collect steps: pull changed tasks out of Label Studio, keep the annotation table current, judge and route back."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd
import pyarrow.compute as pc

from labelflow.integrations.object_store import ObjectStoreError
from labelflow.tasks.annotation_store import AnnotationStore, Watermark, edge_of, next_window_start, window_start
from labelflow.tasks.annotations import AnnotationNormalizer, annotations_table, parse_time, tasks_table
from labelflow.tasks.guidelines import GuidelineHistory, stamp_rows
from labelflow.tasks.ingest import check_record_owner, project_record_key, read_project_record
from labelflow.tasks.label_config import label_interface
from labelflow.tasks.ports import LabelStudioPort, ObjectStorePort
from labelflow.tasks.quality import QualityReport, gold_label_set, judge, parse_gold
from labelflow.tasks.spec import ProjectSpec, S3Location

LS_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


class CollectError(RuntimeError):
    """Collection cannot proceed; the message says what to do."""


@dataclass
class CollectStats:
    """What one collection did."""

    mode: str = "incremental"  # or "full"
    exported_tasks: int = 0
    changed_tasks: int = 0
    unchanged_at_edge: int = 0
    deleted_tasks: int = 0
    annotation_rows: int = 0
    invalid_annotations: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    watermark: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class BatchTables:
    """A collected batch's tables: the tasks and annotations that were judged, and the consensus judged from them."""

    tasks: pd.DataFrame
    annotations: pd.DataFrame
    consensus: pd.DataFrame


@dataclass(frozen=True)
class BatchRecord:
    """A collected batch's lineage, kept as its `batch.json`: the project, the watermark, its quality, its place."""

    project_id: int
    label_studio_url: str
    watermark: str | None
    batch_uri: str
    quality: dict[str, Any] = field(default_factory=dict)
    project: str = ""
    collected_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The `batch.json` document, its keys in the order labelflow has always written them."""
        return {
            "project": self.project,
            "project_id": self.project_id,
            "label_studio_url": self.label_studio_url,
            "watermark": self.watermark,
            "collected_at": self.collected_at,
            "quality": self.quality,
            "batch_uri": self.batch_uri,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> BatchRecord:
        """From a `batch.json` document (keys it does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in document.items() if key in known})


@dataclass(frozen=True)
class Collection:
    """One judged collection: what was collected, the quality report, the batch's tables and its record."""

    stats: CollectStats
    report: QualityReport
    tables: BatchTables
    record: BatchRecord
    routed: int

    def summary(self) -> dict[str, Any]:
        """The run summary (`labelflow collect --json`), before validation and registration add theirs."""
        return {
            "project": self.record.project,
            "project_id": self.record.project_id,
            "label_studio_url": self.record.label_studio_url,
            "collection": self.stats.as_dict(),
            "quality": self.report.metrics,
            "annotators": self.report.annotators.to_dict("records"),
            "routed_back": self.routed,
            "report": self.record.batch_uri,
            "batch": self.record.batch_uri,
        }


def recorded_project(store: ObjectStorePort, spec: ProjectSpec) -> int:
    """The Label Studio project id that ingest recorded for this spec."""
    recorded = read_project_record(store, spec)
    if recorded is None:
        raise CollectError(
            f"no Label Studio project recorded for {spec.name!r} "
            f"(s3://{spec.state_location.bucket}/{project_record_key(spec)} is missing): run `labelflow ingest SPEC` first"
        )
    check_record_owner(recorded, spec)
    return int(recorded["project_id"])


def collect_changes(
    ls: LabelStudioPort,
    annotations: AnnotationStore,
    spec: ProjectSpec,
    project_id: int,
    full: bool = False,
    guidelines: GuidelineHistory | None = None,
) -> CollectStats:
    """Append the tasks changed since the watermark (all tasks when `full`) to the table, then move the watermark.

    With the project's guideline history, each annotation row is stamped with the version it was made under.
    """
    stats = CollectStats(mode="full" if full else "incremental")
    watermark = annotations.watermark()
    if watermark.project_id is not None and watermark.project_id != project_id:
        # The spec now points at another Label Studio project: what was collected belongs to the old one.
        annotations.reset()
        watermark = Watermark()
    if watermark.updated_at is None:
        full = True
        stats.mode = "full"
    window = spec.collect.window_seconds
    began = time.perf_counter()
    exported, read_at = ls.export_snapshot(
        project_id,
        updated_after=None if full else window_start(watermark, window),
        timeout=spec.collect.timeout_seconds,
    )
    users = ls.users()
    stats.seconds["export"] = time.perf_counter() - began
    stats.exported_tasks = len(exported)

    began = time.perf_counter()
    seq = annotations.next_seq(watermark)
    from_name = label_interface(spec).from_name
    normalizer = AnnotationNormalizer(spec, project_id, users, from_name)
    task_rows: list[dict[str, Any]] = []
    annotation_rows: list[dict[str, Any]] = []
    seen: dict[int, str] = {}
    for item in exported:
        task_id, stamp = int(item["id"]), item.get("updated_at") or ""
        seen[task_id] = stamp
        if not full and watermark.edge.get(str(task_id)) == stamp:
            stats.unchanged_at_edge += 1  # re-read inside the safety window, already collected as it is
            continue
        normalized = normalizer.task(item, seq)
        task_rows.append(normalized.task)
        annotation_rows.extend(normalized.annotations)
    if full:
        # A full read also notices tasks deleted in Label Studio since they were collected.
        current = annotations.load(compact=False).tasks
        live = current.filter(pc.invert(current["deleted"]))
        for row in live.to_pylist():
            if row["task_id"] not in seen:
                task_rows.append({**row, "deleted": True, "annotations": 0, "cancelled": 0, "seq": seq})
                stats.deleted_tasks += 1
    stats.changed_tasks = len(task_rows) - stats.deleted_tasks
    stamp_rows(annotation_rows, guidelines)
    stats.annotation_rows = len(annotation_rows)
    stats.invalid_annotations = sum(1 for row in annotation_rows if row["problem"])
    stats.seconds["normalize"] = time.perf_counter() - began

    began = time.perf_counter()
    if task_rows:
        annotations.append(seq, tasks_table(task_rows), annotations_table(annotation_rows))
    newest = max(
        [t for t in (parse_time(s) for s in seen.values()) if t is not None]
        + ([parse_time(watermark.updated_at)] if watermark.updated_at else []),
        default=None,
    )
    if newest is not None:
        newest_text = newest.strftime(LS_TIME)
        next_since = next_window_start(newest_text, read_at, window)
        assert next_since is not None
        edge = edge_of(seen, next_since)
        for task_id, stamp in edge_of({int(k): v for k, v in watermark.edge.items()}, next_since).items():
            edge.setdefault(task_id, stamp)  # unchanged tasks from earlier runs that are still inside the window
        annotations.save_watermark(
            Watermark(
                project_id=project_id,
                updated_at=newest_text,
                edge=edge,
                seq=seq,
                collected_at=time.time(),
                read_at=read_at,
            )
        )
        stats.watermark = newest_text
    stats.seconds["store"] = time.perf_counter() - began
    return stats


def load_gold(store: ObjectStorePort, spec: ProjectSpec) -> pd.DataFrame | None:
    """The spec's gold labels, if it names a file."""
    if spec.quality.gold is None:
        return None
    location = S3Location.parse(spec.quality.gold)
    try:
        payload = store.get_bytes(location.bucket, location.prefix)
    except ObjectStoreError as exc:
        if exc.not_found:
            raise CollectError(f"quality.gold: {spec.quality.gold} does not exist") from None
        raise
    return parse_gold(payload, location.prefix, gold_label_set(spec))


def load_current(annotations: AnnotationStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The project's current (tasks, annotations) tables, with the overlap routing asked for."""
    current = annotations.load()
    tasks = current.tasks.to_pandas()
    routed = annotations.routed()
    if routed:
        asked = tasks["task_id"].map(routed)
        tasks["overlap"] = asked.where(asked.notna(), tasks["overlap"])
    return tasks, current.annotations.to_pandas()


def hidden_record_fields(store: ObjectStorePort, spec: ProjectSpec) -> dict[int, str]:
    """Task id -> the JSON of its record's fields kept out of Label Studio (gold, models, lineage), from the ledger."""
    from labelflow.tasks.ledger import IngestLedger

    table = IngestLedger(store, spec.state_location).read_all()
    table = table.filter(pc.and_(pc.is_valid(table["record_hidden"]), pc.is_valid(table["task_id"])))
    columns = table.select(["task_id", "record_hidden"]).to_pydict()
    return dict(zip(columns["task_id"], columns["record_hidden"], strict=True))


def with_hidden_record_fields(store: ObjectStorePort, spec: ProjectSpec, tasks: pd.DataFrame) -> pd.DataFrame:
    """The task table with each record's hidden fields joined back into its `record` column."""
    from labelflow.tasks.task_types.record_task import merged_record

    hidden = hidden_record_fields(store, spec)
    if not hidden or "record" not in tasks.columns:
        return tasks
    merged = [
        merged_record(record, hidden.get(int(task_id)))
        for task_id, record in zip(tasks["task_id"], tasks["record"], strict=True)
    ]
    return tasks.assign(record=merged)


def judge_annotations(
    tasks: pd.DataFrame, annotations: pd.DataFrame, spec: ProjectSpec, gold: pd.DataFrame | None
) -> QualityReport:
    """Agreement, consensus, flags and annotator scores over the project's current annotation table."""
    return judge(tasks, annotations, spec, gold)


def tasks_to_route(report: QualityReport, spec: ProjectSpec) -> list[tuple[int, int]]:
    """(task id, new overlap) for flagged, finished tasks that may get one more annotation."""
    if not spec.quality.raises_overlap:  # `expert` sends flagged tasks to the review project instead
        return []
    cap = spec.quality.max_overlap or spec.overlap + 2
    flagged = report.consensus[
        report.consensus["flagged"]
        & report.consensus["finished"]
        & ~report.consensus["reviewed"]
        & (report.consensus["annotations"] >= report.consensus["required"])
        & (report.consensus["required"] < cap)
    ]
    # Only disagreement is routed: a task flagged just for an invalid annotation needs a fix, not another vote.
    disagreement = flagged["flag_reason"].str.contains("agreement|tied", regex=True, na=False)
    return [(int(t), int(r) + 1) for t, r in flagged.loc[disagreement, ["task_id", "required"]].itertuples(index=False)]


def route_back(ls: LabelStudioPort, annotations: AnnotationStore, routes: list[tuple[int, int]]) -> int:
    """Raise the overlap of low-agreement tasks so Label Studio hands them to another annotator."""
    routed = annotations.routed()
    try:
        for task_id, overlap in routes:
            ls.set_task_overlap(task_id, overlap)
            routed[task_id] = overlap
    finally:
        annotations.save_routed(routed)  # what was done is recorded even when a later call fails
    return len(routes)


def write_batch(store: ObjectStorePort, record: BatchRecord, tasks: pd.DataFrame, annotations: pd.DataFrame) -> str:
    """Keep the tables this collection judged next to its report, for audit and lineage; return the batch URI."""
    location = S3Location.parse(record.batch_uri)
    for name, frame in (("tasks", tasks), ("annotations", annotations)):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        store.put_bytes(
            location.bucket, location.join(f"{name}.parquet"), buffer.getvalue(), "application/vnd.apache.parquet"
        )
    payload = json.dumps(record.as_dict(), indent=2, ensure_ascii=False, default=str).encode("utf-8")
    store.put_bytes(location.bucket, location.join("batch.json"), payload, "application/json")
    return record.batch_uri


def read_batch(store: ObjectStorePort, batch_uri: str) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """A batch's metadata and its tables (consensus, annotations, tasks), as an audit reads them back."""
    location = S3Location.parse(batch_uri)
    meta = json.loads(store.get_bytes(location.bucket, location.join("batch.json")))
    tables = {
        name: pd.read_parquet(io.BytesIO(store.get_bytes(location.bucket, location.join(f"{name}.parquet"))))
        for name in ("consensus", "annotations", "tasks")
    }
    return meta, tables
