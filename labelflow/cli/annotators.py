"""`labelflow annotators`: the talent pool across projects, read from the object store (no Prefect, no GX)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from labelflow.cli import render
from labelflow.cli.errors import json_stdout, reported_failures


def _ladder(path: Path | None) -> list[Any] | None:
    """The ladder of a YAML file: a list of levels, `{ladder: [...]}`, or a spec (its `quality.ladder`)."""
    if path is None:
        return None
    import yaml

    from labelflow.tasks.levels import DEFAULT_LADDER, LadderError, parse_ladder

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LadderError(f"{path}: cannot read the ladder: {' '.join(str(exc).split())}") from None
    if isinstance(data, dict) and "ladder" in data:
        data = data["ladder"]
    elif isinstance(data, dict) and "task" in data:  # a spec: its ladder, or the default one
        quality = data.get("quality") if isinstance(data.get("quality"), dict) else {}
        data = quality.get("ladder", [level.model_dump() for level in DEFAULT_LADDER])
    try:
        return parse_ladder(data)
    except LadderError as exc:
        raise LadderError(f"{path}: {exc}") from None


def profile_rows(profiles: Any) -> list[dict[str, Any]]:
    """The profiles as JSON-friendly rows (no NaN, times in ISO 8601)."""
    import math

    import pandas as pd

    rows = []
    for row in profiles.to_dict("records"):
        clean = {}
        for key, value in row.items():
            if value is pd.NA or value is pd.NaT:
                value = None
            elif hasattr(value, "isoformat"):
                value = value.isoformat()
            elif hasattr(value, "item"):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            clean[key] = value
        rows.append(clean)
    return rows


def _percent(value: Any) -> str:
    return "–" if value is None else f"{value:.0%}"


def pool_table(rows: list[dict[str, Any]], title: str) -> None:
    """The pool as a table: who, where, level, interval, evidence, trend."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("annotator", "domain", "task type", "level", "certified", "accuracy (95% interval)", "evidence",
                   "gold", "agreement", "projects", "trend (per 30 days)"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for row in rows:
        interval = (
            f"{_percent(row['accuracy'])} ({_percent(row['accuracy_low'])}–{_percent(row['accuracy_high'])})"
            if row["accuracy"] is not None
            else "–"
        )
        gold = f"{row['gold_answered']}" + (f" ({_percent(row['gold_accuracy'])})" if row["gold_answered"] else "")
        trend = row["trend"]
        if row["trend_per_30_days"] is not None:
            trend += f" ({row['trend_per_30_days'] * 100:+.1f} pts)"
        table.add_row(
            row["annotator_email"], row["domain"], row["task_type"], row["level"], row.get("certified_level") or "–",
            interval, str(row["evidence"]), gold, _percent(row["agreement"]), str(row["projects"]), trend,
        )  # fmt: skip
    render.console.print(table)


def annotators(
    domain: Annotated[str | None, typer.Option("--domain", help="Only this domain (e.g. zh-sentiment)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the profiles as one JSON document")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML page with plots to this file")
    ] = None,
    ladder: Annotated[
        Path | None,
        typer.Option("--ladder", help="YAML file of levels (or a spec: its quality.ladder); default: five levels"),
    ] = None,
) -> None:
    """List the talent pool: each person's level, accuracy interval, evidence and trend per domain and task type."""
    from labelflow.integrations.errors import AdapterError
    from labelflow.tasks.levels import DEFAULT_LADDER, LadderError

    with json_stdout(as_json) as print_json, reported_failures("annotators", AdapterError, bad_input=(LadderError,)):
        from labelflow.integrations.resources import Resources
        from labelflow.tasks.talent_pool import POOL_LOCATION, TalentPool, build_profiles, periods

        levels = _ladder(ladder) or list(DEFAULT_LADDER)
        store = Resources().store
        evidence = TalentPool(store).read(domain.lower() if domain else None)
        profiles = build_profiles(evidence, levels)
        from labelflow.tasks.exams import load_certificates, valid_certificates, with_certified_levels

        # Valid exam certificates (tasks/exams.py) shown next to the level the evidence earns.
        certificates = valid_certificates(load_certificates(store, domain), levels)
        profiles = with_certified_levels(profiles, certificates)
        rows = profile_rows(profiles)
        if html is not None:
            from labelflow.tasks.pool_page import pool_page

            html.write_text(pool_page(profiles, periods(evidence), levels, domain), encoding="utf-8")
        if as_json:
            print_json(
                {
                    "pool": str(POOL_LOCATION),
                    "domain": domain,
                    "ladder": [level.model_dump() for level in levels],
                    "profiles": rows,
                    "html": str(html) if html is not None else None,
                }
            )
            return
    where = f" in {domain}" if domain else ""
    pool_table(rows, f"talent pool{where}: {len(rows)} profiles ({POOL_LOCATION})")
    if html is not None:
        render.console.print(f"HTML page: {html}")
