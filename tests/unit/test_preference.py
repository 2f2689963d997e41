"""The preference task type: interface, result parsing, judging with a model leaderboard, DPO export, simulation,
and its validation suites run by the real Great Expectations (no servers)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest

from labelflow.integrations.great_expectations import GreatExpectations
from labelflow.tasks.agreement import category_counts, krippendorff_alpha_nominal
from labelflow.tasks.annotations import AnnotationNormalizer, annotations_table, tasks_table
from labelflow.tasks.comparisons import bradley_terry
from labelflow.tasks.label_config import CONTROL_TYPES, label_interface
from labelflow.tasks.quality import judge
from labelflow.tasks.simulate import build_annotators, plan_records
from labelflow.tasks.spec import ProjectSpec, SpecError, parse_spec
from labelflow.tasks.task_types import TASK_TYPES
from labelflow.tasks.task_types.preference import PREFERENCE_LABELS, preference_result
from labelflow.tasks.validate import DEFAULT_EXPECTATIONS_DIR, batches_to_validate, spec_expectations, summarize

FIELDS = {"prompt": "q", "response_a": "a", "response_b": "b", "model_a": "ma", "model_b": "mb", "gold": "g"}
KIND = TASK_TYPES["preference"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "天空是什么颜色？"}]


def spec_for(**extra: Any) -> ProjectSpec:
    body = {"name": "prefs", "source": "s3://raw/prefs/", "task": "preference", "overlap": 3,
            "records": {"format": "jsonl", "fields": FIELDS}, **extra}  # fmt: skip
    return parse_spec(body)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def task_data(task_id: int, model_a: str = "m1", model_b: str = "m2", gold: str | None = None, prompt: Any = None):
    data = {
        "prompt": prompt if prompt is not None else f"question {task_id}",
        "response_a": f"answer a{task_id}",
        "response_b": f"answer b{task_id}",
        "model_a": model_a,
        "model_b": model_b,
        "source_uri": "s3://raw/prefs/pairs.jsonl",
        "record_index": task_id,
        "content_sha256": sha(f"record {task_id}"),
    }
    return data | ({"gold": gold} if gold is not None else {})


def annotation(annotation_id: int, user: int, result: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": annotation_id, "completed_by": user, "lead_time": 4.0, "created_at": "2026-11-23T10:00:00Z",
            "updated_at": f"2026-11-23T10:00:{annotation_id % 60:02d}Z", "result": result}  # fmt: skip


def ls_task(task_id: int, labels: list[str | list[dict[str, Any]]], data: dict[str, Any]) -> dict[str, Any]:
    """A Label Studio export of one task; each entry is a label (answered by preference_result) or a raw result."""
    annotations = [
        annotation(10 * task_id + user, user, preference_result(entry) if isinstance(entry, str) else entry)
        for user, entry in enumerate(labels, start=1)
    ]
    return {"id": task_id, "data": data, "annotations": annotations, "updated_at": "2026-11-23T10:00:00.000001Z"}


def tables(spec: ProjectSpec, tasks: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    normalizer = AnnotationNormalizer(spec, 1, {1: "a@x", 2: "b@x", 3: "c@x", 4: "lead@x"}, "label")
    outs = [normalizer.task(t, 1) for t in tasks]
    task_rows = tasks_table([o.task for o in outs]).to_pandas()
    annotation_rows = annotations_table([r for o in outs for r in o.annotations]).to_pandas()
    return task_rows, annotation_rows


def pairwise(selected: str) -> dict[str, Any]:
    return {
        "from_name": "label",
        "to_name": "response_a,response_b",
        "type": "pairwise",
        "value": {"selected": selected},
    }


def verdict(*choices: str) -> dict[str, Any]:
    return {"from_name": "verdict", "to_name": "prompt", "type": "choices", "value": {"choices": list(choices)}}


def reason(*texts: str) -> dict[str, Any]:
    return {"from_name": "reason", "to_name": "prompt", "type": "textarea", "value": {"text": list(texts)}}


# --- spec and interface -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "prompt_tag", "controls"),
    [
        ({}, "Text", {"label", "verdict", "reason"}),
        ({"chat": True}, "Paragraphs", {"label", "verdict", "reason"}),
        ({"allow_tie": False, "ask_reason": False}, "Text", {"label"}),
    ],
)
def test_interface_shows_prompt_and_both_responses_and_names_its_controls(
    options: dict[str, Any], prompt_tag: str, controls: set[str]
) -> None:
    spec = spec_for(options=options)
    interface = label_interface(spec)
    root = ElementTree.fromstring(interface.xml)
    assert (interface.from_name, interface.to_name, interface.result_type) == (
        "label", "response_a,response_b", "pairwise"
    )  # fmt: skip
    objects = {e.get("name"): e for e in root.iter() if e.get("value", "").startswith("$")}
    assert {name: e.tag for name, e in objects.items()} == {
        "prompt": prompt_tag, "response_a": "Text", "response_b": "Text"
    }  # fmt: skip
    assert {name: e.get("value") for name, e in objects.items()} == {n: f"${n}" for n in objects}
    if prompt_tag == "Paragraphs":
        prompt = objects["prompt"]
        assert (prompt.get("layout"), prompt.get("nameKey"), prompt.get("textKey")) == ("dialogue", "role", "content")
    found = {e.get("name") for e in root.iter() if e.tag in CONTROL_TYPES}
    assert found == controls and found <= KIND.control_names
    # Response A is the left of the Pairwise pair, and the two responses sit side by side in one flex row.
    (pair,) = root.iter("Pairwise")
    assert pair.get("toName") == "response_a,response_b"
    row = next(v for v in root.iter("View") if "flex" in (v.get("style") or "") and len(v) == 2)
    assert [next(column.iter("Text")).get("name") for column in row] == ["response_a", "response_b"]
    assert [c.get("value") for c in root.iter("Choice")] == (["tie", "both-bad"] if "verdict" in controls else [])


def test_spec_checks_fields_labels_and_options_with_one_line_errors() -> None:
    spec = spec_for()
    assert (spec.task_options.chat, spec.task_options.allow_tie, spec.task_options.ask_reason) == (False, True, True)
    assert spec.task_type.predictors == frozenset({"openai"}) and spec.task_type.export_file == "preference.jsonl"
    cases = [
        ({"records": {"fields": {"prompt": "q", "response_a": "a"}}}, "records.fields: task preference needs prompt, "
         "response_a, response_b; missing response_b"),
        ({"records": {"fields": {**FIELDS, "responses": ["x", "y"]}}}, "records.fields: task preference has no field"),
        ({"labels": ["A", "B"]}, "labels: task preference answers with A, B, tie, both-bad; remove `labels`"),
        ({"options": {"chat": True, "ties": False}}, "options.ties: unknown field (check the spelling)"),
        ({"options": {"allow_tie": "maybe"}}, "options.allow_tie: Input should be a valid boolean"),
        ({"label_config": '<View><Text name="p" value="$prompt"/></View>'}, "label_config: task preference uses its built-in"),
    ]  # fmt: skip
    for extra, message in cases:
        with pytest.raises(SpecError) as caught:
            spec_for(**extra)
        assert message in str(caught.value), str(caught.value)
    with pytest.raises(SpecError, match="records: task preference reads files of records"):
        parse_spec({"name": "p", "source": "s3://raw/p/", "task": "preference"})


def test_chat_prompts_become_messages_and_bad_chats_are_one_line_errors() -> None:
    chat_spec = spec_for(options={"chat": True})
    fields = {"prompt": json.dumps(CHAT, ensure_ascii=False), "response_a": "Blue.", "response_b": "Green."}
    assert KIND.record_task_data(fields, chat_spec) == {**fields, "prompt": CHAT}
    assert KIND.record_task_data(fields, spec_for()) == fields  # without options.chat the prompt stays text
    for bad, message in [
        ("hello", "prompt: options.chat expects a JSON list of {role, content} messages, not text"),
        ("[]", "prompt: options.chat expects a non-empty list"),
        ('[{"role": "user"}]', "prompt: message 1 has no text `content`"),
        ('[{"role": "user", "content": "x"}, "y"]', "prompt: message 2 is not a {role, content} object"),
    ]:
        with pytest.raises(ValueError) as caught:
            KIND.record_task_data({**fields, "prompt": bad}, chat_spec)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_gold_answers_are_read_as_labels() -> None:
    golds = ["A", "b", " Tie ", "both_bad", "BOTH-BAD", "", None, "C"]
    assert [KIND.gold_of({"gold": g}) for g in golds] == ["A", "B", "tie", "both-bad", "both-bad", None, None, None]


# --- result parsing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "label", "problems"),
    [
        ([pairwise("left")], "A", []),
        ([pairwise("right"), reason("  clearer  ")], "B", []),
        ([verdict("tie")], "tie", []),
        ([verdict("both-bad"), reason("wrong", "and rude")], "both-bad", []),
        ([], None, ["picks neither response"]),
        ([reason("no idea")], None, ["picks neither response"]),
        ([pairwise("none")], None, ["picks neither response"]),
        ([pairwise("left"), verdict("tie")], None, ["contradictory answer: A and tie"]),
        ([pairwise("left"), pairwise("right")], None, ["contradictory answer: A and B"]),
        ([pairwise("middle")], None, ["unknown pairwise selection 'middle'", "picks neither response"]),
        ([verdict("maybe")], None, ["unknown choice 'maybe' (expected tie or both-bad)", "picks neither response"]),
    ],
)
def test_parse_answer(items: list[dict[str, Any]], label: str | None, problems: list[str]) -> None:
    got_label, answer, got_problems = KIND.parse_answer(items, task_data(1), spec_for())
    assert (got_label, got_problems) == (label, problems)
    reasons = [t.strip() for i in items if i["from_name"] == "reason" for t in i["value"]["text"]]
    assert answer == {"preferred": label, "reason": "\n".join(reasons) or None}


def test_a_tie_is_a_problem_when_the_spec_offers_none() -> None:
    label, _, problems = KIND.parse_answer([verdict("tie")], task_data(1), spec_for(options={"allow_tie": False}))
    assert label == "tie" and problems == ["tie / both-bad chosen, but options.allow_tie is false"]


# --- judging --------------------------------------------------------------------------------------------------------


def judged_project(spec: ProjectSpec | None = None):
    spec = spec or spec_for(quality={"reviewers": ["lead@x"], "route_low_agreement": False})
    tasks = [
        ls_task(
            1,
            [preference_result("A", "clearer"), "A", preference_result("B", "shorter")],
            task_data(1, "alpha", "beta", gold="A"),
        ),
        ls_task(2, ["B", "B", "B"], task_data(2, "gamma", "alpha", gold="B")),
        ls_task(3, ["A", "B", "tie"], task_data(3, "alpha", "beta")),  # a tied vote
        ls_task(4, ["tie", "tie", "A"], task_data(4, "beta", "gamma", gold="B")),
        ls_task(5, ["both-bad", "both-bad", "both-bad"], task_data(5, "beta", "gamma")),
        ls_task(6, ["B", "B", "A"], task_data(6, "beta", "gamma")),
        ls_task(7, ["A", "B", "B", "A"], task_data(7, "gamma", "beta")),  # the reviewer (user 4) says A
        ls_task(8, ["A"], task_data(8, "alpha", "gamma")),  # unfinished: one vote of three
        ls_task(9, ["B", "B", []], task_data(9, "alpha", "gamma")),  # the third picks neither response
    ]
    task_rows, annotation_rows = tables(spec, tasks)
    return spec, task_rows, annotation_rows, judge(task_rows, annotation_rows, spec)


def test_judge_takes_the_majority_flags_tied_votes_and_lets_reviewers_decide() -> None:
    _, _, annotation_rows, report = judged_project()
    consensus = report.consensus.set_index("task_id")
    assert consensus["label"].to_dict() == {
        1: "A", 2: "B", 3: None, 4: "tie", 5: "both-bad", 6: "B", 7: "A", 8: "A", 9: "B"
    }  # fmt: skip
    assert consensus["method"].to_dict()[7] == "review" and consensus["method"].to_dict()[1] == "majority"
    # Agreement is the voters' share for the consensus label (task 7: the majority B, before the review).
    agreement = consensus.loc[[1, 2, 3, 4, 5, 7], "agreement"].round(4).tolist()
    assert agreement == [0.6667, 1.0, 0.3333, 0.6667, 1.0, 0.6667]
    assert consensus.loc[3, "flag_reason"] == "agreement 0.33 < 0.60; tied vote"
    assert consensus.loc[9, "flag_reason"] == "invalid annotation(s)" and not consensus.loc[9, "finished"]
    assert consensus.loc[[3, 9], "flagged"].all() and not consensus.loc[[1, 2, 4, 5, 6, 7, 8], "flagged"].any()
    assert not consensus.loc[8, "finished"] and consensus.loc[7, "reviewed"]
    answer = json.loads(consensus.loc[1, "answer"])
    assert answer == {"preferred": "A", "votes": {"A": 2, "B": 1}, "reasons": ["clearer"]}  # the majority's reasons
    assert json.loads(consensus.loc[7, "answer"])["votes"] == {"A": 1, "B": 2}
    assert json.loads(consensus.loc[3, "answer"]) == {
        "preferred": None,
        "votes": {"A": 1, "B": 1, "tie": 1},
        "reasons": [],
    }
    problem = annotation_rows[annotation_rows["task_id"] == 9].set_index("annotator_id").loc[3]
    assert pd.isna(problem["label"]) and problem["problem"] == "picks neither response"

    # Agreement metrics over the annotators' (not the reviewer's) usable votes.
    votes = annotation_rows[annotation_rows["problem"].isna() & (annotation_rows["annotator_email"] != "lead@x")]
    counts, _, _ = category_counts(votes)
    assert report.metrics["krippendorff_alpha"] == pytest.approx(krippendorff_alpha_nominal(counts))
    per_task = []
    for _, labels in votes.groupby("task_id")["label"]:
        pairs = [a == b for i, a in enumerate(labels) for b in list(labels)[i + 1 :]]
        if pairs:
            per_task.append(np.mean(pairs))
    assert len(per_task) == 8 and report.metrics["percent_agreement"] == pytest.approx(np.mean(per_task))

    # Gold: tasks 1, 2 and 4 (consensus tie, gold B); annotator 1 chose A, B, tie on them.
    assert report.metrics["gold_tasks"] == 3 and report.metrics["consensus_accuracy_on_gold"] == pytest.approx(2 / 3)
    first = report.annotators.set_index("annotator_email").loc["a@x"]
    assert first["gold_accuracy"] == pytest.approx(2 / 3) and first["gold_tasks"] == 3
    # a@x agrees with consensus on finished tasks 1, 2, 4, 5, 6 and 7 (the reviewer's A), not on 3 (no label).
    assert first["agreement_with_consensus"] == pytest.approx(6 / 7)


def test_model_leaderboard_is_bradley_terry_over_finished_tasks() -> None:
    _, _, _, report = judged_project()
    board = report.metrics["model_leaderboard"]
    # Finished, decided comparisons: 1 alpha>beta, 2 alpha>gamma (B), 4 beta=gamma, 6 gamma>beta, 7 gamma>beta.
    # Task 3 (tied vote), 5 (both-bad), 8 and 9 (unfinished) are not comparisons.
    rows = {row["model"]: row for row in board}
    assert {m: (r["wins"], r["losses"], r["ties"], r["comparisons"]) for m, r in rows.items()} == {
        "alpha": (2, 0, 0, 2), "gamma": (2, 1, 1, 4), "beta": (0, 3, 1, 4)
    }  # fmt: skip
    assert [row["model"] for row in board] == ["alpha", "gamma", "beta"]
    names = ["alpha", "beta", "gamma"]
    first = np.array([0, 2, 1, 2, 2])
    second = np.array([1, 0, 2, 1, 1])
    expected, _ = bradley_terry(first, second, np.array([1.0, 0.0, 0.5, 1.0, 1.0]), 3)
    assert {n: rows[n]["strength"] for n in names} == pytest.approx(dict(zip(names, expected, strict=True)))
    assert sum(row["strength"] for row in board) == pytest.approx(1.0)


def test_no_leaderboard_without_model_names() -> None:
    spec = spec_for(records={"fields": {"prompt": "q", "response_a": "a", "response_b": "b"}})
    data = {k: v for k, v in task_data(1).items() if k not in ("model_a", "model_b")}
    task_rows, annotation_rows = tables(spec, [ls_task(1, ["A", "A", "A"], data)])
    metrics = judge(task_rows, annotation_rows, spec).metrics
    assert "model_leaderboard" not in metrics and metrics["krippendorff_alpha"] == 1.0


def test_dawid_skene_is_honoured_like_for_classification() -> None:
    spec = spec_for(quality={"aggregation": "dawid-skene", "route_low_agreement": False})
    tasks = [ls_task(i, ["A", "A", "B"] if i % 2 else ["B", "B", "tie"], task_data(i)) for i in range(1, 9)]
    report = judge(*tables(spec, tasks), spec)
    assert set(report.consensus["method"]) == {"dawid-skene"}
    assert report.consensus["label"].tolist() == ["A", "B"] * 4
    assert report.annotators["estimated_accuracy"].notna().all()


# --- export ---------------------------------------------------------------------------------------------------------


def trl_preference_format(example: dict[str, Any]) -> str:
    """What TRL's data utilities conclude of an example: keys of an explicit-prompt preference row, and its format."""
    assert set(example) == {"prompt", "chosen", "rejected"}
    if all(isinstance(example[key], str) for key in example):
        return "standard"
    for key in example:  # conversational: every column a list of {role, content} messages with text content
        assert isinstance(example[key], list) and example[key]
        assert all(isinstance(m, dict) and set(m) == {"role", "content"} for m in example[key])
        assert all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in example[key])
    assert [m["role"] for m in example["chosen"]] == [m["role"] for m in example["rejected"]] == ["assistant"]
    return "conversational"


