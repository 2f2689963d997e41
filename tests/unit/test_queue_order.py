"""Uncertainty measures and `order_queue` against an in-memory Label Studio that keeps predictions as the server does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from labelflow.tasks.queue_order import UNCERTAINTY_SAMPLING, order_queue, queue_scores, uncertainty

ROWS = np.array(
    [
        [0.90, 0.05, 0.05],  # sure
        [0.40, 0.35, 0.25],  # unsure on every measure
        [0.50, 0.50, 0.00],  # a coin toss between two: smallest margin
        [0.60, 0.20, 0.20],
    ]
)


def test_least_confident_is_one_minus_the_top_probability() -> None:
    assert uncertainty(ROWS, "least-confident") == pytest.approx([0.10, 0.60, 0.50, 0.40])


def test_margin_puts_the_two_way_tie_first() -> None:
    values = uncertainty(ROWS, "margin")
    assert values == pytest.approx([1 - 0.85, 1 - 0.05, 1.0, 1 - 0.40])
    assert int(np.argmax(values)) == 2


def test_entropy_is_normalised_by_the_number_of_classes() -> None:
    values = uncertainty(np.array([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]), "entropy")
    assert values == pytest.approx([1.0, 0.0, np.log(2) / np.log(3)])


def test_scores_serve_the_most_uncertain_first_when_sorted_ascending() -> None:
    for order in ("least-confident", "margin", "entropy"):
        served = np.argsort(queue_scores(ROWS, order), kind="stable")
        assert list(served) == list(np.argsort(-uncertainty(ROWS, order), kind="stable")), order
        assert served[-1] == 0  # the sure row comes last on every measure


def test_a_failed_row_has_no_score_and_unnormalised_rows_are_normalised() -> None:
    values = uncertainty(np.array([[np.nan, 0.5], [2.0, 2.0]]), "least-confident")
    assert np.isnan(values[0])
    assert values[1] == pytest.approx(0.5)


@pytest.mark.parametrize("shape", [(3,), (3, 1)])
def test_probabilities_of_the_wrong_shape_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="classes >= 2"):
        uncertainty(np.full(shape, 0.5), "margin")


class QueueServer:
    """Projects with predictions as Label Studio 1.23 keeps them, and the calls made."""

    def __init__(self, task_ids: list[int]) -> None:
        self.project: dict[str, Any] = {"id": 7, "sampling": "Sequential sampling", "model_version": ""}
        self.tasks = set(task_ids)
        self.predictions: list[dict[str, Any]] = []
        self.calls: list[str] = []

    def get_project(self, project_id: int) -> dict[str, Any] | None:
        self.calls.append("get_project")
        return dict(self.project) if project_id == 7 else None

    def model_versions(self, project_id: int) -> dict[str, int]:
        self.calls.append("model_versions")
        counts: dict[str, int] = {}
        for prediction in self.predictions:
            counts[prediction["model_version"]] = counts.get(prediction["model_version"], 0) + 1
        return counts

    def update_project(self, project_id: int, **fields: Any) -> None:
        self.calls.append("update_project")
        version = fields.get("model_version")
        if version is not None and version not in self.model_versions(project_id):
            raise AssertionError(f"Label Studio refuses model_version {version!r}: no prediction carries it")
        self.project.update(fields)

    def prediction_scores(self, project_id: int, model_version: str) -> dict[int, list[tuple[int, float | None]]]:
        self.calls.append("prediction_scores")
        found: dict[int, list[tuple[int, float | None]]] = {}
        for number, prediction in enumerate(self.predictions):
            if prediction["model_version"] == model_version:
                found.setdefault(prediction["task"], []).append((number, prediction["score"]))
        return found

    def set_prediction_score(self, prediction_id: int, score: float) -> None:
        self.calls.append("rescore")
        self.predictions[prediction_id]["score"] = score

    def import_predictions(self, project_id: int, predictions: list[dict[str, Any]]) -> int:
        self.calls.append(f"import {len(predictions)}")
        assert {p["task"] for p in predictions} <= self.tasks
        self.predictions.extend(predictions)
        return len(predictions)

    def served_order(self) -> list[int]:
        """What uncertainty sampling serves: tasks with a prediction of the project's version, ascending score."""
        current = [p for p in self.predictions if p["model_version"] == self.project["model_version"]]
        return [p["task"] for p in sorted(current, key=lambda p: p["score"])]


