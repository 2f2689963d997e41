"""The annotator and quality report a project lead reads: Markdown for Prefect, HTML with plots and tables in S3."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from labelflow.tasks.ports import ObjectStorePort
from labelflow.tasks.quality import QualityReport
from labelflow.tasks.spec import ProjectSpec, S3Location

if TYPE_CHECKING:
    from labelflow.tasks.collect import CollectStats

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


def annotator_rows(report: QualityReport) -> list[dict[str, str]]:
    """The annotator table as display strings."""
    columns = [
        "annotator_email", "tier", "score", "score_basis", "annotations", "invalid_annotations", "gold_tasks",
        "gold_accuracy", "agreement_with_consensus", "estimated_accuracy", "median_lead_time_seconds",
        "annotations_per_hour",
    ]  # fmt: skip
    present = [c for c in columns if c in report.annotators.columns]
    return [{c: format_value(row[c], c) for c in present} for row in report.annotators.to_dict("records")]


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


def metric_tables(metrics: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Tables among the metrics (a list of rows, such as a model leaderboard), with formatted cells."""
    return {
        key.replace("_", " "): [{column: format_value(cell, column) for column, cell in row.items()} for row in value]
        for key, value in metrics.items()
        if isinstance(value, list) and value and all(isinstance(row, dict) for row in value)
    }


