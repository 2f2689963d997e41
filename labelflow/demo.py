"""`labelflow demo`: the whole pipeline on real public sample data, start to finish, on the local stack."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
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
    spec: dict[str, Any]
    truth: pd.DataFrame  # source_uri, label of every uploaded object
    test_set: Any  # held-out examples with their true labels (never uploaded)
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


def demo_specs(images: int, texts: int, seed: int) -> tuple[list[DemoProject], dict[str, list[tuple[str, bytes, str]]]]:
    """The three demo projects and the objects to upload for each."""
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
        truth = pd.DataFrame(
            {"source_uri": [f"s3://{DEMO_BUCKET}/{k}" for k, _, _ in objects], "label": [lab for _, _, lab in objects]}
        )
        projects.append(DemoProject(key, spec, truth, test))
        uploads[key] = objects
    pair_file, preferred = preference_sample()
    projects.append(DemoProject("preferences", preference_spec(), preferred, None))
    uploads["preferences"] = pair_file
    return projects, uploads


def training_inputs(project: DemoProject, rows: pd.DataFrame, read_object: Callable[[str], bytes]) -> Any:
    """The model inputs of the pulled rows: pixel features of each digit image (read once), or the review texts."""
    if project.key == "digits":
        return digit_features(np.stack([png_to_ink(read_object(uri)) for uri in rows["source_uri"]]))
    return rows["text"].astype(str).tolist()


def train_and_score(project: DemoProject, inputs: Any, labels: pd.Series) -> float:
    """Train a small scikit-learn model on `inputs` with `labels`; accuracy on the held-out true labels."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline

    test_x, test_y = project.test_set
    if project.key == "digits":
        model = LogisticRegression(max_iter=2000)
    else:  # characters and character pairs: no word segmentation needed for Chinese
        model = make_pipeline(CountVectorizer(analyzer="char", ngram_range=(1, 2)), MultinomialNB())
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
    """Upload, ingest, annotate (simulated), collect, validate, publish, pull and train, for both demo projects."""
    from labelflow.datasets import load_dataset
    from labelflow.flows.collect import collect as collect_flow
    from labelflow.flows.ingest import ingest as ingest_flow
    from labelflow.flows.simulate import simulate_annotations
    from labelflow.integrations.resources import Resources
    from labelflow.tasks.quality import parse_gold
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
    with Progress(*columns, console=console) as progress:
        store.ensure_bucket(DEMO_BUCKET)
        for project in projects:
            spec_path = workdir / f"{project.key}.yaml"
            spec_path.write_text(yaml.safe_dump(project.spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
            project.results["spec_path"] = str(spec_path)
            objects = uploads[project.key]
            with stage(progress, f"{project.name}: upload {len(objects)} objects", len(objects)) as advance:
                for done, (key, payload, _) in enumerate(objects, start=1):
                    store.put_bytes(DEMO_BUCKET, key, payload)
                    advance(done, len(objects))
                if "gold" in project.spec["quality"]:
                    gold = project.truth.sample(n=min(GOLD_PER_PROJECT, len(project.truth)), random_state=seed)
                    gold_uri = S3Location.parse(project.spec["quality"]["gold"])
                    store.put_bytes(gold_uri.bucket, gold_uri.prefix, gold.to_csv(index=False).encode("utf-8"))
            with stage(progress, f"{project.name}: ingest into Label Studio"):
                project.results["ingest"] = ingest_flow(str(spec_path))
            spec = load_spec(spec_path)
            truth = None  # record tasks carry their known answer (`gold`) themselves
            if project.test_set is not None:
                truth = parse_gold(project.truth.to_csv(index=False).encode(), "truth.csv", spec.labels)
            with stage(progress, f"{project.name}: 3 simulated annotators label every task", None) as advance:
                _, project.results["simulate"] = simulate_annotations(
                    resources, spec, build_annotators(ANNOTATORS, 0), truth, seed=seed, progress=advance
                )
            with stage(progress, f"{project.name}: collect, judge, validate, publish"):
                project.results["collect"] = collect_flow(str(spec_path))
            if project.test_set is None:
                with stage(progress, f"{project.name}: pull the dataset back"):
                    rows = load_dataset(project.spec["dataset"]["name"], cache_dir=workdir / "cache")
                    project.results.update(preference_results(project, rows))
                continue
            with stage(progress, f"{project.name}: pull the dataset back and train a model"):
                rows = load_dataset(project.spec["dataset"]["name"], cache_dir=workdir / "cache")

                def read_object(uri: str) -> bytes:
                    location = S3Location.parse(uri)
                    return store.get_bytes(location.bucket, location.prefix)

                project.results["rows"] = len(rows)
                project.results["version"] = rows.attrs["labelflow"]["version"]
                # This run's sample only: an earlier demo with other --images/--texts/--seed may have published
                # objects that are in this run's held-out test set.
                merged = rows.merge(project.truth, on="source_uri", suffixes=("", "_true"))
                project.results["consensus_accuracy"] = float((merged["label"] == merged["label_true"]).mean())
                project.results["trained_on"] = len(merged)
                inputs = training_inputs(project, merged, read_object)
                project.results["accuracy"] = train_and_score(project, inputs, merged["label"])
                project.results["accuracy_true_labels"] = train_and_score(project, inputs, merged["label_true"])
                project.results["test_size"] = len(project.test_set[1])
    ls.close()
    return projects


def preference_results(project: DemoProject, rows: pd.DataFrame) -> dict[str, Any]:
    """A pulled preference version: how often consensus matches the corpus's preference, and the DPO file's head."""
    info = rows.attrs["labelflow"]
    records = rows["record"].map(json.loads)
    preferred = dict(zip(project.truth["id"].astype(str), project.truth["preferred"], strict=True))
    truth = records.map(lambda r: preferred.get(str(r.get("record_id"))))
    known = truth.notna()
    with open(info["files"]["training-export"], encoding="utf-8") as handle:
        head = [json.loads(line) for _, line in zip(range(3), handle, strict=False)]
        pairs = len(head) + sum(1 for _ in handle)
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
    for row in results["dpo_head"]:
        shown = {
            key: (value[:70] + "…" if isinstance(value, str) and len(value) > 70 else value)
            for key, value in row.items()
        }
        console.print(f"    {json.dumps(shown, ensure_ascii=False)}", soft_wrap=True, markup=False)
    console.print(f"  Label Studio project: {collected['label_studio_url']}")
    console.print(f"  MLflow dataset:       {collected['dataset'].get('mlflow_url', '-')}")


def report(console: Console, projects: list[DemoProject], prefect_ui: str) -> None:
    """What the newcomer should look at: annotators, agreement, the published version, the model, the URLs."""
    from labelflow.tasks.quality_report import format_value

    for project in projects:
        collected = project.results["collect"]
        quality = collected["quality"]
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
        if project.test_set is None:
            report_preferences(console, project)
            continue
        dataset = collected["dataset"]
        console.print(
            f"  mean agreement between annotators: {format_value(quality.get('mean_task_agreement'))}; "
            f"consensus ({project.spec['quality']['aggregation']}) matches the true label on "
            f"{project.results['consensus_accuracy']:.1%} of the {project.results['trained_on']} published rows "
            f"of this sample ({project.results['rows']} in the version)"
        )
        console.print(
            f"  validation: {collected['validation'].get('evaluated', 0)} expectations passed; dataset "
            f"[bold]{project.spec['dataset']['name']}[/bold] version {project.results['version']}"
            + ("" if dataset.get("published") else f" (unchanged: {dataset.get('reason')})")
        )
        console.print(
            f"  [bold green]model accuracy[/bold green] on {project.results['test_size']} held-out examples: "
            f"[bold]{project.results['accuracy']:.1%}[/bold] (trained on the consensus labels of "
            f"{project.results['trained_on']} rows; the same model "
            f"trained on the true labels of the same rows: {project.results['accuracy_true_labels']:.1%})"
        )
        console.print(f"  Label Studio project: {collected['label_studio_url']}")
        console.print(f"  MLflow dataset:       {dataset.get('mlflow_url', '-')}")
    console.print(f"Prefect flow runs:      {prefect_ui}/runs")
