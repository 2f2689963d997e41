"""text-pair: cross-lingual alignment classes plus an optional 1..5 score; BCP 47 checks, majority/median consensus,
nominal and ordinal alpha, gold, simulation, pairs.jsonl and the validation gate."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest

from labelflow.integrations.great_expectations import GreatExpectations
from labelflow.tasks.agreement import krippendorff_alpha_nominal
from labelflow.tasks.annotations import AnnotationNormalizer, annotations_table, tasks_table
from labelflow.tasks.comparisons import krippendorff_alpha_ordinal
from labelflow.tasks.dataset import dataset_rows
from labelflow.tasks.label_config import label_interface
from labelflow.tasks.ledger import IngestLedger
from labelflow.tasks.quality import judge
from labelflow.tasks.spec import ProjectSpec, SpecError, load_spec, parse_spec
from labelflow.tasks.task_types import TASK_TYPES
from labelflow.tasks.task_types.base import RecordRejected
from labelflow.tasks.task_types.text_pair import (
    BCP47_PATTERN,
    CLASSES,
    TextPair,
    canonical_language_tag,
    is_language_tag,
    text_pair_result,
)
from labelflow.tasks.validate import DEFAULT_EXPECTATIONS_DIR, batches_to_validate, publishable, summarize
from tests.unit.fakes import FakeClients
from tests.unit.stage_fixtures import ingest

ROOT = Path(__file__).resolve().parents[2]
PAIRS = TextPair()
FIELDS = {"source": "a", "target": "b", "source_lang": "la", "target_lang": "lb", "gold": "g"}


def pair_spec(**extra: Any) -> ProjectSpec:
    body = {
        "name": "pairs",
        "source": "s3://raw/pairs/",
        "task": "text-pair",
        "overlap": 3,
        "records": {"fields": FIELDS},
        "quality": {"route_low_agreement": False},
        **extra,
    }
    return parse_spec(body)


def record_data(index: int, gold: str | None = None, source_lang: str = "en", target_lang: str = "zh-Hans") -> dict:
    source, target = f"sentence {index}", f"句子 {index}"
    data: dict[str, Any] = {"text_a": source, "text_b": target, "source_lang": source_lang, "target_lang": target_lang}
    data |= {"source_uri": "s3://raw/pairs/a.jsonl", "record_index": index}
    data["content_sha256"] = hashlib.sha256(f"{source}|{target}".encode()).hexdigest()
    if gold is not None:
        data["gold"] = gold
    return data


def answer(label: str, score: int | None = None) -> list[dict[str, Any]]:
    return text_pair_result(label, score)


def ls_task(task_id: int, results: list[list[dict[str, Any]]], data: dict[str, Any]) -> dict[str, Any]:
    stamp = "2026-11-23T10:00:00Z"
    annotations = [
        {"id": task_id * 10 + user, "completed_by": user, "lead_time": 3.0, "created_at": stamp, "updated_at": stamp,
         "result": result}
        for user, result in enumerate(results, start=1)
    ]  # fmt: skip
    return {"id": task_id, "data": data, "annotations": annotations, "updated_at": "2026-11-23T10:00:00.000001Z"}


def tables(spec: ProjectSpec, tasks: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    users = {1: "a@x", 2: "b@x", 3: "c@x", 4: "reviewer@x"}
    normalizer = AnnotationNormalizer(spec, 1, users, "label")
    outs = [normalizer.task(task, 1) for task in tasks]
    task_rows = tasks_table([o.task for o in outs]).to_pandas()
    annotation_rows = annotations_table([row for o in outs for row in o.annotations]).to_pandas()
    return task_rows, annotation_rows


# --- BCP 47 --------------------------------------------------------------------------------------------------------

WELL_FORMED = [
    "en", "zh", "de", "fr", "EN", "zh-Hans", "zh-Hant-TW", "en-US", "en-gb", "es-419", "sr-Latn-RS", "de-CH-1996",
    "sl-rozaj-biske", "zh-yue-HK", "hy-Latn-IT-arevela", "en-a-myext-b-another", "de-DE-u-co-phonebk",
    "x-whatever", "qaa-Qaaa-QM-x-southern", "i-klingon", "en-GB-oed", "zh-min-nan", "und", "ast",
]  # fmt: skip
MALFORMED = [
    "", "e", "english", "en_US", "en-", "-en", "en--US", "123", "en-U", "zh-Hans-", "toolonglang", "en-a", "en-x",
    "en US", " en", "en-US-x-", "zh-Hans-CN-a", "中文", "en-12", "de-19", "x", "i-default-x", "chinese", "deutsch",
    "Latn",
]  # fmt: skip


@pytest.mark.parametrize("tag", WELL_FORMED)
def test_well_formed_bcp47_tags_are_accepted(tag: str) -> None:
    assert is_language_tag(tag)


@pytest.mark.parametrize("tag", MALFORMED)
def test_malformed_language_codes_are_refused(tag: str) -> None:
    assert not is_language_tag(tag)


def test_tags_get_their_canonical_case_and_the_suite_checks_the_same_pattern() -> None:
    assert canonical_language_tag("ZH-hant-tw") == "zh-Hant-TW"
    assert canonical_language_tag("EN-us") == "en-US" and canonical_language_tag("es-419") == "es-419"
    assert canonical_language_tag("en-A-BBB-X-Foo") == "en-a-bbb-x-foo"
    assert canonical_language_tag("SGN-be-fr") == "sgn-BE-FR" and canonical_language_tag("X-Priv") == "x-priv"
    assert is_language_tag("ast") and not is_language_tag("en-" + "-".join(["abcde"] * 20))  # over 64 characters
    suite = json.loads((ROOT / "expectations" / "consensus.text-pair.json").read_text(encoding="utf-8"))
    regexes = {e["kwargs"]["column"]: e["kwargs"]["regex"] for e in suite["expectations"] if "regex" in e["kwargs"]}
    assert regexes["source_lang"] == regexes["target_lang"] == BCP47_PATTERN


# --- spec and interface --------------------------------------------------------------------------------------------


def test_interface_shows_both_texts_under_their_languages_a_required_class_and_an_optional_score() -> None:
    interface = label_interface(pair_spec())
    root = ElementTree.fromstring(interface.xml)
    assert {e.get("name"): e.get("value") for e in root.iter("Text")} == {"text_a": "$text_a", "text_b": "$text_b"}
    headers = [e.get("value") for e in root.iter("Header")]
    assert "$source_lang" in headers and "$target_lang" in headers
    (choices,) = root.iter("Choices")
    assert (choices.get("name"), choices.get("required"), choices.get("choice")) == ("label", "true", "single-radio")
    assert [c.get("alias") for c in choices.iter("Choice")] == list(CLASSES)  # results hold the class, not the text
    (rating,) = root.iter("Rating")
    assert rating.get("name") == "score" and rating.get("maxRating") == "5" and rating.get("required") is None
    assert (interface.from_name, interface.to_name, interface.result_type) == ("label", "text_a", "choices")
    assert "$gold" not in interface.xml
    assert PAIRS.control_names == {"label", "score"} and TASK_TYPES["text-pair"].export_file == "pairs.jsonl"


def test_the_example_spec_and_its_data_validate() -> None:
    example = load_spec(str(ROOT / "examples" / "specs" / "text-pair.yaml"))
    assert example.task == "text-pair" and not example.labels and example.records is not None
    lines = (ROOT / "examples" / "data" / "text-pair" / "pairs-1.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 20
    paths = example.records.fields
    assert {r[paths["source_lang"]].split("-")[0] for r in records} == {"en", "zh", "de", "fr"}
    for record in records:
        fields = {name: record[path] for name, path in paths.items()}
        PAIRS.check_record(fields)  # every sample record is accepted
        assert PAIRS.gold_of(fields) in CLASSES


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": ["yes", "no"]}, "labels: task text-pair answers with aligned, partial, not_aligned; remove"),
        ({"records": {"fields": {"source": "a", "target": "b", "source_lang": "la"}}},
         "records.fields: task text-pair needs source, target, source_lang, target_lang; missing target_lang"),
        ({"label_config": "<View/>"}, "label_config: task text-pair uses its built-in interface"),
        ({"options": {"scale": 7}}, "options: task text-pair has no options"),
    ],
)  # fmt: skip
def test_bad_specs_are_one_line_naming_the_field(change: dict[str, Any], message: str) -> None:
    body = {"name": "p", "source": "s3://raw/p/", "task": "text-pair", "records": {"fields": FIELDS}, **change}
    with pytest.raises(SpecError) as caught:
        parse_spec(body)
    problems = str(caught.value).splitlines()[1:]
    assert len(problems) == 1 and message in problems[0]


# --- bad records ---------------------------------------------------------------------------------------------------


def test_check_record_refuses_an_invisible_side_and_a_malformed_language_with_a_reason() -> None:
    good = {"source": "Hello.", "target": "你好。", "source_lang": "en", "target_lang": "zh-Hans"}
    PAIRS.check_record(good)
    with pytest.raises(RecordRejected) as caught:
        PAIRS.check_record({**good, "target": "\u200b\u200b"})
    assert caught.value.reason == "empty" and str(caught.value).startswith("target: holds only invisible")
    with pytest.raises(RecordRejected) as caught:
        PAIRS.check_record({**good, "source_lang": "english"})
    assert caught.value.reason == "invalid_language"
    assert str(caught.value) == "source_lang: 'english' is not a BCP 47 language tag such as en, zh-Hans or pt-BR"
    with pytest.raises(RecordRejected, match=r"target_lang: 'zh_hant_tw' .* \(did you mean 'zh-Hant-TW'\?\)"):
        PAIRS.check_record({**good, "target_lang": "zh_hant_tw"})


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def test_bad_records_are_quarantined_with_their_reason_and_the_rest_of_the_file_is_ingested() -> None:
    clients = FakeClients()
    spec = pair_spec(source="s3://corpus/pairs/", records={"fields": FIELDS, "id": "id"})
    good = {"a": "Good morning.", "b": "早上好。", "la": "en", "lb": "zh-hans", "g": "aligned"}
    rows = [
        {"id": "r1", **good},
        {"id": "r2", **good, "b": "   \t"},  # whitespace only: empty when the file is read
        {"id": "r3", **good, "a": "\u200b"},  # a zero-width space only: empty by the type's check
        {"id": "r4", **good, "la": "english"},
        {"id": "r5", **good, "b": "Guten Morgen.", "lb": "de_DE"},
        {"id": "r6", **good, "a": "Thank you.", "b": "Merci.", "lb": "FR"},
    ]
    clients.store.put_object("corpus", "pairs/part-1.jsonl", jsonl(rows))
    summary = ingest(clients, spec)
    assert summary["tasks_created"] == 2 and summary["records"]["records_read"] == 6
    assert summary["quarantined_by_reason"] == {"empty": 2, "invalid_language": 2}
    bucket, key = summary["quarantine_report"].removeprefix("s3://").split("/", 1)
    report = {
        row["record_id"]: row for row in csv.DictReader(io.StringIO(clients.store.get_bytes(bucket, key).decode()))
    }
    assert set(report) == {"r2", "r3", "r4", "r5"}
    assert report["r2"]["reason"] == "empty" and "target" in report["r2"]["detail"]
    assert report["r3"]["reason"] == "empty" and report["r3"]["detail"].startswith("source: holds only invisible")
    assert report["r4"]["reason"] == "invalid_language" and "source_lang: 'english'" in report["r4"]["detail"]
    assert report["r5"]["record_index"] == "5" and "did you mean 'de-DE'?" in report["r5"]["detail"]
    tasks = {
        t["data"]["record_id"]: t["data"] for t in clients.label_studio_client.project_tasks(summary["project_id"])
    }
    assert set(tasks) == {"r1", "r6"}
    assert (tasks["r1"]["target_lang"], tasks["r6"]["target_lang"]) == ("zh-Hans", "fr")  # canonical case
    assert (tasks["r6"]["text_a"], tasks["r6"]["text_b"]) == ("Thank you.", "Merci.")
    assert all("gold" not in data for data in tasks.values()), "annotators never see the gold class"
    ledger = IngestLedger(clients.store, spec.state_location).read_all().to_pandas()
    assert set(ledger.loc[ledger["status"] == "quarantined", "reason"]) == {"empty", "invalid_language"}

    again = ingest(clients, spec)  # nothing is lost or repeated: the quarantined records are known
    assert again["tasks_created"] == 0 and again["quarantined"] == 0


# --- parsing -------------------------------------------------------------------------------------------------------


def test_parse_reads_the_class_and_the_optional_score() -> None:
    spec = pair_spec()
    assert PAIRS.parse_answer(answer("aligned", 5), {}, spec) == ("aligned", {"label": "aligned", "score": 5}, [])
    assert PAIRS.parse_answer(answer("not_aligned"), {}, spec) == (
        "not_aligned", {"label": "not_aligned", "score": None}, []
    )  # fmt: skip
    shown_text = [{"from_name": "label", "type": "choices", "value": {"choices": ["Partially aligned"]}}]
    assert PAIRS.parse_answer(shown_text, {}, spec)[0] == "partial"  # a result holding the shown text, not the alias


def test_parse_names_a_missing_class_an_unknown_class_and_a_bad_score() -> None:
    spec = pair_spec()
    score_only = [{"from_name": "score", "type": "rating", "value": {"rating": 3}}]
    assert PAIRS.parse_answer(score_only, {}, spec) == (None, None, ["no alignment class chosen"])
    label, parsed, problems = PAIRS.parse_answer(answer("maybe"), {}, spec)
    assert (label, parsed) == ("maybe", {"label": "maybe", "score": None})  # kept and marked, never dropped
    assert problems == ["class 'maybe' is not one of aligned, partial, not_aligned"]
    assert PAIRS.parse_answer(answer("aligned", 7), {}, spec)[1:] == (
        {"label": "aligned", "score": 7}, ["score 7 outside 1..5"]
    )  # fmt: skip
    assert PAIRS.parse_answer(answer("aligned", 2.5), {}, spec)[2] == ["score 2.5 is not a whole number"]  # type: ignore[arg-type]
    two = [*answer("aligned"), *answer("partial")]
    assert PAIRS.parse_answer(two, {}, spec)[2] == ["2 classes chosen: ['aligned', 'partial']"]


def test_gold_classes_are_read_as_people_write_them() -> None:
    assert PAIRS.gold_of({"gold": "Aligned"}) == "aligned" and PAIRS.gold_of({"gold": "partially aligned"}) == "partial"
    assert PAIRS.gold_of({"gold": "NOT-ALIGNED"}) == "not_aligned" and PAIRS.gold_of({"gold": " "}) is None
    assert PAIRS.gold_of({"gold": "good"}) == "good"  # kept, so it never matches and shows as wrong
    assert PAIRS.gold_of({}) is None


# --- judging -------------------------------------------------------------------------------------------------------


def lower_median(values: list[int]) -> int | None:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2] if ordered else None


VOTES: dict[int, list[tuple[str, int | None]]] = {
    1: [("aligned", 5), ("aligned", 4), ("partial", 3)],
    2: [("not_aligned", 1), ("not_aligned", None), ("not_aligned", 2)],
    3: [("aligned", 4), ("partial", None), ("not_aligned", 1)],  # a three-way tie
    4: [("partial", 2), ("partial", 3), ("partial", None)],
    5: [("aligned", None), ("aligned", None), ("aligned", None)],  # nobody scored
}
GOLD = {1: "aligned", 2: "partial", 4: "partial"}


def judged(spec: ProjectSpec) -> Any:
    tasks = [
        ls_task(task_id, [answer(label, score) for label, score in votes], record_data(task_id, GOLD.get(task_id)))
        for task_id, votes in VOTES.items()
    ]
    task_rows, annotation_rows = tables(spec, tasks)
    return judge(task_rows, annotation_rows, spec)


def test_judge_matches_a_hand_computation() -> None:
    report = judged(pair_spec())
    consensus = report.consensus.set_index("task_id")
    for task_id, votes in VOTES.items():
        row = consensus.loc[task_id]
        labels = [label for label, _ in votes]
        top = max(labels.count(c) for c in CLASSES)
        assert row["agreement"] == pytest.approx(top / len(labels))
        scores = [score for _, score in votes if score is not None]
        if task_id == 3:
            assert row["label"] is None and row["flagged"] and "tied vote" in row["flag_reason"]
            continue
        assert row["label"] == max(CLASSES, key=labels.count) and row["method"] == "majority"
        parsed = json.loads(row["answer"])
        assert parsed["label"] == row["label"] and parsed["score"] == lower_median(scores)
        assert parsed["votes"] == {c: labels.count(c) for c in CLASSES if c in labels}
    assert json.loads(consensus.loc[1, "answer"])["score"] == 4  # lower median of (5, 4, 3)
    assert json.loads(consensus.loc[5, "answer"])["score"] is None

    counts = np.array([[[label for label, _ in v].count(c) for c in CLASSES] for v in VOTES.values()], dtype=float)
    assert report.metrics["krippendorff_alpha"] == pytest.approx(krippendorff_alpha_nominal(counts))
    score_counts = np.zeros((len(VOTES), 5))
    for row, votes in enumerate(VOTES.values()):
        for _, score in votes:
            if score is not None:
                score_counts[row, score - 1] += 1
    assert report.metrics["krippendorff_alpha_ordinal"] == pytest.approx(krippendorff_alpha_ordinal(score_counts))
    assert report.metrics["scored_share"] == pytest.approx(score_counts.sum() / 15)
    assert report.metrics["mean_score"] == pytest.approx(np.mean([4, 1, 2]))  # finished, decided tasks with a score
    # Gold: task 1 right (aligned), task 2 wrong (not_aligned vs partial), task 4 right.
    assert report.metrics["gold_tasks"] == 3
    assert report.metrics["consensus_accuracy_on_gold"] == pytest.approx(2 / 3)
    annotators = report.annotators.set_index("annotator_email")
    assert annotators.loc["c@x", "gold_accuracy"] == pytest.approx(1 / 3)  # partial, not_aligned, partial
    assert annotators.loc["a@x", "agreement_with_consensus"] == pytest.approx(4 / 5)  # all but the tied task 3
    assert report.metrics["label_distribution"] == {"aligned": 2, "not_aligned": 1, "partial": 1}


def test_tie_policy_first_labels_a_tie_which_stays_flagged_and_a_reviewer_wins() -> None:
    spec = pair_spec(quality={"tie_policy": "first", "reviewers": ["reviewer@x"], "route_low_agreement": False})
    tied = ls_task(1, [answer("not_aligned", 1), answer("partial", 2)], record_data(1))
    scored_review = ls_task(2, [*[answer("aligned", 5)] * 3, answer("partial", 3)], record_data(2))
    unscored_review = ls_task(3, [*[answer("aligned", 4)] * 3, answer("not_aligned")], record_data(3))
    tied["overlap"] = 2
    task_rows, annotation_rows = tables(spec, [tied, scored_review, unscored_review])
    consensus = judge(task_rows, annotation_rows, spec).consensus.set_index("task_id")
    assert consensus.loc[1, "label"] == "partial"  # partial precedes not_aligned
    assert consensus.loc[1, "flagged"] and "tied vote" in consensus.loc[1, "flag_reason"]  # as in every class type
    assert json.loads(consensus.loc[1, "answer"])["score"] == 1
    assert consensus.loc[2, "label"] == "partial" and consensus.loc[2, "method"] == "review"
    assert json.loads(consensus.loc[2, "answer"]) == {"label": "partial", "score": 3, "votes": {"aligned": 3}}
    assert consensus.loc[2, "confidence"] == 1.0
    # A reviewer who gives no score changes the class and keeps the annotators' median score.
    assert json.loads(consensus.loc[3, "answer"]) == {"label": "not_aligned", "score": 4, "votes": {"aligned": 3}}


def test_invalid_answers_are_kept_out_of_the_consensus_and_flag_the_task() -> None:
    spec = pair_spec()
    task = ls_task(1, [answer("aligned", 5), answer("aligned", 5), answer("aligned", 5), answer("aligned", 9)],
                   record_data(1))  # fmt: skip
    task_rows, annotation_rows = tables(spec, [task])
    assert annotation_rows["problem"].tolist()[3] == "score 9 outside 1..5"
    consensus = judge(task_rows, annotation_rows, spec).consensus
    assert json.loads(consensus["answer"].iloc[0])["score"] == 5
    assert consensus["flagged"].tolist() == [True] and "invalid annotation" in consensus["flag_reason"].iloc[0]


# --- simulation ----------------------------------------------------------------------------------------------------


def test_simulated_answers_round_trip_at_the_configured_accuracy_with_correlated_scores() -> None:
    spec = pair_spec()
    rng = random.Random(11)
    right = 0
    scores: dict[str, list[int]] = {label: [] for label in CLASSES}
    for index in range(3000):
        gold = CLASSES[index % 3]
        data = record_data(index, gold)
        label, parsed, problems = PAIRS.parse_answer(PAIRS.simulated_answer(data, spec, 0.8, False, rng), data, spec)
        assert problems == [] and parsed is not None
        right += label == gold
        if label == gold and parsed["score"] is not None:
            scores[gold].append(parsed["score"])
    assert 0.77 < right / 3000 < 0.83
    means = {label: np.mean(values) for label, values in scores.items()}
    assert means["aligned"] > means["partial"] + 1 > means["not_aligned"] + 1.5
    given = sum(len(values) for values in scores.values()) / right
    assert 0.75 < given < 0.85  # the score is optional
    spammed = [PAIRS.simulated_answer(record_data(i, "aligned"), spec, 1.0, True, rng) for i in range(300)]
    assert {PAIRS.parse_answer(r, {}, spec)[0] for r in spammed} == set(CLASSES)
    assert PAIRS.simulated_answer(record_data(1), spec, 1.0, False, rng) is None  # no gold: no truth
    assert PAIRS.simulated_answer(record_data(1, "good"), spec, 1.0, False, rng) is None


# --- export --------------------------------------------------------------------------------------------------------


def test_pairs_jsonl_holds_both_texts_their_languages_the_class_and_the_score(tmp_path: Path) -> None:
    spec = pair_spec()
    tasks = [
        ls_task(1, [answer("aligned", 5), answer("aligned", 4), answer("aligned", 5)], record_data(1)),
        ls_task(2, [answer("partial"), answer("partial"), answer("aligned")], record_data(2, None, "de", "fr-CH")),
    ]
    task_rows, annotation_rows = tables(spec, tasks)
    consensus = judge(task_rows, annotation_rows, spec).consensus
    rows = dataset_rows(publishable(consensus), task_rows, spec)
    path = PAIRS.write_training_export(rows, spec, tmp_path)
    assert path == tmp_path / "pairs.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [
        {"source": "sentence 1", "target": "句子 1", "source_lang": "en", "target_lang": "zh-Hans", "label": "aligned",
         "score": 5, "task_id": 1},
        {"source": "sentence 2", "target": "句子 2", "source_lang": "de", "target_lang": "fr-CH", "label": "partial",
         "score": None, "task_id": 2},
    ]  # fmt: skip


# --- validation gate (real Great Expectations) ---------------------------------------------------------------------


def validate(spec: ProjectSpec, tasks: list[dict[str, Any]]) -> Any:
    validator = GreatExpectations(DEFAULT_EXPECTATIONS_DIR)
    task_rows, annotation_rows = tables(spec, tasks)
    consensus = judge(task_rows, annotation_rows, spec).consensus
    batches = batches_to_validate(spec, validator, annotation_rows, consensus, task_rows)
    run = validator.validate(batches, docs_dir=None)
    return summarize(run.outcomes, {b.name: len(b.frame) for b in batches}, {}), run


def test_clean_pairs_pass_the_gate_with_the_type_suites() -> None:
    spec = pair_spec()
    tasks = [
        ls_task(1, [answer("aligned", 5), answer("aligned", 4), answer("aligned")], record_data(1)),
        ls_task(2, [answer("not_aligned", 1)] * 3, record_data(2, None, "zh-Hant-TW", "x-klingon")),
    ]
    summary, run = validate(spec, tasks)
    assert summary.success, summary.text()
    origins = {outcome.origin for outcome in run.outcomes}
    assert {"annotations.text-pair.json", "consensus.text-pair.json"} <= origins
    checked = {(o.origin, o.column) for o in run.outcomes}
    assert {("consensus.text-pair.json", "source_lang"), ("consensus.text-pair.json", "has_both_sides")} <= checked


def test_a_score_of_6_and_a_malformed_language_fail_the_gate_naming_the_rows() -> None:
    spec = pair_spec()
    bad_score = ls_task(1, [answer("aligned", 4), answer("aligned", 4), answer("aligned", 6)], record_data(1))
    # A task made without ingest's check (an older import, a hand-made task): the gate still refuses its language.
    bad_language = ls_task(2, [answer("partial", 3)] * 3, record_data(2, None, "english", "de"))
    summary, _ = validate(spec, [bad_score, bad_language])
    assert not summary.success
    failed = {(f["batch"], f["type"], f["column"]) for f in summary.failed}
    assert ("annotations", "expect_column_values_to_be_in_set", "score") in failed
    assert ("consensus", "expect_column_values_to_match_regex", "source_lang") in failed
    language = next(f for f in summary.failed if f["column"] == "source_lang")
    assert language["unexpected_count"] == 1 and language["examples"][0]["task_id"] == 2