def export(spec: ProjectSpec, tmp_path: Path, prompts: dict[int, Any] | None = None) -> list[dict[str, Any]]:
    from labelflow.tasks.dataset import dataset_rows
    from labelflow.tasks.validate import publishable

    labels = {1: ["A"] * 3, 2: ["B"] * 3, 3: ["tie"] * 3, 4: ["both-bad"] * 3, 5: ["A", "A", "B"]}
    tasks = [ls_task(i, votes, task_data(i, prompt=(prompts or {}).get(i))) for i, votes in labels.items()]
    task_rows, annotation_rows = tables(spec, tasks)
    rows = dataset_rows(publishable(judge(task_rows, annotation_rows, spec).consensus), task_rows, spec)
    assert rows["label"].tolist() == ["A", "B", "tie", "both-bad", "A"]
    path = KIND.write_training_export(rows, spec, tmp_path)
    assert path == tmp_path / "preference.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_is_trl_standard_preference_rows_for_decided_tasks(tmp_path: Path) -> None:
    pairs = export(spec_for(), tmp_path)
    assert [trl_preference_format(p) for p in pairs] == ["standard"] * 3  # ties and both-bad skipped
    assert pairs == [
        {"prompt": "question 1", "chosen": "answer a1", "rejected": "answer b1"},
        {"prompt": "question 2", "chosen": "answer b2", "rejected": "answer a2"},
        {"prompt": "question 5", "chosen": "answer a5", "rejected": "answer b5"},
    ]


