"""Judge a project's collected annotations: finished tasks, agreement, consensus, flags, gold, annotator tiers."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from labelflow.tasks.agreement import mean_or_none
from labelflow.tasks.escalation import expert_decided
from labelflow.tasks.guidelines import outdated_mask, outdated_pending, votes_needed, with_outdated_reasons
from labelflow.tasks.judge_agreement import judge_agreement_metric
from labelflow.tasks.spec import ProjectSpec
from labelflow.tasks.task_types.record_task import record_of


@dataclass
class QualityReport:
    """Everything the collect stage concludes about a project's annotations."""

    consensus: pd.DataFrame  # one row per task
    annotators: pd.DataFrame  # one row per annotator
    pairwise: pd.DataFrame  # one row per annotator pair
    metrics: dict[str, Any] = field(default_factory=dict)

    def flagged(self) -> pd.DataFrame:
        """Finished tasks that must not be published as they are."""
        return self.consensus[self.consensus["flagged"]]


class GoldError(ValueError):
    """The gold-label file cannot be used."""


def parse_gold(payload: bytes, name: str, labels: list[str] | None) -> pd.DataFrame:
    """Gold labels from CSV or JSON Lines: a `label` column and one of `source_uri`, `source_key`, `content_sha256`.

    `labels`: the spec's label set every gold label must be in; None for types whose `label` is a reference text
    (a caption, a transcript).
    """
    text = payload.decode("utf-8-sig")
    if name.endswith((".jsonl", ".ndjson")):
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise GoldError(f"{name}: line {exc.lineno}: not JSON: {exc.msg}") from None
    else:
        records = list(csv.DictReader(io.StringIO(text)))
    frame = pd.DataFrame.from_records(records)
    keys = [k for k in ("content_sha256", "source_uri", "source_key") if k in frame.columns]
    if frame.empty:
        raise GoldError(f"{name}: no gold rows")
    if "label" not in frame.columns or not keys:
        raise GoldError(f"{name}: needs a `label` column and one of source_uri, source_key, content_sha256")
    frame["label"] = frame["label"].astype(str).str.strip()
    unknown = sorted(set(frame["label"]) - set(labels)) if labels is not None else []
    if unknown:
        raise GoldError(f"{name}: gold labels not in the spec's label set: {unknown[:10]}")
    return frame[[*keys, "label"]].rename(columns={"label": "gold_label"})


def gold_label_set(spec: ProjectSpec) -> list[str] | None:
    """The label set gold labels must come from; None when a gold `label` is a reference text, not a class."""
    return list(spec.labels) if spec.task_type.uses_labels else None


def attach_gold(tasks: pd.DataFrame, gold: pd.DataFrame | None) -> pd.Series:
    """The gold label of each task (by content hash, source URI or source key), or None."""
    result = pd.Series([None] * len(tasks), index=tasks.index, dtype=object)
    if gold is None or gold.empty:
        return result
    for key in ("content_sha256", "source_uri", "source_key"):
        if key not in gold.columns:
            continue
        if key == "source_key":
            task_keys = tasks["source_uri"].astype(str).str.replace(r"^s3://[^/]+/", "", regex=True)
        else:
            task_keys = tasks[key]
        lookup = dict(zip(gold[key].astype(str), gold["gold_label"], strict=True))
        found = task_keys.map(lookup)
        result = result.where(result.notna(), found)
    return result.where(result.notna(), None)


def _required_annotations(tasks: pd.DataFrame, spec: ProjectSpec) -> pd.Series:
    overlap = pd.to_numeric(tasks["overlap"], errors="coerce").fillna(spec.overlap)
    return np.maximum(overlap, 1).astype(int)


