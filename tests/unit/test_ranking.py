"""The ranking task type: List + Ranker interface, permutation parsing, Borda consensus with Kendall's W, gold
scoring, simulated orders, the validation gate on the real Great Expectations validator, and the two exports."""

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
from labelflow.tasks.comparisons import borda_scores, kendalls_w
from labelflow.tasks.label_config import label_interface
from labelflow.tasks.quality import judge
from labelflow.tasks.spec import SpecError, parse_spec
from labelflow.tasks.task_types import TASK_TYPES
from labelflow.tasks.task_types.ranking import Ranking, kendall_tau, parse_order
from labelflow.tasks.validate import DEFAULT_EXPECTATIONS_DIR, batches_to_validate, summarize

RANKING = TASK_TYPES["ranking"]
RESPONSES = ["Paris.", "It is Paris, the capital.", "Lyon.", "巴黎。"]
USERS = {1: "a@x", 2: "b@x", 3: "c@x", 9: "boss@x"}


def spec_for(responses: int = 4, **extra: Any):
    fields = {"prompt": "q", "responses": [f"r.{i}" for i in range(responses)], "gold": "best"}
    body = {"name": "rank", "source": "s3://raw/x/", "task": "ranking", "overlap": 3, "records": {"fields": fields}}
    return parse_spec({**body, **extra})


def task_data(task_id: int, gold: str | None = None, responses: list[str] = RESPONSES) -> dict[str, Any]:
    fields: dict[str, Any] = {"prompt": f"Capital of France? ({task_id})", "responses": list(responses)}
    if gold is not None:
        fields["gold"] = gold
    data = RANKING.record_task_data(fields, spec_for(len(responses)))
    sha = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return {**data, "source_uri": f"s3://raw/x/f.jsonl#{task_id}", "content_sha256": sha, "record_index": task_id}


def ranked(*ids: str, key: str = "label") -> list[dict[str, Any]]:
    """A Ranker result as Label Studio 1.23 stores it (Ranker.jsx: {ranker: {<Ranker name>: [ids]}})."""
    return [{"from_name": "label", "to_name": "responses", "type": "ranker", "value": {"ranker": {key: list(ids)}}}]


def by_order(order: list[int]) -> list[dict[str, Any]]:
    return ranked(*[f"r{k}" for k in order])


def annotation(annotation_id: int, user: int, result: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": annotation_id,
        "completed_by": user,
        "lead_time": 5.0,
        "created_at": "2026-11-23T10:00:00Z",
        "updated_at": "2026-11-23T10:00:00Z",
        "result": result,
    }


def ls_task(task_id: int, orders: dict[int, list[int]], gold: str | None = None) -> dict[str, Any]:
    annotations = [annotation(10 * task_id + user, user, by_order(order)) for user, order in orders.items()]
    return {
        "id": task_id,
        "data": task_data(task_id, gold),
        "annotations": annotations,
        "updated_at": "2026-11-23T10:00Z",
    }


