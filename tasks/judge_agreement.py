"""How often annotators agreed with an LLM judge's pre-annotation, per judge model version: can the judge be trusted?

Pure: the inputs are the collected annotation rows and the judge's predicted label per task and model version (a
side, a score: the same summary label the task type gives an annotation), read from Label Studio's predictions.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from labelflow.tasks.agreement import cohen_kappa
from labelflow.tasks.task_types.base import FROM_NAME

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec

COLUMNS = ["model_version", "tasks", "annotations", "shown", "agreement", "cohen_kappa"]


def predicted_labels(exported_task: dict[str, Any], spec: ProjectSpec) -> list[dict[str, Any]]:
    """(task_id, model_version, label) of each prediction of one exported task, read like an annotation.

    Label Studio's snapshot export holds a task's predictions in full only when asked for
    (`serialization_options: {predictions: {only_id: false}}`); an annotation made from a prediction always carries
    it in full under `prediction`. Predictions given as ids only are skipped.
    """
    task_type = spec.task_type
    data = exported_task.get("data") or {}
    rows = []
    for prediction in exported_task.get("predictions") or []:
        if not isinstance(prediction, dict):
            continue
        label = prediction_label(prediction, data, spec)
        if label is not None:
            rows.append(
                {
                    "task_id": int(exported_task["id"]),
                    "model_version": prediction.get("model_version") or task_type.name,
                    "label": label,
                }
            )
    return rows


def prediction_label(prediction: dict[str, Any] | None, data: dict[str, Any], spec: ProjectSpec) -> str | None:
    """The summary label of one prediction (a dict with `result`), parsed as the task type parses an annotation."""
    if not isinstance(prediction, dict):
        return None
    result = prediction.get("result")
    if isinstance(result, str):  # some exports keep the result as JSON text
        try:
            result = json.loads(result)
        except json.JSONDecodeError:
            return None
    if not isinstance(result, list):
        return None
    task_type = spec.task_type
    # The built-in interfaces name their labeling control FROM_NAME; record types own every control they define.
    items = [item for item in result if isinstance(item, dict) and task_type.owns_result(item, FROM_NAME)]
    if not items:
        return None
    if task_type.structured_answers:
        label, _, problems = task_type.parse_answer(items, data, spec)
    else:
        label, _, problems = task_type.parse_result(items, set(spec.labels), None, None)
    return None if problems else label


def judge_agreement(annotations: pd.DataFrame, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per judge model version: tasks, annotations, `shown`, share agreeing with the judge and Cohen's kappa.

    `annotations` holds one row per annotation with `task_id`, `label`, `prediction_model_version` and, optionally,
    `prediction_label` (the label of the prediction the annotator started from) and `problem` (unusable rows are
    left out). `predictions` holds the judge's label per task: `task_id`, `model_version`, `label`. Each usable
    annotation on a task the judge labeled is one pair; `shown` counts those whose annotator started from that
    prediction (their agreement may be anchored on it). Kappa is NaN when it is undefined (fewer than two pairs).
    """
    import pandas as pd

    usable = annotations[annotations["label"].notna()]
    if "problem" in usable:
        usable = usable[usable["problem"].isna()]
    judged = [] if predictions is None else [predictions[["task_id", "model_version", "label"]]]
    if "prediction_label" in usable:
        started = usable[usable["prediction_label"].notna() & usable["prediction_model_version"].notna()]
        judged.append(
            started[["task_id", "prediction_model_version", "prediction_label"]].set_axis(
                ["task_id", "model_version", "label"], axis=1
            )
        )
    if not judged:
        return pd.DataFrame(columns=COLUMNS)
    judge = pd.concat(judged, ignore_index=True).dropna().drop_duplicates(["task_id", "model_version"])
    pairs = usable[["task_id", "label", "prediction_model_version"]].merge(
        judge.rename(columns={"label": "judge_label"}), on="task_id"
    )
    rows = []
    for version, group in pairs.groupby("model_version", sort=True):
        humans, judges = group["label"].astype(str).tolist(), group["judge_label"].astype(str).tolist()
        rows.append(
            {
                "model_version": version,
                "tasks": int(group["task_id"].nunique()),
                "annotations": len(group),
                "shown": int((group["prediction_model_version"] == version).sum()),
                "agreement": float((group["label"].astype(str) == group["judge_label"].astype(str)).mean()),
                "cohen_kappa": cohen_kappa(humans, judges) if len(group) >= 2 else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def judge_agreement_metric(annotations: pd.DataFrame, predictions: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """The table as the quality metric `judge_agreement` (rows of plain values, None for an undefined kappa).

    The quality report shows a metric that is a list of rows as a table of its own (quality_report.metric_tables).
    """
    rows = judge_agreement(annotations, predictions).to_dict("records")
    for row in rows:
        if row["cohen_kappa"] != row["cohen_kappa"]:  # NaN
            row["cohen_kappa"] = None
    return rows