def test_order_queue_scores_every_task_in_batches_then_switches_the_project() -> None:
    server = QueueServer([11, 12, 13, 14])
    done = order_queue(server, 7, "margin", [11, 12, 13, 14], ROWS, "m v1", batch=3)  # type: ignore[arg-type]
    assert (done.scored, done.already_scored, done.unscored, done.project_updated) == (4, 0, 0, True)
    assert [c for c in server.calls if c.startswith("import")] == ["import 3", "import 1"]
    assert server.project["sampling"] == UNCERTAINTY_SAMPLING and server.project["model_version"] == "m v1"
    assert server.served_order() == [13, 12, 14, 11]


def test_a_second_run_with_the_same_version_imports_nothing() -> None:
    server = QueueServer([11, 12, 13, 14])
    order_queue(server, 7, "entropy", [11, 12, 13, 14], ROWS, "m v1")  # type: ignore[arg-type]
    server.calls.clear()
    again = order_queue(server, 7, "entropy", [11, 12, 13, 14], ROWS, "m v1")  # type: ignore[arg-type]
    assert (again.scored, again.already_scored, again.project_updated) == (0, 4, False)
    assert not [c for c in server.calls if c.startswith("import") or c == "update_project"]


def test_new_tasks_and_a_new_version_are_scored_and_pre_labels_ride_along() -> None:
    server = QueueServer([11, 12, 13, 14])
    order_queue(server, 7, "least-confident", [11, 12], ROWS[:2], "m v1")  # type: ignore[arg-type]
    more = order_queue(server, 7, "least-confident", [11, 12, 13, 14], ROWS, "m v1")  # type: ignore[arg-type]
    assert (more.scored, more.rescored, more.already_scored) == (2, 0, 2)
    flipped = ROWS[::-1].copy()
    results = [[{"type": "choices", "value": {"choices": [str(i)]}}] for i in range(4)]
    new = order_queue(server, 7, "least-confident", [11, 12, 13, 14], flipped, "m v2", results)  # type: ignore[arg-type]
    assert (new.scored, new.already_scored) == (4, 0)
    assert server.project["model_version"] == "m v2"
    assert server.served_order() == [13, 12, 11, 14]  # the new version's scores decide
    assert [p["result"] for p in server.predictions if p["model_version"] == "m v2"] == results


def test_ingest_pre_labels_of_the_version_are_kept_and_their_scores_corrected() -> None:
    server = QueueServer([11, 12, 13])
    # Ingest's pre-labels score the top probability, rounded to 4 digits: right for least-confident, not for margin.
    for task, row in zip([11, 12], ROWS[:2], strict=True):
        server.predictions.append({"task": task, "model_version": "m v3", "score": round(row.max(), 4), "result": []})
    same = order_queue(server, 7, "least-confident", [11, 12, 13], ROWS[:3], "m v3")  # type: ignore[arg-type]
    assert (same.scored, same.rescored, same.already_scored) == (1, 0, 2)
    assert server.project["model_version"] == "m v3"
    changed = order_queue(server, 7, "margin", [11, 12, 13], ROWS[:3], "m v3")  # type: ignore[arg-type]
    assert (changed.scored, changed.rescored, changed.already_scored) == (0, 3, 0)
    assert len(server.predictions) == 3 and server.served_order() == [13, 12, 11]


def test_failed_rows_get_no_prediction_and_off_changes_nothing() -> None:
    server = QueueServer([11, 12])
    rows = np.array([[np.nan, np.nan], [0.7, 0.3]])
    done = order_queue(server, 7, "margin", [11, 12], rows, "m v1")  # type: ignore[arg-type]
    assert (done.scored, done.unscored) == (1, 1)
    server.calls.clear()
    off = order_queue(server, 7, "off", [11, 12], rows, "m v9")  # type: ignore[arg-type]
    assert (off.scored, server.calls) == (0, [])


def test_nothing_to_score_leaves_the_sampling_alone() -> None:
    server = QueueServer([11])
    done = order_queue(server, 7, "margin", [11], np.array([[np.nan, np.nan]]), "m v1")  # type: ignore[arg-type]
    assert (done.scored, done.project_updated, server.project["sampling"]) == (0, False, "Sequential sampling")


@pytest.mark.parametrize(
    ("task_ids", "rows", "message"),
    [
        ([1, 2], ROWS[:1], "2 task ids but 1 rows"),
        ([1, 1], ROWS[:2], "task ids repeat"),
    ],
)
def test_mismatched_inputs_are_refused(task_ids: list[int], rows: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        order_queue(QueueServer(task_ids), 7, "margin", task_ids, rows, "m v1")  # type: ignore[arg-type]


def test_an_unknown_order_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown queue order"):
        order_queue(QueueServer([1]), 7, "random", [1], ROWS[:1], "m v1")  # type: ignore[arg-type]
