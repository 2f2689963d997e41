"""Transcription: annotators write what is said in an audio clip; exported as a speech manifest (audio, duration, text).

Transcripts are compared as speech recognition is scored: the Levenshtein distance in characters for languages
written without spaces (Chinese, Japanese, Thai ...) and in words for the others, after normalisation (case,
punctuation, spacing; tasks/transcripts.py), chosen by the spec's `options.language`. Agreement is 1 minus the
mean pairwise symmetric error rate; the consensus is the medoid (the transcript with the least total edit distance
to the others), or a reviewer's. ROVER-style voting (tasks/transcripts.rover_transcript) can correct an error
every transcript makes in a different place, but it writes a transcript nobody wrote: bench/transcripts_bench.py
compares the two, and labelflow publishes the medoid, which is always one person's words.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

from labelflow.tasks.task_types.audio_classification import seconds_or_none
from labelflow.tasks.task_types.base import FROM_NAME, label_options
from labelflow.tasks.task_types.free_text import WrittenAnswerTask, answer_text
from labelflow.tasks.task_types.text_pair import canonical_language_tag, is_language_tag

if TYPE_CHECKING:
    import random

    import numpy as np
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec

SEGMENT_CONTROL = "segment"  # the optional Labels control marking time segments on the waveform
# A transcript "matches" its reference when its error rate (CER or WER) is at most this: a careful transcript of
# clear speech differs by a few units, one that misses a sentence or a clause does not.
GOLD_MATCH_ERROR_RATE = 0.15


class TranscriptionOptions(BaseModel):
    """The `transcription` type's settings (spec `options:`)."""

    model_config = ConfigDict(extra="forbid")

    # The spoken language (BCP 47: `en`, `zh`, `yue-HK`): decides characters or words as the unit of comparison.
    language: str
    # Labels for time segments annotators may mark on the waveform (speaker turns, noise); none: no segments.
    segment_labels: list[str] = []

    @field_validator("language")
    @classmethod
    def _bcp47(cls, value: str) -> str:
        if not is_language_tag(value):
            raise ValueError(f"{value!r} is not a BCP 47 language tag (e.g. en, zh, pt-BR)")
        return canonical_language_tag(value)

    @field_validator("segment_labels")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or any(not label.strip() for label in value):
            raise ValueError("segment labels must be distinct and not blank")
        return value


