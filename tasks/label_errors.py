"""Suspect labels in a classification dataset: consensus labels that are probably wrong (issue 19, section 4).

Out-of-fold predicted probabilities from a model trained on the other folds (so no row judges itself) go to
cleanlab's confident learning (`cleanlab.filter.find_label_issues`, release 2.9, Apache-2.0), which flags the rows
whose given label the model finds improbable relative to the per-class confidence thresholds it estimates. Not wired
into collect yet: `bench/label_errors_bench.py` measures it on a real corpus with planted flips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

FOLDS = 5


def out_of_fold_text_probabilities(texts: Sequence[str], labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """P(class | text) for each row from a model that never saw it: character 1-3-gram TF-IDF + logistic
    regression (works for Chinese, which has no spaces), cross-fitted over stratified folds."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[label] for label in labels])
    model = make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=4.0),
    )
    folds = StratifiedKFold(n_splits=min(FOLDS, int(np.bincount(y).min())), shuffle=True, random_state=0)
    return cross_val_predict(model, list(texts), y, cv=folds, method="predict_proba")


def suspect_rows(labels: Sequence[str], probabilities: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Positions of rows whose label is probably wrong, most suspicious first (cleanlab's self-confidence order)."""
    import numpy as np
    from cleanlab.filter import find_label_issues

    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[label] for label in labels])
    return np.asarray(find_label_issues(y, probabilities, return_indices_ranked_by="self_confidence"), dtype=int)