def tables(spec, tasks: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    normalizer = AnnotationNormalizer(spec, 1, USERS, "label")
    outs = [normalizer.task(t, 1) for t in tasks]
    return (
        tasks_table([o.task for o in outs]).to_pandas(),
        annotations_table([r for o in outs for r in o.annotations]).to_pandas(),
    )


# --- spec and interface ---------------------------------------------------------------------------------------


def test_interface_shows_the_prompt_and_a_ranker_over_the_list_of_responses() -> None:
    spec = spec_for()
    interface = label_interface(spec)
    root = ElementTree.fromstring(interface.xml)
    tags = {element.tag: element.attrib for element in root.iter()}
    assert tags["Text"] == {"name": "prompt", "value": "$prompt"}
    assert tags["List"]["name"] == "responses" and tags["List"]["value"] == "$items"
    assert tags["Ranker"] == {"name": "label", "toName": "responses"}
    assert (interface.from_name, interface.to_name, interface.result_type) == ("label", "responses", "ranker")
    assert RANKING.control_names == frozenset({"label"}) and RANKING.predictors == frozenset()


def test_task_data_lists_the_responses_as_ranker_items_and_keeps_the_record_fields() -> None:
    data = RANKING.record_task_data(
        {"prompt": "p", "responses": ["x", "y", "z"], "models": ["m1", "m2", "m3"]}, spec_for(3)
    )
    assert data["items"] == [
        {"id": "r1", "title": "Response 1", "body": "x"},
        {"id": "r2", "title": "Response 2", "body": "y"},
        {"id": "r3", "title": "Response 3", "body": "z"},
    ]
    assert data["prompt"] == "p" and data["responses"] == ["x", "y", "z"] and data["models"] == ["m1", "m2", "m3"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"prompt": "q", "responses": ["a", "b"]},
            "records.fields.responses: a ranking needs 3 to 10 responses, got 2",
        ),
        (
            {"prompt": "q", "responses": [f"r{i}" for i in range(11)]},
            "records.fields.responses: a ranking needs 3 to 10 responses, got 11",
        ),
        (
            {"prompt": "q", "responses": ["a", "b", "c"], "models": ["m", "n"]},
            "records.fields.models: one model per response expected: 2 models for 3 responses",
        ),
        ({"prompt": "q", "responses": ["a", "b", "a"]}, "records.fields.responses: path 'a' is listed twice"),
        ({"prompt": "q", "responses": "a"}, "records.fields.responses: a list of field paths expected"),
        ({"prompt": "q"}, "records.fields: task ranking needs prompt, responses; missing responses"),
    ],
)
def test_a_spec_with_the_wrong_response_fields_gets_one_line_naming_the_field(fields: dict, message: str) -> None:
    body = {"name": "r", "source": "s3://raw/x/", "task": "ranking", "records": {"fields": fields}}
    with pytest.raises(SpecError) as caught:
        parse_spec(body)
    assert str(caught.value).splitlines()[1:] == [f"  {message}"]


def test_a_ranking_spec_needs_no_labels_and_accepts_three_to_ten_responses() -> None:
    assert spec_for(3).labels == [] and spec_for(10).task_type is RANKING
    with pytest.raises(SpecError, match="records: task ranking reads files of records"):
        parse_spec({"name": "r", "source": "s3://raw/x/", "task": "ranking"})


# --- parsing --------------------------------------------------------------------------------------------------


def test_a_ranker_result_is_read_as_response_numbers_best_first() -> None:
    label, answer, problems = RANKING.parse_answer(ranked("r2", "r1", "r4", "r3"), task_data(1), spec_for())
    assert (label, answer, problems) == ("2>1>4>3", {"order": [2, 1, 4, 3], "responses": 4}, [])


def test_the_only_list_in_the_result_is_read_whatever_its_key() -> None:
    label, _, problems = RANKING.parse_answer(ranked("r3", "r1", "r2", "r4", key="responses"), task_data(1), spec_for())
    assert label == "3>1>2>4" and problems == []


@pytest.mark.parametrize(
    ("ids", "detail"),
    [
        (["r2", "r1", "r3"], "missing 4"),
        (["r2", "r1", "r1", "r3", "r4"], "duplicated 1"),
        (["r2", "r1", "r3", "x9"], "missing 4; unknown ids ['x9']"),
        (["r2", "r1", "r3", "r4", "r5"], "unknown ids ['r5']"),
    ],
)
def test_a_ranking_that_is_not_a_permutation_is_a_problem(ids: list[str], detail: str) -> None:
    label, answer, problems = RANKING.parse_answer(ranked(*ids), task_data(1), spec_for())
    assert label is None and answer is not None and answer["responses"] == 4
    assert problems == [f"not a permutation of the 4 responses: {detail}"]


def test_no_ranking_and_two_rankings_are_problems() -> None:
    assert RANKING.parse_answer([], task_data(1), spec_for()) == (None, None, ["no ranking given"])
    label, _, problems = RANKING.parse_answer(by_order([1, 2, 3, 4]) + by_order([4, 3, 2, 1]), task_data(1), spec_for())
    assert label == "1>2>3>4" and problems == ["2 rankings given; the first is read"]


