"""The `sft` task type: written or edited answers to prompts, judged by chrF similarity, exported as chat messages."""

from __future__ import annotations

import hashlib
import json
import math
import random
import unicodedata
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest

from labelflow.integrations.great_expectations import GreatExpectations
from labelflow.tasks.annotations import AnnotationNormalizer, annotations_table, tasks_table
from labelflow.tasks.comparisons import chrf, medoid, pairwise_similarity
from labelflow.tasks.label_config import control_of, label_interface
from labelflow.tasks.quality import judge
from labelflow.tasks.spec import ProjectSpec, SpecError, parse_spec
from labelflow.tasks.task_types import TASK_TYPES
from labelflow.tasks.task_types.record_task import answer_of
from labelflow.tasks.task_types.sft import SupervisedFineTuning, chat_messages, normalised
from labelflow.tasks.validate import DEFAULT_EXPECTATIONS_DIR, batches_to_validate, summarize

SFT = TASK_TYPES["sft"]
USERS = {1: "a@x", 2: "b@x", 3: "c@x", 9: "lead@x"}
GOLD_EN = "Boil the water, add the pasta and cook it for ten minutes. Drain it and serve."
GOLD_ZH = "把水烧开，放入面条煮十分钟。然后沥干水分，趁热食用。"


def sft_spec(draft: bool = True, **extra: Any) -> ProjectSpec:
    fields = {"prompt": "q", "gold": "ref"} | ({"draft": "d", "draft_model": "m"} if draft else {})
    body = {"name": "sft t", "source": "s3://raw/x/", "task": "sft", "overlap": 2, "records": {"fields": fields}}
    return parse_spec(body | extra)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def textarea(*texts: str) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "prompt", "type": "textarea", "value": {"text": list(texts)}}]


def record_data(task_id: int, prompt: Any = "How do I cook pasta?", draft: str | None = None, gold: str = GOLD_EN):
    data = {"prompt": prompt, "gold": gold, "source_uri": "s3://raw/x/prompts.jsonl", "record_index": task_id}
    data["content_sha256"] = sha(f"{task_id}{prompt}")
    return data | ({"draft": draft, "draft_model": "m-1"} if draft is not None else {})


def annotation(annotation_id: int, user: int, result: list[dict[str, Any]]) -> dict[str, Any]:
    stamp = f"2026-11-23T10:00:{annotation_id % 60:02d}Z"
    return {"id": annotation_id, "completed_by": user, "lead_time": 4.0, "created_at": stamp, "updated_at": stamp,
            "result": result}  # fmt: skip


def ls_task(task_id: int, answers: list[tuple[int, str]], data: dict[str, Any]) -> dict[str, Any]:
    annotations = [annotation(10 * task_id + i, user, textarea(text)) for i, (user, text) in enumerate(answers)]
    return {"id": task_id, "data": data, "annotations": annotations, "updated_at": "2026-11-23T10:00:00Z"}


