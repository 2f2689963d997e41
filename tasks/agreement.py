"""Inter-annotator agreement: Krippendorff's alpha, Fleiss' and Cohen's kappa, box IoU matching, span F1.

All functions are pure and vectorised (NumPy/pandas), so they run on a million annotation rows in seconds.
Classification inputs are tidy frames with columns `task_id`, `annotator_id`, `label`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment


def mean_or_none(values: Sequence[Any] | pd.Series) -> float | None:
    """The mean of the numeric, non-missing values; None when there are none (a metric with no evidence)."""
    numbers = pd.to_numeric(
        pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values, errors="coerce"
    ).dropna()
    return float(numbers.mean()) if len(numbers) else None


def category_counts(votes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """(items x categories count matrix, task ids of the rows, category values) of classification votes."""
    task_codes, task_ids = pd.factorize(votes["task_id"], sort=True)
    label_codes, labels = pd.factorize(votes["label"], sort=True)
    n_items, n_labels = len(task_ids), len(labels)
    flat = np.bincount(task_codes * n_labels + label_codes, minlength=n_items * n_labels)
    return flat.reshape(n_items, n_labels).astype(np.float64), np.asarray(task_ids), list(labels)


def pairable_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The rows of an items x categories count matrix with two or more values, their value counts m and the total n.

    Krippendorff's alpha pairs values within an item, so an item with fewer than two values does not count.
    """
    m = counts.sum(axis=1)
    pairable = m >= 2
    counts, m = counts[pairable], m[pairable]
    return counts, m, m.sum()


def krippendorff_alpha_nominal(counts: np.ndarray) -> float:
    """Krippendorff's alpha for nominal data from an items x categories count matrix (missing values allowed)."""
    counts, m, n = pairable_counts(counts)
    if n <= 1:
        return math.nan
    observed = ((m**2 - (counts**2).sum(axis=1)) / (m - 1)).sum()
    n_c = counts.sum(axis=0)
    expected = n**2 - (n_c**2).sum()
    if expected == 0:
        return 1.0 if observed == 0 else math.nan
    return float(1.0 - (n - 1) * observed / expected)


