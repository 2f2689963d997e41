"""Text pairs (cross-lingual alignment): do text A and text B say the same thing, and how good is B as a rendering of A?

Each task shows two texts with their language codes (BCP 47). The annotator chooses `aligned`, `partial` or
`not_aligned` (required) and may give a 1..5 quality score. The class set is fixed, so the spec has no `labels`.

Consensus per task:
- class: the majority (or Dawid-Skene) class; a tied vote follows `quality.tie_policy` as for the other class types
  (`flag`: no class; `first`: aligned > partial > not_aligned; `random`: stable per task), and the task is flagged
  as a tied vote either way;
- agreement: the share of the task's voters who chose that class; confidence: the aggregator's;
- score: the lower median of the scores given (always a score someone gave), null when nobody scored.
A reviewer's class replaces the consensus, and so does the reviewer's score when given (else the median stays).
Project metrics: Krippendorff's alpha, nominal over the classes (`krippendorff_alpha`) and ordinal over the scores
(`krippendorff_alpha_ordinal`), mean pairwise agreement and Cohen's kappa.

Records whose text is empty on one side, or whose language code is not a well-formed BCP 47 tag (RFC 5646 syntax,
checked by BCP47_PATTERN, with the language subtag held to 2-3 letters so that `english` is refused; whether a
subtag is assigned in the IANA registry is not checked), are quarantined at ingest (`empty`, `invalid_language`)
while the rest of the file is ingested. Language tags are stored in their canonical case (`zh-hant-tw` ->
`zh-Hant-TW`). In Label Studio (and in the task's `record`) the texts are `text_a` and `text_b`: see SHOWN_KEYS.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from labelflow.tasks.task_types.base import FROM_NAME, RecordRejected
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

CLASSES = ("aligned", "partial", "not_aligned")
# What annotators read for each class (Label Studio stores the alias, the class, in results).
CLASS_TEXT = {"aligned": "Aligned", "partial": "Partially aligned", "not_aligned": "Not aligned"}
CLASS_HINT = {
    "aligned": "B says what A says: nothing added, nothing missing",
    "partial": "B says part of what A says, or adds to it",
    "not_aligned": "B says something else",
}
# Gold answers and choices as people write them (after lower-casing and joining words with `_`).
CLASS_SPELLINGS = {
    "aligned": "aligned",
    "partial": "partial",
    "partially_aligned": "partial",
    "not_aligned": "not_aligned",
    "unaligned": "not_aligned",
    "misaligned": "not_aligned",
}
SCORE_NAME = "score"  # the optional Rating control
SCALE = 5
SIDES = ("source", "target")
# The Label Studio task data keys of the two texts: Label Studio's editor resolves `$source` to the whole task (it
# rendered the task's JSON), so the texts are shown and kept in the task's record under these keys instead.
SHOWN_KEYS = {"source": "text_a", "target": "text_b"}
LANGUAGE_FIELDS = ("source_lang", "target_lang")
REQUIRED_MESSAGE = "Choose aligned, partially aligned or not aligned before you submit."
# Scores a pair of each class truly deserves in the simulator; a wrong class is scored within its own band.
SCORE_BANDS = {"aligned": (4, 5), "partial": (2, 3), "not_aligned": (1, 2)}
SIMULATED_SCORE_RATE = 0.8  # the score is optional: honest annotators give one this often (spammers half the time)
# A wrong class is most often the neighbouring one: aligned and not_aligned are both next to partial.
NEIGHBOURS = {"aligned": ("partial",), "partial": ("aligned", "not_aligned"), "not_aligned": ("partial",)}

# RFC 5646 section 2.1 `Language-Tag` (well-formed, any case): langtag / privateuse / grandfathered. One rule is
# stricter than the syntax: the language subtag is 2-3 letters (ISO 639). The syntax also allows 4 letters (reserved)
# and 5-8 (none registered), which would accept the commonest mistake, a language name (`english`, `deutsch`).
_LANGTAG = (
    r"(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3})"  # language: 2-3 letters, then up to three extended language subtags
    r"(?:-[A-Za-z]{4})?"  # script
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"  # region
    r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"  # variants
    r"(?:-[0-9A-WYZa-wyz](?:-[A-Za-z0-9]{2,8})+)*"  # extensions: a singleton other than x, then subtags
    r"(?:-[Xx](?:-[A-Za-z0-9]{1,8})+)?"  # private use
)
_PRIVATE_USE = r"[Xx](?:-[A-Za-z0-9]{1,8})+"
# Irregular grandfathered tags (the regular ones, zh-min-nan say, are well-formed langtags anyway).
_IRREGULAR = (
    "en-GB-oed|i-ami|i-bnn|i-default|i-enochian|i-hak|i-klingon|i-lux|i-mingo|i-navajo|i-pwn|i-tao|i-tay|i-tsu|"
    "sgn-BE-FR|sgn-BE-NL|sgn-CH-DE"
)
# The same pattern is in expectations/consensus.text-pair.json (a unit test keeps them equal).
BCP47_PATTERN = rf"^(?:{_LANGTAG}|{_PRIVATE_USE}|(?i:{_IRREGULAR}))$"
BCP47 = re.compile(BCP47_PATTERN)
MAX_TAG_CHARS = 64  # far above any real tag; a longer value is refused without running the pattern


def is_language_tag(value: Any) -> bool:
    """True when `value` is a well-formed BCP 47 language tag (RFC 5646 syntax; `en`, `zh-Hans`, `es-419`)."""
    return isinstance(value, str) and len(value) <= MAX_TAG_CHARS and BCP47.fullmatch(value) is not None


def canonical_language_tag(tag: str) -> str:
    """RFC 5646 section 2.1.1 case: language lower, script title, region upper, everything after a singleton lower."""
    parts = tag.split("-")
    out = [parts[0].lower()]
    singleton = len(parts[0]) == 1  # `x-...` and `i-...` tags: all lower case
    for part in parts[1:]:
        if singleton or len(part) == 1:
            singleton = True
            out.append(part.lower())
        elif len(part) == 2 and part.isalpha():
            out.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())
        else:
            out.append(part.lower())
    return "-".join(out)


def language_problem(name: str, value: str) -> str | None:
    """Why a record's language code is not a BCP 47 tag (one line naming the field), or None."""
    if is_language_tag(value):
        return None
    hint = ""
    dashed = value.strip().replace("_", "-")
    if dashed != value and is_language_tag(dashed):
        hint = f" (did you mean {canonical_language_tag(dashed)!r}?)"
    shown = value if len(value) <= 40 else value[:40] + "..."
    return f"{name}: {shown!r} is not a BCP 47 language tag such as en, zh-Hans or pt-BR{hint}"


