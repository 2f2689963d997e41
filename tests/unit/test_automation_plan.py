"""Automated labeling's decisions in one collect: wait, label with audits, stop on audit disagreement."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labelflow.tasks.automation import AutomationRecord, audit_draw, plan_automation
from labelflow.tasks.spec import AutomateSpec

VERSION = "models:/reviews-baseline/1"


def consensus_table(human: dict[int, str], unlabeled: list[int]) -> pd.DataFrame:
    """A judged consensus: finished human rows, and tasks nobody has worked on."""
    rows = [
        {"task_id": t, "label": label, "finished": True, "flagged": False, "annotations": 3, "reviewed": False,
         "method": "majority", "confidence": 1.0, "flag_reason": None}
        for t, label in human.items()
    ] + [
        {"task_id": t, "label": None, "finished": False, "flagged": False, "annotations": 0, "reviewed": False,
         "method": None, "confidence": np.nan, "flag_reason": None}
        for t in unlabeled
    ]  # fmt: skip
    return pd.DataFrame(rows)


def scores_table(predicted: dict[int, str | None], confidence: dict[int, float]) -> pd.DataFrame:
    """The model's label and top probability per task."""
    ids = sorted(predicted)
    return pd.DataFrame(
        {"task_id": ids, "predicted": [predicted[t] for t in ids], "confidence": [confidence[t] for t in ids]}
    )


