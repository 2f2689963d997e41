"""Error rates, agreement and consensus for transcripts (and other short free texts compared unit by unit).

A transcript is compared in *units*: characters for languages written without spaces between words (Chinese,
Japanese, Thai, Lao, Khmer, Burmese, Tibetan), words for every other language. Error rates are Levenshtein
distances over those units (rapidfuzz's C++ implementation, which takes strings and lists of words alike):

- `error_rate(reference, hypothesis)`: WER or CER, edits / reference units, as jiwer computes them;
- `pairwise_error_rate(a, b)`: the symmetric rate two annotators' transcripts are compared by, edits / the longer
  one's units, so it stays in [0, 1]; a task's agreement is 1 - the mean over its pairs;
- `medoid_transcript`: the consensus, the transcript with the least total edit distance to the others;
- `rover_transcript`: ROVER-style voting over a confusion network aligned to the medoid, for comparison;
- `judge_transcripts`: agreement and medoid for many tasks at once (one table in, one row per task out);
- `simulated_transcript`: an annotator's transcript with a given unit error rate, for `labelflow simulate`.

Texts are compared after `normalise_transcript` (the functions here take texts as they are; callers normalise).
"""

from __future__ import annotations

import math
import random
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Literal, NamedTuple

from rapidfuzz.distance import Levenshtein

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Unit = Literal["char", "word"]

# BCP 47 primary language subtags of languages written without spaces between words: their error unit is the
# character. `yue` (Cantonese) is written in Han characters like `zh`.
CHARACTER_LANGUAGES = frozenset({"zh", "yue", "ja", "th", "lo", "km", "my", "bo"})
# Frequent Han characters: what a simulated Chinese annotator mishears a character as, besides the text's own.
COMMON_HAN = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长"
# Filler words a simulated annotator inserts or substitutes when the text itself has too few distinct words.
FILLER_WORDS = ("the", "a", "and", "uh", "so", "is", "of", "to")
# Tasks judged per batch in `judge_transcripts`: bounds the pair arrays and unit lists held at once.
JUDGE_CHUNK_TASKS = 2_000


class Medoid(NamedTuple):
    """The medoid of a task's transcripts: its position, its text, and its total edit distance to the others."""

    index: int
    text: str
    total_distance: int


@cache
def _punctuation_table() -> dict[int, None]:
    """str.translate table deleting every code point of a Unicode punctuation category (Pc Pd Ps Pe Pi Pf Po)."""
    return {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")}


def primary_subtag(language: str | None) -> str:
    """The BCP 47 primary language subtag, lower case ('zh' for 'zh-Hant-TW'); '' without a language."""
    return (language or "").replace("_", "-").split("-")[0].strip().lower()


def error_unit(language: str | None) -> Unit:
    """'char' for languages written without spaces (zh, yue, ja, th, lo, km, my, bo), 'word' for the others."""
    return "char" if primary_subtag(language) in CHARACTER_LANGUAGES else "word"


def normalise_transcript(text: str, language: str | None = None) -> str:
    """The form transcripts are compared in: what differs only in case, punctuation or spacing counts as equal.

    Steps: Unicode NFC (a precomposed and a decomposed accent compare equal); casefold (case-insensitive, also
    'Straße' = 'STRASSE'); every punctuation character (Unicode categories P*) deleted, not replaced, so "don't" is
    "dont" and "well-known" is "wellknown" (as jiwer's RemovePunctuation); whitespace runs collapsed to one space,
    none at the ends. For a character-unit language (`error_unit`) all whitespace is deleted as well: spaces are
    not part of those scripts' words, so a space one annotator typed between characters is not an error.
    Symbols (S*: currency, emoji, +) and digits are kept: "5" and "five" stay different.
    """
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())
    stripped = folded.translate(_punctuation_table())
    joiner = "" if error_unit(language) == "char" else " "
    return joiner.join(stripped.split())


def transcript_units(text: str, unit: Unit) -> list[str]:
    """The units a text is compared in: its whitespace-separated words, or all its characters (spaces included)."""
    return text.split() if unit == "word" else list(text)


