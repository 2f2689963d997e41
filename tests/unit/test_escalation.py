"""Expert escalation and review on the in-memory fakes: flagged and sampled tasks go to `<title> · review` once, with
every annotator's answer as a prediction; a decider's answer there wins (`method: expert`) and unflags the task."""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import pytest

from labelflow.tasks.collect import read_batch
from labelflow.tasks.escalation import (
    MAIN_TASK_KEY,
    SAMPLE_REASON,
    EscalationState,
    ReviewerError,
    in_review_sample,
    review_changed,
    review_task,
    tasks_to_escalate,
)
from labelflow.tasks.spec import SpecError, parse_spec
from labelflow.tasks.timestamps import parse_time
from tests.unit.fakes import FakeClients, FakeLabelStudio
from tests.unit.stage_fixtures import LABELS, collect, ingest, text_spec, upload_reviews

EXPERT = "expert@labelflow.fake"


class ReviewLabelStudio(FakeLabelStudio):
    """The fake server with the task listings escalation reads."""

    def tasks_as_stored(self, project_id: int, task_ids: list[int], chunk: int = 200) -> list[dict[str, Any]]:
        return [copy.deepcopy(t) for t in self.project_tasks(project_id) if t["id"] in set(task_ids)]

    def tasks_updated_after(self, project_id: int, since: str, limit: int) -> list[dict[str, Any]]:
        after = parse_time(since)
        found = [t for t in self.project_tasks(project_id) if (parse_time(t["updated_at"]) or after) > after]
        return [{"id": t["id"], "updated_at": t["updated_at"]} for t in found[:limit]]


def project(quality: dict[str, Any], count: int = 6) -> tuple[FakeClients, Any, int, list[int]]:
    """An ingested text project on the fakes; (clients, spec, project id, the three annotators' ids)."""
    clients = FakeClients(label_studio_client=ReviewLabelStudio())
    spec = text_spec(quality=quality)
    upload_reviews(clients, 0, count)
    project_id = int(ingest(clients, spec)["project_id"])
    ls = clients.label_studio_client
    annotators = [ls.add_user(f"annotator{i}@labelflow.fake") for i in range(3)]
    ls.add_user(EXPERT)
    return clients, spec, project_id, annotators


def annotate(ls: ReviewLabelStudio, project_id: int, annotators: list[int], split: set[int]) -> list[dict[str, Any]]:
    """Each task gets its true label from all three; tasks at the positions in `split` get one dissenting answer."""
    tasks = ls.project_tasks(project_id)
    for position, task in enumerate(tasks):
        truth = task["data"]["source_key"].split("/")[1]
        other = next(label for label in LABELS if label != truth)
        for number, user in enumerate(annotators):
            ls.annotate(task["id"], other if position in split and number == 2 else truth, user)
    ls.clock.tick(5)
    return tasks


def review_tasks(ls: ReviewLabelStudio, spec: Any) -> list[dict[str, Any]]:
    review_id = ls.find_project(f"{spec.name} · review")
    return ls.project_tasks(review_id) if review_id is not None else []


def test_route_low_agreement_takes_modes_and_old_booleans() -> None:
    def routing(value: Any) -> str:
        return parse_spec(
            {"name": "n", "source": "s3://raw/x/", "task": "text-classification", "labels": LABELS,
             "quality": {"route_low_agreement": value}}
        ).quality.route_low_agreement  # fmt: skip

    assert [routing(v) for v in (True, False, "overlap", "expert", "both", "off")] == [
        "overlap", "off", "overlap", "expert", "both", "off"
    ]  # fmt: skip
    with pytest.raises(SpecError, match="route_low_agreement"):
        routing("escalate")
    with pytest.raises(SpecError, match="expert_level: 'guru' is not a level"):
        text_spec(quality={"expert_level": "guru"})
    assert text_spec(quality={"route_low_agreement": "both"}).quality.escalates
    assert not text_spec(quality={"route_low_agreement": "expert"}).quality.raises_overlap


def test_review_sample_is_seeded_stable_per_task_and_near_its_share() -> None:
    ids = pd.Series(range(1, 20_001))
    first = in_review_sample(ids, 0.05, seed=0)
    assert first.equals(in_review_sample(ids, 0.05, seed=0))
    assert 0.045 < first.mean() < 0.055
    assert not first.equals(in_review_sample(ids, 0.05, seed=1))
    # A larger share keeps every task the smaller one picked: raising it only adds tasks to review.
    assert (in_review_sample(ids, 0.10, seed=0) | ~first).all()


