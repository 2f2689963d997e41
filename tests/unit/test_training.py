"""Baseline classifiers (tasks/training.py) and the MLflow pre-labeler's logic (tasks/prelabel.py) on fixed data."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labelflow.integrations.errors import AdapterError
from labelflow.integrations.mlflow_tracking import MLflowError
from labelflow.tasks.prelabel import MLflowPredictor, build_predictor, check_model_classes, task_items
from labelflow.tasks.spec import SpecError, parse_spec
from labelflow.tasks.training import (
    MIN_ROWS_PER_CLASS,
    BaselineClassifier,
    TrainingError,
    classifier,
    model_inputs,
    train_baseline,
)
from tests.audio_signals import tone
from tests.unit.fakes import FakeClients, PlainSteps
from tests.unit.stage_fixtures import annotate_all, collect, text_spec, upload_reviews
from tests.unit.stage_fixtures import ingest as stage_ingest

# A tiny Chinese sentiment corpus: no spaces, so only character n-grams can learn it.
POSITIVE = [
    "质量很好，非常满意",
    "服务很好，推荐",
    "非常好用，满意",
    "房间干净，很满意",
    "物流很快，好评",
    "很好，值得推荐",
]
NEGATIVE = [
    "质量太差，很失望",
    "服务很差，不推荐",
    "太差了，退货",
    "房间很脏，失望",
    "物流太慢，差评",
    "很差，不值得买",
]


def chinese_corpus() -> tuple[list[str], list[str]]:
    return POSITIVE + NEGATIVE, ["positive"] * len(POSITIVE) + ["negative"] * len(NEGATIVE)


def spec_for(task: str = "text-classification", labels: list[str] | None = None, **extra: Any) -> Any:
    body = {
        "name": "reviews",
        "source": "s3://raw/reviews/",
        "task": task,
        "labels": labels or ["positive", "negative"],
    }
    return parse_spec({**body, **extra})


def mlflow_spec(labels: list[str] | None = None, task: str = "text-classification") -> Any:
    return spec_for(task, labels, prelabel={"predictor": "mlflow", "model_uri": "models:/reviews-baseline/latest"})


def test_text_classifier_learns_chinese_from_characters() -> None:
    texts, labels = chinese_corpus()
    model = classifier("text").fit(texts, labels)
    assert list(model.predict(["非常满意，推荐", "很失望，差评"])) == ["positive", "negative"]


def test_text_baseline_on_the_demo_corpus_beats_chance_clearly() -> None:
    lines = (files("labelflow") / "demo_data" / "reviews_zh.jsonl").read_text(encoding="utf-8").splitlines()
    rows = pd.DataFrame([json.loads(line) for line in lines if line.strip()])
    frame = rows.iloc[:300].assign(task_id=range(300), source_uri=[f"s3://raw/r/{i}.txt" for i in range(300)])
    trained = train_baseline(spec_for(), frame, read_object=lambda uri: b"")
    held_out = rows.iloc[300:]  # 500 reviews: chance is 0.5 give or take 0.02
    predicted = trained.model.predict(pd.DataFrame({"text": held_out["text"]}))["label"]
    assert (predicted.to_numpy() == held_out["label"].to_numpy()).mean() > 0.68
    assert trained.holdout_rows == 60 and trained.train_rows == 240 and 0.6 < trained.accuracy <= 1.0


def test_baseline_output_has_a_probability_column_per_class_in_the_spec_order_and_a_label() -> None:
    texts, labels = chinese_corpus()
    model = BaselineClassifier("text", classifier("text").fit(texts, labels), ["positive", "negative"])
    out = model.predict(pd.DataFrame({"text": ["非常满意", "很失望"]}))
    assert list(out.columns) == ["positive", "negative", "label"]
    assert np.allclose(out[["positive", "negative"]].sum(axis=1), 1.0)
    assert list(out["label"]) == ["positive", "negative"]
    assert model.metadata == {"classes": ["positive", "negative"], "media": "text", "input": "text"}
    assert model.output_types == {"positive": "double", "negative": "double", "label": "string"}


def png(kind: str, seed: int) -> bytes:
    """A 32x32 grayscale picture: horizontal or vertical stripes with a little noise."""
    rng = np.random.default_rng(seed)
    stripes = (np.arange(32) // 4 % 2 * 200).astype(np.float64)
    pixels = np.tile(stripes, (32, 1)) if kind == "vertical" else np.tile(stripes[:, None], (1, 32))
    pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_baseline_reads_the_objects_and_tells_stripes_apart() -> None:
    objects = {f"s3://raw/img/{kind}-{i}.png": png(kind, i) for kind in ("vertical", "horizontal") for i in range(8)}
    frame = pd.DataFrame(
        {"task_id": range(16), "source_uri": list(objects), "label": [u.split("/")[-1].split("-")[0] for u in objects]}
    )
    spec = spec_for("image-classification", ["vertical", "horizontal"])
    read: list[str] = []

    def read_object(uri: str) -> bytes:
        read.append(uri)
        return objects[uri]

    inputs = model_inputs(spec, frame, read_object)
    assert inputs.shape == (16, 256) and read == list(objects)
    trained = train_baseline(spec, frame, read_object)
    out = trained.model.predict(pd.DataFrame({"content": [png("vertical", 99), png("horizontal", 98)]}))
    assert list(out["label"]) == ["vertical", "horizontal"] and trained.accuracy == 1.0


def test_audio_baseline_tells_low_tones_from_high_ones_at_any_sample_rate() -> None:
    clips = {}
    for i in range(6):
        clips[f"s3://raw/a/low-{i}.wav"] = tone(0.5 + i * 0.1, freq=200 + 20 * i, rate=16000)
        clips[f"s3://raw/a/high-{i}.flac"] = tone(0.5 + i * 0.1, freq=3000 + 100 * i, rate=22050, audio_format="FLAC")
    frame = pd.DataFrame(
        {"task_id": range(12), "source_uri": list(clips), "label": [u.split("/")[-1].split("-")[0] for u in clips]}
    )
    spec = spec_for("audio-classification", ["low", "high"])
    trained = train_baseline(spec, frame, clips.__getitem__)
    new = [tone(0.7, freq=250, rate=44100), tone(0.7, freq=3300, rate=8000)]
    assert list(trained.model.predict(pd.DataFrame({"content": new}))["label"]) == ["low", "high"]
    assert trained.model.input_types == {"content": "binary"}


def test_training_needs_enough_rows_of_every_class_and_leaves_out_machine_labels() -> None:
    texts, labels = chinese_corpus()
    frame = pd.DataFrame({"task_id": range(12), "text": texts, "label": labels, "method": "consensus"})
    frame.loc[frame.index[:2], "method"] = "model"  # two machine labels: 4 positive rows remain from people
    with pytest.raises(ValueError) as raised:
        train_baseline(spec_for(labels=["positive", "negative", "neutral"]), frame, lambda uri: b"")
    assert str(raised.value) == (
        f"too few labeled rows to train: positive has 4, neutral has 0 (at least {MIN_ROWS_PER_CLASS} per class)"
    )


def test_a_medium_without_a_baseline_is_refused() -> None:
    with pytest.raises(ValueError, match="no baseline model reads record tasks"):
        classifier("record")


# --- the MLflow pre-labeler -------------------------------------------------------------------------------------


@dataclass
class FakeLoadedModel:
    """A pyfunc model as the adapter hands it over: metadata and a predict that may crash on some items."""

    metadata: dict[str, Any]
    answer: Any  # frame -> output frame
    uri: str = "models:/reviews-baseline/3"
    output_columns: list[str] | None = None
    calls: list[int] = field(default_factory=list)

    def predict(self, frame: pd.DataFrame) -> Any:
        self.calls.append(len(frame))
        return self.answer(frame)


@dataclass
class FakeRegistry:
    """The tracking port's model calls: one registered version, or a refusal."""

    model: FakeLoadedModel | None
    refusal: AdapterError | None = None
    resolved: list[str] = field(default_factory=list)

    def resolve_model_uri(self, uri: str) -> tuple[str, str]:
        self.resolved.append(uri)
        if self.refusal is not None:
            raise self.refusal
        return "reviews-baseline", "3"

    def load_model(self, name: str, version: str) -> FakeLoadedModel:
        assert self.model is not None
        return self.model


