"""The talent pool: the ladder, the interval behind a level, profiles across projects, trends, the record's safety."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from labelflow.tasks.levels import (
    DEFAULT_LADDER,
    LadderError,
    Level,
    assign_levels,
    check_ladder,
    combined_interval,
    parse_ladder,
)
from labelflow.tasks.spec import SpecError, parse_spec
from labelflow.tasks.talent_pool import (
    COMPACT_AFTER_PARTS,
    EVIDENCE_SCHEMA,
    REPLACED_GRACE_SECONDS,
    TalentPool,
    build_profiles,
    periods,
)
from tests.unit.fakes import FakeClients, FakeObjectStore
from tests.unit.stage_fixtures import annotate_all, collect, ingest, text_spec, upload_reviews

START = datetime(2026, 1, 1, tzinfo=UTC)


def snapshot(email: str, project: str, **figures: Any) -> dict[str, Any]:
    """One evidence row with defaults a test overrides."""
    at = figures.pop("at", START)
    row = {
        "evidence_id": uuid.uuid4().hex,
        "collected_at": at,
        "project": project,
        "project_id": 1,
        "task_type": "text-classification",
        "domain": "zh-sentiment",
        "annotator_email": email,
        "label_studio_user_id": 7,
        "annotations": 100,
        "invalid_annotations": 0,
        "gold_answered": 0,
        "gold_correct": 0.0,
        "agreement": 0.9,
        "estimated_accuracy": None,
        "median_lead_time_seconds": 10.0,
        "first_annotation_at": at - timedelta(hours=1),
        "last_annotation_at": at,
        "guideline_version": None,
    }
    row.update(figures)
    return row


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=EVIDENCE_SCHEMA)


# --- the ladder ------------------------------------------------------------------------------------------------------


def test_the_default_ladder_has_five_increasing_levels() -> None:
    assert [level.name for level in check_ladder(DEFAULT_LADDER)] == [
        "trainee", "junior", "qualified", "senior", "expert"
    ]  # fmt: skip
    accuracies = [level.min_accuracy for level in DEFAULT_LADDER]
    assert accuracies == sorted(accuracies) and len(set(accuracies)) == 5


@pytest.mark.parametrize(
    "levels, words",
    [
        ([{"name": "a", "min_accuracy": 0.5}, {"name": "b", "min_accuracy": 0.5}], "'b' asks min_accuracy 0.5"),
        (
            [{"name": "a", "min_evidence": 50}, {"name": "b", "min_accuracy": 0.9, "min_evidence": 10}],
            "'b' asks min_evidence 10, less than 'a'",
        ),
        ([{"name": "a"}, {"name": "a", "min_accuracy": 0.9}], "names a level twice"),
        ([], "at least one level"),
    ],
)
def test_a_ladder_whose_levels_do_not_increase_is_refused_in_one_line(levels: list[dict], words: str) -> None:
    with pytest.raises(LadderError) as caught:
        parse_ladder(levels)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    if levels:
        with pytest.raises(SpecError, match=r"quality\.ladder"):
            text_spec(quality={"ladder": levels})


def test_a_spec_names_its_domain_and_defaults_to_its_task_type() -> None:
    assert text_spec(domain="ZH-Sentiment").pool_domain == "zh-sentiment"
    assert text_spec().pool_domain == "text-classification"
    with pytest.raises(SpecError, match="domain"):
        text_spec(domain="../escape")


# --- interval and level ---------------------------------------------------------------------------------------------


def test_the_model_estimate_narrows_the_gold_interval_and_lifts_an_unlucky_good_annotator() -> None:
    # The case: a 95 % annotator who scored 34 of 40 on gold, and whom Dawid-Skene puts at 95 % on 360 more.
    gold_only = combined_interval(np.array([34.0]), np.array([40]), np.array([np.nan]), np.array([0]))
    both = combined_interval(np.array([34.0]), np.array([40]), np.array([0.95]), np.array([360]))
    assert gold_only[0][0] == pytest.approx(0.85)
    assert both[2][0] - both[1][0] < (gold_only[2][0] - gold_only[1][0]) / 2  # far narrower
    assert 0.85 < both[0][0] < 0.95  # gold pulls it down: the DS estimate does not simply replace gold
    levels = assign_levels(list(DEFAULT_LADDER), np.array([400, 400]), np.array([gold_only[1][0], both[1][0]]),
                           np.array([0.9, 0.9]))  # fmt: skip
    assert [DEFAULT_LADDER[i].name for i in levels] == ["junior", "senior"]  # gold alone: 71 % at the least


def test_levels_follow_the_lower_bound_so_little_evidence_keeps_a_perfect_score_low() -> None:
    point, low, _ = combined_interval(np.array([5.0, 200.0]), np.array([5, 200]), np.array([np.nan] * 2), [0, 0])
    assert point[0] == point[1] == 1.0
    ranks = assign_levels(list(DEFAULT_LADDER), np.array([300, 300]), low, np.array([1.0, 1.0]))
    assert DEFAULT_LADDER[ranks[0]].name == "trainee"  # 5 of 5: the interval reaches down to 57 %
    assert DEFAULT_LADDER[ranks[1]].name == "expert"


def test_each_criterion_holds_a_person_back_and_a_missed_rung_stops_the_climb() -> None:
    ladder = list(DEFAULT_LADDER)
    ranks = assign_levels(
        ladder,
        evidence=np.array([10, 500, 500, 500]),
        accuracy_low=np.array([0.99, 0.99, 0.99, np.nan]),
        agreement=np.array([0.99, 0.55, np.nan, 0.99]),
    )
    assert [ladder[i].name for i in ranks] == ["trainee", "junior", "trainee", "trainee"]


# --- profiles -------------------------------------------------------------------------------------------------------


def test_two_projects_in_one_domain_make_one_profile_from_each_projects_latest_snapshot() -> None:
    rows = [
        snapshot("Ann@x.org", "p1", gold_answered=20, gold_correct=10.0, annotations=50),  # superseded below
        snapshot(
            "ann@x.org",
            "p1",
            gold_answered=40,
            gold_correct=38.0,
            annotations=300,
            estimated_accuracy=0.95,
            at=START + timedelta(days=3),
        ),
        snapshot(
            "ann@x.org",
            "p2",
            gold_answered=40,
            gold_correct=37.0,
            annotations=200,
            estimated_accuracy=0.93,
            at=START + timedelta(days=5),
        ),
        snapshot("bob@x.org", "p2", gold_answered=40, gold_correct=30.0, annotations=200, agreement=0.7),
        snapshot("ann@x.org", "p3", task_type="image-classification", domain="x-ray", annotations=10),
    ]
    profiles = build_profiles(table(rows)).set_index(["annotator_email", "domain"])
    assert len(profiles) == 3
    ann = profiles.loc[("ann@x.org", "zh-sentiment")]
    assert ann["projects"] == 2 and ann["collects"] == 3
    assert ann["evidence"] == 500 and ann["gold_answered"] == 80 and ann["gold_accuracy"] == pytest.approx(75 / 80)
    assert ann["ds_annotations"] == 420  # the non-gold annotations Dawid-Skene judged: 260 + 160
    assert ann["estimated_accuracy"] == pytest.approx((0.95 * 260 + 0.93 * 160) / 420)
    assert ann["accuracy_low"] < ann["accuracy"] < ann["accuracy_high"]
    bob = profiles.loc[("bob@x.org", "zh-sentiment")]
    assert ann["level_rank"] > bob["level_rank"]
    assert profiles.loc[("ann@x.org", "x-ray")]["task_type"] == "image-classification"


def test_the_trend_reads_the_work_between_snapshots() -> None:
    rows, correct = [], 0.0
    for week in range(6):
        correct += 20 * (0.6 + 0.07 * week)  # 20 gold answers a week, better each week
        at = START + timedelta(days=7 * week)
        rows.append(snapshot("ann@x.org", "p1", gold_answered=20 * (week + 1), gold_correct=correct, at=at))
        rows.append(snapshot("bob@x.org", "p1", gold_answered=20 * (week + 1), gold_correct=16.0 * (week + 1), at=at))
    work = periods(table(rows))
    assert len(work) == 12 and work["trials"].eq(20).all()
    profiles = build_profiles(table(rows)).set_index("annotator_email")
    assert profiles.loc["ann@x.org", "trend"] == "improving"
    assert profiles.loc["ann@x.org", "trend_per_30_days"] == pytest.approx(0.07 * 30 / 7, rel=1e-6)
    assert profiles.loc["bob@x.org", "trend"] == "steady"
    one = build_profiles(table(rows[:1]))
    assert one.loc[0, "trend"] == "–" and np.isnan(one.loc[0, "trend_per_30_days"])


# --- the record -----------------------------------------------------------------------------------------------------


def ids(pool: TalentPool, domain: str = "zh-sentiment") -> list[str]:
    return sorted(pool.read(domain).column("evidence_id").to_pylist())


def test_parts_are_compacted_when_they_pile_up_and_nothing_is_lost_or_doubled() -> None:
    store = FakeObjectStore()
    pool = TalentPool(store)
    written = []
    for i in range(COMPACT_AFTER_PARTS + 1):
        row = snapshot(f"p{i}@x.org", "p1")
        written.append(row["evidence_id"])
        pool.append(table([row]), "zh-sentiment", "project")
    keys = store.keys("labelflow-state", "pool/evidence/zh-sentiment/")
    assert sum("compacted-" in key for key in keys) == 1
    assert ids(pool) == sorted(written)
    # Once the grace period has passed, the replaced parts are deleted and only the compacted part is left.
    pool.maybe_compact("zh-sentiment", now=datetime.now(UTC).timestamp() + REPLACED_GRACE_SECONDS + 1)
    keys = store.keys("labelflow-state", "pool/evidence/zh-sentiment/")
    assert len(keys) == 1 and "compacted-" in keys[0]
    assert ids(pool) == sorted(written)


class InterleavedPool(TalentPool):
    """A pool whose compaction lets another writer append (and compact) between its reads and its write."""

    def __init__(self, store: FakeObjectStore, other: TalentPool, rows: list[dict[str, Any]]) -> None:
        super().__init__(store)
        self.other, self.rows = other, rows

    def _write(self, table_: pa.Table, key: str, replaces: list[str] | None = None) -> str:
        if replaces is not None:
            for row in self.rows:  # the other collect finishes while this compaction holds its listing
                self.other.append(table([row]), "zh-sentiment", "other-project")
            self.rows = []
        return super()._write(table_, key, replaces)


@pytest.mark.parametrize("others", [1, COMPACT_AFTER_PARTS + 2], ids=["one part meanwhile", "a compaction meanwhile"])
def test_a_compaction_never_loses_a_part_written_meanwhile_nor_doubles_rows(others: int) -> None:
    store = FakeObjectStore()
    plain = TalentPool(store)
    before = [snapshot(f"a{i}@x.org", "p1") for i in range(COMPACT_AFTER_PARTS)]
    for row in before:
        plain.append(table([row]), "zh-sentiment", "p1")
    meanwhile = [snapshot(f"b{i}@x.org", "p2") for i in range(others)]
    compactor = InterleavedPool(store, TalentPool(store), meanwhile)
    assert compactor.compact("zh-sentiment", force=True) is not None
    everything = sorted(row["evidence_id"] for row in before + meanwhile)
    assert ids(plain) == everything
    later = datetime.now(UTC).timestamp() + REPLACED_GRACE_SECONDS + 1
    plain.maybe_compact("zh-sentiment", now=later)
    plain.maybe_compact("zh-sentiment", now=later)
    assert ids(plain) == everything
    assert len(store.keys("labelflow-state", "pool/evidence/zh-sentiment/")) == 1


def test_an_empty_pool_reads_as_no_profiles() -> None:
    pool = TalentPool(FakeObjectStore())
    assert pool.read().num_rows == 0 and pool.domains() == []
    assert build_profiles(pool.read()).empty


# --- from a collect -------------------------------------------------------------------------------------------------


def test_every_collect_adds_each_annotators_evidence_to_the_pool() -> None:
    clients = FakeClients()
    spec = text_spec(domain="reviews-en", dataset={"name": "reviews"})
    upload_reviews(clients, 0, 12)
    project_id = ingest(clients, spec)["project_id"]
    users = annotate_all(clients, project_id, annotators=3)
    collect(clients, spec)
    upload_reviews(clients, 12, 6)
    ingest(clients, spec)
    ls = clients.label_studio_client
    for task in ls.project_tasks(project_id):
        if not task["annotations"]:
            for user in users:
                ls.annotate(task["id"], task["data"]["source_key"].split("/")[1], user)
    ls.clock.tick(5)
    collect(clients, spec, full=True)
    evidence = TalentPool(clients.store).read("reviews-en").to_pandas()
    assert len(evidence) == 6 and evidence["collected_at"].nunique() == 2
    assert set(evidence["project"]) == {"reviews"} and set(evidence["task_type"]) == {"text-classification"}
    assert evidence["annotator_email"].str.endswith("@labelflow.fake").all()
    assert evidence["label_studio_user_id"].notna().all() and evidence["agreement"].eq(1.0).all()
    assert (evidence["first_annotation_at"] <= evidence["last_annotation_at"]).all()
    assert "guideline_version" in evidence.columns
    profiles = build_profiles(evidence)
    assert len(profiles) == 3 and profiles["collects"].eq(2).all()
    assert profiles["evidence"].tolist() == [18, 18, 18]  # the latest snapshot, not the sum of both


def test_published_annotations_carry_pseudonyms_unless_the_spec_asks_for_ids() -> None:
    from labelflow.tasks.dataset import raw_annotations

    annotations = pd.DataFrame(
        {
            "task_id": [1, 1, 2],
            "annotation_id": [10, 11, 12],
            "annotator_id": [5, 6, 5],
            "annotator_email": ["Ann@x.org", "bob@x.org", "ann@x.org"],
        }
    )
    hidden = raw_annotations(annotations, pd.Series([1, 2]), pseudonym_salt="reviews")
    assert not hidden["annotator_email"].str.contains("@").any()
    assert hidden["annotator_email"][0] == hidden["annotator_email"][2] != hidden["annotator_email"][1]
    assert hidden["annotator_id"][0] == hidden["annotator_id"][2] != hidden["annotator_id"][1]
    assert not set(hidden["annotator_id"]) & {5, 6}
    again = raw_annotations(annotations, pd.Series([1, 2]), pseudonym_salt="reviews")
    assert again.equals(hidden)  # stable from version to version
    other = raw_annotations(annotations, pd.Series([1, 2]), pseudonym_salt="another-dataset")
    assert other["annotator_email"][0] != hidden["annotator_email"][0]
    shown = raw_annotations(annotations, pd.Series([1, 2]))
    assert shown["annotator_email"].tolist() == ["Ann@x.org", "bob@x.org", "ann@x.org"]
    spec = parse_spec({"name": "x", "source": "s3://src/a", "task": "text-classification", "labels": ["a"],
                       "dataset": {"name": "x"}})  # fmt: skip
    assert spec.dataset is not None and spec.dataset.include_annotator_ids is False


def test_a_ladder_level_rejects_unknown_fields() -> None:
    with pytest.raises(LadderError, match="ladder level 0"):
        parse_ladder([{"name": "trainee", "min_acuracy": 0.5}])
    assert parse_ladder([{"name": "a"}, {"name": "b", "min_accuracy": 0.5}])[1] == Level(name="b", min_accuracy=0.5)


def test_the_cli_reads_a_ladder_from_a_list_a_mapping_or_a_spec(tmp_path: Path) -> None:
    from labelflow.cli.annotators import _ladder

    levels = [{"name": "new", "min_accuracy": 0.0}, {"name": "proven", "min_accuracy": 0.8, "min_evidence": 30}]
    files = {
        "list.yaml": levels,
        "mapping.yaml": {"ladder": levels},
        "spec.yaml": {"name": "x", "task": "text-classification", "quality": {"ladder": levels}},
    }
    for name, body in files.items():
        (tmp_path / name).write_text(yaml.safe_dump(body), encoding="utf-8")
        assert [level.name for level in _ladder(tmp_path / name) or []] == ["new", "proven"]
    (tmp_path / "plain-spec.yaml").write_text(yaml.safe_dump({"name": "x", "task": "text-classification"}))
    assert _ladder(tmp_path / "plain-spec.yaml") == list(DEFAULT_LADDER)
    (tmp_path / "down.yaml").write_text(yaml.safe_dump(list(reversed(levels))), encoding="utf-8")
    with pytest.raises(LadderError, match=r"down\.yaml: levels must increase"):
        _ladder(tmp_path / "down.yaml")
    with pytest.raises(LadderError, match="cannot read the ladder"):
        _ladder(tmp_path / "missing.yaml")
