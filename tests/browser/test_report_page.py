"""The quality report as a project lead sees it, in a real headless Chromium (no stack needed).

The report's charts are drawn by the browser from Vega-Lite specs, as SVG text with the browser's fonts. The tests
open report pages written to files, wait for the charts, and check what is drawn: every label (Chinese, Arabic,
Cyrillic, emoji) is in the chart as text, in full, and each of its characters is drawn with a real glyph, not the
empty box of a missing one (a pixel comparison with the rendering of U+10FFFD, a code point no font has). They also
check that the page loads nothing from elsewhere, the legend covers no bar, count axes show whole numbers, a
one-annotator project lays out cleanly and the page fits a 1366-pixel laptop screen. Full-page screenshots are saved
in $LABELFLOW_SCREENSHOTS (default: the test's tmp_path), for a person to look at.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from labelflow.tasks.annotations import AnnotationNormalizer, annotations_table, tasks_table
from labelflow.tasks.quality import judge
from labelflow.tasks.quality_report import ReportContext, html_report
from labelflow.tasks.spec import parse_spec
from tests.unit.test_quality_report import ls_task

pytestmark = pytest.mark.browser

LABELS = ["正面", "负面", "إيجابي", "Положительный", "👍"]
LAPTOP = (1366, 900)
CHARTS_SECONDS = 30.0

# For each text element of a chart: its text, and the characters whose drawing (same font as the chart's) is
# pixel-identical to the drawing of U+10FFFD, which no font covers: those are drawn as the missing-glyph box.
# `control` is the same check on U+10FFFE, also in no font: it must count as missing, or the check proves nothing.
MISSING_GLYPHS = """
const [selector] = arguments;
const canvas = document.createElement('canvas');
canvas.width = 96; canvas.height = 48;
const context = canvas.getContext('2d', {willReadFrequently: true});
function pixels(text, font) {
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.font = font; context.fillStyle = '#000'; context.textBaseline = 'middle';
  context.fillText(text, 8, 24);
  return context.getImageData(0, 0, canvas.width, canvas.height).data;
}
function same(a, b) { return a.length === b.length && a.every((value, i) => value === b[i]); }
return [...document.querySelectorAll(selector)].map((element) => {
  const style = getComputedStyle(element);
  const font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const box = pixels(String.fromCodePoint(0x10FFFD), font);
  const characters = [...element.textContent].filter((c) => c.trim());
  return {
    text: element.textContent,
    font: font,
    width: element.getComputedTextLength ? element.getComputedTextLength() : element.getBoundingClientRect().width,
    missing: characters.filter((c) => same(pixels(c, font), box)),
    control: same(pixels(String.fromCodePoint(0x10FFFE), font), box),
  };
});
"""

# The boxes of a chart's legend and of its bars, in page pixels.
LEGEND_AND_BARS = """
const [id] = arguments;
const box = (element) => { const r = element.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
const svg = document.querySelector('#' + id + ' svg');
return {
  legends: [...svg.querySelectorAll('g.role-legend')].map(box),
  bars: [...svg.querySelectorAll('g.mark-rect.role-mark path')].map(box),
  notes: [...svg.querySelectorAll('g.mark-text.role-mark text')].map(box),
  svg: box(svg),
};
"""


def write_report(folder: Path, name: str, labels: list[str], tasks: list[dict[str, Any]], overlap: int) -> Path:
    """Judge exported tasks as collect does and write the report page to folder/name.html."""
    body = {"name": f"评论 {name}", "source": "s3://raw/x/", "task": "text-classification", "labels": labels}
    spec = parse_spec({**body, "overlap": overlap, "quality": {"min_annotations_for_tier": 1}})
    people = {user: f"annotator{user}@example.com" for user in range(1, 9)}
    rows = [AnnotationNormalizer(spec, 7, people, "label").task(task, 1) for task in tasks]
    task_rows = tasks_table([row.task for row in rows]).to_pandas()
    annotation_rows = annotations_table([a for row in rows for a in row.annotations]).to_pandas()
    report = judge(task_rows, annotation_rows, spec)
    context = ReportContext(task_rows, annotation_rows, "http://127.0.0.1:8080", 7)
    path = folder / f"{name}.html"
    path.write_text(html_report(spec, report, context), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two report pages: a multilingual project of four annotators, and a project of one annotator."""
    folder = tmp_path_factory.mktemp("reports")
    skill = {1: 1.0, 2: 0.9, 3: 0.75, 4: 0.5}
    tasks = []
    for task_id in range(40):
        truth = LABELS[task_id % len(LABELS)]
        users = [1 + (task_id + k) % 4 for k in range(3)]
        # Each annotator misses the truth on a fixed share of tasks (deterministic, no random numbers).
        answers = [(u, truth if (task_id * 7 + u) % 20 < skill[u] * 20 else LABELS[(task_id + 1) % 5]) for u in users]
        tasks.append(ls_task(task_id, answers, f"这家餐厅的服务非常好，但是价格有点贵。评论 {task_id} " * 4))
    tasks.append(ls_task(40, [(1, "正面"), (2, "إيجابي"), (3, "👍")], "三种答案 " * 80))  # split three ways: flagged
    one = [ls_task(task_id, [(1, ["是", "否"][task_id % 2])], f"第 {task_id} 条") for task_id in range(6)]
    return {
        "multilingual": write_report(folder, "multilingual", LABELS, tasks, overlap=3),
        "one-annotator": write_report(folder, "one-annotator", ["是", "否"], one, overlap=1),
    }


def open_report(browser: Any, path: Path) -> None:
    """Load a report page at laptop size and wait until vega-embed has drawn every chart."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(*LAPTOP)
    browser.get(path.as_uri())
    WebDriverWait(browser, CHARTS_SECONDS).until(
        lambda driver: driver.execute_script("return document.body.dataset.charts"), "the charts were never drawn"
    )
    assert browser.execute_script("return document.body.dataset.charts") == "drawn"


def save_full_page(browser: Any, folder: Path, name: str) -> Path:
    """A screenshot of the whole page (not only the window) as folder/name.png."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": LAPTOP[0], "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 20_000  # a blank page compresses to far less
    return path


def overlaps(a: list[float], b: list[float]) -> bool:
    """Whether two [left, top, right, bottom] boxes share any area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def axis_labels(browser: Any, chart: str, axis: str) -> list[str]:
    """The tick labels of one axis ("X" or "Y") of a chart."""
    selector = f"#{chart} svg g.role-axis[aria-label^='{axis}-axis'] g.role-axis-label text"
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((t) => t.textContent)", selector
    )


def test_labels_in_every_script_are_drawn_as_text_with_real_glyphs(
    browser: Any, reports: dict[str, Path], screenshots: Path
) -> None:
    open_report(browser, reports["multilingual"])
    drawn = browser.execute_script(MISSING_GLYPHS, "#label-distribution svg g.role-axis-label text")
    on_axis = [text for text in (item["text"] for item in drawn) if not text.isdigit()]
    assert on_axis == LABELS  # every label, in full (Vega shortens a label it has no room for with "…")
    for item in drawn:
        assert item["control"], f"the missing-glyph check cannot tell a box from a glyph in {item['font']}"
        hint = "install fonts-noto-color-emoji" if "👍" in item["missing"] else "install fonts-wqy-microhei"
        assert not item["missing"], f"{item['text']!r} is drawn with empty boxes for {item['missing']} ({hint})"
        assert item["width"] > 0
    # The annotators' names and the table's answers are text in the page too: the emoji answer is a real glyph.
    answers = browser.execute_script(MISSING_GLYPHS, "table.flagged td.answers li")
    assert answers and not [item for item in answers if item["missing"]]
    browser.find_element("css selector", "#label-distribution").screenshot(str(screenshots / "report-labels.png"))
    save_full_page(browser, screenshots, "report-multilingual")


def test_the_page_loads_nothing_from_elsewhere_and_fits_a_laptop_screen(browser: Any, reports: dict[str, Path]) -> None:
    for path in reports.values():
        open_report(browser, path)
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
        assert fetched == []  # scripts, styles and data are all inline
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= browser.execute_script("return window.innerWidth"), f"{path.name} scrolls sideways"
        # The flagged tasks link to their Label Studio page.
        links = browser.execute_script("return [...document.querySelectorAll('table.flagged a')].map((a) => a.href)")
        assert all(re.fullmatch(r"http://127\.0\.0\.1:8080/projects/7/data\?task=\d+", link) for link in links)


def test_count_axes_show_whole_numbers_and_the_legend_covers_no_bar(browser: Any, reports: dict[str, Path]) -> None:
    open_report(browser, reports["multilingual"])
    for chart, axis in (("task-agreement", "Y"), ("label-distribution", "X")):
        ticks = axis_labels(browser, chart, axis)
        assert ticks and all(re.fullmatch(r"\d+", tick) for tick in ticks), f"{chart}: {ticks}"
    boxes = browser.execute_script(LEGEND_AND_BARS, "annotator-scores")
    assert boxes["legends"] and len(boxes["bars"]) == 4
    for legend in boxes["legends"]:
        assert not any(overlaps(legend, bar) for bar in boxes["bars"])
    scores = axis_labels(browser, "annotator-scores", "X")
    assert scores[0] == "0%" and scores[-1] == "100%"


def test_a_one_annotator_project_lays_out_cleanly(browser: Any, reports: dict[str, Path], screenshots: Path) -> None:
    open_report(browser, reports["one-annotator"])
    boxes = browser.execute_script(LEGEND_AND_BARS, "annotator-scores")
    assert len(boxes["bars"]) == 0 and len(boxes["notes"]) >= 1  # one annotator: nobody to agree with, no score
    names = axis_labels(browser, "annotator-scores", "Y")
    assert names == ["annotator1@example.com"]
    for legend in boxes["legends"]:
        assert not any(overlaps(legend, note) for note in boxes["notes"])
    # One row is one step high, not stretched over a tall empty plot.
    assert boxes["svg"][3] - boxes["svg"][1] < 160
    labels = browser.execute_script(MISSING_GLYPHS, "#label-distribution svg g.role-axis-label text")
    assert [item["text"] for item in labels if not item["text"].isdigit()] == ["是", "否"]
    assert not [item for item in labels if item["missing"]]
    save_full_page(browser, screenshots, "report-one-annotator")


def test_suspected_label_errors_and_the_reliability_diagram_are_drawn(
    browser: Any, tmp_path: Path, screenshots: Path
) -> None:
    from labelflow.tasks.label_errors import find_suspects, hold_back_suspects
    from tests.unit.test_label_error_suspects import corpus, outcome, report_of, spec, state_store

    project = spec(review_suspects=True)
    tasks, consensus = corpus()
    report = report_of(consensus)
    held = hold_back_suspects(state_store(project), project, report, find_suspects(project, consensus, tasks))
    context = ReportContext(tasks, None, "http://127.0.0.1:8080", 7, suspects=held, automation=outcome())
    path = tmp_path / "suspects.html"
    path.write_text(html_report(project, report, context), encoding="utf-8")
    open_report(browser, path)
    boxes = browser.execute_script(LEGEND_AND_BARS, "reliability")
    assert len(boxes["bars"]) == len(outcome().reliability)
    heights = [bottom - top for _, top, _, bottom in boxes["bars"]]
    # Bars rise from zero to the bin's accuracy (0.52 and 0.8 of the plot's height), they are not flat ticks.
    assert heights[0] > 100 and abs(heights[1] / heights[0] - 0.8 / 0.52) < 0.05, heights
    diagonal = browser.execute_script("return document.querySelectorAll('#reliability svg g.mark-line path').length")
    assert diagonal == 1
    assert axis_labels(browser, "reliability", "X")[-1] == "1.0"
    links = browser.execute_script("return [...document.querySelectorAll('table.suspects a')].map((a) => a.href)")
    assert len(links) == len(held.table)
    assert all(re.fullmatch(r"http://127\.0\.0\.1:8080/projects/7/data\?task=\d+", link) for link in links)
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= browser.execute_script("return window.innerWidth"), "the page scrolls sideways"
    save_full_page(browser, screenshots, "report-suspects-automation")