def positive_unless_boom(frame: pd.DataFrame) -> pd.DataFrame:
    """Probabilities from the text; raises for any batch holding a text with `boom`, NaN for `blank`."""
    texts = frame["text"].tolist()
    if any("boom" in text for text in texts):
        raise RuntimeError("the model crashed")
    positive = [np.nan if text == "blank" else (0.9 if "好" in text else 0.2) for text in texts]
    # Columns in another order than the spec's labels: the predictor maps them by name.
    return pd.DataFrame({"negative": [1 - p for p in positive], "positive": positive, "label": "x"})


def text_items(*texts: str) -> list[dict[str, Any]]:
    return [{"text": text, "source_uri": f"s3://raw/reviews/{i}.txt"} for i, text in enumerate(texts)]


def test_a_model_that_crashes_on_some_items_costs_only_those_items() -> None:
    model = FakeLoadedModel({"classes": ["negative", "positive"]}, positive_unless_boom)
    predictor = MLflowPredictor(mlflow_spec(), FakeRegistry(model))
    probabilities = predictor.probabilities(text_items("很好", "boom", "差", "blank"))
    assert probabilities.shape == (4, 2)
    assert np.allclose(probabilities[0], [0.9, 0.1]) and np.allclose(probabilities[2], [0.2, 0.8])
    assert np.isnan(probabilities[1]).all() and np.isnan(probabilities[3]).all()
    assert predictor.failures == 2
    assert model.calls == [4, 1, 1, 1, 1]  # the batch, then item by item once it crashed


