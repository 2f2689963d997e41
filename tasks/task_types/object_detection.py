"""Object detection: labeled boxes on an image, in source-image pixels; exported as COCO."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from labelflow.tasks.task_types.base import FROM_NAME, label_options
from labelflow.tasks.task_types.regions import RegionTask, nothing_control

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec


NOTHING_TEXT = "No objects in this image"


class ObjectDetection(RegionTask):
    """Rectangles on an image, each with one class label."""

    name: ClassVar[str] = "object-detection"
    media = "image"
    region_kind = "boxes"
    consensus_method = "iou-clusters"
    export_file = "coco.json"
    expectation_suite = "object-detection"

    def label_config(self, labels: list[str]) -> str:
        """A `<RectangleLabels>` control over a zoomable `<Image>`, and the "no objects" answer."""
        return (
            '<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
            f'  <RectangleLabels name="{FROM_NAME}" toName="image">'
            f"{label_options('Label', labels)}\n  </RectangleLabels>\n"
            f"{nothing_control('image', NOTHING_TEXT)}</View>"
        )

    def region_geometry(
        self, item: dict[str, Any], value: dict[str, Any], region: dict[str, Any], width: int | None, height: int | None
    ) -> list[str]:
        """Label Studio's percentages as pixels of the source image (its size from the result, else the task)."""
        problems = []
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
        return problems

    def merge(self, per_annotator: dict[int, list[dict[str, Any]]], iou_threshold: float) -> tuple[list, float]:
        """Boxes clustered by IoU across annotators, each cluster's median box and majority label."""
        from labelflow.tasks.consensus import box_consensus

        return box_consensus(per_annotator, iou_threshold)

    def agreement_metrics(
        self, consensus: pd.DataFrame, agreements: list[float], ious: list[float], metrics: dict[str, Any]
    ) -> None:
        """Mean IoU of matched boxes (also per task) and mean pairwise box F1."""
        from labelflow.tasks.agreement import mean_or_none

        consensus["matched_iou"] = ious
        metrics["mean_matched_iou"] = mean_or_none(ious)
        metrics["mean_pairwise_box_f1"] = mean_or_none(agreements)

    @property
    def consensus_columns(self) -> tuple[str, ...]:
        """The image size and its boxes."""
        return ("image_width", "image_height", "regions")

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """coco.json: images, box annotations ([x, y, width, height] in pixels) and categories numbered from 1."""
        from labelflow.tasks.dataset import _plain  # numpy scalars as JSON numbers, NaN as null

        path = folder / self.export_file
        categories = [{"id": i, "name": label} for i, label in enumerate(spec.labels, start=1)]
        category = {c["name"]: c["id"] for c in categories}
        images, boxes = [], []
        for task_id, uri, width, height, regions in rows[
            ["task_id", "source_uri", "image_width", "image_height", "regions"]
        ].itertuples(index=False):
            images.append({"id": int(task_id), "file_name": uri, "width": _plain(width), "height": _plain(height)})
            for region in regions or []:
                x, y, w, h = (float(region[k]) for k in ("x", "y", "width", "height"))
                boxes.append(
                    {
                        "id": len(boxes) + 1,
                        "image_id": int(task_id),
                        "category_id": category[region["label"]],
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        coco = {"info": {"description": spec.name}, "images": images, "annotations": boxes, "categories": categories}
        path.write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
        return path