def tables(spec: ProjectSpec, tasks: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    normalizer = AnnotationNormalizer(spec, 1, USERS, "label")
    outs = [normalizer.task(t, 1) for t in tasks]
    return (
        tasks_table([o.task for o in outs]).to_pandas(),
        annotations_table([r for o in outs for r in o.annotations]).to_pandas(),
    )


def judged(spec: ProjectSpec, tasks: list[dict[str, Any]]):
    task_rows, annotation_rows = tables(spec, tasks)
    return judge(task_rows, annotation_rows, spec)


# --- spec and interface ---------------------------------------------------------------------------------------


def test_the_interface_shows_the_prompt_and_the_draft_and_answers_with_one_textarea() -> None:
    with_draft = label_interface(sft_spec())
    root = ElementTree.fromstring(with_draft.xml)
    texts = {element.get("name"): element.get("value") for element in root.iter("Text")}
    assert texts == {"prompt": "$prompt", "draft": "$draft"}
    (area,) = root.iter("TextArea")
    assert area.attrib == {
        "name": "label", "toName": "prompt", "editable": "true", "maxSubmissions": "1", "rows": "8",
        "required": "true", "value": "$draft",
    }  # fmt: skip
    assert (with_draft.from_name, with_draft.to_name, with_draft.result_type) == ("label", "prompt", "textarea")

    plain = ElementTree.fromstring(label_interface(sft_spec(draft=False)).xml)
    assert [e.get("name") for e in plain.iter("Text")] == ["prompt"]
    assert "value" not in next(plain.iter("TextArea")).attrib

    chat = label_interface(sft_spec(options={"chat": True}))
    (paragraphs,) = ElementTree.fromstring(chat.xml).iter("Paragraphs")
    assert paragraphs.attrib["value"] == "$prompt" and paragraphs.attrib["nameKey"] == "role"
    assert control_of(chat.xml) == ("label", "prompt", "textarea")


def test_the_spec_names_the_field_for_every_bad_sft_setting() -> None:
    with pytest.raises(SpecError, match=r"(?m)^  records.fields: task sft needs prompt; missing prompt$"):
        parse_spec({"name": "s", "source": "s3://raw/x/", "task": "sft", "records": {"fields": {"draft": "d"}}})
    with pytest.raises(SpecError, match=r"(?m)^  options.chat: Input should be a valid boolean"):
        sft_spec(options={"chat": [1]})
    with pytest.raises(SpecError, match=r"(?m)^  options.similarity: unknown field \(check the spelling\)$"):
        sft_spec(options={"similarity": "bleu"})
    with pytest.raises(SpecError, match=r"(?m)^  options.forbid_unedited_draft: .*records.fields.draft"):
        sft_spec(draft=False, options={"forbid_unedited_draft": True})
    with pytest.raises(SpecError, match=r"(?m)^  label_config: task sft uses its built-in interface"):
        sft_spec(label_config='<View><Text name="prompt" value="$prompt"/></View>')
    spec = sft_spec(options={"forbid_unedited_draft": True})
    assert spec.task_options.forbid_unedited_draft and not spec.task_options.chat
    assert SFT.export_file == "sft.jsonl" and "openai" in SFT.predictors and isinstance(SFT, SupervisedFineTuning)


def test_a_chat_prompt_becomes_messages_and_a_plain_prompt_one_user_message() -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好？"}]
    canonical = json.dumps(chat, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert chat_messages(canonical) == chat and chat_messages(chat) == chat
    assert chat_messages("How?") is None and chat_messages('[{"role": "user"}]') is None
    spec = sft_spec(options={"chat": True})
    assert SFT.record_task_data({"prompt": canonical, "gold": "g"}, spec)["prompt"] == chat
    assert SFT.record_task_data({"prompt": "How?"}, spec)["prompt"] == [{"role": "user", "content": "How?"}]
    assert SFT.record_task_data({"prompt": canonical}, sft_spec())["prompt"] == canonical  # text mode keeps it


# --- parsing --------------------------------------------------------------------------------------------------


def test_a_written_answer_is_kept_with_its_digest_and_whether_it_edits_the_draft() -> None:
    spec = sft_spec()
    data = record_data(1, draft="Boil pasta.")
    decomposed = unicodedata.normalize("NFD", "  Café: boil the pasta.\n\nThen drain it.  ")
    label, answer, problems = SFT.parse_answer(textarea(decomposed), data, spec)
    assert problems == []
    assert answer == {"text": "Café: boil the pasta.\n\nThen drain it.", "edited_from_draft": True}
    assert label == sha(normalised(answer["text"]))[:16] == sha("Café: boil the pasta. Then drain it.")[:16]
    assert SFT.parse_answer(textarea("写好的答案"), record_data(2), sft_spec(draft=False))[1] == {
        "text": "写好的答案", "edited_from_draft": None
    }  # fmt: skip


def test_empty_and_whitespace_only_answers_are_problems() -> None:
    spec = sft_spec()
    assert SFT.parse_answer([], record_data(1), spec) == (None, None, ["no answer written"])
    for blank in ("", "   \n\t", "\u3000"):
        label, answer, problems = SFT.parse_answer(textarea(blank), record_data(1), spec)
        assert label is None and answer["text"] == "" and problems == ["empty or whitespace-only answer"]
    assert SFT.parse_answer(textarea("a", "b"), record_data(1), spec)[2] == [
        "2 answers submitted; the interface takes one"
    ]


def test_the_unchanged_draft_is_a_problem_only_when_the_spec_forbids_it() -> None:
    draft = "Boil the water.  Add pasta."
    unchanged = textarea(" Boil the water. Add pasta.\n")  # whitespace differences do not count as an edit
    label, answer, problems = SFT.parse_answer(unchanged, record_data(1, draft=draft), sft_spec())
    assert problems == [] and answer["edited_from_draft"] is False
    strict = sft_spec(options={"forbid_unedited_draft": True})
    label, answer, problems = SFT.parse_answer(unchanged, record_data(1, draft=draft), strict)
    assert problems == ["the answer is the model draft unchanged (options.forbid_unedited_draft)"]
    assert label == sha(normalised(draft))[:16]
    assert SFT.parse_answer(textarea("Boil the water. Add pasta!"), record_data(1, draft=draft), strict)[2] == []


# --- judging --------------------------------------------------------------------------------------------------


def test_the_medoid_answer_is_the_consensus_and_agreement_is_the_mean_pairwise_chrf() -> None:
    spec = sft_spec(overlap=3, quality={"min_agreement": 0.3})
    answers = [
        (1, "Boil the water, add the pasta and cook it for ten minutes. Drain and serve."),
        (2, "Bring water to a boil, add pasta, cook ten minutes, drain it and serve."),
        (3, "Just order a pizza instead."),
    ]
    report = judged(spec, [ls_task(1, answers, record_data(1))])
    row = report.consensus.iloc[0]
    texts = [text for _, text in answers]
    index, mean_pairwise = medoid(texts)
    matrix = pairwise_similarity(texts)
    assert index in (0, 1) and row["method"] == "medoid" and bool(row["finished"])
    assert answer_of(row["answer"])["text"] == texts[index]
    assert row["agreement"] == pytest.approx(mean_pairwise)
    assert row["confidence"] == pytest.approx((matrix[index].sum() - 1.0) / 2)
    assert row["label"] == sha(normalised(texts[index]))[:16]
    assert report.metrics["mean_pairwise_chrf"] == pytest.approx(mean_pairwise)
    pairs = report.pairwise.set_index(["annotator_a", "annotator_b"])["mean_similarity"]
    assert pairs[(1, 3)] == pytest.approx(matrix[0, 2]) and pairs[(1, 2)] == pytest.approx(matrix[0, 1])
    # The same task with a stricter threshold is flagged for low agreement, as for classification.
    strict = judged(sft_spec(overlap=3), [ls_task(1, answers, record_data(1))]).consensus.iloc[0]
    assert bool(strict["flagged"]) and strict["flag_reason"].startswith(f"agreement {mean_pairwise:.2f} < 0.60")


def test_a_reviewers_answer_wins_and_a_lone_answer_is_the_single_consensus() -> None:
    spec = sft_spec(quality={"reviewers": ["lead@x"]})
    reviewed = ls_task(1, [(1, "first answer"), (2, "second answer"), (9, "the reviewed answer")], record_data(1))
    lone = ls_task(2, [(1, "只有一个答案")], record_data(2))
    report = judged(spec, [reviewed, lone])
    by_task = report.consensus.set_index("task_id")
    assert by_task.at[1, "method"] == "review" and answer_of(by_task.at[1, "answer"])["text"] == "the reviewed answer"
    assert by_task.at[1, "confidence"] == 1.0
    assert by_task.at[1, "agreement"] == pytest.approx(medoid(["first answer", "second answer"])[1])
    assert by_task.at[2, "method"] == "single" and answer_of(by_task.at[2, "answer"])["text"] == "只有一个答案"
    assert math.isnan(by_task.at[2, "agreement"]) and not bool(by_task.at[2, "finished"])


def test_chinese_answers_are_compared_by_characters() -> None:
    spec = sft_spec(overlap=3, quality={"min_agreement": 0.3})
    answers = [(1, GOLD_ZH), (2, "把水烧开，放入面条煮十分钟，然后沥干水分，趁热吃。"), (3, "我不知道。")]
    report = judged(spec, [ls_task(1, answers, record_data(1, prompt="怎么煮面条？", gold=GOLD_ZH))])
    row = report.consensus.iloc[0]
    assert answer_of(row["answer"])["text"] in (answers[0][1], answers[1][1])
    assert chrf(answers[1][1], GOLD_ZH) > 0.5 > chrf(answers[2][1], GOLD_ZH)
    scores = report.annotators.set_index("annotator_id")
    # gold accuracy is the mean chrF of an annotator's answers to the record's reference answer
    for user, text in answers:
        assert scores.at[user, "gold_accuracy"] == pytest.approx(chrf(text, GOLD_ZH))
    assert scores.at[3, "agreement_with_consensus"] < 0.3 < scores.at[2, "agreement_with_consensus"]
    consensus_text = answer_of(row["answer"])["text"]
    assert report.metrics["gold_tasks"] == 1
    assert report.metrics["consensus_chrf_on_gold"] == pytest.approx(chrf(consensus_text, GOLD_ZH))
    assert report.metrics["consensus_accuracy_on_gold"] == 1.0


# --- export ---------------------------------------------------------------------------------------------------


def test_the_export_is_trl_conversational_language_modeling(tmp_path: Path) -> None:
    chat = [{"role": "system", "content": "Answer in Chinese."}, {"role": "user", "content": "怎么煮面条？"}]
    rows = pd.DataFrame(
        {
            "task_id": [2, 1, 3],
            "record": [
                json.dumps({"prompt": "How do I cook pasta?", "draft": "Boil it."}),
                json.dumps({"prompt": chat}, ensure_ascii=False),
                json.dumps({"prompt": json.dumps(chat, ensure_ascii=False)}, ensure_ascii=False),
            ],
            "answer": [json.dumps({"text": GOLD_EN}), json.dumps({"text": GOLD_ZH}, ensure_ascii=False),
                       json.dumps({"text": "好"})],
        }
    )  # fmt: skip
    path = SFT.write_training_export(rows, sft_spec(), tmp_path)
    assert path == tmp_path / "sft.jsonl"
    raw = path.read_text(encoding="utf-8")
    assert GOLD_ZH in raw  # not \u-escaped
    lines = [json.loads(line) for line in raw.splitlines()]
    assert lines[0] == {
        "messages": [{"role": "user", "content": "How do I cook pasta?"}, {"role": "assistant", "content": GOLD_EN}]
    }
    assert lines[1] == {"messages": [*chat, {"role": "assistant", "content": GOLD_ZH}]}
    assert lines[2] == {"messages": [*chat, {"role": "assistant", "content": "好"}]}


# --- simulation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("gold", "prompt"), [(GOLD_EN, "How do I cook pasta?"), (GOLD_ZH, "怎么煮面条？")])
def test_simulated_answers_parse_back_and_follow_the_accuracy(gold: str, prompt: str) -> None:
    spec = sft_spec()
    data = record_data(1, prompt=prompt, draft="Boil it." if gold == GOLD_EN else "煮一下。", gold=gold)
    rng = random.Random(7)

    def scores(accuracy: float, spammer: bool = False) -> list[float]:
        found = []
        for _ in range(60):
            result = SFT.simulated_answer(data, spec, accuracy, spammer, rng)
            assert result is not None and control_of(label_interface(spec).xml)[2] == result[0]["type"]
            label, answer, problems = SFT.parse_answer(result, data, spec)
            assert problems == [] and label is not None and answer["text"].strip()
            found.append(chrf(answer["text"], gold))
        return found

    good, bad, spam = scores(1.0), scores(0.0), scores(0.9, spammer=True)
    assert min(good) >= 0.8 > max(bad)
    assert max(spam) < 0.5
    assert np.mean(good) > np.mean(bad) > 0
    cjk = gold == GOLD_ZH
    edits = [
        SFT.parse_answer(SFT.simulated_answer(data, spec, 1.0, False, rng), data, spec)[1]["text"] for _ in range(30)
    ]
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in text) == cjk for text in edits)
    assert SFT.simulated_answer(record_data(1) | {"gold": None}, spec, 1.0, False, rng) is None


