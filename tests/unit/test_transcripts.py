"""Transcript error rates against jiwer, medoid and ROVER consensus, the simulator's error rate, batch judging."""

from __future__ import annotations

import math
import random
import unicodedata

import jiwer
import numpy as np
import pandas as pd
import pytest

from labelflow.tasks import transcripts
from labelflow.tasks.transcripts import (
    error_rate,
    error_unit,
    judge_transcripts,
    medoid_transcript,
    normalise_transcript,
    pairwise_error_rate,
    rover_transcript,
    simulated_transcript,
    transcript_agreement,
)

WORDS = ["the", "The", "cat", "sat,", "on", "mat.", "dog", "a", "don't", "Straße", "café", "“quoted”", "run-on"]
HAN = "今天天气很好我们一起去公园散步吧机器学习需要大量标注数据"


def _random_words(rng: random.Random, low: int = 1) -> str:
    return "  ".join(rng.choice(WORDS) for _ in range(rng.randint(low, 12)))


def _random_han(rng: random.Random, low: int = 1) -> str:
    return "".join(rng.choice(HAN + "，。 ") for _ in range(rng.randint(low, 20)))


def test_word_error_rate_equals_jiwer_wer() -> None:
    rng = random.Random(7)
    hand = [
        ("the cat sat on the mat", "the cat sat on mat"),
        ("the cat sat on the mat", "the cat sat on the the mat"),
        ("the cat sat", "a dog ran away quickly"),
        ("Hello, world!", "hello world"),
        ("one", ""),
    ]
    cases = hand + [(_random_words(rng), _random_words(rng, low=0)) for _ in range(500)]
    checked = 0
    for reference, hypothesis in cases:
        ref, hyp = normalise_transcript(reference, "en"), normalise_transcript(hypothesis, "en")
        if not ref:  # an empty reference is defined differently (tested separately below)
            continue
        assert error_rate(ref, hyp, "word") == pytest.approx(jiwer.wer(ref, hyp), abs=1e-12), (ref, hyp)
        checked += 1
    assert checked > 450
    assert error_rate("hello world", "hello world", "word") == 0.0
    assert error_rate("a b c", "a x c d", "word") == pytest.approx(2 / 3)


def test_character_error_rate_equals_jiwer_cer_in_chinese_and_english() -> None:
    rng = random.Random(11)
    cases = [(_random_han(rng), _random_han(rng, low=0)) for _ in range(300)]
    cases += [(_random_words(rng), _random_words(rng, low=0)) for _ in range(200)]
    for reference, hypothesis in cases:
        language = "en" if reference.isascii() else "zh"
        ref, hyp = normalise_transcript(reference, language), normalise_transcript(hypothesis, language)
        if not ref:
            continue
        assert error_rate(ref, hyp, "char") == pytest.approx(jiwer.cer(ref, hyp), abs=1e-12), (ref, hyp)


def test_chinese_cer_counts_characters_and_ignores_spaces_and_punctuation() -> None:
    reference = normalise_transcript("今天天气很好。", "zh")
    hypothesis = normalise_transcript("今天 天汽很好啊！", "zh-Hans-CN")
    assert (reference, hypothesis) == ("今天天气很好", "今天天汽很好啊")
    assert error_rate(reference, hypothesis, "char") == pytest.approx(2 / 6)  # one substitution, one insertion
    # As words the whole sentence is one unit: why Chinese is scored by characters.
    assert error_rate(reference, hypothesis, "word") == 1.0


def test_error_unit_follows_the_primary_language_subtag() -> None:
    for language in ("zh", "zh-Hant-TW", "zh_CN", "ja-JP", "th", "lo", "km", "my", "bo", "yue-HK", "ZH"):
        assert error_unit(language) == "char", language
    for language in ("en", "en-US", "de", "zu", "ko", "", None, "mya"):
        assert error_unit(language) == "word", language


