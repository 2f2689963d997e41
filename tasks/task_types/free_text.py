"""What types whose answer is written text share: reading a TextArea, medoid consensus, and the written-answer base.

SFT answers, image captions and transcripts are free text: two good answers are rarely equal, so they are compared
by a similarity in [0, 1] (chrF for answers and captions, one minus the error rate for transcripts), the consensus
is the medoid (the answer most similar to the others) or a reviewer's, and agreement is the mean pairwise
similarity of a task's answers.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from labelflow.tasks.task_types.base import FROM_NAME, TaskType
from labelflow.tasks.task_types.record_task import answer_json, answer_of

if TYPE_CHECKING:
    import random

    import numpy as np
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec

LABEL_DIGITS = 16  # hex digits of the answer digest kept as the summary `label`
# Pairwise similarity of a task's answers: a symmetric matrix with 1 on the diagonal.
SimilarityMatrix = Callable[[Sequence[str]], "np.ndarray"]


def normalised(text: str) -> str:
    """NFC text with every run of whitespace one space and none at the ends: what `identical` means for answers."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def answer_digest(text: str) -> str:
    """The summary label of an answer: a SHA-256 prefix of its normalised text (equal answers, equal labels)."""
    return hashlib.sha256(normalised(text).encode("utf-8")).hexdigest()[:LABEL_DIGITS]


def textarea_result(text: str, to_name: str) -> list[dict[str, Any]]:
    """A Label Studio TextArea result holding one answer."""
    return [{"from_name": FROM_NAME, "to_name": to_name, "type": "textarea", "value": {"text": [text]}}]


def textarea_texts(items: list[dict[str, Any]]) -> list[str]:
    """Every text a TextArea's result items hold, in order."""
    texts: list[str] = []
    for item in items:
        value = (item.get("value") or {}).get("text")
        texts += [value] if isinstance(value, str) else [str(t) for t in value or []]
    return texts


def answer_text(value: Any) -> str | None:
    """The `text` of an `answer` column value (JSON text or dict), or None."""
    text = answer_of(value).get("text")
    return text if isinstance(text, str) else None


def judge_free_text(
    consensus: pd.DataFrame,
    votes: pd.DataFrame,
    reviews: pd.DataFrame,
    similarity: SimilarityMatrix,
    choose: Callable[[Sequence[str]], int] | None = None,
) -> tuple[list[float], pd.DataFrame]:
    """Fill label, answer, method, agreement, confidence and tie per task; (task agreements, pairwise table).

    Consensus: the reviewer's answer, else the medoid of 2+ answers (the earliest on a tie, so of two answers the
    first), else the one answer. Agreement is the mean pairwise similarity of a task's answers (NaN with one);
    confidence is the chosen answer's mean similarity to the others (1.0 for a reviewer's answer). `choose` picks
    the medoid instead of the highest mean similarity (transcripts: the least total edit distance).
    """
    import numpy as np
    import pandas as pd

    chosen: dict[Any, dict[str, Any]] = {}
    pair_scores: dict[tuple[int, int], list[float]] = {}
    ordered = votes.sort_values(["task_id", "annotation_id"], kind="stable")
    for task_id, group in ordered.groupby("task_id", sort=False):
        answers = [answer_of(value) for value in group["answer"]]
        texts = [a.get("text") or "" for a in answers]
        if len(texts) == 1:
            index, agreement, confidence, method = 0, math.nan, math.nan, "single"
        else:
            matrix = similarity(texts)
            n = len(texts)
            mean_to_others = (matrix.sum(axis=1) - 1.0) / (n - 1)
            index = choose(texts) if choose is not None else int(np.argmax(mean_to_others))
            agreement = float(matrix[np.triu_indices(n, 1)].mean())
            confidence, method = float(mean_to_others[index]), "medoid"
            annotators = group["annotator_id"].astype(int).tolist()
            for i in range(n):
                for j in range(i + 1, n):
                    key = (min(annotators[i], annotators[j]), max(annotators[i], annotators[j]))
                    pair_scores.setdefault(key, []).append(float(matrix[i, j]))
        chosen[task_id] = {
            "label": group["label"].iloc[index],
            "answer": answer_json(answers[index]),
            "method": method,
            "agreement": agreement,
            "confidence": confidence,
        }
    for task_id, label, answer in reviews[["task_id", "label", "answer"]].itertuples(index=False):
        entry = chosen.setdefault(task_id, {"agreement": math.nan})
        entry.update(label=label, answer=answer_json(answer_of(answer)), method="review", confidence=1.0)
    found = consensus["task_id"].map(chosen)
    for column in ("label", "answer", "method"):
        consensus[column] = found.map(lambda entry, c=column: entry[c] if isinstance(entry, dict) else None)
    for column in ("confidence", "agreement"):
        consensus[column] = found.map(lambda entry, c=column: entry[c] if isinstance(entry, dict) else math.nan)
        consensus[column] = consensus[column].astype(float)
    consensus["tie"] = False  # a free-text medoid is never a tied vote
    pairwise = pd.DataFrame(
        [(a, b, len(scores), float(np.mean(scores))) for (a, b), scores in sorted(pair_scores.items())],
        columns=["annotator_a", "annotator_b", "shared_tasks", "mean_similarity"],
    )
    return [e["agreement"] for e in chosen.values()], pairwise


