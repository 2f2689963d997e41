"""Certification exams on the in-memory fakes: a stratified seeded draw, grading with the pass rule on the interval's
lower bound, certificates that expire, and admission (`quality.min_level`) keeping uncertified labels out of votes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from labelflow.tasks.collect import load_gold
from labelflow.tasks.exams import (
    CERTIFICATE_SCHEMA,
    ITEM_KEY,
    CertificateStore,
    ExamError,
    ExamState,
    create_exam,
    draw_items,
    grade_answers,
    grade_exam,
    load_certificates,
    mark_uncertified,
    valid_certificates,
    with_certified_levels,
)
from labelflow.tasks.spec import SpecError, parse_spec
from tests.unit.fakes import FakeClients
from tests.unit.stage_fixtures import LABELS, collect, ingest, text_spec, upload_reviews

NOW = datetime(2026, 6, 1, tzinfo=UTC)
GOLD_URI = "s3://raw/gold/reviews.csv"


def gold_frame(per_label: dict[str, int]) -> pd.DataFrame:
    """Gold tasks: ids in order, `per_label[label]` of each label."""
    labels = [label for label, count in per_label.items() for _ in range(count)]
    return pd.DataFrame({"task_id": range(1, len(labels) + 1), "gold_label": labels})


def test_the_draw_is_stratified_by_label_and_seeded() -> None:
    gold = gold_frame({"positive": 20, "negative": 10, "neutral": 10})
    drawn = draw_items(gold, 8, seed=3)
    assert drawn["gold_label"].value_counts().to_dict() == {"positive": 4, "negative": 2, "neutral": 2}
    assert drawn["task_id"].is_unique
    assert drawn["task_id"].tolist() == draw_items(gold, 8, seed=3)["task_id"].tolist()
    assert set(drawn["task_id"]) != set(draw_items(gold, 8, seed=4)["task_id"])
    # Largest remainders: 5 of (7, 2, 1) -> 3.5, 1, 0.5 -> 4, 1, 0 (then the remainder goes to the largest share).
    uneven = draw_items(gold_frame({"a": 7, "b": 2, "c": 1}), 5, seed=0)["gold_label"].value_counts().to_dict()
    assert sum(uneven.values()) == 5 and uneven["a"] >= 3 and uneven["b"] == 1


def test_asking_more_items_than_the_gold_set_holds_is_refused() -> None:
    with pytest.raises(ExamError, match="more than the gold set holds: 4 gold"):
        draw_items(gold_frame({"positive": 2, "negative": 2}), 5, seed=0)
    with pytest.raises(ExamError, match="at least 1"):
        draw_items(gold_frame({"positive": 2}), 0, seed=0)


def exam_of(gold_labels: list[str], level: str = "qualified") -> dict[str, Any]:
    items = [
        {"exam_task_id": 100 + n, "main_task_id": n, "source_uri": f"s3://raw/{n}", "gold_label": label}
        for n, label in enumerate(gold_labels)
    ]
    return {"version": 1, "level": level, "project_id": 9, "title": "t · exam", "items": items}


def answers_of(email: str, user_id: int, labels: list[str | None], at: datetime = NOW) -> list[dict[str, Any]]:
    return [
        {"task_id": 100 + n, "annotator_email": email, "label_studio_user_id": user_id, "label": label,
         "updated_at": at}
        for n, label in enumerate(labels)
        if label is not None
    ]  # fmt: skip


def test_grading_passes_when_the_intervals_lower_bound_reaches_the_levels_accuracy() -> None:
    spec = text_spec(quality={"certificate_valid_days": 30})
    gold = [LABELS[n % 3] for n in range(20)]
    wrong = [next(x for x in LABELS if x != label) for label in gold]
    rows = (
        answers_of("All@Example.com", 11, gold)  # 20/20: Wilson lower bound 0.839 >= qualified's 0.75
        + answers_of("most@example.com", 12, gold[:17] + wrong[17:])  # 17/20 = 0.85, lower bound 0.64: not enough
        + answers_of("half@example.com", 13, gold[:10] + [None] * 10)  # unanswered items count as wrong
    )
    certificates = {c["annotator_email"]: c for c in grade_answers(pd.DataFrame(rows), exam_of(gold), spec, NOW)}
    best, most, half = (
        certificates["all@example.com"],
        certificates["most@example.com"],
        certificates["half@example.com"],
    )
    assert (best["correct"], best["passed"], best["level"]) == (20, True, "qualified")
    assert best["score_low"] == pytest.approx(20 / (20 + 1.96**2))
    assert best["expires_at"] == NOW + timedelta(days=30)
    assert (most["correct"], most["score"], most["passed"]) == (17, 0.85, False)
    assert most["score_low"] < 0.75 < most["score_high"]
    assert (half["answered"], half["correct"], half["score"], half["passed"]) == (10, 10, 0.5, False)


def certificate(email: str, level: str, passed: bool, expires: datetime, domain: str = "text-classification") -> dict:
    return {
        "certificate_id": f"{email}-{level}-{expires.isoformat()}",
        "certified_at": expires - timedelta(days=365),
        "expires_at": expires,
        "annotator_email": email,
        "domain": domain,
        "task_type": "text-classification",
        "level": level,
        "passed": passed,
    }


def test_only_passed_certificates_that_have_not_expired_count_and_the_highest_level_wins() -> None:
    ladder = text_spec().quality.ladder
    table = pa.Table.from_pylist(
        [
            certificate("a@x.org", "junior", True, NOW + timedelta(days=10)),
            certificate("a@x.org", "senior", True, NOW + timedelta(days=5)),
            certificate("b@x.org", "expert", True, NOW - timedelta(days=1)),  # expired
            certificate("c@x.org", "expert", False, NOW + timedelta(days=100)),  # failed
        ],
        schema=CERTIFICATE_SCHEMA,
    )
    valid = valid_certificates(table, ladder, NOW)
    assert valid[["annotator_email", "certified_level"]].values.tolist() == [["a@x.org", "senior"]]
    profiles = pd.DataFrame(
        {"annotator_email": ["A@x.org", "b@x.org"], "domain": ["text-classification"] * 2,
         "task_type": ["text-classification"] * 2, "level": ["trainee", "trainee"]}
    )  # fmt: skip
    shown = with_certified_levels(profiles, valid)
    assert shown["certified_level"].tolist() == ["senior", None]


def test_min_level_must_be_a_ladder_level() -> None:
    with pytest.raises(SpecError, match="min_level: 'master' is not a level"):
        parse_spec({**text_spec().model_dump(exclude_none=True), "quality": {"min_level": "master"}})


def test_uncertified_annotations_are_kept_marked_and_do_not_count_in_judge() -> None:
    from labelflow.tasks.quality import judge

    spec = text_spec(quality={"min_level": "qualified", "route_low_agreement": False})
    tasks = pd.DataFrame(
        {"task_id": [1, 2], "source_uri": ["s3://raw/1", "s3://raw/2"], "content_sha256": ["a", "b"],
         "overlap": [2, 2], "deleted": [False, False]}
    )  # fmt: skip
    rows = []
    for task_id in (1, 2):
        for user, email, label in (
            (1, "ok1@x.org", "positive"),
            (2, "ok2@x.org", "positive"),
            (3, "new@x.org", "negative"),
        ):
            rows.append(
                {"task_id": task_id, "annotator_id": user, "annotator_email": email, "label": label, "problem": None,
                 "lead_time_seconds": 5.0, "created_at": NOW, "updated_at": NOW}
            )  # fmt: skip
    annotations = pd.DataFrame(rows)
    ranks = {"ok1@x.org": 2, "ok2@x.org": 3, "new@x.org": 1}
    marked = mark_uncertified(annotations, spec, ranks)
    assert marked.groupby("annotator_email")["uncertified"].all().to_dict() == {
        "new@x.org": True, "ok1@x.org": False, "ok2@x.org": False,
    }  # fmt: skip
    report = judge(tasks, marked, spec)
    consensus = report.consensus.set_index("task_id")
    assert consensus["label"].tolist() == ["positive", "positive"]
    assert consensus["agreement"].tolist() == [1.0, 1.0]  # the dissenting uncertified answers are not votes
    assert consensus["annotations"].tolist() == [2, 2]
    assert report.metrics["uncertified_annotators"] == [{"annotator_email": "new@x.org", "annotations": 2}]
    assert report.metrics["invalid_annotations"] == 0  # marked, not invalid
    # With the two certified people alone below the overlap of 3, nothing would be finished.
    fewer = judge(tasks.assign(overlap=3), marked, spec)
    assert not fewer.consensus["finished"].any()
    # Without min_level the table is unchanged and everyone votes.
    assert "uncertified" not in mark_uncertified(annotations, text_spec(), ranks).columns


def exam_project(count: int = 12) -> tuple[FakeClients, Any, int]:
    """An ingested text project with a gold file naming every text's true label."""
    clients = FakeClients()
    spec = text_spec(quality={"gold": GOLD_URI, "route_low_agreement": False})
    upload_reviews(clients, 0, count)
    lines = ["source_key,label"] + [f"reviews/{LABELS[i % 3]}/{i:03d}.txt,{LABELS[i % 3]}" for i in range(count)]
    clients.store.put_object("raw", "gold/reviews.csv", "\n".join(lines).encode())
    project_id = int(ingest(clients, spec)["project_id"])
    return clients, spec, project_id