def markdown(spec: ProjectSpec, report: QualityReport, stats: CollectStats, routed: int, location: str) -> str:
    """The Prefect artifact: metrics, annotator table, flagged tasks."""
    lines = [f"# Quality of {spec.name}", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in metrics_lines(report.metrics)]
    lines += [
        f"| collected this run | {stats.changed_tasks} tasks, {stats.annotation_rows} annotations |",
        f"| routed back for another annotation | {routed} |",
        "",
    ]
    for title, table in metric_tables(report.metrics).items():
        header = list(table[0])
        lines += [
            f"## {title[:1].upper()}{title[1:]}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + " --- |" * len(header),
        ]
        lines += ["| " + " | ".join(row.get(c, "").replace("|", "\\|") for c in header) + " |" for row in table[:50]]
        lines.append("")
    lines += ["## Annotators", ""]
    rows = annotator_rows(report)
    if rows:
        header = list(rows[0])
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row[c].replace("|", "\\|") for c in header) + " |" for row in rows]
    flagged = report.flagged()
    lines += ["", f"## Flagged tasks ({len(flagged)})", ""]
    if len(flagged):
        lines += ["| task | agreement | reason |", "| --- | --- | --- |"]
        lines += [
            f"| {row.task_id} | {format_value(row.agreement)} | {row.flag_reason} |"
            for row in flagged.head(50).itertuples(index=False)
        ]
    lines += ["", f"Full report, tables and plots: `{location}`"]
    return "\n".join(lines)


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def plots(report: QualityReport, spec: ProjectSpec) -> dict[str, str]:
    """Base64 PNGs: annotator scores by tier, task agreement histogram, label distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: dict[str, str] = {}
    annotators = report.annotators
    if len(annotators):
        figure, axis = plt.subplots(figsize=(7, max(2.0, 0.35 * len(annotators) + 1)))
        tiers = list(dict.fromkeys(annotators["tier"]))
        colours = {tier: plt.get_cmap("tab10")(i) for i, tier in enumerate(tiers)}
        names = annotators["annotator_email"].fillna(annotators["annotator_id"].astype(str))
        scores = pd.to_numeric(annotators["score"], errors="coerce").fillna(0.0)
        axis.barh(names, scores, color=[colours[t] for t in annotators["tier"]])
        for tier, threshold in spec.quality.tiers.items():
            axis.axvline(threshold, linestyle=":", color="grey")
            axis.text(threshold, -0.9, tier, fontsize=7, color="grey")
        axis.invert_yaxis()
        axis.set_xlim(0, 1)
        axis.set_xlabel("score (gold accuracy, else agreement with consensus)")
        axis.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colours[t]) for t in tiers], labels=tiers, fontsize=8)
        images["annotator_scores"] = _png(figure)
        plt.close(figure)
    finished = report.consensus[report.consensus["finished"]]
    agreement = pd.to_numeric(finished["agreement"], errors="coerce").dropna()
    if len(agreement):
        figure, axis = plt.subplots(figsize=(7, 3))
        axis.hist(agreement, bins=20, range=(0, 1), color="#4c72b0")
        axis.axvline(spec.quality.min_agreement, color="red", linestyle="--", label="min_agreement")
        axis.set_xlabel("task agreement")
        axis.set_ylabel("finished tasks")
        axis.legend(fontsize=8)
        images["task_agreement"] = _png(figure)
        plt.close(figure)
    distribution = report.metrics.get("label_distribution") or {}
    if distribution:
        figure, axis = plt.subplots(figsize=(7, max(2.0, 0.3 * len(distribution) + 1)))
        axis.barh(list(distribution), list(distribution.values()), color="#55a868")
        axis.invert_yaxis()
        axis.set_xlabel("consensus labels (finished, not flagged)")
        images["label_distribution"] = _png(figure)
        plt.close(figure)
    return images


def html_report(spec: ProjectSpec, report: QualityReport, images: dict[str, str]) -> str:
    """A self-contained HTML page (no external assets)."""
    esc = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>labelflow quality: {esc(spec.name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#f3f3f3}</style>",
        f"<h1>Annotation quality: {esc(spec.name)}</h1>",
        "<table>",
        *[f"<tr><th>{esc(n)}</th><td>{esc(v)}</td></tr>" for n, v in metrics_lines(report.metrics)],
        "</table>",
    ]
    for title, table in metric_tables(report.metrics).items():
        parts.append(
            f"<h2>{esc(title[:1].upper() + title[1:])}</h2><table><tr>"
            + "".join(f"<th>{esc(c)}</th>" for c in table[0])
            + "</tr>"
        )
        parts += [
            "<tr>" + "".join(f"<td>{esc(row.get(c, ''))}</td>" for c in table[0]) + "</tr>" for row in table[:500]
        ]
        parts.append("</table>")
    for key, title in (
        ("annotator_scores", "Annotators"),
        ("task_agreement", "Task agreement"),
        ("label_distribution", "Labels"),
    ):
        if key in images:
            parts.append(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{images[key]}'>")
    rows = annotator_rows(report)
    if rows:
        parts.append("<h2>Annotator table</h2><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in rows[0]) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row.values()) + "</tr>" for row in rows]
        parts.append("</table>")
    flagged = report.flagged()
    parts.append(
        f"<h2>Flagged tasks ({len(flagged)})</h2><table><tr><th>task</th><th>agreement</th><th>reason</th></tr>"
    )
    parts += [
        f"<tr><td>{row.task_id}</td><td>{esc(format_value(row.agreement))}</td><td>{esc(str(row.flag_reason))}</td></tr>"
        for row in flagged.head(500).itertuples(index=False)
    ]
    parts.append("</table>")
    return "\n".join(parts)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def write_quality_report(
    store: ObjectStorePort, spec: ProjectSpec, report: QualityReport, stats: CollectStats, run_name: str
) -> str:
    """Write consensus.parquet, annotators.csv, pairwise.csv, metrics.json and report.html; return the folder URI."""
    state: S3Location = spec.state_location
    base = state.join("collect", "reports", run_name)
    metrics = {k: _jsonable(v) for k, v in report.metrics.items()}
    files: dict[str, tuple[bytes, str]] = {
        "metrics.json": (
            json.dumps({"metrics": metrics, "collection": stats.as_dict()}, indent=2, default=str).encode(),
            "application/json",
        ),
        "annotators.csv": (report.annotators.to_csv(index=False).encode("utf-8"), "text/csv; charset=utf-8"),
        "pairwise.csv": (report.pairwise.to_csv(index=False).encode("utf-8"), "text/csv; charset=utf-8"),
        "flagged.csv": (
            report.flagged().drop(columns=["regions"], errors="ignore").to_csv(index=False).encode("utf-8"),
            "text/csv; charset=utf-8",
        ),
        "report.html": (html_report(spec, report, plots(report, spec)).encode("utf-8"), "text/html; charset=utf-8"),
    }
    buffer = io.BytesIO()
    report.consensus.to_parquet(buffer, index=False)
    files["consensus.parquet"] = (buffer.getvalue(), "application/vnd.apache.parquet")
    for name, (payload, content_type) in files.items():
        store.put_bytes(state.bucket, f"{base}/{name}", payload, content_type)
    return f"s3://{state.bucket}/{base}/"
