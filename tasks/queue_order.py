"""Uncertainty-first queues: Label Studio serves the tasks people still have to label, most uncertain first.

How (verified on Label Studio 1.23 Community: tests/integration/test_queue_order.py, tests/browser/
test_queue_order_page.py): the project's sampling is "Uncertainty sampling", a mode the Community settings page shows
greyed out as Enterprise-only but the Community server implements and its API accepts. "Label All Tasks" (the Data
Manager's `next_task` action, or `GET /api/projects/{id}/next`) then serves, among the unfinished tasks, those with a
prediction of the project's `model_version` in ascending prediction `score` (projects/functions/next_task.py
`_try_uncertainty_sampling`: `order_by('predictions__score')`, first task not locked by someone else; it would pick
at random only for a project with several members, which Community never records). So each unfinished task gets a
prediction of the model version scored with the model's *certainty* by the spec's measure (1 - uncertainty), and
the project's `model_version` is that version.

Left to Label Studio: with overlap > 1 it first finishes tasks other annotators started (breadth first, at random
among them); tasks without a prediction of the version come after every scored one; skipped and postponed tasks come
back last; "Label Tasks As Displayed" follows the Data Manager tab's ordering instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

    from labelflow.tasks.ports import LabelStudioPort

QueueOrderName = Literal["least-confident", "margin", "entropy"]
UNCERTAINTY_SAMPLING = "Uncertainty sampling"  # Label Studio's Project.UNCERTAINTY
# Predictions per import request. Label Studio 1.23 recounts every task of the project after each import (its
# legacy prediction import), so fewer, larger requests are cheaper; bench/queue_order_bench.py measures it.
PREDICTION_BATCH = 10000
SCORE_DIGITS = 6  # ties beyond this are noise, and short numbers keep requests small
# A stored score this close to the wanted one is left alone: pre-labels made at ingest round theirs to 4 digits.
SCORE_TOLERANCE = 1e-4


def uncertainty(probabilities: np.ndarray, order: QueueOrderName) -> np.ndarray:
    """Each row's uncertainty in [0, 1], higher is more uncertain; NaN where the row holds a NaN (the model failed).

    `least-confident`: 1 - top probability. `margin`: 1 - (top - runner-up). `entropy`: Shannon entropy of the row
    divided by log(classes).
    """
    import numpy as np

    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"class probabilities must be a (tasks, classes >= 2) array, not shape {p.shape}")
    failed = np.isnan(p).any(axis=1)
    p = np.where(np.isnan(p), 0.0, np.clip(p, 0.0, 1.0))
    totals = p.sum(axis=1, keepdims=True)
    p = np.divide(p, totals, out=np.full_like(p, 1.0 / p.shape[1]), where=totals > 0)  # rows of a model sum to 1
    if order == "least-confident":
        result = 1.0 - p.max(axis=1)
    elif order == "margin":
        top_two = np.sort(p, axis=1)[:, -2:]
        result = 1.0 - (top_two[:, 1] - top_two[:, 0])
    elif order == "entropy":
        logs = np.log(p, out=np.zeros_like(p), where=p > 0)
        result = -(p * logs).sum(axis=1) / np.log(p.shape[1])
    else:
        raise ValueError(f"unknown queue order {order!r}: least-confident, margin or entropy")
    result = np.clip(result, 0.0, 1.0)
    result[failed] = np.nan
    return result


def queue_scores(probabilities: np.ndarray, order: QueueOrderName) -> np.ndarray:
    """Label Studio prediction scores that put the most uncertain task first: 1 - uncertainty (NaN: no score)."""
    import numpy as np

    return np.round(1.0 - uncertainty(probabilities, order), SCORE_DIGITS)


@dataclass(frozen=True)
class QueueOrder:
    """What `order_queue` did: tasks given a queue prediction now, tasks that had one, tasks the model failed on."""

    model_version: str
    order: str
    scored: int  # predictions imported
    rescored: int  # tasks whose prediction of the version had another score (ingest's pre-label, another order)
    already_scored: int  # tasks whose prediction of the version had the wanted score: nothing sent
    unscored: int  # NaN rows: no prediction, so Label Studio serves them after every scored task
    project_updated: bool  # the project's sampling or model_version was changed


def order_queue(
    ls: LabelStudioPort,
    project_id: int,
    order: str,
    task_ids: Sequence[int],
    probabilities: np.ndarray,
    model_version: str,
    results: Sequence[list[dict[str, Any]]] | None = None,
    batch: int = PREDICTION_BATCH,
) -> QueueOrder:
    """Make Label Studio serve `task_ids` most uncertain first, by `order` (the spec's `queue.order`).

    `probabilities[i]` are the model's class probabilities for `task_ids[i]` (NaN row: it failed on that task);
    `model_version` is the version the pre-labels carry. `results`, when given, is each task's pre-label (Label
    Studio result list) stored with the score; annotators see the predictions of the project's model version only, so
    without it a task scored here shows no pre-label. A task that has a prediction of `model_version` already (the
    pre-label ingest made) keeps it, with its score corrected when it differs (one PATCH each). Idempotent: a re-run
    with the same version and order costs one listing of the project's predictions; a new version scores every task.
    With `order` "off" nothing changes.
    """
    import numpy as np

    if order == "off":
        return QueueOrder(model_version, order, 0, 0, 0, 0, False)
    if order not in ("least-confident", "margin", "entropy"):
        raise ValueError(f"unknown queue order {order!r}: off, least-confident, margin or entropy")
    ids = [int(task_id) for task_id in task_ids]
    scores = queue_scores(probabilities, order) if ids else np.zeros(0)  # type: ignore[arg-type]
    if len(scores) != len(ids):
        raise ValueError(f"{len(ids)} task ids but {len(scores)} rows of class probabilities")
    if results is not None and len(results) != len(ids):
        raise ValueError(f"{len(ids)} task ids but {len(results)} pre-label results")
    if len(set(ids)) != len(ids):
        raise ValueError("task ids repeat: each task gets one queue score")
    project = ls.get_project(project_id)
    if project is None:
        raise ValueError(f"Label Studio project {project_id} does not exist")

    version_exists = model_version in ls.model_versions(project_id)
    stored = ls.prediction_scores(project_id, model_version) if version_exists else {}

    unscored = int(np.isnan(scores).sum())
    todo = [i for i, task_id in enumerate(ids) if task_id not in stored and not np.isnan(scores[i])]
    # Predictions of the version with another score: ingest's pre-labels (top probability), or an earlier order.
    rescore = {
        task_id: [
            prediction
            for prediction, score in stored[task_id]
            if score is None or abs(score - scores[i]) > SCORE_TOLERANCE
        ]
        for i, task_id in enumerate(ids)
        if task_id in stored and not np.isnan(scores[i])
    }
    rescore = {task_id: predictions for task_id, predictions in rescore.items() if predictions}
    for i, task_id in enumerate(ids):
        for prediction_id in rescore.get(task_id, []):
            ls.set_prediction_score(prediction_id, float(scores[i]))
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        ls.import_predictions(
            project_id,
            [
                {
                    "task": ids[i],
                    "model_version": model_version,
                    "score": float(scores[i]),
                    "result": list(results[i]) if results is not None else [],
                }
                for i in chunk
            ],
        )
    # Label Studio accepts a model_version only once a prediction carries it; Uncertainty sampling without a single
    # prediction of the version would serve at random: the project switches only when the version has some.
    updates: dict[str, Any] = {}
    if version_exists or todo:
        if project.get("model_version") != model_version:
            updates["model_version"] = model_version
        if project.get("sampling") != UNCERTAINTY_SAMPLING:
            updates["sampling"] = UNCERTAINTY_SAMPLING
    if updates:
        ls.update_project(project_id, **updates)
    already_scored = sum(1 for task_id in ids if task_id in stored) - len(rescore)
    changed = bool(updates)
    return QueueOrder(model_version, order, len(todo), len(rescore), already_scored, unscored, changed)
