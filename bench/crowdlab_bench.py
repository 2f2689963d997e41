"""CROWDLAB vs labelflow's Dawid-Skene and majority vote on a real corpus with simulated annotators. Prints figures.

The corpus is the demo's 800 Chinese reviews (labelflow/demo_data/reviews_zh.jsonl; 2 classes), its labels the
truth. Per seed, 10 simulated annotators: 7 good (accuracy ~ U(0.75, 0.95)), 2 bad (~ U(0.55, 0.65)) and one
spammer (uniformly random); each item gets 1, 2 or 3 of them (a third each), chosen at random. Consensus:
  - majority and Dawid-Skene: labelflow's own (tasks/task_types/classification.py's `fill_class_consensus`), ties
    broken at random (stable per task; labelflow's default `flag` would leave them unlabeled);
  - CROWDLAB: cleanlab 2.9's `get_label_quality_multiannotator` (consensus `best_quality`) with out-of-fold
    probabilities from character n-gram TF-IDF + logistic regression (tasks/label_errors.py) trained on the
    majority-vote labels (cleanlab's recipe), and again trained on the Dawid-Skene labels.
Printed: consensus accuracy against the corpus labels overall and on slices (1, 2 and 3 votes; 1-1 ties; items
a bad annotator or the spammer voted on; a lone vote by a bad annotator or the spammer), the items where CROWDLAB
and Dawid-Skene disagree and who was right, and how well each ranks the annotators.

    .venv/bin/python bench/crowdlab_bench.py --seeds 5
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_loop_bench import load_reviews
from scipy.stats import spearmanr

from labelflow.tasks.label_errors import out_of_fold_text_probabilities
from labelflow.tasks.spec import QualitySpec
from labelflow.tasks.task_types.classification import fill_class_consensus

GOOD, BAD = 7, 2  # plus one spammer
GOOD_RANGE, BAD_RANGE = (0.75, 0.95), (0.55, 0.65)


def simulate(truth: np.ndarray, n_classes: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Votes (task_id, annotator_id, label index) with 1-3 annotators per item, and each annotator's accuracy."""
    accuracies = np.concatenate([rng.uniform(*GOOD_RANGE, GOOD), rng.uniform(*BAD_RANGE, BAD), [np.nan]])
    rows = []
    for item, true in enumerate(truth.tolist()):
        for annotator in rng.choice(len(accuracies), size=int(rng.integers(1, 4)), replace=False).tolist():
            if np.isnan(accuracies[annotator]):  # the spammer
                label = int(rng.integers(n_classes))
            elif rng.random() < accuracies[annotator]:
                label = true
            else:
                wrong = int(rng.integers(n_classes - 1))
                label = wrong + (wrong >= true)
            rows.append((item, annotator, label))
    return pd.DataFrame(rows, columns=["task_id", "annotator_id", "label"]), accuracies


def labelflow_consensus(
    votes: pd.DataFrame, classes: list[str], aggregation: str
) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
    """labelflow's consensus class per item, whether it was a tie, and Dawid-Skene's estimated annotator accuracy."""
    frame = votes.assign(label=[classes[c] for c in votes["label"]])
    table = pd.DataFrame({"task_id": np.unique(frame["task_id"])})
    extra: dict[str, dict] = {}
    quality = QualitySpec(aggregation=aggregation, tie_policy="random")  # type: ignore[arg-type]
    fill_class_consensus(table, frame, classes, quality, {}, extra)
    labels = np.array([classes.index(name) for name in table["label"]])
    return labels, table["tie"].to_numpy(bool), extra.get("estimated_accuracy", {})


