"""An annotator who clicks Submit without answering is refused by Label Studio, and nothing is saved.

Projects made by the ingest flow deny empty annotations (Submit stays disabled, with Label Studio's reason on hover)
and make the answer control `required` where Label Studio can check it (a grading's Rating: a rubric tick alone
is refused with a warning). Each test reads the task back through the API: no annotation reached Label Studio.
"""

# The fixtures imported from test_labeling_pages (`browser` and `screenshots` are conftest's) are test arguments,
# which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.ingest import read_project_record, state_index_key
from labelflow.tasks.spec import STATE_BUCKET, parse_spec
from tests.browser.test_labeling_pages import Ingested, LabelingPage, ingest_records, labeling_page  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# How long a refused Submit is given to (wrongly) reach Label Studio before the task is read back.
NO_SAVE_SECONDS = 4.0
EMPTY_DENIED = "Empty annotations denied in this project"  # Label Studio's reason for a disabled Submit
LABELS = ["正面", "负面"]
EDITOR_SETTINGS = "labelStudio:settings"  # the local-storage key of the labeling editor's preferences


def submit_button(page: LabelingPage) -> Any:
    """The labeling page's Submit button."""
    from selenium.webdriver.common.by import By

    return page.driver.find_element(By.XPATH, "//button[normalize-space()='Submit']")


def shown_message(page: LabelingPage, text: str, seconds: float = 5.0) -> bool:
    """Whether the page shows `text` (in a tooltip or a warning) within `seconds`."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(page.driver, seconds, poll_frequency=0.2).until(
            lambda driver: text in driver.find_element(By.TAG_NAME, "body").text
        )
    except TimeoutException:
        return False
    return True


def assert_nothing_saved(label_studio: LabelStudioClient, task_id: int) -> None:
    """The task still has no annotation (given a refused click the time a saved one would take to arrive)."""
    time.sleep(NO_SAVE_SECONDS)
    task = label_studio.get_task(task_id)
    assert task["annotations"] == [] and task["total_annotations"] == 0


def click_submit_without_answering(page: LabelingPage) -> None:
    """Point at Submit and click it, as an annotator who has not answered would."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    # A disabled button gets no mouse events: Label Studio's tooltip hangs on the element wrapping it.
    wrapper = submit_button(page).find_element(By.XPATH, "ancestor::div[contains(@class, 'tooltip-wrapper')]")
    ActionChains(page.driver).move_to_element(wrapper).pause(0.5).click().perform()


@pytest.fixture
def page(labeling_page: LabelingPage) -> Iterator[LabelingPage]:
    """The labeling page with the editor's "show tooltips" preference on, as an annotator may set it; then off again.

    Label Studio gives the reason for a disabled Submit only as its tooltip, and tooltips are off by default; the
    editor keeps the preference in the browser's local storage (`labelStudio:settings`).
    """
    labeling_page.driver.get(labeling_page.base_url + "/")
    labeling_page.driver.execute_script(
        "localStorage.setItem(arguments[0], JSON.stringify({enableTooltips: true}))", EDITOR_SETTINGS
    )
    yield labeling_page
    labeling_page.driver.execute_script("localStorage.removeItem(arguments[0])", EDITOR_SETTINGS)


@pytest.fixture
def ingest_texts(
    object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str, tmp_path: Path, prefect_api: str
) -> Iterator[Callable[[list[str]], Ingested]]:
    """Ingest texts into a text-classification project with the ingest flow; afterwards project and objects go."""
    from labelflow.flows.ingest import ingest

    source, state = f"{unique_name}-src", f"{unique_name}-state"
    body = {
        "name": f"texts {unique_name}",
        "source": f"s3://{source}/texts/",
        "state": f"s3://{state}/labelflow/",
        "task": "text-classification",
        "labels": LABELS,
    }

    def run(texts: list[str]) -> Ingested:
        object_store.ensure_bucket(source)
        for number, text in enumerate(texts):
            object_store.put_bytes(source, f"texts/{number:03d}.txt", text.encode("utf-8"), "text/plain")
        path = tmp_path / "texts.yaml"
        path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
        assert ingest(str(path))["tasks_created"] == len(texts)
        spec = parse_spec(body)
        recorded = read_project_record(object_store, spec)
        assert recorded is not None
        project_id = int(recorded["project_id"])
        tasks = {t["data"]["text"]: t for text in texts for t in label_studio.tasks_where(project_id, "text", text)}
        return Ingested(spec, project_id, tasks)

    yield run
    while (project_id := label_studio.find_project(body["name"])) is not None:
        label_studio.delete_project(project_id)
    object_store.delete(STATE_BUCKET, state_index_key(parse_spec(body).state_location))
    for bucket in (source, state):
        if object_store.bucket_exists(bucket):
            for item in list(object_store.list_objects(bucket)):
                object_store.delete(bucket, item.key)
            object_store._client.delete_bucket(Bucket=bucket)


