"""response-grading: a Rating 1..K plus rubric checks; median consensus, ordinal alpha, gold, export and the gate."""

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
from labelflow.tasks.annotations import AnnotationNormalizer, annotations_table, tasks_table
from labelflow.tasks.comparisons import krippendorff_alpha_ordinal
from labelflow.tasks.dataset import dataset_rows
from labelflow.tasks.label_config import label_interface
from labelflow.tasks.quality import judge
from labelflow.tasks.spec import ProjectSpec, SpecError, parse_spec
from labelflow.tasks.task_types.response_grading import ResponseGrading
from labelflow.tasks.validate import DEFAULT_EXPECTATIONS_DIR, batches_to_validate, publishable, summarize

RUBRIC = ["factual", "follows instructions", "safe & polite"]
GRADING = ResponseGrading()


def grading_spec(scale: int = 5, rubric: list[str] | None = None, **extra: Any) -> ProjectSpec:
    fields = {"prompt": "q", "response": "a", "model": "m", "gold": "g"}
    body = {
        "name": "grades",
        "source": "s3://raw/grades/",
        "task": "response-grading",
        "overlap": 3,
        "records": {"fields": fields},
        "options": {"scale": scale, "rubric": RUBRIC if rubric is None else rubric},
        "quality": {"route_low_agreement": False},
        **extra,
    }
    return parse_spec(body)


def rating(score: Any) -> dict[str, Any]:
    return {"from_name": "label", "to_name": "response", "type": "rating", "value": {"rating": score}}


def checks(*passed: str) -> dict[str, Any]:
    return {"from_name": "rubric", "to_name": "response", "type": "choices", "value": {"choices": list(passed)}}


def record_data(index: int, gold: int | None = None, model: str | None = "m-1") -> dict[str, Any]:
    prompt, response = f"question {index}", f"answer {index}"
    data: dict[str, Any] = {"prompt": prompt, "response": response, "source_uri": "s3://raw/grades/a.jsonl"}
    data |= {"record_index": index, "content_sha256": hashlib.sha256(f"{prompt}|{response}".encode()).hexdigest()}
    if model is not None:
        data["model"] = model
    if gold is not None:
        data["gold"] = str(gold)
    return data


def annotation(annotation_id: int, user: int, result: list[dict[str, Any]]) -> dict[str, Any]:
    stamp = "2026-11-23T10:00:00Z"
    return {"id": annotation_id, "completed_by": user, "lead_time": 4.0, "created_at": stamp, "updated_at": stamp,
            "result": result}  # fmt: skip


def ls_task(
    task_id: int, results: list[list[dict[str, Any]]], data: dict[str, Any], overlap: int | None = None
) -> dict[str, Any]:
    annotations = [annotation(task_id * 10 + user, user, result) for user, result in enumerate(results, start=1)]
    task = {"id": task_id, "data": data, "annotations": annotations, "updated_at": "2026-11-23T10:00:00.000001Z"}
    return task if overlap is None else {**task, "overlap": overlap}