def test_export_of_a_chat_is_trl_conversational(tmp_path: Path) -> None:
    spec = spec_for(options={"chat": True})
    chat = {i: [*CHAT[:1], {"role": "user", "content": f"问题 {i}"}] for i in range(1, 6)}
    # Task data holds the parsed chat; a record kept as JSON text (an older table) is read the same way.
    chat[5] = json.dumps(chat[5], ensure_ascii=False)
    pairs = export(spec, tmp_path, prompts=chat)
    assert [trl_preference_format(p) for p in pairs] == ["conversational"] * 3
    assert pairs[1] == {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "问题 2"}],
        "chosen": [{"role": "assistant", "content": "answer b2"}],
        "rejected": [{"role": "assistant", "content": "answer a2"}],
    }
    assert pairs[2]["prompt"][1]["content"] == "问题 5"
    assert "问题" in (tmp_path / "preference.jsonl").read_text(encoding="utf-8")  # not \\u-escaped


# --- simulation ----------------------------------------------------------------------------------------------------


def test_simulated_answers_round_trip_through_parse_answer() -> None:
    spec = spec_for()
    rng = random.Random(5)
    for gold in PREFERENCE_LABELS:
        data = task_data(1, gold=gold)
        perfect = {KIND.parse_answer(KIND.simulated_answer(data, spec, 1.0, False, rng), data, spec)[0]
                   for _ in range(20)}  # fmt: skip
        assert perfect == {gold}
        wrong = {KIND.parse_answer(KIND.simulated_answer(data, spec, 0.0, False, rng), data, spec)[0]
                 for _ in range(40)}  # fmt: skip
        assert wrong == ({"B"} if gold == "A" else {"A"} if gold == "B" else {"A", "B"})
    answers = [KIND.parse_answer(KIND.simulated_answer(task_data(1, gold="A"), spec, 0.9, True, rng), {}, spec)
               for _ in range(400)]  # fmt: skip
    labels = pd.Series([a[0] for a in answers]).value_counts()
    assert set(labels.index) == set(PREFERENCE_LABELS) and labels.min() > 60  # spammers: uniform
    assert all(problems == [] for _, _, problems in answers)
    with_reason = sum(answer["reason"] is not None for _, answer, _ in answers)
    assert 60 < with_reason < 200  # sometimes
    assert KIND.simulated_answer(task_data(1), spec, 1.0, False, rng) is None  # no gold: nothing to simulate
    no_ties = spec_for(options={"allow_tie": False, "ask_reason": False})
    plain = [KIND.simulated_answer(task_data(1, gold="tie"), no_ties, 1.0, False, rng) for _ in range(30)]
    assert {KIND.parse_answer(r, {}, no_ties)[0] for r in plain} == {"A", "B"}
    assert all(len(r) == 1 for r in plain)