def test_predictions_carry_the_model_version_and_the_top_probability() -> None:
    model = FakeLoadedModel({"classes": ["positive", "negative"]}, positive_unless_boom)
    predictor = build_predictor(mlflow_spec(), FakeRegistry(model))
    assert predictor is not None and predictor.model_version == "models:/reviews-baseline/3"
    good, crashed, bad = predictor.predict(text_items("好", "boom", "差"))
    assert crashed is None and predictor.failures == 1  # type: ignore[attr-defined]
    assert good == {
        "model_version": "models:/reviews-baseline/3",
        "score": 0.9,
        "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}],
    }
    assert bad is not None and bad["score"] == 0.8 and bad["result"][0]["value"]["choices"] == ["negative"]


def test_a_model_whose_classes_differ_from_the_labels_is_refused_in_one_line() -> None:
    model = FakeLoadedModel({"classes": ["positive", "negative", "spam"]}, positive_unless_boom)
    with pytest.raises(SpecError) as raised:
        MLflowPredictor(mlflow_spec(["positive", "negative", "neutral"]), FakeRegistry(model))
    assert str(raised.value) == (
        "prelabel.model_uri: models:/reviews-baseline/3 predicts the classes positive, negative, spam, not the "
        "spec's labels positive, negative, neutral (not in the spec: spam; missing: neutral)"
    )
    assert model.calls == []


def test_the_classes_come_from_the_output_signature_when_the_metadata_has_none() -> None:
    signed = FakeLoadedModel({}, positive_unless_boom, output_columns=["positive", "negative", "label"])
    assert MLflowPredictor(mlflow_spec(), FakeRegistry(signed)).classes == ["positive", "negative"]
    with pytest.raises(SpecError, match="declares no classes"):
        MLflowPredictor(mlflow_spec(), FakeRegistry(FakeLoadedModel({}, positive_unless_boom)))
    with pytest.raises(SpecError, match="repeated classes"):
        check_model_classes("models:/m/1", ["positive", "positive", "negative"], ["positive", "negative"])


