"""How the reports and the CLI show a metric: light, so a collect with nothing to do prints without pandas."""

from __future__ import annotations

import math
from typing import Any

PERCENT_COLUMNS = ("gold_accuracy", "agreement_with_consensus", "score", "estimated_accuracy")


def format_value(value: Any, column: str = "") -> str:
    """A metric or table value as the reports show it (shares as percentages, "–" for none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column in PERCENT_COLUMNS:
        return f"{float(value):.1%}"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def metrics_lines(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) pairs of the project metrics worth showing."""
    names = [
        ("tasks", "tasks"), ("finished_tasks", "finished tasks"), ("flagged_tasks", "flagged tasks"),
        ("annotations", "annotations"), ("invalid_annotations", "invalid annotations"), ("annotators", "annotators"),
        ("krippendorff_alpha", "Krippendorff's alpha"), ("fleiss_kappa", "Fleiss' kappa"),
        ("mean_cohen_kappa", "mean pairwise Cohen's kappa"), ("mean_pairwise_box_f1", "mean pairwise box F1"),
        ("mean_matched_iou", "mean matched IoU"), ("mean_pairwise_span_f1", "mean pairwise span F1"),
        ("mean_task_agreement", "mean task agreement"), ("mean_confidence", "mean consensus confidence"),
        ("consensus_accuracy_on_gold", "consensus accuracy on gold"), ("aggregation", "aggregation"),
    ]  # fmt: skip
    shown = [(label, format_value(metrics[key])) for key, label in names if key in metrics and metrics[key] is not None]
    # Task types add their own figures (Kendall's W, ordinal alpha, chrF, ...): every other number is shown too.
    known = {key for key, _ in names} | {"task_type", "dawid_skene_iterations"}
    shown += [
        (key.replace("_", " "), format_value(value))
        for key, value in metrics.items()
        if key not in known and isinstance(value, int | float) and not isinstance(value, bool)
    ]
    return shown
