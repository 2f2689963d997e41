"""The talent pool as one self-contained HTML page: levels, accuracy intervals and trends, drawn with Vega-Lite.

Made the way the quality report is (tasks/quality_report.py): the vendored vega libraries are inlined, so the page
opens offline, and the charts are SVG drawn by the browser.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from labelflow.tasks.levels import Level
from labelflow.tasks.quality_report import (
    CHART_WIDTH,
    EMBED,
    STYLE,
    TIER_COLOURS,
    _script_json,
    _table,
    _vega_scripts,
)

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"


def _value(value: Any) -> Any:
    """A cell's value for a chart: None for NaN/NaT/NA, ISO text for times, plain Python numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat() if value == value else None
    if hasattr(value, "item"):
        return value.item()
    return None if str(value) in ("<NA>", "NaT") else value


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    return [{c: _value(row[c]) for c in columns} for row in frame[columns].to_dict("records")]


def pool_charts(profiles: pd.DataFrame, work: pd.DataFrame, ladder: list[Level]) -> dict[str, dict[str, Any]]:
    """Vega-Lite specs: accuracy intervals by level, levels per domain, accuracy of each period over time."""
    charts: dict[str, dict[str, Any]] = {}
    if profiles.empty:
        return charts
    names = [level.name for level in ladder]
    people = _records(
        profiles.assign(who=profiles["annotator_email"] + " · " + profiles["domain"] + " · " + profiles["task_type"]),
        ["who", "annotator_email", "domain", "task_type", "level", "accuracy", "accuracy_low", "accuracy_high",
         "evidence"],
    )  # fmt: skip
    colours = [TIER_COLOURS[i % len(TIER_COLOURS)] for i in range(len(names))]
    level_colour = {"field": "level", "type": "nominal", "scale": {"domain": names, "range": colours}, "title": "level"}
    thresholds = [{"level": level.name, "min_accuracy": level.min_accuracy} for level in ladder[1:]]
    charts["pool-intervals"] = {
        "$schema": SCHEMA,
        "width": CHART_WIDTH,
        "title": "Accuracy: point estimate and 95% interval (levels use the lower end)",
        "layer": [
            {
                "data": {"values": people},
                "mark": {"type": "rule", "strokeWidth": 2},
                "encoding": {
                    "y": {"field": "who", "type": "nominal", "sort": "-x", "title": None},
                    "x": {"field": "accuracy_low", "type": "quantitative", "title": "accuracy",
                          "scale": {"domain": [0, 1]}, "axis": {"format": "%"}},
                    "x2": {"field": "accuracy_high"},
                    "color": level_colour,
                },
            },
            {
                "data": {"values": people},
                "mark": {"type": "point", "filled": True, "size": 60},
                "encoding": {
                    "y": {"field": "who", "type": "nominal", "sort": "-x"},
                    "x": {"field": "accuracy", "type": "quantitative"},
                    "color": level_colour,
                    "tooltip": [{"field": f} for f in ("annotator_email", "level", "accuracy", "accuracy_low",
                                                        "accuracy_high", "evidence")],
                },
            },
            {
                "data": {"values": thresholds},
                "mark": {"type": "rule", "strokeDash": [4, 4], "color": "#999"},
                "encoding": {"x": {"field": "min_accuracy", "type": "quantitative"},
                             "tooltip": [{"field": "level"}, {"field": "min_accuracy"}]},
            },
        ],
    }  # fmt: skip
    counts = profiles.groupby(["domain", "level", "level_rank"]).size().reset_index(name="people")
    charts["pool-levels"] = {
        "$schema": SCHEMA,
        "width": CHART_WIDTH,
        "title": "People per level and domain",
        "data": {"values": _records(counts, ["domain", "level", "level_rank", "people"])},
        "mark": "bar",
        "encoding": {
            "y": {"field": "domain", "type": "nominal", "title": None},
            "x": {"field": "people", "type": "quantitative", "stack": True, "title": "people"},
            "color": level_colour,
            "order": {"field": "level_rank", "sort": "ascending"},
        },
    }
    if not work.empty:
        points = _records(
            work.assign(who=work["person"] + " · " + work["domain"]),
            ["who", "project", "at", "accuracy", "trials"],
        )
        charts["pool-trend"] = {
            "$schema": SCHEMA,
            "width": CHART_WIDTH,
            "title": "Accuracy of the work between collects, over time",
            "data": {"values": points},
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": "at", "type": "temporal", "title": "last annotation of the period"},
                "y": {"field": "accuracy", "type": "quantitative", "scale": {"domain": [0, 1]},
                      "axis": {"format": "%"}},
                "color": {"field": "who", "type": "nominal", "title": None},
                "tooltip": [{"field": "who"}, {"field": "project"}, {"field": "accuracy"}, {"field": "trials"}],
            },
        }  # fmt: skip
    return charts


def _cell(value: Any, percent: bool = False) -> str:
    value = _value(value)
    if value is None:
        return "–"
    if percent:
        return f"{value:.1%}"
    return html.escape(str(value))


def pool_page(profiles: pd.DataFrame, work: pd.DataFrame, ladder: list[Level], domain: str | None = None) -> str:
    """One HTML page: the ladder, charts and the table of profiles (no external assets)."""
    esc = html.escape
    charts = pool_charts(profiles, work, ladder)
    title = f"labelflow talent pool{f': {domain}' if domain else ''}"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p class='note'>{len(profiles)} profiles. A level is earned on the lower end of the 95% accuracy interval "
        "(gold answers pooled with the Dawid-Skene estimate), so little evidence keeps a person low.</p>",
        "<h2>Ladder</h2>",
        _table(
            ["level", "min evidence", "min accuracy (lower bound)", "min agreement"],
            [[esc(r.name), str(r.min_evidence), f"{r.min_accuracy:.0%}", f"{r.min_agreement:.0%}"] for r in ladder],
            {1, 2, 3},
        ),
    ]
    for key, heading in (("pool-intervals", "Accuracy intervals"), ("pool-levels", "Levels"), ("pool-trend", "Trend")):
        if key in charts:
            parts.append(f"<h2>{heading}</h2><div class='chart' id='{key}'></div>")
    parts.append("<h2>Profiles</h2>")
    header = ["annotator", "domain", "task type", "level", "accuracy", "95% interval", "evidence", "gold answered",
              "gold accuracy", "DS estimate", "agreement", "projects", "trend (pts / 30 days)", "last annotation"]  # fmt: skip
    rows = [
        [
            esc(str(row["annotator_email"])), esc(str(row["domain"])), esc(str(row["task_type"])),
            esc(str(row["level"])), _cell(row["accuracy"], True),
            f"{_cell(row['accuracy_low'], True)}–{_cell(row['accuracy_high'], True)}", _cell(row["evidence"]),
            _cell(row["gold_answered"]), _cell(row["gold_accuracy"], True), _cell(row["estimated_accuracy"], True),
            _cell(row["agreement"], True), _cell(row["projects"]),
            esc(row["trend"]) + ("" if _value(row["trend_per_30_days"]) is None
                                 else f" ({row['trend_per_30_days'] * 100:+.1f})"),
            _cell(row["last_annotation_at"])[:10],
        ]
        for row in profiles.to_dict("records")
    ]  # fmt: skip
    parts.append(_table(header, rows, {4, 5, 6, 7, 8, 9, 10, 11}) if rows else "<p class='note'>No evidence yet.</p>")
    if charts:
        parts += [
            _vega_scripts(),
            f'<script type="application/json" id="labelflow-charts">{_script_json(charts)}</script>',
            f"<script>{EMBED}</script>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)
