"""The quality report a project lead reads: charts drawn by the browser, flagged tasks linked to Label Studio with
their content and every answer, annotator scores with intervals (no server; tests/browser renders the page)."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from typing import Any

import pandas as pd
import pytest
from PIL import Image
from statsmodels.stats.proportion import proportion_confint

from labelflow.tasks.annotations import AnnotationNormalizer, annotations_table, tasks_table
from labelflow.tasks.quality import QualityReport, judge, wilson_interval
from labelflow.tasks.quality_report import (
    ReportContext,
    chart_specs,
    html_report,
    markdown,
    task_url,
    write_quality_report,
)
from labelflow.tasks.spec import ProjectSpec, parse_spec
from tests.unit.fakes import FakeClients, FakeObjectStore
from tests.unit.stage_fixtures import collect, ingest, text_spec, upload_reviews

LABELS = ["正面", "负面", "إيجابي", "Положительный", "👍"]
LABEL_STUDIO = "http://label-studio.example:8080"


class Page(HTMLParser):
    """The parts of a report page the tests read: links, images, scripts, and the text of each table cell."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.stylesheets = 0
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a":
            self.links.append(found.get("href") or "")
        elif tag == "img":
            self.images.append(found.get("src") or "")
        elif tag == "script":
            self.scripts.append(found)
        elif tag == "link":
            self.stylesheets += 1
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join(" ".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def spec_of(labels: list[str], overlap: int = 3, **extra: Any) -> ProjectSpec:
    body = {"name": "评论 reviews", "source": "s3://raw/x/", "task": "text-classification", "labels": labels}
    return parse_spec({**body, "overlap": overlap, "quality": {"min_annotations_for_tier": 1}, **extra})


def ls_task(task_id: int, answers: list[tuple[int, str]], text: str) -> dict[str, Any]:
    """An exported Label Studio task with one choice annotation per (user id, label)."""
    annotations = [
        {
            "id": task_id * 100 + user,
            "completed_by": user,
            "lead_time": 3.0,
            "created_at": "2026-11-23T10:00:00Z",
            "updated_at": "2026-11-23T10:00:00Z",
            "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}],
        }
        for user, label in answers
    ]
    data = {"text": text, "source_uri": f"s3://raw/x/{task_id}.txt", "content_sha256": f"h{task_id}"}
    return {"id": task_id, "data": data, "annotations": annotations, "updated_at": "2026-11-23T10:00:00Z"}


def judged(spec: ProjectSpec, tasks: list[dict[str, Any]]) -> tuple[QualityReport, ReportContext]:
    """The judged report of exported tasks, and the context the collect flow passes with it."""
    normalizer = AnnotationNormalizer(spec, 7, {u: f"annotator{u}@example.com" for u in range(1, 9)}, "label")
    rows = [normalizer.task(task, 1) for task in tasks]
    task_rows = tasks_table([row.task for row in rows]).to_pandas()
    annotation_rows = annotations_table([a for row in rows for a in row.annotations]).to_pandas()
    report = judge(task_rows, annotation_rows, spec)
    return report, ReportContext(task_rows, annotation_rows, LABEL_STUDIO, 7)


def multilingual() -> tuple[ProjectSpec, QualityReport, ReportContext]:
    """Twelve tasks, three annotators each; task 3 splits three ways, so it is flagged."""
    spec = spec_of(LABELS)
    tasks = [ls_task(t, [(1, LABELS[t % 5]), (2, LABELS[t % 5]), (3, LABELS[t % 5])], f"评论 {t}") for t in range(12)]
    long_text = "这家餐厅的服务非常好，但是价格有点贵。" * 30 + "</script><script>alert(1)</script>"
    tasks[3] = ls_task(3, [(1, "正面"), (2, "负面"), (3, "👍")], long_text)
    report, context = judged(spec, tasks)
    return spec, report, context


def charts_of(page: str) -> dict[str, Any]:
    """The Vega-Lite specs the page hands to vega-embed."""
    match = re.search(r'<script type="application/json" id="labelflow-charts">(.*?)</script>', page, re.S)
    assert match, "the page carries no chart data"
    return json.loads(match.group(1))


def test_wilson_interval_matches_statsmodels_and_is_none_without_trials() -> None:
    for right, trials in ((21, 25), (0, 7), (7, 7), (1, 1), (480, 500)):
        low, high = wilson_interval(right / trials, trials)
        expected = proportion_confint(right, trials, alpha=0.05, method="wilson")
        assert (low, high) == pytest.approx(expected, abs=2e-4)  # z = 1.96, statsmodels uses 1.959964...
    assert wilson_interval(0.5, 0) == (None, None)
    narrow, wide = wilson_interval(0.8, 400), wilson_interval(0.8, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_annotator_scores_carry_the_interval_of_the_tasks_they_rest_on() -> None:
    spec, report, _ = multilingual()
    people = report.annotators.set_index("annotator_id")
    # Each annotator agrees with consensus on 11 of the 12 shared tasks (task 3 has no majority: a tie).
    assert people.loc[1, "score_basis"] == "consensus" and people.loc[1, "score_tasks"] == 12
    expected = proportion_confint(people.loc[1, "score"] * 12, 12, method="wilson")
    assert (people.loc[1, "score_low"], people.loc[1, "score_high"]) == pytest.approx(expected, abs=2e-4)
    page = Page(html_report(spec, report))
    header = next(row for row in page.rows if "annotator email" in row)
    first = next(row for row in page.rows if row and row[0] == "annotator1@example.com")
    shown = dict(zip(header, first, strict=True))
    assert shown["95% interval"] == f"{expected[0]:.1%}–{expected[1]:.1%}"
    assert f"{expected[0]:.1%}–{expected[1]:.1%}" in markdown(spec, report, stats_stub(), 0, "s3://b/r/")


def test_charts_are_vega_lite_drawn_by_the_inlined_libraries_with_the_labels_as_text() -> None:
    spec, report, context = multilingual()
    text = html_report(spec, report, context)
    page = Page(text)
    # Self-contained: every script is inline, nothing is loaded from elsewhere, no pictures of text.
    assert page.scripts and all(script.get("src") is None for script in page.scripts)
    assert page.stylesheets == 0 and not any(src.startswith("data:image/png") for src in page.images)
    for library in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        assert f'<script data-library="{library}">' in text
    assert "renderer: 'svg'" in text
    charts = charts_of(text)
    assert set(charts) == {"annotator-scores", "task-agreement", "label-distribution"}
    drawn = {row["label"] for row in charts["label-distribution"]["data"]["values"]}
    assert drawn == set(report.metrics["label_distribution"]) and drawn <= set(LABELS)
    annotators = charts["annotator-scores"]["data"]["values"]
    assert [row["annotator"] for row in annotators] == list(report.annotators["annotator_email"])
    assert all(row["low"] <= row["score"] <= row["high"] for row in annotators)


def test_count_axes_take_whole_numbers_and_the_legend_stays_outside_the_bars() -> None:
    spec, report, _ = multilingual()
    charts = chart_specs(report, spec)

    def count_axes(chart: dict[str, Any]) -> list[dict[str, Any]]:
        layers = chart.get("layer", [chart])
        return [
            channel["axis"]
            for layer in layers
            for channel in layer.get("encoding", {}).values()
            if isinstance(channel, dict) and (channel.get("aggregate") == "count" or channel.get("field") == "count")
        ]

    for key in ("task-agreement", "label-distribution"):
        axes = count_axes(charts[key])
        assert axes and all(axis["tickMinStep"] == 1 and axis["format"] == "d" for axis in axes)
    legends = [
        layer["encoding"]["color"]["legend"]
        for layer in charts["annotator-scores"]["layer"]
        if "color" in layer.get("encoding", {})
    ]
    assert legends and all(legend["orient"] in ("right", "bottom", "top") for legend in legends)


def test_flagged_tasks_link_to_label_studio_with_a_snippet_and_every_answer() -> None:
    spec, report, context = multilingual()
    flagged = list(report.flagged()["task_id"])
    assert flagged == [3]
    text = html_report(spec, report, context)
    page = Page(text)
    assert task_url(LABEL_STUDIO, 7, 3) == f"{LABEL_STUDIO}/projects/7/data?task=3"
    assert task_url(LABEL_STUDIO, 7, 3) in page.links
    row = next(row for row in page.rows if row and row[0] == "3")
    content, answers = row[1], row[2]
    assert content.startswith("这家餐厅的服务非常好") and content.endswith("…") and len(content) <= 241
    assert answers.split(" ") == [
        *("annotator1@example.com:", "正面"),
        *("annotator2@example.com:", "负面"),
        *("annotator3@example.com:", "👍"),
    ]
    # The task's text is data, never markup or script: the injected tag does not survive anywhere in the page.
    assert "<script>alert(1)" not in text
    artifact = markdown(spec, report, stats_stub(), 0, "s3://b/r/", context)
    assert f"[3]({task_url(LABEL_STUDIO, 7, 3)})" in artifact


def test_without_label_studio_details_the_task_is_plain_text() -> None:
    spec, report, _ = multilingual()
    page = Page(html_report(spec, report))
    assert not [link for link in page.links if "/projects/" in link]
    assert any(row and row[0] == "3" for row in page.rows)


def test_a_one_annotator_project_has_one_bar_and_no_empty_charts() -> None:
    spec = spec_of(["yes", "no"], overlap=1)
    report, context = judged(spec, [ls_task(t, [(1, ["yes", "no"][t % 2])], f"text {t}") for t in range(5)])
    charts = chart_specs(report, spec)
    assert [row["annotator"] for row in charts["annotator-scores"]["data"]["values"]] == ["annotator1@example.com"]
    assert charts["label-distribution"]["data"]["values"] == [
        {"label": "yes", "count": 3},
        {"label": "no", "count": 2},
    ]
    text = html_report(spec, report, context)
    assert "<h2>Flagged tasks (0)</h2>" in text and "No task is flagged." in text
    for chart in charts.values():
        assert chart["data"]["values"], "a chart without data is left out, not drawn empty"


def test_image_tasks_show_a_thumbnail_read_from_the_store() -> None:
    store = FakeObjectStore()
    picture = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 30, 30)).save(picture, format="PNG")
    store.put_object("raw", "img/1.png", picture.getvalue())
    store.put_object("raw", "img/2.png", b"not an image")
    store.ensure_bucket("state")
    spec = parse_spec(
        {
            "name": "pictures",
            "source": "s3://raw/img/",
            "state": "s3://state/labelflow/",
            "task": "image-classification",
            "labels": ["cat", "dog"],
            "overlap": 2,
        }
    )
    consensus = pd.DataFrame(
        {
            "task_id": [1, 2],
            "source_uri": ["s3://raw/img/1.png", "s3://raw/img/2.png"],
            "finished": [True, True],
            "flagged": [True, True],
            "agreement": [0.5, 0.5],
            "flag_reason": ["tied vote", "tied vote"],
        }
    )
    report = QualityReport(consensus=consensus, annotators=pd.DataFrame(), pairwise=pd.DataFrame())
    location = write_quality_report(store, spec, report, stats_stub(), "run1", ReportContext(None, None, None, None))
    text = store.get_bytes("state", location.removeprefix("s3://state/") + "report.html").decode()
    thumbnails = [src for src in Page(text).images if src.startswith("data:image/jpeg;base64,")]
    assert len(thumbnails) == 1  # the unreadable object gets its file name instead
    shown = Image.open(io.BytesIO(base64.b64decode(thumbnails[0].split(",", 1)[1])))
    assert max(shown.size) <= 160 and shown.getpixel((10, 10))[0] > 150
    assert "2.png" in text