def test_normalisation_folds_case_accents_punctuation_and_spacing() -> None:
    decomposed = unicodedata.normalize("NFD", "Café")
    assert normalise_transcript(f"  {decomposed},  STRASSE\tdon't  ", "en") == "café strasse dont"
    assert normalise_transcript("Café straße", "en") == normalise_transcript(f"{decomposed} STRASSE", "en")
    assert normalise_transcript("50 $ + 🙂!", "en") == "50 $ + 🙂"  # symbols and digits are kept
    assert normalise_transcript("¿Qué?  «Sí»", "es") == "qué sí"


def test_empty_reference_is_defined() -> None:
    # jiwer 4 divides by max(reference units, 1), so an empty reference scores the count of inserted units (2.0
    # for two words); ours is capped at 1.0, the rate of a transcript that is entirely wrong.
    assert jiwer.wer("", "a b") == 2.0
    assert error_rate("", "", "word") == 0.0
    assert error_rate("", "a b", "word") == 1.0
    assert error_rate("", "字", "char") == 1.0


def test_pairwise_rate_is_symmetric_and_bounded() -> None:
    rng = random.Random(3)
    for _ in range(300):
        a, b = normalise_transcript(_random_words(rng, 0), "en"), normalise_transcript(_random_words(rng, 0), "en")
        rate = pairwise_error_rate(a, b, "word")
        assert rate == pairwise_error_rate(b, a, "word")
        assert 0.0 <= rate <= 1.0
    assert pairwise_error_rate("a", "a b c d", "word") == pytest.approx(0.75)
    assert pairwise_error_rate("", "", "char") == 0.0
    assert transcript_agreement(["a b c d", "a b c d", "a b x d"], "word") == pytest.approx(1 - (0 + 0.25 + 0.25) / 3)
    assert math.isnan(transcript_agreement(["alone"], "word"))


def test_medoid_on_hand_cases() -> None:
    texts = ["the cat sat on the mat", "the cat sat on a mat", "a dog sat on the mat", "the cat sat on the mat"]
    medoid = medoid_transcript(texts, "word")
    # distances: 0-1 1, 0-2 2, 0-3 0, 1-2 3, 1-3 1, 2-3 2 -> totals 3, 5, 7, 3: the earliest of the tied two
    assert (medoid.index, medoid.total_distance) == (0, 3)
    assert medoid.text == texts[0]
    assert medoid_transcript(["abc", "abd", "xbd"], "char").index == 1
    # Two transcripts always tie: the first submitted is kept.
    assert medoid_transcript(["a b", "a c d"], "word") == (0, "a b", 2)
    assert medoid_transcript(["a c d", "a b"], "word").index == 0
    assert medoid_transcript(["only"], "word") == (0, "only", 0)
    with pytest.raises(ValueError):
        medoid_transcript([], "word")


def test_rover_outvotes_an_error_every_medoid_keeps() -> None:
    truth = "the quick brown fox jumps over the lazy dog"
    texts = [
        "the quick fox jumps over the lazy dog",  # deletion
        "the quick brown fox jumps over a lazy dog",  # substitution
        "the quick brown fox jumps jumps over the lazy dog",  # insertion
    ]
    medoid = medoid_transcript(texts, "word")
    assert medoid.text != truth  # every transcript has one error, so the medoid keeps one
    assert error_rate(truth, medoid.text, "word") > 0
    assert rover_transcript(texts, "word") == truth
    # Characters: each annotator mishears one character.
    han = ["今天天汽很好", "今天天气很号", "金天天气很好"]
    assert medoid_transcript(han, "char").text == "今天天汽很好"
    assert rover_transcript(han, "char") == "今天天气很好"
    # Two annotators inserting the same word outvote the pivot that lacks it.
    assert rover_transcript(["a b c", "a b x c", "a b x c"], "word") == "a b x c"
    # Ties keep the pivot's unit; a single transcript is returned as its units.
    assert rover_transcript(["a b", "a c"], "word") == "a b"
    assert rover_transcript(["x  y"], "word") == "x y"