def judge(
    tasks: pd.DataFrame, annotations: pd.DataFrame, spec: ProjectSpec, gold: pd.DataFrame | None = None
) -> QualityReport:
    """Consensus, agreement and annotator scores for the current tables of one project."""
    quality = spec.quality
    tasks = tasks[~tasks["deleted"].astype(bool)].reset_index(drop=True)
    reviewers = {email.lower() for email in quality.reviewers}
    annotations = annotations.assign(
        is_review=annotations["annotator_email"].fillna("").str.lower().isin(reviewers) if reviewers else False
    )
    if "expert_decision" in annotations.columns:  # answers from the review project decide (tasks/escalation.py)
        annotations["is_review"] = annotations["is_review"] | annotations["expert_decision"].fillna(False).astype(bool)
    usable = annotations[annotations["problem"].isna() & annotations["annotator_id"].notna()]
    votes = usable[~usable["is_review"]]
    # quality.min_level: annotations by people below it are kept but are not votes (tasks/exams.py).
    uncertified_people: dict[str, int] = {}
    if "uncertified" in votes.columns:
        below = votes["uncertified"].fillna(False).astype(bool)
        uncertified_people = votes[below].groupby(votes["annotator_email"].fillna("?")).size().to_dict()
        votes = votes[~below]
    # quality.require_guideline: current: labels made under an older guideline are kept but are not votes.
    outdated = outdated_mask(votes, spec)
    outdated_per_task = votes[outdated].groupby("task_id").size()
    votes = votes[~outdated]
    reviews = usable[usable["is_review"]].sort_values("updated_at").drop_duplicates("task_id", keep="last")
    problems = annotations[annotations["problem"].notna()].groupby("task_id").size()

    consensus = tasks[["task_id", "source_uri", "content_sha256"]].copy()
    consensus["annotations"] = consensus["task_id"].map(votes.groupby("task_id").size()).fillna(0).astype(int)
    consensus["required"] = _required_annotations(tasks, spec).to_numpy()
    consensus["reviewed"] = consensus["task_id"].isin(reviews["task_id"])
    consensus["invalid_annotations"] = consensus["task_id"].map(problems).fillna(0).astype(int)
    consensus["outdated_annotations"] = consensus["task_id"].map(outdated_per_task).fillna(0).astype(int)
    consensus["finished"] = (consensus["annotations"] >= votes_needed(consensus, spec)) | consensus["reviewed"]
    consensus["gold_label"] = attach_gold(consensus, gold)
    if spec.task_type.media == "record":
        # A record type's tasks carry their record (prompt, responses, `gold`): judging and exports read it.
        consensus["record"] = tasks["record"].to_numpy() if "record" in tasks.columns else None
        from_record = consensus["record"].map(lambda r: spec.task_type.gold_of(record_of(r)))  # type: ignore[attr-defined]
        consensus["gold_label"] = consensus["gold_label"].where(consensus["gold_label"].notna(), from_record)

    metrics: dict[str, Any] = {"task_type": spec.task, "aggregation": quality.aggregation}
    pairwise, annotator_extra = spec.task_type.judge(consensus, votes, reviews, spec, metrics)

    low = consensus["finished"] & (consensus["agreement"] < quality.min_agreement)
    tie = consensus["finished"] & consensus["tie"]
    invalid = consensus["invalid_annotations"] > 0
    reasons = []
    for is_low, is_tie, is_invalid, agreement in zip(low, tie, invalid, consensus["agreement"], strict=True):
        parts = []
        if is_low:
            parts.append(f"agreement {agreement:.2f} < {quality.min_agreement:.2f}")
        if is_tie:
            parts.append("tied vote")
        if is_invalid:
            parts.append("invalid annotation(s)")
        reasons.append("; ".join(parts) or None)
    consensus["flag_reason"] = reasons
    consensus["flag_reason"] = with_outdated_reasons(consensus)
    stale = outdated_pending(consensus)  # unfinished only because their labels predate the current guideline
    consensus["flagged"] = consensus["flag_reason"].notna() & (consensus["finished"] | invalid | stale)
    consensus = consensus.drop(columns=["tie"])
    consensus = expert_decided(consensus, reviews)  # who decided; an expert's decision wins and unflags

    annotators = score_annotators(annotations, usable, consensus, spec, annotator_extra)
    if quality.cost_per_annotation is not None:
        metrics["cost"] = annotation_cost(annotators, consensus, spec)
    finished = consensus[consensus["finished"]]
    metrics.update(
        tasks=len(consensus),
        finished_tasks=len(finished),
        flagged_tasks=int(consensus["flagged"].sum()),
        annotations=len(annotations),
        invalid_annotations=int(annotations["problem"].notna().sum()),
        annotators=int(annotations["annotator_id"].nunique()),
        mean_task_agreement=mean_or_none(finished["agreement"]),
        mean_confidence=mean_or_none(finished["confidence"]),
    )
    if quality.min_level is not None:  # who to invite to the exam: `labelflow exam create SPEC --level ...`
        metrics["min_level"] = quality.min_level
        metrics["uncertified_annotators"] = [
            {"annotator_email": email, "annotations": int(count)} for email, count in sorted(uncertified_people.items())
        ]
        metrics["uncertified_annotations"] = int(sum(uncertified_people.values()))
    metrics.update(spec.task_type.gold_metrics(finished, spec))
    if rows := judge_agreement_metric(annotations, _predictions(tasks)):
        metrics["judge_agreement"] = rows
    metrics["label_distribution"] = _label_distribution(finished[~finished["flagged"]], spec)
    return QualityReport(consensus=consensus, annotators=annotators, pairwise=pairwise, metrics=metrics)