def test_the_collect_flow_writes_a_report_whose_flagged_tasks_link_to_its_project() -> None:
    clients = FakeClients()
    spec = text_spec(dataset={"name": "reviews"})
    upload_reviews(clients, 0, 3)
    project_id = int(ingest(clients, spec)["project_id"])
    ls = clients.label_studio_client
    split = ls.project_tasks(project_id)[0]["id"]
    users = [ls.add_user(f"annotator{i}@labelflow.fake") for i in range(3)]
    for task in ls.project_tasks(project_id):
        truth = task["data"]["source_key"].split("/")[1]
        answers = ("positive", "negative", "neutral") if task["id"] == split else (truth, truth, truth)
        for answer, user in zip(answers, users, strict=True):
            ls.annotate(task["id"], answer, user)
    ls.clock.tick(5)
    summary, _ = collect(clients, spec)
    state = spec.state_location
    report_key = summary["report"].removeprefix(f"s3://{state.bucket}/") + "report.html"
    page = Page(clients.store.get_bytes(state.bucket, report_key).decode())
    assert f"{ls.settings.base_url}/projects/{project_id}/data?task={split}" in page.links
    row = next(row for row in page.rows if row and row[0] == str(split))
    assert "annotator0@labelflow.fake: positive" in row[2] and "annotator2@labelflow.fake: neutral" in row[2]