def confident_world(human_count: int = 200, unlabeled_count: int = 400) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Human labels where the model is right when sure (>= 0.9) and a coin flip at 0.8-0.9 (overconfident there)."""
    rng = np.random.default_rng(1)
    human, predicted, confidence = {}, {}, {}
    for t in range(human_count):
        sure = t % 2 == 0
        confidence[t] = float(rng.uniform(0.9, 1.0) if sure else rng.uniform(0.8, 0.9))
        human[t] = "pos" if t % 4 < 2 else "neg"
        predicted[t] = human[t] if sure or rng.random() < 0.5 else ("neg" if human[t] == "pos" else "pos")
    unlabeled = list(range(1000, 1000 + unlabeled_count))
    for t in unlabeled:
        sure = t % 2 == 0
        confidence[t] = float(rng.uniform(0.9, 1.0) if sure else rng.uniform(0.8, 0.9))
        predicted[t] = "pos"
    return consensus_table(human, unlabeled), scores_table(predicted, confidence)


def test_automation_waits_for_min_human_labels() -> None:
    consensus, scores = confident_world(human_count=40)
    plan = plan_automation(AutomateSpec(target_accuracy=0.9, min_human_labels=50), 0, consensus, scores, VERSION,
                           AutomationRecord())  # fmt: skip
    assert plan.outcome.status == "waiting"
    assert "40 of the 50 human consensus labels" in plan.outcome.reason
    assert plan.hold == [] and not (plan.consensus["method"] == "model").any()


def test_automation_labels_confident_tasks_and_keeps_audits_for_people() -> None:
    consensus, scores = confident_world()
    automate = AutomateSpec(target_accuracy=0.9, audit_share=0.1, min_human_labels=100)
    plan = plan_automation(automate, 0, consensus, scores, VERSION, AutomationRecord())
    outcome = plan.outcome
    assert outcome.status == "running", outcome.reason
    machine = plan.consensus[plan.consensus["method"] == "model"]
    unlabeled = np.arange(1000, 1400)
    audits = set(unlabeled[audit_draw(unlabeled, 0.1, 0)].tolist())
    sure = {t for t in unlabeled.tolist() if t % 2 == 0}
    machine_ids = set(machine["task_id"])
    # Every sure task not drawn for audit is the model's; the threshold may also admit a few of the least unsure
    # ones, as long as the pooled accuracy above it still reaches the target.
    assert sure - audits <= machine_ids and not machine_ids & audits
    assert len(machine_ids - sure) < 0.15 * len(machine_ids)
    assert outcome.machine_labeled == len(machine_ids) and outcome.audit_tasks > 0
    assert (machine["model_version"] == VERSION).all() and machine["finished"].all()
    assert plan.hold == sorted(machine_ids) and plan.release == []
    # The threshold separates the sure half from the coin flips, and its evidence is the sure human labels.
    assert outcome.threshold is not None and outcome.accuracy_low is not None and outcome.accuracy_low >= 0.9
    assert outcome.ece_calibrated is not None and outcome.ece_calibrated <= outcome.ece_raw
    # The next collect keeps the same machine rows without holding them again.
    again = plan_automation(automate, 0, consensus, scores, VERSION, plan.record)
    assert again.hold == [] and again.release == [] and again.outcome.machine_labeled == outcome.machine_labeled


def test_audit_disagreements_stop_automation_for_the_version() -> None:
    consensus, scores = confident_world()
    automate = AutomateSpec(target_accuracy=0.95, audit_share=0.5, min_human_labels=100)
    first = plan_automation(automate, 0, consensus, scores, VERSION, AutomationRecord())
    assert first.outcome.status == "running"
    # People label the audit tasks, disagreeing with the model (which said pos) on every one.
    audits = consensus[consensus["task_id"].ge(1000)].copy()
    drawn = audit_draw(audits["task_id"].to_numpy(), 0.5, 0) & (audits["task_id"] % 2 == 0).to_numpy()
    labeled = consensus.copy()
    at = labeled["task_id"].isin(audits.loc[drawn, "task_id"])
    labeled.loc[at, ["label", "finished", "annotations", "method"]] = ["neg", True, 3, "majority"]
    second = plan_automation(automate, 0, labeled, scores, VERSION, first.record)
    assert second.outcome.status == "stopped"
    assert second.outcome.audit_disagreements == int(at.sum()) > 0
    assert "fell below the target 95.0%" in second.outcome.reason
    assert not (second.consensus["method"] == "model").any()
    assert second.release == first.record.held and second.record.held == []
    # A later collect with the same version stays stopped; a new version is calibrated afresh, on labels that now
    # include the audits its (here identical) predictions got wrong, so it waits.
    third = plan_automation(automate, 0, labeled, scores, VERSION, second.record)
    assert third.outcome.status == "stopped" and third.release == []
    fresh = plan_automation(automate, 0, labeled, scores, "models:/reviews-baseline/2", second.record)
    assert fresh.outcome.status == "waiting" and "no confidence threshold" in fresh.outcome.reason


def test_failed_items_go_to_people_and_are_counted() -> None:
    consensus, scores = confident_world()
    scores.loc[scores["task_id"].isin([1000, 1002, 1004]), ["predicted", "confidence"]] = [None, np.nan]
    plan = plan_automation(AutomateSpec(target_accuracy=0.9, audit_share=0.0, min_human_labels=100), 0, consensus,
                           scores, VERSION, AutomationRecord())  # fmt: skip
    assert plan.outcome.model_failures == 3
    assert (
        not plan.consensus["task_id"]
        .isin([1000, 1002, 1004])
        .pipe(lambda at: (plan.consensus.loc[at, "method"] == "model").any())
    )


def test_no_threshold_reaching_the_target_waits() -> None:
    consensus, scores = confident_world()
    plan = plan_automation(AutomateSpec(target_accuracy=0.999, min_human_labels=100), 0, consensus, scores, VERSION,
                           AutomationRecord())  # fmt: skip
    assert plan.outcome.status == "waiting" and "no confidence threshold" in plan.outcome.reason
    assert plan.outcome.reliability  # the diagram is shown even while it waits


def test_audits_stop_automation_on_their_own_interval_even_when_the_pooled_accuracy_holds() -> None:
    consensus, scores = confident_world(human_count=400)
    automate = AutomateSpec(target_accuracy=0.9, audit_share=0.5, min_human_labels=100)
    first = plan_automation(automate, 0, consensus, scores, VERSION, AutomationRecord())
    assert first.outcome.status == "running" and first.outcome.threshold is not None
    # Twelve audits, eight of them wrong: too few to pull the pooled accuracy (200-odd right) below 0.9, but
    # the audits alone say the published labels are far worse than the target.
    unlabeled = consensus.loc[consensus["task_id"].ge(1000), "task_id"].to_numpy()
    sure = unlabeled[(unlabeled % 2 == 0) & audit_draw(unlabeled, 0.5, 0)][:12]
    labeled = consensus.copy()
    for i, task_id in enumerate(sure):
        label = "neg" if i < 8 else "pos"  # the model said pos on every one
        labeled.loc[labeled["task_id"] == task_id, ["label", "finished", "annotations", "method"]] = [
            label, True, 3, "majority"
        ]  # fmt: skip
    second = plan_automation(automate, 0, labeled, scores, VERSION, first.record)
    assert second.outcome.measured_accuracy is not None and second.outcome.measured_accuracy >= 0.9
    assert second.outcome.status == "stopped" and "audits' own interval" in second.outcome.reason
    assert second.outcome.audits_done == 12 and second.outcome.audit_disagreements == 8
