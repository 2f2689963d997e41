"""Supervised fine-tuning data: annotators write (or edit a model's draft of) the answer to a prompt.

Answers are free text, so they are compared by similarity, never equality. The similarity is chrF (character
n-grams up to 6, recall weighted by beta 2; tasks/comparisons.chrf), chosen over normalised edit distance because
it needs no tokenizer and treats Chinese or Japanese exactly like spaced scripts, and because it rewards two answers
that say the same things in another order, which an edit distance counts as a rewrite. It runs from 0 (no shared
character n-gram) to 1 (the same text up to whitespace). Measured (English and Chinese): light edits of an answer
score 0.91 to 1 against it, its first 15-40 per cent 0.10 to 0.44, unrelated text 0.02 to 0.13, and two good
answers written independently only 0.12 to 0.29. So agreement means "the answers share their wording": annotators
editing one draft clear the default quality.min_agreement of 0.6, while a spec whose annotators write from scratch
should lower it (0.1 to 0.2) and rely on reviewers and gold references instead.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from labelflow.tasks.task_types import free_text
from labelflow.tasks.task_types.base import FROM_NAME
from labelflow.tasks.task_types.free_text import answer_digest, answer_text, judge_free_text, normalised
from labelflow.tasks.task_types.record_task import (
    COMMON_OPTIONAL_FIELDS,
    RecordTaskType,
    answer_of,
    record_of,
)

if TYPE_CHECKING:
    import random

    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec

# A consensus answer "matches" its reference when chrF reaches this: a truncated or unrelated answer stays below it,
# light edits are far above (`consensus_accuracy_on_gold`, the share of gold tasks that match).
GOLD_MATCH_CHRF = 0.5
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
# What a careful annotator adds to a correct answer in the simulator, by script.
ADDED_SENTENCES = {
    False: ("Hope this helps.", "Let me know if anything is unclear.", "That is all you need."),
    True: ("希望对你有帮助。", "如有疑问请告诉我。", "就是这样。"),
}


class SftOptions(BaseModel):
    """The `sft` type's settings (spec `options:`)."""

    model_config = ConfigDict(extra="forbid")

    # An answer identical to the record's draft (after NFC and whitespace normalisation) is a problem: the
    # annotation is invalid and fails validation. Needs a `draft` field in records.fields.
    forbid_unedited_draft: bool = False
    # Prompts are chats (JSON lists of {role, content}), shown as a dialogue; a plain-text prompt is one user turn.
    chat: bool = False


def chat_messages(prompt: Any) -> list[dict[str, str]] | None:
    """A chat prompt (a list, or its JSON text) as [{role, content}] messages; None when it is not a chat."""
    value = prompt
    if isinstance(prompt, str):
        if not prompt.lstrip().startswith("["):
            return None
        try:
            value = json.loads(prompt)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, list) or not value:
        return None
    messages = []
    for message in value:
        if not isinstance(message, dict):
            return None
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            return None
        messages.append({"role": role, "content": content})
    return messages


def textarea_result(text: str, to_name: str = "prompt") -> list[dict[str, Any]]:
    """A Label Studio TextArea result holding one answer."""
    return free_text.textarea_result(text, to_name)


def _symmetric_chrf(a: str, b: str) -> float:
    from labelflow.tasks.comparisons import chrf

    return (chrf(a, b) + chrf(b, a)) / 2.0


