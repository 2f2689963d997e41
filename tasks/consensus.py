"""Consensus labels with a confidence: majority vote, Dawid-Skene, box clustering by IoU, span voting."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from labelflow.tasks.agreement import box_iou, span_key

TIE = "tie"


@dataclass
class ClassConsensus:
    """Per-task consensus for classification: label (None on an unresolved tie), confidence, and votes."""

    task_ids: np.ndarray
    labels: list[Any]
    confidence: np.ndarray
    tie: np.ndarray  # bool: the top classes were tied
    posterior: np.ndarray  # items x classes: vote shares (majority) or posterior probabilities (Dawid-Skene)
    classes: list[Any]
    annotator_confusion: dict[Any, np.ndarray] | None = None  # Dawid-Skene: true class x given label
    iterations: int = 0


def _encode(
    votes: pd.DataFrame, classes: list[Any] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Any], np.ndarray]:
    """Integer codes for items, annotators and labels; classes in spec order when given."""
    item_codes, task_ids = pd.factorize(votes["task_id"], sort=True)
    annotator_codes, annotators = pd.factorize(votes["annotator_id"], sort=True)
    if classes is None:
        classes = sorted(votes["label"].unique().tolist())
    lookup = {label: index for index, label in enumerate(classes)}
    label_codes = votes["label"].map(lookup)
    if label_codes.isna().any():
        unknown = sorted(set(votes.loc[label_codes.isna(), "label"]))
        raise ValueError(f"votes use labels outside the class list: {unknown[:5]}")
    return (
        item_codes.astype(np.int64),
        annotator_codes.astype(np.int64),
        label_codes.to_numpy(dtype=np.int64),
        np.asarray(task_ids),
        classes,
        np.asarray(annotators),
    )


def _pick(
    posterior: np.ndarray, task_ids: np.ndarray, classes: list[Any], tie_policy: str, seed: int
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Best class per item under a tie policy: `flag` (no label), `first` (spec order), `random` (stable per task)."""
    best = posterior.max(axis=1, keepdims=True)
    tied_mask = np.isclose(posterior, best, rtol=0.0, atol=1e-9)
    tie = tied_mask.sum(axis=1) > 1
    choice = tied_mask.argmax(axis=1)  # the first of the tied classes in spec order
    if tie_policy == "random" and tie.any():
        for row in np.flatnonzero(tie):
            candidates = np.flatnonzero(tied_mask[row])
            # Stable across runs and machines: derived from the task id and the seed, not from global state.
            pick = zlib.crc32(f"{seed}:{task_ids[row]}".encode()) % len(candidates)
            choice[row] = candidates[pick]
    labels: list[Any] = [classes[c] for c in choice]
    if tie_policy == "flag":
        labels = [None if t else label for label, t in zip(labels, tie, strict=True)]
    return labels, best[:, 0], tie


def majority_vote(
    votes: pd.DataFrame, classes: list[Any] | None = None, tie_policy: str = "flag", seed: int = 0
) -> ClassConsensus:
    """Most frequent label per task; confidence is its vote share."""
    items, _, labels, task_ids, classes, _ = _encode(votes, classes)
    counts = np.zeros((len(task_ids), len(classes)))
    np.add.at(counts, (items, labels), 1.0)
    shares = counts / counts.sum(axis=1, keepdims=True)
    picked, confidence, tie = _pick(shares, task_ids, classes, tie_policy, seed)
    return ClassConsensus(task_ids, picked, confidence, tie, shares, classes)


# The Dawid-Skene prior: each row of an annotator's confusion matrix (one true class) starts with
# DS_PRIOR_STRENGTH pseudo-answers, a DS_PRIOR_ACCURACY share of them right and the rest spread evenly over the
# K-1 wrong labels. Both numbers are the same for any number of classes K. (The old prior, +2 on the diagonal and
# +1 on each other cell, weighed K+1 answers and implied an accuracy of 2/(K+1): 1/3 at five classes, 0.18 at ten,
# which pulled every estimate down; issue 18.) 0.7 is above chance for every K >= 2, so the prior still leans
# toward the diagonal (it keeps EM from swapping classes), and lies between a spammer and an expert. Two
# pseudo-answers are weak: an annotator who answered n tasks of a class moves by at most 2 * 0.7 / (n + 2) from
# their counts, under 0.03 from n = 45 and under 0.01 from n = 140 (and mostly far less: the pull is toward 0.7).
DS_PRIOR_STRENGTH = 2.0
DS_PRIOR_ACCURACY = 0.7


def confusion_prior(n_classes: int, strength: float, accuracy: float) -> np.ndarray:
    """Pseudo-counts for one confusion matrix: each row sums to `strength`, `accuracy` of it on the diagonal."""
    if n_classes == 1:
        return np.full((1, 1), float(strength))
    prior = np.full((n_classes, n_classes), strength * (1.0 - accuracy) / (n_classes - 1))
    np.fill_diagonal(prior, strength * accuracy)
    return prior


