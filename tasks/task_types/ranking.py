"""Ranking: annotators order 3 to 10 responses to a prompt (List + Ranker); consensus by Borda count.

An answer is the order as 1-based response numbers, best first: label `2>1>3`, answer {"order": [2, 1, 3],
"responses": 3}. Agreement per task is Kendall's W over its annotators' rankings. Consensus is the Borda order
(each response gets n - 1 - position points from every ranking); Borda ties go to the lower response number, and a
tie for first place is flagged. Exported as `ranking.jsonl` (prompt and responses best first) and as every pair the
consensus order implies, in TRL's DPO format (`ranking_pairs.jsonl`).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from labelflow.tasks.task_types.base import FROM_NAME
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

    from labelflow.tasks.spec import ProjectSpec, RecordsSpec

MIN_RESPONSES, MAX_RESPONSES = 3, 10
LIST_NAME = "responses"  # the List tag the Ranker orders; results name it as `to_name`
# `r1`, not `1`: JavaScript objects list integer-like keys in numeric order, and the List tag indexes items by id.
ITEM_ID = re.compile(r"^r([1-9][0-9]*)$")
ORDER_SEPARATORS = re.compile(r"\s*[>,]\s*")
PAIRWISE_COLUMNS = ["annotator_a", "annotator_b", "shared_tasks", "mean_kendall_tau"]


def item_id(number: int) -> str:
    """The Ranker item id of response `number` (1-based)."""
    return f"r{number}"


def order_label(order: list[int]) -> str:
    """The summary label of an order: `2>1>3`."""
    return ">".join(str(number) for number in order)


def parse_order(value: Any) -> list[int] | None:
    """An order of 1-based response numbers from `2>1>3`, `2, 1, 3` or a JSON list `[2, 1, 3]`; None otherwise."""
    if isinstance(value, list):
        parts: list[Any] = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.startswith("["):
            try:
                parts = json.loads(text)
            except json.JSONDecodeError:
                return None
            if not isinstance(parts, list):
                return None
        else:
            parts = ORDER_SEPARATORS.split(text)
    else:
        return None
    order = []
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, int | str) or not str(part).strip().isdigit():
            return None
        order.append(int(part))
    return order or None


def is_permutation(order: Any, responses: int | None) -> bool:
    """True when `order` names each of responses 1..`responses` exactly once."""
    return (
        isinstance(order, list)
        and responses is not None
        and all(isinstance(k, int) and not isinstance(k, bool) for k in order)
        and sorted(order) == list(range(1, responses + 1))
    )


def kendall_tau(first: list[int], second: list[int]) -> float:
    """Kendall's tau between two orders of the same responses (no ties): 1 identical, -1 reversed."""
    n = len(first)
    if n < 2:
        return math.nan
    position = {number: index for index, number in enumerate(second)}
    ranks = [position[number] for number in first]
    discordant = sum(1 for i in range(n) for j in range(i + 1, n) if ranks[i] > ranks[j])
    return 1.0 - 4.0 * discordant / (n * (n - 1))


def _responses_of(data: dict[str, Any]) -> list[str]:
    """The response texts of a task's data or record (a list field; JSON text when read back from a table)."""
    responses = data.get("responses")
    if isinstance(responses, str):
        try:
            responses = json.loads(responses)
        except json.JSONDecodeError:
            return []
    return [str(text) for text in responses] if isinstance(responses, list) else []


def _item_ids(data: dict[str, Any]) -> list[str]:
    """The Ranker item ids of a task, in response order."""
    items = data.get("items")
    if isinstance(items, list) and items:
        return [str(item.get("id")) if isinstance(item, dict) else "" for item in items]
    return [item_id(number) for number in range(1, len(_responses_of(data)) + 1)]