# --- validation gate ------------------------------------------------------------------------------------------


def validate(spec: ProjectSpec, tasks: list[dict[str, Any]]):
    validator = GreatExpectations(DEFAULT_EXPECTATIONS_DIR)
    task_rows, annotation_rows = tables(spec, tasks)
    consensus = judge(task_rows, annotation_rows, spec).consensus
    batches = batches_to_validate(spec, validator, annotation_rows, consensus, task_rows)
    run = validator.validate(batches, docs_dir=None)
    return summarize(run.outcomes, {b.name: len(b.frame) for b in batches}, {}), run, batches


def failed(summary) -> set[tuple[str, str, str | None]]:
    return {(f["batch"], f["type"], f["column"]) for f in summary.failed}


def test_clean_sft_batches_pass_the_suites_and_the_derived_columns_are_checked() -> None:
    spec = sft_spec(quality={"min_agreement": 0.3})
    tasks = [
        ls_task(1, [(1, GOLD_EN), (2, GOLD_EN + " Enjoy!")], record_data(1, draft="Boil it.")),
        ls_task(2, [(1, GOLD_ZH), (2, GOLD_ZH.replace("。", "！", 1))], record_data(2, draft="煮一下。", gold=GOLD_ZH)),
    ]
    summary, run, batches = validate(spec, tasks)
    assert summary.success, summary.text()
    assert {"annotations.sft.json", "consensus.sft.json"} <= {o.origin for o in run.outcomes}
    annotations = batches[0].frame.set_index("annotation_id")
    assert annotations.at[10, "answer_chars"] == len("".join(GOLD_EN.split()))
    assert annotations.at[20, "answer_chars"] == len(GOLD_ZH) and not annotations["same_as_draft"].any()