def _sequence(text: str, unit: Unit) -> str | list[str]:
    # rapidfuzz compares a string character by character directly (its fastest path); words go as a list.
    return text.split() if unit == "word" else text


def error_rate(reference: str, hypothesis: str, unit: Unit) -> float:
    """WER (unit 'word') or CER ('char'): Levenshtein edits from the reference to the hypothesis / reference units.

    Equal to jiwer's `wer` / `cer` on the same texts (words split on whitespace; characters including spaces).
    Insertions can take it above 1. An empty reference gives 0.0 against an empty hypothesis and 1.0 against
    anything else: the rate of an entirely wrong transcript (jiwer 4 instead returns the count of inserted units,
    which has no upper bound and would outweigh every other task in a mean).
    """
    ref, hyp = _sequence(reference, unit), _sequence(hypothesis, unit)
    if not ref:
        return 0.0 if not hyp else 1.0
    return Levenshtein.distance(ref, hyp) / len(ref)


def pairwise_error_rate(first: str, second: str, unit: Unit) -> float:
    """Symmetric error rate of two transcripts in [0, 1]: Levenshtein edits / the longer one's units (0 if both empty).

    Dividing by the longer length (rather than the mean) keeps it symmetric and at most 1, since the edit distance
    never exceeds the longer sequence: 'a' against 'a b c d' is 0.75, where edits / mean length would be 1.2.
    """
    return Levenshtein.normalized_distance(_sequence(first, unit), _sequence(second, unit))


def transcript_agreement(texts: Sequence[str], unit: Unit) -> float:
    """1 - the mean pairwise symmetric error rate of a task's transcripts; NaN with fewer than two."""
    n = len(texts)
    if n < 2:
        return math.nan
    sequences = [_sequence(text, unit) for text in texts]
    rates = [Levenshtein.normalized_distance(sequences[i], sequences[j]) for i in range(n) for j in range(i + 1, n)]
    return 1.0 - sum(rates) / len(rates)


def medoid_transcript(texts: Sequence[str], unit: Unit) -> Medoid:
    """The transcript with the least total edit distance (in units) to the others; the earliest one on a tie.

    With two transcripts both totals are their one distance, so the earliest (the first submitted) is always
    chosen: two annotators give no majority to choose by. A single transcript is its own medoid (distance 0).
    """
    if not texts:
        raise ValueError("no transcripts to choose from")
    sequences = [_sequence(text, unit) for text in texts]
    totals = [0] * len(texts)
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            distance = Levenshtein.distance(sequences[i], sequences[j])
            totals[i] += distance
            totals[j] += distance
    index = min(range(len(texts)), key=lambda i: (totals[i], i))
    return Medoid(index, texts[index], totals[index])


def rover_transcript(texts: Sequence[str], unit: Unit) -> str:
    """ROVER-style consensus (Fiscus 1997): a confusion network on the medoid, then a majority vote per slot.

    Every transcript is aligned to the medoid (the pivot) by Levenshtein edit operations. Each pivot unit is a
    slot in which every transcript votes for the unit aligned to it, or for nothing (a deletion); the gap before
    each pivot unit (and after the last) is a slot in which every transcript votes for the run of units it inserts
    there, or for nothing. The most-voted entry wins each slot; a tie keeps the pivot's entry. So one annotator's
    substitution, deletion or insertion is outvoted by two who agree, even when every transcript has its own error
    and the medoid must keep one of them.

    Limitations: alignments are pairwise to the pivot, not progressive, so where two non-pivot transcripts insert
    different-but-overlapping runs in one gap they do not share votes; a tie-equivalent alignment picks one place
    for an edit arbitrarily; votes are unweighted (no annotator skill, no confidence, no timing). The result is
    built from units, so it is in the normalised form (word unit: words joined by single spaces) rather than any
    annotator's original text.
    """
    if not texts:
        raise ValueError("no transcripts to vote on")
    pivot_index = medoid_transcript(texts, unit).index
    pivot = transcript_units(texts[pivot_index], unit)
    slot_votes: list[Counter[str | None]] = [Counter() for _ in pivot]
    gap_votes: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(len(pivot) + 1)]
    for text in texts:
        units = transcript_units(text, unit)
        chosen: list[str | None] = list(pivot)
        inserted: dict[int, list[str]] = {}
        for op in Levenshtein.editops(pivot, units):
            if op.tag == "replace":
                chosen[op.src_pos] = units[op.dest_pos]
            elif op.tag == "delete":
                chosen[op.src_pos] = None
            else:  # insert before pivot unit src_pos; editops come in order, so a run keeps its order
                inserted.setdefault(op.src_pos, []).append(units[op.dest_pos])
        for slot, entry in enumerate(chosen):
            slot_votes[slot][entry] += 1
        for gap in range(len(pivot) + 1):
            gap_votes[gap][tuple(inserted.get(gap, ()))] += 1
    result: list[str] = []
    for gap in range(len(pivot) + 1):
        result += _winner(gap_votes[gap], ())
        if gap < len(pivot):
            entry = _winner(slot_votes[gap], pivot[gap])
            if entry is not None:
                result.append(entry)
    return (" " if unit == "word" else "").join(result)