@pytest.mark.parametrize("gold", ["2>1>4>3", " 2 > 1 > 4 > 3 ", "[2, 1, 4, 3]", "2,1,4,3"])
def test_gold_is_read_in_its_usual_spellings(gold: str) -> None:
    assert RANKING.gold_of({"gold": gold, "responses": RESPONSES}) == "2>1>4>3"
    assert parse_order(gold) == [2, 1, 4, 3]


def test_gold_that_is_not_an_order_of_the_responses_stays_as_written_so_it_never_matches() -> None:
    assert RANKING.gold_of({"gold": "1>2>3", "responses": RESPONSES}) == "1>2>3"
    assert RANKING.gold_of({"gold": "best", "responses": RESPONSES}) == "best"
    assert RANKING.gold_of({"responses": RESPONSES}) is None


def test_kendall_tau_of_orders() -> None:
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [2, 1, 3, 4]) == pytest.approx(1 - 2 * 1 / 6)


# --- judging --------------------------------------------------------------------------------------------------


def test_consensus_is_the_borda_order_and_agreement_is_kendalls_w() -> None:
    spec = spec_for()
    orders = {1: [2, 1, 3, 4], 2: [2, 3, 1, 4], 3: [1, 2, 4, 3]}
    task_rows, annotation_rows = tables(spec, [ls_task(1, orders, gold="2>1>3>4")])
    report = judge(task_rows, annotation_rows, spec)
    row = report.consensus.iloc[0]

    zero_based = [[k - 1 for k in order] for order in orders.values()]
    scores = borda_scores(zero_based, 4)
    expected = [int(k) + 1 for k in sorted(range(4), key=lambda k: (-scores[k], k))]
    ranks = np.array([[order.index(k) + 1 for k in range(1, 5)] for order in orders.values()])
    assert row["label"] == ">".join(map(str, expected)) == "2>1>3>4"
    assert json.loads(row["answer"]) == {"borda": scores.tolist(), "order": expected, "responses": 4}
    assert row["agreement"] == pytest.approx(kendalls_w(ranks)) and row["confidence"] == row["agreement"]
    assert row["method"] == "borda" and row["finished"] and not row["flagged"]
    assert report.metrics["mean_kendalls_w"] == pytest.approx(kendalls_w(ranks))
    assert report.metrics["consensus_accuracy_on_gold"] == 1.0 and report.metrics["mean_kendall_tau_on_gold"] == 1.0

    pairs = report.pairwise.set_index(["annotator_a", "annotator_b"])["mean_kendall_tau"]
    assert pairs[(1, 2)] == pytest.approx(kendall_tau(orders[1], orders[2]))
    annotators = report.annotators.set_index("annotator_id")
    assert annotators.loc[1, "gold_accuracy"] == 1.0 and annotators.loc[3, "gold_accuracy"] == 0.0
    tau_with_consensus = kendall_tau(orders[3], expected)
    assert annotators.loc[3, "agreement_with_consensus"] == pytest.approx((tau_with_consensus + 1) / 2)
    assert annotators.loc[3, "gold_kendall_tau"] == pytest.approx(kendall_tau(orders[3], [2, 1, 3, 4]))


def test_a_tie_for_first_place_is_broken_by_response_number_and_flagged() -> None:
    spec = spec_for(overlap=2, quality={"min_agreement": 0.5})
    tied_top = {1: [1, 2, 3, 4], 2: [2, 1, 3, 4]}  # responses 1 and 2 share the best Borda score
    tied_bottom = {1: [1, 2, 3, 4], 2: [1, 2, 4, 3]}  # only 3 and 4 tie: the best response is clear
    task_rows, annotation_rows = tables(spec, [ls_task(1, tied_top), ls_task(2, tied_bottom)])
    consensus = judge(task_rows, annotation_rows, spec).consensus.set_index("task_id")
    assert consensus.loc[1, "label"] == "1>2>3>4" and consensus.loc[1, "flagged"]
    assert "tied vote" in consensus.loc[1, "flag_reason"]
    assert consensus.loc[2, "label"] == "1>2>3>4" and not consensus.loc[2, "flagged"]


