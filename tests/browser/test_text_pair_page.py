"""What an annotator sees and does on a text-pair labeling page, in a real headless Chromium: both texts under their
language codes, the three classes by their readable names and five optional stars; the answer is stored as the class
(the Choice alias), read back with the type's parser. The page's screenshot goes to $LABELFLOW_SCREENSHOTS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.tasks.task_types.text_pair import REQUIRED_MESSAGE
from tests.browser.test_empty_submit import assert_nothing_saved, page, shown_message  # noqa: F401 - page: a fixture
from tests.browser.test_labeling_pages import (  # noqa: F401 - labeling_page and ingest_records are fixtures
    Ingested,
    LabelingPage,
    ingest_records,
    labeling_page,
    submitted_result,
    text_block,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_text_pair_shows_both_texts_with_their_languages_and_a_click_is_read_as_the_class_and_score(
    labeling_page: LabelingPage,  # noqa: F811
    ingest_records: Callable[..., Ingested],  # noqa: F811
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    rows = [
        {"id": "tea", "a": "Green tea is brewed with water at about 80 degrees.", "b": "绿茶用八十度左右的水冲泡。",
         "la": "en", "lb": "zh-hans", "g": "aligned"},
        {"id": "bus", "a": "Der Bus fährt um acht Uhr ab.", "b": "Le bus part à huit heures du matin.",
         "la": "de", "lb": "fr", "g": "partial"},
    ]  # fmt: skip
    fields = {"source": "a", "target": "b", "source_lang": "la", "target_lang": "lb", "gold": "g"}
    project = ingest_records("text-pair", fields, rows, {})
    task = project.tasks["tea"]
    view = labeling_page.open(project.project_id, task["id"], shows=rows[0]["b"])

    assert text_block(view, rows[0]["a"]) and text_block(view, rows[0]["b"])  # each text alone in its block
    shown = view.text
    assert '"predictions"' not in shown  # not the task's JSON (what `$source` made Label Studio show)
    for text in ("Text A", "Text B", rows[0]["a"], rows[0]["b"], "zh-Hans", "Aligned", "Partially aligned"):
        assert text in shown
    lines = [line.strip() for line in shown.splitlines()]
    assert "en" in lines  # the source language is its own header line, not the literal $source_lang
    assert "$source_lang" not in shown and "$target_lang" not in shown and "aligned" not in lines
    stars = view.find_elements(By.CSS_SELECTOR, "[role=radiogroup] [role=radio]")
    assert [star.get_attribute("aria-posinset") for star in stars] == ["1", "2", "3", "4", "5"]

    view.find_element(By.XPATH, ".//label[contains(normalize-space(), 'Partially aligned')]").click()
    stars[3].click()
    checked = ["true"] * 4 + ["false"]
    WebDriverWait(labeling_page.driver, 5).until(lambda _: [s.get_attribute("aria-checked") for s in stars] == checked)
    labeling_page.screenshot(screenshots, "text-pair")
    labeling_page.submit()

    result = submitted_result(label_studio, task["id"])
    choices = [item["value"]["choices"] for item in result if item["type"] == "choices"]
    assert choices == [["partial"]]  # the alias, whatever the annotator read
    label, answer, problems = project.spec.task_type.parse_answer(result, task["data"], project.spec)
    assert (label, answer, problems) == ("partial", {"label": "partial", "score": 4}, [])


def test_a_score_without_a_class_is_refused_with_the_types_message_and_nothing_is_saved(
    page: LabelingPage,  # noqa: F811
    ingest_records: Callable[..., Ingested],  # noqa: F811
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    from selenium.webdriver.common.by import By

    rows = [{"id": "rain", "a": "Es regnet seit gestern.", "b": "雨从昨天开始一直在下。", "la": "de", "lb": "zh"}]
    fields = {"source": "a", "target": "b", "source_lang": "la", "target_lang": "lb"}
    project = ingest_records("text-pair", fields, rows, {})
    task = project.tasks["rain"]
    view = page.open(project.project_id, task["id"], shows=rows[0]["b"])

    view.find_elements(By.CSS_SELECTOR, "[role=radiogroup] [role=radio]")[2].click()  # three stars, no class
    page.submit()
    assert shown_message(page, REQUIRED_MESSAGE), "no warning for the missing class"
    page.screenshot(screenshots, "text-pair-without-class")
    assert_nothing_saved(label_studio, task["id"])
