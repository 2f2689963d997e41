"""Pairwise preference: which of two responses to a prompt (or a chat) is better; exported as DPO pairs for TRL.

The annotator clicks the better response (Label Studio `Pairwise`: left is response A, right is response B) or,
when `options.allow_tie`, says `tie` or `both-bad` instead; an optional `reason` is free text. Each annotation is
summarised as one label, A | B | tie | both-bad. Consensus is the majority label of a task (a tied vote, such as
A against B one each, is flagged and not published); agreement is the share of its voters who chose it.

When records name the model behind each response (`model_a`, `model_b`), the consensus of every finished task also
feeds a Bradley-Terry model: metrics["model_leaderboard"] ranks the models over the whole project. A task decided
for A or B is one win and one loss, a `tie` is half a win for each model, and `both-bad`, unresolved ties and a
model compared with itself are left out.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from labelflow.tasks.task_types.base import FROM_NAME
from labelflow.tasks.task_types.classification import fill_class_consensus, label_gold_metrics, label_match_scores
from labelflow.tasks.task_types.record_task import COMMON_OPTIONAL_FIELDS, RecordTaskType, answer_json, record_of

if TYPE_CHECKING:
    import random

    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec

log = logging.getLogger(__name__)

SIDES = ("A", "B")
VERDICTS = ("tie", "both-bad")
PREFERENCE_LABELS = (*SIDES, *VERDICTS)
# Pairwise reports the clicked object by its place in `toName`: response_a is left, response_b is right.
SIDE_OF_SELECTION = {"left": "A", "right": "B"}
SELECTION_OF_SIDE = {side: selected for selected, side in SIDE_OF_SELECTION.items()}
VERDICT_NAME = "verdict"  # the tie / both-bad Choices control
REASON_NAME = "reason"  # the optional free-text TextArea
PAIRWISE_TO_NAME = "response_a,response_b"
# Gold answers as people write them in a records file.
GOLD_SPELLINGS = {
    "a": "A",
    "b": "B",
    "tie": "tie",
    "both-bad": "both-bad",
    "both_bad": "both-bad",
    "bothbad": "both-bad",
}
SIMULATED_REASONS = {
    "A": "Response A answers the question more directly.",
    "B": "Response B is more accurate and complete.",
    "tie": "Both responses are equally good.",
    "both-bad": "Neither response answers the question.",
}


class PreferenceOptions(BaseModel):
    """The spec's `options:` for a preference task."""

    model_config = ConfigDict(extra="forbid")

    chat: bool = False  # the prompt field holds a chat (a JSON list of {role, content}), shown as a dialogue
    allow_tie: bool = True  # offer `tie` and `both-bad` next to picking a side
    ask_reason: bool = True  # offer an optional free-text reason


def parse_chat(value: Any) -> list[dict[str, str]]:
    """A chat field (JSON text or an already parsed list) as [{role, content}] messages; ValueError names the field."""
    messages = value
    if isinstance(value, str):
        try:
            messages = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("prompt: options.chat expects a JSON list of {role, content} messages, not text") from None
    if not isinstance(messages, list) or not messages:
        raise ValueError("prompt: options.chat expects a non-empty list of {role, content} messages")
    chat = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(f"prompt: message {number} is not a {{role, content}} object")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"prompt: message {number} has no text `content`")
        chat.append({"role": message["role"], "content": message["content"]})
    return chat


