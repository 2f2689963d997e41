"""What an annotator sees and does on the labeling pages of the four LLM-data types, in a real headless Chromium.

Records (one in Chinese) are ingested by the ingest flow into the running stack's Label Studio; the admin logs in,
opens a task's labeling page and the rendered page is checked: the prompt and every response are visible, and the
type's controls are there. Each test then answers by clicking and typing, submits, and reads the stored annotation
back through the API with the type's own parser. A screenshot of each page is saved in $LABELFLOW_SCREENSHOTS
(default: the test's tmp_path), for a person to look at.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.spec import ProjectSpec, parse_spec
from labelflow.tasks.task_types.ranking import item_id
from tests.conftest import RunningStack

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PAGE_SECONDS = 30.0  # Label Studio's first render of a labeling page takes a few seconds on a busy machine
SAVE_SECONDS = 20.0
LOGIN_TRIES = 3
# How long the annotation area must stay the same element before a test may use it.
SETTLE_SECONDS = 1.5
# The annotation area of the labeling page (the Data Manager's table and the side panels are outside it).
ANNOTATION_VIEW = ".lsf-main-view__annotation"


@dataclass(frozen=True)
class Ingested:
    """A project made by the ingest flow: its spec, Label Studio id, and tasks by record id."""

    spec: ProjectSpec
    project_id: int
    tasks: dict[str, dict[str, Any]]


class LabelingPage:
    """The logged-in browser, on one task's labeling page at a time."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")

    def open(self, project_id: int, task_id: int, shows: str) -> Any:
        """Open a task's labeling page and wait until its annotation area shows `shows`; return that area."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(f"{self.base_url}/projects/{project_id}/data?task={task_id}")

        seen: dict[str, Any] = {}

        def settled(driver: Any) -> Any:
            views = driver.find_elements(By.CSS_SELECTOR, ANNOTATION_VIEW)
            if not views or shows not in views[0].text:
                seen.clear()
                return False
            view, now = views[0], time.monotonic()
            if seen.get("view") != view:
                seen.update(view=view, since=now)
            return view if now - seen["since"] >= SETTLE_SECONDS else False

        # The editor renders the task, then renders it again once the annotation is made (a slow machine shows it),
        # so an element found a moment ago may be gone: wait until the same annotation area has lasted a while.
        wait = WebDriverWait(
            self.driver, PAGE_SECONDS, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
        )
        return wait.until(settled, f"task {task_id} never showed {shows!r}")

    def submit(self) -> None:
        """Click the page's Submit button."""
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.XPATH, "//button[normalize-space()='Submit']").click()

    def screenshot(self, folder: Path, name: str) -> Path:
        """Save the browser window as folder/name.png."""
        path = folder / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), f"no screenshot written to {path}"
        assert path.stat().st_size > 10_000  # a blank page compresses to far less
        return path


@pytest.fixture(scope="session")
def labeling_page(browser: Any, local_stack: RunningStack) -> LabelingPage:
    """The browser logged in to the stack's Label Studio as its admin (the login `labelflow status --json` shows)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    login = local_stack.stack.connection()["label_studio_login"]
    base_url = str(local_stack.label_studio.url).rstrip("/")
    # A few tries: Label Studio's SQLite database answers "database is locked" now and then under concurrent load.
    for _ in range(LOGIN_TRIES):
        browser.get(f"{base_url}/user/login/")
        if "/user/login" not in browser.current_url:  # the session's browser is logged in already (another module)
            return LabelingPage(browser, base_url)
        browser.find_element(By.NAME, "email").send_keys(login["username"])
        browser.find_element(By.NAME, "password").send_keys(login["password"])
        browser.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        try:
            WebDriverWait(browser, PAGE_SECONDS / LOGIN_TRIES).until(
                lambda driver: "/user/login" not in driver.current_url
            )
        except TimeoutException:
            continue
        return LabelingPage(browser, base_url)
    page = " ".join(browser.find_element(By.TAG_NAME, "body").text.split())[:300]
    pytest.fail(
        f"the admin's login to {base_url} was refused {LOGIN_TRIES} times; the page says: {page}", pytrace=False
    )


@pytest.fixture
def ingest_records(
    object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str, tmp_path: Path, prefect_api: str
) -> Iterator[Callable[..., Ingested]]:
    """Ingest a JSONL file of records with the ingest flow; afterwards the project and the buckets' objects go."""
    from labelflow.flows.ingest import ingest

    source, state = f"{unique_name}-src", f"{unique_name}-state"
    titles: list[str] = []

    def run(task: str, fields: dict[str, Any], rows: list[dict[str, Any]], options: dict[str, Any]) -> Ingested:
        object_store.ensure_bucket(source)
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        object_store.put_bytes(source, f"{task}/records.jsonl", lines.encode("utf-8"), "application/x-ndjson")
        body = {
            "name": f"{task} {unique_name}",
            "source": f"s3://{source}/{task}/",
            "state": f"s3://{state}/labelflow/",
            "task": task,
            "records": {"format": "jsonl", "fields": fields, "id": "id"},
            "dataset": {"name": unique_name},
        }
        if options:
            body["options"] = options
        titles.append(body["name"])
        path = tmp_path / f"{task}.yaml"
        path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
        assert ingest(str(path))["tasks_created"] == len(rows)
        spec = parse_spec(body)
        # The project the ingest recorded, not a title lookup: a create that Label Studio failed half-way (its
        # "database is locked") can leave an empty project of the same title behind.
        recorded = read_project_record(object_store, spec)
        assert recorded is not None
        project_id = int(recorded["project_id"])
        tasks = {}
        for row in rows:
            (task_row,) = label_studio.tasks_where(project_id, "record_id", row["id"])
            tasks[row["id"]] = task_row
        return Ingested(spec, project_id, tasks)

    yield run
    for title in titles:
        for _ in range(5):  # every project of the title, including a half-created duplicate
            project_id = label_studio.find_project(title)
            if project_id is None:
                break
            label_studio.delete_project(project_id)
    for bucket in (source, state):
        if object_store.bucket_exists(bucket):
            for item in list(object_store.list_objects(bucket)):
                object_store.delete(bucket, item.key)


