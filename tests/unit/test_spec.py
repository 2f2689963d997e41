"""The project spec: examples validate, errors name the field path, label XML is escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from labelflow.tasks.label_config import build_label_config, control_of
from labelflow.tasks.spec import S3Location, SpecError, load_spec, parse_spec
from labelflow.tasks.task_types import TASK_TYPES

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "specs").glob("*.yaml"))
BASE = {"name": "p", "source": "s3://raw/x/", "task": "text-classification", "labels": ["a", "b"]}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_spec_validates_and_builds_a_label_config(path: Path) -> None:
    spec = load_spec(path)
    config = build_label_config(spec)
    root = ElementTree.fromstring(config)
    if spec.task_type.uses_labels:
        # The labeling control's options (NER and detection also offer a separate "nothing to mark" choice).
        name = control_of(config)[0]
        values = {e.get("value") for c in root.iter() if c.get("name") == name for e in c}
        assert values == set(spec.labels)
    else:  # record and written-answer types: no label set (fixed choices, or free text)
        assert spec.labels == [] and (spec.records is not None) == (spec.task_type.media == "record")


def test_examples_cover_every_task_type() -> None:
    assert {load_spec(p).task for p in EXAMPLES} == set(TASK_TYPES)


def test_errors_give_field_paths() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**BASE, "overlap": 0, "task": "translation", "ingest": {"batch_size": 5000, "bogus": 1}})
    message = str(caught.value)
    assert "overlap: Input should be greater than or equal to 1" in message
    assert "task: Input should be" in message
    assert "ingest.batch_size: Input should be less than or equal to 1000" in message
    assert "ingest.bogus: unknown field" in message


def test_bad_source_uri_and_duplicate_labels() -> None:
    with pytest.raises(SpecError, match=r"source: .*not an s3://bucket/prefix URI"):
        parse_spec({**BASE, "source": "http://example.com/x"})
    with pytest.raises(SpecError, match=r"labels: duplicate labels: \['a'\]"):
        parse_spec({**BASE, "labels": ["a", " a"]})


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(broken)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(listing)


def test_raw_label_config_must_parse_and_match_labels() -> None:
    with pytest.raises(SpecError, match="not valid XML"):
        parse_spec({**BASE, "label_config": "<View><Text"})
    config = '<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>'
    with pytest.raises(SpecError, match=r"missing in label_config \['b'\]"):
        parse_spec({**BASE, "label_config": config})
    with pytest.raises(SpecError, match=r"must read the task's \$image field"):
        parse_spec({**BASE, "task": "image-classification", "labels": ["a"], "label_config": config})


def test_labels_with_markup_and_cjk_are_escaped() -> None:
    labels = ['a "quoted" <label> & more', "中性", "it's"]
    spec = parse_spec({**BASE, "labels": labels})
    root = ElementTree.fromstring(build_label_config(spec))
    assert [c.get("value") for c in root.iter("Choice")] == labels
    assert control_of(build_label_config(spec)) == ("label", "text", "choices")


def test_prelabel_options_are_checked() -> None:
    with pytest.raises(SpecError, match="needs `keywords`"):
        parse_spec({**BASE, "prelabel": {"predictor": "keyword", "model_version": "v"}})
    with pytest.raises(SpecError, match=r"labels not in `labels`: \['c'\]"):
        parse_spec({**BASE, "prelabel": {"predictor": "keyword", "model_version": "v", "keywords": {"c": ["x"]}}})
    with pytest.raises(SpecError, match="needs `endpoint`"):
        parse_spec({**BASE, "prelabel": {"predictor": "openai", "model_version": "v"}})
    with pytest.raises(SpecError, match="unknown text encoding 'klingon'"):
        parse_spec({**BASE, "ingest": {"text_encodings": ["klingon"]}})


def test_state_location_defaults_and_slug_is_path_safe() -> None:
    spec = parse_spec({**BASE, "name": "../../etc 数据 标注"})
    assert spec.state_location.bucket == "labelflow-state"
    assert ".." not in spec.state_location.prefix and "/" not in spec.slug
    assert spec.slug.startswith("etc-")
    cjk_only = parse_spec({**BASE, "name": "数据标注"})
    assert cjk_only.slug.startswith("project-")
    assert S3Location.parse("s3://bucket").prefix == ""
    assert S3Location.parse("s3://bucket/a/b/").join("ingest", "x") == "a/b/ingest/x"


MODEL_LOOP_BASE = {"name": "loop", "source": "s3://raw/loop/", "task": "text-classification", "labels": ["a", "b"]}
MLFLOW_PRELABEL = {"predictor": "mlflow", "model_uri": "models:/loop-baseline/latest"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"task": "ner", "prelabel": MLFLOW_PRELABEL, "automate": {"target_accuracy": 0.9}},
            "automate: task ner does not support it (supported: text-classification, image-classification, "
            "audio-classification)",
        ),
        ({"prelabel": MLFLOW_PRELABEL, "automate": {"target_accuracy": 1.0}}, "automate.target_accuracy: Input should be less than 1"),
        ({"prelabel": MLFLOW_PRELABEL, "automate": {"target_accuracy": 0}}, "automate.target_accuracy: Input should be greater than 0"),
        ({"automate": {"target_accuracy": 0.9}}, "automate: needs a model; set prelabel: {predictor: mlflow, model_uri: ...}"),
        ({"queue": {"order": "entropy"}}, "queue.order: needs a model; set prelabel: {predictor: mlflow, model_uri: ...}"),
        ({"prelabel": {"predictor": "mlflow"}}, "prelabel: the mlflow predictor needs `model_uri`"),
        ({"prelabel": {"predictor": "mlflow", "model_uri": "runs:/abc/model"}}, "is not a registered model's URI"),
        ({"task": "ner", "prelabel": MLFLOW_PRELABEL}, "the mlflow predictor supports text-classification, image-classification, audio-classification tasks, not ner"),
    ],
)  # fmt: skip
def test_model_in_the_loop_settings_refuse_what_cannot_work_in_one_line(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**MODEL_LOOP_BASE, **extra})
    problems = str(caught.value).splitlines()[1:]
    assert len(problems) == 1 and message in problems[0], problems


def test_model_in_the_loop_settings_parse() -> None:
    spec = parse_spec(
        {
            **MODEL_LOOP_BASE,
            "prelabel": {"predictor": "mlflow", "model_uri": "models:/loop-baseline@champion"},
            "automate": {"target_accuracy": 0.98, "audit_share": 0.05, "min_human_labels": 200},
            "queue": {"order": "margin"},
        }
    )
    assert spec.automate is not None and spec.automate.target_accuracy == 0.98 and spec.queue.order == "margin"
    assert spec.prelabel is not None and spec.prelabel.model_version is None