def test_low_concordance_is_flagged_and_a_reviewer_overrides_the_consensus() -> None:
    spec = spec_for(quality={"reviewers": ["boss@x"]})
    disagree = {1: [1, 2, 3, 4], 2: [4, 3, 2, 1], 3: [2, 4, 1, 3]}
    tasks = [ls_task(1, disagree), ls_task(2, disagree)]
    tasks[1]["annotations"].append(annotation(99, 9, by_order([3, 1, 2, 4])))
    task_rows, annotation_rows = tables(spec, tasks)
    consensus = judge(task_rows, annotation_rows, spec).consensus.set_index("task_id")
    assert consensus.loc[1, "agreement"] < spec.quality.min_agreement and consensus.loc[1, "flagged"]
    assert consensus.loc[2, "label"] == "3>1>2>4" and consensus.loc[2, "method"] == "review"
    assert consensus.loc[2, "confidence"] == 1.0 and json.loads(consensus.loc[2, "answer"])["order"] == [3, 1, 2, 4]


def test_invalid_rankings_do_not_vote_and_flag_their_task() -> None:
    spec = spec_for(overlap=2)
    task = ls_task(1, {1: [1, 2, 3, 4], 2: [1, 2, 3, 4]})
    task["annotations"].append(annotation(19, 3, ranked("r1", "r1", "r2", "r3")))
    task_rows, annotation_rows = tables(spec, [task])
    consensus = judge(task_rows, annotation_rows, spec).consensus.iloc[0]
    assert consensus["annotations"] == 2 and consensus["invalid_annotations"] == 1 and consensus["flagged"]
    assert consensus["agreement"] == 1.0


# --- simulation -----------------------------------------------------------------------------------------------


def test_simulated_answers_round_trip_through_parsing_at_the_configured_accuracy() -> None:
    spec = spec_for()
    data = task_data(1, gold="2>1>4>3")
    rng = random.Random(7)
    labels = []
    for _ in range(400):
        result = RANKING.simulated_answer(data, spec, 0.75, False, rng)
        label, answer, problems = RANKING.parse_answer(result, data, spec)
        assert problems == [] and sorted(answer["order"]) == [1, 2, 3, 4]
        labels.append(label)
    share = labels.count("2>1>4>3") / len(labels)
    assert 0.68 < share < 0.82
    wrong = [parse_order(label) for label in labels if label != "2>1>4>3"]
    assert all(kendall_tau(order, [2, 1, 4, 3]) == pytest.approx(1 - 2 / 6) for order in wrong)  # one adjacent swap
    spammer = {
        RANKING.parse_answer(RANKING.simulated_answer(data, spec, 1.0, True, rng), data, spec)[0] for _ in range(200)
    }
    assert len(spammer) > 12  # random permutations of 4 (24 possible)
    assert RANKING.simulated_answer(task_data(1), spec, 1.0, False, rng) is None  # no gold, nothing to simulate


# --- validation gate ------------------------------------------------------------------------------------------


def validate(spec, tasks: list[dict[str, Any]]):
    validator = GreatExpectations(DEFAULT_EXPECTATIONS_DIR)
    task_rows, annotation_rows = tables(spec, tasks)
    consensus = judge(task_rows, annotation_rows, spec).consensus
    batches = batches_to_validate(spec, validator, annotation_rows, consensus, task_rows)
    run = validator.validate(batches)
    return summarize(run.outcomes, {b.name: len(b.frame) for b in batches}, {}), run, batches