def test_an_empty_submit_of_a_text_classification_task_is_refused_and_nothing_is_saved(
    page: LabelingPage,
    ingest_texts: Callable[[list[str]], Ingested],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    text = "这家酒店的早餐很好吃，房间也很干净。"
    project = ingest_texts([text, "Room was noisy."])
    task = project.tasks[text]
    project_settings = label_studio.get_project(project.project_id)
    assert project_settings is not None and project_settings["enable_empty_annotation"] is False
    view = page.open(project.project_id, task["id"], shows=text)
    assert all(label in view.text for label in LABELS)

    assert not submit_button(page).is_enabled()
    click_submit_without_answering(page)
    assert shown_message(page, EMPTY_DENIED), "no reason shown for the refused Submit"
    page.screenshot(screenshots, "empty-submit-text-classification")
    assert_nothing_saved(label_studio, task["id"])


def test_an_empty_submit_of_a_preference_task_is_refused_and_nothing_is_saved(
    page: LabelingPage,
    ingest_records: Callable[..., Ingested],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    rows = [{"id": "sky", "question": "天空为什么是蓝色的？", "answers": ["空气分子散射蓝光。", "因为大海。"]}]
    fields = {"prompt": "question", "response_a": "answers.0", "response_b": "answers.1"}
    project = ingest_records("preference", fields, rows, {"allow_tie": True, "ask_reason": True})
    task = project.tasks["sky"]
    page.open(project.project_id, task["id"], shows=rows[0]["answers"][1])

    assert not submit_button(page).is_enabled()
    click_submit_without_answering(page)
    assert shown_message(page, EMPTY_DENIED), "no reason shown for the refused Submit"
    page.screenshot(screenshots, "empty-submit-preference")
    assert_nothing_saved(label_studio, task["id"])


def test_a_grading_without_a_score_is_refused_with_a_warning_and_nothing_is_saved(
    page: LabelingPage,
    ingest_records: Callable[..., Ingested],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    from selenium.webdriver.common.by import By

    rows = [{"id": "tea", "question": "如何泡绿茶？", "answer": "用八十度左右的水冲泡两分钟。"}]
    fields = {"prompt": "question", "response": "answer"}
    project = ingest_records("response-grading", fields, rows, {"scale": 5, "rubric": ["礼貌", "correct"]})
    task = project.tasks["tea"]
    view = page.open(project.project_id, task["id"], shows=rows[0]["answer"])

    # Nothing answered: Submit is disabled.
    assert not submit_button(page).is_enabled()
    click_submit_without_answering(page)
    assert shown_message(page, EMPTY_DENIED), "no reason shown for the refused Submit"
    assert_nothing_saved(label_studio, task["id"])

    # A rubric tick but no score: Submit is enabled, and Label Studio refuses it for the required Rating.
    view.find_element(By.XPATH, ".//input[@name='礼貌']/ancestor::label").click()
    page.submit()
    assert shown_message(page, 'Rating "label" is required.'), "no warning for the missing score"
    page.screenshot(screenshots, "grading-without-score")
    assert_nothing_saved(label_studio, task["id"])


def test_an_sft_answer_left_empty_is_refused_with_a_warning_and_nothing_is_saved(
    page: LabelingPage,
    ingest_records: Callable[..., Ingested],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    """A typed answer: Submit stays enabled (no Add needed: tests/browser/test_labeling_pages.py submits typed text)."""
    rows = [{"id": "egg", "question": "怎么煮鸡蛋？"}]
    project = ingest_records("sft", {"prompt": "question"}, rows, {})
    task = project.tasks["egg"]
    page.open(project.project_id, task["id"], shows=rows[0]["question"])

    page.submit()
    assert shown_message(page, 'Input for the textarea "label" is required.'), "no warning for the empty answer"
    page.screenshot(screenshots, "sft-empty-answer")
    assert_nothing_saved(label_studio, task["id"])
