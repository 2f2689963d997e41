"""Guidelines as a versioned standard: the file and its version, what annotators see, the history, the stamps,
flagging under `require_guideline: current`, and the published version's guideline file and counts."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from labelflow.tasks import guidelines as guidelines_module
from labelflow.tasks.annotations import ANNOTATION_SCHEMA
from labelflow.tasks.guidelines import (
    OUTDATED_REASON,
    GuidelineHistory,
    GuidelineVersion,
    fill_missing_stamps,
    guideline_routes,
    instruction_html,
    instruction_is_current,
    markdown_html,
    normalized_text,
    read_history,
    record_version,
    stamp_rows,
    text_version,
    version_counts,
)
from labelflow.tasks.ingest import project_settings, settings_to_update
from labelflow.tasks.quality import judge
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.spec import ProjectSpec, SpecError, load_spec
from tests.unit.fakes import FakeClients, FakeClock, FakeLabelStudio
from tests.unit.stage_fixtures import collect, ingest, upload_reviews

GUIDE_V1 = (
    "# 情感标注规范\n\n选择 **positive**、negative 或 neutral。\n\n| 例子 | 标签 |\n|---|---|\n| 很好 | positive |\n"
)
GUIDE_V2 = GUIDE_V1 + "\n反讽算作 negative (sarcasm counts as negative).\n"


def write_spec(folder: Path, guidelines: str | None = "docs/guide.md", **extra: object) -> Path:
    """A text-classification spec file in `folder` naming a guideline file relative to it."""
    body: dict[str, object] = {
        "name": "guided reviews",
        "source": "s3://raw/reviews/",
        "task": "text-classification",
        "labels": ["positive", "negative", "neutral"],
        **extra,
    }
    if guidelines is not None:
        body["guidelines"] = guidelines
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


def write_guide(folder: Path, text: str, name: str = "docs/guide.md") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


# --- the file and its version ------------------------------------------------------------------------------------
def test_the_version_is_the_sha256_of_the_normalised_text_so_crlf_bom_and_nfd_do_not_make_a_new_one() -> None:
    text = "Café 标注\nline two\n"
    version = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert text_version(normalized_text(text.encode("utf-8"))) == version
    same = ("\ufeff" + unicodedata.normalize("NFD", text).replace("\n", "\r\n")).encode("utf-8")
    assert normalized_text(same) == text and text_version(normalized_text(same)) == version
    assert text_version(normalized_text(b"Cafe\n")) != version


def test_a_spec_reads_its_guidelines_relative_to_its_own_folder_and_dumps_only_path_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_guide(tmp_path, GUIDE_V1)
    spec_path = write_spec(tmp_path)
    monkeypatch.chdir("/")  # relative to the spec file, not to the working directory
    spec = load_spec(spec_path)
    assert spec.guidelines is not None
    assert spec.guidelines.text == GUIDE_V1 and spec.guidelines.path == "docs/guide.md"
    assert spec.guidelines.sha256 == hashlib.sha256(GUIDE_V1.encode("utf-8")).hexdigest()
    dumped = spec.model_dump(mode="json")["guidelines"]
    assert dumped == {"path": "docs/guide.md", "sha256": spec.guidelines.sha256}  # the text stays out of spec.yaml
    # A changed file changes the spec's dump, so the ingest and collect shortcuts see it.
    before = spec.model_dump_json()
    write_guide(tmp_path, GUIDE_V2)
    assert load_spec(spec_path).model_dump_json() != before


def test_a_missing_guideline_file_is_one_line_naming_it(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path, guidelines="docs/missing.md")
    with pytest.raises(SpecError) as caught:
        load_spec(spec_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{spec_path}: guidelines: docs/missing.md: no such file")
    assert str(tmp_path / "docs" / "missing.md") in message


def test_a_gb18030_guideline_file_is_one_line_saying_it_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_bytes(GUIDE_V1.encode("gb18030"))
    spec_path = write_spec(tmp_path)
    with pytest.raises(SpecError) as caught:
        load_spec(spec_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{spec_path}: guidelines: docs/guide.md: not UTF-8 text (byte 0x")
    assert "save it as UTF-8" in message


def test_require_guideline_current_needs_a_guideline_file_and_other_values_are_refused(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path, guidelines=None, quality={"require_guideline": "current"})
    with pytest.raises(SpecError, match=re.escape("quality.require_guideline: current needs a `guidelines` file")):
        load_spec(spec_path)
    write_guide(tmp_path, GUIDE_V1)
    spec_path = write_spec(tmp_path, quality={"require_guideline": "newest"})
    with pytest.raises(SpecError, match=re.escape("quality.require_guideline")):
        load_spec(spec_path)
    assert load_spec(write_spec(tmp_path)).quality.require_guideline == "any"  # the default


# --- what annotators see -----------------------------------------------------------------------------------------
def test_markdown_becomes_html_that_cannot_run_script() -> None:
    hostile = (
        "# 规范\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n"
        "[click](javascript:alert(3)) [vb](vbscript:msgbox) [ok](https://example.com/a?b=1&c=2)\n\n"
        '<a href="javascript:alert(4)">raw</a>\n'
    )
    html = markdown_html(hostile)
    assert "<h1>规范</h1>" in html
    assert "<script" not in html and "<img" not in html and '<a href="javascript' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as text
    assert 'href="javascript' not in html and 'href="vbscript' not in html
    assert '<a href="https://example.com/a?b=1&amp;c=2">ok</a>' in html
    assert "<table>" in markdown_html("| a | b |\n|---|---|\n| 1 | 2 |\n")


def test_project_settings_show_the_guidelines_and_compare_them_by_version(tmp_path: Path) -> None:
    write_guide(tmp_path, GUIDE_V1)
    spec = load_spec(write_spec(tmp_path, instructions="<b>short</b> note"))
    settings = project_settings(spec)
    assert settings["show_instruction"] is True
    shown = settings["expert_instruction"]
    assert shown == instruction_html(spec)
    assert shown.startswith("<p>&lt;b&gt;short&lt;/b&gt; note</p>")  # the spec's instructions, escaped
    assert "<strong>positive</strong>" in shown and spec.guidelines is not None
    assert shown.rstrip().endswith(f"<p>Guidelines version <code>{spec.guidelines.sha256}</code></p>")

    # Label Studio cleans the HTML it stores (bleach drops some attributes): the same version is not pushed again.
    cleaned = shown.replace("<table>", "<table >")
    assert instruction_is_current(spec, cleaned)
    assert settings_to_update(spec, {**settings, "expert_instruction": cleaned}) == {}
    # Another version is.
    write_guide(tmp_path, GUIDE_V2)
    changed = load_spec(tmp_path / "spec.yaml")
    assert not instruction_is_current(changed, cleaned)
    assert set(settings_to_update(changed, {**settings, "expert_instruction": cleaned})) == {"expert_instruction"}


# --- history and stamps ------------------------------------------------------------------------------------------
def at(seconds: float) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def test_the_history_records_each_new_version_once_with_its_time_and_keeps_its_text(tmp_path: Path) -> None:
    clients = FakeClients()
    store = clients.store
    write_guide(tmp_path, GUIDE_V1)
    spec = load_spec(write_spec(tmp_path))
    v1 = spec.guidelines.sha256 if spec.guidelines else ""
    assert read_history(store, spec).versions == ()
    store.ensure_bucket(spec.state_location.bucket)  # ingest made it with the project record
    record_version(store, spec, at(10))
    record_version(store, spec, at(20))  # the same version: nothing new
    write_guide(tmp_path, GUIDE_V2)
    spec2 = load_spec(tmp_path / "spec.yaml")
    history = record_version(store, spec2, at(30))
    v2 = spec2.guidelines.sha256 if spec2.guidelines else ""
    assert [(v.version, v.first_seen) for v in history.versions] == [
        (v1, "2026-01-01T00:00:10.000000Z"),
        (v2, "2026-01-01T00:00:30.000000Z"),
    ]
    assert read_history(store, spec) == history
    state = spec.state_location
    assert store.get_bytes(state.bucket, state.join(f"guidelines/{v2}.md")).decode() == GUIDE_V2
    assert history.current == v2
    assert history.version_at(at(5)) is None  # before any guideline was pushed
    assert history.version_at(at(10)) == v1 and history.version_at(at(29.999)) == v1
    assert history.version_at(at(30)) == v2 and history.version_at(None) is None


def history_of(*entries: tuple[str, float]) -> GuidelineHistory:
    return GuidelineHistory(tuple(GuidelineVersion(v, at(s).strftime("%Y-%m-%dT%H:%M:%S.%fZ")) for v, s in entries))


def test_rows_are_stamped_by_when_their_answer_was_last_saved_and_old_rows_are_filled_at_judging() -> None:
    history = history_of(("v1", 10), ("v2", 30))
    rows = [
        {"annotation_id": 1, "created_at": at(15), "updated_at": at(15)},
        {"annotation_id": 2, "created_at": at(15), "updated_at": at(40)},  # edited after the change: made again
        {"annotation_id": 3, "created_at": at(5), "updated_at": None},
    ]
    stamped = stamp_rows(rows, history)
    assert [row["guideline_version"] for row in stamped] == ["v1", "v2", None]
    assert stamp_rows([{"created_at": at(15)}], None) == [{"created_at": at(15)}]  # no guidelines: no stamps

    # A table collected before stamps existed reads the column as null; judging fills it, keeping real stamps.
    frame = pd.DataFrame(
        {
            "annotation_id": [1, 2, 3],
            "created_at": pd.to_datetime([at(15), at(35), at(35)], utc=True),
            "updated_at": pd.to_datetime([at(15), at(35), at(35)], utc=True),
            "guideline_version": [None, None, "v1"],
        }
    )
    assert fill_missing_stamps(frame, history)["guideline_version"].tolist() == ["v1", "v2", "v1"]
    assert "guideline_version" in ANNOTATION_SCHEMA.names


# --- judging under require_guideline: current --------------------------------------------------------------------
def tables(stamps: list[str | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three one-vote tasks (overlap 1), task i answered `positive` under guideline `stamps[i]`."""
    tasks = pd.DataFrame(
        {
            "task_id": [1, 2, 3],
            "source_uri": [f"s3://raw/{i}.txt" for i in (1, 2, 3)],
            "content_sha256": ["a" * 64, "b" * 64, "c" * 64],
            "overlap": [1, 1, 1],
            "deleted": [False] * 3,
        }
    )
    annotations = pd.DataFrame(
        {
            "task_id": [1, 2, 3],
            "annotation_id": [11, 12, 13],
            "annotator_id": [7, 7, 7],
            "annotator_email": ["a@x"] * 3,
            "label": ["positive"] * 3,
            "problem": [None] * 3,
            "lead_time_seconds": [5.0] * 3,
            "created_at": pd.to_datetime([at(1)] * 3, utc=True),
            "updated_at": pd.to_datetime([at(1)] * 3, utc=True),
            "guideline_version": stamps,
        }
    )
    return tasks, annotations


