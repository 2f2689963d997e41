"""Calibrated model confidence and the threshold above which machine labels may stand in for people's (issue 19).

The deciding pieces are pure functions on arrays, tested on fixed data; `AutomationOutcome` is what one collect's
automation did, for the report, the manifest and the MLflow tags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

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


def audit_draw(task_ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Which tasks are audits: a draw stable per task and seed, so a task stays an audit (or not) in every collect."""
    import hashlib

    import numpy as np

    if share <= 0.0:
        return np.zeros(len(task_ids), dtype=bool)
    draws = [
        int.from_bytes(hashlib.sha256(f"labelflow-audit|{seed}|{int(task)}".encode()).digest()[:8], "big") / 2.0**64
        for task in task_ids
    ]
    return np.asarray(draws) < share


@dataclass(frozen=True)
class Calibration:
    """A model version's frozen calibration: the curve raw -> calibrated confidence, the threshold and its evidence.

    Frozen when automation starts for the version, so audits are judged against the figures the decision was made
    with; a new model version is calibrated afresh.
    """

    model_version: str
    threshold: float  # on the calibrated confidence
    curve_x: list[float]  # isotonic curve fitted on every human-labeled item: raw confidence ...
    curve_y: list[float]  # ... to calibrated confidence (linear in between, clipped at the ends)
    evidence_items: int  # human-labeled items at or above the threshold when it was chosen
    evidence_correct: int  # of them, where the model agreed with people
    evidence_task_ids: list[int]  # every human-labeled task the calibration saw (audits are the tasks after it)
    human_labels: int
    ece_raw: float
    ece_calibrated: float
    reliability: list[ReliabilityBin]

    def calibrated(self, confidence: np.ndarray) -> np.ndarray:
        """Calibrated confidences of raw ones, by the frozen curve."""
        import numpy as np

        return np.interp(np.asarray(confidence, dtype=float), self.curve_x, self.curve_y)

    def as_record(self) -> dict[str, Any]:
        """JSON for the project's automation record."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Calibration:
        """The calibration an earlier collect froze."""
        bins = [ReliabilityBin(**b) for b in record.get("reliability", [])]
        return cls(**{**record, "reliability": bins})


def calibrate(
    model_version: str,
    task_ids: np.ndarray,
    confidence: np.ndarray,
    correct: np.ndarray,
    target_accuracy: float,
    folds: int,
    min_items: int,
    seed: int,
) -> tuple[Calibration | None, Threshold, tuple[float, float]]:
    """Calibrate on human-labeled items and pick the threshold; (None, threshold, ECEs) when none reaches the target."""
    import numpy as np
    from sklearn.isotonic import IsotonicRegression

    crossed = cross_fitted_calibration(confidence, correct, folds=folds, seed=seed)
    threshold = choose_threshold(crossed, correct, target_accuracy, min_items=min_items)
    eces = (expected_calibration_error(confidence, correct), expected_calibration_error(crossed, correct))
    if threshold.confidence is None:
        return None, threshold, eces
    curve = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(confidence, correct)
    above = crossed >= threshold.confidence
    calibration = Calibration(
        model_version=model_version,
        threshold=threshold.confidence,
        curve_x=[float(x) for x in curve.X_thresholds_],
        curve_y=[float(y) for y in curve.y_thresholds_],
        evidence_items=int(above.sum()),
        evidence_correct=int(np.asarray(correct, dtype=bool)[above].sum()),
        evidence_task_ids=[int(t) for t in task_ids],
        human_labels=len(task_ids),
        ece_raw=eces[0],
        ece_calibrated=eces[1],
        reliability=reliability_bins(confidence, correct),
    )
    return calibration, threshold, eces


@dataclass(frozen=True)
class AutomationRecord:
    """What automation keeps between collects: each model version's calibration or stop, and the held tasks."""

    calibrations: dict[str, Calibration] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)  # model version -> why automation stopped for it
    held: list[int] = field(default_factory=list)  # tasks taken out of people's queue because the model labeled them
    # The spec's overlap when they were held: changing a project's overlap resets every task's in Label Studio,
    # which puts held tasks back in the queue, so a changed overlap holds them all again.
    overlap: int | None = None

    def as_record(self) -> dict[str, Any]:
        """JSON for the project's state."""
        return {
            "calibrations": {v: c.as_record() for v, c in self.calibrations.items()},
            "stopped": self.stopped,
            "held": self.held,
            "overlap": self.overlap,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> AutomationRecord:
        """The record an earlier collect wrote (an empty one for the first)."""
        if not record:
            return cls()
        calibrations = {v: Calibration.from_record(c) for v, c in (record.get("calibrations") or {}).items()}
        held = [int(t) for t in record.get("held") or []]
        return cls(calibrations, dict(record.get("stopped") or {}), held, record.get("overlap"))


@dataclass(frozen=True)
class AutomationPlan:
    """One collect's automated labeling: the consensus with machine rows, the queue changes, the new record."""

    outcome: AutomationOutcome
    consensus: pd.DataFrame
    hold: list[int]  # take out of people's queue: newly machine-labeled
    release: list[int]  # give back to people: no longer machine-labeled (stopped, new version, now audited)
    record: AutomationRecord


def human_decided(consensus: pd.DataFrame) -> pd.Series:
    """Rows whose label people decided: finished, unflagged, labeled, and not a machine label."""
    method = consensus["method"] if "method" in consensus.columns else None
    decided = consensus["finished"].astype(bool) & ~consensus["flagged"].astype(bool) & consensus["label"].notna()
    if method is not None:
        decided &= method.astype(object).ne("model")
    return decided


def plan_automation(
    automate: Any,
    seed: int,
    consensus: pd.DataFrame,
    scores: pd.DataFrame,
    model_version: str,
    record: AutomationRecord,
) -> AutomationPlan:
    """Decide which tasks the model labels in this collect, from people's consensus and the model's scores.

    `scores` has one row per task scored by `model_version`: task_id, predicted (label or None), confidence (the
    model's top probability, NaN when it failed on the task). Automation waits without `min_human_labels` human
    labels or without a threshold reaching the target on the interval's lower bound; once running, the
    calibration is frozen for the model version, and it stops for good (for that version) when the measured
    accuracy (calibration evidence plus audits) falls below the target.
    """
    import numpy as np
    import pandas as pd

    from labelflow.tasks.quality import wilson_interval

    target = automate.target_accuracy
    scored = scores.set_index("task_id")
    failed = scored["confidence"].isna()
    base = {
        "model_version": model_version,
        "target_accuracy": target,
        "min_human_labels": automate.min_human_labels,
        "model_failures": int(failed.sum()),
    }
    decided = human_decided(consensus)
    human = consensus.loc[decided, ["task_id", "label"]]
    human = human[human["task_id"].isin(scored.index[~failed])]
    base["human_labels"] = len(human)

    def idle(status: str, reason: str, calibration: Calibration | None = None, **figures: Any) -> AutomationPlan:
        kept = AutomationRecord(record.calibrations, record.stopped, [], record.overlap)
        extra = {}
        if calibration is not None:
            extra = {
                "threshold": calibration.threshold,
                "ece_raw": calibration.ece_raw,
                "ece_calibrated": calibration.ece_calibrated,
                "reliability": calibration.reliability,
            }
        outcome = AutomationOutcome(status=status, reason=reason, **base, **extra, **figures)  # type: ignore[arg-type]
        return AutomationPlan(outcome, consensus, [], sorted(record.held), kept)

    if model_version in record.stopped:
        return idle("stopped", record.stopped[model_version], record.calibrations.get(model_version))
    calibration = record.calibrations.get(model_version)
    if calibration is None:
        if len(human) < automate.min_human_labels:
            return idle(
                "waiting",
                f"automation waits: {len(human)} of the {automate.min_human_labels} human consensus labels "
                "(automate.min_human_labels) it calibrates on",
            )
        predicted = scored.loc[human["task_id"], "predicted"].to_numpy()
        confidence = scored.loc[human["task_id"], "confidence"].to_numpy(dtype=float)
        correct = predicted == human["label"].to_numpy()
        calibration, _threshold, eces = calibrate(
            model_version,
            human["task_id"].to_numpy(),
            confidence,
            correct,
            target,
            automate.folds,
            automate.min_items_above_threshold,
            seed,
        )
        if calibration is None:
            figures = {
                "ece_raw": eces[0],
                "ece_calibrated": eces[1],
                "reliability": reliability_bins(confidence, correct),
            }
            return idle(
                "waiting",
                f"automation waits: no confidence threshold of {model_version} reaches {target:.1%} on the lower "
                f"end of its interval with at least {automate.min_items_above_threshold} human labels above it",
                **figures,
            )
    # Audits: tasks the model would label (at or above the threshold) that were drawn for people, labeled since.
    calibrated = pd.Series(calibration.calibrated(scored["confidence"].fillna(0.0).to_numpy()), index=scored.index)
    above = (calibrated >= calibration.threshold) & ~failed
    audit = pd.Series(audit_draw(scored.index.to_numpy(), automate.audit_share, seed), index=scored.index)
    evidence = set(calibration.evidence_task_ids)
    audited = human[human["task_id"].map(above & audit).fillna(False).astype(bool) & ~human["task_id"].isin(evidence)]
    agree = scored.loc[audited["task_id"], "predicted"].to_numpy() == audited["label"].to_numpy()
    trials = calibration.evidence_items + len(audited)
    right = calibration.evidence_correct + int(agree.sum())
    measured = right / trials if trials else None
    low, high = wilson_interval(measured or 0.0, trials, Z_ONE_SIDED_95)
    figures = {
        "audits_done": len(audited),
        "audit_disagreements": int((~agree).sum()),
        "measured_accuracy": measured,
        "accuracy_low": low,
        "accuracy_high": high,
    }
    calibrations = {**record.calibrations, model_version: calibration}
    # The audits are the only evidence on the labels the model actually publishes, and they are few next to the
    # calibration's: besides the pooled accuracy, their own interval stops automation once even its upper end is
    # below the target.
    _, audits_high = wilson_interval(float(agree.mean()) if len(agree) else 0.0, len(agree), Z_ONE_SIDED_95)
    audits_below = audits_high is not None and audits_high < target
    if (measured is not None and measured < target) or audits_below:
        why = (
            f"the measured accuracy {measured:.1%} fell below the target {target:.1%}"
            if measured is not None and measured < target
            else f"even the upper end of the audits' own interval ({audits_high:.1%}) is below the target {target:.1%}"
        )
        reason = (
            f"automation stopped for {model_version}: audits found {int((~agree).sum())} disagreements in "
            f"{len(audited)}, so {why}"
        )
        record = AutomationRecord(calibrations, {**record.stopped, model_version: reason}, record.held, record.overlap)
        return idle("stopped", reason, calibration, **figures)
    # Machine labels: tasks above the threshold no person has worked on yet, except the audit draw.
    rows = consensus.set_index("task_id")
    untouched = (rows["annotations"] == 0) & ~rows["reviewed"].astype(bool)
    untouched = untouched.reindex(scored.index, fill_value=False)
    machine = scored.index[above & ~audit & untouched]
    audit_tasks = int((above & audit & untouched).sum())
    labeled = consensus.copy()
    at = labeled["task_id"].isin(machine)
    ids = labeled.loc[at, "task_id"]
    labeled.loc[at, "label"] = scored.loc[ids, "predicted"].to_numpy()
    labeled.loc[at, "confidence"] = calibrated.loc[ids].round(4).to_numpy()
    labeled.loc[at, "method"] = "model"
    if at.any():  # only then: a version without machine rows keeps the files (and digest) it always had
        labeled["model_version"] = np.where(at, model_version, None)
    labeled.loc[at, "finished"] = True
    labeled.loc[at, "flagged"] = False
    if "flag_reason" in labeled.columns:
        labeled.loc[at, "flag_reason"] = None
    held_now = {int(t) for t in machine}
    outcome = AutomationOutcome(
        status="running",
        reason=(
            f"{len(machine)} tasks labeled by {model_version} at calibrated confidence >= "
            f"{calibration.threshold:.3f}; {audit_tasks} more drawn as audits for people"
        ),
        **base,
        threshold=calibration.threshold,
        machine_labeled=len(machine),
        audit_tasks=audit_tasks,
        ece_raw=calibration.ece_raw,
        ece_calibrated=calibration.ece_calibrated,
        reliability=calibration.reliability,
        **figures,
    )
    return AutomationPlan(
        outcome,
        labeled,
        sorted(held_now - set(record.held)),
        sorted(set(record.held) - held_now),
        AutomationRecord(calibrations, record.stopped, sorted(held_now), record.overlap),
    )