def _predictions(tasks: pd.DataFrame) -> pd.DataFrame | None:
    """The pre-labels of the tasks (task_id, model_version, label), from the task table's `predictions` column."""
    if "predictions" not in tasks.columns or not tasks["predictions"].notna().any():
        return None
    rows = [
        {"task_id": int(task_id), **item}
        for task_id, value in zip(tasks["task_id"], tasks["predictions"], strict=True)
        if isinstance(value, str)
        for item in json.loads(value)
    ]
    return pd.DataFrame(rows, columns=["task_id", "model_version", "label"])


def _label_distribution(rows: pd.DataFrame, spec: ProjectSpec) -> dict[str, int]:
    from labelflow.tasks.dataset import label_distribution

    return label_distribution(rows, spec)


def score_annotators(
    annotations: pd.DataFrame,
    usable: pd.DataFrame,
    consensus: pd.DataFrame,
    spec: ProjectSpec,
    extra: dict[str, dict[Any, Any]],
) -> pd.DataFrame:
    """Per annotator: volume, gold accuracy, agreement, lead time, throughput, score with its 95% interval, tier."""
    quality = spec.quality
    columns = [
        "annotator_id", "annotator_email", "annotations", "invalid_annotations", "gold_tasks", "gold_accuracy",
        "agreement_with_consensus", "median_lead_time_seconds", "annotations_per_hour", "score", "score_basis",
        "score_tasks", "score_low", "score_high", "tier",
    ]  # fmt: skip
    if annotations.empty:
        return pd.DataFrame(columns=columns)
    finished = consensus[consensus["finished"]].set_index("task_id")
    rows = []
    for annotator_id, own in annotations.groupby("annotator_id"):
        good = usable[usable["annotator_id"] == annotator_id]
        email = own["annotator_email"].dropna().iloc[0] if own["annotator_email"].notna().any() else None
        on_finished = good[good["task_id"].isin(finished.index)]
        gold_labels = on_finished["task_id"].map(finished["gold_label"])
        on_gold = on_finished[gold_labels.notna()]
        gold_accuracy, agreement = spec.task_type.score_annotator(on_finished, gold_labels, finished, spec)
        lead = pd.to_numeric(good["lead_time_seconds"], errors="coerce").dropna()
        lead = lead[lead > 0]
        # Agreement is measured only where someone else also answered (see the task types' score_annotator).
        shared = int((on_finished["task_id"].map(finished["annotations"]) >= 2).sum())
        if gold_accuracy is not None and len(on_gold) >= quality.min_gold_for_tier:
            score, basis, score_tasks = gold_accuracy, "gold", len(on_gold)
        elif agreement is not None:
            score, basis, score_tasks = agreement, "consensus", shared
        else:
            score, basis, score_tasks = None, None, 0
        score_low, score_high = wilson_interval(score, score_tasks) if score is not None else (None, None)
        tier = _tier(score, len(good), quality.tiers, quality.min_annotations_for_tier)
        row = {
            "annotator_id": int(annotator_id),
            "annotator_email": email,
            "annotations": len(own),
            "invalid_annotations": int(own["problem"].notna().sum()),
            "gold_tasks": len(on_gold),
            "gold_accuracy": gold_accuracy,
            "agreement_with_consensus": agreement,
            "median_lead_time_seconds": float(lead.median()) if len(lead) else None,
            "annotations_per_hour": float(len(lead) / (lead.sum() / 3600.0)) if len(lead) else None,
            "score": score,
            "score_basis": basis,
            "score_tasks": score_tasks,
            "score_low": score_low,
            "score_high": score_high,
            "tier": tier,
        }
        for name, values in extra.items():
            row[name] = values.get(annotator_id)
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.sort_values(["score", "annotations"], ascending=[False, False], na_position="last").reset_index(
        drop=True
    )