def tables(spec: ProjectSpec, tasks: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    users = {1: "a@x", 2: "b@x", 3: "c@x", 4: "reviewer@x"}
    normalizer = AnnotationNormalizer(spec, 1, users, "label")
    outs = [normalizer.task(task, 1) for task in tasks]
    task_rows = tasks_table([o.task for o in outs]).to_pandas()
    annotation_rows = annotations_table([row for o in outs for row in o.annotations]).to_pandas()
    return task_rows, annotation_rows


# --- spec and interface -------------------------------------------------------------------------------------------


def test_interface_has_a_rating_up_to_k_and_one_rubric_choice_per_check() -> None:
    interface = label_interface(grading_spec(scale=7))
    root = ElementTree.fromstring(interface.xml)
    texts = {element.get("name"): element.get("value") for element in root.iter("Text")}
    assert texts == {"prompt": "$prompt", "response": "$response"}
    (rating_tag,) = root.iter("Rating")
    assert rating_tag.attrib == {"name": "label", "toName": "response", "maxRating": "7", "required": "true"}
    (choices,) = root.iter("Choices")
    assert (choices.get("name"), choices.get("toName"), choices.get("choice")) == ("rubric", "response", "multiple")
    assert [choice.get("value") for choice in choices.iter("Choice")] == RUBRIC  # "&" survives as XML
    assert (interface.from_name, interface.to_name, interface.result_type) == ("label", "response", "rating")
    assert "$model" not in interface.xml  # grading is blind to the model that answered
    plain = ElementTree.fromstring(label_interface(grading_spec(rubric=[])).xml)
    assert not list(plain.iter("Choices")) and next(plain.iter("Rating")).get("maxRating") == "5"
    assert GRADING.control_names == {"label", "rubric"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": 11}, "options.scale: Input should be less than or equal to 10"),
        ({"scale": 1}, "options.scale: Input should be greater than or equal to 2"),
        ({"rubric": ["a", " a "]}, "options.rubric: duplicate rubric checks: ['a']"),
        ({"rubric": ["a", "  "]}, "options.rubric: rubric check 2 is empty"),
        ({"rubric": ["x" * 81]}, "options.rubric: rubric check 1 is longer than 80 characters"),
        ({"colour": "red"}, "options.colour: unknown field (check the spelling)"),
    ],
)
def test_bad_options_are_one_line_naming_the_field(options: dict[str, Any], message: str) -> None:
    body = {"name": "g", "source": "s3://raw/g/", "task": "response-grading", "options": options}
    body["records"] = {"fields": {"prompt": "q", "response": "a"}}
    with pytest.raises(SpecError) as caught:
        parse_spec(body)
    problems = str(caught.value).splitlines()[1:]
    assert len(problems) == 1 and message in problems[0]


def test_records_must_map_prompt_and_response() -> None:
    body = {"name": "g", "source": "s3://raw/g/", "task": "response-grading", "records": {"fields": {"prompt": "q"}}}
    needs = r"records\.fields: task response-grading needs prompt, response; missing response"
    with pytest.raises(SpecError, match=needs):
        parse_spec(body)
    with pytest.raises(SpecError, match="add a `records:` section"):
        parse_spec({"name": "g", "source": "s3://raw/g/", "task": "response-grading"})


def test_rubric_is_stripped_and_the_example_spec_validates() -> None:
    from labelflow.tasks.spec import load_spec

    assert grading_spec(rubric=[" factual ", "safe"]).task_options.rubric == ["factual", "safe"]
    example = load_spec(Path(__file__).parents[2] / "examples" / "specs" / "response-grading.yaml")
    assert example.task == "response-grading" and example.task_options.scale >= 2
    assert "Rating" in label_interface(example).xml


# --- parsing ------------------------------------------------------------------------------------------------------


def test_parse_a_good_answer_gives_the_score_and_every_check() -> None:
    spec = grading_spec()
    label, answer, problems = GRADING.parse_answer([rating(4), checks("factual", "safe & polite")], {}, spec)
    assert (label, problems) == ("4", [])
    assert answer == {"score": 4, "rubric": {"factual": True, "follows instructions": False, "safe & polite": True}}
    label, answer, problems = GRADING.parse_answer([rating(1)], {}, spec)  # no check ticked: no choices item
    assert (label, answer["rubric"], problems) == ("1", dict.fromkeys(RUBRIC, False), [])


def test_parse_names_a_score_outside_the_scale_a_missing_score_and_unknown_checks() -> None:
    spec = grading_spec()
    label, answer, problems = GRADING.parse_answer([rating(7)], {}, spec)
    assert (label, answer["score"], problems) == ("7", 7, ["score 7 outside 1..5"])
    assert GRADING.parse_answer([rating(0)], {}, spec)[2] == ["score 0 outside 1..5"]
    label, answer, problems = GRADING.parse_answer([checks("factual")], {}, spec)
    assert (label, answer, problems) == (None, None, ["score missing: no rating given"])
    assert GRADING.parse_answer([rating(2.5)], {}, spec)[2] == ["score 2.5 is not a whole number"]
    assert GRADING.parse_answer([rating(2), rating(3)], {}, spec)[2] == ["2 scores given: [2, 3]"]
    label, answer, problems = GRADING.parse_answer([rating(3), checks("factual", "concise")], {}, spec)
    assert label == "3" and problems == ["rubric check 'concise' is not in the spec's rubric"]


