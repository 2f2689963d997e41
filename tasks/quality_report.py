"""The annotator and quality report a project lead reads: Markdown for Prefect, one self-contained HTML page in S3.

The HTML page's charts are Vega-Lite specs drawn by the browser (as SVG, with the browser's fonts, so labels in
any script render as text); vega, vega-lite and vega-embed are inlined from the copies vendored for the Data Docs
(integrations/datadocs_assets/vega, BSD-3-Clause), so the page opens offline.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from labelflow.tasks.ports import ObjectStorePort
from labelflow.tasks.quality import QualityReport
from labelflow.tasks.report_values import format_value, metrics_lines
from labelflow.tasks.spec import ProjectSpec, S3Location

if TYPE_CHECKING:
    from labelflow.tasks.automation import AutomationOutcome
    from labelflow.tasks.collect import CollectStats
    from labelflow.tasks.label_errors import Suspects

VEGA_LIBRARIES = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")  # in load order: embed needs both
SNIPPET_CHARACTERS = 240
FLAGGED_ROWS = 500  # rows of the HTML table; flagged.csv next to it has them all
SUSPECT_ROWS = 200  # suspected label errors shown on the page; suspects.csv next to it has them all
THUMBNAIL_TASKS = 100  # image tasks read from the object store for a thumbnail, at most
THUMBNAIL_PIXELS = 160
THUMBNAIL_SOURCE_BYTES = 32 * 1024 * 1024
CHART_WIDTH = 640
LONG_CELL_CHARACTERS = 16
TIER_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d")


@dataclass(frozen=True)
class ReportContext:
    """What the report shows beyond the judged tables: each task's content, every answer, its Label Studio page."""

    tasks: pd.DataFrame | None = None
    annotations: pd.DataFrame | None = None
    label_studio_url: str | None = None
    project_id: int | None = None
    suspects: Suspects | None = None  # suspected label errors (tasks/label_errors.py); no section without them
    automation: AutomationOutcome | None = None  # what automated labeling did (tasks/automation.py); likewise

    def task_link(self, task_id: int) -> str | None:
        """The task's Label Studio page, when the server and project are known."""
        if self.label_studio_url is None or self.project_id is None:
            return None
        return task_url(self.label_studio_url, self.project_id, task_id)

    def project_link(self) -> str | None:
        """The project's Label Studio page, when the server and project are known."""
        if self.label_studio_url is None or self.project_id is None:
            return None
        return f"{self.label_studio_url.rstrip('/')}/projects/{self.project_id}"


def task_url(label_studio_url: str, project_id: int, task_id: int) -> str:
    """The Label Studio page of one task (the Data Manager with the task open)."""
    return f"{label_studio_url.rstrip('/')}/projects/{project_id}/data?task={task_id}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def score_interval(row: dict[str, Any]) -> str:
    """An annotator's 95% score interval as "low–high" percentages, "–" without one."""
    low, high = row.get("score_low"), row.get("score_high")
    if _missing(low) or _missing(high):
        return "–"
    return f"{float(low):.1%}–{float(high):.1%}"


def annotator_name(row: dict[str, Any]) -> str:
    """The annotator's email, else their Label Studio user id."""
    email = row.get("annotator_email")
    return str(email) if isinstance(email, str) and email else f"annotator {row.get('annotator_id')}"


def annotator_rows(report: QualityReport) -> list[dict[str, str]]:
    """The annotator table as display strings."""
    columns = [
        "annotator_email", "tier", "score", "score_interval", "score_basis", "score_tasks", "annotations",
        "invalid_annotations", "gold_tasks", "gold_accuracy", "agreement_with_consensus", "estimated_accuracy",
        "median_lead_time_seconds", "annotations_per_hour",
    ]  # fmt: skip
    frame = report.annotators
    present = [c for c in columns if c in frame.columns or (c == "score_interval" and "score_low" in frame.columns)]
    rows = []
    for record in frame.to_dict("records"):
        shown = {c: format_value(record.get(c), c) for c in present}
        if "annotator_email" in shown:
            shown["annotator_email"] = annotator_name(record)
        if "score_interval" in shown:
            shown["score_interval"] = score_interval(record)
        rows.append(shown)
    return rows


def _money(value: Any) -> str:
    """An amount as the cost table shows it: cents from 100 up, else four significant digits (0.05, 0.1833)."""
    if _missing(value):
        return "–"
    amount = float(value)
    return f"{amount:,.2f}" if abs(amount) >= 100 else f"{amount:.4g}"