class Preference(RecordTaskType):
    """Two responses to one prompt; the annotator picks the better one (or a tie, or both bad)."""

    name: ClassVar[str] = "preference"
    export_file = "preference.jsonl"
    expectation_suite = "preference"
    predictors = frozenset({"openai"})
    record_fields: ClassVar[tuple[str, ...]] = ("prompt", "response_a", "response_b")
    optional_record_fields: ClassVar[tuple[str, ...]] = ("model_a", "model_b", *COMMON_OPTIONAL_FIELDS)
    options_model = PreferenceOptions
    control_names: ClassVar[frozenset[str]] = frozenset({FROM_NAME, VERDICT_NAME, REASON_NAME})

    # --- spec and interface -----------------------------------------------------------------------------------

    def check_spec(self, spec: ProjectSpec) -> None:
        """The interface is built in, and the answers are fixed (A, B, tie, both-bad), so `labels` has no use."""
        super().check_spec(spec)
        if spec.labels:
            raise ValueError(f"labels: task preference answers with {', '.join(PREFERENCE_LABELS)}; remove `labels`")

    def label_config_for(self, spec: ProjectSpec) -> str:
        """The prompt (text, or a chat as a dialogue), responses A and B side by side, and the answer controls."""
        options: PreferenceOptions = spec.task_options
        if options.chat:
            prompt = '<Paragraphs name="prompt" value="$prompt" layout="dialogue" nameKey="role" textKey="content"/>'
        else:
            prompt = '<Text name="prompt" value="$prompt"/>'
        instruction = "Click the better response" + (", or choose tie / both bad below" if options.allow_tie else "")
        parts = [
            "<View>",
            '  <Header value="Prompt"/>',
            f"  {prompt}",
            f'  <Header value="{instruction}"/>',
            f'  <Pairwise name="{FROM_NAME}" toName="{PAIRWISE_TO_NAME}"/>',
            '  <View style="display: flex; gap: 1em;">',
            '    <View style="flex: 1;"><Header value="Response A" size="5"/>'
            '<Text name="response_a" value="$response_a"/></View>',
            '    <View style="flex: 1;"><Header value="Response B" size="5"/>'
            '<Text name="response_b" value="$response_b"/></View>',
            "  </View>",
        ]
        if options.allow_tie:
            parts += [
                f'  <Choices name="{VERDICT_NAME}" toName="prompt" choice="single" showInLine="true">',
                '    <Choice value="tie" hint="Both responses are equally good"/>',
                '    <Choice value="both-bad" hint="Neither response is acceptable"/>',
                "  </Choices>",
            ]
        if options.ask_reason:
            parts.append(
                f'  <TextArea name="{REASON_NAME}" toName="prompt" placeholder="Why? (optional)" '
                'maxSubmissions="1" editable="true" rows="2"/>'
            )
        parts.append("</View>")
        return "\n".join(parts)

    def record_task_data(self, fields: dict[str, str | list[str]], spec: ProjectSpec) -> dict[str, Any]:
        """The record's fields; with `options.chat`, the prompt's JSON text parsed into messages for `Paragraphs`."""
        data: dict[str, Any] = dict(fields)
        if spec.task_options.chat:
            data["prompt"] = parse_chat(fields["prompt"])
        return data

    def gold_of(self, record: dict[str, Any]) -> str | None:
        """The record's `gold` as A, B, tie or both-bad (case and `both_bad` forgiven); None when absent or unknown."""
        value = record.get("gold")
        if value in (None, ""):
            return None
        return GOLD_SPELLINGS.get(str(value).strip().lower())

    # --- collected results -> table rows ----------------------------------------------------------------------

    def parse_answer(
        self, items: list[dict[str, Any]], data: dict[str, Any], spec: ProjectSpec
    ) -> tuple[str | None, dict[str, Any] | None, list[str]]:
        """(A | B | tie | both-bad, {"preferred", "reason"}, problems): picking neither, or a side and a verdict, is a problem."""
        problems: list[str] = []
        sides: list[str] = []
        verdicts: list[str] = []
        reasons: list[str] = []
        for item in items:
            value = item.get("value") or {}
            control = item.get("from_name")
            if control == FROM_NAME:
                selected = value.get("selected")
                if selected in SIDE_OF_SELECTION:
                    sides.append(SIDE_OF_SELECTION[selected])
                elif selected not in (None, "none"):
                    problems.append(f"unknown pairwise selection {selected!r}")
            elif control == VERDICT_NAME:
                for choice in value.get("choices") or []:
                    if choice in VERDICTS:
                        verdicts.append(choice)
                    else:
                        problems.append(f"unknown choice {choice!r} (expected tie or both-bad)")
            elif control == REASON_NAME:
                reasons += [str(text).strip() for text in value.get("text") or [] if str(text).strip()]
        reason = "\n".join(reasons) or None
        picked = sorted(set(sides)) + sorted(set(verdicts))
        if not picked:
            problems.append("picks neither response")
        elif len(picked) > 1:
            problems.append(f"contradictory answer: {' and '.join(picked)}")
        if verdicts and not spec.task_options.allow_tie:
            problems.append("tie / both-bad chosen, but options.allow_tie is false")
        label = picked[0] if len(picked) == 1 else None
        return label, {"preferred": label, "reason": reason}, problems

    # --- judging ----------------------------------------------------------------------------------------------

    def judge(
        self,
        consensus: pd.DataFrame,
        votes: pd.DataFrame,
        reviews: pd.DataFrame,
        spec: ProjectSpec,
        metrics: dict[str, Any],
    ) -> tuple[pd.DataFrame, dict[str, dict[Any, Any]]]:
        """Majority (or Dawid-Skene) label per task, ties flagged; percent agreement, alpha and a model leaderboard."""
        import numpy as np

        from labelflow.tasks.agreement import (
            category_counts,
            kappa_headline,
            krippendorff_alpha_nominal,
            mean_or_none,
            pairwise_cohen_kappa,
            per_item_pairwise_agreement,
        )

        quality = spec.quality
        classes = list(PREFERENCE_LABELS)
        extra: dict[str, dict[Any, Any]] = {}
        consensus["label"] = None
        consensus["answer"] = None
        consensus["confidence"] = np.nan
        consensus["agreement"] = np.nan
        consensus["tie"] = False
        consensus["method"] = None
        votes = votes[votes["label"].isin(classes)]
        if len(votes):
            counts, _, _ = category_counts(votes)
            metrics["percent_agreement"] = mean_or_none(per_item_pairwise_agreement(counts))
            alpha = krippendorff_alpha_nominal(counts)
            metrics["krippendorff_alpha"] = None if np.isnan(alpha) else float(alpha)
            has = fill_class_consensus(consensus, votes, classes, quality, metrics, extra)
            tallies: dict[Any, Counter[str]] = {}
            for task_id, label in zip(votes["task_id"], votes["label"], strict=True):
                tallies.setdefault(task_id, Counter())[label] += 1
            reasons = self._reasons(votes)
            consensus.loc[has, "answer"] = [
                answer_json(
                    {
                        "preferred": label,
                        "votes": dict(tallies.get(task_id, {})),
                        "reasons": reasons.get((task_id, label), []),
                    }
                )
                for task_id, label in zip(consensus.loc[has, "task_id"], consensus.loc[has, "label"], strict=True)
            ]
        pairwise = pairwise_cohen_kappa(votes)
        metrics.update(kappa_headline(pairwise, quality.min_shared_tasks_for_kappa))
        reviews = reviews[reviews["label"].isin(classes)]
        if len(reviews):
            by_task = reviews.set_index("task_id")
            reviewed = consensus["task_id"].isin(by_task.index)
            review_of = by_task.loc[consensus.loc[reviewed, "task_id"]]
            consensus.loc[reviewed, "label"] = review_of["label"].to_numpy()
            consensus.loc[reviewed, "answer"] = [
                answer_json(
                    {
                        "preferred": label,
                        "votes": json.loads(previous)["votes"] if isinstance(previous, str) else {},
                        "reasons": [reason] if (reason := _reason_of(answer)) else [],
                    }
                )
                for label, answer, previous in zip(
                    review_of["label"], review_of["answer"], consensus.loc[reviewed, "answer"], strict=True
                )
            ]
            consensus.loc[reviewed, "confidence"] = 1.0
            consensus.loc[reviewed, "method"] = "review"
            consensus.loc[reviewed, "tie"] = False
            consensus.loc[reviewed & consensus["agreement"].isna(), "agreement"] = 1.0
        consensus["confidence"] = consensus["confidence"].astype(float)
        consensus["agreement"] = consensus["agreement"].astype(float)
        consensus["tie"] = consensus["tie"].astype(bool)
        leaderboard = model_leaderboard(consensus[consensus["finished"]])
        if leaderboard is not None:
            metrics["model_leaderboard"] = leaderboard
        return pairwise, extra

    @staticmethod
    def _reasons(votes: pd.DataFrame) -> dict[tuple[Any, str], list[str]]:
        """The non-empty reasons given with each (task, label), in annotation order."""
        found: dict[tuple[Any, str], list[str]] = {}
        answers = votes["answer"] if "answer" in votes.columns else [None] * len(votes)
        for task_id, label, answer in zip(votes["task_id"], votes["label"], answers, strict=True):
            reason = _reason_of(answer)
            if reason:
                found.setdefault((task_id, label), []).append(reason)
        return found

    def score_annotator(
        self, on_finished: pd.DataFrame, gold_labels: pd.Series, finished: pd.DataFrame, spec: ProjectSpec
    ) -> tuple[float | None, float | None]:
        """Accuracy on gold tasks, and the share of shared tasks where the annotator chose the consensus label."""
        return label_match_scores(on_finished, gold_labels, finished)

    def gold_metrics(self, finished: pd.DataFrame, spec: ProjectSpec) -> dict[str, Any]:
        """How often consensus matches the records' gold answers, on finished gold tasks."""
        return label_gold_metrics(finished)

    def validation_columns(self, frame: pd.DataFrame, table: str, spec: ProjectSpec) -> pd.DataFrame:
        """`picks_a_response`: the row's label is A, B, tie or both-bad (a result that picks neither has none)."""
        frame = frame.copy()
        frame["picks_a_response"] = frame["label"].isin(PREFERENCE_LABELS) & frame["label"].notna()
        return frame

    def spec_expectations(self, spec: ProjectSpec, table: str) -> list[tuple[str, dict[str, Any], str]]:
        """Without `options.allow_tie`, every label is a side."""
        if spec.task_options.allow_tie:
            return []
        what = "annotation" if table == "annotations" else "consensus label"
        return [
            (
                "expect_column_values_to_be_in_set",
                {"column": "label", "value_set": list(SIDES)},
                f"options.allow_tie is false: every {what} picks response A or B",
            )
        ]

    # --- annotation simulation --------------------------------------------------------------------------------

    def simulated_answer(
        self, data: dict[str, Any], spec: ProjectSpec, accuracy: float, spammer: bool, rng: random.Random
    ) -> list[dict[str, Any]] | None:
        """The gold answer with probability `accuracy`, else the other side (a side, for a gold tie); spammers: uniform."""
        gold = self.gold_of(data)
        if gold is None:
            return None
        options: PreferenceOptions = spec.task_options
        allowed = list(PREFERENCE_LABELS) if options.allow_tie else list(SIDES)
        if spammer:
            label = rng.choice(allowed)
        elif rng.random() < accuracy and gold in allowed:
            label = gold
        elif gold in SIDES:
            label = "B" if gold == "A" else "A"
        else:
            label = rng.choice(SIDES)
        return preference_result(label, SIMULATED_REASONS[label] if options.ask_reason and rng.random() < 0.3 else None)

    # --- dataset ----------------------------------------------------------------------------------------------

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """preference.jsonl: TRL's preference format, {prompt, chosen, rejected} per task decided for A or B.

        Standard form: three strings. With `options.chat`, the conversational form: the prompt's messages, and
        chosen/rejected as one assistant message each. Tasks whose consensus is tie or both-bad are skipped (and
        logged); rows follow consensus.parquet's task order, which holds each row's lineage.
        """
        chat = spec.task_options.chat
        path = folder / self.export_file
        skipped: Counter[str] = Counter()
        written = 0
        with path.open("w", encoding="utf-8") as handle:
            for record_text, label in rows[["record", "label"]].itertuples(index=False):
                if label not in SIDES:
                    skipped[str(label)] += 1
                    continue
                record = record_of(record_text)
                chosen, rejected = (
                    (record["response_a"], record["response_b"])
                    if label == "A"
                    else (record["response_b"], record["response_a"])
                )
                if chat:
                    pair = {
                        "prompt": parse_chat(record["prompt"]),
                        "chosen": [{"role": "assistant", "content": chosen}],
                        "rejected": [{"role": "assistant", "content": rejected}],
                    }
                else:
                    pair = {"prompt": record["prompt"], "chosen": chosen, "rejected": rejected}
                handle.write(json.dumps(pair, ensure_ascii=False) + "\n")
                written += 1
        log.info("%s: %d preference pairs; skipped %s", path.name, written, dict(skipped) or "none")
        return path