def _visible(text: str) -> bool:
    """True when text has a character that shows: not only whitespace and format characters (zero-width spaces)."""
    return any(not char.isspace() and unicodedata.category(char) != "Cf" for char in text)


def class_of(value: Any) -> str | None:
    """A class from a choice or gold value as written (`Partially aligned`, `not-aligned`, `NOT_ALIGNED`), or None."""
    if not isinstance(value, str):
        return None
    key = re.sub(r"[\s\-]+", "_", unicodedata.normalize("NFC", value).strip().lower())
    return CLASS_SPELLINGS.get(key)


def _whole_score(value: Any) -> int | None:
    """A score as an int when it is a whole number (4, 4.0, "4"), else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def text_pair_result(label: str, score: int | None = None) -> list[dict[str, Any]]:
    """A Label Studio result answering a text-pair task: the class (Choices alias) and, optionally, a Rating."""
    items = [{"from_name": FROM_NAME, "to_name": "text_a", "type": "choices", "value": {"choices": [label]}}]
    if score is not None:
        items.append({"from_name": SCORE_NAME, "to_name": "text_b", "type": "rating", "value": {"rating": score}})
    return items


class TextPair(RecordTaskType):
    """Two texts with language codes; aligned / partial / not_aligned plus an optional 1..5 quality score."""

    name: ClassVar[str] = "text-pair"
    export_file = "pairs.jsonl"
    expectation_suite = "text-pair"
    record_fields: ClassVar[tuple[str, ...]] = ("source", "target", "source_lang", "target_lang")
    optional_record_fields: ClassVar[tuple[str, ...]] = COMMON_OPTIONAL_FIELDS
    control_names: ClassVar[frozenset[str]] = frozenset({FROM_NAME, SCORE_NAME})

    @property
    def data_key(self) -> str:
        """The task data field holding text A."""
        return SHOWN_KEYS["source"]

    @property
    def record_data_keys(self) -> tuple[str, ...]:
        """The task data fields kept in the task table's `record` column (the texts under their shown keys)."""
        return tuple(SHOWN_KEYS.get(name, name) for name in (*self.record_fields, *self.optional_record_fields))

    # --- spec and interface -------------------------------------------------------------------------------------

    def check_spec(self, spec: ProjectSpec) -> None:
        """The interface is built in and the classes are fixed, so `labels` has no use."""
        super().check_spec(spec)
        if spec.labels:
            raise ValueError(f"labels: task text-pair answers with {', '.join(CLASSES)}; remove `labels`")

    def label_config_for(self, spec: ProjectSpec) -> str:
        """Text A and text B side by side under their language codes, the required class and the optional score."""
        choices = "".join(
            f'\n    <Choice value="{CLASS_TEXT[label]}" alias="{label}" hint="{CLASS_HINT[label]}"/>'
            for label in CLASSES
        )
        return "\n".join(
            [
                "<View>",
                '  <View style="display: flex; gap: 1em;">',
                '    <View style="flex: 1;"><Header value="Text A" size="5"/><Header value="$source_lang" size="6"/>'
                '<Text name="text_a" value="$text_a"/></View>',
                '    <View style="flex: 1;"><Header value="Text B" size="5"/><Header value="$target_lang" size="6"/>'
                '<Text name="text_b" value="$text_b"/></View>',
                "  </View>",
                '  <Header value="Do A and B say the same thing?"/>',
                f'  <Choices name="{FROM_NAME}" toName="text_a" choice="single-radio" showInLine="true" '
                f'required="true" requiredMessage="{REQUIRED_MESSAGE}">{choices}\n  </Choices>',
                f'  <Header value="Quality of B as a rendering of A (optional): 1 unusable to {SCALE} perfect"/>',
                f'  <Rating name="{SCORE_NAME}" toName="text_b" maxRating="{SCALE}"/>',
                "</View>",
            ]
        )

    # --- records ------------------------------------------------------------------------------------------------

    def check_record(self, fields: dict[str, str | list[str]]) -> None:
        """Refuse a side with nothing visible (`empty`) and a language code that is not BCP 47 (`invalid_language`).

        Whitespace-only values are already `empty` when the file is read; this also catches zero-width spaces.
        """
        for side in SIDES:
            value = fields.get(side)
            if isinstance(value, str) and not _visible(value):
                raise RecordRejected("empty", f"{side}: holds only invisible characters (zero-width spaces, say)")
        for name in LANGUAGE_FIELDS:
            value = fields.get(name)
            if isinstance(value, str) and (problem := language_problem(name, value)):
                raise RecordRejected("invalid_language", problem)

    def record_task_data(self, fields: dict[str, str | list[str]], spec: ProjectSpec) -> dict[str, Any]:
        """The record's fields, the texts under `text_a` / `text_b` and the language tags in canonical case."""
        data: dict[str, Any] = {SHOWN_KEYS.get(name, name): value for name, value in fields.items()}
        for name in LANGUAGE_FIELDS:
            if isinstance(data.get(name), str) and is_language_tag(data[name]):
                data[name] = canonical_language_tag(data[name])
        return data

    def gold_of(self, record: dict[str, Any]) -> str | None:
        """The record's gold class (spellings forgiven: `Partially aligned`, `not-aligned`); other text is kept as is.

        Kept, an unknown gold value never matches, so it shows as wrong instead of silently making no gold task.
        """
        value = super().gold_of(record)
        if not value:
            return None
        return class_of(value) or value

    # --- parsing ------------------------------------------------------------------------------------------------

    def parse_answer(
        self, items: list[dict[str, Any]], data: dict[str, Any], spec: ProjectSpec
    ) -> tuple[str | None, dict[str, Any] | None, list[str]]:
        """(class, {"label", "score"}, problems): no class, two classes, an unknown class or a bad score is a problem.

        The score is optional (null when not given). An unknown class is kept as the label, marked, never dropped.
        """
        problems: list[str] = []
        chosen = [
            str(choice)
            for item in items
            if item.get("from_name") == FROM_NAME
            for choice in (item.get("value") or {}).get("choices") or []
        ]
        ratings = [
            (item.get("value") or {}).get("rating")
            for item in items
            if item.get("from_name") == SCORE_NAME and (item.get("value") or {}).get("rating") is not None
        ]
        if not chosen:
            return None, None, ["no alignment class chosen"]
        if len(chosen) > 1:
            problems.append(f"{len(chosen)} classes chosen: {chosen}")
        label = class_of(chosen[0])
        if label is None:
            label = unicodedata.normalize("NFC", chosen[0])
            problems.append(f"class {label!r} is not one of {', '.join(CLASSES)}")
        score: int | float | None = None
        if ratings:
            if len(ratings) > 1:
                problems.append(f"{len(ratings)} scores given: {ratings}")
            score = _whole_score(ratings[0])
            if score is None:
                problems.append(f"score {ratings[0]!r} is not a whole number")
                score = ratings[0] if isinstance(ratings[0], int | float) and not isinstance(ratings[0], bool) else None
            elif not 1 <= score <= SCALE:
                problems.append(f"score {score} outside 1..{SCALE}")
        return label, {"label": label, "score": score}, problems

    # --- judging ------------------------------------------------------------------------------------------------

    def judge(
        self,
        consensus: pd.DataFrame,
        votes: pd.DataFrame,
        reviews: pd.DataFrame,
        spec: ProjectSpec,
        metrics: dict[str, Any],
    ) -> tuple[pd.DataFrame, dict[str, dict[Any, Any]]]:
        """Majority (or Dawid-Skene) class, share agreement, lower-median score; alpha nominal and ordinal; reviews win."""
        import numpy as np
        import pandas as pd

        from labelflow.tasks.agreement import (
            category_counts,
            kappa_headline,
            krippendorff_alpha_nominal,
            mean_or_none,
            pairwise_cohen_kappa,
            per_item_pairwise_agreement,
        )
        from labelflow.tasks.comparisons import krippendorff_alpha_ordinal

        quality = spec.quality
        classes = list(CLASSES)
        extra: dict[str, dict[Any, Any]] = {}
        consensus["label"] = None
        consensus["answer"] = None
        consensus["confidence"] = np.nan
        consensus["agreement"] = np.nan
        consensus["tie"] = False
        consensus["method"] = None
        votes = votes[votes["label"].isin(classes)]
        scores = pd.to_numeric(votes["answer"].map(lambda answer: _whole_score(answer_of(answer).get("score"))))
        scored = votes.assign(score=scores)[scores.between(1, SCALE)].astype({"score": "int64"})
        median = scored.groupby("task_id")["score"].quantile(0.5, interpolation="lower").astype(int).to_dict()
        if len(votes):
            counts, _, _ = category_counts(votes)
            metrics["percent_agreement"] = mean_or_none(per_item_pairwise_agreement(counts))
            metrics["krippendorff_alpha"] = _finite(krippendorff_alpha_nominal(counts))
            metrics["scored_share"] = float(len(scored) / len(votes))
            from labelflow.tasks.task_types.classification import fill_class_consensus

            has = fill_class_consensus(consensus, votes, classes, quality, metrics, extra)
            tallies = votes.groupby(["task_id", "label"]).size()
            vote_counts: dict[Any, dict[str, int]] = {}
            for (task_id, label), count in tallies.items():
                vote_counts.setdefault(task_id, {})[str(label)] = int(count)
            consensus.loc[has, "answer"] = [
                answer_json({"label": label, "score": median.get(task_id), "votes": vote_counts.get(task_id, {})})
                for task_id, label in zip(consensus.loc[has, "task_id"], consensus.loc[has, "label"], strict=True)
            ]
        if len(scored):
            task_codes, _ = pd.factorize(scored["task_id"], sort=True)
            score_counts = np.zeros((task_codes.max() + 1, SCALE))
            np.add.at(score_counts, (task_codes, scored["score"].to_numpy() - 1), 1.0)
            metrics["krippendorff_alpha_ordinal"] = _finite(krippendorff_alpha_ordinal(score_counts))
        pairwise = pairwise_cohen_kappa(votes)
        metrics.update(kappa_headline(pairwise, quality.min_shared_tasks_for_kappa))
        reviews = reviews[reviews["label"].isin(classes)]
        if len(reviews):
            by_task = reviews.set_index("task_id")
            reviewed = consensus["task_id"].isin(by_task.index)
            review_of = by_task.loc[consensus.loc[reviewed, "task_id"]]
            answers = []
            for task_id, label, answer, previous in zip(
                consensus.loc[reviewed, "task_id"], review_of["label"], review_of["answer"],
                consensus.loc[reviewed, "answer"], strict=True,
            ):  # fmt: skip
                # The score is optional: a reviewer who gives none keeps the annotators' median.
                score = _whole_score(answer_of(answer).get("score"))
                votes_before = answer_of(previous).get("votes") or {}
                answers.append(
                    answer_json({"label": label, "score": score or median.get(task_id), "votes": votes_before})
                )
            consensus.loc[reviewed, "label"] = review_of["label"].to_numpy()
            consensus.loc[reviewed, "answer"] = answers
            consensus.loc[reviewed, "confidence"] = 1.0
            consensus.loc[reviewed, "method"] = "review"
            consensus.loc[reviewed, "tie"] = False
            consensus.loc[reviewed & consensus["agreement"].isna(), "agreement"] = 1.0
        consensus["confidence"] = consensus["confidence"].astype(float)
        consensus["agreement"] = consensus["agreement"].astype(float)
        consensus["tie"] = consensus["tie"].astype(bool)
        finished = consensus[consensus["finished"] & consensus["label"].notna()]
        metrics["mean_score"] = mean_or_none([answer_of(answer).get("score") for answer in finished["answer"]])
        return pairwise, extra

    def score_annotator(
        self, on_finished: pd.DataFrame, gold_labels: pd.Series, finished: pd.DataFrame, spec: ProjectSpec
    ) -> tuple[float | None, float | None]:
        """Class accuracy on gold tasks, and the share of shared tasks where the annotator chose the consensus class."""
        from labelflow.tasks.task_types.classification import label_match_scores

        return label_match_scores(on_finished, gold_labels, finished)

    def gold_metrics(self, finished: pd.DataFrame, spec: ProjectSpec) -> dict[str, Any]:
        """How often the consensus class matches the records' gold class, on finished gold tasks."""
        from labelflow.tasks.task_types.classification import label_gold_metrics

        return label_gold_metrics(finished)

    # --- validation ---------------------------------------------------------------------------------------------

    def validation_columns(self, frame: pd.DataFrame, table: str, spec: ProjectSpec) -> pd.DataFrame:
        """`score` (null when not given); on consensus rows also `source_lang`, `target_lang` and `has_both_sides`."""
        import pandas as pd

        frame = frame.copy()
        frame["score"] = pd.to_numeric(
            frame["answer"].map(lambda answer: answer_of(answer).get("score")), errors="coerce"
        )
        if table == "consensus" and "record" in frame.columns:
            records = frame["record"].map(record_of)
            for name in LANGUAGE_FIELDS:
                frame[name] = records.map(lambda record, name=name: record.get(name))
            frame["has_both_sides"] = records.map(
                lambda record: all(
                    isinstance(record.get(key), str) and _visible(record[key]) for key in SHOWN_KEYS.values()
                )
            )
        return frame

    # --- simulation ---------------------------------------------------------------------------------------------

    def simulated_answer(
        self, data: dict[str, Any], spec: ProjectSpec, accuracy: float, spammer: bool, rng: random.Random
    ) -> list[dict[str, Any]] | None:
        """The gold class with probability `accuracy`, else a neighbouring class; a score correlated with the class.

        Each record has a true score fixed by its content within its gold class's band (aligned 4-5, partial 2-3,
        not_aligned 1-2). An annotator who chose the gold class gives that score with probability `accuracy`, else
        one point off; one who chose another class scores within that class's band. The score is given 80% of the
        time. Spammers choose a class uniformly and, half the time, a uniform score.
        """
        gold = self.gold_of(data)
        if gold not in CLASSES:
            return None
        if spammer:
            return text_pair_result(rng.choice(CLASSES), rng.randint(1, SCALE) if rng.random() < 0.5 else None)
        label = gold if rng.random() < accuracy else rng.choice(NEIGHBOURS[gold])
        score = None
        if rng.random() < SIMULATED_SCORE_RATE:
            truth = self.true_score(data, gold)
            if label != gold:
                score = rng.choice(SCORE_BANDS[label])
            elif rng.random() < accuracy:
                score = truth
            else:
                score = rng.choice([s for s in (truth - 1, truth + 1) if 1 <= s <= SCALE])
        return text_pair_result(label, score)

    @staticmethod
    def true_score(data: dict[str, Any], gold: str) -> int:
        """The simulator's true score of a record: a hash draw within its gold class's band."""
        key = str(data.get("content_sha256") or f"{data.get('text_a')}\x00{data.get('text_b')}")
        band = SCORE_BANDS[gold]
        return band[zlib.crc32(key.encode("utf-8")) % len(band)]

    # --- dataset ------------------------------------------------------------------------------------------------

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """pairs.jsonl: {source, target, source_lang, target_lang, label, score (null when none), task_id} per task."""
        path = folder / self.export_file
        with path.open("w", encoding="utf-8") as handle:
            for task_id, record_text, label, answer_text in rows[["task_id", "record", "label", "answer"]].itertuples(
                index=False
            ):
                if label is None or (isinstance(label, float) and math.isnan(label)):
                    continue  # an unresolved tie is never published; kept out defensively
                record, answer = record_of(record_text), answer_of(answer_text)
                line = {
                    "source": record.get(SHOWN_KEYS["source"]),
                    "target": record.get(SHOWN_KEYS["target"]),
                    "source_lang": record.get("source_lang"),
                    "target_lang": record.get("target_lang"),
                    "label": label,
                    "score": _whole_score(answer.get("score")),
                    "task_id": int(task_id),
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        return path