def _winner(votes: Counter, pivot_entry: object) -> object:
    """The most-voted entry of a slot; the pivot's entry on a tie."""
    top = max(votes.values())
    return pivot_entry if votes[pivot_entry] == top else next(e for e, count in votes.items() if count == top)


def judge_transcripts(
    frame: pd.DataFrame,
    language: str | None = None,
    unit: Unit | None = None,
    pair_rates: list[np.ndarray] | None = None,
) -> pd.DataFrame:
    """Agreement and medoid consensus for many tasks: (task_id, annotator, text) rows in, one row per task out.

    The rows of a task are taken in the order given (its submission order: the earliest wins a medoid tie). Texts
    are compared normalised (`normalise_transcript`) in `unit` (default: `error_unit(language)`). Out, indexed by
    task_id in first-appearance order: `text` (the medoid's text as written), `annotator` (its author), `agreement`
    (1 - mean pairwise symmetric error rate; NaN with one transcript), `annotations`, `medoid_distance` (its total
    edit distance, in units, to the others). Tasks are judged JUDGE_CHUNK_TASKS at a time, each pair with one
    rapidfuzz call and everything else as NumPy arrays, so memory is the frame, about 50 bytes a row of index and
    result arrays, and one chunk's units and pairs (bench/transcripts_bench.py: +57 MiB for 150,000 transcripts).
    `pair_rates`, when given a list, receives one (k, 3) array per chunk: the frame positions of each compared pair of
    rows and their symmetric error rate (from which a caller builds its table of annotator pairs).
    """
    import numpy as np
    import pandas as pd

    unit = unit or error_unit(language)
    codes, task_ids = pd.factorize(frame["task_id"], sort=False)
    order = np.argsort(codes, kind="stable")  # rows grouped by task, each task's rows in their given order
    sizes = np.bincount(codes, minlength=len(task_ids))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    raw_texts = frame["text"].to_numpy(dtype=object)
    annotators = frame["annotator"].to_numpy(dtype=object)
    n_tasks = len(task_ids)
    medoid_row = np.zeros(n_tasks, dtype=np.int64)
    medoid_distance = np.zeros(n_tasks, dtype=np.int64)
    agreement = np.full(n_tasks, np.nan)
    distance = Levenshtein.distance
    for first_task in range(0, n_tasks, JUDGE_CHUNK_TASKS):
        last_task = min(first_task + JUDGE_CHUNK_TASKS, n_tasks)
        row_begin, row_end = starts[first_task], starts[last_task]
        rows = order[row_begin:row_end]
        sequences = [
            _sequence(normalise_transcript(text if isinstance(text, str) else "", language), unit)
            for text in raw_texts[rows]
        ]
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        chunk_sizes = sizes[first_task:last_task]
        chunk_starts = starts[first_task:last_task] - row_begin
        left_parts, right_parts, task_parts = [], [], []
        for size in np.unique(chunk_sizes[chunk_sizes >= 2]):
            upper_left, upper_right = np.triu_indices(int(size), 1)
            tasks = np.flatnonzero(chunk_sizes == size)
            left_parts.append((chunk_starts[tasks, None] + upper_left).ravel())
            right_parts.append((chunk_starts[tasks, None] + upper_right).ravel())
            task_parts.append(np.repeat(tasks, len(upper_left)))
        position = np.arange(len(rows))
        task_of_row = np.repeat(np.arange(len(chunk_sizes)), chunk_sizes)
        totals = np.zeros(len(rows), dtype=np.int64)
        if left_parts:
            left, right, pair_task = map(np.concatenate, (left_parts, right_parts, task_parts))
            pair_distance = np.fromiter(
                (distance(sequences[i], sequences[j]) for i, j in zip(left.tolist(), right.tolist(), strict=True)),
                dtype=np.int64,
                count=len(left),
            )
            longer = np.maximum(lengths[left], lengths[right])
            rate = np.divide(pair_distance, longer, out=np.zeros(len(left)), where=longer > 0)
            if pair_rates is not None:
                pair_rates.append(np.column_stack([rows[left], rows[right], rate]))
            totals += np.bincount(left, pair_distance, minlength=len(rows)).astype(np.int64)
            totals += np.bincount(right, pair_distance, minlength=len(rows)).astype(np.int64)
            pairs = np.bincount(pair_task, minlength=len(chunk_sizes))
            mean_rate = np.bincount(pair_task, rate, minlength=len(chunk_sizes)) / np.maximum(pairs, 1)
            agreement[first_task:last_task] = np.where(pairs > 0, 1.0 - mean_rate, np.nan)
        # The medoid: least total per task, the earliest row on a tie (sort by task, then total, then position).
        ranked = np.lexsort((position, totals, task_of_row))
        firsts = ranked[chunk_starts]
        medoid_row[first_task:last_task] = rows[firsts]
        medoid_distance[first_task:last_task] = totals[firsts]
    return pd.DataFrame(
        {
            "text": raw_texts[medoid_row],
            "annotator": annotators[medoid_row],
            "agreement": agreement,
            "annotations": sizes,
            "medoid_distance": medoid_distance,
        },
        index=pd.Index(task_ids, name="task_id"),
    )


