"""`labelflow demo`: the whole pipeline on real public sample data, start to finish, on the local stack."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

DEMO_BUCKET = "labelflow-demo"
ANNOTATORS = [0.95, 0.85, 0.6]  # a careful, a decent and a sloppy annotator
GOLD_PER_PROJECT = 40


@dataclass
class DemoProject:
    """One demo project: its spec, its sample split and what each stage reported."""

    key: str
    kind: str  # which entry of DEMO_KINDS pulls its version back and reports it
    spec: dict[str, Any]
    truth: pd.DataFrame  # source_uri, label of every uploaded object (preferences: each pair's id and preference)
    test_set: Any  # held-out examples with their true labels (never uploaded); None when no model is trained
    gold: pd.DataFrame | None = None  # the gold file uploaded to spec quality.gold, if the spec has one
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec["name"]


def digits_sample(count: int, seed: int) -> tuple[list[tuple[str, bytes, str]], tuple[np.ndarray, np.ndarray]]:
    """`count` of scikit-learn's bundled 8x8 digits as 64x64 PNGs (key, bytes, label) and the rest as a test set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    chosen, rest = order[:count], order[count:]
    uploads = []
    for index in chosen:
        pixels = (255 - digits.images[index] * 255 / 16).round().astype(np.uint8)  # dark ink on white paper
        image = Image.fromarray(pixels, mode="L").resize((64, 64), Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        uploads.append((f"digits/digit-{int(index):04d}.png", buffer.getvalue(), str(digits.target[index])))
    return uploads, (digit_features(digits.images[rest] * 255 / 16), digits.target[rest].astype(str))


def digit_features(ink: np.ndarray) -> np.ndarray:
    """8x8 ink intensities (0-255) -> 64 features in [0, 1]."""
    return (ink.reshape(len(ink), -1) / 255.0).astype(np.float32)


def png_to_ink(payload: bytes) -> np.ndarray:
    """A demo PNG back to its 8x8 ink intensities."""
    image = Image.open(io.BytesIO(payload)).convert("L").resize((8, 8), Image.Resampling.BOX)
    return 255.0 - np.asarray(image, dtype=np.float32)


def reviews_sample(count: int, seed: int) -> tuple[list[tuple[str, bytes, str]], tuple[list[str], list[str]]]:
    """`count` of the bundled Chinese reviews as UTF-8 .txt objects (key, bytes, label) and the rest as a test set."""
    lines = (files("labelflow") / "demo_data" / "reviews_zh.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [(i, json.loads(line)) for i, line in enumerate(line for line in lines if line.strip())]
    random.Random(seed).shuffle(rows)
    chosen, rest = rows[:count], rows[count:]
    # Keys name the line of the corpus, so a key means the same review whatever --texts and --seed were.
    uploads = [(f"reviews/review-{i:04d}.txt", r["text"].encode("utf-8"), r["label"]) for i, r in chosen]
    return uploads, ([r["text"] for _, r in rest], [r["label"] for _, r in rest])


PREFERENCE_PAIRS = "preference/pairs.jsonl"  # in labelflow/demo_data: BIG-bench hhh_alignment (Apache-2.0)


def preference_sample() -> tuple[list[tuple[str, bytes, str]], pd.DataFrame]:
    """The preference corpus as one JSONL file of records to upload, and each pair's human preference (by id)."""
    payload = files("labelflow").joinpath("demo_data", PREFERENCE_PAIRS).read_bytes()
    pairs = pd.read_json(io.BytesIO(payload), lines=True, dtype=False)
    return [("preferences/pairs.jsonl", payload, "")], pairs[["id", "preferred"]]


def preference_spec() -> dict[str, Any]:
    """The demo's preference project: which of two answers is better, read from a file of records."""
    return {
        "name": "Demo: preferences",
        "source": f"s3://{DEMO_BUCKET}/preferences/",
        "task": "preference",
        "records": {
            "format": "jsonl",
            "id": "id",
            "max_chars": 20_000,
            # `preferred` is the corpus's own human preference: gold for scoring annotators and the simulator's truth
            "fields": {"prompt": "prompt", "response_a": "response_a", "response_b": "response_b", "gold": "preferred"},
        },
        "options": {"allow_tie": True, "ask_reason": False},
        "overlap": len(ANNOTATORS),
        "instructions": "Demo project created by `labelflow demo`: choose the more helpful, honest and harmless answer.",
        "quality": {"route_low_agreement": False, "min_annotations_for_tier": 10},
        "dataset": {"name": "demo-preferences"},
    }


# Everyday Mandarin sentences, written for the demo: the reference transcripts of its generated clips.
SPEECH_REFERENCES = (
    "今天天气真好，我们出去走走吧。",
    "请帮我把窗户关上，外面风太大了。",
    "明天早上八点在公司门口见面。",
    "这家饭馆的牛肉面特别好吃。",
    "我下班以后要去超市买点水果。",
    "周末你有空一起去看电影吗？",
    "地铁站就在前面那个路口左边。",
    "孩子们在公园里放风筝。",
    "麻烦你说慢一点，我没听清楚。",
    "这个周末我打算在家看书。",
    "会议改到下午三点，请大家准时参加。",
    "他每天早上都会跑步半个小时。",
    "别忘了带伞，晚上可能会下雨。",
    "妈妈做的红烧肉最好吃了。",
    "我的手机快没电了，借我充一下。",
    "火车票已经订好了，下周一出发。",
    "请问去火车站应该坐几路公交车？",
    "这本书我看了两遍，还是很喜欢。",
    "冰箱里还有牛奶和鸡蛋。",
    "今天的作业有点多，我得抓紧时间。",
    "楼下新开了一家咖啡店。",
    "你先休息一下，剩下的我来做。",
    "春节我们全家要回老家过年。",
    "谢谢你的帮助，下次我请你吃饭。",
)
SPEECH_RATE = 16000
SPEECH_NOTE = "the clips are generated tones; the reference transcripts are the simulator's truth"


def speech_clip(sentence: str, seed: int) -> tuple[bytes, str]:
    """A stand-in clip for `sentence` (no speech ships offline): one short tone burst over faint noise per
    character, 0.5-2 s long, as WAV or FLAC; the same bytes for the same sentence and seed. (payload, extension)"""
    import soundfile

    rng = np.random.default_rng(seed)
    syllables = [ch for ch in sentence if "\u4e00" <= ch <= "\u9fff"]
    seconds = min(max(rng.uniform(0.06, 0.14) * len(syllables), 0.5), 2.0)  # a slow or a fast speaker
    frames = round(seconds * SPEECH_RATE)
    samples = rng.normal(0.0, 0.01, frames)
    bounds = np.linspace(0, frames, len(syllables) + 1).astype(int)
    for start, end in pairwise(bounds.tolist()):
        t = np.arange(end - start) / SPEECH_RATE
        pitch = rng.uniform(120.0, 320.0)  # a voice's range of fundamental frequencies
        burst = np.sin(2 * np.pi * pitch * t) + 0.3 * np.sin(4 * np.pi * pitch * t)
        samples[start:end] += 0.3 * burst * np.hanning(end - start)
    audio_format = "FLAC" if rng.random() < 0.5 else "WAV"
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.astype(np.float32), SPEECH_RATE, format=audio_format, subtype="PCM_16")
    return buffer.getvalue(), audio_format.lower()


def speech_sample() -> tuple[list[tuple[str, bytes, str]], pd.DataFrame]:
    """A generated clip per reference sentence (key, bytes, reference) and the gold file: source_key, label.

    Each clip is seeded by its sentence's place in SPEECH_REFERENCES, not by --seed, so a key always holds the
    same bytes: a demo run with another seed re-uses the objects and tasks already there."""
    uploads = []
    for index, sentence in enumerate(SPEECH_REFERENCES):
        payload, extension = speech_clip(sentence, index)
        uploads.append((f"speech/utterance-{index:02d}.{extension}", payload, sentence))
    gold = pd.DataFrame({"source_key": [key for key, _, _ in uploads], "label": list(SPEECH_REFERENCES)})
    return uploads, gold


def speech_spec() -> dict[str, Any]:
    """The demo's transcription project: Mandarin clips, transcripts compared by character error rate."""
    return {
        "name": "Demo: 语音转写",
        "source": f"s3://{DEMO_BUCKET}/speech/",
        "task": "transcription",
        "options": {"language": "zh"},  # written without spaces: transcripts are compared character by character
        "overlap": len(ANNOTATORS),
        "instructions": f"Demo project created by `labelflow demo`: write exactly what is said ({SPEECH_NOTE}).",
        "quality": {
            "gold": f"s3://{DEMO_BUCKET}/gold/speech.csv",  # every clip's reference: gold scores the annotators
            # 1 - mean pairwise CER. ANNOTATORS make about 5 %, 15 % and 40 % character errors: a task's agreement
            # is about 0.65, under 0.5 on about one task in twenty, which is held back.
            "min_agreement": 0.5,
            "route_low_agreement": False,
            "min_annotations_for_tier": 10,
        },
        # The CER per annotator below reads the published annotations by email: the simulated users' own.
        "dataset": {"name": "demo-speech", "include_annotator_ids": True},
    }


def demo_specs(images: int, texts: int, seed: int) -> tuple[list[DemoProject], dict[str, list[tuple[str, bytes, str]]]]:
    """The four demo projects and the objects to upload for each."""
    digit_uploads, digit_test = digits_sample(images, seed)
    review_uploads, review_test = reviews_sample(texts, seed)
    projects, uploads = [], {}
    for key, task, labels, objects, test, title in (
        ("digits", "image-classification", [str(d) for d in range(10)], digit_uploads, digit_test, "Demo: digits"),
        ("reviews", "text-classification", ["positive", "negative"], review_uploads, review_test, "Demo: 中文评论"),
    ):
        spec = {
            "name": title,
            "source": f"s3://{DEMO_BUCKET}/{key}/",
            "task": task,
            "labels": labels,
            "overlap": len(ANNOTATORS),
            "instructions": "Demo project created by `labelflow demo`.",
            "quality": {
                "aggregation": "dawid-skene",
                "gold": f"s3://{DEMO_BUCKET}/gold/{key}.csv",
                "route_low_agreement": False,
                "min_annotations_for_tier": 10,
            },
            "dataset": {"name": f"demo-{key}", "min_rows_per_class": 3},
        }
        truth = uploaded_truth(objects)
        gold = truth.sample(n=min(GOLD_PER_PROJECT, len(truth)), random_state=seed)
        projects.append(DemoProject(key, "classifier", spec, truth, test, gold))
        uploads[key] = objects
    pair_file, preferred = preference_sample()
    projects.append(DemoProject("preferences", "preference", preference_spec(), preferred, None))
    uploads["preferences"] = pair_file
    clips, references = speech_sample()
    projects.append(DemoProject("speech", "transcription", speech_spec(), uploaded_truth(clips), None, references))
    uploads["speech"] = clips
    return projects, uploads


def uploaded_truth(objects: list[tuple[str, bytes, str]]) -> pd.DataFrame:
    """source_uri, label of uploaded (key, bytes, label) objects: the simulator's truth."""
    return pd.DataFrame(
        {"source_uri": [f"s3://{DEMO_BUCKET}/{k}" for k, _, _ in objects], "label": [lab for _, _, lab in objects]}
    )


def training_inputs(project: DemoProject, rows: pd.DataFrame, read_object: Callable[[str], bytes]) -> Any:
    """The model inputs of the pulled rows: pixel features of each digit image (read once), or the review texts
    (as `labelflow train` reads them)."""
    from labelflow.tasks.training import model_inputs

    if project.key == "digits":
        return digit_features(np.stack([png_to_ink(read_object(uri)) for uri in rows["source_uri"]]))
    return model_inputs("text", rows, read_object)


def train_and_score(project: DemoProject, inputs: Any, labels: pd.Series) -> float:
    """Train a small scikit-learn model on `inputs` with `labels`; accuracy on the held-out true labels."""
    from sklearn.linear_model import LogisticRegression

    from labelflow.tasks.training import classifier

    test_x, test_y = project.test_set
    # The reviews: `labelflow train`'s text baseline, character 1-3-gram TF-IDF + logistic regression (for Chinese).
    model = LogisticRegression(max_iter=2000) if project.key == "digits" else classifier("text")
    model.fit(inputs, labels.astype(str).to_numpy())
    return float((model.predict(test_x) == np.asarray(test_y)).mean())


def quiet_console_logs() -> None:
    """Progress bars instead of flow logs on the terminal: console handlers show warnings and errors only.

    The flows' logs still reach the Prefect server in full (its handler is separate)."""
    import logging

    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.WARNING)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)


