"""`labelflow exam create|grade`: certification exams from a spec's gold set, graded into talent-pool certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from labelflow.cli import render
from labelflow.cli.errors import json_stdout, reported_failures

exam_app = typer.Typer(
    name="exam",
    help="Certification exams: gold items in a Label Studio project, graded into certificates in the talent pool.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _failures() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(run failures, bad input) of the exam commands."""
    from labelflow.integrations.errors import AdapterError
    from labelflow.tasks.collect import CollectError
    from labelflow.tasks.exams import ExamError
    from labelflow.tasks.quality import GoldError

    return (AdapterError,), (ExamError, GoldError, CollectError)


@exam_app.command("create")
def create(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML) with a quality.gold file")],
    level: Annotated[str, typer.Option("--level", help="The ladder level the exam certifies (e.g. qualified)")],
    items: Annotated[int, typer.Option("--items", help="How many gold items, stratified by label")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draw (same seed, same items)")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the exam as JSON")] = False,
) -> None:
    """Build `<title> · exam <level> v<k>`: N gold items of the spec's project, with its guidelines."""
    failures, bad_input = _failures()
    with json_stdout(as_json) as print_json, reported_failures("exam create", *failures, bad_input=bad_input):
        from labelflow.integrations.resources import Resources
        from labelflow.tasks.collect import load_gold, recorded_project
        from labelflow.tasks.exams import create_exam
        from labelflow.tasks.spec import load_spec

        project = load_spec(spec)
        resources = Resources()
        store, ls = resources.store, resources.label_studio_client
        gold = load_gold(store, project)
        if gold is None:
            from labelflow.tasks.exams import ExamError

            raise ExamError("the spec has no quality.gold file to draw exam items from")
        exam = create_exam(
            ls, store, project, recorded_project(store, project), gold, level, items, seed, resources.reader_settings
        )
        exam["label_studio_url"] = f"{ls.settings.base_url}/projects/{exam['project_id']}"
        if as_json:
            print_json(exam)
            return
    labels = ", ".join(f"{label} {count}" for label, count in exam["by_label"].items())
    render.console.print(
        f"exam v{exam['version']} ({exam['level']}): {exam['items']} items ({labels}) in {exam['title']!r}\n"
        f"  {exam['label_studio_url']}\n  grade it with: labelflow exam grade {spec}"
    )


def _percent(value: Any) -> str:
    return "–" if value is None else f"{value:.0%}"


@exam_app.command("grade")
def grade(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML)")],
    version: Annotated[int | None, typer.Option("--version", help="Exam version (default: the newest)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the certificates as JSON")] = False,
) -> None:
    """Score everyone who took the exam and record a certificate per person in the talent pool."""
    failures, bad_input = _failures()
    with json_stdout(as_json) as print_json, reported_failures("exam grade", *failures, bad_input=bad_input):
        from labelflow.cli.annotators import profile_rows
        from labelflow.integrations.resources import Resources
        from labelflow.tasks.exams import grade_exam
        from labelflow.tasks.spec import load_spec

        project = load_spec(spec)
        resources = Resources()
        result = grade_exam(resources.label_studio_client, resources.store, project, version)
        import pandas as pd

        result["certificates"] = profile_rows(pd.DataFrame(result["certificates"]))
        if as_json:
            print_json(result)
            return
    from rich.table import Table

    table = Table(title=f"exam v{result['exam_version']} ({result['level']}): {result['items']} items")
    for column in ("annotator", "correct", "score (95% interval)", "needs (lower bound)", "passed", "expires"):
        table.add_column(column)
    for row in result["certificates"]:
        table.add_row(
            row["annotator_email"], f"{row['correct']}/{row['items']}",
            f"{_percent(row['score'])} ({_percent(row['score_low'])}–{_percent(row['score_high'])})",
            _percent(row["min_accuracy"]), "yes" if row["passed"] else "no", str(row["expires_at"])[:10],
        )  # fmt: skip
    render.console.print(table)