def annotation_cost(annotators: pd.DataFrame, consensus: pd.DataFrame, spec: ProjectSpec) -> dict[str, Any]:
    """What the annotations cost: each at its author's tier price, per tier, in total and per publishable row.

    Every annotation counts, invalid ones and those on tasks not (yet) published included: they were paid for.
    """
    quality = spec.quality
    ranked = sorted(quality.tiers, key=quality.tiers.__getitem__, reverse=True)
    order = {tier: place for place, tier in enumerate([*ranked, "unrated"])}
    by_tier = []
    for tier, group in sorted(annotators.groupby("tier"), key=lambda item: order.get(str(item[0]), len(order))):
        price = float(quality.annotation_price(str(tier)) or 0.0)
        count = int(group["annotations"].sum())
        by_tier.append(
            {
                "tier": str(tier),
                "annotators": len(group),
                "annotations": count,
                "cost_per_annotation": price,
                "cost": price * count,
            }
        )
    total = float(sum(row["cost"] for row in by_tier))
    # The rows a dataset version would hold now: finished tasks whose consensus is not flagged.
    published = int((consensus["finished"].astype(bool) & ~consensus["flagged"].astype(bool)).sum())
    return {
        "total": total,
        "annotations": int(sum(row["annotations"] for row in by_tier)),
        "published_rows": published,
        "per_published_row": total / published if published else None,
        "by_tier": by_tier,
    }


def _tier(score: float | None, annotations: int, tiers: dict[str, float], minimum: int) -> str:
    """The highest tier whose threshold the score reaches; `unrated` with too little evidence."""
    if score is None or annotations < minimum:
        return "unrated"
    reached = [(threshold, name) for name, threshold in tiers.items() if score >= threshold]
    return max(reached)[1] if reached else "unrated"


def wilson_interval(share: float, trials: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """The Wilson score interval (95% for z=1.96) of a share measured on `trials` tasks; (None, None) without any.

    Exact for a share of right answers; for a score that is a mean of per-task values in [0, 1] (F1, chrF) it is
    the interval of a share with that mean: a value in [0, 1] varies at most as much as a right-or-wrong answer
    with the same mean, so the interval errs on the wide side.
    """
    if trials <= 0:
        return None, None
    share = min(max(float(share), 0.0), 1.0)
    z2 = z * z
    denominator = 1.0 + z2 / trials
    centre = (share + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1.0 - share) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