def per_item_pairwise_agreement(counts: np.ndarray) -> np.ndarray:
    """Share of agreeing annotator pairs per item (Fleiss' P_i); NaN for items with fewer than two votes."""
    m = counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m >= 2, ((counts**2).sum(axis=1) - m) / (m * (m - 1)), np.nan)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa; items may have different numbers of raters (each item's P_i uses its own count)."""
    m = counts.sum(axis=1)
    rated = m >= 2
    if not rated.any():
        return math.nan
    counts = counts[rated]
    p_bar = float(np.mean(per_item_pairwise_agreement(counts)))
    p_c = counts.sum(axis=0) / counts.sum()
    p_e = float((p_c**2).sum())
    if p_e == 1.0:
        return 1.0 if p_bar == 1.0 else math.nan
    return (p_bar - p_e) / (1.0 - p_e)


def pairwise_cohen_kappa(votes: pd.DataFrame, min_shared: int = 1) -> pd.DataFrame:
    """Cohen's kappa for every pair of annotators on the tasks both labeled (one row per pair)."""
    columns = ["annotator_a", "annotator_b", "shared_tasks", "observed_agreement", "cohen_kappa"]
    slim = votes[["task_id", "annotator_id", "label"]].drop_duplicates(["task_id", "annotator_id"])
    pairs = slim.merge(slim, on="task_id", suffixes=("_a", "_b"))
    pairs = pairs[pairs["annotator_id_a"] < pairs["annotator_id_b"]]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    key = ["annotator_id_a", "annotator_id_b"]
    pairs = pairs.assign(same=(pairs["label_a"] == pairs["label_b"]).astype(np.float64))
    summary = pairs.groupby(key).agg(shared_tasks=("same", "size"), observed_agreement=("same", "mean"))
    marg_a = pairs.groupby([*key, "label_a"]).size().rename("count_a")
    marg_b = pairs.groupby([*key, "label_b"]).size().rename("count_b")
    marg_a.index = marg_a.index.set_names([*key, "label"])
    marg_b.index = marg_b.index.set_names([*key, "label"])
    chance = marg_a.to_frame().join(marg_b.to_frame(), how="inner")
    chance = (chance["count_a"] * chance["count_b"]).groupby(level=key).sum()
    summary["expected"] = chance.reindex(summary.index).fillna(0.0) / summary["shared_tasks"] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = (summary["observed_agreement"] - summary["expected"]) / (1.0 - summary["expected"])
    # Both annotators always used the same single class: agreement is perfect but kappa is undefined (0/0).
    summary["cohen_kappa"] = kappa.where(
        summary["expected"] < 1.0, np.where(summary["observed_agreement"] == 1.0, 1.0, np.nan)
    )
    summary = summary[summary["shared_tasks"] >= min_shared].reset_index()
    summary = summary.rename(columns={"annotator_id_a": "annotator_a", "annotator_id_b": "annotator_b"})
    return summary[columns]


def kappa_headline(pairwise: pd.DataFrame, min_shared: int) -> dict[str, Any]:
    """The headline Cohen's kappa: the mean over annotator pairs weighted by their shared tasks.

    Pairs sharing fewer than `min_shared` tasks are left out and counted: a pair who met on one task has a kappa of
    exactly 0 or 1, and an unweighted mean let one stray annotation halve a project's figure (issue 18).
    """
    shared = pd.to_numeric(pairwise["shared_tasks"], errors="coerce").fillna(0)
    kappa = pd.to_numeric(pairwise["cohen_kappa"], errors="coerce")
    enough = shared >= min_shared
    kept = enough & kappa.notna()
    weights = shared[kept]
    value = float((kappa[kept] * weights).sum() / weights.sum()) if kept.any() else None
    return {
        "mean_cohen_kappa": value,
        "cohen_kappa_pairs": int(kept.sum()),
        "cohen_kappa_pairs_left_out": int((~enough).sum()),
    }


def cohen_kappa(labels_a: Sequence[Any], labels_b: Sequence[Any]) -> float:
    """Cohen's kappa of two equally long label sequences."""
    frame = pd.DataFrame(
        {
            "task_id": list(range(len(labels_a))) * 2,
            "annotator_id": [0] * len(labels_a) + [1] * len(labels_b),
            "label": list(labels_a) + list(labels_b),
        }
    )
    result = pairwise_cohen_kappa(frame)
    return float(result["cohen_kappa"].iloc[0]) if len(result) else math.nan


# --- boxes --------------------------------------------------------------------------------------------------
def box_iou(a: dict[str, float], b: dict[str, float]) -> float:
    """Intersection over union of two axis-aligned boxes {x, y, width, height} (rotation is ignored)."""
    ax2, ay2 = a["x"] + a["width"], a["y"] + a["height"]
    bx2, by2 = b["x"] + b["width"], b["y"] + b["height"]
    iw = max(0.0, min(ax2, bx2) - max(a["x"], b["x"]))
    ih = max(0.0, min(ay2, by2) - max(a["y"], b["y"]))
    inter = iw * ih
    union = a["width"] * a["height"] + b["width"] * b["height"] - inter
    return inter / union if union > 0 else 0.0


def match_boxes(
    boxes_a: list[dict[str, Any]], boxes_b: list[dict[str, Any]], iou_threshold: float = 0.5
) -> list[tuple[int, int, float]]:
    """Optimal one-to-one matching of same-label boxes (Hungarian), keeping pairs with IoU >= threshold."""
    if not boxes_a or not boxes_b:
        return []
    iou = np.zeros((len(boxes_a), len(boxes_b)))
    for i, a in enumerate(boxes_a):
        for j, b in enumerate(boxes_b):
            if a.get("label") == b.get("label"):
                iou[i, j] = box_iou(a, b)
    rows, cols = linear_sum_assignment(-iou)
    return [(int(i), int(j), float(iou[i, j])) for i, j in zip(rows, cols, strict=True) if iou[i, j] >= iou_threshold]


def box_pair_agreement(
    boxes_a: list[dict[str, Any]], boxes_b: list[dict[str, Any]], iou_threshold: float = 0.5
) -> tuple[float, float]:
    """(F1 of matched boxes, mean IoU of the matched pairs) between two annotators' boxes on one image."""
    if not boxes_a and not boxes_b:
        return 1.0, math.nan
    matches = match_boxes(boxes_a, boxes_b, iou_threshold)
    f1 = 2 * len(matches) / (len(boxes_a) + len(boxes_b))
    mean_iou = float(np.mean([m[2] for m in matches])) if matches else math.nan
    return f1, mean_iou


# --- spans ---------------------------------------------------------------------------------------------------
def span_key(span: dict[str, Any]) -> tuple[int, int, str]:
    """Identity of a span for exact matching."""
    return int(span["start"]), int(span["end"]), str(span["label"])


def span_pair_f1(spans_a: list[dict[str, Any]], spans_b: list[dict[str, Any]]) -> float:
    """Span-level F1 between two annotators (exact start, end and label)."""
    if not spans_a and not spans_b:
        return 1.0
    set_a = {span_key(s) for s in spans_a}
    set_b = {span_key(s) for s in spans_b}
    return 2 * len(set_a & set_b) / (len(set_a) + len(set_b))


def region_task_agreement(
    regions_by_annotator: dict[int, list[dict[str, Any]]], kind: str, iou_threshold: float = 0.5
) -> tuple[float, float]:
    """(mean pairwise F1, mean matched IoU) over every annotator pair on one task; NaN with fewer than two."""
    annotators = sorted(regions_by_annotator)
    f1s: list[float] = []
    ious: list[float] = []
    for i, a in enumerate(annotators):
        for b in annotators[i + 1 :]:
            if kind == "boxes":
                f1, iou = box_pair_agreement(regions_by_annotator[a], regions_by_annotator[b], iou_threshold)
                f1s.append(f1)
                if not math.isnan(iou):
                    ious.append(iou)
            else:
                f1s.append(span_pair_f1(regions_by_annotator[a], regions_by_annotator[b]))
    if not f1s:
        return math.nan, math.nan
    return float(np.mean(f1s)), (float(np.mean(ious)) if ious else math.nan)


def pairwise_region_f1(regions: pd.DataFrame, kind: str, iou_threshold: float = 0.5) -> pd.DataFrame:
    """Mean F1 between every pair of annotators over the tasks both annotated (boxes or spans)."""
    by_task: dict[int, dict[int, list[dict[str, Any]]]] = {}
    for task_id, annotator_id, task_regions in regions[["task_id", "annotator_id", "regions"]].itertuples(index=False):
        by_task.setdefault(int(task_id), {})[int(annotator_id)] = list(task_regions) if task_regions is not None else []
    scores: dict[tuple[int, int], list[float]] = {}
    for per_annotator in by_task.values():
        annotators = sorted(per_annotator)
        for i, a in enumerate(annotators):
            for b in annotators[i + 1 :]:
                if kind == "boxes":
                    f1 = box_pair_agreement(per_annotator[a], per_annotator[b], iou_threshold)[0]
                else:
                    f1 = span_pair_f1(per_annotator[a], per_annotator[b])
                scores.setdefault((a, b), []).append(f1)
    rows = [
        {"annotator_a": a, "annotator_b": b, "shared_tasks": len(v), "mean_f1": float(np.mean(v))}
        for (a, b), v in sorted(scores.items())
    ]
    return pd.DataFrame(rows, columns=["annotator_a", "annotator_b", "shared_tasks", "mean_f1"])