class SupervisedFineTuning(RecordTaskType):
    """A prompt (and optionally a model's draft) in, a written answer out; exported as chat messages for SFT."""

    name: ClassVar[str] = "sft"
    export_file = "sft.jsonl"
    expectation_suite = "sft"
    predictors = frozenset({"openai"})  # the openai predictor's draft answer, imported as a prediction
    record_fields: ClassVar[tuple[str, ...]] = ("prompt",)
    optional_record_fields: ClassVar[tuple[str, ...]] = ("draft", "draft_model", *COMMON_OPTIONAL_FIELDS)
    options_model = SftOptions
    control_names: ClassVar[frozenset[str]] = frozenset({FROM_NAME})
    refuse_empty_annotations: ClassVar[bool] = False  # the answer TextArea is `required` instead (see the base)

    # --- spec and interface -----------------------------------------------------------------------------------

    def check_spec(self, spec: ProjectSpec) -> None:
        """The built-in interface only; an unedited draft can only be refused when records carry one."""
        super().check_spec(spec)
        options: SftOptions = spec.task_options
        if options.forbid_unedited_draft and not self._has_draft(spec):
            raise ValueError("options.forbid_unedited_draft: needs the records' drafts; map records.fields.draft")

    @staticmethod
    def _has_draft(spec: ProjectSpec) -> bool:
        return spec.records is not None and "draft" in spec.records.fields

    def label_config_for(self, spec: ProjectSpec) -> str:
        """The prompt (text or dialogue), the read-only draft when records have one, and the answer's TextArea.

        The TextArea starts out holding the draft (`value="$draft"`), so annotators edit it in place; an openai
        prediction, when there is one, takes the TextArea's single submission instead.
        """
        options: SftOptions = spec.task_options
        if options.chat:
            prompt = '<Paragraphs name="prompt" value="$prompt" layout="dialogue" nameKey="role" textKey="content"/>'
        else:
            prompt = '<Text name="prompt" value="$prompt"/>'
        lines = ["<View>", '  <Header value="Prompt"/>', f"  {prompt}"]
        prefill = ""
        if self._has_draft(spec):
            lines += ['  <Header value="Model draft (read-only)"/>', '  <Text name="draft" value="$draft"/>']
            prefill = ' value="$draft"'
        lines += [
            '  <Header value="Your answer"/>',
            f'  <TextArea name="{FROM_NAME}" toName="prompt" editable="true" maxSubmissions="1" rows="8" '
            f'required="true"{prefill}/>',
            "</View>",
        ]
        return "\n".join(lines)

    def record_task_data(self, fields: dict[str, str | list[str]], spec: ProjectSpec) -> dict[str, Any]:
        """In chat mode the prompt becomes the dialogue's messages (a plain-text prompt, one user message)."""
        data: dict[str, Any] = dict(fields)
        options: SftOptions = spec.task_options
        prompt = data.get("prompt")
        if options.chat and isinstance(prompt, str):
            data["prompt"] = chat_messages(prompt) or [{"role": "user", "content": prompt}]
        if self._has_draft(spec):
            # The interface reads $draft: Label Studio refuses a whole import batch with a task lacking it.
            data.setdefault("draft", "")
        return data

    # --- collected results -> table rows ----------------------------------------------------------------------

    def parse_answer(
        self, items: list[dict[str, Any]], data: dict[str, Any], spec: ProjectSpec
    ) -> tuple[str | None, dict[str, Any] | None, list[str]]:
        """(answer digest, {text, edited_from_draft}, problems); edited_from_draft is None without a draft."""
        texts: list[str] = []
        for item in items:
            value = (item.get("value") or {}).get("text")
            texts += [value] if isinstance(value, str) else [str(t) for t in value or []]
        if not texts:
            return None, None, ["no answer written"]
        problems = []
        if len(texts) > 1:
            problems.append(f"{len(texts)} answers submitted; the interface takes one")
        text = unicodedata.normalize("NFC", texts[0]).strip()
        draft = data.get("draft") if isinstance(data.get("draft"), str) and data["draft"].strip() else None  # "": none
        same_as_draft = isinstance(draft, str) and normalised(text) == normalised(draft)
        answer = {"text": text, "edited_from_draft": (not same_as_draft) if isinstance(draft, str) else None}
        if not text:
            return None, answer, ["empty or whitespace-only answer", *problems]
        options: SftOptions = spec.task_options
        if same_as_draft and options.forbid_unedited_draft:
            problems.append("the answer is the model draft unchanged (options.forbid_unedited_draft)")
        return answer_digest(text), answer, problems

    # --- judging ----------------------------------------------------------------------------------------------

    def judge(
        self,
        consensus: pd.DataFrame,
        votes: pd.DataFrame,
        reviews: pd.DataFrame,
        spec: ProjectSpec,
        metrics: dict[str, Any],
    ) -> tuple[pd.DataFrame, dict[str, dict[Any, Any]]]:
        """Consensus: the reviewer's answer, else the medoid of 2+ answers, else the one answer.

        Agreement is the mean pairwise chrF of a task's answers (2+ answers; NaN with one); confidence is the
        chosen answer's mean similarity to the others (1.0 for a reviewer's answer).
        """
        from labelflow.tasks.agreement import mean_or_none
        from labelflow.tasks.comparisons import pairwise_similarity

        agreements, pairwise = judge_free_text(consensus, votes, reviews, pairwise_similarity)
        metrics["agreement_measure"] = "mean pairwise chrF (character 1..6-grams, beta 2)"
        metrics["mean_pairwise_chrf"] = mean_or_none(agreements)
        return pairwise, {}

    def score_annotator(
        self, on_finished: pd.DataFrame, gold_labels: pd.Series, finished: pd.DataFrame, spec: ProjectSpec
    ) -> tuple[float | None, float | None]:
        """Gold accuracy: mean chrF of the annotator's answers to the references; agreement: mean similarity to
        the consensus answer on tasks someone else also answered."""
        from labelflow.tasks.agreement import mean_or_none
        from labelflow.tasks.comparisons import chrf

        gold_accuracy = agreement = None
        has_gold = gold_labels.notna()
        if has_gold.any():
            scores = [
                chrf(answer_text(value) or "", str(reference))
                for value, reference in zip(on_finished.loc[has_gold, "answer"], gold_labels[has_gold], strict=True)
            ]
            gold_accuracy = mean_or_none(scores)
        shared = on_finished[on_finished["task_id"].map(finished["annotations"]) >= 2]
        if len(shared):
            agreed = [
                _symmetric_chrf(answer_text(own) or "", answer_text(consensus) or "")
                for own, consensus in zip(shared["answer"], shared["task_id"].map(finished["answer"]), strict=True)
            ]
            agreement = mean_or_none(agreed)
        return gold_accuracy, agreement

    def labels_used(self, rows: pd.DataFrame) -> pd.Series:
        """None: an answer's label is a digest, one per distinct answer, so a distribution of them says nothing."""
        import pandas as pd

        return pd.Series([], dtype=object)

    def agrees_with_gold(self, label: str | None, answer: dict[str, Any] | None, gold: str) -> bool:
        """An answer matches the reference when their chrF reaches GOLD_MATCH_CHRF (free text is never equal)."""
        from labelflow.tasks.comparisons import chrf

        return chrf(answer_text(answer) or "", gold) >= GOLD_MATCH_CHRF

    def gold_metrics(self, finished: pd.DataFrame, spec: ProjectSpec) -> dict[str, Any]:
        """On finished tasks with a reference answer (`gold`): mean chrF of the consensus answer to it, and the
        share of tasks whose consensus matches it (chrF >= GOLD_MATCH_CHRF)."""
        from labelflow.tasks.comparisons import chrf

        gold_tasks = finished[finished["gold_label"].notna() & finished["answer"].notna()]
        if not len(gold_tasks):
            return {}
        scores = [
            chrf(answer_text(answer) or "", str(reference))
            for answer, reference in zip(gold_tasks["answer"], gold_tasks["gold_label"], strict=True)
        ]
        return {
            "gold_tasks": len(scores),
            "consensus_chrf_on_gold": sum(scores) / len(scores),
            "consensus_accuracy_on_gold": sum(score >= GOLD_MATCH_CHRF for score in scores) / len(scores),
        }

    # --- validation -------------------------------------------------------------------------------------------

    def validation_columns(self, frame: pd.DataFrame, table: str, spec: ProjectSpec) -> pd.DataFrame:
        """`answer_chars`: non-whitespace characters of the answer (null without one); `same_as_draft`."""
        answers = frame["answer"].map(lambda value: answer_of(value) if isinstance(value, str) else None)
        frame["answer_chars"] = answers.map(
            lambda a: float(sum(not ch.isspace() for ch in a.get("text") or "")) if a is not None else math.nan
        )
        frame["same_as_draft"] = answers.map(lambda a: a is not None and a.get("edited_from_draft") is False)
        return frame

    def spec_expectations(self, spec: ProjectSpec, table: str) -> list[tuple[str, dict[str, Any], str]]:
        """With options.forbid_unedited_draft, no row's answer is the draft unchanged."""
        options: SftOptions = spec.task_options
        if not options.forbid_unedited_draft:
            return []
        what = "annotation" if table == "annotations" else "published answer"
        return [
            (
                "expect_column_values_to_be_in_set",
                {"column": "same_as_draft", "value_set": [False]},
                f"no {what} is the model draft unchanged (options.forbid_unedited_draft)",
            )
        ]

    # --- annotation simulation --------------------------------------------------------------------------------

    def simulated_answer(
        self, data: dict[str, Any], spec: ProjectSpec, accuracy: float, spammer: bool, rng: random.Random
    ) -> list[dict[str, Any]] | None:
        """A light edit of the reference with probability `accuracy`, else a truncated reference or the draft;
        spammers submit the draft unchanged or a few words of the prompt."""
        gold = self.gold_of(data)
        if gold is None:
            return None
        draft = data.get("draft") if isinstance(data.get("draft"), str) and data["draft"].strip() else None
        if spammer:
            if draft is not None and rng.random() < 0.5:
                return textarea_result(draft)
            return textarea_result(_random_words(_prompt_text(data.get("prompt")) or gold, rng))
        if rng.random() < accuracy:
            return textarea_result(_light_edit(gold, rng))
        if draft is not None and normalised(draft) != normalised(gold) and rng.random() < 0.5:
            return textarea_result(draft)
        return textarea_result(_truncated(gold, rng))

    # --- dataset ----------------------------------------------------------------------------------------------

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """sft.jsonl, TRL's conversational language-modeling format: {"messages": [user..., assistant]} per task.

        A chat prompt contributes its own messages (system turns included); a plain prompt is one user message.
        """
        path = folder / self.export_file
        with path.open("w", encoding="utf-8") as handle:
            for record, answer in rows[["record", "answer"]].itertuples(index=False):
                prompt = record_of(record).get("prompt")
                messages = chat_messages(prompt) or [{"role": "user", "content": str(prompt)}]
                messages.append({"role": "assistant", "content": answer_text(answer) or ""})
                handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
        return path


