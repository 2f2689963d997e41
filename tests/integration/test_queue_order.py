"""Uncertainty-first queues and held tasks on the real Label Studio, seen from an annotator's side.

An annotator signs up through the organisation's invitation link, as people do, and asks for tasks with the calls
the labeling page makes for "Label All Tasks" (the Data Manager's `next_task` action) and the older
`GET /api/projects/{id}/next`, submitting an annotation after each. The served order must follow the model's
uncertainty; held tasks must never be served, released ones must be.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.settings import LabelStudioSettings
from labelflow.tasks.queue_order import UNCERTAINTY_SAMPLING, order_queue, queue_scores

pytestmark = pytest.mark.integration

LABELS = ["pos", "neg", "mixed"]
LABEL_CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    + "".join(f'<Choice value="{label}"/>' for label in LABELS)
    + "</Choices></View>"
)


def choice(label: str) -> list[dict[str, Any]]:
    """A Choices result for LABEL_CONFIG."""
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def sign_up_annotator(admin: LabelStudioClient) -> tuple[LabelStudioClient, dict[str, str]]:
    """A new user who joined through the invitation link; (their API client, their login)."""
    base = admin.settings.base_url
    invite = admin._request("GET", "/api/invite", "invite link").json()["invite_url"]
    login = {"email": f"annotator-{secrets.token_hex(4)}@labelflow.test", "password": f"Pw-{secrets.token_hex(8)}"}
    with httpx.Client(base_url=base, timeout=60) as browser_like:
        browser_like.get(invite)  # the sign-up form sets the CSRF cookie
        form = {**login, "csrfmiddlewaretoken": browser_like.cookies.get("csrftoken") or ""}
        answer = browser_like.post(invite, data=form, headers={"Referer": base + invite})
        assert answer.status_code == 302, f"sign-up refused: HTTP {answer.status_code} {answer.text[:200]}"
        token = browser_like.get("/api/current-user/token").json()["token"]
    return LabelStudioClient(LabelStudioSettings(url=base, api_key=token)), login


@pytest.fixture
def annotator(label_studio: LabelStudioClient) -> Iterator[LabelStudioClient]:
    client, _ = sign_up_annotator(label_studio)
    yield client
    client.close()


@pytest.fixture
def make_project(label_studio: LabelStudioClient, unique_name: str) -> Iterator[Callable[[int], tuple[int, list[int]]]]:
    """A text classification project with n tasks: (project id, task ids); deleted afterwards."""
    made: list[int] = []

    def make(n: int) -> tuple[int, list[int]]:
        project_id = label_studio.create_project(f"queue {unique_name} {len(made)}", LABEL_CONFIG)
        made.append(project_id)
        return project_id, label_studio.import_tasks(project_id, [{"text": f"review {i}"} for i in range(n)])

    yield make
    for project_id in made:
        label_studio.delete_project(project_id)


def label_all_tasks(annotator: LabelStudioClient, project_id: int, count: int, raw_next: bool = False) -> list[int]:
    """Up to `count` tasks the annotator is served in turn, each annotated before asking for the next."""
    served: list[int] = []
    for _ in range(count):
        if raw_next:
            answer = annotator._http.get(f"/api/projects/{project_id}/next")
            task = None if answer.status_code == 404 else answer.raise_for_status().json()
        else:
            task = annotator.next_task(project_id)
        if task is None:
            break
        served.append(int(task["id"]))
        annotator.create_annotation(int(task["id"]), choice("pos"))
    return served


def most_uncertain_first(task_ids: list[int], probabilities: np.ndarray, order: str) -> list[int]:
    """The task ids by descending uncertainty (ties keep id order, as Label Studio's query does)."""
    scores = queue_scores(probabilities, order)  # type: ignore[arg-type]
    return [task_ids[i] for i in sorted(range(len(task_ids)), key=lambda i: (scores[i], task_ids[i]))]


@pytest.mark.parametrize("order", ["least-confident", "margin", "entropy"])
def test_label_all_tasks_serves_the_most_uncertain_first(
    label_studio: LabelStudioClient, annotator: LabelStudioClient, make_project: Any, order: str
) -> None:
    project_id, task_ids = make_project(8)
    rng = np.random.default_rng(7)
    probabilities = rng.dirichlet([0.6, 0.6, 0.6], size=len(task_ids))
    results = [choice(LABELS[int(np.argmax(row))]) for row in probabilities]

    done = order_queue(label_studio, project_id, order, task_ids, probabilities, "models:/reviews/1 v1", results)
    assert (done.scored, done.project_updated) == (8, True)
    project = label_studio.get_project(project_id) or {}
    assert (project["sampling"], project["model_version"]) == (UNCERTAINTY_SAMPLING, "models:/reviews/1 v1")

    expected = most_uncertain_first(task_ids, probabilities, order)
    served = label_all_tasks(annotator, project_id, 4) + label_all_tasks(annotator, project_id, 10, raw_next=True)
    assert served == expected
    # What the annotator saw with each task: the model's pre-label of the project's version.
    shown = label_studio.get_task(expected[0])["predictions"]
    assert [p["result"][0]["value"]["choices"] for p in shown] == [
        results[task_ids.index(expected[0])][0]["value"]["choices"]
    ]


def test_rerun_is_cheap_and_a_new_model_version_reorders_what_is_left(
    label_studio: LabelStudioClient, annotator: LabelStudioClient, make_project: Any
) -> None:
    project_id, task_ids = make_project(6)
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.6, 0.3, 0.1], [0.34, 0.33, 0.33], [0.8, 0.1, 0.1], [0.5, 0.45, 0.05]]
    )
    order_queue(label_studio, project_id, "least-confident", task_ids, probabilities, "m v1")
    again = order_queue(label_studio, project_id, "least-confident", task_ids, probabilities, "m v1")
    assert (again.scored, again.rescored, again.already_scored, again.project_updated) == (0, 0, 6, False)
    assert label_studio.model_versions(project_id) == {"m v1": 6}  # no duplicate predictions

    first = label_all_tasks(annotator, project_id, 2)
    assert first == most_uncertain_first(task_ids, probabilities, "least-confident")[:2]

    left = [t for t in task_ids if t not in first]
    # The new model is unsure where v1 was sure: v1 served what is left as (5, 2, 4, 0), v2 must serve (0, 2, 4, 5).
    assert most_uncertain_first(left, probabilities[[0, 2, 4, 5]], "least-confident") == [left[i] for i in (3, 1, 2, 0)]
    reversed_view = np.array([[0.35, 0.35, 0.3], [0.5, 0.3, 0.2], [0.6, 0.2, 0.2], [0.95, 0.03, 0.02]])
    new = order_queue(label_studio, project_id, "least-confident", left, reversed_view, "m v2")
    assert (new.scored, new.already_scored, new.project_updated) == (4, 0, True)
    assert label_all_tasks(annotator, project_id, 10) == left