def test_tasks_to_escalate_picks_hard_flags_and_sampled_accepted_tasks_once() -> None:
    spec = text_spec(quality={"route_low_agreement": "expert", "review_sample": 1.0})
    consensus = pd.DataFrame(
        {
            "task_id": [1, 2, 3, 4, 5, 6, 7],
            "flagged": [True, True, True, True, False, False, True],
            "flag_reason": ["agreement 0.33 < 0.60", "tied vote", "invalid annotation(s)",
                            "labels under an older guideline", None, None, "tied vote"],
            "finished": [True, True, False, False, True, False, True],
            "reviewed": [False, False, False, False, False, False, True],
        }
    )  # fmt: skip
    state = EscalationState(escalated={"2": {"review_task_id": 99}})
    assert tasks_to_escalate(consensus, spec, state) == [
        (1, "agreement 0.33 < 0.60"), (3, "invalid annotation(s)"), (5, SAMPLE_REASON)
    ]  # fmt: skip
    overlap_only = text_spec(quality={"route_low_agreement": "overlap"})
    assert tasks_to_escalate(consensus, overlap_only, EscalationState()) == []


def test_review_task_shows_each_answer_as_a_prediction_named_by_its_author() -> None:
    main = {
        "id": 7,
        "data": {"text": "好评", "source_uri": "s3://raw/r/1.txt"},
        "annotations": [
            {"completed_by": 11, "result": [{"value": {"choices": ["positive"]}}]},
            {"completed_by": {"id": 12}, "result": [{"value": {"choices": ["negative"]}}]},
            {"completed_by": 13, "was_cancelled": True, "result": []},
        ],
    }
    task = review_task(main, "tied vote", {11: "a@x"})
    assert task["data"]["text"] == "好评" and task["data"][MAIN_TASK_KEY] == 7
    assert [p["model_version"] for p in task["predictions"]] == ["a@x", "annotator 2"]
    assert task["predictions"][1]["result"] == [{"value": {"choices": ["negative"]}}]


def test_a_flagged_task_is_escalated_once_and_the_experts_answer_wins() -> None:
    clients, spec, project_id, annotators = project(
        {"route_low_agreement": "expert", "reviewers": [EXPERT], "min_agreement": 0.7}
    )
    ls = clients.label_studio_client
    tasks = annotate(ls, project_id, annotators, split={0})
    flagged_id = tasks[0]["id"]

    first, _ = collect(clients, spec)
    review = first["quality"]["expert_review"]
    assert review["escalated_now"] == 1 and review["sampled_now"] == 0
    (escalated,) = review_tasks(ls, spec)
    assert escalated["data"][MAIN_TASK_KEY] == flagged_id and escalated["data"]["text"] == tasks[0]["data"]["text"]
    assert sorted(p["model_version"] for p in escalated["predictions"]) == [
        f"annotator{i}@labelflow.fake" for i in range(3)
    ]
    assert ls.projects[ls.find_project("reviews · review")]["label_config"] == ls.projects[project_id]["label_config"]
    assert all("overlap" not in t for t in ls.project_tasks(project_id))  # `expert` does not raise the overlap

    # Collected again: nothing new is imported.
    second, _ = collect(clients, spec)
    assert second["quality"]["expert_review"]["escalated_now"] == 0 and len(review_tasks(ls, spec)) == 1

    # Someone who may not decide answers first; then the expert. The expert's answer decides the task.
    outsider = ls.add_user("outsider@labelflow.fake")
    ls.annotate(escalated["id"], "neutral", outsider)
    truth = tasks[0]["data"]["source_key"].split("/")[1]
    chosen = next(label for label in LABELS if label not in (truth, "neutral"))
    ls.annotate(escalated["id"], chosen, next(i for i, e in ls.user_emails.items() if e == EXPERT))
    ls.clock.tick(5)
    third, _ = collect(clients, spec)
    assert third["quality"]["expert_review"]["ignored_answers"] == 1
    assert third["quality"]["flagged_tasks"] == 0
    _, batch = read_batch(clients.store, third["batch"])
    decided = batch["consensus"].set_index("task_id").loc[flagged_id]
    assert decided["method"] == "expert" and decided["label"] == chosen and decided["decided_by"] == EXPERT
    assert not decided["flagged"] and decided["reviewed"]
    others = batch["consensus"][batch["consensus"]["task_id"] != flagged_id]
    assert set(others["method"]) == {"majority"} and others["decided_by"].isna().all()
    # The expert's answer is kept with the annotations, under its author.
    expert_rows = batch["annotations"][batch["annotations"]["expert_decision"].fillna(False).astype(bool)]
    assert expert_rows[["task_id", "annotator_email", "label"]].values.tolist() == [[flagged_id, EXPERT, chosen]]