def _ranker_ids(item: dict[str, Any]) -> list[Any] | None:
    """The ordered ids of one Ranker result: under the Ranker's name (Label Studio), else its only list."""
    ranker = (item.get("value") or {}).get("ranker")
    if not isinstance(ranker, dict):
        return None
    ids = ranker.get(item.get("from_name"))
    if ids is None and len(ranker) == 1:
        ids = next(iter(ranker.values()))
    return ids if isinstance(ids, list) else None


class Ranking(RecordTaskType):
    """A prompt and 3 to 10 responses, ordered best first by each annotator."""

    name: ClassVar[str] = "ranking"
    export_file = "ranking.jsonl"
    # Written next to the export, but only registered in the manifest once tasks/dataset.py registers extra files.
    extra_export_files: ClassVar[tuple[str, ...]] = ("ranking_pairs.jsonl",)
    expectation_suite = "ranking"
    predictors = frozenset()
    record_fields: ClassVar[tuple[str, ...]] = ("prompt", "responses")
    optional_record_fields: ClassVar[tuple[str, ...]] = ("models", *COMMON_OPTIONAL_FIELDS)
    list_record_fields: ClassVar[frozenset[str]] = frozenset({"responses", "models"})
    control_names: ClassVar[frozenset[str]] = frozenset({FROM_NAME})

    # --- spec and interface -----------------------------------------------------------------------------------

    def check_records(self, records: RecordsSpec | None) -> None:
        """3 to 10 distinct response paths, and one model path per response when models are mapped."""
        super().check_records(records)
        if records is None:
            return  # unreachable: the base check refuses a record type without records
        responses = records.paths("responses")
        if not MIN_RESPONSES <= len(responses) <= MAX_RESPONSES:
            raise ValueError(
                f"records.fields.responses: a ranking needs {MIN_RESPONSES} to {MAX_RESPONSES} responses, "
                f"got {len(responses)}"
            )
        repeated = [path for path, count in Counter(responses).items() if count > 1]
        if repeated:
            raise ValueError(f"records.fields.responses: path {repeated[0]!r} is listed twice")
        if "models" in records.fields and len(records.paths("models")) != len(responses):
            raise ValueError(
                f"records.fields.models: one model per response expected: {len(records.paths('models'))} models "
                f"for {len(responses)} responses"
            )

    def label_config_for(self, spec: ProjectSpec) -> str:
        """The prompt, the responses as a List, and a Ranker ordering them."""
        return (
            '<View>\n  <Header value="Prompt"/>\n  <Text name="prompt" value="$prompt"/>\n'
            f'  <Header value="Order the responses, best first (drag and drop)"/>\n'
            f'  <List name="{LIST_NAME}" value="$items" title="Responses"/>\n'
            f'  <Ranker name="{FROM_NAME}" toName="{LIST_NAME}"/>\n</View>'
        )

    def record_task_data(self, fields: dict[str, str | list[str]], spec: ProjectSpec) -> dict[str, Any]:
        """The record's fields plus `items`, the List tag's data: one {id, title, body} per response.

        Titles are neutral (`Response 2`), never the model's name, so annotators judge the text alone.
        """
        responses = fields["responses"]
        texts = [responses] if isinstance(responses, str) else list(responses)
        items = [
            {"id": item_id(number), "title": f"Response {number}", "body": text}
            for number, text in enumerate(texts, start=1)
        ]
        return {**fields, "items": items}

    # --- answers ----------------------------------------------------------------------------------------------

    def parse_answer(
        self, items: list[dict[str, Any]], data: dict[str, Any], spec: ProjectSpec
    ) -> tuple[str | None, dict[str, Any] | None, list[str]]:
        """The order as response numbers best first; anything but a permutation of the task's responses is a problem."""
        rankings = [item for item in items if isinstance((item.get("value") or {}).get("ranker"), dict)]
        if not rankings:
            return None, None, ["no ranking given"]
        problems = [f"{len(rankings)} rankings given; the first is read"] if len(rankings) > 1 else []
        ids = _ranker_ids(rankings[0])
        if ids is None:
            return None, None, [*problems, "the ranking holds no list of response ids"]
        number_of = {identifier: number for number, identifier in enumerate(_item_ids(data), start=1)}
        responses = len(number_of)
        order = [number_of[str(i)] for i in ids if str(i) in number_of]
        unknown = [str(i) for i in ids if str(i) not in number_of]
        answer: dict[str, Any] = {"order": order, "responses": responses}
        if unknown or not is_permutation(order, responses):
            counts = Counter(order)
            details = []
            missing = [number for number in range(1, responses + 1) if number not in counts]
            duplicated = sorted(number for number, count in counts.items() if count > 1)
            if missing:
                details.append(f"missing {', '.join(map(str, missing))}")
            if duplicated:
                details.append(f"duplicated {', '.join(map(str, duplicated))}")
            if unknown:
                answer["unknown"] = unknown
                details.append(f"unknown ids {unknown[:5]}")
            problems.append(f"not a permutation of the {responses} responses: {'; '.join(details)}")
            return None, answer, problems
        return order_label(order), answer, problems

    def gold_of(self, record: dict[str, Any]) -> str | None:
        """The record's gold order as `2>1>3` when it orders the record's responses; else the text as written."""
        value = record.get("gold")
        if value in (None, ""):
            return None
        order = parse_order(value)
        if order is not None and is_permutation(order, len(_responses_of(record))):
            return order_label(order)
        return str(value).strip()  # never equal to a valid order: annotators and consensus score 0 on it

    # --- judging ----------------------------------------------------------------------------------------------

    def judge(
        self,
        consensus: pd.DataFrame,
        votes: pd.DataFrame,
        reviews: pd.DataFrame,
        spec: ProjectSpec,
        metrics: dict[str, Any],
    ) -> tuple[pd.DataFrame, dict[str, dict[Any, Any]]]:
        """Borda order per task; agreement and confidence are Kendall's W of the task's rankings."""
        import numpy as np
        import pandas as pd

        from labelflow.tasks.agreement import mean_or_none
        from labelflow.tasks.comparisons import borda_scores, kendalls_w

        orders_by_task: dict[int, list[tuple[Any, list[int]]]] = {}
        for task_id, annotator_id, answer in votes[["task_id", "annotator_id", "answer"]].itertuples(index=False):
            order = answer_of(answer).get("order")
            if is_permutation(order, len(order or [])):
                orders_by_task.setdefault(int(task_id), []).append((annotator_id, order))

        size = len(consensus)
        labels: list[str | None] = [None] * size
        answers: list[str | None] = [None] * size
        concordance = np.full(size, np.nan)
        ties = np.zeros(size, dtype=bool)
        for row, task_id in enumerate(consensus["task_id"]):
            orders = [order for _, order in orders_by_task.get(int(task_id), [])]
            if not orders or len({len(order) for order in orders}) > 1:
                continue  # no rankings, or rankings of different lengths that cannot be pooled
            n = len(orders[0])
            scores = borda_scores([[number - 1 for number in order] for order in orders], n)
            # For complete rankings the mean rank is Borda rescaled, so it cannot split a Borda tie: the lower
            # response number goes first, and a shared best score is flagged as a tie.
            best_first = [item + 1 for item in sorted(range(n), key=lambda item: (-scores[item], item))]
            labels[row] = order_label(best_first)
            answers[row] = answer_json({"order": best_first, "responses": n, "borda": scores.tolist()})
            concordance[row] = kendalls_w(np.array([[order.index(k) + 1 for k in range(1, n + 1)] for order in orders]))
            ties[row] = bool((scores == scores.max()).sum() > 1)
        consensus["label"] = pd.Series(labels, index=consensus.index, dtype=object)
        consensus["answer"] = pd.Series(answers, index=consensus.index, dtype=object)
        consensus["confidence"] = concordance
        consensus["agreement"] = concordance
        consensus["tie"] = ties
        consensus["method"] = pd.Series(["borda" if label else None for label in labels], index=consensus.index)
        metrics["mean_kendalls_w"] = mean_or_none(concordance[~np.isnan(concordance)].tolist())

        if len(reviews):
            by_task = reviews.set_index("task_id")
            reviewed = consensus["task_id"].isin(by_task.index) & consensus["task_id"].map(by_task["label"]).notna()
            consensus.loc[reviewed, "label"] = consensus.loc[reviewed, "task_id"].map(by_task["label"])
            consensus.loc[reviewed, "answer"] = consensus.loc[reviewed, "task_id"].map(by_task["answer"])
            consensus.loc[reviewed, "confidence"] = 1.0
            consensus.loc[reviewed, "method"] = "review"
            consensus.loc[reviewed, "tie"] = False
            consensus.loc[reviewed & consensus["agreement"].isna(), "agreement"] = 1.0

        gold = consensus.set_index("task_id")["gold_label"].map(parse_order)
        gold_tau: dict[Any, list[float]] = {}
        for task_id, ranked in orders_by_task.items():
            truth = gold.get(task_id)
            for annotator_id, order in ranked:
                if is_permutation(truth, len(order)):
                    gold_tau.setdefault(annotator_id, []).append(kendall_tau(order, truth))
        extra = {"gold_kendall_tau": {annotator: float(np.mean(taus)) for annotator, taus in gold_tau.items()}}
        return pd.DataFrame(self._pairwise(orders_by_task), columns=PAIRWISE_COLUMNS), extra

    @staticmethod
    def _pairwise(orders_by_task: dict[int, list[tuple[Any, list[int]]]]) -> list[dict[str, Any]]:
        """Mean Kendall's tau of every annotator pair over the tasks both ranked."""
        taus: dict[tuple[int, int], list[float]] = {}
        for ranked in orders_by_task.values():
            by_annotator = {int(annotator): order for annotator, order in ranked}
            annotators = sorted(by_annotator)
            for i, a in enumerate(annotators):
                for b in annotators[i + 1 :]:
                    taus.setdefault((a, b), []).append(kendall_tau(by_annotator[a], by_annotator[b]))
        return [
            {
                "annotator_a": a,
                "annotator_b": b,
                "shared_tasks": len(values),
                "mean_kendall_tau": sum(values) / len(values),
            }
            for (a, b), values in sorted(taus.items())
        ]

    def score_annotator(
        self, on_finished: pd.DataFrame, gold_labels: pd.Series, finished: pd.DataFrame, spec: ProjectSpec
    ) -> tuple[float | None, float | None]:
        """Share of gold tasks ranked exactly as gold; agreement is mean (tau + 1) / 2 with the consensus order."""
        gold_accuracy = agreement = None
        on_gold = on_finished[gold_labels.notna()]
        if len(on_gold):
            gold_accuracy = float((on_gold["label"] == gold_labels[gold_labels.notna()]).mean())
        # Compare with consensus only where someone else also ranked, so a lone ranking does not agree with itself.
        shared = on_finished[on_finished["task_id"].map(finished["annotations"]) >= 2]
        similarities = []
        for label, consensus_label in zip(shared["label"], shared["task_id"].map(finished["label"]), strict=True):
            own, together = parse_order(label), parse_order(consensus_label)
            if own is not None and together is not None and sorted(own) == sorted(together):
                similarities.append((kendall_tau(own, together) + 1.0) / 2.0)
        if similarities:
            agreement = sum(similarities) / len(similarities)
        return gold_accuracy, agreement

    def gold_metrics(self, finished: pd.DataFrame, spec: ProjectSpec) -> dict[str, Any]:
        """How often the consensus order is exactly gold, and its mean Kendall's tau with gold."""
        gold_tasks = finished[finished["gold_label"].notna()]
        if not len(gold_tasks):
            return {}
        taus = []
        for label, gold in zip(gold_tasks["label"], gold_tasks["gold_label"], strict=True):
            order, truth = parse_order(label), parse_order(gold)
            if order is not None and truth is not None and sorted(order) == sorted(truth):
                taus.append(kendall_tau(order, truth))
        return {
            "gold_tasks": len(gold_tasks),
            "consensus_accuracy_on_gold": float((gold_tasks["label"] == gold_tasks["gold_label"]).mean()),
            "mean_kendall_tau_on_gold": sum(taus) / len(taus) if taus else None,
        }

    # --- validation -------------------------------------------------------------------------------------------

    def validation_columns(self, frame: pd.DataFrame, table: str, spec: ProjectSpec) -> pd.DataFrame:
        """`responses` (how many the task shows) and `is_permutation` (the order names each exactly once)."""
        import pandas as pd

        answers = frame["answer"].map(answer_of) if "answer" in frame.columns else pd.Series([{}] * len(frame))
        answers.index = frame.index
        counts = answers.map(lambda answer: answer.get("responses"))
        if table == "consensus" and "record" in frame.columns:
            shown = frame["record"].map(lambda record: len(_responses_of(record_of(record))) or None)
            counts = shown.where(shown.notna(), counts)
        permutation = [
            not answer.get("unknown") and is_permutation(answer.get("order"), count)
            for answer, count in zip(answers, counts, strict=True)
        ]
        return frame.assign(
            responses=pd.to_numeric(counts, errors="coerce").astype("float64"),
            is_permutation=pd.Series(permutation, index=frame.index, dtype=bool),
        )

    # --- simulation -------------------------------------------------------------------------------------------

    def simulated_answer(
        self, data: dict[str, Any], spec: ProjectSpec, accuracy: float, spammer: bool, rng: random.Random
    ) -> list[dict[str, Any]] | None:
        """Gold with probability `accuracy`, else gold with one adjacent pair swapped; a spammer's is random."""
        ids = _item_ids(data)
        truth = parse_order(self.gold_of(data))
        if truth is None or not is_permutation(truth, len(ids)):
            return None
        order = list(truth)
        if spammer:
            rng.shuffle(order)
        elif rng.random() >= accuracy:
            swap = rng.randrange(len(order) - 1)
            order[swap], order[swap + 1] = order[swap + 1], order[swap]
        value = {"ranker": {FROM_NAME: [ids[number - 1] for number in order]}}
        return [{"from_name": FROM_NAME, "to_name": LIST_NAME, "type": "ranker", "value": value}]

    # --- dataset ----------------------------------------------------------------------------------------------

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """ranking.jsonl ({task_id, prompt, order, ranked, models}) and ranking_pairs.jsonl ({prompt, chosen, rejected}).

        The pairs file holds, per task, every pair the consensus order implies (n(n-1)/2 of them), the better
        response as `chosen`: the standard (non-conversational) preference format of TRL's DPOTrainer.
        """
        path = folder / self.export_file
        pairs_path = folder / self.extra_export_files[0]
        with path.open("w", encoding="utf-8") as ranked_file, pairs_path.open("w", encoding="utf-8") as pairs_file:
            for task_id, record_text, label, answer in rows[["task_id", "record", "label", "answer"]].itertuples(
                index=False
            ):
                record = record_of(record_text)
                responses = _responses_of(record)
                order = answer_of(answer).get("order") or parse_order(label)
                if not is_permutation(order, len(responses)):
                    continue  # validation refuses such rows before publication; never export a wrong pairing
                prompt = record.get("prompt")
                ranked = [responses[number - 1] for number in order]
                line: dict[str, Any] = {"task_id": int(task_id), "prompt": prompt, "order": order, "ranked": ranked}
                models = record.get("models")
                if isinstance(models, list) and len(models) == len(responses):
                    line["models"] = [models[number - 1] for number in order]
                ranked_file.write(json.dumps(line, ensure_ascii=False) + "\n")
                for better in range(len(ranked)):
                    for worse in range(better + 1, len(ranked)):
                        pair = {"prompt": prompt, "chosen": ranked[better], "rejected": ranked[worse]}
                        pairs_file.write(json.dumps(pair, ensure_ascii=False) + "\n")
        return path