def guided_spec(tmp_path: Path, require: str) -> ProjectSpec:
    write_guide(tmp_path, GUIDE_V2)
    return load_spec(write_spec(tmp_path, overlap=1, quality={"require_guideline": require}))


def test_labels_under_an_older_guideline_are_flagged_and_routed_back_under_current(tmp_path: Path) -> None:
    spec = guided_spec(tmp_path, "current")
    assert spec.guidelines is not None
    current = spec.guidelines.sha256
    tasks, annotations = tables(["old", current, None])
    report = judge(tasks, annotations, spec)
    rows = report.consensus.set_index("task_id")
    assert rows.loc[2, "finished"] and not rows.loc[2, "flagged"] and rows.loc[2, "label"] == "positive"
    for task in (1, 3):  # an older version, and one made before any version was recorded
        assert rows.loc[task, "flagged"] and not rows.loc[task, "finished"]
        assert rows.loc[task, "flag_reason"] == f"1 {OUTDATED_REASON}"
        assert rows.loc[task, "outdated_annotations"] == 1
    # Routed back: one more slot each, for a label under the current version (not capped by max_overlap).
    assert guideline_routes(report.consensus, spec) == [(1, 2), (3, 2)]

    # Once routed (overlap 2) nothing is routed again; a current label then finishes the task on its own vote.
    tasks["overlap"] = [2, 1, 2]
    assert guideline_routes(judge(tasks, annotations, spec).consensus, spec) == []
    more = pd.concat(
        [annotations, annotations.iloc[[0]].assign(annotation_id=21, annotator_id=8, label="negative",
                                                    guideline_version=current)],
        ignore_index=True,
    )  # fmt: skip
    rows = judge(tasks, more, spec).consensus.set_index("task_id")
    assert rows.loc[1, "finished"] and not rows.loc[1, "flagged"] and rows.loc[1, "label"] == "negative"


