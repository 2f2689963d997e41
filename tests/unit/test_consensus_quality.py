"""Consensus, normalisation of Label Studio results, and the judge step, on plain data (no server)."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from labelflow.tasks.annotations import AnnotationNormalizer, annotations_table, tasks_table
from labelflow.tasks.consensus import box_consensus, dawid_skene, majority_vote, span_consensus
from labelflow.tasks.quality import GoldError, judge, parse_gold
from labelflow.tasks.simulate import SimulatedAnnotator, build_annotators, plan, simulated_votes, truth_from_key
from labelflow.tasks.spec import parse_spec

LABELS = ["cat", "dog", "bird"]


def votes_frame(rows: list[tuple[int, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["task_id", "annotator_id", "label"])


def test_majority_vote_tie_policies() -> None:
    votes = votes_frame([(1, 1, "cat"), (1, 2, "cat"), (1, 3, "dog"), (2, 1, "dog"), (2, 2, "cat")])
    flagged = majority_vote(votes, LABELS, tie_policy="flag")
    assert flagged.labels == ["cat", None]
    assert flagged.confidence[0] == pytest.approx(2 / 3)
    assert list(flagged.tie) == [False, True]
    assert majority_vote(votes, LABELS, tie_policy="first").labels == ["cat", "cat"]  # spec order: cat before dog
    random_pick = majority_vote(votes, LABELS, tie_policy="random", seed=1).labels[1]
    assert random_pick in {"cat", "dog"}
    assert majority_vote(votes, LABELS, tie_policy="random", seed=1).labels[1] == random_pick  # stable


def test_dawid_skene_recovers_truth_better_than_majority_with_a_spammer() -> None:
    votes, truth_labels = simulated_votes(1500, [0.95, 0.8, 0.6, None], LABELS, seed=4)
    truth = np.array(truth_labels)
    mv = majority_vote(votes, LABELS, tie_policy="random")
    ds = dawid_skene(votes, LABELS, tie_policy="random")
    mv_accuracy = float(np.mean(np.array(mv.labels) == truth))
    ds_accuracy = float(np.mean(np.array(ds.labels) == truth))
    assert ds_accuracy >= mv_accuracy + 0.03
    assert ds.annotator_confusion is not None
    # The estimated confusion matrices rank the annotators in their true order, the spammer last.
    diagonal = {a: float(np.mean(np.diag(m))) for a, m in ds.annotator_confusion.items()}
    assert sorted(diagonal, key=diagonal.get, reverse=True) == [0, 1, 2, 3]
    assert np.all((ds.confidence > 0) & (ds.confidence <= 1))


def test_box_consensus_keeps_boxes_most_annotators_drew() -> None:
    box = {"label": "car", "x": 10.0, "y": 10.0, "width": 50.0, "height": 30.0, "rotation": 0.0}
    shifted = {**box, "x": 12.0}
    stray = {**box, "x": 300.0, "label": "bus"}
    merged, confidence = box_consensus({1: [box], 2: [shifted, stray], 3: [box]})
    assert len(merged) == 1
    assert merged[0]["label"] == "car" and merged[0]["x"] == 10.0 and merged[0]["support"] == 3
    assert 0.9 < confidence <= 1.0
    assert box_consensus({1: [], 2: [], 3: [box]}) == ([], pytest.approx(2 / 3))


def test_span_consensus_votes_on_exact_spans() -> None:
    per = {"start": 0, "end": 4, "label": "PER", "text": "Anna"}
    merged, confidence = span_consensus({1: [per], 2: [per], 3: [{**per, "end": 3}]})
    assert merged == [{**per, "support": 2, "confidence": pytest.approx(2 / 3)}]
    assert confidence == pytest.approx(2 / 3)


def spec_for(task: str, labels: list[str], **extra: object) -> object:
    body = {"name": "t", "source": "s3://raw/x/", "task": task, "labels": labels, "overlap": 3, **extra}
    return parse_spec(body)


def ls_task(task_id: int, annotations: list[dict], data: dict | None = None, overlap: int = 3) -> dict:
    return {
        "id": task_id,
        "data": data
        or {"text": f"text {task_id}", "source_uri": f"s3://raw/x/{task_id}.txt", "content_sha256": f"h{task_id}"},
        "annotations": annotations,
        "updated_at": "2026-11-23T10:00:00.000001Z",
        "overlap": overlap,
    }


def choice(annotation_id: int, user: int, label: str, cancelled: bool = False) -> dict:
    return {
        "id": annotation_id,
        "completed_by": user,
        "was_cancelled": cancelled,
        "lead_time": 4.5,
        "created_at": "2026-11-23T10:00:00Z",
        "updated_at": "2026-11-23T10:00:00Z",
        "result": []
        if cancelled
        else [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}],
    }


def test_normalizer_classification_keeps_bad_labels_marked_and_skips_cancelled() -> None:
    spec = spec_for("text-classification", LABELS)
    normalizer = AnnotationNormalizer(spec, 7, {1: "a@x", 2: "b@x"}, "label")
    out = normalizer.task(
        ls_task(5, [choice(1, 1, "cat"), choice(2, 2, "unicorn"), choice(3, 2, "dog", cancelled=True)]), seq=9
    )
    assert out.task["annotations"] == 2 and out.task["cancelled"] == 1 and out.task["text"] == "text 5"
    rows = {r["annotation_id"]: r for r in out.annotations}
    assert rows[1]["label"] == "cat" and rows[1]["problem"] is None and rows[1]["annotator_email"] == "a@x"
    assert rows[2]["label"] == "unicorn" and "not in the spec's label set" in rows[2]["problem"]
    assert annotations_table(out.annotations).num_rows == 2
    assert tasks_table([out.task]).num_rows == 1


def test_normalizer_boxes_in_source_pixels_and_spans() -> None:
    spec = spec_for("object-detection", ["car"])
    normalizer = AnnotationNormalizer(spec, 1, {}, "label")
    box = {
        "id": "r1",
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 640,
        "original_height": 480,
        "value": {"x": 10, "y": 50, "width": 25, "height": 10, "rotation": 0, "rectanglelabels": ["car"]},
    }
    annotation = {**choice(1, 1, "x"), "result": [box]}
    data = {"image": "s3://raw/x/1.png", "source_uri": "s3://raw/x/1.png", "image_width": 640, "image_height": 480}
    region = normalizer.task(ls_task(1, [annotation], data), 1).annotations[0]["regions"][0]
    assert (region["x"], region["y"], region["width"], region["height"]) == (64.0, 240.0, 160.0, 48.0)
    ner = AnnotationNormalizer(spec_for("ner", ["PER"]), 1, {}, "label")
    span = {
        "id": "s",
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "value": {"start": 0, "end": 4, "text": "Anna", "labels": ["PER"]},
    }
    row = ner.task(ls_task(2, [{**choice(2, 1, "x"), "result": [span]}]), 1).annotations[0]
    assert row["regions"][0]["start"] == 0 and row["regions"][0]["text"] == "Anna" and row["label"] is None


def judge_inputs(spec: object, tasks: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    normalizer = AnnotationNormalizer(spec, 1, {u: f"user{u}@x" for u in range(1, 10)}, "label")
    outs = [normalizer.task(t, 1) for t in tasks]
    task_rows = tasks_table([o.task for o in outs]).to_pandas()
    annotation_rows = annotations_table([r for o in outs for r in o.annotations]).to_pandas()
    return task_rows, annotation_rows


def test_judge_flags_low_agreement_and_invalid_and_scores_annotators() -> None:
    spec = spec_for(
        "text-classification",
        LABELS,
        quality={"min_agreement": 0.6, "min_annotations_for_tier": 1, "min_gold_for_tier": 1},
    )
    tasks = [
        ls_task(1, [choice(1, 1, "cat"), choice(2, 2, "cat"), choice(3, 3, "cat")]),
        ls_task(2, [choice(4, 1, "cat"), choice(5, 2, "dog"), choice(6, 3, "bird")]),  # three-way split
        ls_task(3, [choice(7, 1, "dog"), choice(8, 2, "dog")]),  # unfinished (2 of 3)
        ls_task(4, [choice(9, 1, "dog"), choice(10, 2, "dog"), choice(11, 3, "zebra")]),  # invalid label
    ]
    gold = parse_gold(b"content_sha256,label\nh1,cat\nh2,bird\n", "gold.csv", LABELS)
    report = judge(*judge_inputs(spec, tasks), spec, gold)
    c = report.consensus.set_index("task_id")
    assert c.loc[1, "label"] == "cat" and c.loc[1, "agreement"] == 1.0 and not c.loc[1, "flagged"]
    assert c.loc[2, "flagged"] and "tied vote" in c.loc[2, "flag_reason"]
    assert not c.loc[3, "finished"] and not c.loc[3, "flagged"]
    assert c.loc[4, "flagged"] and "invalid" in c.loc[4, "flag_reason"] and not c.loc[4, "finished"]
    assert report.metrics["finished_tasks"] == 2 and report.metrics["invalid_annotations"] == 1
    people = report.annotators.set_index("annotator_id")
    assert people.loc[1, "gold_accuracy"] == 0.5  # cat on h1 (right), cat on h2 (wrong)
    assert people.loc[3, "gold_accuracy"] == 1.0
    assert people.loc[3, "tier"] == "expert" and people.loc[1, "tier"] == "trainee"


def test_reviewer_annotation_finishes_a_task_and_sets_its_label() -> None:
    spec = spec_for("text-classification", LABELS, quality={"reviewers": ["USER9@x"]})
    tasks = [ls_task(1, [choice(1, 1, "cat"), choice(2, 9, "dog")])]
    c = judge(*judge_inputs(spec, tasks), spec).consensus.iloc[0]
    assert c["finished"] and c["reviewed"] and c["label"] == "dog" and c["method"] == "review"


def test_gold_file_errors_are_clear() -> None:
    with pytest.raises(GoldError, match="label"):
        parse_gold(b"source_uri\ns3://a/b\n", "g.csv", LABELS)
    with pytest.raises(GoldError, match="not in the spec's label set"):
        parse_gold(b'{"source_key": "a", "label": "wolf"}\n', "g.jsonl", LABELS)


def test_simulator_plan_respects_overlap_and_existing_annotations() -> None:
    annotators = build_annotators([0.9, 0.7, 0.5], spammers=1)
    users = {a.email: i + 1 for i, a in enumerate(annotators)}
    tasks = [{"id": 1, "annotations": [{"completed_by": 1}]}, {"id": 2, "annotations": []}, {"id": 3}]
    work = plan(tasks, {1: "cat", 2: "dog"}, annotators, users, LABELS, per_task=3, seed=0)
    per_task = {t: [w for w in work.items if w[0] == t] for t in (1, 2)}
    assert len(per_task[1]) == 2 and all(users[w[1].email] != 1 for w in per_task[1])
    assert len(per_task[2]) == 3 and work.skipped_no_truth == 1
    assert truth_from_key("s3://raw/digits/dog/1.png", LABELS, None) == "dog"
    assert truth_from_key("s3://raw/x/1-cat.png", LABELS, r"-(?P<label>\w+)\.png$") == "cat"
    perfect = SimulatedAnnotator("p@x", 1.0)
    assert all(perfect.answer("cat", LABELS, random.Random(i)) == "cat" for i in range(20))
