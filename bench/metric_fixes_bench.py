"""Issue 18 section 5, before and after: the kappa headline with a stray annotator, and Dawid-Skene's accuracy estimates.

Run: .venv/bin/python bench/metric_fixes_bench.py [--tasks 500] [--seeds 5]
Prints figures only (nothing is asserted): the old unweighted kappa mean against the weighted headline, and per
number of classes the gap between estimated and observed annotator accuracy under the old prior (+2 diagonal, +1
elsewhere), the new prior (2 pseudo-answers at accuracy 0.7) and crowd-kit's unsmoothed DawidSkene.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from labelflow.tasks.agreement import kappa_headline, mean_or_none, pairwise_cohen_kappa
from labelflow.tasks.consensus import DS_PRIOR_ACCURACY, DS_PRIOR_STRENGTH, dawid_skene, estimated_accuracy
from labelflow.tasks.simulate import simulated_votes

NEWS = ["world", "sports", "business", "science", "culture"]


def kappa_case() -> None:
    """Three annotators on 80 five-class tasks, then one stray annotation disagreeing on one task."""
    votes, _ = simulated_votes(80, [0.75, 0.7, 0.65], NEWS, seed=3, per_task=3)
    used = set(votes.loc[votes["task_id"] == 0, "label"])
    stray = next(label for label in NEWS if label not in used)
    with_stray = pd.concat([votes, pd.DataFrame([(0, 99, stray)], columns=votes.columns)], ignore_index=True)
    print("kappa headline (3 annotators x 80 tasks, 5 classes; + 1 stray annotation on one task)")
    for name, frame in (("without the stray", votes), ("with the stray", with_stray)):
        pairs = pairwise_cohen_kappa(frame)
        new = kappa_headline(pairs, 10)
        print(
            f"  {name:18s} old unweighted mean {mean_or_none(pairs['cohen_kappa']):.3f}   "
            f"new weighted {new['mean_cohen_kappa']:.3f} ({new['cohen_kappa_pairs']} pairs, "
            f"{new['cohen_kappa_pairs_left_out']} left out)"
        )


def crowdkit_accuracy(votes: pd.DataFrame) -> dict[int, float] | None:
    try:
        from crowdkit.aggregation import DawidSkene
    except ImportError:  # a dev dependency
        return None
    model = DawidSkene(n_iter=200, tol=1e-7).fit(votes.rename(columns={"task_id": "task", "annotator_id": "worker"}))
    priors = model.priors_
    return {
        int(w): float(
            sum(priors[k] * model.errors_.loc[(w, k), k] for k in priors.index if (w, k) in model.errors_.index)
        )
        for w in votes["annotator_id"].unique()
    }


def ds_case(tasks: int, seeds: int) -> None:
    accuracies = [0.95, 0.85, 0.7, 0.6]
    print(f"\nDawid-Skene estimated - observed accuracy, annotators {accuracies}, {tasks} tasks x 3, {seeds} seeds")
    print("  K   prior          mean gap   gap of the 0.95 annotator   max |gap|   seconds")
    for n_classes in (2, 5, 10):
        labels = [f"c{i}" for i in range(n_classes)]
        priors = {
            "old (+2/+1)": (n_classes + 1.0, 2.0 / (n_classes + 1)),
            f"new ({DS_PRIOR_STRENGTH:g} @ {DS_PRIOR_ACCURACY:g})": (DS_PRIOR_STRENGTH, DS_PRIOR_ACCURACY),
            "crowd-kit": None,
        }
        for name, prior in priors.items():
            gaps, top, elapsed = [], [], 0.0
            for seed in range(seeds):
                votes, truth = simulated_votes(tasks, accuracies, labels, seed=seed, per_task=3)
                right = votes["label"].to_numpy() == np.asarray(truth)[votes["task_id"].to_numpy()]
                observed = pd.Series(right).groupby(votes["annotator_id"]).mean()
                started = time.perf_counter()
                if prior is None:
                    estimates = crowdkit_accuracy(votes)
                    if estimates is None:
                        break
                else:
                    result = dawid_skene(votes, labels, prior_strength=prior[0], prior_accuracy=prior[1])
                    weights = result.posterior.mean(axis=0)
                    estimates = {
                        a: estimated_accuracy(m, weights) for a, m in (result.annotator_confusion or {}).items()
                    }
                elapsed += time.perf_counter() - started
                gaps += [estimates[a] - observed[a] for a in observed.index]
                top.append(estimates[0] - observed[0])
            if gaps:
                print(
                    f"  {n_classes:<3d} {name:14s} {np.mean(gaps):+.4f}    {np.mean(top):+.4f}"
                    f"                     {np.max(np.abs(gaps)):.3f}       {elapsed / seeds:.3f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    kappa_case()
    ds_case(args.tasks, args.seeds)


if __name__ == "__main__":
    main()
