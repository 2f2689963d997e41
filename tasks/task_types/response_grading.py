"""Response grading: annotators score a prompt's response 1..K and tick the rubric checks it passes.

Consensus per task:
- score: the median of the annotators' scores; for an even count the lower of the two middle scores, so the
  consensus is always a score someone gave (never 3.5) and leans to the stricter grade;
- agreement: 1 - (mean absolute deviation of the scores from that median) / (K - 1), in 0..1 (1: all equal,
  0: half at 1 and half at K); confidence: the share of annotators who gave exactly the median;
- rubric: per check, a strict majority of the annotators must tick it; an even split (a tie) counts as not passed
  (reward data should not claim a check half the graders rejected) and is counted in the `rubric_ties` metric,
  without flagging the task: the score, which is what the export is for, is judged by agreement alone.
A reviewer's annotation replaces the consensus. Project agreement is Krippendorff's alpha for ordinal data over
every task with two or more scores.
"""

from __future__ import annotations

import json
import math
import unicodedata
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from labelflow.tasks.task_types.base import FROM_NAME, label_options
from labelflow.tasks.task_types.record_task import (
    COMMON_OPTIONAL_FIELDS,
    RecordTaskType,
    answer_json,
    answer_of,
    record_of,
)

if TYPE_CHECKING:
    import random

    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec

RUBRIC_NAME = "rubric"  # the Choices control holding the rubric checks
MAX_CHECK_CHARS = 80
MAX_CHECKS = 20


class GradingOptions(BaseModel):
    """The spec's `options:` for response-grading."""

    model_config = ConfigDict(extra="forbid")

    scale: Annotated[int, Field(ge=2, le=10)] = 5  # scores run 1..scale
    rubric: Annotated[list[str], Field(max_length=MAX_CHECKS)] = Field(default_factory=list)  # short check names

    @field_validator("rubric")
    @classmethod
    def _checks(cls, value: list[str]) -> list[str]:
        checks = [unicodedata.normalize("NFC", check.strip()) for check in value]
        for number, check in enumerate(checks, start=1):
            if not check:
                raise ValueError(f"rubric check {number} is empty")
            if len(check) > MAX_CHECK_CHARS:
                raise ValueError(f"rubric check {number} is longer than {MAX_CHECK_CHARS} characters")
        duplicates = sorted({check for check in checks if checks.count(check) > 1})
        if duplicates:
            raise ValueError(f"duplicate rubric checks: {duplicates}")
        return checks


