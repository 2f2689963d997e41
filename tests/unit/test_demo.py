"""The demo's sample data and model code, without servers."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
    assert [p.key for p in projects] == ["digits", "reviews", "preferences"]
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