def cost_rows(metrics: dict[str, Any]) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """The cost summary as (name, value) lines and a per-tier table; both empty without `quality.cost_per_annotation`."""
    cost = metrics.get("cost")
    if not isinstance(cost, dict):
        return [], []
    lines = [
        ("total cost", _money(cost.get("total"))),
        ("cost per published row", _money(cost.get("per_published_row"))),
        ("published rows", str(cost.get("published_rows", "–"))),
        ("annotations paid", str(cost.get("annotations", "–"))),
    ]
    tiers = [
        {
            "tier": str(row.get("tier")),
            "annotators": str(row.get("annotators")),
            "annotations": str(row.get("annotations")),
            "cost per annotation": _money(row.get("cost_per_annotation")),
            "cost": _money(row.get("cost")),
        }
        for row in cost.get("by_tier") or []
    ]
    return lines, tiers


def metric_tables(metrics: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Tables among the metrics (a list of rows, such as a model leaderboard), with formatted cells."""
    return {
        key.replace("_", " "): [{column: format_value(cell, column) for column, cell in row.items()} for row in value]
        for key, value in metrics.items()
        if isinstance(value, list) and value and all(isinstance(row, dict) for row in value)
    }


# --- flagged tasks: content and answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class FlaggedTask:
    """One row of the flagged-task table."""

    task_id: int
    url: str | None  # the task in Label Studio
    snippet: str | None  # the start of its text or prompt
    source: str | None  # the file it was made from (shown when there is no snippet or thumbnail)
    answers: list[tuple[str, str]]  # (annotator, answer) in the order they were given
    agreement: Any
    reason: str


def _shorten(text: str, limit: int = SNIPPET_CHARACTERS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _snippet(task: dict[str, Any]) -> str | None:
    """The start of a task's text, or of a record task's prompt."""
    text = task.get("text")
    if isinstance(text, str) and text.strip():
        return _shorten(text)
    record = task.get("record")
    if isinstance(record, str) and record:
        try:
            fields = json.loads(record)
        except ValueError:
            return None
        prompt = fields.get("prompt") if isinstance(fields, dict) else None
        if prompt is not None:
            return _shorten(prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False))
    return None


def _written_text(answer: Any) -> str | None:
    """The text of a written answer (its `answer` JSON holds `text`), or None for other answers."""
    if not isinstance(answer, str) or not answer.startswith("{"):
        return None
    try:
        parsed = json.loads(answer)
    except ValueError:
        return None
    text = parsed.get("text") if isinstance(parsed, dict) else None
    return text if isinstance(text, str) else None


def _answer(row: dict[str, Any]) -> str:
    """One annotation as a person reads it: the label, or the labels of its regions, and why it is unusable."""
    label = row.get("label")
    written = _written_text(row.get("answer"))
    if written is not None:  # a caption, transcript or SFT answer: its `label` is only a digest of the text
        shown = f"“{_shorten(written)}”"
    elif isinstance(label, str):
        shown = label
    else:
        regions = row.get("regions")
        regions = list(regions) if hasattr(regions, "__iter__") and not isinstance(regions, str | dict) else []
        counts = Counter(str(region.get("label")) for region in regions if isinstance(region, dict))
        shown = ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in counts.items()) or "no regions"
    problem = row.get("problem")
    return f"{shown} (invalid: {problem})" if isinstance(problem, str) and problem else shown


def flagged_tasks(report: QualityReport, context: ReportContext, limit: int = FLAGGED_ROWS) -> list[FlaggedTask]:
    """The flagged tasks with their link, content and answers, as the HTML table shows them."""
    flagged = report.flagged().head(limit)
    ids = set(flagged["task_id"])
    tasks: dict[int, dict[str, Any]] = {}
    if context.tasks is not None and len(context.tasks):
        rows = context.tasks[context.tasks["task_id"].isin(ids)]
        tasks = {int(row["task_id"]): row for row in rows.to_dict("records")}
    answers: dict[int, list[tuple[str, str]]] = {}
    if context.annotations is not None and len(context.annotations):
        rows = context.annotations[context.annotations["task_id"].isin(ids)]
        if "created_at" in rows.columns:
            rows = rows.sort_values(["task_id", "created_at"], kind="stable")
        for row in rows.to_dict("records"):
            answers.setdefault(int(row["task_id"]), []).append((annotator_name(row), _answer(row)))
    found = []
    for row in flagged.to_dict("records"):
        task_id = int(row["task_id"])
        content = {**row, **tasks.get(task_id, {})}
        found.append(
            FlaggedTask(
                task_id=task_id,
                url=context.task_link(task_id),
                snippet=_snippet(content),
                source=content.get("source_uri") if isinstance(content.get("source_uri"), str) else None,
                answers=answers.get(task_id, []),
                agreement=row.get("agreement"),
                reason=str(row.get("flag_reason") or ""),
            )
        )
    return found


def thumbnails(
    store: ObjectStorePort, report: QualityReport, spec: ProjectSpec, also: list[int] | None = None
) -> dict[int, str]:
    """Task id -> a small JPEG (data: URI) of each flagged image task's picture, and of the tasks `also` names (the
    suspected label errors); unreadable pictures get none."""
    from PIL import Image

    from labelflow.integrations.object_store import ObjectStoreError

    if spec.task_type.media != "image":
        return {}
    found: dict[int, str] = {}
    consensus = report.consensus
    shown = pd.concat(
        [report.flagged().head(THUMBNAIL_TASKS), consensus[consensus["task_id"].isin(also or [])].head(THUMBNAIL_TASKS)]
    ).drop_duplicates("task_id")
    for task_id, source in shown[["task_id", "source_uri"]].itertuples(index=False):
        if not isinstance(source, str) or not source.startswith("s3://"):
            continue
        try:
            location = S3Location.parse(source)
            payload = store.get_bytes(location.bucket, location.prefix, max_bytes=THUMBNAIL_SOURCE_BYTES)
            with Image.open(io.BytesIO(payload)) as picture:
                picture.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
                buffer = io.BytesIO()
                picture.convert("RGB").save(buffer, format="JPEG", quality=80)
        # A picture that cannot be read or decoded leaves its row with the file name: the report is still written.
        except (ObjectStoreError, OSError, ValueError, Image.DecompressionBombError):
            continue
        found[int(task_id)] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    return found


# --- suspected label errors and automated labeling -------------------------------------------------------------


@dataclass(frozen=True)
class SuspectRow:
    """One row of the suspected-label-error table."""

    task_id: int
    url: str | None
    snippet: str | None
    source: str | None
    given: str
    suggested: str
    label_quality: float
    given_probability: float
    status: str


def suspect_rows(report: QualityReport, context: ReportContext, limit: int = SUSPECT_ROWS) -> list[SuspectRow]:
    """The suspects with their link, content and evidence, most suspicious first."""
    if context.suspects is None:
        return []
    table = context.suspects.table.head(limit)
    ids = set(table["task_id"])
    content: dict[int, dict[str, Any]] = {
        int(row["task_id"]): row for row in report.consensus[report.consensus["task_id"].isin(ids)].to_dict("records")
    }
    if context.tasks is not None and len(context.tasks):
        for row in context.tasks[context.tasks["task_id"].isin(ids)].to_dict("records"):
            content[int(row["task_id"])] = {**content.get(int(row["task_id"]), {}), **row}
    rows = []
    for row in table.to_dict("records"):
        task_id = int(row["task_id"])
        task = content.get(task_id, {})
        rows.append(
            SuspectRow(
                task_id=task_id,
                url=context.task_link(task_id),
                snippet=_snippet(task),
                source=task.get("source_uri") if isinstance(task.get("source_uri"), str) else None,
                given=str(row["given_label"]),
                suggested=str(row["suggested_label"]),
                label_quality=float(row["label_quality"]),
                given_probability=float(row["given_probability"]),
                status=str(row.get("status") or "listed"),
            )
        )
    return rows


def suspects_note(suspects: Suspects) -> str:
    """One line on what was looked at and what is done with the suspects."""
    if suspects.skipped:
        return f"Not looked for: {suspects.skipped}."
    line = (
        f"{len(suspects.table)} of {suspects.rows} consensus labels by people are probably wrong, by out-of-fold "
        "predictions of a model trained on the others (cleanlab's confident learning)."
    )
    until = {"review": "the expert review project decides them", "annotators": "one more annotation settles them"}
    if suspects.routed_to in until:
        line += f" {suspects.held_back} are held back from the next version until {until[suspects.routed_to]}."
    else:
        line += " They are listed only (`quality.review_suspects: true` sends them to review and holds them back)."
    return line


def _percent(value: float | None) -> str:
    return "–" if _missing(value) else f"{float(value):.1%}"  # type: ignore[arg-type]


def automation_lines(outcome: AutomationOutcome) -> list[tuple[str, str]]:
    """The automated-labeling summary as (name, value) lines."""
    accuracy = _percent(outcome.measured_accuracy)
    if outcome.accuracy_low is not None:
        accuracy += f" (90% interval, its low end the one-sided 95% bound: {_percent(outcome.accuracy_low)}–{_percent(outcome.accuracy_high)})"
    ece = "–"
    if outcome.ece_raw is not None:
        ece = f"{outcome.ece_raw:.3f} raw, " + (
            f"{outcome.ece_calibrated:.3f} calibrated" if outcome.ece_calibrated is not None else "not calibrated"
        )
    return [
        ("status", f"{outcome.status}: {outcome.reason}"),
        ("model version", outcome.model_version or "–"),
        ("target accuracy", _percent(outcome.target_accuracy)),
        ("human labels to calibrate on", f"{outcome.human_labels} (needs {outcome.min_human_labels})"),
        ("threshold (calibrated confidence)", "–" if outcome.threshold is None else f"{outcome.threshold:.3f}"),
        ("machine-labeled tasks", str(outcome.machine_labeled)),
        (
            "audits",
            f"{outcome.audit_tasks} kept for people, {outcome.audits_done} labeled, "
            f"{outcome.audit_disagreements} disagreed with the model",
        ),
        ("measured accuracy of machine labels", accuracy),
        ("model failures (items sent to people)", str(outcome.model_failures)),
        ("expected calibration error", ece),
    ]


def reliability_chart(outcome: AutomationOutcome) -> dict[str, Any] | None:
    """The reliability diagram: per confidence bin, the model's accuracy on human-labeled items, against the diagonal."""
    if not outcome.reliability:
        return None
    values = [
        {
            "low": b.low,
            "high": b.high,
            "items": b.items,
            "mean_confidence": b.mean_confidence,
            "accuracy": b.accuracy,
        }
        for b in outcome.reliability
    ]
    share = {"type": "quantitative", "scale": {"domain": [0, 1]}, "axis": {"format": ".1f"}}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "width": 360,
        "height": 360,
        "layer": [
            {
                "data": {"values": values},
                "mark": {"type": "bar", "color": "#4c78a8", "stroke": "white", "strokeWidth": 1},
                "encoding": {
                    "x": {"field": "low", **share, "title": "model confidence (raw)"},
                    "x2": {"field": "high"},
                    "y": {"field": "accuracy", **share, "title": "accuracy on human-labeled items"},
                    "y2": {"datum": 0},  # a bar from zero: with x2 set, Vega-Lite would otherwise draw a flat tick
                    "tooltip": [
                        {"field": "low", "title": "confidence from"},
                        {"field": "high", "title": "confidence to"},
                        {"field": "items"},
                        {"field": "mean_confidence", "format": ".3f", "title": "mean confidence"},
                        {"field": "accuracy", "format": ".1%"},
                    ],
                },
            },
            {
                "data": {"values": [{"low": 0.0, "accuracy": 0.0}, {"low": 1.0, "accuracy": 1.0}]},
                "mark": {"type": "line", "color": "#d62728", "strokeDash": [5, 4], "strokeWidth": 1.5},
                "encoding": {"x": {"field": "low", **share}, "y": {"field": "accuracy", **share}},
            },
        ],
    }