def test_held_tasks_are_never_served_and_released_ones_are(
    label_studio: LabelStudioClient, annotator: LabelStudioClient, make_project: Any
) -> None:
    project_id, task_ids = make_project(5)
    held = [task_ids[0], task_ids[2]]
    assert label_studio.hold_tasks(project_id, held) == 2
    assert label_studio.hold_tasks(project_id, held) == 2  # idempotent
    # An audit annotation on a held task makes Label Studio recompute `is_labeled`: it stays finished.
    audit = label_studio.create_annotation(held[0], choice("neg"))
    label_studio.delete_annotation(audit)
    assert label_studio.get_task(held[0])["is_labeled"] is True

    served = label_all_tasks(annotator, project_id, 10)
    assert sorted(served) == sorted(set(task_ids) - set(held))

    assert label_studio.release_tasks(project_id, [held[1]], overlap=1) == 1
    assert label_studio.get_task(held[1])["is_labeled"] is False
    assert label_all_tasks(annotator, project_id, 10) == [held[1]]
    assert label_studio.get_task(held[0])["is_labeled"] is True  # still held


def test_releasing_a_task_that_already_has_its_annotations_keeps_it_finished(
    label_studio: LabelStudioClient, annotator: LabelStudioClient, make_project: Any
) -> None:
    project_id, task_ids = make_project(2)
    label_studio.hold_tasks(project_id, task_ids)
    label_studio.create_annotation(task_ids[0], choice("neg"))  # e.g. an audit answer while it was held
    assert label_studio.release_tasks(project_id, [*task_ids, 10**9], overlap=1) == 2  # a gone task is skipped
    assert [label_studio.get_task(t)["is_labeled"] for t in task_ids] == [True, False]
    assert label_all_tasks(annotator, project_id, 10) == [task_ids[1]]


