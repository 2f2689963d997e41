"""Dataset files and digests, without servers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from labelflow.tasks.dataset import build_dataset, content_digest, manifest
from labelflow.tasks.registry import parse_reference
from labelflow.tasks.spec import parse_spec
from labelflow.tasks.task_types.ner import conll_lines

H = "a" * 64


def spec_for(task: str, labels: list[str]):
    return parse_spec({"name": "d", "source": "s3://raw/x/", "task": task, "labels": labels, "dataset": {"name": "d"}})


def test_conll_tags_words_and_cjk_characters_with_bio() -> None:
    text = "Anna Smith met 王小明 in Berlin."
    spans = [
        {"start": 0, "end": 10, "label": "PER"},
        {"start": 15, "end": 18, "label": "PER"},
        {"start": 22, "end": 28, "label": "LOC"},
    ]
    assert conll_lines(text, spans) == [
        "Anna B-PER",
        "Smith I-PER",
        "met O",
        "王 B-PER",
        "小 I-PER",
        "明 I-PER",
        "in O",
        "Berlin B-LOC",
        ". O",
    ]


def classification_inputs() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    published = pd.DataFrame(
        {
            "task_id": [2, 1],
            "source_uri": ["s3://raw/x/2.txt", "s3://raw/x/1.txt"],
            "content_sha256": [H, H],
            "label": ["dog", "cat"],
            "confidence": [1.0, 0.67],
            "agreement": [1.0, 0.5],
            "annotations": [2, 3],
            "reviewed": [False, False],
            "method": ["majority", "majority"],
            "gold_label": [None, "cat"],
        }
    )
    annotations = pd.DataFrame(
        {"task_id": [1, 1, 2, 3], "annotation_id": [10, 11, 20, 30], "label": ["cat", "cat", "dog", "cat"], "seq": 1}
    )
    tasks = pd.DataFrame(
        {"task_id": [1, 2, 3], "text": ["一只猫", "a dog", "x"], "image_width": None, "image_height": None}
    )
    ledger = pd.DataFrame(
        {
            "bucket": ["raw"] * 4,
            "key": ["x/1.txt", "x/2.txt", "x/3.txt", "x/dup.txt"],
            "etag": ["e1", "e2", "e3", "e4"],
            "size": [9, 5, 1, 9],
            "sha256": [H] * 4,
            "status": ["ingested", "ingested", "ingested", "quarantined"],
            "task_id": [1, 2, 3, 1],
        }
    )
    return published, annotations, tasks, ledger


def test_build_dataset_writes_every_file_and_a_digest_that_ignores_row_order(tmp_path: Path) -> None:
    spec = spec_for("text-classification", ["cat", "dog"])
    published, annotations, tasks, ledger = classification_inputs()
    (tmp_path / "a").mkdir()
    built = build_dataset(tmp_path / "a", spec, published, annotations, tasks, ledger)
    assert [f.path for f in built.files] == [
        "consensus.parquet",
        "annotations.parquet",
        "sources.parquet",
        "train.jsonl",
    ]
    assert list(built.rows["task_id"]) == [1, 2] and built.label_distribution == {"cat": 1, "dog": 1}
    lines = [json.loads(x) for x in (tmp_path / "a" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"task_id": 1, "text": "一只猫", "label": "cat", "source_uri": "s3://raw/x/1.txt"}
    sources = pd.read_parquet(tmp_path / "a" / "sources.parquet")
    assert list(sources["key"]) == ["x/1.txt", "x/2.txt"]  # task 3 is not published; quarantined rows are not sources
    raw = pd.read_parquet(tmp_path / "a" / "annotations.parquet")
    assert list(raw["annotation_id"]) == [10, 11, 20] and "seq" not in raw.columns
    (tmp_path / "b").mkdir()
    again = build_dataset(tmp_path / "b", spec, published.iloc[::-1], annotations.iloc[::-1], tasks, ledger)
    assert again.digest == built.digest
    assert [f.sha256 for f in again.files] == [f.sha256 for f in built.files]
    changed = published.assign(label=["cat", "cat"])
    (tmp_path / "c").mkdir()
    assert build_dataset(tmp_path / "c", spec, changed, annotations, tasks, ledger).digest != built.digest
    document = manifest("d", 4, built, spec, {"pipeline_revision": "abc"})
    assert document["version"] == 4 and document["rows"] == 2 and document["sources"]["count"] == 2
    assert {f["role"] for f in document["files"]} == {"consensus", "annotations", "sources", "training-export"}


def test_digest_covers_the_label_set() -> None:
    frame = pd.DataFrame({"task_id": [1], "label": ["cat"]})
    empty = pd.DataFrame()
    one = content_digest(frame, empty, empty, spec_for("text-classification", ["cat", "dog"]))
    two = content_digest(frame, empty, empty, spec_for("text-classification", ["cat", "dog", "bird"]))
    assert one != two


def test_coco_export_for_detection(tmp_path: Path) -> None:
    spec = spec_for("object-detection", ["car", "person"])
    published = pd.DataFrame(
        {
            "task_id": [5],
            "source_uri": ["s3://raw/x/5.png"],
            "content_sha256": [H],
            "label": [None],
            "regions": [[{"label": "person", "x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0, "rotation": 0.0}]],
            "confidence": [1.0],
            "agreement": [1.0],
            "annotations": [1],
            "reviewed": [False],
            "method": ["iou-clusters"],
            "gold_label": [None],
        }
    )
    tasks = pd.DataFrame({"task_id": [5], "text": [None], "image_width": [640], "image_height": [480]})
    built = build_dataset(
        tmp_path, spec, published, pd.DataFrame({"task_id": [], "annotation_id": []}), tasks, pd.DataFrame()
    )
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert coco["images"] == [{"id": 5, "file_name": "s3://raw/x/5.png", "width": 640, "height": 480}]
    assert coco["annotations"][0] | {} == {
        "id": 1, "image_id": 5, "category_id": 2, "bbox": [10.0, 20.0, 30.0, 40.0], "area": 1200.0, "iscrowd": 0
    }  # fmt: skip
    assert built.label_distribution == {"car": 0, "person": 1}


def test_dataset_references() -> None:
    assert parse_reference("reviews") == ("reviews", None)
    assert parse_reference("reviews:latest") == ("reviews", None)
    assert parse_reference("reviews:3") == ("reviews", 3) == parse_reference("reviews:v3")
    with pytest.raises(ValueError, match="number or `latest`"):
        parse_reference("reviews:newest")


def test_the_pipeline_revision_is_labelflows_own_version_and_commit() -> None:
    import importlib.metadata
    import subprocess

    from labelflow.tasks.registry import pipeline_revision

    revision = pipeline_revision()
    version = importlib.metadata.version("labelflow")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parents[2], capture_output=True, text=True)
    expected = f"{version}+git.{head.stdout.strip()}" if head.returncode == 0 else version
    assert revision == expected
