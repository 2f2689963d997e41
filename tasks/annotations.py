"""Label Studio tasks (export JSON) -> one tidy row per annotation, with labels in a task-type-appropriate form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from labelflow.tasks.judge_agreement import predicted_labels, prediction_label
from labelflow.tasks.spec import ProjectSpec
from labelflow.tasks.timestamps import parse_time

# The fields are labelflow.tasks.task_types.regions.REGION_FIELDS, in the same order.
REGION_TYPE = pa.struct(
    [
        ("label", pa.string()),
        # NER spans: character offsets into the task text (end exclusive) and the covered text
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("text", pa.string()),
        # boxes: top-left corner, size and rotation (degrees), in source image pixels
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("width", pa.float64()),
        ("height", pa.float64()),
        ("rotation", pa.float64()),
    ]
)
TIMESTAMP = pa.timestamp("us", tz="UTC")
ANNOTATION_SCHEMA = pa.schema(
    [
        ("project_id", pa.int64()),
        ("task_id", pa.int64()),
        ("annotation_id", pa.int64()),
        ("source_uri", pa.string()),
        ("content_sha256", pa.string()),
        ("annotator_id", pa.int64()),
        ("annotator_email", pa.string()),
        ("label", pa.string()),  # classification: the chosen class; null for spans and boxes
        ("regions", pa.list_(REGION_TYPE)),  # NER spans or detection boxes; null for classification
        ("lead_time_seconds", pa.float64()),
        ("created_at", TIMESTAMP),
        ("updated_at", TIMESTAMP),
        ("prediction_model_version", pa.string()),  # the pre-label shown to the annotator, if any
        ("ground_truth", pa.bool_()),
        ("problem", pa.string()),  # why this annotation cannot be used as it is (e.g. a label outside the set)
        ("seq", pa.int64()),  # the collection that wrote this row
        # Record types (preference, ranking, grading, SFT): the structured answer as JSON; `label` is its summary.
        # Tables written before this column existed read it as null.
        ("answer", pa.string()),
        ("prediction_label", pa.string()),  # the summary label of the prediction the annotator started from
        # The spec's guideline version (SHA-256) in effect when the annotation was saved (tasks/guidelines.py); null
        # without guidelines. Tables written before this column existed read it as null and are stamped at judging.
        ("guideline_version", pa.string()),
    ]
)
TASK_SCHEMA = pa.schema(
    [
        ("project_id", pa.int64()),
        ("task_id", pa.int64()),
        ("task_updated_at", TIMESTAMP),
        ("source_uri", pa.string()),
        ("content_sha256", pa.string()),
        ("text", pa.string()),  # the task text (text tasks), for span checks and training exports
        ("image_width", pa.int64()),
        ("image_height", pa.int64()),
        # Audio tasks: what cleaning decoded (seconds, Hz, channels). Tables written before read them as null.
        ("audio_duration", pa.float64()),
        ("audio_sample_rate", pa.int64()),
        ("audio_channels", pa.int64()),
        ("overlap", pa.int64()),
        ("annotations", pa.int64()),  # non-cancelled annotations
        ("cancelled", pa.int64()),
        ("deleted", pa.bool_()),  # the task no longer exists in Label Studio
        ("seq", pa.int64()),
        # Record types: the task's record fields as JSON (prompt, responses, models, gold, generation lineage),
        # with its place in the source file (record_index, record_id).
        ("record", pa.string()),
        # The task's pre-labels as JSON [{model_version, label}]: annotators are compared with each judge.
        ("predictions", pa.string()),
    ]
)


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


@dataclass
class NormalizedTask:
    """One task's current state: its row for the task table and one row per non-cancelled annotation."""

    task: dict[str, Any]
    annotations: list[dict[str, Any]] = field(default_factory=list)