def test_gold_scores_are_normalised_to_whole_numbers() -> None:
    assert GRADING.gold_of({"gold": "4"}) == "4" and GRADING.gold_of({"gold": "4.0"}) == "4"
    assert GRADING.gold_of({"gold": " "}) is None and GRADING.gold_of({}) is None
    assert GRADING.gold_of({"gold": "good"}) == "good"  # kept, so it never matches and shows as wrong


# --- judging ------------------------------------------------------------------------------------------------------


def lower_median(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def test_judge_matches_a_hand_computation() -> None:
    spec = grading_spec()
    scores = {1: [4, 4, 5], 2: [1, 3, 2], 3: [2, 5], 4: [5, 5, 4], 5: [3]}  # task 3 needs 2, task 5 is unfinished
    rubric_votes = {
        1: [("factual",), ("factual",), ()],
        2: [(), ("safe & polite",), ("safe & polite",)],
        3: [("factual",), ()],  # a tie on `factual`
        4: [(), (), ()],
        5: [("factual",)],
    }
    tasks = [
        ls_task(task_id, [[rating(s), checks(*c)] for s, c in zip(values, rubric_votes[task_id], strict=True)],
                record_data(task_id, gold={1: 4, 2: 3, 4: 4}.get(task_id)), overlap=2 if task_id == 3 else None)
        for task_id, values in scores.items()
    ]  # fmt: skip
    task_rows, annotation_rows = tables(spec, tasks)
    report = judge(task_rows, annotation_rows, spec)
    consensus = report.consensus.set_index("task_id")

    for task_id, values in scores.items():
        median = lower_median(values)
        row = consensus.loc[task_id]
        assert row["label"] == str(median)
        expected_agreement = 1 - np.mean([abs(v - median) for v in values]) / (5 - 1)
        assert row["agreement"] == pytest.approx(expected_agreement)
        assert row["confidence"] == pytest.approx(np.mean([v == median for v in values]))
        assert row["method"] == "median"
        assert json.loads(row["answer"])["score"] == median
    assert consensus.loc[3, "label"] == "2"  # the lower median of (2, 5): always a score someone gave
    assert json.loads(consensus.loc[1, "answer"])["rubric"] == {
        "factual": True, "follows instructions": False, "safe & polite": False
    }  # fmt: skip
    assert json.loads(consensus.loc[2, "answer"])["rubric"]["safe & polite"] is True
    assert json.loads(consensus.loc[3, "answer"])["rubric"]["factual"] is False  # a tie does not pass
    assert report.metrics["rubric_ties"] == 1

    counts = np.zeros((len(scores), 5))
    for row, values in enumerate(scores.values()):
        for value in values:
            counts[row, value - 1] += 1
    assert report.metrics["krippendorff_alpha_ordinal"] == pytest.approx(krippendorff_alpha_ordinal(counts))
    finished = [lower_median(scores[task_id]) for task_id in (1, 2, 3, 4)]
    assert report.metrics["mean_score"] == pytest.approx(np.mean(finished))
    assert report.metrics["rubric_pass_rate"]["factual"] == pytest.approx(1 / 4)  # passed on task 1 only

    # Gold: task 1 (median 4 = gold 4), task 2 (median 2, gold 3), task 4 (median 5, gold 4).
    assert report.metrics["gold_tasks"] == 3
    assert report.metrics["consensus_accuracy_on_gold"] == pytest.approx(1 / 3)
    assert report.metrics["consensus_mean_absolute_error_on_gold"] == pytest.approx(2 / 3)
    annotators = report.annotators.set_index("annotator_email")
    # a@x scored 4, 1, 5 on gold 4, 3, 4: one exact; of the finished tasks 1..4 it hit the median on 1, 3 and 4.
    assert annotators.loc["a@x", "gold_accuracy"] == pytest.approx(1 / 3)
    assert annotators.loc["a@x", "gold_mean_absolute_error"] == pytest.approx((0 + 2 + 1) / 3)
    assert annotators.loc["a@x", "agreement_with_consensus"] == pytest.approx(3 / 4)
    assert annotators.loc["b@x", "agreement_with_consensus"] == pytest.approx(2 / 4)
    assert annotators.loc["c@x", "agreement_with_consensus"] == pytest.approx(1 / 3)  # 5 vs 4, 2 = 2, 4 vs 5
    pairs = report.pairwise.set_index(["annotator_a", "annotator_b"])
    assert pairs.loc[(1, 2), "shared_tasks"] == 4
    assert pairs.loc[(1, 2), "exact_agreement"] == pytest.approx(2 / 4)  # tasks 1 and 4
    assert pairs.loc[(1, 2), "mean_absolute_difference"] == pytest.approx((0 + 2 + 3 + 0) / 4)


def test_low_agreement_is_flagged_and_a_reviewer_overrides_the_median() -> None:
    spec = grading_spec(quality={"reviewers": ["reviewer@x"], "route_low_agreement": False})
    split = ls_task(1, [[rating(1)], [rating(5)], [rating(5)]], record_data(1))
    reviewed = ls_task(2, [[rating(2)], [rating(2)], [rating(3)], [rating(5), checks("factual")]], record_data(2))
    task_rows, annotation_rows = tables(spec, [split, reviewed])
    consensus = judge(task_rows, annotation_rows, spec).consensus.set_index("task_id")
    # (1, 5, 5): median 5, mean deviation 4/3 of a 4-point range: agreement 2/3 passes 0.6 ...
    assert consensus.loc[1, "agreement"] == pytest.approx(1 - (4 / 3) / 4) and not consensus.loc[1, "flagged"]
    strict = grading_spec(quality={"min_agreement": 0.7, "route_low_agreement": False})
    task_rows, annotation_rows = tables(strict, [split])
    flagged = judge(task_rows, annotation_rows, strict).consensus.set_index("task_id")
    assert flagged.loc[1, "flagged"] and "agreement 0.67 < 0.70" in flagged.loc[1, "flag_reason"]  # ... 0.7 does not
    assert consensus.loc[2, "label"] == "5" and consensus.loc[2, "method"] == "review"
    assert json.loads(consensus.loc[2, "answer"]) == {"score": 5, "rubric": {**dict.fromkeys(RUBRIC, False),
                                                                              "factual": True}}  # fmt: skip
    assert consensus.loc[2, "confidence"] == 1.0


def test_invalid_scores_are_kept_out_of_the_consensus_and_flag_the_task() -> None:
    spec = grading_spec()
    task = ls_task(1, [[rating(4)], [rating(4)], [rating(4)], [rating(9)]], record_data(1))
    task_rows, annotation_rows = tables(spec, [task])
    problems = annotation_rows["problem"]
    assert problems.isna().tolist() == [True, True, True, False] and problems.iloc[3] == "score 9 outside 1..5"
    consensus = judge(task_rows, annotation_rows, spec).consensus
    assert consensus["label"].tolist() == ["4"] and consensus["agreement"].tolist() == [1.0]
    assert consensus["flagged"].tolist() == [True] and "invalid annotation" in consensus["flag_reason"].iloc[0]


# --- simulation ---------------------------------------------------------------------------------------------------


def test_simulated_answers_round_trip_through_the_parser_at_the_configured_accuracy() -> None:
    spec = grading_spec()
    rng = random.Random(7)
    exact = near = 0
    for index in range(2000):
        gold = index % 5 + 1
        data = record_data(index, gold=gold)
        result = GRADING.simulated_answer(data, spec, 0.8, False, rng)
        _, answer, problems = GRADING.parse_answer(result, data, spec)
        assert problems == [] and set(answer["rubric"]) == set(RUBRIC)
        exact += answer["score"] == gold
        near += abs(answer["score"] - gold) == 1
    assert exact + near == 2000 and 0.77 < exact / 2000 < 0.83
    spammed = [GRADING.simulated_answer(record_data(i, gold=3), spec, 1.0, True, rng) for i in range(500)]
    scores = {GRADING.parse_answer(r, {}, spec)[1]["score"] for r in spammed}
    assert scores == {1, 2, 3, 4, 5}
    assert GRADING.simulated_answer(record_data(1), spec, 1.0, False, rng) is None  # no gold: no truth
    assert GRADING.simulated_answer(record_data(1, gold=9), spec, 1.0, False, rng) is None  # not on this scale


def test_honest_annotators_agree_on_rubric_checks_and_higher_scores_pass_more() -> None:
    spec = grading_spec()
    rng = random.Random(3)
    passes = {1: 0, 5: 0}
    for index in range(400):
        gold = 1 if index % 2 else 5
        data = record_data(index, gold=gold)
        first, second = (GRADING.parse_answer(GRADING.simulated_answer(data, spec, 1.0, False, rng), data, spec)[1]
                         for _ in range(2))  # fmt: skip
        assert first == second  # perfect annotators see the same truth
        passes[gold] += sum(first["rubric"].values())
    assert passes[5] > 3 * passes[1]


# --- export -------------------------------------------------------------------------------------------------------


def test_grades_jsonl_holds_prompt_response_score_rubric_and_model(tmp_path: Path) -> None:
    spec = grading_spec(rubric=["factual"])
    tasks = [
        ls_task(1, [[rating(4), checks("factual")]] * 3, record_data(1, model="gpt-x")),
        ls_task(2, [[rating(2)], [rating(1)], [rating(2)]], record_data(2, model=None)),
    ]
    task_rows, annotation_rows = tables(spec, tasks)
    consensus = judge(task_rows, annotation_rows, spec).consensus
    rows = dataset_rows(publishable(consensus), task_rows, spec)
    path = GRADING.write_training_export(rows, spec, tmp_path)
    assert path == tmp_path / "grades.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [
        {"prompt": "question 1", "response": "answer 1", "score": 4, "rubric": {"factual": True}, "model": "gpt-x",
         "task_id": 1},
        {"prompt": "question 2", "response": "answer 2", "score": 2, "rubric": {"factual": False}, "task_id": 2},
    ]  # fmt: skip