# --- charts ------------------------------------------------------------------------------------------------------


def _count_axis(title: str) -> dict[str, Any]:
    """An axis of counts: whole-number ticks only."""
    return {"title": title, "tickMinStep": 1, "format": "d"}


def chart_specs(report: QualityReport, spec: ProjectSpec) -> dict[str, dict[str, Any]]:
    """Vega-Lite specs by element id: annotator scores with intervals by tier, task agreement, label counts."""
    # A chart without data is left out. Legends sit outside the plot (right), never over the bars; bar charts are
    # one fixed step per bar high, so one annotator or one label gives one bar, not a stretched one.
    charts: dict[str, dict[str, Any]] = {}
    base = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "width": CHART_WIDTH}
    annotators = report.annotators
    if len(annotators):
        rows = []
        for record in annotators.to_dict("records"):
            score = record.get("score")
            rows.append(
                {
                    "annotator": annotator_name(record),
                    "tier": record.get("tier") or "unrated",
                    "score": None if _missing(score) else float(score),
                    "low": None if _missing(record.get("score_low")) else float(record["score_low"]),
                    "high": None if _missing(record.get("score_high")) else float(record["score_high"]),
                    "basis": record.get("score_basis") or "not scored",
                    "tasks": int(record.get("score_tasks") or 0),
                    "annotations": int(record.get("annotations") or 0),
                }
            )
        order = [row["annotator"] for row in rows]
        tiers = list(dict.fromkeys([*sorted(spec.quality.tiers, key=spec.quality.tiers.get, reverse=True), "unrated"]))
        # Unrated annotators are grey; the tiers take the palette's colours in order.
        colours = [*(TIER_COLOURS[i % len(TIER_COLOURS)] for i in range(len(tiers) - 1)), "#bab0ac"]
        thresholds = [{"tier": t, "threshold": v} for t, v in spec.quality.tiers.items() if 0 < v < 1]
        y = {"field": "annotator", "type": "nominal", "sort": order, "title": None, "axis": {"labelLimit": 280}}
        x_title = "score (gold accuracy, else agreement with consensus) and its 95% interval"
        charts["annotator-scores"] = {
            **base,
            "height": {"step": 28},
            "data": {"values": rows},
            "layer": [
                {
                    "mark": {"type": "bar", "height": {"band": 0.7}},
                    "encoding": {
                        "y": y,
                        "x": {
                            "field": "score",
                            "type": "quantitative",
                            "scale": {"domain": [0, 1]},
                            "axis": {"format": "%"},
                            "title": x_title,
                        },
                        "color": {
                            "field": "tier",
                            "type": "nominal",
                            "scale": {"domain": tiers, "range": colours},
                            "legend": {"orient": "right", "title": "tier"},
                        },
                        "tooltip": [
                            {"field": "annotator"},
                            {"field": "tier"},
                            {"field": "score", "format": ".1%"},
                            {"field": "low", "format": ".1%", "title": "interval from"},
                            {"field": "high", "format": ".1%", "title": "interval to"},
                            {"field": "basis", "title": "score from"},
                            {"field": "tasks", "title": "tasks scored"},
                        ],
                    },
                },
                {
                    "mark": {"type": "rule", "color": "#222", "strokeWidth": 1.5},
                    "encoding": {"y": y, "x": {"field": "low", "type": "quantitative"}, "x2": {"field": "high"}},
                },
                {
                    "transform": [{"filter": "datum.score === null"}],
                    "mark": {"type": "text", "align": "left", "dx": 4, "color": "#666"},
                    "encoding": {"y": y, "x": {"datum": 0}, "text": {"value": "not scored yet"}},
                },
                {
                    "data": {"values": thresholds},
                    "mark": {"type": "rule", "strokeDash": [3, 3], "color": "#888"},
                    "encoding": {"x": {"field": "threshold", "type": "quantitative"}},
                },
                {
                    "data": {"values": thresholds},
                    "mark": {"type": "text", "baseline": "bottom", "dy": -3, "fontSize": 10, "color": "#666"},
                    "encoding": {
                        "x": {"field": "threshold", "type": "quantitative"},
                        "y": {"value": 0},
                        "text": {"field": "tier"},
                    },
                },
            ],
            "resolve": {"scale": {"x": "shared"}},
        }
    finished = report.consensus[report.consensus["finished"]] if "finished" in report.consensus else report.consensus
    agreement = pd.to_numeric(finished.get("agreement", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(agreement):
        minimum = spec.quality.min_agreement
        charts["task-agreement"] = {
            **base,
            "height": 180,
            "data": {"values": [{"agreement": float(value)} for value in agreement]},
            "layer": [
                {
                    "mark": {"type": "bar", "color": "#4c78a8"},
                    "encoding": {
                        "x": {
                            "field": "agreement",
                            "type": "quantitative",
                            "bin": {"extent": [0, 1], "step": 0.05},
                            # Every bin edge would be a tick: label every other one.
                            "axis": {"values": [round(i / 10, 1) for i in range(11)], "format": ".1f"},
                            "title": "task agreement",
                        },
                        "y": {"aggregate": "count", "type": "quantitative", "axis": _count_axis("finished tasks")},
                    },
                },
                {
                    "data": {"values": [{"threshold": minimum}]},
                    "mark": {"type": "rule", "color": "#d62728", "strokeDash": [5, 4], "strokeWidth": 1.5},
                    "encoding": {"x": {"field": "threshold", "type": "quantitative"}},
                },
                {
                    "data": {"values": [{"threshold": minimum, "text": f"min_agreement {minimum:.2f}"}]},
                    "mark": {"type": "text", "baseline": "bottom", "dy": -3, "fontSize": 10, "color": "#d62728"},
                    "encoding": {
                        "x": {"field": "threshold", "type": "quantitative"},
                        "y": {"value": 0},
                        "text": {"field": "text"},
                    },
                },
            ],
        }
    distribution = report.metrics.get("label_distribution") or {}
    if distribution:
        charts["label-distribution"] = {
            **base,
            "height": {"step": 24},
            "data": {"values": [{"label": str(label), "count": int(n)} for label, n in distribution.items()]},
            "mark": {"type": "bar", "color": "#54a24b"},
            "encoding": {
                "y": {"field": "label", "type": "nominal", "sort": None, "title": None, "axis": {"labelLimit": 280}},
                "x": {"field": "count", "type": "quantitative", "axis": _count_axis("consensus labels (finished)")},
                "tooltip": [{"field": "label"}, {"field": "count"}],
            },
        }
    return charts


@functools.cache
def _vega_scripts() -> str:
    """The vendored vega, vega-lite and vega-embed, each in a <script> of its own."""
    from labelflow import integrations

    folder = Path(integrations.__file__).with_name("datadocs_assets") / "vega"
    parts = []
    for name in VEGA_LIBRARIES:
        # A literal "</script" inside inline code would end the element early (there is none today; stay safe).
        code = (folder / name).read_text(encoding="utf-8").replace("</script", "<\\/script")
        parts.append(f'<script data-library="{name}">{code}</script>')
    return "\n".join(parts)


def _script_json(value: Any) -> str:
    """JSON that can sit inside a <script> element: no "</" can close it, and it stays valid JSON."""
    return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False).replace("</", "<\\/")


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as null: JSON has no NaN (an SFT or ranking batch has no agreement score)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# --- the page ----------------------------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;color:#222;margin:0 auto;
  padding:16px 24px;max-width:1280px;box-sizing:border-box;line-height:1.35}