class AnnotationNormalizer:
    """Turns exported Label Studio tasks into table rows for one project spec."""

    def __init__(self, spec: ProjectSpec, project_id: int, users: dict[int, str], from_name: str) -> None:
        self.spec = spec
        self.project_id = project_id
        self.users = users
        self.from_name = from_name
        self.labels = set(spec.labels)
        self.task_type = spec.task_type

    def task(self, exported: dict[str, Any], seq: int) -> NormalizedTask:
        """Rows for one exported task (with its `annotations` list)."""
        data = exported.get("data") or {}
        width = _int_or_none(data.get("image_width"))
        height = _int_or_none(data.get("image_height"))
        annotations = exported.get("annotations") or []
        kept = [a for a in annotations if not a.get("was_cancelled")]
        task_row = {
            "project_id": self.project_id,
            "task_id": int(exported["id"]),
            "task_updated_at": parse_time(exported.get("updated_at")),
            "source_uri": data.get("source_uri")
            or (data.get(self.task_type.data_key) if self.task_type.stored_media else None),
            "content_sha256": data.get("content_sha256"),
            "text": data.get("text") if self.task_type.media == "text" else None,
            "image_width": width,
            "image_height": height,
            "audio_duration": _float_or_none(data.get("audio_duration")),
            "audio_sample_rate": _int_or_none(data.get("audio_sample_rate")),
            "audio_channels": _int_or_none(data.get("audio_channels")),
            "overlap": _int_or_none(exported.get("overlap")),
            "annotations": len(kept),
            "cancelled": len(annotations) - len(kept),
            "deleted": False,
            "seq": seq,
            "record": self._record(data) if self.task_type.media == "record" else None,
            "predictions": self._predictions(exported),
        }
        rows = [self.annotation(task_row, annotation, width, height, seq, data) for annotation in kept]
        return NormalizedTask(task=task_row, annotations=rows)

    def annotation(
        self,
        task_row: dict[str, Any],
        annotation: dict[str, Any],
        width: int | None,
        height: int | None,
        seq: int,
        task_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One annotation row; labels outside the spec's set are kept and marked in `problem`, never dropped."""
        completed_by = annotation.get("completed_by")
        if isinstance(completed_by, dict):  # some export formats expand the user
            annotator_id = _int_or_none(completed_by.get("id"))
            email = completed_by.get("email") or self.users.get(annotator_id or -1)
        else:
            annotator_id = _int_or_none(completed_by)
            email = self.users.get(annotator_id or -1)
        prediction = annotation.get("prediction") or {}
        result = annotation.get("result") or []
        answer = None
        if self.task_type.structured_answers:
            mine = [item for item in result if self.task_type.owns_result(item, self.from_name)]
            label, answer, problems = self.task_type.parse_answer(mine, task_data or {}, self.spec)
            regions = None
        else:
            label, regions, problems = self._labels(result, width, height)
        return {
            "project_id": self.project_id,
            "task_id": task_row["task_id"],
            "annotation_id": int(annotation["id"]),
            "source_uri": task_row["source_uri"],
            "content_sha256": task_row["content_sha256"],
            "annotator_id": annotator_id,
            "annotator_email": email,
            "label": label,
            "regions": regions,
            "lead_time_seconds": float(annotation["lead_time"]) if annotation.get("lead_time") is not None else None,
            "created_at": parse_time(annotation.get("created_at")),
            "updated_at": parse_time(annotation.get("updated_at")),
            "prediction_model_version": prediction.get("model_version") if isinstance(prediction, dict) else None,
            "ground_truth": bool(annotation.get("ground_truth")),
            "problem": "; ".join(problems) if problems else None,
            "seq": seq,
            "answer": json.dumps(answer, ensure_ascii=False, sort_keys=True) if answer is not None else None,
            "prediction_label": prediction_label(prediction, task_data or {}, self.spec) if prediction else None,
            "guideline_version": None,  # stamped by the collect step, which holds the guideline history
        }

    def _predictions(self, exported: dict[str, Any]) -> str | None:
        """The task's predictions as JSON [{model_version, label}], or None without any."""
        found = [
            {"model_version": row["model_version"], "label": row["label"]}
            for row in predicted_labels(exported, self.spec)
        ]
        return json.dumps(found, ensure_ascii=False) if found else None

    def _record(self, data: dict[str, Any]) -> str:
        """A record task's fields and lineage as JSON, for judging and exports."""
        keys = (*self.task_type.record_data_keys, "record_index", "record_id")  # type: ignore[attr-defined]
        record = {key: data[key] for key in keys if data.get(key) is not None}
        return json.dumps(record, ensure_ascii=False, sort_keys=True)

    def _labels(
        self, result: list[dict[str, Any]], width: int | None, height: int | None
    ) -> tuple[str | None, list[dict[str, Any]] | None, list[str]]:
        """(class label, regions, problems) from a Label Studio result list, read by the spec's task type."""
        mine = [item for item in result if item.get("from_name") == self.from_name]
        return self.task_type.parse_result(mine, self.labels, width, height)


def annotations_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Annotation rows as an Arrow table with the fixed schema."""
    return pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA)


def tasks_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Task rows as an Arrow table with the fixed schema."""
    return pa.Table.from_pylist(rows, schema=TASK_SCHEMA)
