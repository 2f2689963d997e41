"""The demo's sample data and model code, without servers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelflow.demo import DemoProject, demo_specs, digit_features, png_to_ink, train_and_score, training_inputs
from labelflow.tasks.spec import parse_spec


def test_uploaded_digit_pngs_give_back_the_pixels_the_test_set_is_made_of() -> None:
    from sklearn.datasets import load_digits

    projects, uploads = demo_specs(images=100, texts=50, seed=0)
    digits = load_digits()
    by_name = {f"digits/digit-{i:04d}.png": i for i in range(len(digits.target))}
    for key, payload, label in uploads["digits"][:20]:
        index = by_name[key]
        assert label == str(digits.target[index])
        recovered = digit_features(png_to_ink(payload)[None])[0]
        expected = digit_features((digits.images[index] * 255 / 16)[None])[0]
        assert np.abs(recovered - expected).max() < 0.01
    digits_project = next(p for p in projects if p.key == "digits")
    assert len(uploads["digits"]) == 100 and len(digits_project.test_set[1]) == len(digits.target) - 100


def test_demo_specs_are_valid_and_the_reviews_are_chinese_with_their_labels() -> None:
    projects, uploads = demo_specs(images=100, texts=50, seed=0)
    assert [p.key for p in projects] == ["digits", "reviews", "preferences", "speech"]
    for project in projects[:2]:
        spec = parse_spec(project.spec)
        assert spec.quality.aggregation == "dawid-skene" and spec.overlap == 3
        assert set(project.truth["label"]) <= set(spec.labels)
    reviews = uploads["reviews"]
    assert len(reviews) == 50 and {label for _, _, label in reviews} == {"positive", "negative"}
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in payload.decode("utf-8")) for _, payload, _ in reviews)


def test_a_model_trained_on_true_digit_labels_beats_chance_by_far() -> None:
    projects, uploads = demo_specs(images=300, texts=50, seed=0)
    project: DemoProject = next(p for p in projects if p.key == "digits")
    payloads = {f"s3://labelflow-demo/{key}": payload for key, payload, _ in uploads["digits"]}
    rows = pd.DataFrame({"source_uri": list(payloads)})
    inputs = training_inputs(project, rows, payloads.__getitem__)
    accuracy = train_and_score(project, inputs, project.truth.set_index("source_uri").loc[rows["source_uri"], "label"])
    assert accuracy > 0.85  # ten classes: chance is 0.1


def test_demo_home_option_is_the_home_its_clients_read(monkeypatch, tmp_path) -> None:
    """`labelflow demo --home DIR` from another directory connects to DIR's stack, not ./.labelflow."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import labelflow.cli.stack as stack_commands
    import labelflow.demo as demo_module
    from labelflow.cli import app

    home = tmp_path / "stack-home"
    seen: dict[str, str | None] = {}
    fake_stack = SimpleNamespace(config=SimpleNamespace(home=home), status=lambda: [SimpleNamespace(healthy=True)])
    monkeypatch.setattr(stack_commands, "_stack", lambda given: fake_stack)
    monkeypatch.delenv("LABELFLOW_HOME", raising=False)

    def stop_at_settings(*args: object, **kwargs: object) -> None:
        import os

        seen["home"] = os.environ.get("LABELFLOW_HOME")
        raise SystemExit(0)

    monkeypatch.setattr(stack_commands, "prefect_connection", stop_at_settings)
    monkeypatch.setattr(demo_module, "run_demo", stop_at_settings)
    monkeypatch.chdir(tmp_path)
    CliRunner().invoke(app, ["demo", "--home", str(home)])
    assert seen["home"] == str(home)


def test_the_preference_project_reads_the_shipped_corpus_as_records_with_its_human_preference() -> None:
    import json

    projects, uploads = demo_specs(images=100, texts=50, seed=0)
    project = projects[2]
    spec = parse_spec(project.spec)
    assert spec.task == "preference" and spec.records is not None and spec.records.fields["gold"] == "preferred"
    [(key, payload, _)] = uploads["preferences"]
    records = [json.loads(line) for line in payload.decode("utf-8").splitlines()]
    assert key == "preferences/pairs.jsonl" and len(records) == len(project.truth) == 163
    assert {r["preferred"] for r in records} == {"A", "B"} and all(r["response_a"] != r["response_b"] for r in records)
    assert set(project.truth["id"]) == {r["id"] for r in records}


