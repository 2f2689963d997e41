"""Single-label classification: one class per task, chosen from the spec's labels (shared by text and image)."""

from __future__ import annotations

import math
import unicodedata
from typing import TYPE_CHECKING, Any, ClassVar

from labelflow.tasks.task_types.base import FROM_NAME, TaskType, label_options

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec


# What Label Studio shows when Submit is clicked without a class chosen.
REQUIRED_MESSAGE = "Choose a label before you submit."


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def choice_result(from_name: str, to_name: str, label: str) -> list[dict[str, Any]]:
    """A Label Studio result choosing one class."""
    return [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]


def label_match_scores(
    on_finished: pd.DataFrame, gold_labels: pd.Series, finished: pd.DataFrame
) -> tuple[float | None, float | None]:
    """(share of gold tasks answered with the gold label, share of shared tasks answered with the consensus label)."""
    gold_accuracy = agreement = None
    on_gold = on_finished[gold_labels.notna()]
    if len(on_gold):
        gold_accuracy = float((on_gold["label"] == gold_labels[gold_labels.notna()]).mean())
    # Compare with consensus only where someone else also voted, so a lone vote does not agree with itself.
    shared = on_finished[on_finished["task_id"].map(finished["annotations"]) >= 2]
    if len(shared):
        agreement = float((shared["label"] == shared["task_id"].map(finished["label"])).mean())
    return gold_accuracy, agreement


def label_gold_metrics(finished: pd.DataFrame) -> dict[str, Any]:
    """How often the consensus label matches the gold label, on finished gold tasks."""
    gold_tasks = finished[finished["gold_label"].notna()]
    if not len(gold_tasks):
        return {}
    return {
        "gold_tasks": len(gold_tasks),
        "consensus_accuracy_on_gold": float((gold_tasks["label"] == gold_tasks["gold_label"]).mean()),
    }


def fill_class_consensus(
    consensus: pd.DataFrame,
    votes: pd.DataFrame,
    classes: list[str],
    quality: Any,
    metrics: dict[str, Any],
    extra: dict[str, dict[Any, Any]],
) -> pd.Series:
    """Majority vote or Dawid-Skene over class votes into the consensus rows; True for the rows that got votes.

    Fills label, confidence, agreement (the share of a task's voters who chose the consensus class, the top share
    on a tie), tie and method; Dawid-Skene also gives each annotator's `estimated_accuracy` (in `extra`).
    """
    import numpy as np
    import pandas as pd

    from labelflow.tasks.consensus import dawid_skene, estimated_accuracy, majority_vote

    aggregate = dawid_skene if quality.aggregation == "dawid-skene" else majority_vote
    result = aggregate(votes, classes=classes, tie_policy=quality.tie_policy, seed=quality.seed)
    shares = result.posterior if aggregate is majority_vote else majority_vote(votes, classes).posterior
    chosen = np.array([classes.index(label) if label is not None else -1 for label in result.labels])
    agreement = np.where(chosen >= 0, shares[np.arange(len(chosen)), np.maximum(chosen, 0)], shares.max(axis=1))
    per_task = pd.DataFrame(
        {
            "label": pd.Series(result.labels, dtype=object).to_numpy(),
            "confidence": result.confidence,
            "agreement": agreement,
            "tie": result.tie,
        },
        index=result.task_ids,
    )
    has = consensus["task_id"].isin(per_task.index)
    found = per_task.loc[consensus.loc[has, "task_id"]]
    for column in ("label", "confidence", "agreement", "tie"):
        consensus.loc[has, column] = found[column].to_numpy()
    consensus["label"] = consensus["label"].astype(object).where(consensus["label"].notna(), None)
    consensus.loc[has, "method"] = quality.aggregation
    if result.annotator_confusion is not None:
        priors = result.posterior.mean(axis=0)
        extra["estimated_accuracy"] = {
            annotator: estimated_accuracy(matrix, priors) for annotator, matrix in result.annotator_confusion.items()
        }
        metrics["dawid_skene_iterations"] = result.iterations
    return has