class WrittenAnswerTask(TaskType):
    """A type whose tasks are stored media (an image, an audio clip) and whose answer is one written text.

    The reference text of a gold task comes from the spec's gold file (`label` column: the reference caption or
    transcript); the simulator takes its truth from the same kind of file.
    """

    uses_labels: ClassVar[bool] = False
    structured_answers: ClassVar[bool] = True
    # The answer TextArea is `required`: Label Studio refuses an empty Submit (see the base's note).
    refuse_empty_annotations: ClassVar[bool] = False
    answer_noun: ClassVar[str] = "answer"  # what the text is called in problems: caption, transcript

    def check_spec(self, spec: ProjectSpec) -> None:
        """The answer is read by the built-in interface's control names, so it cannot be replaced."""
        if spec.label_config is not None:
            raise ValueError(f"label_config: task {self.name} uses its built-in interface; remove `label_config`")

    def label_config(self, labels: list[str]) -> str:
        """The built-in interface: the media and a required TextArea."""
        raise NotImplementedError

    def parse_result(
        self, items: list[dict[str, Any]], labels: set[str], width: int | None, height: int | None
    ) -> tuple[str | None, list[dict[str, Any]] | None, list[str]]:
        """Written answers are read with the task's data: see `parse_answer`."""
        raise TypeError(f"task {self.name} reads annotations with parse_answer")

    def parse_answer(
        self, items: list[dict[str, Any]], data: dict[str, Any], spec: ProjectSpec
    ) -> tuple[str | None, dict[str, Any] | None, list[str]]:
        """(answer digest, {text}, problems): an empty text or more than one submission is a problem."""
        texts = textarea_texts(items)
        if not texts:
            return None, None, [f"no {self.answer_noun} written"]
        problems = []
        if len(texts) > 1:
            problems.append(f"{len(texts)} {self.answer_noun}s submitted; the interface takes one")
        text = unicodedata.normalize("NFC", texts[0]).strip()
        if not text:
            return None, {"text": text}, [f"empty or whitespace-only {self.answer_noun}", *problems]
        return answer_digest(text), {"text": text}, problems

    # --- judging: subclasses give the similarity ----------------------------------------------------------------

    similarity_measure: ClassVar[str]  # how the metrics name the agreement measure

    def similarity_matrix(self, texts: Sequence[str], spec: ProjectSpec) -> np.ndarray:
        """Pairwise similarity of a task's answers (symmetric, 1 on the diagonal)."""
        from labelflow.tasks.comparisons import pairwise_similarity

        return pairwise_similarity(texts)

    def choose_consensus(self, texts: Sequence[str], spec: ProjectSpec) -> int:
        """The position of the consensus among 2+ answers: the highest mean similarity to the others."""
        import numpy as np

        matrix = self.similarity_matrix(texts, spec)
        return int(np.argmax(matrix.sum(axis=1)))

    def similarity(self, a: str, b: str, spec: ProjectSpec) -> float:
        """Symmetric similarity of two answers in [0, 1]."""
        return float(self.similarity_matrix([a, b], spec)[0, 1])

    def judge(
        self,
        consensus: pd.DataFrame,
        votes: pd.DataFrame,
        reviews: pd.DataFrame,
        spec: ProjectSpec,
        metrics: dict[str, Any],
    ) -> tuple[pd.DataFrame, dict[str, dict[Any, Any]]]:
        """Medoid or reviewer's answer per task; agreement is the mean pairwise similarity."""
        from labelflow.tasks.agreement import mean_or_none

        agreements, pairwise = judge_free_text(
            consensus,
            votes,
            reviews,
            lambda texts: self.similarity_matrix(texts, spec),
            # The highest mean similarity is judge_free_text's own choice: only a type that chooses otherwise says so.
            (lambda texts: self.choose_consensus(texts, spec))
            if type(self).choose_consensus is not WrittenAnswerTask.choose_consensus
            else None,
        )
        metrics["agreement_measure"] = self.similarity_measure
        metrics["mean_pairwise_similarity"] = mean_or_none(agreements)
        return pairwise, {}

    def score_annotator(
        self, on_finished: pd.DataFrame, gold_labels: pd.Series, finished: pd.DataFrame, spec: ProjectSpec
    ) -> tuple[float | None, float | None]:
        """Gold: mean similarity of the annotator's answers to the references; agreement: mean similarity to the
        consensus answer on tasks someone else also answered."""
        from labelflow.tasks.agreement import mean_or_none

        gold_accuracy = agreement = None
        has_gold = gold_labels.notna()
        if has_gold.any():
            gold_accuracy = mean_or_none(
                [
                    self.similarity(answer_text(value) or "", str(reference), spec)
                    for value, reference in zip(on_finished.loc[has_gold, "answer"], gold_labels[has_gold], strict=True)
                ]
            )
        shared = on_finished[on_finished["task_id"].map(finished["annotations"]) >= 2]
        if len(shared):
            agreement = mean_or_none(
                [
                    self.similarity(answer_text(own) or "", answer_text(chosen) or "", spec)
                    for own, chosen in zip(shared["answer"], shared["task_id"].map(finished["answer"]), strict=True)
                ]
            )
        return gold_accuracy, agreement

    gold_match: ClassVar[float]  # similarity to the reference from which an answer counts as matching it

    def gold_metrics(self, finished: pd.DataFrame, spec: ProjectSpec) -> dict[str, Any]:
        """Mean similarity of the consensus answer to the reference, and the share that matches it."""
        gold_tasks = finished[finished["gold_label"].notna() & finished["answer"].notna()]
        if not len(gold_tasks):
            return {}
        scores = [
            self.similarity(answer_text(answer) or "", str(reference), spec)
            for answer, reference in zip(gold_tasks["answer"], gold_tasks["gold_label"], strict=True)
        ]
        return {
            "gold_tasks": len(scores),
            "consensus_similarity_on_gold": sum(scores) / len(scores),
            "consensus_accuracy_on_gold": sum(score >= self.gold_match for score in scores) / len(scores),
        }

    def gold_similarity(self, answer: str, reference: str) -> float:
        """Similarity of an answer to its reference without a spec (the simulator's tally): the type's default."""
        from labelflow.tasks.comparisons import chrf

        return chrf(answer, reference)

    def labels_used(self, rows: pd.DataFrame) -> pd.Series:
        """None: an answer's label is a digest, one per distinct answer, so a distribution of them says nothing."""
        import pandas as pd

        return pd.Series([], dtype=object)

    # --- simulation (the truth is the gold file's reference text, given to the simulator as `gold`) ---------------

    def gold_of(self, data: dict[str, Any]) -> str | None:
        """The task's known reference text (the simulator puts it in the task data as `gold`), or None."""
        value = data.get("gold")
        return None if value in (None, "") else str(value).strip()

    def agrees_with_gold(self, label: str | None, answer: dict[str, Any] | None, gold: str) -> bool:
        """An answer matches the reference when its similarity reaches `gold_match`."""
        return self.gold_similarity(answer_text(answer) or "", gold) >= self.gold_match

    def simulated_text(self, truth: str, accuracy: float, spammer: bool, rng: random.Random) -> str:
        """A simulated annotator's text for a task whose reference is `truth`."""
        raise NotImplementedError

    def simulated_answer(
        self, data: dict[str, Any], spec: ProjectSpec, accuracy: float, spammer: bool, rng: random.Random
    ) -> list[dict[str, Any]] | None:
        """A TextArea result with the simulated text; None without a known reference."""
        truth = self.gold_of(data)
        if truth is None:
            return None
        return textarea_result(self.simulated_text(truth, accuracy, spammer, rng), self.data_key)

    # --- validation -------------------------------------------------------------------------------------------

    def validation_columns(self, frame: pd.DataFrame, table: str, spec: ProjectSpec) -> pd.DataFrame:
        """`answer_chars`: non-whitespace characters of the answer (null without one)."""
        answers = frame["answer"].map(lambda value: answer_of(value) if isinstance(value, str) else None)
        frame["answer_chars"] = answers.map(
            lambda a: float(sum(not ch.isspace() for ch in a.get("text") or "")) if a is not None else math.nan
        )
        return frame