def submitted_result(label_studio: LabelStudioClient, task_id: int) -> list[dict[str, Any]]:
    """The result of the task's one annotation, once the Submit click has reached Label Studio."""
    deadline = time.monotonic() + SAVE_SECONDS
    while time.monotonic() < deadline:
        annotations = label_studio.get_task(task_id)["annotations"]
        if annotations:
            assert len(annotations) == 1, annotations
            return annotations[0]["result"]
        time.sleep(0.25)
    raise AssertionError(f"no annotation of task {task_id} reached Label Studio within {SAVE_SECONDS:.0f} s")


def text_block(view: Any, text: str) -> Any:
    """The rendered Text object (Label Studio's rich-text container) showing exactly `text`."""
    from selenium.webdriver.common.by import By

    blocks = [b for b in view.find_elements(By.CSS_SELECTOR, ".lsf-richtext__container") if b.text.strip() == text]
    assert len(blocks) == 1, f"{len(blocks)} text blocks show {text!r}"
    return blocks[0]


def test_preference_shows_both_responses_side_by_side_and_a_click_on_a_is_read_as_a(
    labeling_page: LabelingPage,
    ingest_records: Callable[..., Ingested],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    from selenium.webdriver.common.by import By

    rows = [
        {
            "id": "sky-en",
            "question": "Why is the sky blue?",
            "answers": [
                {"text": "Air molecules scatter blue sunlight more than red.", "model": "model-x"},
                {"text": "Because it reflects the ocean.", "model": "model-y"},
            ],
        },
        {
            "id": "sky-zh",
            "question": "天空为什么是蓝色的？",
            "answers": [
                {"text": "空气分子散射蓝光比红光更多。", "model": "model-x"},
                {"text": "因为天空倒映着大海。", "model": "model-y"},
            ],
        },
    ]
    fields = {
        "prompt": "question",
        "response_a": "answers.0.text",
        "response_b": "answers.1.text",
        "model_a": "answers.0.model",
        "model_b": "answers.1.model",
    }
    project = ingest_records("preference", fields, rows, {"allow_tie": True, "ask_reason": True})
    task = project.tasks["sky-zh"]
    prompt, response_a, response_b = (task["data"][key] for key in ("prompt", "response_a", "response_b"))
    view = labeling_page.open(project.project_id, task["id"], shows=response_b)

    shown = view.text
    for text in (prompt, "Response A", response_a, "Response B", response_b):
        assert text in shown
    assert "model-x" not in shown and "model-y" not in shown  # annotators judge the text, not its author
    # The two Pairwise sides are clickable (Label Studio gives them a pointer), the prompt is not.
    side_a, side_b = text_block(view, response_a), text_block(view, response_b)
    for side in (side_a, side_b):
        assert side.find_element(By.XPATH, "..").value_of_css_property("cursor") == "pointer"
    assert text_block(view, prompt).find_element(By.XPATH, "..").value_of_css_property("cursor") != "pointer"
    # A on the left, B on the right, on one line.
    assert side_a.rect["x"] + side_a.rect["width"] <= side_b.rect["x"]
    assert abs(side_a.rect["y"] - side_b.rect["y"]) < 2
    verdicts = view.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
    assert [box.get_attribute("name") for box in verdicts] == ["tie", "both-bad"]
    assert not any(box.is_selected() for box in verdicts)
    reason = view.find_element(By.CSS_SELECTOR, "textarea[name=reason]")
    assert reason.get_attribute("value") == "" and reason.get_attribute("placeholder") == "Why? (optional)"

    side_a.click()
    reason.send_keys("A 解释了散射。")
    labeling_page.screenshot(screenshots, "preference")
    labeling_page.submit()

    result = submitted_result(label_studio, task["id"])
    assert {item["type"]: item["value"] for item in result} == {
        "pairwise": {"selected": "left"},
        "textarea": {"text": ["A 解释了散射。"]},
    }
    label, answer, problems = project.spec.task_type.parse_answer(result, task["data"], project.spec)
    assert (label, answer, problems) == ("A", {"preferred": "A", "reason": "A 解释了散射。"}, [])


def test_ranking_lists_the_responses_in_order_and_a_keyboard_move_is_read_as_the_new_order(
    labeling_page: LabelingPage,
    ingest_records: Callable[..., Ingested],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    rows = [
        {
            "id": "capital-en",
            "question": "What is the capital of France?",
            "candidates": [{"text": t, "model": f"model-{k}"} for k, t in enumerate(["Paris.", "Lyon.", "Nice.", "?"])],
        },
        {
            "id": "capital-zh",
            "question": "法国的首都是哪里？",
            "candidates": [
                {"text": t, "model": f"model-{k}"}
                for k, t in enumerate(["巴黎是法国的首都。", "是巴黎。", "里昂。", "我不知道。"])
            ],
        },
    ]
    fields = {
        "prompt": "question",
        "responses": [f"candidates.{k}.text" for k in range(4)],
        "models": [f"candidates.{k}.model" for k in range(4)],
    }
    project = ingest_records("ranking", fields, rows, {})
    task = project.tasks["capital-zh"]
    responses = [candidate["text"] for candidate in rows[1]["candidates"]]
    view = labeling_page.open(project.project_id, task["id"], shows=responses[-1])

    shown = view.text
    assert rows[1]["question"] in shown and all(text in shown for text in responses)
    assert not any(f"model-{k}" in shown for k in range(4))  # neutral titles, never the model's name
    items = view.find_elements(By.CSS_SELECTOR, "[data-ranker-id]")
    assert [item.get_attribute("data-ranker-id") for item in items] == [item_id(n) for n in range(1, 5)]
    assert [item.find_element(By.CSS_SELECTOR, "h5").text for item in items] == [f"Response {n}" for n in range(1, 5)]
    assert [text in item.text for item, text in zip(items, responses, strict=True)] == [True] * 4

    # Drag and drop by keyboard (the Ranker's drag library supports it): lift response 3, up twice, drop.
    items[2].send_keys(Keys.SPACE)
    keys = ActionChains(labeling_page.driver)
    for key in (Keys.ARROW_UP, Keys.ARROW_UP, Keys.SPACE):
        keys.pause(0.3).send_keys(key)  # each move is animated before the next one is taken
    keys.perform()

    def shown_order() -> list[str]:
        return [
            item.get_attribute("data-ranker-id") for item in view.find_elements(By.CSS_SELECTOR, "[data-ranker-id]")
        ]

    moved = [item_id(n) for n in (3, 1, 2, 4)]
    with contextlib.suppress(TimeoutException):  # the assertion below shows the order it stayed in
        WebDriverWait(labeling_page.driver, 5).until(lambda _: shown_order() == moved)
    assert shown_order() == moved
    labeling_page.screenshot(screenshots, "ranking")
    labeling_page.submit()

    result = submitted_result(label_studio, task["id"])
    label, answer, problems = project.spec.task_type.parse_answer(result, task["data"], project.spec)
    assert (label, answer, problems) == ("3>1>2>4", {"order": [3, 1, 2, 4], "responses": 4}, [])


def test_response_grading_shows_k_stars_and_the_rubric_and_the_4th_star_is_read_as_score_4(
    labeling_page: LabelingPage,
    ingest_records: Callable[..., Ingested],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    rubric = ["factually correct", "answers the question", "礼貌"]
    rows = [
        {
            "id": "tea-en",
            "question": "How do I brew green tea?",
            "answer": {"text": "Use 80 °C water.", "model": "m-a"},
        },
        {
            "id": "tea-zh",
            "question": "如何泡绿茶？",
            "answer": {"text": "用八十度左右的水冲泡两分钟。", "model": "m-b"},
        },
    ]
    fields = {"prompt": "question", "response": "answer.text", "model": "answer.model"}
    project = ingest_records("response-grading", fields, rows, {"scale": 5, "rubric": rubric})
    task = project.tasks["tea-zh"]
    view = labeling_page.open(project.project_id, task["id"], shows=rows[1]["answer"]["text"])

    shown = view.text
    for text in (rows[1]["question"], rows[1]["answer"]["text"], "Score: 1 (worst) to 5 (best)", *rubric):
        assert text in shown
    assert "m-b" not in shown  # graders judge the answer, not its author
    stars = view.find_elements(By.CSS_SELECTOR, "[role=radiogroup] [role=radio]")
    assert [star.get_attribute("aria-posinset") for star in stars] == ["1", "2", "3", "4", "5"]
    assert not any(star.get_attribute("aria-checked") == "true" for star in stars)
    checks = view.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
    assert [check.get_attribute("name") for check in checks] == rubric
    assert not any(check.is_selected() for check in checks)

    stars[3].click()
    view.find_element(By.XPATH, ".//input[@name='礼貌']/ancestor::label").click()
    checked = ["true"] * 4 + ["false"]
    WebDriverWait(labeling_page.driver, 5).until(lambda _: [s.get_attribute("aria-checked") for s in stars] == checked)
    labeling_page.screenshot(screenshots, "response-grading")
    labeling_page.submit()

    result = submitted_result(label_studio, task["id"])
    label, answer, problems = project.spec.task_type.parse_answer(result, task["data"], project.spec)
    assert label == "4" and problems == []
    assert answer == {"score": 4, "rubric": {"factually correct": False, "answers the question": False, "礼貌": True}}


def test_sft_prefills_the_answer_with_the_draft_and_an_edited_answer_is_read_back(
    labeling_page: LabelingPage,
    ingest_records: Callable[..., Ingested],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    rows = [
        {"id": "pasta", "question": "How do I cook pasta?", "draft": {"text": "Boil it.", "model": "draft-1"}},
        {"id": "noodles", "question": "怎么煮面条？", "draft": {"text": "煮一下。", "model": "draft-1"}},
    ]
    fields = {"prompt": "question", "draft": "draft.text", "draft_model": "draft.model"}
    project = ingest_records("sft", fields, rows, {"forbid_unedited_draft": True})
    task = project.tasks["noodles"]
    view = labeling_page.open(project.project_id, task["id"], shows="Your answer")

    shown = view.text
    for text in ("怎么煮面条？", "Model draft (read-only)", "煮一下。", "Your answer"):
        assert text in shown
    assert "draft-1" not in shown
    answer_box = view.find_element(By.CSS_SELECTOR, "textarea[name=label]")
    assert answer_box.get_attribute("value") == "煮一下。"  # prefilled with the draft, to be edited in place
    assert answer_box.is_enabled() and answer_box.get_attribute("readonly") is None

    written = "把水烧开，放入面条煮八到十分钟，捞出沥干。"
    answer_box.send_keys(Keys.CONTROL, "a")
    answer_box.send_keys(Keys.DELETE)
    answer_box.send_keys(written)
    assert answer_box.get_attribute("value") == written
    labeling_page.screenshot(screenshots, "sft")
    labeling_page.submit()

    result = submitted_result(label_studio, task["id"])
    assert [item["value"] for item in result] == [{"text": [written]}]
    label, answer, problems = project.spec.task_type.parse_answer(result, task["data"], project.spec)
    assert answer == {"text": written, "edited_from_draft": True} and problems == []
    assert label is not None


def test_sft_chat_prompt_is_shown_as_a_dialogue_and_without_drafts_the_answer_box_starts_empty(
    labeling_page: LabelingPage,
    ingest_records: Callable[..., Ingested],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    from selenium.webdriver.common.by import By

    chat = [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "怎么泡绿茶？"},
    ]
    rows = [{"id": "tea-chat", "messages": chat}, {"id": "egg-plain", "messages": "How do I boil an egg?"}]
    project = ingest_records("sft", {"prompt": "messages"}, rows, {"chat": True})
    task = project.tasks["tea-chat"]
    view = labeling_page.open(project.project_id, task["id"], shows="怎么泡绿茶？")

    shown = view.text
    for text in ("Answer in one sentence.", "怎么泡绿茶？", "Your answer"):
        assert text in shown
    assert shown.index("Answer in one sentence.") < shown.index("怎么泡绿茶？")  # the turns in their order
    assert "Model draft" not in shown
    answer_box = view.find_element(By.CSS_SELECTOR, "textarea[name=label]")
    assert answer_box.get_attribute("value") == ""

    written = "用八十度的水泡两到三分钟。"
    answer_box.send_keys(written)
    labeling_page.screenshot(screenshots, "sft-chat")
    labeling_page.submit()

    result = submitted_result(label_studio, task["id"])
    label, answer, problems = project.spec.task_type.parse_answer(result, task["data"], project.spec)
    assert answer == {"text": written, "edited_from_draft": None} and problems == [] and label is not None