class ClassificationTask(TaskType):
    """A Choices control with one radio choice; consensus by majority vote or Dawid-Skene."""

    tag: ClassVar[str]  # the Label Studio object tag showing the data: Text or Image
    tag_attributes: ClassVar[str] = ""

    def label_config(self, labels: list[str]) -> str:
        """`<Text>`/`<Image>` plus a single-choice `<Choices>` control that Label Studio will not submit unanswered."""
        key = self.data_key
        return (
            f'<View>\n  <{self.tag} name="{key}" value="${key}"{self.tag_attributes}/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{key}" choice="single-radio" showInLine="true" required="true" '
            f'requiredMessage="{REQUIRED_MESSAGE}">'
            f"{label_options('Choice', labels)}\n  </Choices>\n</View>"
        )

    def parse_result(
        self, items: list[dict[str, Any]], labels: set[str], width: int | None, height: int | None
    ) -> tuple[str | None, list[dict[str, Any]] | None, list[str]]:
        """The chosen class; more than one choice, or one outside the label set, is recorded as a problem."""
        problems: list[str] = []
        choices = [c for item in items for c in (item.get("value") or {}).get("choices", [])]
        if not choices:
            return None, None, ["no class chosen"]
        if len(choices) > 1:
            problems.append(f"{len(choices)} classes chosen: {choices}")
        label = unicodedata.normalize("NFC", str(choices[0]))
        if label not in labels:
            problems.append(f"label {label!r} is not in the spec's label set")
        return label, None, problems

    def judge(
        self,
        consensus: pd.DataFrame,
        votes: pd.DataFrame,
        reviews: pd.DataFrame,
        spec: ProjectSpec,
        metrics: dict[str, Any],
    ) -> tuple[pd.DataFrame, dict[str, dict[Any, Any]]]:
        """Aggregate votes per task; agreement is the share of annotators who chose the consensus label."""
        import numpy as np

        from labelflow.tasks.agreement import (
            category_counts,
            fleiss_kappa,
            kappa_headline,
            krippendorff_alpha_nominal,
            pairwise_cohen_kappa,
        )

        quality = spec.quality
        extra: dict[str, dict[Any, Any]] = {}
        consensus["label"] = None
        consensus["confidence"] = np.nan
        consensus["agreement"] = np.nan
        consensus["tie"] = False
        consensus["method"] = None
        if len(votes):
            counts, _, _ = category_counts(votes)
            metrics["krippendorff_alpha"] = _finite(krippendorff_alpha_nominal(counts))
            metrics["fleiss_kappa"] = _finite(fleiss_kappa(counts))
            fill_class_consensus(consensus, votes, list(spec.labels), quality, metrics, extra)
        pairwise = pairwise_cohen_kappa(votes)
        if len(votes):
            metrics.update(kappa_headline(pairwise, quality.min_shared_tasks_for_kappa))
        if len(reviews):
            review_label = consensus["task_id"].map(reviews.set_index("task_id")["label"])
            reviewed = review_label.notna()
            consensus.loc[reviewed, "label"] = review_label[reviewed]
            consensus.loc[reviewed, "confidence"] = 1.0
            consensus.loc[reviewed, "method"] = "review"
            consensus.loc[reviewed, "tie"] = False
            consensus.loc[reviewed & consensus["agreement"].isna(), "agreement"] = 1.0
        return pairwise, extra

    def score_annotator(
        self, on_finished: pd.DataFrame, gold_labels: pd.Series, finished: pd.DataFrame, spec: ProjectSpec
    ) -> tuple[float | None, float | None]:
        """Accuracy on gold tasks, and the share of shared tasks where the annotator chose the consensus class."""
        return label_match_scores(on_finished, gold_labels, finished)

    def gold_metrics(self, finished: pd.DataFrame, spec: ProjectSpec) -> dict[str, Any]:
        """How often consensus matches gold, on finished gold tasks."""
        return label_gold_metrics(finished)

    def labels_used(self, rows: pd.DataFrame) -> pd.Series:
        """The class of each row."""
        return rows["label"].dropna()

    def simulated_result(self, from_name: str, to_name: str, label: str) -> list[dict[str, Any]] | None:
        """A result choosing one class."""
        return choice_result(from_name, to_name, label)