class Transcription(WrittenAnswerTask):
    """One written transcript per audio clip, optionally with labelled time segments."""

    name: ClassVar[str] = "transcription"
    media = "audio"
    export_file = "transcripts.jsonl"
    expectation_suite = "transcription"
    options_model = TranscriptionOptions
    answer_noun = "transcript"
    similarity_measure = "1 - mean pairwise error rate (CER or WER by options.language)"
    gold_match = 1.0 - GOLD_MATCH_ERROR_RATE

    def label_config_for(self, spec: ProjectSpec) -> str:
        """The clip with its waveform, optional segment labels, and a required transcript box."""
        options: TranscriptionOptions = spec.task_options
        lines = ["<View>", '  <Audio name="audio" value="$audio" hotkey="ctrl+p"/>']
        if options.segment_labels:
            lines.append(
                f'  <Labels name="{SEGMENT_CONTROL}" toName="audio">'
                f"{label_options('Label', options.segment_labels)}\n  </Labels>"
            )
        lines += [
            '  <Header value="Transcript"/>',
            f'  <TextArea name="{FROM_NAME}" toName="audio" editable="true" maxSubmissions="1" rows="4" '
            'required="true" placeholder="Write exactly what is said"/>',
            "</View>",
        ]
        return "\n".join(lines)

    def label_config(self, labels: list[str]) -> str:
        """The interface depends on the spec's options: see `label_config_for`."""
        raise TypeError("task transcription builds its interface from the spec (label_config_for)")

    def owns_result(self, item: dict[str, Any], from_name: str) -> bool:
        """The transcript box and the segment labels are both part of the answer."""
        return item.get("from_name") in (FROM_NAME, SEGMENT_CONTROL)

    def parse_answer(
        self, items: list[dict[str, Any]], data: dict[str, Any], spec: ProjectSpec
    ) -> tuple[str | None, dict[str, Any] | None, list[str]]:
        """(digest, {text, segments?}, problems): segments outside the clip or with unknown labels are problems."""
        texts = [item for item in items if item.get("from_name") == FROM_NAME]
        label, answer, problems = super().parse_answer(texts, data, spec)
        options: TranscriptionOptions = spec.task_options
        if not options.segment_labels:
            return label, answer, problems
        duration = _number(data.get("audio_duration"))
        segments = []
        for item in items:
            if item.get("from_name") != SEGMENT_CONTROL:
                continue
            value = item.get("value") or {}
            start, end = _number(value.get("start")), _number(value.get("end"))
            names = [str(name) for name in value.get("labels") or []]
            segments.append({"start": start, "end": end, "labels": names})
            if start is None or end is None or not 0 <= start < end:
                problems.append(f"segment {start}..{end} is not a time span")
            elif duration is not None and end > duration + 0.05:  # the waveform's own rounding
                problems.append(f"segment ends at {end:.2f} s, after the clip's {duration:.2f} s")
            unknown = sorted(set(names) - set(options.segment_labels))
            if unknown:
                problems.append(f"segment labels {unknown} are not in options.segment_labels")
        if answer is not None:
            answer["segments"] = sorted(segments, key=lambda s: (s["start"] or 0.0, s["end"] or 0.0))
        return label, answer, problems

    # --- comparing transcripts ------------------------------------------------------------------------------------

    @staticmethod
    def _language(spec: ProjectSpec) -> str:
        options: TranscriptionOptions = spec.task_options
        return options.language

    def similarity_matrix(self, texts: Sequence[str], spec: ProjectSpec) -> np.ndarray:
        """1 - the symmetric error rate of each pair of normalised transcripts, in the language's unit."""
        import numpy as np

        from labelflow.tasks.transcripts import error_unit, normalise_transcript, pairwise_error_rate

        language = self._language(spec)
        unit = error_unit(language)
        normal = [normalise_transcript(text, language) for text in texts]
        n = len(normal)
        matrix = np.eye(n)
        for i in range(n):
            for j in range(i + 1, n):
                matrix[i, j] = matrix[j, i] = 1.0 - pairwise_error_rate(normal[i], normal[j], unit)
        return matrix

    def choose_consensus(self, texts: Sequence[str], spec: ProjectSpec) -> int:
        """The medoid: least total edit distance to the others (the earliest on a tie)."""
        from labelflow.tasks.transcripts import error_unit, medoid_transcript, normalise_transcript

        language = self._language(spec)
        return medoid_transcript([normalise_transcript(t, language) for t in texts], error_unit(language)).index

    def judge(
        self,
        consensus: pd.DataFrame,
        votes: pd.DataFrame,
        reviews: pd.DataFrame,
        spec: ProjectSpec,
        metrics: dict[str, Any],
    ) -> tuple[pd.DataFrame, dict[str, dict[Any, Any]]]:
        """The medoid (or reviewer's) transcript per task, agreement 1 - mean pairwise error rate, all tasks at once.

        The same result as the written-answer judge, computed by tasks/transcripts.judge_transcripts in NumPy
        chunks: a project of 100,000 clips is judged in seconds, where a loop over tasks took minutes.
        """
        import numpy as np
        import pandas as pd

        from labelflow.tasks.agreement import mean_or_none
        from labelflow.tasks.task_types.record_task import answer_json, answer_of
        from labelflow.tasks.transcripts import judge_transcripts

        ordered = votes.sort_values(["task_id", "annotation_id"], kind="stable").reset_index(drop=True)
        frame = pd.DataFrame(
            {
                "task_id": ordered["task_id"].to_numpy(),
                "annotator": np.arange(len(ordered)),  # the row: judge_transcripts names the medoid's
                "text": ordered["answer"].map(lambda value: answer_text(value) or "").to_numpy(dtype=object),
            }
        )
        chunks: list[np.ndarray] = []
        judged = judge_transcripts(frame, self._language(spec), pair_rates=chunks)
        pairs = np.concatenate(chunks) if chunks else np.empty((0, 3))
        left, right, similarity = pairs[:, 0].astype(int), pairs[:, 1].astype(int), 1.0 - pairs[:, 2]
        # The medoid's mean similarity to the other transcripts of its task: its confidence.
        per_row = np.bincount(left, similarity, len(ordered)) + np.bincount(right, similarity, len(ordered))
        medoid = judged["annotator"].to_numpy(dtype=int)
        others = np.maximum(judged["annotations"].to_numpy() - 1, 1)
        chosen = pd.DataFrame(
            {
                "label": ordered["label"].to_numpy(dtype=object)[medoid],
                "answer": ordered["answer"].to_numpy(dtype=object)[medoid],
                "method": np.where(judged["annotations"].to_numpy() >= 2, "medoid", "single"),
                "agreement": judged["agreement"].to_numpy(),
                "confidence": np.where(judged["annotations"].to_numpy() >= 2, per_row[medoid] / others, np.nan),
            },
            index=judged.index,
        )
        if len(reviews):
            review = reviews.drop_duplicates("task_id", keep="last").set_index("task_id")
            chosen = chosen.reindex(chosen.index.union(review.index))
            chosen.loc[review.index, "label"] = review["label"]
            chosen.loc[review.index, "answer"] = review["answer"].map(lambda a: answer_json(answer_of(a)))
            chosen.loc[review.index, "method"] = "review"
            chosen.loc[review.index, "confidence"] = 1.0
        for column in ("label", "answer", "method"):
            consensus[column] = consensus["task_id"].map(chosen[column]).astype(object)
            consensus[column] = consensus[column].where(consensus[column].notna(), None)
        for column in ("confidence", "agreement"):
            consensus[column] = consensus["task_id"].map(chosen[column]).astype(float)
        consensus["tie"] = False  # a medoid is never a tied vote
        metrics["agreement_measure"] = self.similarity_measure
        metrics["mean_pairwise_similarity"] = mean_or_none(judged["agreement"].dropna().tolist())
        annotator = ordered["annotator_id"].astype(int).to_numpy()
        a, b = annotator[left], annotator[right]
        table = pd.DataFrame({"annotator_a": np.minimum(a, b), "annotator_b": np.maximum(a, b), "score": similarity})
        pairwise = (
            table.groupby(["annotator_a", "annotator_b"], sort=True)["score"]
            .agg(shared_tasks="size", mean_similarity="mean")
            .reset_index()
        )
        return pairwise, {}

    def similarity(self, a: str, b: str, spec: ProjectSpec) -> float:
        """1 - the error rate of `a` against the reference-like `b`, floored at 0 (insertions can exceed 1)."""
        return max(0.0, 1.0 - self.error_rate(b, a, self._language(spec)))

    @staticmethod
    def error_rate(reference: str, hypothesis: str, language: str | None) -> float:
        """CER or WER of a transcript against a reference, both normalised."""
        from labelflow.tasks.transcripts import error_rate, error_unit, normalise_transcript

        unit = error_unit(language)
        return error_rate(normalise_transcript(reference, language), normalise_transcript(hypothesis, language), unit)

    def gold_similarity(self, answer: str, reference: str) -> float:
        """Without a spec (the simulator's tally): the unit is guessed from the script (characters for Han/kana)."""
        from labelflow.tasks.task_types.sft import CJK

        language = "zh" if CJK.search(reference) else "en"
        return max(0.0, 1.0 - self.error_rate(reference, answer, language))

    def gold_metrics(self, finished: pd.DataFrame, spec: ProjectSpec) -> dict[str, Any]:
        """The base's similarity and match share, plus the consensus transcripts' mean error rate on gold."""
        metrics = super().gold_metrics(finished, spec)
        if metrics:
            gold_tasks = finished[finished["gold_label"].notna() & finished["answer"].notna()]
            language = self._language(spec)
            rates = [
                self.error_rate(str(reference), answer_text(answer) or "", language)
                for answer, reference in zip(gold_tasks["answer"], gold_tasks["gold_label"], strict=True)
            ]
            from labelflow.tasks.transcripts import error_unit

            metrics[f"consensus_{'cer' if error_unit(language) == 'char' else 'wer'}_on_gold"] = sum(rates) / len(rates)
        return metrics

    def simulated_text(self, truth: str, accuracy: float, spammer: bool, rng: random.Random) -> str:
        """The reference with unit errors at a rate of about 1 - accuracy; a spammer's is mostly errors."""
        from labelflow.tasks.task_types.sft import CJK
        from labelflow.tasks.transcripts import simulated_transcript

        unit = "char" if CJK.search(truth) else "word"
        return simulated_transcript(truth, 0.3 if spammer else accuracy, unit, rng)

    # --- dataset ----------------------------------------------------------------------------------------------

    @property
    def consensus_columns(self) -> tuple[str, ...]:
        """The clip's duration, sample rate and channels, the transcript's digest and the transcript."""
        return ("audio_duration", "audio_sample_rate", "audio_channels", "label", "answer")

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """transcripts.jsonl, the manifest layout of speech toolkits: {audio, duration, text} per clip (and the
        segments when the spec has segment labels)."""
        from labelflow.tasks.task_types.record_task import answer_of

        options: TranscriptionOptions = spec.task_options
        path = folder / self.export_file
        columns = ["task_id", "source_uri", "audio_duration", "answer"]
        with path.open("w", encoding="utf-8") as handle:
            for task_id, uri, duration, answer in rows[columns].itertuples(index=False):
                record: dict[str, Any] = {
                    "audio": uri,
                    "duration": seconds_or_none(duration),
                    "text": answer_text(answer) or "",
                    "task_id": int(task_id),
                }
                if options.segment_labels:
                    record["segments"] = answer_of(answer).get("segments") or []
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
