"""The model in the loop at collect time: score the project's tasks, label the sure ones, keep the queue's order.

Scores are cached per model version in the project's state (`automation/scores.parquet`), so a collect scores only
the tasks the version has not seen; a newly registered version (an alias or `latest` moving) re-scores them all.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from labelflow.integrations.object_store import ObjectStoreError
from labelflow.tasks.automation import AutomationPlan, AutomationRecord, plan_automation
from labelflow.tasks.ports import LabelStudioPort, ObjectStorePort
from labelflow.tasks.queue_order import QueueOrder, order_queue
from labelflow.tasks.run_records import read_run_record, write_run_record
from labelflow.tasks.spec import ProjectSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SCORES_FILE = "automation/scores.parquet"
RECORD_NAME = "automation/record.json"
SCORE_BATCH = 512  # tasks per model call: bounded memory whatever the project's size


class ClassProbabilities(Protocol):
    """A loaded classifier (tasks/prelabel.py MLflowPredictor): class probabilities per item, NaN rows on failure."""

    model_version: str

    def probabilities(self, items: Sequence[dict[str, Any]]) -> np.ndarray:
        """(items, classes) probabilities in the spec's label order."""
        ...

    def out_of_fold(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(task ids, probabilities) of the model's own training rows, each from a model that did not see it."""
        ...


@dataclass(frozen=True)
class TaskScores:
    """The model's view of every task: predicted class, top probability, all probabilities (NaN: it failed)."""

    model_version: str
    table: pd.DataFrame  # task_id, model_version, predicted, confidence, probabilities (list of floats)
    scored_now: int  # tasks this collect scored (0 when the cache had them all)


def read_scores(store: ObjectStorePort, spec: ProjectSpec) -> pd.DataFrame | None:
    """The cached scores, or None before the first scoring."""
    import pandas as pd

    state = spec.state_location
    try:
        return pd.read_parquet(io.BytesIO(store.get_bytes(state.bucket, state.join(SCORES_FILE))))
    except ObjectStoreError as exc:
        if exc.not_found:
            return None
        raise


def score_tasks(
    store: ObjectStorePort,
    spec: ProjectSpec,
    tasks: pd.DataFrame,
    model: ClassProbabilities,
    items_of: Callable[[ProjectSpec, pd.DataFrame], list[dict[str, Any]]],
) -> TaskScores:
    """Scores of the project's tasks by the model's version: cached ones reused, the others computed in batches."""
    import numpy as np
    import pandas as pd

    version = model.model_version
    cached = read_scores(store, spec)
    if cached is not None:
        cached = cached[cached["model_version"] == version]
    known = set() if cached is None else set(cached["task_id"].tolist())
    todo = tasks.drop_duplicates("task_id")
    todo = todo[~todo["task_id"].isin(known)]
    parts = [] if cached is None else [cached]
    labels = np.array(spec.labels, dtype=object)
    # The model's training rows are scored out of fold: calibrating on its in-sample confidences would promise an
    # accuracy its labels of unseen tasks do not reach (bench/model_loop_bench.py measures how far off).
    trained_on: dict[int, np.ndarray] = {}
    if len(todo) and (found := model.out_of_fold()) is not None:
        trained_on = {int(t): row for t, row in zip(found[0], found[1], strict=True)}
    for start in range(0, len(todo), SCORE_BATCH):
        batch = todo.iloc[start : start + SCORE_BATCH]
        ids = batch["task_id"].astype("int64").tolist()
        inside = [i for i, t in enumerate(ids) if t in trained_on]
        outside = [i for i, t in enumerate(ids) if t not in trained_on]
        probabilities = np.full((len(ids), len(labels)), np.nan)
        for i in inside:
            probabilities[i] = trained_on[ids[i]]
        if outside:
            probabilities[outside] = np.asarray(model.probabilities(items_of(spec, batch.iloc[outside])), dtype=float)
        failed = ~np.isfinite(probabilities).all(axis=1)
        top = np.nan_to_num(probabilities, nan=-1.0).argmax(axis=1)
        parts.append(
            pd.DataFrame(
                {
                    "task_id": batch["task_id"].astype("int64").to_numpy(),
                    "model_version": version,
                    "predicted": np.where(failed, None, labels[top]),
                    "confidence": np.where(failed, np.nan, np.nan_to_num(probabilities, nan=0.0).max(axis=1)),
                    "probabilities": [
                        None if bad else row.tolist() for row, bad in zip(probabilities, failed, strict=True)
                    ],
                    "out_of_fold": np.isin(np.arange(len(ids)), inside),
                }
            )
        )
    table = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(
            columns=["task_id", "model_version", "predicted", "confidence", "probabilities", "out_of_fold"]
        )
    )
    table = table[table["task_id"].isin(tasks["task_id"])].reset_index(drop=True)  # deleted tasks drop out
    if len(todo):
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        state = spec.state_location
        store.put_bytes(state.bucket, state.join(SCORES_FILE), buffer.getvalue(), "application/vnd.apache.parquet")
    return TaskScores(version, table, len(todo))


