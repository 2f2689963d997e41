"""Calibrated model confidence and the threshold above which machine labels may stand in for people's (issue 19).

The deciding pieces are pure functions on arrays, tested on fixed data; `AutomationOutcome` is what one collect's
automation did, for the report, the manifest and the MLflow tags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

Z_ONE_SIDED_95 = 1.6448536269514722  # the lower bound of a one-sided 95 % interval


def cross_fitted_calibration(confidence: np.ndarray, correct: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Isotonic calibration of confidences against whether the model was right, cross-fitted so that no item
    calibrates itself: each fold's items are mapped by a curve fitted on the other folds."""
    import numpy as np
    from sklearn.isotonic import IsotonicRegression

    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if len(confidence) < 2 * folds:
        raise ValueError(f"calibration needs at least {2 * folds} items with a human label, got {len(confidence)}")
    order = np.random.default_rng(seed).permutation(len(confidence))
    calibrated = np.empty(len(confidence))
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold, assume_unique=True)
        curve = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(confidence[train], correct[train])
        calibrated[fold] = curve.predict(confidence[fold])
    return calibrated


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE: the item-weighted mean gap between confidence and accuracy over equal-width confidence bins."""
    import numpy as np

    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if not len(confidence):
        return float("nan")
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        members = which == b
        total += members.sum() * abs(confidence[members].mean() - correct[members].mean())
    return float(total / len(confidence))


def wilson_lower(successes: float, trials: float, z: float = Z_ONE_SIDED_95) -> float:
    """The Wilson score interval's lower bound of a share (0 with no trials): quality's interval, one-sided 95 %."""
    from labelflow.tasks.quality import wilson_interval

    low, _ = wilson_interval(successes / trials, int(trials), z) if trials > 0 else (0.0, None)
    return float(low or 0.0)


@dataclass(frozen=True)
class Threshold:
    """The lowest confidence whose machine labels reach the target accuracy, judged on the interval's lower bound."""

    confidence: float | None  # None: no threshold reaches the target (automation waits)
    covered: int  # human-labelled items at or above it
    accuracy: float | None  # the model's accuracy on them
    accuracy_low: float | None  # its one-sided 95 % lower bound, the figure compared with the target


def choose_threshold(
    confidence: np.ndarray, correct: np.ndarray, target_accuracy: float, min_items: int = 30
) -> Threshold:
    """The lowest threshold whose items (confidence at or above it) have a Wilson lower bound >= target_accuracy.

    Candidates are the observed confidences, so a threshold is always a confidence some item had. Fewer than
    `min_items` items above a threshold never qualify: a perfect run of ten says little.
    """
    import numpy as np

    if not 0.0 < target_accuracy < 1.0:
        raise ValueError(f"automate.target_accuracy: {target_accuracy} is not between 0 and 1 (exclusive)")
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    order = np.argsort(-confidence, kind="stable")
    sorted_confidence, sorted_correct = confidence[order], correct[order]
    right = np.cumsum(sorted_correct)
    best = Threshold(None, 0, None, None)
    for end in range(len(order)):
        # Only at the last item of a run of equal confidences: a threshold takes all of them or none.
        if end + 1 < len(order) and sorted_confidence[end + 1] == sorted_confidence[end]:
            continue
        trials = end + 1
        if trials < min_items:
            continue
        low = wilson_lower(right[end], trials)
        if low >= target_accuracy:
            best = Threshold(float(sorted_confidence[end]), trials, float(right[end] / trials), low)
    return best


@dataclass(frozen=True)
class ReliabilityBin:
    """One bar of the reliability diagram: items whose raw confidence fell in [low, high)."""

    low: float
    high: float
    items: int
    mean_confidence: float
    accuracy: float


@dataclass(frozen=True)
class AutomationOutcome:
    """What automated labeling did in one collect, and why: the report, the manifest and MLflow tags show it."""

    status: Literal["waiting", "running", "stopped"]
    reason: str  # one line a person reads: why it waits, what it did, or why it stopped
    model_version: str | None
    target_accuracy: float
    human_labels: int  # consensus labels by people the calibration could use
    min_human_labels: int
    threshold: float | None = None  # calibrated confidence at or above which the model labels
    machine_labeled: int = 0  # tasks whose published label is the model's (`method: model`)
    audit_tasks: int = 0  # tasks above the threshold kept for people as audits
    audits_done: int = 0  # audits people have labeled
    audit_disagreements: int = 0
    measured_accuracy: float | None = None  # of machine labels where people's label is known (calibration + audits)
    accuracy_low: float | None = None  # one-sided 95 % Wilson bounds of it
    accuracy_high: float | None = None
    model_failures: int = 0  # items the model raised on or returned nothing for: they went to people
    ece_raw: float | None = None  # expected calibration error of the model's own confidence
    ece_calibrated: float | None = None  # and after cross-fitted isotonic calibration
    reliability: list[ReliabilityBin] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (the manifest's `automation`)."""
        return asdict(self)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[ReliabilityBin]:
    """The reliability diagram's bars: per equal-width confidence bin, its items, mean confidence and accuracy."""
    import numpy as np

    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    bars = []
    for b in range(bins):
        members = which == b
        if members.any():
            bars.append(
                ReliabilityBin(
                    round(b / bins, 4),
                    round((b + 1) / bins, 4),
                    int(members.sum()),
                    float(confidence[members].mean()),
                    float(correct[members].mean()),
                )
            )
    return bars
