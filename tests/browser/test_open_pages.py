"""What `labelflow open` gives a person, in a real headless Chromium: the Data Docs copied to the local cache open
from file:// with their styles and scripts (offline), and their index leads to each validation result; the copied
quality report opens too. Screenshots go to $LABELFLOW_SCREENSHOTS (default: the test's tmp_path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from tests.integration.test_open import open_json
from tests.integration.test_publish import annotate, collect, text_project

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PAGE_SECONDS = 30.0
# The index's rows that lead to a validation result (the expectation suites' rows lead to the suites).
RESULT_LINKS = (
    "return [...document.querySelectorAll(\"tr.clickable-row[data-href^='validations/']\")].map(r => r.dataset.href)"
)


def test_the_copied_data_docs_open_offline_and_lead_to_each_validation_result(
    browser: Any,
    screenshots: Path,
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path, spec = text_project(object_store, tmp_path, unique_name, 6)
    annotate(label_studio, object_store, spec, unique_name)
    assert collect(path)["validation"]["success"]
    docs = open_json(path, "docs", tmp_path / "cache")
    assert docs["url"].startswith("file://")

    browser.get(docs["url"])
    # The results table is drawn (and redrawn) by the vendored bootstrap-table script: its rows mean the copy's
    # scripts loaded. Rows are read and clicked afresh each time, as a redraw replaces them.
    wait = WebDriverWait(
        browser, PAGE_SECONDS, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    )
    targets = wait.until(
        lambda driver: len(found := sorted(driver.execute_script(RESULT_LINKS))) == 2 and found,
        "the Data Docs index never listed the two validation results",
    )
    assert [t.split("/")[1] for t in targets] == ["annotations", "consensus"]
    assert all((Path(docs["path"]).parent / target).is_file() for target in targets)  # each result is in the copy
    assert "Showing 1 to 2 of 2 rows" in browser.find_element(By.TAG_NAME, "body").text
    # The vendored Bootstrap stylesheet is applied: its font stack (an unstyled page keeps "Times New Roman").
    font = browser.execute_script("return getComputedStyle(document.body).fontFamily")
    assert "sans-serif" in font, font
    browser.save_screenshot(str(screenshots / "open-docs-index.png"))

    consensus = next(t for t in targets if t.startswith("validations/consensus/"))
    wait.until(
        lambda driver: (
            driver.find_element(By.CSS_SELECTOR, f"tr.clickable-row[data-href='{consensus}']").click() or True
        )
    )
    wait.until(lambda driver: "/validations/consensus/" in driver.current_url, "the result row led nowhere")
    page = wait.until(
        lambda driver: (
            "Expectation Validation Result" in (text := driver.find_element(By.TAG_NAME, "body").text) and text
        ),
        "the validation result page never rendered",
    )
    assert "Expectation Suite: consensus" in page and "Status: Succeeded" in page, page[:500]
    assert browser.current_url.startswith("file://")
    browser.save_screenshot(str(screenshots / "open-docs-validation.png"))

    report = open_json(path, "report", tmp_path / "cache")
    browser.get(report["url"])
    wait.until(lambda driver: spec.name in driver.find_element(By.TAG_NAME, "body").text, "the report is empty")
    browser.save_screenshot(str(screenshots / "open-report.png"))