def held_tasks(store: ObjectStorePort, spec: ProjectSpec) -> frozenset[int]:
    """The tasks automated labeling holds out of people's queue (the model labeled them)."""
    return frozenset(AutomationRecord.from_record(read_run_record(store, spec.state_location, RECORD_NAME)).held)


def automate_collection(
    store: ObjectStorePort,
    spec: ProjectSpec,
    consensus: pd.DataFrame,
    scores: TaskScores,
) -> AutomationPlan:
    """Plan this collect's machine labels from the judged consensus, the scores and the earlier collects' record."""
    assert spec.automate is not None
    record = AutomationRecord.from_record(read_run_record(store, spec.state_location, RECORD_NAME))
    return plan_automation(spec.automate, spec.quality.seed, consensus, scores.table, scores.model_version, record)


def apply_automation(
    ls: LabelStudioPort, store: ObjectStorePort, spec: ProjectSpec, project_id: int, plan: AutomationPlan
) -> None:
    """Take the newly machine-labeled tasks out of people's queue, give back the released ones, then record it.

    Recorded last: a collect that fails half way holds or releases again next time (both are idempotent).
    """
    if plan.release:
        ls.release_tasks(project_id, plan.release, spec.overlap)
    # A changed overlap reset every task's in Label Studio (ingest updates the project): hold them all again.
    hold = plan.record.held if plan.record.overlap not in (None, spec.overlap) else plan.hold
    if hold:
        ls.hold_tasks(project_id, hold)
    record = dataclasses.replace(plan.record, overlap=spec.overlap)
    write_run_record(store, spec.state_location, RECORD_NAME, record.as_record())


def refresh_queue(
    ls: LabelStudioPort,
    spec: ProjectSpec,
    project_id: int,
    consensus: pd.DataFrame,
    scores: TaskScores,
) -> QueueOrder:
    """Order the tasks people still have to label by the model's uncertainty (`queue.order`), each with its pre-label.

    The machine-labeled tasks are finished in `consensus` (and held out of the queue), so they are not scored here.
    """
    import numpy as np

    from labelflow.tasks.label_config import label_interface

    open_tasks = consensus.loc[~consensus["finished"].astype(bool), "task_id"]
    rows = scores.table[scores.table["task_id"].isin(open_tasks)]
    k = len(spec.labels)
    probabilities = np.array(
        [p if p is not None and len(p) == k else [np.nan] * k for p in rows["probabilities"]], dtype=float
    ).reshape(len(rows), k)
    interface = label_interface(spec)
    results = [
        [
            {
                "from_name": interface.from_name,
                "to_name": interface.to_name,
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]
        if isinstance(label, str)
        else []
        for label in rows["predicted"]
    ]
    return order_queue(
        ls, project_id, spec.queue.order, rows["task_id"].tolist(), probabilities, scores.model_version, results
    )