def test_sampled_accepted_tasks_get_verdicts_that_feed_the_annotators_scores() -> None:
    clients, spec, project_id, annotators = project(
        {"route_low_agreement": False, "reviewers": [EXPERT], "review_sample": 0.5}, count=12
    )
    ls = clients.label_studio_client
    annotate(ls, project_id, annotators, split=set())
    first, _ = collect(clients, spec)
    sampled = review_tasks(ls, spec)
    assert first["quality"]["expert_review"]["sampled_now"] == len(sampled) >= 2
    assert first["quality"]["expert_review"]["escalated_now"] == 0

    expert = next(i for i, e in ls.user_emails.items() if e == EXPERT)
    accept, correct = sampled[0], sampled[1]
    consensus_label = ls.tasks[accept["data"][MAIN_TASK_KEY]]["data"]["source_key"].split("/")[1]
    ls.annotate(accept["id"], consensus_label, expert)
    wrong = ls.tasks[correct["data"][MAIN_TASK_KEY]]["data"]["source_key"].split("/")[1]
    corrected_to = next(label for label in LABELS if label != wrong)
    ls.annotate(correct["id"], corrected_to, expert)
    ls.clock.tick(5)
    second, _ = collect(clients, spec)
    assert second["quality"]["expert_review"]["sample_verdicts"] == {"accept": 1, "correct": 1}
    people = {row["annotator_email"]: row for row in second["annotators"]}
    for i in range(3):  # every annotator gave the consensus answer on both audited tasks
        row = people[f"annotator{i}@labelflow.fake"]
        assert (row["reviewed_accepted"], row["reviewed_corrected"]) == (1, 1)
    _, batch = read_batch(clients.store, second["batch"])
    corrected = batch["consensus"].set_index("task_id").loc[correct["data"][MAIN_TASK_KEY]]
    assert corrected["method"] == "expert" and corrected["label"] == corrected_to


def test_the_collect_shortcut_sees_an_experts_new_answer() -> None:
    clients, spec, project_id, annotators = project(
        {"route_low_agreement": "expert", "reviewers": [EXPERT], "min_agreement": 0.7}
    )
    ls = clients.label_studio_client
    annotate(ls, project_id, annotators, split={0})
    collect(clients, spec)
    assert not review_changed(clients.store, ls, spec)  # the tasks it imported itself are not news
    (escalated,) = review_tasks(ls, spec)
    ls.annotate(escalated["id"], "neutral", next(i for i, e in ls.user_emails.items() if e == EXPERT))
    assert review_changed(clients.store, ls, spec)


def test_a_reviewer_label_studio_does_not_know_fails_in_one_line_before_anything_changes() -> None:
    clients, spec, project_id, annotators = project({"reviewers": ["nobody@labelflow.fake", EXPERT]})
    annotate(clients.label_studio_client, project_id, annotators, split=set())
    written = list(clients.store.writes)
    with pytest.raises(ReviewerError) as caught:
        collect(clients, spec)
    message = str(caught.value)
    assert "nobody@labelflow.fake is not a Label Studio user" in message and "\n" not in message
    assert EXPERT not in message and isinstance(caught.value, SpecError)  # the CLI's exit 2
    assert clients.store.writes == written


def test_people_at_or_above_expert_level_in_the_talent_pool_decide_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelflow.tasks import talent_pool
    from labelflow.tasks.escalation import deciders

    profiles = pd.DataFrame(
        {
            "annotator_email": ["Senior@x", "expert@x", "junior@x", "other-type@x", "other-domain@x"],
            "task_type": ["text-classification"] * 3 + ["ner", "text-classification"],
            "domain": ["zh-reviews"] * 4 + ["medical"],
            "level_rank": [3, 4, 1, 4, 4],
        }
    )
    asked: list[str | None] = []

    def load_profiles(store: Any, domain: str | None = None, ladder: Any = None) -> pd.DataFrame:
        asked.append(domain)
        return profiles[profiles["domain"] == domain]

    monkeypatch.setattr(talent_pool, "load_profiles", load_profiles)
    spec = text_spec(domain="zh-reviews", quality={"reviewers": ["Lead@x"], "expert_level": "senior"})
    assert deciders(None, spec) == {"lead@x", "senior@x", "expert@x"}  # type: ignore[arg-type]
    assert asked == ["zh-reviews"]
    assert deciders(None, text_spec(quality={"reviewers": ["lead@x"]})) == {"lead@x"}  # type: ignore[arg-type]