def test_an_empty_answer_and_a_forbidden_unedited_draft_fail_validation() -> None:
    spec = sft_spec(quality={"min_agreement": 0.3}, options={"forbid_unedited_draft": True})
    tasks = [
        ls_task(1, [(1, GOLD_EN), (2, "   ")], record_data(1, draft="Boil it.")),
        ls_task(2, [(1, GOLD_ZH), (2, "煮一下。")], record_data(2, draft="煮一下。", gold=GOLD_ZH)),
    ]
    summary, _, _ = validate(spec, tasks)
    found = failed(summary)
    assert ("annotations", "expect_column_values_to_be_between", "answer_chars") in found
    assert ("annotations", "expect_column_values_to_be_in_set", "same_as_draft") in found
    assert ("annotations", "expect_column_values_to_be_null", "problem") in found
    chars = next(f for f in summary.failed if f["column"] == "answer_chars")
    assert chars["unexpected_count"] == 1 and chars["examples"][0]["annotation_id"] == 11
    same = next(f for f in summary.failed if f["column"] == "same_as_draft")
    assert same["unexpected_count"] == 1 and same["examples"][0]["annotation_id"] == 21
    # Without the option an unchanged draft is a legitimate answer (the model was right).
    lenient, _, _ = validate(sft_spec(quality={"min_agreement": 0.3}), tasks[1:])
    assert lenient.success, lenient.text()
