"""The image-captioning and audio-classification types: interfaces, reading answers, judging and exports."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pandas as pd
import pytest

from labelflow.tasks.annotations import AnnotationNormalizer, annotations_table, tasks_table
from labelflow.tasks.dataset import dataset_rows
from labelflow.tasks.label_config import label_interface
from labelflow.tasks.quality import GoldError, gold_label_set, judge, parse_gold
from labelflow.tasks.spec import ProjectSpec, SpecError, parse_spec
from labelflow.tasks.task_types import TASK_TYPES
from labelflow.tasks.task_types.free_text import answer_text

CAPTIONS = TASK_TYPES["image-captioning"]
AUDIO = TASK_TYPES["audio-classification"]
USERS = {1: "a@x", 2: "b@x", 3: "c@x", 9: "lead@x"}


def caption_spec(**extra: Any) -> ProjectSpec:
    return parse_spec({"name": "cap", "source": "s3://raw/pics/", "task": "image-captioning", "overlap": 3} | extra)


def audio_spec(**extra: Any) -> ProjectSpec:
    body = {"name": "aud", "source": "s3://raw/clips/", "task": "audio-classification", "labels": ["speech", "music"]}
    return parse_spec(body | extra)


def textarea(*texts: str) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "image", "type": "textarea", "value": {"text": list(texts)}}]


def ls_task(task_id: int, answers: list[tuple[int, list[dict[str, Any]]]], data: dict[str, Any]) -> dict[str, Any]:
    annotations = [
        {"id": 10 * task_id + i, "completed_by": user, "lead_time": 3.0, "result": result,
         "created_at": "2026-11-30T10:00:00Z", "updated_at": "2026-11-30T10:00:00Z"}
        for i, (user, result) in enumerate(answers)
    ]  # fmt: skip
    return {"id": task_id, "data": data, "annotations": annotations, "updated_at": "2026-11-30T10:00:00Z"}


def judged(spec: ProjectSpec, tasks: list[dict[str, Any]], gold: pd.DataFrame | None = None):
    normalizer = AnnotationNormalizer(spec, 1, USERS, "label")
    outs = [normalizer.task(t, 1) for t in tasks]
    task_rows = tasks_table([o.task for o in outs]).to_pandas()
    annotation_rows = annotations_table([r for o in outs for r in o.annotations]).to_pandas()
    return task_rows, annotation_rows, judge(task_rows, annotation_rows, spec, gold)


def image_data(task_id: int) -> dict[str, Any]:
    uri = f"s3://raw/pics/{task_id}.png"
    return {"image": uri, "source_uri": uri, "content_sha256": f"h{task_id}", "image_width": 96, "image_height": 64}


def test_the_caption_interface_shows_the_image_and_one_required_textarea() -> None:
    interface = label_interface(caption_spec())
    root = ElementTree.fromstring(interface.xml)
    assert [(e.get("name"), e.get("value")) for e in root.iter("Image")] == [("image", "$image")]
    (area,) = root.iter("TextArea")
    assert area.get("required") == "true" and area.get("maxSubmissions") == "1" and area.get("toName") == "image"
    assert (interface.from_name, interface.to_name, interface.result_type) == ("label", "image", "textarea")
    assert not CAPTIONS.refuse_empty_annotations and CAPTIONS.structured_answers and not CAPTIONS.uses_labels
    with pytest.raises(SpecError, match="label_config: task image-captioning uses its built-in interface"):
        caption_spec(label_config='<View><Image name="image" value="$image"/></View>')


def test_the_audio_interface_plays_the_clip_and_requires_one_class() -> None:
    interface = label_interface(audio_spec())
    root = ElementTree.fromstring(interface.xml)
    (audio,) = root.iter("Audio")
    assert audio.get("name") == "audio" and audio.get("value") == "$audio"
    (choices,) = root.iter("Choices")
    assert choices.get("required") == "true" and [c.get("value") for c in choices.iter("Choice")] == ["speech", "music"]
    assert AUDIO.media == "audio" and AUDIO.stored_media and AUDIO.data_key == "audio"


def test_captions_are_read_with_their_problems() -> None:
    spec = caption_spec()
    label, answer, problems = CAPTIONS.parse_answer(textarea("  A red square.  "), {}, spec)
    assert answer == {"text": "A red square."} and problems == [] and label is not None and len(label) == 16
    assert CAPTIONS.parse_answer(textarea("A red square."), {}, spec)[0] == label  # equal text, equal digest
    assert CAPTIONS.parse_answer([], {}, spec)[2] == ["no caption written"]
    assert CAPTIONS.parse_answer(textarea("   "), {}, spec)[2] == ["empty or whitespace-only caption"]
    assert CAPTIONS.parse_answer(textarea("one", "two"), {}, spec)[2] == [
        "2 captions submitted; the interface takes one"
    ]


def test_the_medoid_caption_is_the_consensus_a_reviewer_wins_and_gold_scores_annotators() -> None:
    spec = caption_spec(quality={"reviewers": ["lead@x"]})
    good = "A red square on a white background."
    tasks = [
        ls_task(1, [(1, textarea(good)), (2, textarea(good + " Nice.")), (3, textarea("A square."))], image_data(1)),
        ls_task(2, [(1, textarea("白色背景上的一个蓝色圆形。")), (2, textarea("蓝色圆形。")), (9, textarea("一个蓝色的圆。"))],
                image_data(2)),
    ]  # fmt: skip
    gold = parse_gold(b"source_uri,label\ns3://raw/pics/1.png,A red square on a white background.\n", "g.csv", None)
    _, _, report = judged(spec, tasks, gold)
    consensus = report.consensus.set_index("task_id")
    assert answer_text(consensus.at[1, "answer"]) == good and consensus.at[1, "method"] == "medoid"
    assert 0.3 < consensus.at[1, "agreement"] < 1.0
    assert answer_text(consensus.at[2, "answer"]) == "一个蓝色的圆。" and consensus.at[2, "method"] == "review"
    assert report.metrics["agreement_measure"].startswith("mean pairwise chrF")
    assert report.metrics["gold_tasks"] == 1 and report.metrics["consensus_accuracy_on_gold"] == 1.0
    scores = report.annotators.set_index("annotator_email")
    assert scores.at["a@x", "gold_accuracy"] == pytest.approx(1.0) and scores.at["c@x", "gold_accuracy"] < 0.5


def test_gold_for_written_answers_is_reference_text_not_a_class() -> None:
    assert gold_label_set(caption_spec()) is None and gold_label_set(audio_spec()) == ["speech", "music"]
    frame = parse_gold("source_key,label\npics/1.png,白色背景上的圆。\n".encode(), "g.csv", None)
    assert frame["gold_label"].tolist() == ["白色背景上的圆。"]
    with pytest.raises(GoldError, match="not in the spec's label set"):
        parse_gold(b"source_key,label\nclips/1.wav,noise\n", "g.csv", ["speech", "music"])


def test_simulated_captions_parse_back_and_follow_the_accuracy() -> None:
    spec = caption_spec()
    rng = random.Random(4)
    truth = "A wide green bar across the middle of the picture."
    matched = [
        CAPTIONS.agrees_with_gold(*CAPTIONS.parse_answer(CAPTIONS.simulated_answer({"gold": truth}, spec, 0.8, False, rng), {}, spec)[:2], truth)
        for _ in range(400)
    ]  # fmt: skip
    assert 0.72 < sum(matched) / len(matched) < 0.88
    assert CAPTIONS.simulated_answer({}, spec, 1.0, False, rng) is None


def test_the_exports_name_the_media_and_its_answer(tmp_path: Path) -> None:
    spec = audio_spec()
    rows = pd.DataFrame(
        {"task_id": [2, 1], "source_uri": ["s3://raw/clips/b.flac", "s3://raw/clips/a.wav"], "label": ["music", "speech"],
         "audio_duration": [12.5, 1.25], "audio_sample_rate": [44100, 16000], "audio_channels": [2, 1]}
    )  # fmt: skip
    path = AUDIO.write_training_export(rows, spec, tmp_path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert path.name == "audio.jsonl"
    assert lines[0] == {"audio": "s3://raw/clips/b.flac", "duration": 12.5, "label": "music", "task_id": 2}

    tasks = pd.DataFrame(
        {"task_id": [1, 2], "text": [None, None], "image_width": [None, None], "image_height": [None, None],
         "audio_duration": [1.25, 12.5], "audio_sample_rate": [16000, 44100], "audio_channels": [1, 2], "record": [None, None]}
    )  # fmt: skip
    published = rows[["task_id", "source_uri", "label"]].assign(
        content_sha256="h",
        confidence=1.0,
        agreement=1.0,
        annotations=2,
        reviewed=False,
        method="majority",
        gold_label=None,
    )
    table = dataset_rows(published, tasks, spec)
    assert table["audio_duration"].tolist() == [1.25, 12.5] and "image_width" not in table.columns
    assert table["audio_sample_rate"].tolist() == [16000, 44100] and table["audio_channels"].tolist() == [1, 2]


def test_the_transcription_judge_picks_the_medoid_and_matches_the_one_task_functions() -> None:
    from labelflow.tasks.task_types.free_text import WrittenAnswerTask
    from labelflow.tasks.transcripts import medoid_transcript, normalise_transcript, transcript_agreement

    spec = parse_spec(
        {"name": "tr", "source": "s3://raw/clips/", "task": "transcription", "options": {"language": "zh"},
         "overlap": 3, "quality": {"reviewers": ["lead@x"]}}
    )  # fmt: skip
    kind = TASK_TYPES["transcription"]
    rng = random.Random(7)
    truths = ["今天天气很好我们去公园散步吧", "请把厨房的灯关掉再出门", "明天早上八点在车站见面"]
    tasks = []
    for task_id in range(1, 13):
        truth = truths[task_id % 3]
        answers = [
            (user, textarea(kind.simulated_text(truth, 0.8, False, rng))) for user in (1, 2, 3)[: 1 + task_id % 3]
        ]
        if task_id == 12:
            answers.append((9, textarea("请把厨房的灯关掉再出门。")))
        data = {"audio": f"s3://raw/clips/{task_id}.wav", "source_uri": f"s3://raw/clips/{task_id}.wav",
                "content_sha256": f"h{task_id}", "audio_duration": 1.5}  # fmt: skip
        tasks.append(ls_task(task_id, answers, data))
    _, annotation_rows, report = judged(spec, tasks)
    consensus = report.consensus.set_index("task_id")
    for task_id, group in annotation_rows[annotation_rows["annotator_email"] != "lead@x"].groupby("task_id"):
        texts = [answer_text(a) for a in group.sort_values("annotation_id")["answer"]]
        normal = [normalise_transcript(t, "zh") for t in texts]
        if task_id == 12:
            assert consensus.at[12, "method"] == "review"
            assert answer_text(consensus.at[12, "answer"]) == "请把厨房的灯关掉再出门。"
            continue
        assert answer_text(consensus.at[task_id, "answer"]) == texts[medoid_transcript(normal, "char").index]
        if len(texts) >= 2:
            assert consensus.at[task_id, "agreement"] == pytest.approx(transcript_agreement(normal, "char"))
            assert consensus.at[task_id, "method"] == "medoid"
        else:
            assert consensus.at[task_id, "method"] == "single" and math.isnan(consensus.at[task_id, "agreement"])
    # The same tables through the shared written-answer judge (a loop over tasks) give the same pairwise figures.
    votes = annotation_rows[annotation_rows["annotator_email"] != "lead@x"].copy()
    looped = report.consensus.copy()
    pairwise_loop, _ = WrittenAnswerTask.judge(kind, looped, votes, votes.iloc[0:0], spec, {})
    pairwise_fast, _ = kind.judge(report.consensus.copy(), votes, votes.iloc[0:0], spec, {})
    pd.testing.assert_frame_equal(
        pairwise_fast.reset_index(drop=True), pairwise_loop.reset_index(drop=True), check_dtype=False
    )