def _reason_of(answer: Any) -> str | None:
    """The reason in an annotation's answer JSON, if any."""
    reason = record_of(answer).get("reason")
    return reason if isinstance(reason, str) and reason.strip() else None


def preference_result(label: str, reason: str | None = None) -> list[dict[str, Any]]:
    """A Label Studio result answering a preference task: a side (Pairwise) or tie / both-bad (Choices)."""
    if label in SIDES:
        items = [
            {
                "from_name": FROM_NAME,
                # Label Studio's editor stores (and only displays) a Pairwise choice addressed to the control itself.
                "to_name": FROM_NAME,
                "type": "pairwise",
                "value": {"selected": SELECTION_OF_SIDE[label]},
            }
        ]
    elif label in VERDICTS:
        items = [{"from_name": VERDICT_NAME, "to_name": "prompt", "type": "choices", "value": {"choices": [label]}}]
    else:
        raise ValueError(f"label: {label!r} is not one of {', '.join(PREFERENCE_LABELS)}")
    if reason:
        items.append({"from_name": REASON_NAME, "to_name": "prompt", "type": "textarea", "value": {"text": [reason]}})
    return items


def model_leaderboard(decided: pd.DataFrame) -> list[dict[str, Any]] | None:
    """Bradley-Terry strengths of the responding models from tasks' consensus labels; None without model names.

    A task decided for A or B is a win for that side's model and a loss for the other; `tie` counts half a win for
    each. `both-bad`, unresolved ties (no label) and a model compared with itself are not comparisons.
    """
    import numpy as np

    from labelflow.tasks.comparisons import bradley_terry

    firsts: list[str] = []
    seconds: list[str] = []
    outcomes: list[float] = []
    named = False
    for record_text, label in decided[["record", "label"]].itertuples(index=False):
        record = record_of(record_text)
        model_a, model_b = record.get("model_a"), record.get("model_b")
        if not model_a or not model_b:
            continue
        named = True
        if model_a == model_b or label not in ("A", "B", "tie"):
            continue
        firsts.append(str(model_a))
        seconds.append(str(model_b))
        outcomes.append({"A": 1.0, "B": 0.0, "tie": 0.5}[label])
    if not named:
        return None
    models = sorted(set(firsts) | set(seconds))
    if not models:
        return []
    index = {model: position for position, model in enumerate(models)}
    first = np.array([index[m] for m in firsts], dtype=np.int64)
    second = np.array([index[m] for m in seconds], dtype=np.int64)
    outcome = np.array(outcomes, dtype=np.float64)
    strength, _ = bradley_terry(first, second, outcome, len(models))
    wins = np.zeros(len(models))
    losses = np.zeros(len(models))
    ties = np.zeros(len(models))
    np.add.at(wins, first[outcome == 1.0], 1)
    np.add.at(wins, second[outcome == 0.0], 1)
    np.add.at(losses, second[outcome == 1.0], 1)
    np.add.at(losses, first[outcome == 0.0], 1)
    np.add.at(ties, first[outcome == 0.5], 1)
    np.add.at(ties, second[outcome == 0.5], 1)
    board = [
        {
            "model": model,
            "strength": float(strength[i]),
            "wins": int(wins[i]),
            "losses": int(losses[i]),
            "ties": int(ties[i]),
            "comparisons": int(wins[i] + losses[i] + ties[i]),
        }
        for i, model in enumerate(models)
    ]
    return sorted(board, key=lambda row: (-row["strength"], row["model"]))