def dawid_skene(
    votes: pd.DataFrame,
    classes: list[Any] | None = None,
    tie_policy: str = "flag",
    seed: int = 0,
    max_iterations: int = 100,
    tolerance: float = 1e-5,
    prior_strength: float = DS_PRIOR_STRENGTH,
    prior_accuracy: float = DS_PRIOR_ACCURACY,
) -> ClassConsensus:
    """Dawid & Skene (1979) EM: per-annotator confusion matrices and class priors, started from majority vote.

    Each row of a confusion matrix (one true class) starts from `confusion_prior`'s pseudo-counts.
    Confidence is the posterior probability of the chosen class.
    """
    items, annotators, labels, task_ids, classes, annotator_ids = _encode(votes, classes)
    n_items, n_classes, n_annotators = len(task_ids), len(classes), len(annotator_ids)
    posterior = np.zeros((n_items, n_classes))
    np.add.at(posterior, (items, labels), 1.0)
    posterior /= posterior.sum(axis=1, keepdims=True)
    confusion = np.zeros((n_annotators, n_classes, n_classes))
    pseudo_counts = confusion_prior(n_classes, prior_strength, prior_accuracy)
    iteration = 0
    for iteration in range(1, max_iterations + 1):  # noqa: B007 - the count is reported
        # M-step: priors and confusion matrices (true class k -> given label l) from the current posteriors.
        priors = posterior.mean(axis=0) + 1e-12
        confusion[:] = pseudo_counts
        for k in range(n_classes):
            flat = np.bincount(
                annotators * n_classes + labels, weights=posterior[items, k], minlength=n_annotators * n_classes
            )
            confusion[:, k, :] += flat.reshape(n_annotators, n_classes)
        confusion /= confusion.sum(axis=2, keepdims=True)
        log_confusion = np.log(confusion)
        # E-step: posterior over the true class of each item.
        log_post = np.tile(np.log(priors), (n_items, 1))
        contributions = log_confusion[annotators, :, labels]  # rows x classes
        for k in range(n_classes):
            log_post[:, k] += np.bincount(items, weights=contributions[:, k], minlength=n_items)
        log_post -= log_post.max(axis=1, keepdims=True)
        updated = np.exp(log_post)
        updated /= updated.sum(axis=1, keepdims=True)
        change = float(np.abs(updated - posterior).max())
        posterior = updated
        if change < tolerance:
            break
    picked, confidence, tie = _pick(posterior, task_ids, classes, tie_policy, seed)
    matrices = {annotator_ids[a]: confusion[a].copy() for a in range(n_annotators)}
    return ClassConsensus(task_ids, picked, confidence, tie, posterior, classes, matrices, iteration)


def estimated_accuracy(confusion: np.ndarray, priors: np.ndarray) -> float:
    """Probability that an annotator with this confusion matrix gives the true class (prior-weighted diagonal)."""
    return float((np.diag(confusion) * priors).sum() / priors.sum())


# --- regions -------------------------------------------------------------------------------------------------
def box_consensus(
    regions_by_annotator: dict[int, list[dict[str, Any]]], iou_threshold: float = 0.5
) -> tuple[list[dict[str, Any]], float]:
    """Boxes most annotators drew: greedy IoU clusters of same-label boxes, one box per annotator per cluster.

    A cluster is kept when more than half the task's annotators contributed to it; its box is the median of the
    members. Returns the boxes (each with `support`, `confidence`) and the task confidence (mean over boxes, or
    the share of annotators who drew nothing when the consensus is empty).
    """
    n = len(regions_by_annotator)
    clusters: list[dict[str, Any]] = []
    pool = [
        (annotator, box)
        for annotator, boxes in sorted(regions_by_annotator.items())
        for box in sorted(boxes or [], key=lambda b: -(b["width"] * b["height"]))
    ]
    for annotator, box in pool:
        best, best_iou = None, iou_threshold
        for cluster in clusters:
            if cluster["label"] != box["label"] or annotator in cluster["annotators"]:
                continue
            iou = box_iou(cluster["centre"], box)
            if iou >= best_iou:
                best, best_iou = cluster, iou
        if best is None:
            clusters.append({"label": box["label"], "members": [box], "annotators": {annotator}, "centre": dict(box)})
        else:
            best["members"].append(box)
            best["annotators"].add(annotator)
            best["centre"] = _median_box(best["members"], box["label"])
    kept = []
    for cluster in clusters:
        support = len(cluster["annotators"])
        if support * 2 > n:
            centre = _median_box(cluster["members"], cluster["label"])
            mean_iou = float(np.mean([box_iou(centre, m) for m in cluster["members"]]))
            kept.append({**centre, "support": support, "confidence": support / n * mean_iou})
    if kept:
        return kept, float(np.mean([k["confidence"] for k in kept]))
    empty_votes = sum(1 for boxes in regions_by_annotator.values() if not boxes)
    return [], empty_votes / n if n else math.nan


def _median_box(members: list[dict[str, Any]], label: str) -> dict[str, Any]:
    return {
        "label": label,
        **{key: float(np.median([m[key] for m in members])) for key in ("x", "y", "width", "height")},
        "rotation": float(np.median([m.get("rotation") or 0.0 for m in members])),
    }


def span_consensus(regions_by_annotator: dict[int, list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], float]:
    """Spans (exact start, end, label) chosen by more than half the task's annotators, with their vote share."""
    n = len(regions_by_annotator)
    votes: dict[tuple[int, int, str], int] = {}
    texts: dict[tuple[int, int, str], Any] = {}
    for spans in regions_by_annotator.values():
        for key in {span_key(s) for s in spans or []}:
            votes[key] = votes.get(key, 0) + 1
        for s in spans or []:
            texts.setdefault(span_key(s), s.get("text"))
    kept = [
        {
            "start": start,
            "end": end,
            "label": label,
            "text": texts[(start, end, label)],
            "support": count,
            "confidence": count / n,
        }
        for (start, end, label), count in sorted(votes.items())
        if count * 2 > n
    ]
    if kept:
        return kept, float(np.mean([k["confidence"] for k in kept]))
    empty_votes = sum(1 for spans in regions_by_annotator.values() if not spans)
    return [], empty_votes / n if n else math.nan
