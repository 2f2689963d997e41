"""The task-type registry: each type owns its interface, parsing, suites and export, and nothing else dispatches."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from xml.etree import ElementTree

import pytest

from labelflow.tasks.annotations import REGION_TYPE
from labelflow.tasks.label_config import control_of, label_interface
from labelflow.tasks.spec import ProjectSpec, TaskTypeName, parse_spec
from labelflow.tasks.task_types import TASK_TYPES, TaskType, task_type
from labelflow.tasks.task_types.regions import REGION_FIELDS

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_LABELS = ["a&b", 'say "hi"', "<script>", "日本語"]


def spec_for(name: str, **extra: typing.Any) -> ProjectSpec:
    return parse_spec({"name": f"t {name}", "source": "s3://raw/x/", "task": name, "labels": HOSTILE_LABELS, **extra})


def test_the_spec_accepts_exactly_the_registered_types() -> None:
    assert set(typing.get_args(TaskTypeName)) == set(TASK_TYPES)
    assert list(TASK_TYPES) == [
        "text-classification", "image-classification", "ner", "object-detection", "audio-classification",
        "image-captioning", "transcription", "preference", "ranking", "response-grading", "sft", "text-pair",
    ]  # fmt: skip
    assert all(isinstance(kind, TaskType) and kind.name == name for name, kind in TASK_TYPES.items())
    with pytest.raises(ValueError, match="unknown task type 'audio'; known: text-classification"):
        task_type("audio")


LABEL_TYPES = [name for name, kind in TASK_TYPES.items() if kind.uses_labels]
RECORD_TYPES = [name for name, kind in TASK_TYPES.items() if kind.media == "record"]


@pytest.mark.parametrize("name", LABEL_TYPES)
def test_each_type_builds_an_interface_that_reads_its_data_field_and_escapes_labels(name: str) -> None:
    spec = spec_for(name)
    interface = label_interface(spec)
    root = ElementTree.fromstring(interface.xml)
    (control,) = [element for element in root.iter() if element.get("name") == "label"]
    values = [element.get("value") for element in control if element.tag in {"Choice", "Label"}]
    assert values == HOSTILE_LABELS
    assert f"${spec.task_type.data_key}" in interface.xml
    assert (interface.from_name, interface.result_type) == ("label", control_of(interface.xml)[2])
    assert interface.to_name == spec.data_key == spec.task_type.media


@pytest.mark.parametrize("name", RECORD_TYPES)
def test_each_record_type_builds_its_interface_from_its_example_spec(name: str) -> None:
    from labelflow.tasks.spec import load_spec

    spec = load_spec(str(ROOT / "examples" / "specs" / f"{name}.yaml"))
    assert spec.task == name and spec.records is not None and not spec.labels
    interface = label_interface(spec)
    names = {element.get("name") for element in ElementTree.fromstring(interface.xml).iter() if element.get("toName")}
    assert names and names <= spec.task_type.control_names  # type: ignore[attr-defined]
    assert f"${spec.task_type.data_key}" in interface.xml and interface.from_name == "label"
    with pytest.raises(ValueError, match=rf"label_config: task {name} uses its built-in interface"):
        parse_spec({**spec.model_dump(mode="json", exclude_none=True), "label_config": "<View/>"})


@pytest.mark.parametrize("name", list(TASK_TYPES))
def test_each_type_has_its_expectation_suites_and_a_distinct_export(name: str) -> None:
    kind = TASK_TYPES[name]
    for table in ("annotations", "consensus"):
        assert (ROOT / "expectations" / f"{table}.{kind.expectation_suite}.json").is_file()
    assert len({k.export_file for k in TASK_TYPES.values()}) == len(TASK_TYPES)
    assert {"label", "regions"} & set(kind.consensus_columns)


# The control tags Label Studio 1.23 can refuse to submit without an answer (`required`); Labels, RectangleLabels,
# Pairwise and Ranker have no such check, so the project's "deny empty annotations" setting covers them.
REQUIRABLE_TAGS = {"Choices", "Rating", "TextArea", "Number", "DateTime", "Taxonomy"}


def built_in_spec(name: str) -> ProjectSpec:
    """The type's example spec for types without labels, else a spec with the hostile labels."""
    from labelflow.tasks.spec import load_spec

    if not TASK_TYPES[name].uses_labels:
        return load_spec(str(ROOT / "examples" / "specs" / f"{name}.yaml"))
    return spec_for(name)


@pytest.mark.parametrize("name", list(TASK_TYPES))
def test_every_built_in_answer_control_that_label_studio_can_require_is_required(name: str) -> None:
    root = ElementTree.fromstring(label_interface(built_in_spec(name)).xml)
    (control,) = [element for element in root.iter() if element.get("name") == "label"]
    if control.tag in REQUIRABLE_TAGS:
        assert control.get("required") == "true"
    # the types whose answer is one class of a fixed set (text-pair: aligned / partial / not_aligned)
    classification = name in ("text-classification", "image-classification", "audio-classification", "text-pair")
    assert (control.tag == "Choices") == classification


@pytest.mark.parametrize("name", ["ner", "object-detection"])
def test_region_types_offer_an_explicit_nothing_to_mark_answer_outside_the_labeling_control(name: str) -> None:
    from labelflow.tasks.task_types.regions import NOTHING_NAME

    spec = spec_for(name)
    xml = label_interface(spec).xml
    assert control_of(xml)[0] == "label"  # results are still read from the labels control
    (nothing,) = [element for element in ElementTree.fromstring(xml).iter() if element.get("name") == NOTHING_NAME]
    assert nothing.tag == "Choices" and nothing.get("toName") == spec.task_type.media
    (choice,) = list(nothing)
    assert choice.get("value") not in HOSTILE_LABELS
    # An annotation holding only that choice has no item of the labels control: no regions, and no problem.
    assert spec.task_type.parse_result([], set(HOSTILE_LABELS), 100, 100) == (None, [], [])