def _prompt_text(prompt: Any) -> str:
    """The text of a prompt: itself, or the last user message of a chat."""
    messages = chat_messages(prompt)
    if messages is None:
        return prompt if isinstance(prompt, str) else ""
    users = [m["content"] for m in messages if m["role"] == "user"] or [messages[-1]["content"]]
    return users[-1]


def _random_words(text: str, rng: random.Random) -> str:
    """A few words of a text, shuffled; characters for a script written without spaces."""
    spaced = not CJK.search(text)
    words = text.split() if spaced else [ch for ch in text if not ch.isspace()]
    words = words or ["…"]
    picked = [rng.choice(words) for _ in range(rng.randint(2, 5))]
    return " ".join(picked) if spaced else "".join(picked)


def _light_edit(text: str, rng: random.Random) -> str:
    """The text with a whitespace or punctuation change, or one short sentence added (in the text's script)."""
    cjk = bool(CJK.search(text))
    kind = rng.randrange(3)
    if kind == 0:  # whitespace: a line break or a doubled space between sentences
        for mark in ("。", ". ", "，", ", "):
            if mark in text:
                return text.replace(mark, mark.rstrip() + ("\n" if rng.random() < 0.5 else "  "), 1)
        return text + "\n"
    if kind == 1:  # punctuation at the end
        stripped = text.rstrip("。.!！?？ ")
        return stripped + rng.choice(("！", "。") if cjk else ("!", "."))
    joiner = "" if cjk else " "
    return text + joiner + rng.choice(ADDED_SENTENCES[cjk])


def _truncated(text: str, rng: random.Random) -> str:
    """The first 15 to 40 per cent of a text: an answer that stops early."""
    keep = max(1, int(len(text) * rng.uniform(0.15, 0.4)))
    return text[:keep].rstrip() or text[:1]
