"""Scoring a project's tasks for the model in the loop: cached per model version, training rows out of fold."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from labelflow.tasks.model_loop import score_tasks
from labelflow.tasks.spec import parse_spec
from tests.unit.fakes import FakeObjectStore

SPEC = parse_spec(
    {
        "name": "scores",
        "source": "s3://raw/reviews/",
        "task": "text-classification",
        "labels": ["pos", "neg"],
        "prelabel": {"predictor": "mlflow", "model_uri": "models:/reviews-baseline/latest"},
        "queue": {"order": "entropy"},
    }
)


class CountingModel:
    """A model that says pos at 0.9 for every text, counts what it is asked, and fails on texts saying `crash`."""

    def __init__(self, version: str, out_of_fold: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.model_version = version
        self.asked: list[int] = []
        self._out_of_fold = out_of_fold

    def probabilities(self, items: Sequence[dict[str, Any]]) -> np.ndarray:
        self.asked += [int(item["task_id"]) for item in items]
        return np.array([[np.nan, np.nan] if item["text"] == "crash" else [0.9, 0.1] for item in items])

    def out_of_fold(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._out_of_fold


def items_of(spec: Any, tasks: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"text": text, "task_id": int(t)} for t, text in zip(tasks["task_id"], tasks["text"], strict=True)]


def tasks_table(ids: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"task_id": ids, "text": ["crash" if t == 3 else f"review {t}" for t in ids]})


def test_scores_are_cached_per_version_and_training_rows_use_out_of_fold_scores() -> None:
    store = FakeObjectStore()
    store.ensure_bucket(SPEC.state_location.bucket)
    trained = (np.array([1, 2]), np.array([[0.2, 0.8], [0.6, 0.4]]))
    first_model = CountingModel("models:/reviews-baseline/1", trained)
    first = score_tasks(store, SPEC, tasks_table([1, 2, 3, 4]), first_model, items_of)
    # Training rows 1 and 2 are never asked of the model: their scores come from models that did not see them.
    assert first_model.asked == [3, 4] and first.scored_now == 4
    table = first.table.set_index("task_id")
    assert table.loc[1, "predicted"] == "neg" and table.loc[1, "confidence"] == 0.8 and table.loc[1, "out_of_fold"]
    assert table.loc[4, "predicted"] == "pos" and not table.loc[4, "out_of_fold"]
    assert pd.isna(table.loc[3, "predicted"]) and np.isnan(table.loc[3, "confidence"])  # the model failed on it
    # The next collect asks only about the new task; a new version scores everything again.
    again = CountingModel("models:/reviews-baseline/1", trained)
    second = score_tasks(store, SPEC, tasks_table([1, 2, 3, 4, 5]), again, items_of)
    assert again.asked == [5] and second.scored_now == 1 and len(second.table) == 5
    newer = CountingModel("models:/reviews-baseline/2")
    third = score_tasks(store, SPEC, tasks_table([1, 2, 3, 4, 5]), newer, items_of)
    assert newer.asked == [1, 2, 3, 4, 5] and set(third.table["model_version"]) == {"models:/reviews-baseline/2"}