def test_the_speech_project_uploads_generated_clips_whose_gold_file_holds_their_chinese_references() -> None:
    import io

    import soundfile

    from labelflow.tasks.quality import parse_gold

    projects, uploads = demo_specs(images=100, texts=50, seed=0)
    project = next(p for p in projects if p.key == "speech")
    spec = parse_spec(project.spec)
    assert spec.task == "transcription" and spec.task_options.language == "zh" and spec.overlap == 3
    assert spec.quality.gold == "s3://labelflow-demo/gold/speech.csv" and project.gold is not None
    clips = uploads["speech"]
    assert len(clips) == len({key for key, _, _ in clips}) == 24
    # the gold file, as collect reads it, gives every uploaded clip its reference; so does the simulator's truth
    gold = parse_gold(project.gold.to_csv(index=False).encode(), "speech.csv", None)
    assert dict(zip(gold["source_key"], gold["gold_label"], strict=True)) == {key: ref for key, _, ref in clips}
    assert dict(zip(project.truth["source_uri"], project.truth["label"], strict=True)) == {
        f"s3://labelflow-demo/{key}": ref for key, _, ref in clips
    }
    assert all(key.startswith("speech/") for key, _, _ in clips)  # under the spec's source prefix
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in ref) for _, _, ref in clips)
    formats = set()
    for key, payload, _ in clips:
        info = soundfile.info(io.BytesIO(payload))
        formats.add(info.format)
        assert key.endswith(f".{info.format.lower()}") and 0.5 <= info.duration <= 2.0
        samples, _ = soundfile.read(io.BytesIO(payload))
        assert abs(samples).max() > 0.1  # not silent: cleaning would quarantine it as empty
    assert formats == {"WAV", "FLAC"}


def test_the_generated_clips_are_the_same_bytes_on_every_run_whatever_the_seed() -> None:
    first = demo_specs(images=100, texts=50, seed=0)[1]["speech"]
    again = demo_specs(images=120, texts=60, seed=7)[1]["speech"]
    assert first == again  # a key always holds the same clip, so a re-run re-uses its objects and tasks
    assert len({payload for _, payload, _ in first}) == len(first)


def test_transcription_results_score_the_medoid_and_every_annotator_against_the_references(tmp_path) -> None:
    import json

    from labelflow.demo import DEMO_KINDS

    projects, _ = demo_specs(images=100, texts=50, seed=0)
    assert {p.kind for p in projects} <= set(DEMO_KINDS)
    project = next(p for p in projects if p.key == "speech")
    first, second = project.truth["source_uri"][:2]
    ref_first, ref_second = project.truth["label"][:2]  # 13 and 14 characters (punctuation is not scored)
    wrong_first = ref_first.replace("真", "很")  # one character of 13 substituted
    answers = {  # annotator -> (transcript of the first clip, of the second)
        "a@x": (ref_first, ref_second),
        "b@x": (wrong_first, ref_second + "呀"),  # and one character inserted
        "c@x": ("", ref_second),  # a transcript of nothing: every character deleted
    }
    annotations = pd.DataFrame(
        [
            {"source_uri": uri, "annotator_email": who, "answer": json.dumps({"text": text}), "problem": None}
            for who, texts in answers.items()
            for uri, text in zip((first, second), texts, strict=True)
        ]
    )
    annotations.to_parquet(tmp_path / "annotations.parquet")
    export = tmp_path / "transcripts.jsonl"
    export.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in "xyz"), encoding="utf-8")
    rows = pd.DataFrame(
        {
            "source_uri": [first, second, "s3://labelflow-demo/speech/from-an-older-run.wav"],
            "answer": [json.dumps({"text": wrong_first}), json.dumps({"text": ref_second}), json.dumps({"text": "x"})],
        }
    )
    rows.attrs["labelflow"] = {
        "version": 2,
        "files": {"annotations": str(tmp_path / "annotations.parquet"), "training-export": str(export)},
    }
    results = DEMO_KINDS["transcription"].results(project, rows, lambda uri: b"")
    assert results["rows"] == 3 and results["compared"] == 2 and results["version"] == 2
    assert abs(results["consensus_cer"] - (1 / 13 + 0) / 2) < 1e-9
    per_annotator = {"a@x": 0.0, "b@x": (1 / 13 + 1 / 14) / 2, "c@x": (1.0 + 0.0) / 2}
    assert results["annotator_cer"] == pytest.approx(per_annotator)
    assert results["random_annotator_cer"] == pytest.approx(sum(per_annotator.values()) / 3)
    assert results["manifest_lines"] == 3 and results["manifest_head"] == [{"text": "x"}, {"text": "y"}]