def accuracy_on(labels: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Share of the masked items whose label is the truth (NaN for none)."""
    return float((labels[mask] == truth[mask]).mean()) if mask.any() else float("nan")


def crowdlab(votes: pd.DataFrame, probabilities: np.ndarray, n_items: int, n_annotators: int) -> dict:
    """CROWDLAB's consensus, its model weight and annotator quality (cleanlab 2.9)."""
    from cleanlab.multiannotator import get_label_quality_multiannotator

    matrix = np.full((n_items, n_annotators), np.nan)
    matrix[votes["task_id"], votes["annotator_id"]] = votes["label"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # annotators who share few items with others
        return get_label_quality_multiannotator(pd.DataFrame(matrix), probabilities, return_weights=True, verbose=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(f"command: .venv/bin/python {' '.join(sys.argv)}")
    corpus = load_reviews()
    truth, classes, texts = corpus.truth, corpus.classes, corpus.inputs
    n = len(truth)
    print(
        f"{corpus.name}: {n} items, {len(classes)} classes; {GOOD} good annotators ~ U{GOOD_RANGE}, {BAD} bad ~ "
        f"U{BAD_RANGE}, 1 spammer; 1, 2 or 3 votes per item"
    )
    methods = ["majority", "dawid-skene", "crowdlab (model on majority)", "crowdlab (model on DS)", "model alone"]
    slices: dict[str, list[dict[str, float]]] = {}
    differences, rankings, weights = [], [], []
    began = time.perf_counter()
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        votes, accuracies = simulate(truth, len(classes), rng)
        majority, tie, _ = labelflow_consensus(votes, classes, "majority")
        ds, _, ds_accuracy = labelflow_consensus(votes, classes, "dawid-skene")
        predicted = {}
        for name, trained_on in (("crowdlab (model on majority)", majority), ("crowdlab (model on DS)", ds)):
            probabilities = out_of_fold_text_probabilities(texts, [classes[c] for c in trained_on], classes)
            result = crowdlab(votes, probabilities, n, len(accuracies))
            predicted[name] = result["label_quality"]["consensus_label"].to_numpy(int)
            predicted.setdefault("model alone", probabilities.argmax(axis=1))
            if name.endswith("majority)"):
                weights.append(result["model_weight"])
                stats = result["annotator_stats"]["annotator_quality"].sort_index().to_numpy()
        predicted = {"majority": majority, "dawid-skene": ds, **predicted}

        per_item = votes.groupby("task_id")
        count = per_item.size().to_numpy()
        weak = set(range(GOOD, len(accuracies)))
        with_weak = per_item["annotator_id"].agg(lambda a, weak=weak: bool(weak & set(a))).to_numpy()
        lone_weak = (count == 1) & with_weak
        masks = {
            "all items": np.ones(n, bool),
            "1 vote": count == 1,
            "2 votes": count == 2,
            "3 votes": count == 3,
            "2 votes, 1-1 tie": (count == 2) & tie,
            "a bad annotator or spammer voted": with_weak,
            "lone vote by bad/spammer": lone_weak,
        }
        for name, mask in masks.items():
            slices.setdefault(name, []).append(
                {"items": mask.sum(), **{m: float((predicted[m][mask] == truth[mask]).mean()) for m in methods}}
            )
        crowd = predicted["crowdlab (model on majority)"]
        differ = crowd != ds
        voted_for = np.zeros((n, len(classes)), int)
        np.add.at(voted_for, (votes["task_id"], votes["label"]), 1)
        unvoted = voted_for[np.arange(n), crowd] == 0  # CROWDLAB chose a class none of the item's annotators chose
        lone_good = (count == 1) & ~with_weak
        differences.append(
            {
                "differ": int(differ.sum()),
                "CL right": int((differ & (crowd == truth)).sum()),
                "DS right": int((differ & (ds == truth)).sum()),
                "on 1 vote": int((differ & (count == 1)).sum()),
                "on 1-1 tie": int((differ & tie & (count == 2)).sum()),
                "CL overrules all": int(unvoted.sum()),
                "acc": accuracy_on(crowd, truth, unvoted),
                "lone good overruled": int((unvoted & lone_good).sum()),
                "acc ": accuracy_on(crowd, truth, unvoted & lone_good),
                "lone bad overruled": int((unvoted & lone_weak).sum()),
                "acc  ": accuracy_on(crowd, truth, unvoted & lone_weak),
                "DS overrules all": int((voted_for[np.arange(n), ds] == 0).sum()),
                "acc   ": accuracy_on(ds, truth, voted_for[np.arange(n), ds] == 0),
            }
        )
        observed = votes.assign(right=votes["label"].to_numpy() == truth[votes["task_id"]])
        observed = observed.groupby("annotator_id")["right"].mean().sort_index().to_numpy()
        ds_estimates = np.array([ds_accuracy[a] for a in range(len(accuracies))])
        rankings.append(
            {
                "ds spearman": spearmanr(ds_estimates, observed).statistic,
                "ds mean abs error": float(np.abs(ds_estimates - observed).mean()),
                "crowdlab spearman": spearmanr(stats, observed).statistic,
            }
        )
    print(f"({time.perf_counter() - began:.1f} s for {args.seeds} seeds)\n")

    print("consensus accuracy against the corpus labels, mean over seeds (items: mean count per seed)")
    short = ["majority", "DS", "CROWDLAB/maj", "CROWDLAB/DS", "model"]
    header = f"{'slice':34} {'items':>6} " + " ".join(f"{s:>12}" for s in short)
    print(header)
    print("-" * len(header))
    for name, rows in slices.items():
        frame = pd.DataFrame(rows)
        print(f"{name:34} {frame['items'].mean():6.0f} " + " ".join(f"{frame[m].mean():12.4f}" for m in methods))
    print(
        "\nwhere CROWDLAB (model on majority; CL) and Dawid-Skene (DS) disagree, per seed; `overrules all`: items whose "
        "consensus is a class none of its annotators chose, and the accuracy (acc) there"
    )
    print(pd.DataFrame(differences).to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nCROWDLAB model weight per seed: {', '.join(f'{w:.3f}' for w in weights)}")
    print("annotator ranking against their observed accuracy, per seed")
    print(pd.DataFrame(rankings).to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