def test_clean_rankings_pass_the_ranking_suites() -> None:
    spec = spec_for()
    agree = {1: [2, 1, 3, 4], 2: [2, 1, 3, 4], 3: [2, 1, 4, 3]}
    summary, run, batches = validate(spec, [ls_task(1, agree), ls_task(2, agree)])
    assert summary.success, summary.text()
    origins = {o.origin for o in run.outcomes}
    assert {"annotations.ranking.json", "consensus.ranking.json"} <= origins
    frames = {b.name: b.frame for b in batches}
    assert frames["annotations"]["is_permutation"].tolist() == [True] * 6
    assert frames["consensus"]["responses"].tolist() == [4, 4]


def test_a_single_ranking_per_task_has_no_concordance_and_still_passes_the_gate() -> None:
    spec = spec_for(overlap=1)
    summary, _, batches = validate(spec, [ls_task(1, {1: [2, 1, 3, 4]}), ls_task(2, {2: [1, 2, 3, 4]})])
    assert summary.success, summary.text()
    published = {b.name: b.frame for b in batches}["consensus"].set_index("task_id")
    assert published["label"].to_dict() == {1: "2>1>3>4", 2: "1>2>3>4"}
    assert published["agreement"].isna().all()  # Kendall's W needs two rankings; one is not "full agreement"


def test_a_ranking_that_is_not_a_permutation_fails_the_gate_with_the_annotation_named() -> None:
    spec = spec_for()
    agree = {1: [2, 1, 3, 4], 2: [2, 1, 3, 4], 3: [2, 1, 4, 3]}
    bad = ls_task(2, agree)
    bad["annotations"][0]["result"] = ranked("r2", "r2", "r3")
    summary, _, _ = validate(spec, [ls_task(1, agree), bad])
    assert not summary.success
    failed = {(f["batch"], f["type"], f["column"]): f for f in summary.failed}
    permutation = failed[("annotations", "expect_column_values_to_be_in_set", "is_permutation")]
    assert permutation["unexpected_count"] == 1 and permutation["examples"][0]["annotation_id"] == 21
    assert ("annotations", "expect_column_values_to_not_be_null", "label") in failed
    assert "annotations.is_permutation" in summary.text()


# --- export ---------------------------------------------------------------------------------------------------


def test_export_writes_ranked_responses_and_every_implied_pair_in_trl_dpo_form(tmp_path: Path) -> None:
    spec = spec_for()
    five = ["e1", "e2", "e3", "e4", "e5"]
    rows = pd.DataFrame(
        {
            "task_id": [7, 8],
            "record": [
                json.dumps({"prompt": "Capital?", "responses": RESPONSES, "models": ["a", "b", "c", "d"]}),
                json.dumps({"prompt": "Five?", "responses": five}),
            ],
            "label": ["2>1>4>3", "5>4>3>2>1"],
            "answer": [json.dumps({"order": [2, 1, 4, 3], "responses": 4}), json.dumps({"order": [5, 4, 3, 2, 1]})],
        }
    )
    path = RANKING.write_training_export(rows, spec, tmp_path)
    assert path == tmp_path / "ranking.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {
        "task_id": 7,
        "prompt": "Capital?",
        "order": [2, 1, 4, 3],
        "ranked": [RESPONSES[1], RESPONSES[0], RESPONSES[3], RESPONSES[2]],
        "models": ["b", "a", "d", "c"],
    }
    assert lines[1]["ranked"] == five[::-1] and "models" not in lines[1]
    pairs = [json.loads(line) for line in (tmp_path / "ranking_pairs.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(pairs) == 4 * 3 // 2 + 5 * 4 // 2
    assert all(set(pair) == {"prompt", "chosen", "rejected"} for pair in pairs)
    assert pairs[0] == {"prompt": "Capital?", "chosen": RESPONSES[1], "rejected": RESPONSES[0]}
    assert {(p["chosen"], p["rejected"]) for p in pairs if p["prompt"] == "Five?"} == {
        (five[i], five[j]) for i in range(5) for j in range(i)
    }
    assert (tmp_path / "ranking_pairs.jsonl").name in Ranking.extra_export_files
