"""Expert escalation on the real stack: a flagged task goes to `<title> · review` with the annotators' answers as
predictions, a sampled accepted task goes with it, the reviewer decides through Label Studio's API, and the next
collect publishes a version carrying `method: expert`; a reviewer Label Studio does not know is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.escalation import MAIN_TASK_KEY, REASON_KEY, SAMPLE_REASON, EscalationState
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.task_types.classification import choice_result
from tests.integration.test_ingest import all_tasks, write_spec

LABELS = ["positive", "negative", "neutral"]
TEXTS = 12


def test_a_flagged_task_is_escalated_decided_by_the_reviewer_and_published_as_expert(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.cli import app
    from labelflow.flows.collect import collect
    from labelflow.flows.ingest import ingest

    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    for i in range(TEXTS):
        label = LABELS[i % 3]
        object_store.put_bytes(source, f"reviews/{label}/{i:03d}.txt", f"评论 {i}: a {label} review".encode())
    reviewer = label_studio.whoami()["email"]
    body = {
        "name": f"escalation {unique_name}",
        "source": f"s3://{source}/reviews/",
        "state": f"s3://{unique_name}-state/labelflow/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 3,
        "quality": {
            "route_low_agreement": "expert",
            "reviewers": [reviewer],
            "min_agreement": 0.7,
            "review_sample": 0.5,
        },
        "dataset": {"name": unique_name},
    }
    spec_path = write_spec(tmp_path, body)
    assert ingest(str(spec_path))["tasks_created"] == TEXTS
    from labelflow.tasks.spec import load_spec

    spec = load_spec(spec_path)
    record = read_project_record(object_store, spec)
    assert record is not None
    project_id = int(record["project_id"])
    tasks = sorted(all_tasks(label_studio, project_id), key=lambda t: t["id"])
    emails = [f"{unique_name}-annotator-{n}@example.com" for n in range(3)]
    users = [label_studio.create_user(email) for email in emails]
    flagged = tasks[0]
    for task in tasks:
        truth = task["data"]["source_key"].split("/")[1]
        for n, user in enumerate(users):
            # The first task splits 2:1 (agreement 0.67 < 0.7): flagged, so escalated.
            label = next(x for x in LABELS if x != truth) if task is flagged and n == 2 else truth
            label_studio.create_annotation(task["id"], choice_result("label", "text", label), user, 5.0)

    first = collect(str(spec_path))
    review = first["quality"]["expert_review"]
    assert review["escalated_now"] == 1, review
    assert first["dataset"]["published"] and first["dataset"]["rows"] == TEXTS - 1  # the flagged task waits

    review_id = label_studio.find_project(f"escalation {unique_name} · review")
    assert review_id is not None and review_id == review["review_project_id"]
    main_config = label_studio.get_project(project_id)["label_config"]  # type: ignore[index]
    assert label_studio.get_project(review_id)["label_config"] == main_config  # type: ignore[index]
    in_review = {int(t["data"][MAIN_TASK_KEY]): t for t in label_studio.export_tasks(review_id)}
    escalated = in_review[flagged["id"]]
    assert escalated["data"]["text"] == flagged["data"]["text"]
    assert escalated["data"][REASON_KEY].startswith("agreement 0.67")
    answers = {p["model_version"]: p["result"][0]["value"]["choices"][0] for p in escalated["predictions"]}
    truth = flagged["data"]["source_key"].split("/")[1]
    assert sorted(answers) == sorted(emails) and sorted(answers.values()).count(truth) == 2

    # review_sample: accepted tasks are sent too, each once; the state knows every one.
    sampled = [t for t in in_review.values() if t["data"][REASON_KEY] == SAMPLE_REASON]
    assert len(sampled) == review["sampled_now"] >= 1 and len(in_review) == 1 + len(sampled)
    assert set(EscalationState.load(object_store, spec).escalated) == {str(i) for i in in_review}

    # The reviewer decides the flagged task in the review project, through the API, as themselves.
    decision = next(x for x in LABELS if x not in (truth, answers[emails[2]]))
    label_studio.create_annotation(escalated["id"], choice_result("label", "text", decision), lead_time=9.0)

    # The CLI's collect (its shortcut must see the new answer in the review project) publishes version 2.
    result = CliRunner().invoke(app, ["collect", str(spec_path), "--json"])
    assert result.exit_code == 0, result.output
    second = json.loads(result.output)
    assert second["quality"]["expert_review"]["escalated_now"] == 0  # nothing imported twice
    assert len(label_studio.export_tasks(review_id)) == len(in_review)
    assert second["dataset"]["published"] and second["dataset"]["rows"] == TEXTS, second["dataset"]
    pulled = DatasetRegistry(object_store, mlflow_tracking).pull(
        unique_name, second["dataset"]["version"], tmp_path / "v"
    )
    consensus = pd.read_parquet(pulled.path("consensus")).set_index("task_id")
    assert consensus.loc[flagged["id"], "method"] == "expert" and consensus.loc[flagged["id"], "label"] == decision
    assert (consensus.drop(index=flagged["id"])["method"] == "majority").all()


def test_a_reviewer_label_studio_does_not_know_is_refused_in_one_line(
    object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str, tmp_path: Path, prefect_api: str
) -> None:
    from labelflow.cli import app
    from labelflow.flows.ingest import ingest

    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    object_store.put_bytes(source, "reviews/positive/0.txt", b"fine")
    stranger = f"nobody-{unique_name}@example.com"
    body = {
        "name": f"escalation {unique_name}",
        "source": f"s3://{source}/reviews/",
        "state": f"s3://{unique_name}-state/labelflow/",
        "task": "text-classification",
        "labels": LABELS,
        "quality": {"route_low_agreement": "expert", "reviewers": [stranger]},
    }
    spec_path = write_spec(tmp_path, body)
    ingest(str(spec_path))
    state_before = sorted(o.key for o in object_store.list_objects(f"{unique_name}-state", ""))

    result = CliRunner().invoke(app, ["collect", str(spec_path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and stranger in lines[0] and "not a Label Studio user" in lines[0], result.output
    assert sorted(o.key for o in object_store.list_objects(f"{unique_name}-state", "")) == state_before
    assert label_studio.find_project(f"escalation {unique_name} · review") is None