@contextmanager
def stage(progress: Progress, description: str, total: int | None = None) -> Iterator[Callable[[int, int], None]]:
    """One progress line: a bar when the amount of work is known, a spinner otherwise; ticked off when done."""
    task_id = progress.add_task(description, total=total)

    def advance(done: int, of: int) -> None:
        progress.update(task_id, completed=done, total=of)

    yield advance
    progress.update(task_id, completed=progress.tasks[task_id].total or 1, total=progress.tasks[task_id].total or 1)
    progress.update(task_id, description=f"[green]✓[/green] {description}")


def run_demo(console: Console, workdir: Path, images: int, texts: int, seed: int) -> list[DemoProject]:
    """Upload, ingest, annotate (simulated), collect, validate, publish and pull every demo project, and what its
    kind learns from the pulled version (a model trained on it, its consensus against the truth)."""
    from labelflow.datasets import load_dataset
    from labelflow.flows.collect import collect as collect_flow
    from labelflow.flows.ingest import ingest as ingest_flow
    from labelflow.flows.simulate import simulate_annotations
    from labelflow.flows.train import train as train_flow
    from labelflow.integrations.resources import Resources
    from labelflow.tasks.quality import gold_label_set, parse_gold
    from labelflow.tasks.simulate import build_annotators
    from labelflow.tasks.spec import S3Location, load_spec

    quiet_console_logs()
    resources = Resources.from_settings(label_studio_timeout=600)
    store, ls = resources.store, resources.label_studio_client
    projects, uploads = demo_specs(images, texts, seed)
    workdir.mkdir(parents=True, exist_ok=True)
    columns = [
        SpinnerColumn(finished_text=""),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]

    def read_object(uri: str) -> bytes:
        location = S3Location.parse(uri)
        return store.get_bytes(location.bucket, location.prefix)

    with Progress(*columns, console=console) as progress:
        store.ensure_bucket(DEMO_BUCKET)
        for project in projects:
            kind = DEMO_KINDS[project.kind]
            spec_path = workdir / f"{project.key}.yaml"
            spec_path.write_text(yaml.safe_dump(project.spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
            project.results["spec_path"] = str(spec_path)
            objects = uploads[project.key]
            with stage(progress, f"{project.name}: upload {len(objects)} objects", len(objects)) as advance:
                for done, (key, payload, _) in enumerate(objects, start=1):
                    store.put_bytes(DEMO_BUCKET, key, payload)
                    advance(done, len(objects))
                if project.gold is not None:
                    gold_uri = S3Location.parse(project.spec["quality"]["gold"])
                    store.put_bytes(gold_uri.bucket, gold_uri.prefix, project.gold.to_csv(index=False).encode("utf-8"))
            with stage(progress, f"{project.name}: ingest into Label Studio"):
                project.results["ingest"] = ingest_flow(str(spec_path))
            spec = load_spec(spec_path)
            truth = None  # record tasks carry their known answer (`gold`) themselves
            if spec.task_type.media != "record":  # a class, or a reference text (transcripts)
                truth = parse_gold(project.truth.to_csv(index=False).encode(), "truth.csv", gold_label_set(spec))
            with stage(progress, f"{project.name}: 3 simulated annotators label every task", None) as advance:
                _, project.results["simulate"] = simulate_annotations(
                    resources, spec, build_annotators(ANNOTATORS, 0), truth, seed=seed, progress=advance
                )
            with stage(progress, f"{project.name}: collect, judge, validate, publish"):
                project.results["collect"] = collect_flow(str(spec_path))
            with stage(progress, f"{project.name}: {kind.pull_stage}"):
                rows = load_dataset(project.spec["dataset"]["name"], cache_dir=workdir / "cache")
                project.results.update(kind.results(project, rows, read_object))
            if project.kind == "classifier":  # `labelflow train`: the baseline a next batch can be pre-labeled with
                with stage(progress, f"{project.name}: train a baseline and register it in MLflow"):
                    project.results["baseline"] = train_flow(str(spec_path))
    ls.close()
    return projects


def demo_pool(store: Any) -> list[dict[str, Any]]:
    """The talent pool's profiles of the demo's simulated annotators, across the demo projects' domains."""
    from labelflow.cli.annotators import profile_rows
    from labelflow.tasks.simulate import build_annotators
    from labelflow.tasks.talent_pool import load_profiles

    people = {a.email for a in build_annotators(ANNOTATORS, 0)}
    profiles = load_profiles(store)
    return [row for row in profile_rows(profiles) if row["annotator_email"] in people]


def classifier_results(project: DemoProject, rows: pd.DataFrame, read_object: Callable[[str], bytes]) -> dict[str, Any]:
    """A pulled classification version: its consensus against the true labels, and a model trained on it."""
    # This run's sample only: an earlier demo with other --images/--texts/--seed may have published objects that
    # are in this run's held-out test set.
    merged = rows.merge(project.truth, on="source_uri", suffixes=("", "_true"))
    inputs = training_inputs(project, merged, read_object)
    return {
        "rows": len(rows),
        "version": rows.attrs["labelflow"]["version"],
        "consensus_accuracy": float((merged["label"] == merged["label_true"]).mean()),
        "trained_on": len(merged),
        "accuracy": train_and_score(project, inputs, merged["label"]),
        "accuracy_true_labels": train_and_score(project, inputs, merged["label_true"]),
        "test_size": len(project.test_set[1]),
    }


def preference_results(project: DemoProject, rows: pd.DataFrame, read_object: Callable[[str], bytes]) -> dict[str, Any]:
    """A pulled preference version: how often consensus matches the corpus's preference, and the DPO file's head."""
    info = rows.attrs["labelflow"]
    records = rows["record"].map(json.loads)
    preferred = dict(zip(project.truth["id"].astype(str), project.truth["preferred"], strict=True))
    truth = records.map(lambda r: preferred.get(str(r.get("record_id"))))
    known = truth.notna()
    head, pairs = export_head(info["files"]["training-export"], 3)
    return {
        "rows": len(rows),
        "version": info["version"],
        "consensus_accuracy": float((rows.loc[known, "label"] == truth[known]).mean()) if known.any() else None,
        "compared": int(known.sum()),
        "ties": int((rows["label"] == "tie").sum()),
        "dpo_pairs": pairs,
        "dpo_head": head,
        "dpo_file": info["files"]["training-export"],
    }


def transcription_results(
    project: DemoProject, rows: pd.DataFrame, read_object: Callable[[str], bytes]
) -> dict[str, Any]:
    """A pulled transcription version: the CER of its consensus (medoid) transcripts against the references, next
    to the annotators' own transcripts of the same clips, and the manifest's head."""
    from labelflow.tasks.task_types.free_text import answer_text
    from labelflow.tasks.task_types.transcription import Transcription

    info = rows.attrs["labelflow"]
    language = project.spec["options"]["language"]
    reference = dict(zip(project.truth["source_uri"], project.truth["label"], strict=True))

    def cer(uri: str, answer: Any) -> float:
        return Transcription.error_rate(reference[uri], answer_text(answer) or "", language)

    published = rows[rows["source_uri"].isin(reference)]  # this run's clips (the version may hold older objects)
    consensus = [cer(uri, answer) for uri, answer in zip(published["source_uri"], published["answer"], strict=True)]
    annotations = pd.read_parquet(info["files"]["annotations"])
    annotations = annotations[
        annotations["source_uri"].isin(set(published["source_uri"])) & annotations["problem"].isna()
    ]
    annotations = annotations.assign(
        cer=[cer(u, a) for u, a in zip(annotations["source_uri"], annotations["answer"], strict=True)]
    )
    head, lines = export_head(info["files"]["training-export"], 2)
    return {
        "rows": len(rows),
        "version": info["version"],
        "compared": len(consensus),
        "consensus_cer": float(np.mean(consensus)) if consensus else None,
        # Picking one of a task's transcripts at random: its expected CER is the mean over all of them.
        "random_annotator_cer": float(annotations["cer"].mean()) if len(annotations) else None,
        "annotator_cer": annotations.groupby("annotator_email")["cer"].mean().to_dict(),
        "manifest_lines": lines,
        "manifest_head": head,
        "manifest_file": info["files"]["training-export"],
    }


def export_head(path: str, count: int) -> tuple[list[dict[str, Any]], int]:
    """The first `count` rows of a JSON Lines training export, and how many rows it has."""
    with open(path, encoding="utf-8") as handle:
        head = [json.loads(line) for _, line in zip(range(count), handle, strict=False)]
        return head, len(head) + sum(1 for _ in handle)


def print_json_rows(console: Console, rows: list[dict[str, Any]], width: int = 70) -> None:
    """JSON rows, one a line, long strings cut to `width` characters."""
    for row in rows:
        shown = {
            key: (value[:width] + "…" if isinstance(value, str) and len(value) > width else value)
            for key, value in row.items()
        }
        console.print(f"    {json.dumps(shown, ensure_ascii=False)}", soft_wrap=True, markup=False)


def print_urls(console: Console, collected: dict[str, Any]) -> None:
    """The project's Label Studio page and its dataset's MLflow run."""
    console.print(f"  Label Studio project: {collected['label_studio_url']}")
    console.print(f"  MLflow dataset:       {collected['dataset'].get('mlflow_url', '-')}")


def report_classifier(console: Console, project: DemoProject) -> None:
    """A classification project: agreement, consensus against the true labels, the model trained on the version."""
    from labelflow.tasks.quality_report import format_value

    collected, results = project.results["collect"], project.results
    dataset = collected["dataset"]
    console.print(
        f"  mean agreement between annotators: {format_value(collected['quality'].get('mean_task_agreement'))}; "
        f"consensus ({project.spec['quality']['aggregation']}) matches the true label on "
        f"{results['consensus_accuracy']:.1%} of the {results['trained_on']} published rows "
        f"of this sample ({results['rows']} in the version)"
    )
    console.print(
        f"  validation: {collected['validation'].get('evaluated', 0)} expectations passed; dataset "
        f"[bold]{project.spec['dataset']['name']}[/bold] version {results['version']}" + unchanged_note(dataset)
    )
    console.print(
        f"  [bold green]model accuracy[/bold green] on {results['test_size']} held-out examples: "
        f"[bold]{results['accuracy']:.1%}[/bold] (trained on the consensus labels of "
        f"{results['trained_on']} rows; the same model "
        f"trained on the true labels of the same rows: {results['accuracy_true_labels']:.1%})"
    )
    if baseline := results.get("baseline"):
        console.print(
            f"  registered baseline [bold]{baseline['model_uri']}[/bold] (held-out accuracy "
            f"{baseline['holdout_accuracy']:.1%}); pre-label the next batch with it: "
            f"prelabel: {{predictor: mlflow, model_uri: models:/{baseline['model_name']}/latest}}",
            markup=True,
        )
    print_urls(console, collected)


def report_preferences(console: Console, project: DemoProject) -> None:
    """The preference project: agreement, consensus against the corpus's human preference, the DPO file's first rows."""
    from labelflow.tasks.quality_report import format_value

    collected, results = project.results["collect"], project.results
    quality = collected["quality"]
    console.print(
        f"  agreement between annotators: {format_value(quality.get('mean_task_agreement'))} per task, "
        f"Krippendorff's alpha {format_value(quality.get('krippendorff_alpha'))}; consensus (majority) matches the "
        f"corpus's human preference on [bold]{results['consensus_accuracy']:.1%}[/bold] of "
        f"{results['compared']} published pairs ({results['ties']} ties)"
    )
    console.print(
        f"  dataset [bold]{project.spec['dataset']['name']}[/bold] version {results['version']}: "
        f"{results['dpo_pairs']} DPO pairs in {results['dpo_file']}; the first rows:"
    )
    print_json_rows(console, results["dpo_head"])
    print_urls(console, collected)


def report_transcription(console: Console, project: DemoProject) -> None:
    """The transcription project: agreement, the consensus transcripts' CER next to an annotator's, the manifest."""
    from labelflow.tasks.quality_report import format_value

    collected, results = project.results["collect"], project.results
    quality = collected["quality"]
    console.print(f"  [dim]No speech ships offline: {SPEECH_NOTE}.[/dim]")
    configured = {a["email"]: a["configured_accuracy"] for a in results["simulate"]["annotators"]}
    per_annotator = ", ".join(
        f"{rate:.1%} by the {accuracy_name(configured.get(email))} annotator"
        for email, rate in sorted(results["annotator_cer"].items(), key=lambda item: item[1])
    )
    console.print(
        f"  agreement between annotators (1 - pairwise CER): {format_value(quality.get('mean_task_agreement'))} "
        f"per task, {quality.get('flagged_tasks', 0)} of {quality.get('tasks', 0)} clips held back under "
        f"{project.spec['quality']['min_agreement']}; consensus (medoid) transcripts have a character error rate of "
        f"[bold]{format_rate(results['consensus_cer'])}[/bold] against the reference on {results['compared']} "
        f"published clips, a random annotator's transcript {format_rate(results['random_annotator_cer'])} "
        f"({per_annotator or 'no annotations'})"
    )
    console.print(
        f"  dataset [bold]{project.spec['dataset']['name']}[/bold] version {results['version']}: "
        f"{results['rows']} rows; {results['manifest_lines']} transcripts in {results['manifest_file']}"
        f"{unchanged_note(collected['dataset'])}; the first lines:"
    )
    print_json_rows(console, results["manifest_head"])
    print_urls(console, collected)


def unchanged_note(dataset: dict[str, Any]) -> str:
    """' (unchanged: why)' when collect published no new version, else nothing."""
    return "" if dataset.get("published") else f" (unchanged: {dataset.get('reason')})"


def accuracy_name(accuracy: float | None) -> str:
    """A simulated annotator by its configured accuracy: '95 %-accurate', or 'spamming'."""
    return "spamming" if accuracy is None else f"{accuracy:.0%}-accurate"


def format_rate(rate: float | None) -> str:
    """An error rate as a percentage, or '-'."""
    return "-" if rate is None else f"{rate:.1%}"


@dataclass(frozen=True)
class DemoKind:
    """What differs between kinds of demo project: what is learnt from the pulled version, and how it is reported."""

    pull_stage: str  # the progress line of pulling the version back
    results: Callable[[DemoProject, pd.DataFrame, Callable[[str], bytes]], dict[str, Any]]
    report: Callable[[Console, DemoProject], None]


DEMO_KINDS = {
    "classifier": DemoKind("pull the dataset back and train a model", classifier_results, report_classifier),
    "preference": DemoKind("pull the dataset back", preference_results, report_preferences),
    "transcription": DemoKind(
        "pull the dataset back, score the transcripts", transcription_results, report_transcription
    ),
}


def report(
    console: Console, projects: list[DemoProject], prefect_ui: str, pool: list[dict[str, Any]] | None = None
) -> None:
    """What the newcomer should look at: annotators, agreement, the published version, what it gives, the URLs."""
    from labelflow.tasks.quality_report import format_value

    for project in projects:
        collected = project.results["collect"]
        people = Table(title=f"{project.name}: annotators (tiers from gold tasks and agreement)")
        for column in ("annotator", "configured accuracy", "tier", "score", "gold acc.", "agreement"):
            people.add_column(column)
        configured = {a["email"]: a["configured_accuracy"] for a in project.results["simulate"]["annotators"]}
        for row in collected["annotators"]:
            people.add_row(
                str(row["annotator_email"]),
                format_value(configured.get(row["annotator_email"])),
                row["tier"],
                format_value(row["score"], "score"),
                format_value(row["gold_accuracy"], "gold_accuracy"),
                format_value(row["agreement_with_consensus"], "agreement_with_consensus"),
            )
        console.print(people)
        DEMO_KINDS[project.kind].report(console, project)
    if pool:
        from labelflow.cli.annotators import pool_table

        # The same people across the four projects: one profile per domain, levels earned on interval lower bounds.
        pool_table(pool, "Talent pool: the demo's annotators across its projects (`labelflow annotators`)")
    console.print(f"Prefect flow runs:      {prefect_ui}/runs")