def simulated_transcript(truth: str, accuracy: float, unit: Unit, rng: random.Random) -> str:
    """The truth with unit errors at a rate of about 1 - accuracy: what a simulated annotator transcribes.

    Each scored unit (a word, or a character that is not whitespace or punctuation: those are normalised away)
    is, with probability 1 - accuracy, substituted (half the errors), deleted (a quarter) or followed by an
    inserted unit (a quarter): one edit each, so the expected WER/CER against the truth is about 1 - accuracy
    (slightly less where adjacent edits combine into fewer). Substitutes and insertions come from the text's own
    words or characters (plus frequent Han characters for Chinese, filler words for a text with too few words).
    """
    error = min(max(1.0 - accuracy, 0.0), 1.0)
    units = transcript_units(truth, unit)
    keys = [_key(u) for u in units]
    # One entry per distinct normalised unit, so a substitute always differs from the unit it replaces.
    pool = dict(sorted((key, u) for u, key in zip(units, keys, strict=True) if key))
    if unit == "char" and any("\u3400" <= key <= "\u9fff" for key in pool):
        pool.update((ch, ch) for ch in COMMON_HAN if ch not in pool)
    elif unit == "word" and len(pool) < 3:
        pool.update((word, word) for word in FILLER_WORDS if word not in pool)
    choices = list(pool.values())
    choice_keys = list(pool)
    out: list[str] = []
    for u, key in zip(units, keys, strict=True):
        if not key or rng.random() >= error:  # unscored (punctuation, spaces) or transcribed right
            out.append(u)
            continue
        kind = rng.random()
        if kind < 0.5:
            if len(choices) > 1 or choice_keys[0] != key:  # else a one-unit text: the substitution is a deletion
                while True:
                    pick = rng.randrange(len(choices))
                    if choice_keys[pick] != key:
                        out.append(choices[pick])
                        break
        elif kind >= 0.75:
            out += [u, rng.choice(choices)]
        # else: deleted
    return (" " if unit == "word" else "").join(out)


def _key(unit_text: str) -> str:
    """A unit as normalisation leaves it: two units with one key are not an error."""
    return unit_text.casefold().translate(_punctuation_table()).strip()