def test_simulator_plans_preference_tasks_from_gold() -> None:
    spec = spec_for()
    annotators = build_annotators([1.0, 1.0, 0.0], spammers=0, prefix="p")
    user_ids = {a.email: i for i, a in enumerate(annotators, start=1)}
    tasks = [{"id": i, "data": task_data(i, gold=g), "annotations": []} for i, g in enumerate(["A", "B"], start=1)]
    tasks.append({"id": 3, "data": task_data(3), "annotations": []})
    items, skipped = plan_records(tasks, spec, annotators, user_ids, 3, seed=2)
    assert skipped == 1 and len(items) == 6
    for task_id, annotator, result, _, agrees in items:
        label = KIND.parse_answer(result, {}, spec)[0]
        assert agrees == (label == {1: "A", 2: "B"}[task_id]) == (annotator.accuracy == 1.0)


# --- validation --------------------------------------------------------------------------------------------------


def validate(spec: ProjectSpec, tasks: list[dict[str, Any]]):
    validator = GreatExpectations(DEFAULT_EXPECTATIONS_DIR)
    task_rows, annotation_rows = tables(spec, tasks)
    consensus = judge(task_rows, annotation_rows, spec).consensus
    batches = batches_to_validate(spec, validator, annotation_rows, consensus, task_rows)
    run = validator.validate(batches, docs_dir=None)
    return summarize(run.outcomes, {b.name: len(b.frame) for b in batches}, {}), run, batches


