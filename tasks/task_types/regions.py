"""Region labeling: each annotation is a list of labeled regions (text spans or image boxes), judged by matching."""

from __future__ import annotations

import math
import unicodedata
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from labelflow.tasks.task_types.base import TaskType

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec

# The fields of one region in annotation and consensus rows (the Arrow struct in tasks/annotations.py).
REGION_FIELDS = ("label", "start", "end", "text", "x", "y", "width", "height", "rotation")
# The control of the explicit "nothing to mark" answer. Projects refuse empty annotations (so a Submit clicked too soon
# is not taken for "no regions"), so a text or image without any entity or object needs an answer of its own. Its
# results are not the labeling control's, so they are read as an annotation without regions.
NOTHING_NAME = "nothing"


def nothing_control(to_name: str, text: str) -> str:
    """The `<Choices>` line an annotator ticks to say the text or image has nothing to mark."""
    from xml.sax.saxutils import quoteattr

    return f'  <Choices name="{NOTHING_NAME}" toName="{to_name}" choice="single">\n    <Choice value={quoteattr(text)}/>\n  </Choices>\n'


def _region_lists(regions: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in regions] if regions is not None else []


class RegionTask(TaskType):
    """Spans or boxes with one label each; consensus merges matching regions across annotators."""

    region_kind: ClassVar[Literal["spans", "boxes"]]
    consensus_method: ClassVar[str]  # the `method` recorded on consensus rows

    def parse_result(
        self, items: list[dict[str, Any]], labels: set[str], width: int | None, height: int | None
    ) -> tuple[str | None, list[dict[str, Any]] | None, list[str]]:
        """One region per result item; a region without exactly one known label is kept and recorded as a problem."""
        problems: list[str] = []
        regions = []
        for item in items:
            value = item.get("value") or {}
            names = value.get("labels") or value.get("rectanglelabels") or []
            if len(names) != 1:
                problems.append(f"region {item.get('id')!r} has {len(names)} labels")
            name = unicodedata.normalize("NFC", str(names[0])) if names else None
            if name is not None and name not in labels:
                problems.append(f"label {name!r} is not in the spec's label set")
            region: dict[str, Any] = dict.fromkeys(REGION_FIELDS)
            region["label"] = name
            problems.extend(self.region_geometry(item, value, region, width, height))
            regions.append(region)
        return None, regions, problems

    def region_geometry(
        self, item: dict[str, Any], value: dict[str, Any], region: dict[str, Any], width: int | None, height: int | None
    ) -> list[str]:
        """Fill the region's position fields from a result value; returns problems."""
        raise NotImplementedError

    def merge(self, per_annotator: dict[int, list[dict[str, Any]]], iou_threshold: float) -> tuple[list, float]:
        """(consensus regions, confidence) of one task's regions by annotator."""
        raise NotImplementedError

    def judge(
        self,
        consensus: pd.DataFrame,
        votes: pd.DataFrame,
        reviews: pd.DataFrame,
        spec: ProjectSpec,
        metrics: dict[str, Any],
    ) -> tuple[pd.DataFrame, dict[str, dict[Any, Any]]]:
        """Merge regions per task; agreement is the mean pairwise region F1 between annotators."""
        import numpy as np

        from labelflow.tasks.agreement import pairwise_region_f1, region_task_agreement

        iou = spec.quality.iou_threshold
        grouped: dict[int, dict[int, list[dict[str, Any]]]] = {}
        for task_id, annotator_id, regions in votes[["task_id", "annotator_id", "regions"]].itertuples(index=False):
            grouped.setdefault(int(task_id), {})[int(annotator_id)] = _region_lists(regions)
        review_regions = {
            int(t): _region_lists(regions) for t, regions in reviews[["task_id", "regions"]].itertuples(index=False)
        }
        labels, confidences, agreements, ious, methods = [], [], [], [], []
        for task_id in consensus["task_id"]:
            per_annotator = grouped.get(int(task_id), {})
            if int(task_id) in review_regions:
                labels.append(review_regions[int(task_id)])
                confidences.append(1.0)
                methods.append("review")
            elif per_annotator:
                merged, confidence = self.merge(per_annotator, iou)
                labels.append(merged)
                confidences.append(confidence)
                methods.append(self.consensus_method)
            else:
                labels.append(None)
                confidences.append(np.nan)
                methods.append(None)
            f1, mean_iou = region_task_agreement(per_annotator, self.region_kind, iou)
            if math.isnan(f1) and int(task_id) in review_regions:
                f1 = 1.0
            agreements.append(f1)
            ious.append(mean_iou)
        consensus["label"] = None
        consensus["regions"] = labels
        consensus["confidence"] = confidences
        consensus["agreement"] = agreements
        consensus["tie"] = False
        consensus["method"] = methods
        self.agreement_metrics(consensus, agreements, ious, metrics)
        return pairwise_region_f1(votes, self.region_kind, iou), {}

    def agreement_metrics(
        self, consensus: pd.DataFrame, agreements: list[float], ious: list[float], metrics: dict[str, Any]
    ) -> None:
        """Add this type's project-level agreement figures to `metrics` (and columns to `consensus`)."""
        raise NotImplementedError

    def score_annotator(
        self, on_finished: pd.DataFrame, gold_labels: pd.Series, finished: pd.DataFrame, spec: ProjectSpec
    ) -> tuple[float | None, float | None]:
        """No gold scoring for regions; agreement is the region F1 with consensus on tasks someone else also did."""
        import numpy as np

        from labelflow.tasks.agreement import region_task_agreement

        scores = []
        for task_id, regions in on_finished[["task_id", "regions"]].itertuples(index=False):
            if finished.at[task_id, "annotations"] < 2:
                continue
            merged = {0: _region_lists(regions), 1: finished.at[task_id, "regions"] or []}
            scores.append(region_task_agreement(merged, self.region_kind, spec.quality.iou_threshold)[0])
        return None, float(np.mean(scores)) if scores else None

    def labels_used(self, rows: pd.DataFrame) -> pd.Series:
        """The label of every region of every row."""
        import pandas as pd

        return pd.Series([r["label"] for regions in rows["regions"] for r in regions or []], dtype=object)