def test_an_exam_too_large_for_the_gold_set_creates_nothing() -> None:
    clients, spec, project_id = exam_project(6)
    ls = clients.label_studio_client
    before = dict(ls.projects)
    with pytest.raises(ExamError, match="--items 7 is more than the gold set holds: 6"):
        create_exam(ls, clients.store, spec, project_id, load_gold(clients.store, spec), "qualified", 7)
    assert ls.projects == before
    assert ExamState.load(clients.store, spec).exams == []
    with pytest.raises(ExamError, match="not a level of the ladder"):
        create_exam(ls, clients.store, spec, project_id, load_gold(clients.store, spec), "master", 2)


def test_an_exam_certifies_one_person_and_then_only_certified_labels_count() -> None:
    clients, spec, project_id = exam_project(12)
    ls, store = clients.label_studio_client, clients.store
    exam = create_exam(ls, store, spec, project_id, load_gold(store, spec), "junior", 12, seed=1)
    assert exam["title"] == "reviews · exam junior v1" and exam["items"] == 12
    assert exam["by_label"] == {"negative": 4, "neutral": 4, "positive": 4}
    settings = ls.get_project(exam["project_id"])
    assert settings["label_config"] == ls.get_project(project_id)["label_config"]
    exam_tasks = ls.project_tasks(exam["project_id"])
    assert sorted(t[ITEM_KEY] for t in (task["data"] for task in exam_tasks)) == list(range(1, 13))
    assert all("gold" not in key for task in exam_tasks for key in task["data"])  # the answer never goes there
    good, poor, newcomer = (ls.add_user(f"{name}@labelflow.fake") for name in ("good", "poor", "newcomer"))
    for task in exam_tasks:
        truth = task["data"]["source_key"].split("/")[1]
        ls.annotate(task["id"], truth, good)
        ls.annotate(task["id"], truth if task["data"][ITEM_KEY] <= 3 else "neutral", poor)
    graded = grade_exam(ls, store, spec, now=NOW)
    passed = {c["annotator_email"]: c["passed"] for c in graded["certificates"]}
    assert passed == {"good@labelflow.fake": True, "poor@labelflow.fake": False}
    assert load_certificates(store, spec.pool_domain).num_rows == 2
    # Certificates are parts of their own pool area, next to the evidence, one domain folder each.
    certificates = CertificateStore(store)
    assert certificates.domains() == [spec.pool_domain]
    keys = [o.key for o in store.list_objects("labelflow-state", certificates.domain_prefix(spec.pool_domain))]
    assert len(keys) == 1 and keys[0].startswith("pool/certificates/text-classification/part-")
    # A second exam version is a new project; grading v1 again still reads v1.
    again = create_exam(ls, store, spec, project_id, load_gold(store, spec), "junior", 3, seed=2)
    assert again["version"] == 2 and again["title"].endswith("exam junior v2")

    admitted = spec.model_copy(update={"quality": spec.quality.model_copy(update={"min_level": "junior"})})
    for task in ls.project_tasks(project_id):
        truth = task["data"]["source_key"].split("/")[1]
        for user in (good, poor, newcomer):
            ls.annotate(task["id"], truth if user == good else "neutral", user)
    ls.clock.tick(5)
    summary, _ = collect(clients, admitted.model_copy(update={"overlap": 1}))
    quality = summary["quality"]
    listed = {row["annotator_email"] for row in quality["uncertified_annotators"]}
    assert listed == {"poor@labelflow.fake", "newcomer@labelflow.fake"}
    assert quality["finished_tasks"] == 12
    assert quality["label_distribution"] == {"positive": 4, "negative": 4, "neutral": 4}  # the good person's labels


def test_a_new_certificate_changes_the_collect_shortcuts_fingerprint_under_min_level() -> None:
    from labelflow.tasks.collect_shortcut import inputs_fingerprint

    clients, spec, _ = exam_project(3)
    admitted = spec.model_copy(update={"quality": spec.quality.model_copy(update={"min_level": "junior"})})
    before, plain = inputs_fingerprint(clients.store, admitted, None), inputs_fingerprint(clients.store, spec, None)
    passed = certificate("a@x.org", "junior", True, NOW + timedelta(days=9), domain=spec.pool_domain)
    row = {**passed, "project": spec.name}
    CertificateStore(clients.store).append(pa.Table.from_pylist([row]), spec.pool_domain, spec.slug)
    assert inputs_fingerprint(clients.store, admitted, None) != before
    assert inputs_fingerprint(clients.store, spec, None) == plain  # without min_level certificates do not matter
