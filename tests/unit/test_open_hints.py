"""No s3:// address alone: each Prefect artifact and each CLI summary line that shows one also shows a link a person
can open, or the `labelflow open` command that makes one (on the in-memory fakes)."""

from __future__ import annotations

import re

import pytest

from labelflow.cli import render
from labelflow.flows.collect import collect_validate_register, validation_markdown
from labelflow.flows.ingest import ingest_spec
from labelflow.tasks.validate import ValidationSummary
from tests.unit.fakes import FakeClients, FakeValidator, PlainSteps
from tests.unit.stage_fixtures import annotate_all, text_spec, upload_reviews

SPEC_PATH = "specs/my reviews.yaml"
OPEN = "labelflow open 'specs/my reviews.yaml'"  # quoted: the path has a space


def s3_lines_without_a_way_to_open_them(text: str) -> list[str]:
    """Lines naming an s3:// address with neither an http(s) link nor a `labelflow open` command, on that line
    or the next non-empty one."""
    lines = [line for line in text.splitlines() if line.strip()]
    return [
        line
        for line, following in zip(lines, [*lines[1:], ""], strict=True)
        if "s3://" in line and not re.search(r"https?://|labelflow open ", f"{line} {following}")
    ]


def test_the_ingest_quality_and_validation_artifacts_say_how_to_open_what_they_name() -> None:
    clients = FakeClients()
    spec = text_spec(dataset={"name": "reviews"})
    upload_reviews(clients, 0, 6)
    clients.store.put_object("raw", "reviews/positive/empty.txt", b"")  # quarantined: the artifact lists it
    ingest_steps, collect_steps = PlainSteps(), PlainSteps()
    ingested = ingest_spec(spec, clients=clients, steps=ingest_steps, spec_path=SPEC_PATH)
    assert ingested["quarantined"] == 1
    annotate_all(clients, int(ingested["project_id"]))
    collect_validate_register(spec, SPEC_PATH, clients=clients, validator=FakeValidator(), steps=collect_steps)

    artifacts = {**ingest_steps.artifacts, **collect_steps.artifacts}
    assert f"{OPEN} quarantine" in artifacts[f"ingest-{spec.slug}"]
    assert f"{OPEN} report" in artifacts[f"quality-{spec.slug}"]
    assert f"{OPEN} docs" in artifacts[f"validation-{spec.slug}"]
    # Next to each address: the quality and validation artifacts' lines (the ingest artifact ends with its command).
    for key in (f"quality-{spec.slug}", f"validation-{spec.slug}"):
        # Table rows may name a task's source object; the report's own address is on a line of its own.
        lines = [line for line in s3_lines_without_a_way_to_open_them(artifacts[key]) if not line.startswith("|")]
        assert lines == [], key


def test_an_artifact_made_without_a_spec_path_still_names_the_command() -> None:
    summary = ValidationSummary(
        success=True,
        evaluated=3,
        failed=[],
        rows={"annotations": 3},
        result_uri="s3://state/v/result.json",
        docs_index="s3://state/v/docs/index.html",
    )
    assert "`labelflow open SPEC docs`" in validation_markdown(text_spec(), summary)


@pytest.fixture
def collected() -> dict:
    clients = FakeClients()
    spec = text_spec(dataset={"name": "reviews"})
    upload_reviews(clients, 0, 6)
    ingested = ingest_spec(spec, clients=clients, steps=PlainSteps())
    annotate_all(clients, int(ingested["project_id"]))
    summary = collect_validate_register(spec, None, clients=clients, validator=FakeValidator(), steps=PlainSteps())
    return {"ingest": ingested, "collect": summary}


def test_the_ingest_and_collect_summaries_print_the_open_command_next_to_each_s3_address(
    collected: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    render.ingest_summary(collected["ingest"], SPEC_PATH)
    render.collect_summary(collected["collect"], SPEC_PATH)
    printed = capsys.readouterr().out
    assert f"(open it: {OPEN} quarantine)" in printed
    assert f"(open it: {OPEN} report)" in printed
    assert f"open them: {OPEN} docs)" in printed
    # The published version's s3:// folder sits on its own line; the MLflow run's http link follows it.
    unopened = s3_lines_without_a_way_to_open_them(printed)
    assert all(line.startswith("published dataset reviews version 1") for line in unopened), unopened
    assert re.search(r"^MLflow: https?://", printed, re.MULTILINE)


def test_a_failed_validation_names_the_command_that_opens_its_data_docs() -> None:
    summary = ValidationSummary(
        success=False,
        evaluated=3,
        failed=[
            {"batch": "consensus", "column": "label", "type": "expect_x", "origin": "spec", "notes": "n"},
        ],
        rows={"consensus": 3},
        result_uri="s3://state/v/result.json",
        docs_index="s3://state/v/docs/index.html",
    )
    text = render.validation_failure(summary, SPEC_PATH)
    assert text.splitlines()[-1] == f"open the Data Docs: {OPEN} docs"