def test_pre_labels_made_at_ingest_keep_their_result_and_get_the_queue_score(
    label_studio: LabelStudioClient, annotator: LabelStudioClient, make_project: Any
) -> None:
    project_id, task_ids = make_project(4)
    probabilities = np.array([[0.5, 0.49, 0.01], [0.6, 0.2, 0.2], [0.7, 0.25, 0.05], [0.4, 0.3, 0.3]])
    # The mlflow predictor's pre-labels for two tasks: the top probability as score, the predicted class as result.
    label_studio.import_predictions(
        project_id,
        [
            {"task": task_ids[i], "model_version": "m v1", "score": 0.5 + i / 10, "result": choice("neg")}
            for i in (0, 1)
        ],
    )
    done = order_queue(label_studio, project_id, "margin", task_ids, probabilities, "m v1")
    assert (done.scored, done.rescored, done.already_scored) == (2, 2, 0)
    assert label_studio.model_versions(project_id) == {"m v1": 4}
    assert label_studio.get_task(task_ids[0])["predictions"][0]["result"] == choice("neg")
    assert label_all_tasks(annotator, project_id, 10) == most_uncertain_first(task_ids, probabilities, "margin")


def test_with_overlap_two_a_second_annotator_first_finishes_what_the_first_started(
    label_studio: LabelStudioClient, annotator: LabelStudioClient, make_project: Any
) -> None:
    """Label Studio's breadth-first step comes before the sampling: the closest the queue gets to the order."""
    project_id, task_ids = make_project(5)
    label_studio.update_project(project_id, maximum_annotations=2)
    probabilities = np.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.34, 0.33, 0.33]])
    order_queue(label_studio, project_id, "least-confident", task_ids, probabilities, "m v1")
    expected = most_uncertain_first(task_ids, probabilities, "least-confident")

    assert label_all_tasks(annotator, project_id, 2) == expected[:2]
    second, _ = sign_up_annotator(label_studio)
    try:
        started_first = label_all_tasks(second, project_id, 2)
        assert sorted(started_first) == sorted(expected[:2])  # at random among the started ones
        assert label_all_tasks(second, project_id, 1) == expected[2:3]  # then the uncertainty order again
    finally:
        second.close()


def test_changing_the_project_overlap_puts_held_tasks_back(label_studio: LabelStudioClient, make_project: Any) -> None:
    """Label Studio resets every task's overlap when `maximum_annotations` changes: hold them again after it."""
    project_id, task_ids = make_project(2)
    label_studio.hold_tasks(project_id, task_ids[:1])
    label_studio.import_tasks(project_id, [{"text": "a later batch"}])  # an import leaves held tasks alone
    assert label_studio.get_task(task_ids[0])["overlap"] == 0
    label_studio.update_project(project_id, maximum_annotations=2)
    assert (label_studio.get_task(task_ids[0])["overlap"], label_studio.get_task(task_ids[0])["is_labeled"]) == (
        2,
        False,
    )


def test_label_tasks_as_displayed_follows_a_tab_sorted_by_prediction_score(
    label_studio: LabelStudioClient, annotator: LabelStudioClient, make_project: Any
) -> None:
    """The other way into the stream: the Data Manager's own ordering, here the tab sorted by "Prediction score"."""
    project_id, task_ids = make_project(4)
    probabilities = np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.34, 0.33, 0.33], [0.7, 0.2, 0.1]])
    order_queue(label_studio, project_id, "least-confident", task_ids, probabilities, "m v1")
    label_studio.update_project(project_id, sampling="Sequential sampling")  # the tab's order alone decides
    as_displayed = {"ordering": ["tasks:predictions_score"], "filters": {"conjunction": "and", "items": []}}
    served = []
    for _ in range(4):
        task = annotator._request(
            "POST", "/api/dm/actions", "next", params={"id": "next_task", "project": project_id}, json=as_displayed
        ).json()
        assert task["queue"] == "Data manager queue"
        served.append(int(task["id"]))
        annotator.create_annotation(int(task["id"]), choice("pos"))
    assert served == most_uncertain_first(task_ids, probabilities, "least-confident")
