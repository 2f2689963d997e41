"""Agreement metrics against published worked examples and reference implementations (test-only)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from labelflow.tasks.agreement import (
    box_iou,
    box_pair_agreement,
    category_counts,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha_nominal,
    pairwise_cohen_kappa,
    span_pair_f1,
)

# Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, 5 categories, kappa 0.210.
FLEISS_EXAMPLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ],
    dtype=float,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", nominal example with missing values: 0.743.
KRIPPENDORFF_EXAMPLE = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def krippendorff_votes() -> pd.DataFrame:
    rows = [
        (unit, coder, value)
        for coder, observations in enumerate(KRIPPENDORFF_EXAMPLE)
        for unit, value in enumerate(observations)
        if value is not None
    ]
    return pd.DataFrame(rows, columns=["task_id", "annotator_id", "label"])


def test_fleiss_kappa_matches_the_published_example() -> None:
    assert fleiss_kappa(FLEISS_EXAMPLE) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_matches_statsmodels_on_random_data() -> None:
    from statsmodels.stats.inter_rater import fleiss_kappa as reference

    rng = np.random.default_rng(3)
    table = np.stack([rng.multinomial(5, rng.dirichlet(np.ones(4))) for _ in range(200)]).astype(float)
    assert fleiss_kappa(table) == pytest.approx(reference(table), abs=1e-12)


def test_krippendorff_alpha_matches_the_published_example() -> None:
    counts, _, _ = category_counts(krippendorff_votes())
    assert krippendorff_alpha_nominal(counts) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_matches_nltk_with_missing_values() -> None:
    from nltk.metrics.agreement import AnnotationTask

    rng = np.random.default_rng(11)
    rows = []
    for item in range(150):
        truth = rng.integers(0, 3)
        for coder in range(4):
            if rng.random() < 0.25:
                continue  # missing value
            rows.append((item, coder, int(truth if rng.random() < 0.7 else rng.integers(0, 3))))
    votes = pd.DataFrame(rows, columns=["task_id", "annotator_id", "label"])
    pairable = votes.groupby("task_id").filter(lambda g: len(g) >= 2)
    reference = AnnotationTask(data=[(str(c), str(i), str(v)) for i, c, v in pairable.itertuples(index=False)]).alpha()
    counts, _, _ = category_counts(votes)
    assert krippendorff_alpha_nominal(counts) == pytest.approx(reference, abs=1e-9)


def test_cohen_kappa_matches_scikit_learn() -> None:
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(5)
    a = rng.integers(0, 4, 300)
    b = np.where(rng.random(300) < 0.6, a, rng.integers(0, 4, 300))
    assert cohen_kappa(list(a), list(b)) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_pairwise_cohen_kappa_covers_every_pair_on_shared_tasks_only() -> None:
    votes = pd.DataFrame(
        [
            (1, 10, "x"),
            (1, 20, "x"),
            (2, 10, "y"),
            (2, 20, "x"),
            (3, 10, "y"),
            (3, 30, "y"),
            (4, 20, "x"),
            (4, 30, "y"),
        ],
        columns=["task_id", "annotator_id", "label"],
    )
    pairs = pairwise_cohen_kappa(votes).set_index(["annotator_a", "annotator_b"])
    assert set(pairs.index) == {(10, 20), (10, 30), (20, 30)}
    assert pairs.loc[(10, 20), "shared_tasks"] == 2
    assert pairs.loc[(10, 20), "observed_agreement"] == 0.5
    # Annotator 20 always says x, so chance agreement with 10 is 0.5 * 1.0 = 0.5 and kappa is 0.
    assert pairs.loc[(10, 20), "cohen_kappa"] == pytest.approx(0.0)
    # Both always used one single class and agreed: perfect agreement, kappa reported as 1.
    assert pairs.loc[(10, 30), "cohen_kappa"] == 1.0


def test_perfect_and_chance_agreement() -> None:
    perfect = np.array([[3, 0], [0, 3], [3, 0]], dtype=float)
    assert krippendorff_alpha_nominal(perfect) == 1.0
    assert fleiss_kappa(perfect) == 1.0
    assert math.isnan(krippendorff_alpha_nominal(np.array([[1, 0], [0, 1]], dtype=float)))  # nothing pairable


def test_box_iou_and_matching() -> None:
    a = {"x": 0, "y": 0, "width": 10, "height": 10, "label": "car"}
    b = {"x": 5, "y": 0, "width": 10, "height": 10, "label": "car"}
    assert box_iou(a, b) == pytest.approx(50 / 150)
    assert box_iou(a, a) == 1.0
    near = {**a, "x": 1}
    other_label = {**a, "label": "bus"}
    f1, iou = box_pair_agreement([a], [near])
    assert f1 == 1.0 and iou == pytest.approx(90 / 110)
    assert box_pair_agreement([a], [other_label])[0] == 0.0  # same place, different label: no match
    assert box_pair_agreement([a, b], [a])[0] == pytest.approx(2 / 3)
    assert box_pair_agreement([], [])[0] == 1.0


def test_span_f1_is_exact_on_offsets_and_label() -> None:
    a = [{"start": 0, "end": 5, "label": "PER"}, {"start": 10, "end": 14, "label": "LOC"}]
    b = [{"start": 0, "end": 5, "label": "PER"}, {"start": 10, "end": 15, "label": "LOC"}]
    assert span_pair_f1(a, b) == 0.5
    assert span_pair_f1(a, a) == 1.0
    assert span_pair_f1([], []) == 1.0