def test_validation_columns_and_suites_pass_a_clean_batch() -> None:
    spec = spec_for(quality={"route_low_agreement": False})
    tasks = [ls_task(i, [label] * 3, task_data(i)) for i, label in enumerate(PREFERENCE_LABELS, start=1)]
    summary, run, batches = validate(spec, tasks)
    assert summary.success, summary.text()
    assert summary.rows == {"annotations": 12, "consensus": 4}
    assert all(b.frame["picks_a_response"].all() for b in batches)
    origins = {o.origin for o in run.outcomes}
    assert {"annotations.json", "annotations.preference.json", "consensus.json", "consensus.preference.json"} <= origins
    checked = {(o.batch, o.column) for o in run.outcomes}
    assert {("annotations", "picks_a_response"), ("consensus", "picks_a_response"), ("consensus", "record")} <= checked


def test_validation_fails_an_annotation_that_picks_neither_or_both() -> None:
    spec = spec_for(quality={"route_low_agreement": False})
    neither = [reason("hmm")]
    both = [pairwise("right"), verdict("both-bad")]
    tasks = [
        ls_task(1, ["A", "A", "A"], task_data(1)),
        ls_task(2, ["B", "B", neither], task_data(2)),
        ls_task(3, ["B", both, "B"], task_data(3)),
    ]
    summary, _, _ = validate(spec, tasks)
    assert not summary.success
    failed = {(f["batch"], f["type"], f["column"]): f for f in summary.failed}
    picks = failed[("annotations", "expect_column_values_to_be_in_set", "picks_a_response")]
    assert picks["unexpected_count"] == 2
    assert {e["annotation_id"] for e in picks["examples"]} == {23, 32}
    assert ("annotations", "expect_column_values_to_be_null", "problem") in failed
    assert "annotations.picks_a_response" in summary.text() and "picks neither" in summary.text()


def test_without_ties_a_tie_label_fails_the_spec_expectation() -> None:
    spec = spec_for(options={"allow_tie": False}, quality={"route_low_agreement": False})
    tasks = [ls_task(1, ["A", "A", "A"], task_data(1)), ls_task(2, ["tie", "tie", "tie"], task_data(2))]
    summary, _, _ = validate(spec, tasks)
    failed = {(f["batch"], f["origin"], f["column"]) for f in summary.failed}
    assert ("annotations", "spec", "label") in failed and ("annotations", "annotations.json", "problem") in failed
    for table in ("annotations", "consensus"):
        checks = [(d.kwargs, d.origin) for d in spec_expectations(spec, table) if d.kwargs.get("column") == "label"]
        assert checks == [({"column": "label", "value_set": ["A", "B"]}, "spec")]
    assert [d for d in spec_expectations(spec_for(), "annotations") if d.kwargs.get("column") == "label"] == []