def test_a_model_the_registry_does_not_have_is_refused_in_one_line_and_an_outage_is_not_a_spec_error() -> None:
    missing = AdapterError("MLflow at http://mlflow has no model models:/reviews-baseline/latest: not found")
    with pytest.raises(SpecError) as raised:
        MLflowPredictor(mlflow_spec(), FakeRegistry(None, missing))
    assert str(raised.value) == f"prelabel.model_uri: {missing}" and "\n" not in str(raised.value)
    outage = MLflowError("MLflow at http://mlflow: cannot reach the server", transient=True)
    with pytest.raises(AdapterError) as raised_outage:
        MLflowPredictor(mlflow_spec(), FakeRegistry(None, outage))
    assert not isinstance(raised_outage.value, SpecError)


def test_media_models_read_each_object_once_and_send_its_bytes() -> None:
    seen: list[list[bytes]] = []

    def answer(frame: pd.DataFrame) -> pd.DataFrame:
        seen.append(list(frame["content"]))
        return pd.DataFrame({"low": [0.7] * len(frame), "high": [0.3] * len(frame)})

    spec = mlflow_spec(["low", "high"], task="audio-classification")
    model = FakeLoadedModel({"classes": ["low", "high"], "input": "content"}, answer)
    with pytest.raises(SpecError, match="need a reader of their objects"):
        MLflowPredictor(spec, FakeRegistry(model))
    predictor = MLflowPredictor(spec, FakeRegistry(model), read_object=lambda uri: uri.encode())
    tasks = pd.DataFrame({"task_id": [7, 8], "source_uri": ["s3://raw/a/1.wav", "s3://raw/a/2.wav"], "text": None})
    items = task_items(spec, tasks)
    assert items == [
        {"audio": "s3://raw/a/1.wav", "source_uri": "s3://raw/a/1.wav", "task_id": 7},
        {"audio": "s3://raw/a/2.wav", "source_uri": "s3://raw/a/2.wav", "task_id": 8},
    ]
    assert np.allclose(predictor.probabilities(items), [[0.7, 0.3], [0.7, 0.3]])
    assert seen == [[b"s3://raw/a/1.wav", b"s3://raw/a/2.wav"]]


def test_task_items_of_text_tasks_hold_the_text() -> None:
    tasks = pd.DataFrame({"task_id": [3], "source_uri": ["s3://raw/reviews/3.txt"], "text": ["很好"]})
    assert task_items(spec_for(), tasks) == [{"text": "很好", "source_uri": "s3://raw/reviews/3.txt", "task_id": 3}]


# --- the train stage on the in-memory fakes ---------------------------------------------------------------------


def test_train_refuses_a_spec_without_a_dataset_or_of_a_type_without_a_baseline_before_any_call() -> None:
    from labelflow.flows.train import train_spec

    clients = FakeClients()
    with pytest.raises(SpecError, match=r"^spec 'reviews' has no dataset section: it publishes no version to train"):
        train_spec(text_spec(), clients=clients, steps=PlainSteps())
    ner = parse_spec(
        {"name": "spans", "source": "s3://raw/t/", "task": "ner", "labels": ["LOC"], "dataset": {"name": "spans"}}
    )
    with pytest.raises(SpecError, match=r"^task ner has no baseline model: labelflow train covers text-, image- and"):
        train_spec(ner, clients=clients, steps=PlainSteps())
    assert clients.tracking.runs == {}


def test_train_needs_a_published_version_then_enough_rows_of_each_class() -> None:
    from labelflow.flows.train import train_spec
    from labelflow.tasks.registry import DatasetNotFound

    clients = FakeClients()
    spec = text_spec(dataset={"name": "reviews"})
    with pytest.raises(DatasetNotFound, match="no published version of dataset 'reviews'"):
        train_spec(spec, clients=clients, steps=PlainSteps())
    upload_reviews(clients, 0, 6)  # two texts of each of the three labels
    project_id = stage_ingest(clients, spec)["project_id"]
    annotate_all(clients, project_id)
    summary, _ = collect(clients, spec)
    assert summary["dataset"]["published"] and summary["dataset"]["version"] == 1
    with pytest.raises(TrainingError) as raised:
        train_spec(spec, version=1, clients=clients, steps=PlainSteps())
    assert str(raised.value) == (
        "too few labeled rows to train: positive has 2, negative has 2, neutral has 2 (at least 5 per class)"
    )
