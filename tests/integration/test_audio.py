"""The audio types on the real stack, from upload to pull.

audio-classification: clips in four formats are ingested and every broken one is quarantined with its reason
(judged on content: a truncated FLAC, an MP3 with a broken frame, a 0-byte file, a WAV header with no samples, a
3-hour header against a 30-minute limit, silence, a text and a picture); each task carries its duration, sample rate
and channels, and Label Studio serves the clip's bytes through its storage connection. Simulated annotators label
the clips (truth from folder names), collect publishes, and the pulled audio.jsonl lists clip, duration and label.

transcription: clips with reference transcripts (English and Chinese) are transcribed by simulated annotators and
a reviewer; the consensus is the medoid transcript (or the reviewer's), agreement is 1 - pairwise WER/CER, and the
pulled transcripts.jsonl is the speech-toolkit manifest (audio, duration, text).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
from PIL import Image

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.quality import parse_gold
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.simulate import build_annotators, run
from labelflow.tasks.spec import load_spec
from labelflow.tasks.task_types.free_text import answer_text, textarea_result
from tests import audio_signals
from tests.integration.test_ingest import all_tasks, write_spec

GOOD_CLIPS = {
    "clips/tone/a440.wav": (audio_signals.tone(1.0, 440, 16000, 1, "WAV"), 1.0, 16000, 1),
    "clips/tone/立体声.flac": (audio_signals.tone(2.0, 660, 44100, 2, "FLAC"), 2.0, 44100, 2),
    "clips/noise/hiss.ogg": (audio_signals.noise(1.5, 22050, "OGG"), 1.5, 22050, 1),
    "clips/noise/static.mp3": (audio_signals.noise(1.0, 16000, "MP3"), 1.0, 16000, 1),
    "clips/tone/no-extension": (audio_signals.tone(0.5, 880, 8000, 1, "WAV"), 0.5, 8000, 1),
}


def _picture() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    return buffer.getvalue()


BAD_CLIPS = {
    "clips/bad/truncated.flac": (audio_signals.truncated_flac(), "corrupt"),
    "clips/bad/broken-frame.mp3": (audio_signals.mp3_with_broken_frame(), "corrupt"),
    "clips/bad/zero.wav": (b"", "empty"),
    "clips/bad/header-only.wav": (audio_signals.wav_header_no_samples(), "empty"),
    "clips/bad/silent.wav": (audio_signals.silence(1.0), "empty"),
    "clips/bad/three-hours.wav": (audio_signals.wav_header_claim(3 * 3600.0), "too_long"),
    "clips/bad/notes.wav": ("这不是音频 — just text".encode(), "wrong_type"),
    "clips/bad/picture.mp3": (_picture(), "wrong_type"),
}


def test_audio_clips_are_cleaned_served_labeled_published_and_pulled(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect
    from labelflow.flows.ingest import ingest

    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    for key, (data, *_) in {**GOOD_CLIPS, **BAD_CLIPS}.items():
        object_store.put_bytes(source, key, data)
    spec_path = write_spec(
        tmp_path,
        {
            "name": f"audio {unique_name}",
            "source": f"s3://{source}/clips/",
            "state": f"s3://{unique_name}-state/labelflow/",
            "task": "audio-classification",
            "labels": ["tone", "noise"],
            "overlap": 2,
            "ingest": {"max_duration_seconds": 1800},
            "dataset": {"name": unique_name},
        },
    )
    spec = load_spec(spec_path)
    summary = ingest(str(spec_path))
    assert summary["tasks_created"] == len(GOOD_CLIPS), summary
    expected: dict[str, int] = {}
    for _, reason in BAD_CLIPS.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert summary["quarantined_by_reason"] == expected

    quarantine = object_store.get_bytes(*_bucket_key(summary["quarantine_report"])).decode()
    for key, (_, reason) in BAD_CLIPS.items():
        line = next(row for row in quarantine.splitlines() if key in row)
        assert reason in line  # every rejected object is listed with its reason and detail
    assert "over ingest.max_duration_seconds" in quarantine and "does not decode completely" in quarantine

    record = read_project_record(object_store, spec)
    assert record is not None
    project_id = int(record["project_id"])
    tasks = {t["data"]["source_key"]: t for t in all_tasks(label_studio, project_id)}
    assert set(tasks) == set(GOOD_CLIPS)
    for key, (data, seconds, rate, channels) in GOOD_CLIPS.items():
        task = tasks[key]["data"]
        assert task["audio"] == f"s3://{source}/{key}"
        assert abs(task["audio_duration"] - seconds) < 0.08, (key, task["audio_duration"])  # MP3 decoder padding
        assert (task["audio_sample_rate"], task["audio_channels"]) == (rate, channels)
        served = label_studio.resolve_uri(tasks[key]["id"], task["audio"])
        assert served.status_code == 200 and served.content == data

    annotators = build_annotators([1.0, 1.0], spammers=0, prefix=unique_name)
    assert run(label_studio, spec, project_id, annotators, seed=1)["annotations_created"] == 2 * len(GOOD_CLIPS)
    result = collect(str(spec_path))
    assert result["validation"]["success"], result["validation"]
    assert result["dataset"]["rows"] == len(GOOD_CLIPS), result["dataset"]

    pulled = DatasetRegistry(object_store, mlflow_tracking).pull(unique_name, None, tmp_path / "v1")
    export = pulled.path("training-export")
    lines = [json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    assert export.name == "audio.jsonl" and len(lines) == len(GOOD_CLIPS)
    for line in lines:
        key = line["audio"].split("/", 3)[3]
        assert line["label"] == key.split("/")[1] and abs(line["duration"] - GOOD_CLIPS[key][1]) < 0.08
    consensus = pd.read_parquet(pulled.path("consensus"))
    assert consensus["audio_duration"].notna().all() and set(consensus["audio_channels"]) == {1, 2}

    assert ingest(str(spec_path))["tasks_created"] == 0  # idempotent


REFERENCES = {
    "utt/en/1.wav": ("en", "please turn the lights off in the kitchen before you leave"),
    "utt/en/2.wav": ("en", "the train to london leaves from platform nine at half past six"),
    "utt/zh/1.wav": ("zh", "今天天气很好我们去公园散步吧"),
    "utt/zh/2.wav": ("zh", "请把厨房的灯关掉再出门"),
}
REVIEWED = "the train to london leaves from platform nine at half past six"


def test_transcripts_are_compared_by_error_rate_and_the_medoid_is_published(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect
    from labelflow.flows.ingest import ingest

    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    for i, key in enumerate(REFERENCES):
        object_store.put_bytes(source, key, audio_signals.tone(1.0 + i / 4, 300 + 100 * i, 16000, 1, "FLAC"))
    truth = pd.DataFrame({"source_key": list(REFERENCES), "label": [text for _, text in REFERENCES.values()]})
    object_store.put_bytes(source, "references.csv", truth.to_csv(index=False).encode())
    reviewer = f"lead-{unique_name}@example.com"
    results: dict[str, dict] = {}
    for language in ("en", "zh"):
        keys = [k for k, (lang, _) in REFERENCES.items() if lang == language]  # each project reads its own folder
        spec_path = write_spec(
            tmp_path,
            {
                "name": f"transcripts {language} {unique_name}",
                "source": f"s3://{source}/utt/{language}/",
                "state": f"s3://{unique_name}-state/{language}/",
                "task": "transcription",
                "options": {"language": language},
                "overlap": 3,
                "quality": {
                    "route_low_agreement": False,
                    "reviewers": [reviewer],
                    "min_agreement": 0.5,
                    "gold": f"s3://{source}/references.csv",  # every clip's reference: gold scores the annotators
                },
                "dataset": {"name": f"{unique_name}-{language}"},
            },
        )
        spec = load_spec(spec_path)
        assert ingest(str(spec_path))["tasks_created"] == len(keys)
        project_id = int(read_project_record(object_store, spec)["project_id"])  # type: ignore[index]
        tasks = {t["data"]["source_key"]: t for t in all_tasks(label_studio, project_id)}
        gold = parse_gold(truth.to_csv(index=False).encode(), "truth.csv", None)
        annotators = build_annotators([0.95, 0.9, 0.85], spammers=0, prefix=f"{unique_name}-{language}")
        done = run(label_studio, spec, project_id, annotators, truth=gold, seed=11)
        assert done["annotations_created"] == 3 * len(keys)
        if language == "en":
            reviewer_id = label_studio.create_user(reviewer)
            label_studio.create_annotation(
                tasks["utt/en/2.wav"]["id"], textarea_result(REVIEWED, "audio"), reviewer_id, 9
            )
        result = collect(str(spec_path))
        assert result["validation"]["success"], result["validation"]
        results[language] = result
        pulled = DatasetRegistry(object_store, mlflow_tracking).pull(
            f"{unique_name}-{language}", None, tmp_path / language
        )
        export = pulled.path("training-export")
        manifest = {json.loads(line)["audio"]: json.loads(line) for line in export.read_text("utf-8").splitlines()}
        assert export.name == "transcripts.jsonl" and len(manifest) == len(keys)
        assert all(set(line) == {"audio", "duration", "text", "task_id"} for line in manifest.values())
        consensus = pd.read_parquet(pulled.path("consensus"))
        consensus["key"] = consensus["source_uri"].str.split("/", n=3).str[3]
        for row in consensus.itertuples(index=False):
            if row.key == "utt/en/2.wav" and language == "en":
                assert row.method == "review" and answer_text(row.answer) == REVIEWED
            else:
                assert row.method == "medoid" and 0.0 < row.agreement <= 1.0
            assert manifest[row.source_uri]["text"] == answer_text(row.answer)
            assert abs(manifest[row.source_uri]["duration"] - row.audio_duration) < 1e-6
        quality = results[language]["quality"]
        assert quality["agreement_measure"].startswith("1 - mean pairwise error rate") and quality["gold_tasks"] == 2
    # Careful annotators (85-95 % of units right) leave a consensus within a few per cent of the reference.
    assert results["zh"]["quality"]["consensus_cer_on_gold"] < 0.15
    assert results["en"]["quality"]["consensus_wer_on_gold"] < 0.15


def _bucket_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key
