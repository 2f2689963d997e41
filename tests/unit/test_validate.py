"""Validation gate: real Great Expectations runs on small frames (no servers)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from labelflow.integrations.great_expectations import GreatExpectations, OfflineDocsError, SuiteError, make_docs_offline
from labelflow.tasks.annotations import AnnotationNormalizer, annotations_table, tasks_table
from labelflow.tasks.quality import judge
from labelflow.tasks.spec import parse_spec
from labelflow.tasks.validate import DEFAULT_EXPECTATIONS_DIR, batches_to_validate, spec_expectations, summarize

LABELS = ["cat", "dog", "bird"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def spec_for(task: str, labels: list[str], **extra: object):
    body = {"name": "t", "source": "s3://raw/x/", "task": task, "labels": labels, "overlap": 2, **extra}
    return parse_spec(body)


def annotation(annotation_id: int, user: int, result: list[dict]) -> dict:
    return {
        "id": annotation_id,
        "completed_by": user,
        "lead_time": 3.0,
        "created_at": "2026-11-23T10:00:00Z",
        "updated_at": "2026-11-23T10:00:00Z",
        "result": result,
    }


def choice(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def span(start: int, end: int, text: str, label: str = "PER") -> list[dict]:
    value = {"start": start, "end": end, "text": text, "labels": [label]}
    return [{"id": f"s{start}", "from_name": "label", "to_name": "text", "type": "labels", "value": value}]


def box(x: float, y: float, w: float, h: float) -> list[dict]:
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": ["car"]}
    return [
        {
            "id": f"b{x}",
            "from_name": "label",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": 100,
            "original_height": 50,
            "value": value,
        }
    ]


def ls_task(task_id: int, annotations: list[dict], data: dict) -> dict:
    return {"id": task_id, "data": data, "annotations": annotations, "updated_at": "2026-11-23T10:00:00.000001Z"}


def text_data(task_id: int, text: str) -> dict:
    return {"text": text, "source_uri": f"s3://raw/x/{task_id}.txt", "content_sha256": sha(text)}


def tables(spec, tasks: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    normalizer = AnnotationNormalizer(spec, 1, {1: "a@x", 2: "b@x", 3: "c@x"}, "label")
    outs = [normalizer.task(t, 1) for t in tasks]
    task_rows = tasks_table([o.task for o in outs]).to_pandas()
    annotation_rows = annotations_table([r for o in outs for r in o.annotations]).to_pandas()
    consensus = judge(task_rows, annotation_rows, spec).consensus
    return annotation_rows, consensus, task_rows


def validate(spec, tasks: list[dict], validator: GreatExpectations | None = None, docs: Path | None = None):
    validator = validator or GreatExpectations(DEFAULT_EXPECTATIONS_DIR)
    annotations, consensus, task_rows = tables(spec, tasks)
    batches = batches_to_validate(spec, validator, annotations, consensus, task_rows)
    run = validator.validate(batches, docs_dir=docs)
    return summarize(run.outcomes, {b.name: len(b.frame) for b in batches}, {}), run


def failed_checks(summary) -> set[tuple[str, str, str | None]]:
    return {(f["batch"], f["type"], f["column"]) for f in summary.failed}


def test_clean_classification_batch_passes_every_expectation() -> None:
    spec = spec_for("text-classification", LABELS)
    tasks = [
        ls_task(
            i, [annotation(10 * i, 1, choice(label)), annotation(10 * i + 1, 2, choice(label))], text_data(i, f"t{i}")
        )
        for i, label in enumerate(["cat", "dog", "bird", "cat"], start=1)
    ]
    summary, run = validate(spec, tasks)
    assert summary.success, summary.text()
    assert summary.rows == {"annotations": 8, "consensus": 4}
    file_checks = {o.origin for o in run.outcomes}
    assert {"annotations.json", "annotations.text-classification.json", "consensus.json", "spec"} <= file_checks
    assert summary.evaluated == len(run.outcomes) >= 15


def test_label_outside_the_set_fails_with_the_annotation_named() -> None:
    spec = spec_for("text-classification", LABELS)
    tasks = [
        ls_task(1, [annotation(11, 1, choice("cat")), annotation(12, 2, choice("cat"))], text_data(1, "a")),
        ls_task(2, [annotation(21, 1, choice("dog")), annotation(22, 2, choice("unicorn"))], text_data(2, "b")),
    ]
    summary, _ = validate(spec, tasks)
    assert not summary.success
    assert ("annotations", "expect_column_values_to_be_in_set", "label") in failed_checks(summary)
    assert ("annotations", "expect_column_values_to_be_null", "problem") in failed_checks(summary)
    in_set = next(f for f in summary.failed if f["column"] == "label")
    assert in_set["unexpected_count"] == 1 and in_set["examples"][0]["annotation_id"] == 22
    text = summary.text()
    assert "FAILED" in text and "annotations.label" in text and "spec's labels" in text and "22" in text


def test_empty_span_and_span_outside_the_text_fail_ner_validation() -> None:
    spec = spec_for("ner", ["PER"])
    text = "Anna met 王小明 today"
    good = [annotation(11, 1, span(0, 4, "Anna")), annotation(12, 2, span(0, 4, "Anna"))]
    assert validate(spec, [ls_task(1, good, text_data(1, text))])[0].success
    chinese = [annotation(11, 1, span(9, 12, "王小明")), annotation(12, 2, span(9, 12, "王小明"))]
    assert validate(spec, [ls_task(1, chinese, text_data(1, text))])[0].success
    bad = [annotation(21, 1, span(5, 5, "")), annotation(22, 2, span(15, 40, "today and more"))]
    summary, _ = validate(spec, [ls_task(1, good, text_data(1, text)), ls_task(2, bad, text_data(2, text))])
    failed = failed_checks(summary)
    assert ("annotations", "expect_column_values_to_be_between", "span_length") in failed
    assert ("annotations", "expect_column_pair_values_a_to_be_greater_than_b", "text_length, span_end") in failed
    assert ("annotations", "expect_column_values_to_be_in_set", "span_text_matches") in failed


def test_box_outside_the_image_fails_detection_validation() -> None:
    spec = spec_for("object-detection", ["car"])
    data = {"image": "s3://raw/x/1.png", "source_uri": "s3://raw/x/1.png", "content_sha256": sha("img")}
    data |= {"image_width": 100, "image_height": 50}
    inside = [annotation(11, 1, box(10, 10, 20, 20)), annotation(12, 2, box(10, 10, 20, 20))]
    assert validate(spec, [ls_task(1, inside, data)])[0].success
    outside = [annotation(21, 1, box(90, 10, 30, 20)), annotation(22, 2, box(10, 10, 20, 20))]
    summary, _ = validate(spec, [ls_task(1, outside, data)])
    failure = next(f for f in summary.failed if f["column"] == "box_overflow_px")
    assert failure["unexpected_count"] == 1 and failure["examples"][0]["annotation_id"] == 21


def test_min_rows_per_class_is_enforced_by_the_custom_expectation() -> None:
    spec = spec_for("text-classification", LABELS, dataset={"name": "d", "min_rows_per_class": 2})
    tasks = [
        ls_task(
            i, [annotation(10 * i, 1, choice(label)), annotation(10 * i + 1, 2, choice(label))], text_data(i, f"t{i}")
        )
        for i, label in enumerate(["cat", "cat", "dog", "dog"], start=1)
    ]
    summary, _ = validate(spec, tasks)
    failure = next(f for f in summary.failed if f["type"] == "expect_column_value_counts_to_be_at_least")
    assert failure["observed"]["details"]["below_minimum"] == {"bird": 0}
    assert [d.type for d in spec_expectations(spec, "consensus")].count(
        "expect_column_value_counts_to_be_at_least"
    ) == 1


def test_an_expectation_gx_cannot_load_fails_instead_of_vanishing(tmp_path: Path) -> None:
    (tmp_path / "annotations.json").write_text(
        json.dumps({"expectations": [{"type": "expect_labels_to_be_sane", "kwargs": {}, "notes": "custom check"}]})
    )
    validator = GreatExpectations(tmp_path)
    spec = spec_for("text-classification", LABELS)
    tasks = [ls_task(1, [annotation(1, 1, choice("cat")), annotation(2, 2, choice("cat"))], text_data(1, "x"))]
    with pytest.raises(SuiteError, match=r"expect_labels_to_be_sane.*not known"):
        validate(spec, tasks, validator)
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "broken.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(SuiteError, match=r"broken\.py: custom expectation module fails to import"):
        GreatExpectations(tmp_path).load_custom_expectations()


def test_suite_files_parse_build_and_say_what_each_expectation_guards(tmp_path: Path) -> None:
    validator = GreatExpectations(DEFAULT_EXPECTATIONS_DIR)
    files = sorted(DEFAULT_EXPECTATIONS_DIR.glob("*.json"))
    assert {f.name.split(".")[0] for f in files} == {"annotations", "consensus"}
    for path in files:
        for definition in validator.read_suite(path):
            assert len(definition.notes) > 15, (path.name, definition.type)
            validator.build_expectation(definition)
    (tmp_path / "consensus.json").write_text(json.dumps({"expectations": [{"type": "expect_column_to_exist"}]}))
    with pytest.raises(SuiteError, match="needs `notes`"):
        GreatExpectations(tmp_path).suite_for("consensus", "ner")


def test_data_docs_open_offline(tmp_path: Path) -> None:
    spec = spec_for("text-classification", LABELS)
    tasks = [ls_task(1, [annotation(1, 1, choice("cat")), annotation(2, 2, choice("zebra"))], text_data(1, "x"))]
    validate(spec, tasks, docs=tmp_path)
    pages = list(tmp_path.rglob("*.html"))
    assert len(pages) >= 3 and (tmp_path / "index.html").is_file()
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert not re.search(r"<(script|link|img)\b[^>]*(src|href)=\"https?://", html), page
        for ref in re.findall(r"<(?:script|link|img)\b[^>]*(?:src|href)=\"([^\"#?]+)", html):
            assert (page.parent / ref).resolve().is_file(), (page, ref)
    make_docs_offline(tmp_path)  # idempotent


def test_offline_rewrite_refuses_an_unknown_cdn_asset(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script src="https://cdn.example.com/new-lib.js"></script>')
    with pytest.raises(OfflineDocsError, match=r"new-lib\.js"):
        make_docs_offline(tmp_path)
