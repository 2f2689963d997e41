"""Label Studio tasks (export JSON) -> one tidy row per annotation, with labels in a task-type-appropriate form."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from labelflow.tasks.spec import ProjectSpec

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
        ("overlap", pa.int64()),
        ("annotations", pa.int64()),  # non-cancelled annotations
        ("cancelled", pa.int64()),
        ("deleted", pa.bool_()),  # the task no longer exists in Label Studio
        ("seq", pa.int64()),
    ]
)


def parse_time(value: str | None) -> datetime | None:
    """Label Studio's ISO timestamps (with a trailing Z) as aware UTC datetimes."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
            or (data.get(self.spec.data_key) if self.spec.modality == "image" else None),
            "content_sha256": data.get("content_sha256"),
            "text": data.get("text") if self.spec.modality == "text" else None,
            "image_width": width,
            "image_height": height,
            "overlap": _int_or_none(exported.get("overlap")),
            "annotations": len(kept),
            "cancelled": len(annotations) - len(kept),
            "deleted": False,
            "seq": seq,
        }
        rows = [self.annotation(task_row, annotation, width, height, seq) for annotation in kept]
        return NormalizedTask(task=task_row, annotations=rows)

    def annotation(
        self, task_row: dict[str, Any], annotation: dict[str, Any], width: int | None, height: int | None, seq: int
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
        label, regions, problems = self._labels(annotation.get("result") or [], width, height)
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
        }

    def _labels(
        self, result: list[dict[str, Any]], width: int | None, height: int | None
    ) -> tuple[str | None, list[dict[str, Any]] | None, list[str]]:
        """(class label, regions, problems) from a Label Studio result list."""
        problems: list[str] = []
        mine = [item for item in result if item.get("from_name") == self.from_name]
        if self.spec.task in ("text-classification", "image-classification"):
            choices = [c for item in mine for c in (item.get("value") or {}).get("choices", [])]
            if not choices:
                return None, None, ["no class chosen"]
            if len(choices) > 1:
                problems.append(f"{len(choices)} classes chosen: {choices}")
            label = unicodedata.normalize("NFC", str(choices[0]))
            if label not in self.labels:
                problems.append(f"label {label!r} is not in the spec's label set")
            return label, None, problems
        regions = []
        for item in mine:
            value = item.get("value") or {}
            names = value.get("labels") or value.get("rectanglelabels") or []
            if len(names) != 1:
                problems.append(f"region {item.get('id')!r} has {len(names)} labels")
            name = unicodedata.normalize("NFC", str(names[0])) if names else None
            if name is not None and name not in self.labels:
                problems.append(f"label {name!r} is not in the spec's label set")
            region = dict.fromkeys(REGION_TYPE.names)
            region["label"] = name
            if self.spec.task == "ner":
                region.update(start=_int_or_none(value.get("start")), end=_int_or_none(value.get("end")))
                region["text"] = value.get("text")
                if region["start"] is None or region["end"] is None:
                    problems.append(f"span {item.get('id')!r} has no start/end offsets")
            else:
                image_w = item.get("original_width") or width
                image_h = item.get("original_height") or height
                if not image_w or not image_h:
                    problems.append(f"box {item.get('id')!r}: image size unknown, coordinates left in percent")
                    image_w = image_h = 100
                region.update(
                    x=float(value.get("x", 0.0)) * image_w / 100.0,
                    y=float(value.get("y", 0.0)) * image_h / 100.0,
                    width=float(value.get("width", 0.0)) * image_w / 100.0,
                    height=float(value.get("height", 0.0)) * image_h / 100.0,
                    rotation=float(value.get("rotation", 0.0) or 0.0),
                )
            regions.append(region)
        return None, regions, problems


def annotations_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Annotation rows as an Arrow table with the fixed schema."""
    return pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA)


def tasks_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Task rows as an Arrow table with the fixed schema."""
    return pa.Table.from_pylist(rows, schema=TASK_SCHEMA)