def test_simulated_error_rate_is_about_one_minus_accuracy() -> None:
    rng = random.Random(5)
    english = "the people who run the project meet every week to plan the next release and review the bugs"
    chinese = "今天天气很好，我们一起去公园散步吧。机器学习需要大量的标注数据。"
    for truth, language in ((english, "en"), (chinese, "zh")):
        unit = error_unit(language)
        reference = normalise_transcript(truth, language)
        for accuracy in (0.95, 0.8, 0.6):
            rates = [
                error_rate(
                    reference, normalise_transcript(simulated_transcript(truth, accuracy, unit, rng), language), unit
                )
                for _ in range(2000)
            ]
            # Adjacent edits sometimes merge into fewer, so the mean sits at or slightly below 1 - accuracy.
            assert 1 - accuracy - 0.03 <= float(np.mean(rates)) <= 1 - accuracy + 0.01, (language, accuracy)
        assert simulated_transcript(truth, 1.0, unit, rng) == (truth if unit == "char" else " ".join(truth.split()))
    first = simulated_transcript(english, 0.7, "word", random.Random(9))
    assert first == simulated_transcript(english, 0.7, "word", random.Random(9))
    # Chinese substitutes are Han characters, never Latin letters or spaces.
    noisy = simulated_transcript(chinese, 0.5, "char", random.Random(2))
    assert noisy != chinese and all("\u3400" <= ch <= "\u9fff" or ch in "，。" for ch in noisy)
    # A text of one repeated character has nothing to substitute: those errors become deletions (no endless search).
    assert set(simulated_transcript("aaaa", 0.0, "char", random.Random(1))) <= {"a"}


def test_judge_transcripts_on_a_small_frame() -> None:
    frame = pd.DataFrame(
        {
            "task_id": [10, 20, 10, 10, 30, 20, 40, 40, 40],
            "annotator": ["ann", "ann", "bob", "cy", "ann", "bob", "ann", "bob", "cy"],
            "text": [
                "The cat sat.",
                "one two",
                "the cat sat on",
                "the CAT, sat",
                "solo",
                "one three",
                "今天天汽很好",
                None,
                "今天天气很好",
            ],
        }
    )
    judged = judge_transcripts(frame, "en")
    assert judged.index.tolist() == [10, 20, 30, 40]
    assert judged.loc[10, "text"] == "The cat sat." and judged.loc[10, "annotator"] == "ann"
    assert judged.loc[10, "medoid_distance"] == 1  # 'the cat sat' vs ann: 0+1 (cy equals ann after normalising)
    assert judged.loc[10, "agreement"] == pytest.approx(1 - (0.25 + 0 + 0.25) / 3)
    assert judged.loc[20, "annotator"] == "ann"  # two transcripts: the earliest
    assert judged.loc[20, "agreement"] == pytest.approx(0.5)
    assert math.isnan(judged.loc[30, "agreement"]) and judged.loc[30, "annotations"] == 1
    assert judged["annotations"].tolist() == [3, 2, 1, 3]
    chinese = judge_transcripts(frame[frame["task_id"] == 40], "zh")
    assert chinese.loc[40, "annotator"] == "ann"  # 1+6 vs 6+6 vs 1+6: the earliest of the tie
    assert chinese.loc[40, "agreement"] == pytest.approx(1 - (1 / 6 + 1 + 1) / 3)


def test_judge_transcripts_matches_the_one_task_functions_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transcripts, "JUDGE_CHUNK_TASKS", 7)
    rng = random.Random(13)
    rows = []
    for task in range(60):
        truth = _random_words(rng, 3)
        for annotator in range(rng.randint(1, 5)):
            rows.append((f"t{task}", f"a{annotator}", simulated_transcript(truth, 0.7, "word", rng)))
    rng.shuffle(rows)
    frame = pd.DataFrame(rows, columns=["task_id", "annotator", "text"])
    judged = judge_transcripts(frame, "en")
    for task_id, group in frame.groupby("task_id", sort=False):
        texts = [normalise_transcript(text, "en") for text in group["text"]]
        medoid = medoid_transcript(texts, "word")
        assert judged.loc[task_id, "text"] == group["text"].iloc[medoid.index]
        assert judged.loc[task_id, "annotator"] == group["annotator"].iloc[medoid.index]
        assert judged.loc[task_id, "medoid_distance"] == medoid.total_distance
        expected = transcript_agreement(texts, "word")
        assert judged.loc[task_id, "agreement"] == pytest.approx(expected, nan_ok=True)
