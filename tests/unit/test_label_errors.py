"""Label-error detection finds labels flipped on purpose, on the demo's real Chinese reviews."""

from __future__ import annotations

import json
import random
from importlib.resources import files

import numpy as np

from labelflow.tasks.label_errors import out_of_fold_text_probabilities, suspect_rows


def test_planted_flips_in_real_reviews_are_found_with_useful_precision_and_recall() -> None:
    lines = files("labelflow").joinpath("demo_data", "reviews_zh.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    texts = [row["text"] for row in rows]
    truth = [row["label"] for row in rows]
    classes = sorted(set(truth))
    rng = random.Random(3)
    flipped = set(rng.sample(range(len(rows)), len(rows) // 20))  # 5 % of the labels turned to the other class
    given = [next(c for c in classes if c != label) if i in flipped else label for i, label in enumerate(truth)]
    probabilities = out_of_fold_text_probabilities(texts, given, classes)
    assert probabilities.shape == (len(rows), len(classes))
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    suspects = set(suspect_rows(given, probabilities, classes).tolist())
    found = suspects & flipped
    precision, recall = len(found) / max(len(suspects), 1), len(found) / len(flipped)
    # A character n-gram model reaches only ~75 % on these reviews (bench/label_errors_bench.py), so suspects are far
    # from all flips; what must hold is that they are flips much more often than a random 5 % of rows would be.
    assert recall >= 0.4 and precision >= 2 * len(flipped) / len(rows), (precision, recall, len(suspects))