def stats_stub() -> Any:
    """The collection figures the Markdown artifact prints."""

    class Stats:
        changed_tasks = 0
        annotation_rows = 0

        def as_dict(self) -> dict[str, int]:
            return {"changed_tasks": 0}

    return Stats()


def test_chart_data_without_a_score_is_valid_json_with_nulls() -> None:
    """SFT and ranking batches have no agreement score (NaN): the page's JSON carries null, never NaN."""
    from labelflow.tasks.quality_report import _script_json

    text = _script_json({"agreement": float("nan"), "rows": [(float("inf"), 1.5)], "label": "</script>"})
    assert json.loads(text) == {"agreement": None, "rows": [[None, 1.5]], "label": "</script>"}
    assert "</" not in text


def test_a_written_answer_shows_its_text_not_its_digest() -> None:
    from labelflow.tasks.quality_report import _answer
    from labelflow.tasks.task_types.free_text import answer_digest

    caption = "白色背景上的一个蓝色圆形。"
    row = {"label": answer_digest(caption), "answer": json.dumps({"text": caption}, ensure_ascii=False)}
    assert _answer(row) == f"“{caption}”"
    long = {"label": "x", "answer": json.dumps({"text": "word " * 200}), "problem": "2 captions submitted"}
    shown = _answer(long)
    assert shown.startswith("“word word") and "…" in shown and shown.endswith("(invalid: 2 captions submitted)")
    assert _answer({"label": "partial", "answer": json.dumps({"label": "partial", "score": 4})}) == "partial"