def _whole_score(value: Any) -> int | None:
    """A score as an int when it is a whole number (4, 4.0, "4"), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class ResponseGrading(RecordTaskType):
    """One response to grade per task: a Rating 1..K and optional rubric checks; median consensus."""

    name: ClassVar[str] = "response-grading"
    export_file = "grades.jsonl"
    expectation_suite = "response-grading"
    predictors = frozenset({"openai"})
    record_fields: ClassVar[tuple[str, ...]] = ("prompt", "response")
    optional_record_fields: ClassVar[tuple[str, ...]] = ("model", *COMMON_OPTIONAL_FIELDS)
    options_model = GradingOptions
    control_names: ClassVar[frozenset[str]] = frozenset({FROM_NAME, RUBRIC_NAME})

    # --- interface ------------------------------------------------------------------------------------------------

    def label_config_for(self, spec: ProjectSpec) -> str:
        """Prompt and response as Text, a required Rating 1..K and, with a rubric, a multi-select of its checks.

        The responding model is not shown: graders judge the answer, not its author.
        """
        options: GradingOptions = spec.task_options
        lines = [
            "<View>",
            '  <Header value="Prompt"/>',
            '  <Text name="prompt" value="$prompt"/>',
            '  <Header value="Response"/>',
            '  <Text name="response" value="$response"/>',
            f'  <Header value="Score: 1 (worst) to {options.scale} (best)"/>',
            f'  <Rating name="{FROM_NAME}" toName="response" maxRating="{options.scale}" required="true"/>',
        ]
        if options.rubric:
            lines += [
                '  <Header value="Which checks does the response pass?"/>',
                f'  <Choices name="{RUBRIC_NAME}" toName="response" choice="multiple">'
                f"{label_options('Choice', options.rubric)}\n  </Choices>",
            ]
        return "\n".join([*lines, "</View>"])

    # --- parsing --------------------------------------------------------------------------------------------------

    def gold_of(self, record: dict[str, Any]) -> str | None:
        """The record's gold score as a whole-number string ("4.0" -> "4"); other text is kept (it never matches)."""
        value = super().gold_of(record)
        if not value:  # absent, or only whitespace
            return None
        score = _whole_score(value)
        return value if score is None else str(score)

    def parse_answer(
        self, items: list[dict[str, Any]], data: dict[str, Any], spec: ProjectSpec
    ) -> tuple[str | None, dict[str, Any] | None, list[str]]:
        """("4", {"score": 4, "rubric": {check: passed}}, problems); a missing or out-of-scale score is a problem.

        Label Studio writes no Choices result when no check is ticked, so an absent rubric means none passed.
        """
        options: GradingOptions = spec.task_options
        problems: list[str] = []
        ratings = [
            (item.get("value") or {}).get("rating")
            for item in items
            if item.get("from_name") == FROM_NAME and (item.get("value") or {}).get("rating") is not None
        ]
        chosen = [
            unicodedata.normalize("NFC", str(choice))
            for item in items
            if item.get("from_name") == RUBRIC_NAME
            for choice in (item.get("value") or {}).get("choices", [])
        ]
        problems += [f"rubric check {c!r} is not in the spec's rubric" for c in chosen if c not in options.rubric]
        if not ratings:
            return None, None, ["score missing: no rating given", *problems]
        if len(ratings) > 1:
            problems.insert(0, f"{len(ratings)} scores given: {ratings}")
        score = _whole_score(ratings[0])
        if score is None:
            return None, None, [f"score {ratings[0]!r} is not a whole number", *problems]
        if not 1 <= score <= options.scale:
            problems.insert(0, f"score {score} outside 1..{options.scale}")
        rubric = {check: check in chosen for check in options.rubric}
        return str(score), {"score": score, "rubric": rubric}, problems

    # --- judging --------------------------------------------------------------------------------------------------

    def judge(
        self,
        consensus: pd.DataFrame,
        votes: pd.DataFrame,
        reviews: pd.DataFrame,
        spec: ProjectSpec,
        metrics: dict[str, Any],
    ) -> tuple[pd.DataFrame, dict[str, dict[Any, Any]]]:
        """Median score, per-check majority, agreement from the deviation around the median; reviewers override."""
        import numpy as np
        import pandas as pd

        from labelflow.tasks.comparisons import krippendorff_alpha_ordinal

        options: GradingOptions = spec.task_options
        scale = options.scale
        consensus["label"] = None
        consensus["answer"] = None
        consensus["confidence"] = np.nan
        consensus["agreement"] = np.nan
        consensus["tie"] = False
        consensus["method"] = None
        scored = votes.assign(score=votes["label"].map(_whole_score))
        scored = scored[scored["score"].between(1, scale)].astype({"score": "int64"})
        extra: dict[str, dict[Any, Any]] = {}
        rubric = pd.DataFrame(index=pd.Index([], name="task_id"), columns=options.rubric, dtype=bool)
        ties = pd.DataFrame(index=rubric.index, columns=options.rubric, dtype=bool)
        if len(scored):
            by_task = scored.groupby("task_id")["score"]
            median = by_task.quantile(0.5, interpolation="lower").astype(int)
            deviation = (scored["score"] - scored["task_id"].map(median)).abs()
            spread = deviation.groupby(scored["task_id"]).mean()
            at_median = (deviation == 0).groupby(scored["task_id"]).mean()
            rubric, ties = self._rubric_majority(scored, options.rubric)
            has = consensus["task_id"].isin(median.index)
            ids = consensus.loc[has, "task_id"]
            consensus.loc[has, "label"] = ids.map(median).astype(str).to_numpy()
            medians, majorities = median.to_dict(), rubric.to_dict("index")
            no_check = dict.fromkeys(options.rubric, False)
            consensus.loc[has, "answer"] = [
                answer_json(
                    {
                        "score": int(medians[task_id]),
                        "rubric": {str(c): bool(v) for c, v in majorities.get(task_id, no_check).items()},
                    }
                )
                for task_id in ids
            ]
            consensus.loc[has, "agreement"] = (1.0 - ids.map(spread) / (scale - 1)).to_numpy()
            consensus.loc[has, "confidence"] = ids.map(at_median).to_numpy()
            consensus.loc[has, "method"] = "median"
            task_codes, _ = pd.factorize(scored["task_id"], sort=True)
            counts = np.zeros((task_codes.max() + 1, scale))
            np.add.at(counts, (task_codes, scored["score"].to_numpy() - 1), 1.0)
            metrics["krippendorff_alpha_ordinal"] = _finite(krippendorff_alpha_ordinal(counts))
            extra["gold_mean_absolute_error"] = self._gold_error_by_annotator(scored, consensus)
        if len(reviews):
            by_review = reviews.set_index("task_id")
            reviewed = consensus["task_id"].isin(by_review.index)
            ids = consensus.loc[reviewed, "task_id"]
            consensus.loc[reviewed, "label"] = ids.map(by_review["label"]).to_numpy()
            consensus.loc[reviewed, "answer"] = ids.map(by_review["answer"]).to_numpy()
            consensus.loc[reviewed, "confidence"] = 1.0
            consensus.loc[reviewed, "method"] = "review"
            consensus.loc[reviewed & consensus["agreement"].isna(), "agreement"] = 1.0
        self._finished_metrics(consensus, ties, options, metrics)
        return self._pairwise(scored), extra

    @staticmethod
    def _rubric_majority(scored: pd.DataFrame, checks: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(passed, tied) per task and check: passed by a strict majority of the votes that judged the check."""
        import pandas as pd

        rubrics = [answer_of(answer).get("rubric") or {} for answer in scored["answer"]]
        ticked = pd.DataFrame(
            {check: [rubric.get(check) for rubric in rubrics] for check in checks}, index=scored.index, columns=checks
        )
        # A vote made under an older rubric lacks a newer check: it does not count for or against it.
        judged = ticked.notna().groupby(scored["task_id"]).sum()
        passes = ticked.eq(True).groupby(scored["task_id"]).sum()
        return passes * 2 > judged, (passes * 2 == judged) & (judged > 0)

    @staticmethod
    def _gold_error_by_annotator(scored: pd.DataFrame, consensus: pd.DataFrame) -> dict[Any, float]:
        """Mean absolute error of each annotator's scores on finished gold tasks (an extra annotator column)."""
        finished = consensus[consensus["finished"]].set_index("task_id")
        gold = scored["task_id"].map(finished["gold_label"].map(_whole_score))
        on_gold = scored.assign(gold=gold).dropna(subset=["gold"])
        if on_gold.empty:
            return {}
        error = (on_gold["score"] - on_gold["gold"]).abs()
        return {annotator: float(value) for annotator, value in error.groupby(on_gold["annotator_id"]).mean().items()}

    @staticmethod
    def _finished_metrics(
        consensus: pd.DataFrame, ties: pd.DataFrame, options: GradingOptions, metrics: dict[str, Any]
    ) -> None:
        """Mean consensus score, rubric pass rates and rubric ties over finished tasks."""
        from labelflow.tasks.agreement import mean_or_none

        finished = consensus[consensus["finished"] & consensus["label"].notna()]
        metrics["mean_score"] = mean_or_none(finished["label"].map(_whole_score))
        if not options.rubric:
            return
        answers = [answer_of(answer).get("rubric") or {} for answer in finished["answer"]]
        metrics["rubric_pass_rate"] = {
            check: (sum(bool(a.get(check)) for a in answers) / len(answers) if answers else None)
            for check in options.rubric
        }
        tied = ties[ties.index.isin(finished["task_id"])]
        metrics["rubric_ties"] = int(tied.to_numpy().sum())

    @staticmethod
    def _pairwise(scored: pd.DataFrame) -> pd.DataFrame:
        """Per annotator pair: shared tasks, share of equal scores and mean absolute score difference."""
        import pandas as pd

        columns = ["annotator_a", "annotator_b", "shared_tasks", "exact_agreement", "mean_absolute_difference"]
        slim = scored[["task_id", "annotator_id", "score"]].drop_duplicates(["task_id", "annotator_id"])
        pairs = slim.merge(slim, on="task_id", suffixes=("_a", "_b"))
        pairs = pairs[pairs["annotator_id_a"] < pairs["annotator_id_b"]]
        if pairs.empty:
            return pd.DataFrame(columns=columns)
        difference = (pairs["score_a"] - pairs["score_b"]).abs()
        summary = (
            pairs.assign(same=(difference == 0).astype(float), difference=difference.astype(float))
            .groupby(["annotator_id_a", "annotator_id_b"])
            .agg(shared_tasks=("same", "size"), exact_agreement=("same", "mean"),
                 mean_absolute_difference=("difference", "mean"))
            .reset_index()
        )  # fmt: skip
        summary = summary.rename(columns={"annotator_id_a": "annotator_a", "annotator_id_b": "annotator_b"})
        return summary[columns]

    def score_annotator(
        self, on_finished: pd.DataFrame, gold_labels: pd.Series, finished: pd.DataFrame, spec: ProjectSpec
    ) -> tuple[float | None, float | None]:
        """Share of gold tasks scored exactly; share of shared tasks scored exactly at the consensus median.

        Exact (not within one point) keeps both on the same footing as classification accuracy: an annotator who
        is always one point off scores 0 here, and the `gold_mean_absolute_error` column says how far off.
        """
        gold_accuracy = agreement = None
        scores = on_finished["label"].map(_whole_score)
        on_gold = gold_labels.notna()
        if on_gold.any():
            gold = gold_labels[on_gold].map(_whole_score)
            gold_accuracy = float((scores[on_gold] == gold).mean())
        # Compare with consensus only where someone else also scored, so a lone score does not agree with itself.
        shared = on_finished["task_id"].map(finished["annotations"]) >= 2
        if shared.any():
            median = on_finished.loc[shared, "task_id"].map(finished["label"]).map(_whole_score)
            agreement = float((scores[shared] == median).mean())
        return gold_accuracy, agreement

    def gold_metrics(self, finished: pd.DataFrame, spec: ProjectSpec) -> dict[str, Any]:
        """Exact consensus accuracy and mean absolute error of the consensus score on finished gold tasks."""
        from labelflow.tasks.agreement import mean_or_none

        gold_tasks = finished[finished["gold_label"].notna()]
        if not len(gold_tasks):
            return {}
        gold = gold_tasks["gold_label"].map(_whole_score)
        score = gold_tasks["label"].map(_whole_score)
        return {
            "gold_tasks": len(gold_tasks),
            "consensus_accuracy_on_gold": float((score == gold).mean()),
            "consensus_mean_absolute_error_on_gold": mean_or_none((score - gold).abs()),
        }

    # --- validation -----------------------------------------------------------------------------------------------

    def validation_columns(self, frame: pd.DataFrame, table: str, spec: ProjectSpec) -> pd.DataFrame:
        """`score`: the label as a number (NaN when it is not one), for the 1..K range check."""
        import pandas as pd

        return frame.assign(score=pd.to_numeric(frame["label"], errors="coerce"))

    def spec_expectations(self, spec: ProjectSpec, table: str) -> list[tuple[str, dict[str, Any], str]]:
        """Every score lies on the spec's scale, 1..options.scale."""
        scale = spec.task_options.scale
        what = "annotated" if table == "annotations" else "consensus"
        return [
            (
                "expect_column_values_to_be_between",
                {"column": "score", "min_value": 1, "max_value": scale},
                f"every {what} score is on the spec's scale 1..{scale} (options.scale)",
            )
        ]

    # --- simulation -----------------------------------------------------------------------------------------------

    def simulated_answer(
        self, data: dict[str, Any], spec: ProjectSpec, accuracy: float, spammer: bool, rng: random.Random
    ) -> list[dict[str, Any]] | None:
        """The gold score with probability `accuracy`, else a neighbouring score; spammers score uniformly.

        A neighbour is gold - 1 or gold + 1, whichever lies on the scale (both: either at random), so an inaccurate
        answer is never the gold score. Each rubric check has a true value fixed by the record and the check, more
        often passed the higher the gold score; annotators report it with probability `accuracy`, spammers at random.
        """
        options: GradingOptions = spec.task_options
        gold = _whole_score(self.gold_of(data))
        if gold is None or not 1 <= gold <= options.scale:
            return None
        if spammer:
            score = rng.randint(1, options.scale)
        elif rng.random() < accuracy:
            score = gold
        else:
            score = rng.choice([s for s in (gold - 1, gold + 1) if 1 <= s <= options.scale])
        passed = []
        for check in options.rubric:
            truth = self._check_truth(data, check, gold, options.scale)
            ticked = rng.random() < 0.5 if spammer else truth == (rng.random() < accuracy)
            if ticked:
                passed.append(check)
        result = [{"from_name": FROM_NAME, "to_name": "response", "type": "rating", "value": {"rating": score}}]
        if passed:
            result.append(
                {"from_name": RUBRIC_NAME, "to_name": "response", "type": "choices", "value": {"choices": passed}}
            )
        return result

    @staticmethod
    def _check_truth(data: dict[str, Any], check: str, gold: int, scale: int) -> bool:
        """Whether a record's response truly passes a check: a hash draw, passing with probability (gold-0.5)/K."""
        key = f"{data.get('content_sha256') or data.get('prompt')}:{check}"
        return zlib.crc32(key.encode("utf-8")) / 2**32 < (gold - 0.5) / scale

    # --- dataset --------------------------------------------------------------------------------------------------

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """grades.jsonl, for reward modelling: {prompt, response, score, rubric, model (when known), task_id}."""
        path = folder / self.export_file
        with path.open("w", encoding="utf-8") as handle:
            for task_id, record_text, label, answer_text in rows[["task_id", "record", "label", "answer"]].itertuples(
                index=False
            ):
                record, answer = record_of(record_text), answer_of(answer_text)
                line: dict[str, Any] = {
                    "prompt": record.get("prompt"),
                    "response": record.get("response"),
                    "score": int(answer.get("score", _whole_score(label))),
                    "rubric": answer.get("rubric") or {},
                }
                if record.get("model"):
                    line["model"] = record["model"]
                line["task_id"] = int(task_id)
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        return path