h1{font-size:24px}h2{font-size:19px;margin-top:28px}
table{border-collapse:collapse;width:100%;margin:6px 0}
table.metrics{width:auto;min-width:360px}
td,th{border:1px solid #d8d8d8;padding:4px 8px;font-size:13px;vertical-align:top;text-align:left;
  overflow-wrap:break-word}
th{background:#f3f3f3;font-weight:600}
td.number{text-align:right;white-space:nowrap}
td.text,td.content,td.answers{overflow-wrap:anywhere}
td.content{min-width:240px;max-width:520px}
td.answers ul{margin:0;padding-left:16px}
img.thumbnail{max-width:160px;max-height:160px;display:block}
.chart{margin:8px 0 4px;max-width:100%;overflow-x:auto}
.note{color:#666;font-size:13px}
"""

EMBED = """
const charts = JSON.parse(document.getElementById('labelflow-charts').textContent);
Promise.all(Object.entries(charts).map(([id, chart]) =>
  vegaEmbed('#' + id, chart, {renderer: 'svg', actions: false}).catch((error) => {
    document.getElementById(id).textContent = 'This chart could not be drawn: ' + error;
    throw error;
  })
)).then(() => { document.body.dataset.charts = 'drawn'; },
        () => { document.body.dataset.charts = 'failed'; });
"""


def _table(header: list[str], rows: list[list[str]], numbers: set[int] | None = None) -> str:
    """An HTML table of already-escaped cells (`numbers`: the columns aligned right)."""
    numbers = numbers or set()

    def cell(index: int, text: str) -> str:
        if index in numbers:
            return f"<td class='number'>{text}</td>"
        # Long values (emails, model names) may break anywhere so the table fits the screen; short words stay whole.
        return f"<td class='text'>{text}</td>" if len(text) > LONG_CELL_CHARACTERS else f"<td>{text}</td>"

    head = "<tr>" + "".join(f"<th>{text}</th>" for text in header) + "</tr>"
    body = ["<tr>" + "".join(cell(i, text) for i, text in enumerate(row)) + "</tr>" for row in rows]
    return "<table>" + head + "".join(body) + "</table>"


def _flagged_html(report: QualityReport, context: ReportContext, pictures: dict[int, str]) -> list[str]:
    esc = html.escape
    flagged = report.flagged()
    parts = [f"<h2>Flagged tasks ({len(flagged)})</h2>"]
    if not len(flagged):
        return [*parts, "<p class='note'>No task is flagged.</p>"]
    rows = flagged_tasks(report, context)
    if len(flagged) > len(rows):
        parts.append(
            f"<p class='note'>The first {len(rows)} are shown; flagged.csv next to this page has them all.</p>"
        )
    body = []
    for row in rows:
        task, content = _task_cell(row), _content_cell(row, pictures)
        answers = "".join(f"<li>{esc(who)}: {esc(answer)}</li>" for who, answer in row.answers)
        body.append(
            f"<tr><td class='number'>{task}</td><td class='content'>{content}</td>"
            f"<td class='answers'>{f'<ul>{answers}</ul>' if answers else '–'}</td>"
            f"<td class='number'>{esc(format_value(row.agreement))}</td><td>{esc(row.reason)}</td></tr>"
        )
    header = "<tr><th>task</th><th>content</th><th>answers</th><th>agreement</th><th>why flagged</th></tr>"
    return [*parts, "<table class='flagged'>" + header + "".join(body) + "</table>"]


def _task_cell(row: Any) -> str:
    """A table row's task id, linked to its Label Studio page when known."""
    if row.url:
        return f"<a href='{html.escape(row.url)}' target='_blank' rel='noopener'>{row.task_id}</a>"
    return str(row.task_id)


def _content_cell(row: Any, pictures: dict[int, str]) -> str:
    """A table row's content: the image's thumbnail and file name, the text's snippet, or where the task's data is."""
    esc = html.escape
    if row.task_id in pictures:
        content = f"<img class='thumbnail' alt='task {row.task_id}' src='{pictures[row.task_id]}'>"
        return content + (f"<span class='note'>{esc(row.source.rsplit('/', 1)[-1])}</span>" if row.source else "")
    if row.snippet:
        return esc(row.snippet)
    return f"<span class='note'>{esc(row.source or '–')}</span>"


def _suspects_html(report: QualityReport, context: ReportContext, pictures: dict[int, str]) -> list[str]:
    esc = html.escape
    suspects = context.suspects
    if suspects is None:
        return []
    parts = [
        f"<h2 id='suspects'>Suspected label errors ({len(suspects.table)})</h2>",
        f"<p class='note'>{esc(suspects_note(suspects))}</p>",
    ]
    rows = suspect_rows(report, context)
    if not rows:
        return parts
    if len(suspects.table) > len(rows):
        parts.append(
            f"<p class='note'>The first {len(rows)} are shown; suspects.csv next to this page has them all.</p>"
        )
    body = []
    for row in rows:
        task, content = _task_cell(row), _content_cell(row, pictures)
        body.append(
            f"<tr><td class='number'>{task}</td><td class='content'>{content}</td><td>{esc(row.given)}</td>"
            f"<td>{esc(row.suggested)}</td><td class='number'>{row.label_quality:.3f}</td>"
            f"<td class='number'>{row.given_probability:.1%}</td><td>{esc(row.status)}</td></tr>"
        )
    header = (
        "<tr><th>task</th><th>content</th><th>given label</th><th>suggested label</th><th>label quality</th>"
        "<th>P(given label)</th><th>status</th></tr>"
    )
    return [*parts, "<table class='suspects'>" + header + "".join(body) + "</table>"]


def _automation_html(context: ReportContext) -> list[str]:
    esc = html.escape
    outcome = context.automation
    if outcome is None:
        return []
    parts = [f"<h2 id='automation'>Automated labeling: {esc(outcome.status)}</h2>", "<table class='metrics'>"]
    parts += [f"<tr><th>{esc(n)}</th><td>{esc(v)}</td></tr>" for n, v in automation_lines(outcome)]
    parts.append("</table>")
    if outcome.reliability:
        parts.append(
            "<h3>Reliability diagram</h3><p class='note'>Bars: the model's accuracy on items people labeled, per "
            "raw-confidence bin; the dashed diagonal is a perfectly calibrated model.</p>"
            "<div class='chart' id='reliability'></div>"
        )
    return parts


def html_report(
    spec: ProjectSpec,
    report: QualityReport,
    context: ReportContext | None = None,
    pictures: dict[int, str] | None = None,
) -> str:
    """One self-contained HTML page: metrics, charts, annotator table, flagged tasks (no external assets)."""
    esc = html.escape
    context = context or ReportContext()
    charts = chart_specs(report, spec)
    if context.automation is not None and (reliability := reliability_chart(context.automation)):
        charts["reliability"] = reliability
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>labelflow quality: {esc(spec.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Annotation quality: {esc(spec.name)}</h1>",
        "<table class='metrics'>",
        *[f"<tr><th>{esc(n)}</th><td>{esc(v)}</td></tr>" for n, v in metrics_lines(report.metrics)],
        "</table>",
    ]
    if project := context.project_link():
        parts.append(
            f"<p>Label Studio project: <a href='{esc(project)}' target='_blank' rel='noopener'>{esc(project)}</a></p>"
        )
    for title, table in metric_tables(report.metrics).items():
        parts.append(f"<h2>{esc(title[:1].upper() + title[1:])}</h2>")
        parts.append(
            _table([esc(c) for c in table[0]], [[esc(row.get(c, "")) for c in table[0]] for row in table[:500]])
        )
    cost_lines, cost_tiers = cost_rows(report.metrics)
    if cost_lines:
        parts.append("<h2>Cost</h2><table class='metrics'>")
        parts += [f"<tr><th>{esc(n)}</th><td>{esc(v)}</td></tr>" for n, v in cost_lines]
        parts.append("</table>")
        if cost_tiers:
            header = list(cost_tiers[0])
            parts.append(_table(header, [[esc(row[c]) for c in header] for row in cost_tiers], set(range(1, 5))))
    titles = {"annotator-scores": "Annotators", "task-agreement": "Task agreement", "label-distribution": "Labels"}
    for key, title in titles.items():
        if key in charts:
            parts.append(f"<h2>{title}</h2><div class='chart' id='{key}'></div>")
    rows = annotator_rows(report)
    if rows:
        header = list(rows[0])
        names = {"score_interval": "95% interval", "score_basis": "score from", "score_tasks": "tasks scored"}
        numeric = {i for i, c in enumerate(header) if c not in ("annotator_email", "tier", "score_basis")}
        parts.append("<h2>Annotator table</h2>")
        parts.append(
            _table(
                [esc(names.get(c, c.replace("_", " "))) for c in header],
                [[esc(row[c]) for c in header] for row in rows],
                numeric,
            )
        )
    parts += _automation_html(context)
    parts += _flagged_html(report, context, pictures or {})
    parts += _suspects_html(report, context, pictures or {})
    if charts:
        parts += [
            _vega_scripts(),
            f'<script type="application/json" id="labelflow-charts">{_script_json(charts)}</script>',
            f"<script>{EMBED}</script>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def markdown(
    spec: ProjectSpec,
    report: QualityReport,
    stats: CollectStats,
    routed: int,
    location: str,
    context: ReportContext | None = None,
) -> str:
    """The Prefect artifact: metrics, annotator table, flagged tasks (linked to Label Studio when it is known)."""
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
    cost_lines, cost_tiers = cost_rows(report.metrics)
    if cost_lines:
        lines += ["## Cost", "", "| | |", "| --- | --- |", *[f"| {n} | {v} |" for n, v in cost_lines], ""]
        if cost_tiers:
            header = list(cost_tiers[0])
            lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            lines += ["| " + " | ".join(row[c].replace("|", "\\|") for c in header) + " |" for row in cost_tiers]
            lines.append("")
    lines += ["## Annotators", ""]
    rows = annotator_rows(report)
    if rows:
        header = list(rows[0])
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row[c].replace("|", "\\|") for c in header) + " |" for row in rows]
    flagged = report.flagged()
    lines += ["", f"## Flagged tasks ({len(flagged)})", ""]
    context = context or ReportContext()
    if len(flagged):
        lines += ["| task | agreement | reason |", "| --- | --- | --- |"]
        for row in flagged.head(50).itertuples(index=False):
            link = context.task_link(int(row.task_id))
            task = f"[{row.task_id}]({link})" if link else str(row.task_id)
            lines.append(f"| {task} | {format_value(row.agreement)} | {row.flag_reason} |")
    lines += _suspects_markdown(context) + _automation_markdown(context)
    lines += ["", f"Full report, tables and plots: `{location}`"]
    return "\n".join(lines)


def _suspects_markdown(context: ReportContext) -> list[str]:
    suspects = context.suspects
    if suspects is None:
        return []
    lines = ["", f"## Suspected label errors ({len(suspects.table)})", "", suspects_note(suspects)]
    if len(suspects.table):
        lines += ["", "| task | given label | suggested label | label quality | P(given) | status |"]
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for row in suspects.table.head(50).to_dict("records"):
            link = context.task_link(int(row["task_id"]))
            task = f"[{row['task_id']}]({link})" if link else str(row["task_id"])
            given, suggested = (str(row[c]).replace("|", "\\|") for c in ("given_label", "suggested_label"))
            lines.append(
                f"| {task} | {given} | {suggested} | {float(row['label_quality']):.3f} | "
                f"{float(row['given_probability']):.1%} | {row.get('status') or 'listed'} |"
            )
    return lines


def _automation_markdown(context: ReportContext) -> list[str]:
    outcome = context.automation
    if outcome is None:
        return []
    lines = ["", f"## Automated labeling: {outcome.status}", "", "| | |", "| --- | --- |"]
    lines += [f"| {n} | {v.replace('|', '/')} |" for n, v in automation_lines(outcome)]
    if outcome.reliability:
        lines += ["", "| confidence bin | items | mean confidence | accuracy |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {b.low:.1f}–{b.high:.1f} | {b.items} | {b.mean_confidence:.3f} | {b.accuracy:.1%} |"
            for b in outcome.reliability
        ]
    return lines


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def write_quality_report(
    store: ObjectStorePort,
    spec: ProjectSpec,
    report: QualityReport,
    stats: CollectStats,
    run_name: str,
    context: ReportContext | None = None,
) -> str:
    """Write consensus.parquet, annotators.csv, pairwise.csv, metrics.json and report.html; return the folder URI."""
    state: S3Location = spec.state_location
    base = state.join("collect", "reports", run_name)
    metrics = {k: _jsonable(v) for k, v in report.metrics.items()}
    suspects = context.suspects if context is not None else None
    also = suspects.task_ids()[:SUSPECT_ROWS] if suspects is not None else []
    page = html_report(spec, report, context, thumbnails(store, report, spec, also))
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
        "report.html": (page.encode("utf-8"), "text/html; charset=utf-8"),
    }
    if suspects is not None:
        files["suspects.csv"] = (suspects.table.to_csv(index=False).encode("utf-8"), "text/csv; charset=utf-8")
    buffer = io.BytesIO()
    report.consensus.to_parquet(buffer, index=False)
    files["consensus.parquet"] = (buffer.getvalue(), "application/vnd.apache.parquet")
    for name, (payload, content_type) in files.items():
        store.put_bytes(state.bucket, f"{base}/{name}", payload, content_type)
    return f"s3://{state.bucket}/{base}/"