def test_under_any_every_label_counts_whatever_its_version(tmp_path: Path) -> None:
    spec = guided_spec(tmp_path, "any")
    tasks, annotations = tables(["old", "older", None])
    report = judge(tasks, annotations, spec)
    assert report.consensus["finished"].all() and not report.consensus["flagged"].any()
    assert guideline_routes(report.consensus, spec) == []


def test_version_counts_name_unknown_stamps() -> None:
    frame = pd.DataFrame({"guideline_version": ["v2", "v1", "v2", None]})
    assert version_counts(frame) == {"v2": 2, "unknown": 1, "v1": 1}
    assert version_counts(pd.DataFrame({"label": ["a"]})) == {"unknown": 1}


# --- the whole stage on the fakes --------------------------------------------------------------------------------
def test_a_guideline_change_is_pushed_stamps_new_labels_flags_old_ones_and_ships_with_the_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    clients = FakeClients(label_studio_client=FakeLabelStudio(clock))
    ls = clients.label_studio_client
    # labelflow's clock is Label Studio's here (on a real stack both read the same host's time).
    monkeypatch.setattr(guidelines_module, "utc_now", lambda: clock.now)
    monkeypatch.setattr("labelflow.tasks.ingest.utc_now", lambda: clock.now)
    write_guide(tmp_path, GUIDE_V1)
    spec_path = write_spec(
        tmp_path,
        source="s3://raw/reviews/",
        overlap=1,
        dataset={"name": "guided"},
        quality={"require_guideline": "current"},
    )
    spec = load_spec(spec_path)
    assert spec.guidelines is not None
    v1 = spec.guidelines.sha256
    upload_reviews(clients, 0, 4)
    project_id = int(ingest(clients, spec)["project_id"])
    assert ls.projects[project_id]["show_instruction"] is True
    assert instruction_is_current(spec, ls.projects[project_id]["expert_instruction"])

    clock.tick(5)
    first = ls.add_user("first@labelflow.fake")
    for task in ls.project_tasks(project_id):
        ls.annotate(task["id"], task["data"]["source_key"].split("/")[1], first)
    clock.tick(5)
    summary, _ = collect(clients, spec)
    assert summary["dataset"]["published"] and summary["dataset"]["rows"] == 4

    # The guideline changes: collect pushes it, records it, and the v1 labels no longer count.
    clock.tick(5)
    write_guide(tmp_path, GUIDE_V2)
    spec = load_spec(spec_path)
    assert spec.guidelines is not None
    v2 = spec.guidelines.sha256
    summary, _ = collect(clients, spec)
    assert instruction_is_current(spec, ls.projects[project_id]["expert_instruction"])
    assert [v.version for v in read_history(clients.store, spec).versions] == [v1, v2]
    assert summary["quality"]["flagged_tasks"] == 4 and summary["routed_back"] == 4
    assert {task["overlap"] for task in ls.project_tasks(project_id)} == {2}
    assert not summary["dataset"]["published"]

    # New labels for two tasks are stamped v2; the next version holds exactly those tasks.
    clock.tick(5)
    second = ls.add_user("second@labelflow.fake")
    renewed = [task["id"] for task in ls.project_tasks(project_id)][:2]
    for task_id in renewed:
        ls.annotate(task_id, ls.tasks[task_id]["data"]["source_key"].split("/")[1], second)
    clock.tick(5)
    summary, _ = collect(clients, spec)
    assert summary["quality"]["flagged_tasks"] == 2
    published = summary["dataset"]
    assert published["published"] and published["version"] == 2 and published["rows"] == 2

    pulled = DatasetRegistry(clients.store, clients.tracking).pull("guided", 2, tmp_path / "v2")
    consensus = pd.read_parquet(pulled.path("consensus"))
    assert sorted(consensus["task_id"]) == sorted(renewed)
    raw = pd.read_parquet(pulled.path("annotations"))
    # Each published task holds its outdated v1 label (kept, stamped) and the v2 label its consensus comes from.
    assert sorted(raw["guideline_version"]) == sorted([v1, v1, v2, v2])
    shipped = pulled.manifest["guidelines"]
    assert shipped["version"] == v2 and shipped["file"] == "guidelines.md" and shipped["path"] == "docs/guide.md"
    assert shipped["label_versions"] == {v1: 2, v2: 2}
    (entry,) = [f for f in pulled.manifest["files"] if f["path"] == "guidelines.md"]
    assert entry["role"] == "guidelines" and entry["sha256"] == v2
    assert pulled.path("guidelines").read_text(encoding="utf-8") == GUIDE_V2
    assert json.loads(json.dumps(pulled.manifest))["guidelines"] == shipped
