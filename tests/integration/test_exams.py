"""Certification exams on the real stack: `labelflow exam create` builds `<title> · exam <level> v1` from the gold
set (a too-large exam is refused in one line, nothing created), two people answer through Label Studio's API,
`labelflow exam grade` certifies one and not the other, and with `quality.min_level` the uncertified person's
labels in the main project do not count and they are listed."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.exams import ITEM_KEY, ExamState
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.spec import load_spec
from labelflow.tasks.task_types.classification import choice_result
from tests.integration.test_ingest import all_tasks, write_spec

LABELS = ["positive", "negative", "neutral"]
TEXTS = 12


def test_an_exam_certifies_one_person_and_an_uncertified_persons_labels_do_not_count(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.cli import app
    from labelflow.flows.collect import collect_annotations
    from labelflow.flows.ingest import ingest

    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    gold_lines = ["source_key,label"]
    for i in range(TEXTS):
        label = LABELS[i % 3]
        key = f"reviews/{label}/{i:03d}.txt"
        object_store.put_bytes(source, key, f"评论 {i}: a {label} review".encode())
        gold_lines.append(f"{key},{label}")
    object_store.put_bytes(source, "gold/reviews.csv", "\n".join(gold_lines).encode())
    name = f"exams {unique_name}"
    body = {
        "name": name,
        "source": f"s3://{source}/reviews/",
        "state": f"s3://{unique_name}-state/labelflow/",
        "task": "text-classification",
        "domain": f"exam-{unique_name}",
        "labels": LABELS,
        "overlap": 1,
        "instructions": "Choose the review's sentiment.",
        "quality": {"gold": f"s3://{source}/gold/reviews.csv", "route_low_agreement": False},
    }
    spec_path = write_spec(tmp_path, body)
    assert ingest(str(spec_path))["tasks_created"] == TEXTS
    spec = load_spec(spec_path)
    record = read_project_record(object_store, spec)
    assert record is not None
    project_id = int(record["project_id"])
    runner = CliRunner()

    # Bad input: more items than the gold set holds -> one line, exit 2, nothing created.
    refused = runner.invoke(app, ["exam", "create", str(spec_path), "--level", "junior", "--items", "13"])
    assert refused.exit_code == 2, refused.output
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "more than the gold set holds: 12" in lines[0], refused.output
    assert label_studio.find_project(f"{name} · exam junior v1") is None
    assert ExamState.load(object_store, spec).exams == []

    created = runner.invoke(app, ["exam", "create", str(spec_path), "--level", "junior", "--items", "9", "--json"])
    assert created.exit_code == 0, created.output
    exam = json.loads(created.output)
    assert exam["title"] == f"{name} · exam junior v1" and exam["items"] == 9
    assert exam["by_label"] == {"negative": 3, "neutral": 3, "positive": 3}
    exam_id = exam["project_id"]
    assert label_studio.find_project(exam["title"]) == exam_id
    exam_project = label_studio.get_project(exam_id)
    assert exam_project is not None
    assert exam_project["label_config"] == label_studio.get_project(project_id)["label_config"]  # type: ignore[index]
    assert "Choose the review's sentiment." in exam_project["expert_instruction"]
    exam_tasks = all_tasks(label_studio, exam_id)
    assert sorted(task["data"][ITEM_KEY] for task in exam_tasks) == list(range(1, 10))

    good, poor = (label_studio.create_user(f"{unique_name}-{who}@example.com") for who in ("good", "poor"))
    for task in exam_tasks:
        truth = task["data"]["source_key"].split("/")[1]
        label_studio.create_annotation(task["id"], choice_result("label", "text", truth), good, 4.0)
        answer = truth if task["data"][ITEM_KEY] <= 3 else next(x for x in LABELS if x != truth)
        label_studio.create_annotation(task["id"], choice_result("label", "text", answer), poor, 4.0)

    graded = runner.invoke(app, ["exam", "grade", str(spec_path), "--json"])
    assert graded.exit_code == 0, graded.output
    certificates = {row["annotator_email"]: row for row in json.loads(graded.output)["certificates"]}
    good_email, poor_email = f"{unique_name}-good@example.com", f"{unique_name}-poor@example.com"
    assert certificates[good_email]["passed"] and certificates[good_email]["correct"] == 9
    assert not certificates[poor_email]["passed"] and certificates[poor_email]["correct"] == 3
    assert certificates[good_email]["level"] == "junior" and certificates[good_email]["exam_version"] == 1
    shown = runner.invoke(app, ["exam", "grade", str(spec_path), "--version", "1"])  # a regrade adds certificates
    assert shown.exit_code == 0, shown.output
    assert good_email in shown.output and "9/9" in shown.output and "3/9" in shown.output
    missing = runner.invoke(app, ["exam", "grade", str(spec_path), "--version", "7"])
    assert missing.exit_code == 2 and "no exam version 7" in missing.output, missing.output

    # Admission: the main project now requires junior; both answer every task, the poor one wrongly.
    spec_path = write_spec(tmp_path, {**body, "quality": {**body["quality"], "min_level": "junior"}})
    for task in all_tasks(label_studio, project_id):
        truth = task["data"]["source_key"].split("/")[1]
        label_studio.create_annotation(task["id"], choice_result("label", "text", truth), good, 4.0)
        wrong = next(x for x in LABELS if x != truth)
        label_studio.create_annotation(task["id"], choice_result("label", "text", wrong), poor, 4.0)
    summary = collect_annotations(str(spec_path))
    quality = summary["quality"]
    assert quality["uncertified_annotators"] == [{"annotator_email": poor_email, "annotations": TEXTS}]
    assert quality["finished_tasks"] == TEXTS and quality["invalid_annotations"] == 0
    assert quality["label_distribution"] == {label: TEXTS // 3 for label in LABELS}  # the certified person's
    assert quality["mean_task_agreement"] == 1.0  # the dissenting uncertified labels are not votes

    listed = runner.invoke(app, ["annotators", "--domain", f"exam-{unique_name}", "--json"])
    assert listed.exit_code == 0, listed.output
    levels = {row["annotator_email"]: row["certified_level"] for row in json.loads(listed.output)["profiles"]}
    assert levels[good_email] == "junior" and levels[poor_email] is None