def test_region_fields_are_the_arrow_struct_fields() -> None:
    assert tuple(REGION_TYPE.names) == REGION_FIELDS


def test_results_are_parsed_by_the_type_and_bad_labels_are_kept_as_problems() -> None:
    labels = {"PER", "ORG"}
    ner = TASK_TYPES["ner"].parse_result(
        [{"id": "s1", "value": {"start": 0, "end": 3, "text": "Bob", "labels": ["PER"]}}], labels, None, None
    )
    assert ner[0] is None and ner[1][0]["start"] == 0 and ner[1][0]["label"] == "PER" and ner[2] == []
    box = TASK_TYPES["object-detection"].parse_result(
        [{"id": "b1", "value": {"x": 10, "y": 20, "width": 50, "height": 25, "rectanglelabels": ["CAR"]}}],
        labels,
        200,
        100,
    )
    assert (box[1][0]["x"], box[1][0]["y"], box[1][0]["width"], box[1][0]["height"]) == (20.0, 20.0, 100.0, 25.0)
    assert box[2] == ["label 'CAR' is not in the spec's label set"]
    label, regions, problems = TASK_TYPES["text-classification"].parse_result(
        [{"value": {"choices": ["PER", "ORG"]}}], labels, None, None
    )
    assert (label, regions) == ("PER", None) and problems == ["2 classes chosen: ['PER', 'ORG']"]


def test_only_types_with_a_simulated_answer_can_be_simulated() -> None:
    answers = {name: kind.simulated_result("label", "text", "x") for name, kind in TASK_TYPES.items()}
    assert answers["text-classification"] == [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["x"]}}
    ]
    assert answers["ner"] is None and answers["object-detection"] is None


def test_predictors_are_checked_against_the_type() -> None:
    keyword = {"predictor": "keyword", "model_version": "kw-1", "keywords": {"a&b": ["x"]}}
    assert spec_for("ner", prelabel=keyword).prelabel is not None
    with pytest.raises(ValueError, match="the keyword predictor supports text-classification, ner tasks"):
        spec_for("image-classification", prelabel=keyword)
    openai = {"predictor": "openai", "model_version": "m", "endpoint": "http://127.0.0.1:1/v1", "model": "m"}
    with pytest.raises(ValueError, match=r"the openai predictor supports text-classification, .*tasks, not ner"):
        spec_for("ner", prelabel=openai)


def test_no_task_type_dispatch_outside_the_registry() -> None:
    pattern = re.compile(r"spec\.task *(==|in\b|!=|not in\b)|\.task +(==|!=|in|not in) +[\"'(]")
    offenders = []
    for folder in ("flows", "tasks", "integrations", "labelflow"):
        for path in (ROOT / folder).rglob("*.py"):
            if "task_types" in path.parts:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_records_and_options_are_checked_by_the_task_type() -> None:
    base = {"name": "r", "source": "s3://raw/x/", "task": "ner", "labels": ["PER"]}
    boxes = {**base, "task": "object-detection", "labels": ["car"]}
    with pytest.raises(ValueError, match=r"(?m)^  records: task object-detection does not read files of records$"):
        parse_spec({**boxes, "records": {"fields": {"text": "body"}}})
    assert parse_spec({**base, "records": {"fields": {"text": "body"}}}).records is not None  # texts from records
    with pytest.raises(ValueError, match=r"(?m)^  records.fields: task ner has no field prompt \(known: text\)$"):
        parse_spec({**base, "records": {"fields": {"text": "body", "prompt": "q"}}})
    with pytest.raises(ValueError, match=r"(?m)^  options: task ner has no options$"):
        parse_spec({**base, "options": {"scale": 5}})
    with pytest.raises(ValueError, match=r"records.fields: text: 'a..b' is not a field path"):
        parse_spec({**base, "records": {"fields": {"text": "a..b"}}})
    with pytest.raises(ValueError, match=r"field_max_chars names fields not in `fields`: \['prompt'\]"):
        parse_spec({**base, "records": {"fields": {"text": "body"}, "field_max_chars": {"prompt": 10}}})
    with pytest.raises(ValueError, match=r"(?m)^  labels: List should have at least 1 item \(task ner"):
        parse_spec({**base, "labels": []})


def test_records_spec_gives_paths_and_limits() -> None:
    from labelflow.tasks.spec import RecordsSpec

    records = RecordsSpec(fields={"prompt": "messages.0.content", "responses": ["a", "b", "c"]}, max_chars=50,
                          field_max_chars={"prompt": 10})  # fmt: skip
    assert records.paths("prompt") == ["messages.0.content"] and records.paths("responses") == ["a", "b", "c"]
    assert (records.limit("prompt"), records.limit("responses")) == (10, 50)


def test_a_missing_label_set_is_reported_with_the_other_field_errors() -> None:
    with pytest.raises(ValueError) as caught:
        parse_spec({"name": "x", "source": "s3://b/", "task": "ner", "labels": []})
    lines = str(caught.value).splitlines()[1:]
    assert lines == [
        "  source: 's3://b/' is not an s3://bucket/prefix URI",
        "  labels: List should have at least 1 item (task ner chooses among labels)",
    ]
    with pytest.raises(ValueError, match=r"(?m)^  labels: List should have at least 1 item \(task image-"):
        parse_spec({"name": "x", "source": "s3://raw/x/", "task": "image-classification"})
