"""An uncertainty-first queue as a person meets it: "Label All Tasks" in the Data Manager, in a real headless Chromium.

The queue is ordered with `order_queue`; the test clicks "Label All Tasks" and checks the labeling stream opens on
the task the model is least sure of, then, after Submit, on the next most uncertain one. Screenshots of both go to
$LABELFLOW_SCREENSHOTS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.tasks.queue_order import order_queue
from tests.browser.test_labeling_pages import (  # noqa: F401 - labeling_page is a fixture
    ANNOTATION_VIEW,
    PAGE_SECONDS,
    LabelingPage,
    labeling_page,
)
from tests.integration.test_queue_order import LABEL_CONFIG, choice

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# One text per task; the model is sure of the first ones (in id order) and least sure of "durian", then "cherry".
TEXTS = ["apple pie was great", "banana bread was fine", "cherry tart was odd", "durian was confusing", "egg tart"]
PROBABILITIES = np.array(
    [[0.97, 0.02, 0.01], [0.90, 0.05, 0.05], [0.45, 0.35, 0.20], [0.34, 0.33, 0.33], [0.80, 0.15, 0.05]]
)


@pytest.fixture
def ordered_project(label_studio: LabelStudioClient, unique_name: str) -> Iterator[tuple[int, list[int]]]:
    """A project whose queue is ordered least-confident first: (project id, task ids)."""
    project_id = label_studio.create_project(f"queue page {unique_name}", LABEL_CONFIG)
    try:
        task_ids = label_studio.import_tasks(project_id, [{"text": text} for text in TEXTS])
        results = [choice(["pos", "neg", "mixed"][int(np.argmax(row))]) for row in PROBABILITIES]
        order_queue(
            label_studio, project_id, "least-confident", task_ids, PROBABILITIES, "models:/reviews/1 v1", results
        )
        yield project_id, task_ids
    finally:
        label_studio.delete_project(project_id)


def shown_text(driver: Any) -> str | None:
    """Which of TEXTS the labeling stream's annotation area shows, or None while it loads."""
    from selenium.webdriver.common.by import By

    views = driver.find_elements(By.CSS_SELECTOR, ANNOTATION_VIEW)
    shown = [text for text in TEXTS if views and text in views[0].text]
    return shown[0] if len(shown) == 1 else None


def wait_for_text(driver: Any, other_than: str | None = None) -> str:
    """The text the stream settles on (a different one than `other_than`)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def settled(driver: Any) -> str | bool:
        first = shown_text(driver)
        if first is None or first == other_than:
            return False
        time.sleep(1.0)  # the editor renders the task twice; a text that lasts is the one shown
        return first if shown_text(driver) == first else False

    wait = WebDriverWait(driver, PAGE_SECONDS, poll_frequency=0.3, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(settled, f"the labeling stream never showed a task other than {other_than!r}")


def test_label_all_tasks_opens_on_the_most_uncertain_task(
    labeling_page: LabelingPage,  # noqa: F811
    ordered_project: tuple[int, list[int]],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    project_id, task_ids = ordered_project
    driver = labeling_page.driver
    driver.get(f"{labeling_page.base_url}/projects/{project_id}/data")
    button = WebDriverWait(driver, PAGE_SECONDS).until(
        expected_conditions.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Label All Tasks']"))
    )
    button.click()

    first = wait_for_text(driver)
    labeling_page.screenshot(screenshots, "queue-order-first-task")
    assert first == "durian was confusing"  # the least confident task, not the first by id
    # The page asked for it with the Data Manager's next_task action (what get_next_task serves).
    requested = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any("/api/dm/actions" in url and "id=next_task" in url for url in requested)

    labeling_page.submit()
    second = wait_for_text(driver, other_than=first)
    labeling_page.screenshot(screenshots, "queue-order-second-task")
    assert second == "cherry tart was odd"
    stored = label_studio.get_task(task_ids[TEXTS.index(first)])["annotations"]
    assert len(stored) == 1  # the first task was submitted before the stream moved on