# --- validation gate (real Great Expectations) ----------------------------------------------------------------------


def validate(spec: ProjectSpec, tasks: list[dict[str, Any]]) -> Any:
    validator = GreatExpectations(DEFAULT_EXPECTATIONS_DIR)
    task_rows, annotation_rows = tables(spec, tasks)
    consensus = judge(task_rows, annotation_rows, spec).consensus
    batches = batches_to_validate(spec, validator, annotation_rows, consensus, task_rows)
    run = validator.validate(batches, docs_dir=None)
    return summarize(run.outcomes, {b.name: len(b.frame) for b in batches}, {}), run


def test_clean_grades_pass_the_gate_with_the_type_and_spec_checks() -> None:
    spec = grading_spec()
    tasks = [ls_task(i, [[rating(s), checks("factual")] for s in (3, 3, 4)], record_data(i)) for i in range(1, 4)]
    summary, run = validate(spec, tasks)
    assert summary.success, summary.text()
    origins = {outcome.origin for outcome in run.outcomes}
    assert {"annotations.response-grading.json", "consensus.response-grading.json", "spec"} <= origins
    ranges = [o for o in run.outcomes if o.origin == "spec" and o.column == "score"]
    assert len(ranges) == 2 and all(o.success for o in ranges)


def test_a_score_of_6_on_a_1_to_5_scale_fails_the_gate_naming_the_annotation() -> None:
    spec = grading_spec()
    good = ls_task(1, [[rating(4)], [rating(4)], [rating(5)]], record_data(1))
    bad = ls_task(2, [[rating(3)], [rating(3)], [rating(6)]], record_data(2))
    summary, _ = validate(spec, [good, bad])
    assert not summary.success
    failed = {(f["batch"], f["type"], f["column"]) for f in summary.failed}
    assert ("annotations", "expect_column_values_to_be_between", "score") in failed
    assert ("annotations", "expect_column_values_to_be_null", "problem") in failed
    out_of_range = next(f for f in summary.failed if f["column"] == "score")
    assert out_of_range["unexpected_count"] == 1 and out_of_range["examples"][0]["annotation_id"] == 23
    assert "annotations.score" in summary.text() and "1..5" in summary.text()


def test_a_missing_score_fails_the_gate() -> None:
    spec = grading_spec()
    tasks = [ls_task(1, [[rating(4)], [rating(4)], [rating(4)], [checks("factual")]], record_data(1))]
    summary, _ = validate(spec, tasks)
    failed = {(f["batch"], f["type"], f["column"]) for f in summary.failed}
    assert ("annotations", "expect_column_values_to_not_be_null", "label") in failed
    assert ("annotations", "expect_column_values_to_not_be_null", "answer") in failed
