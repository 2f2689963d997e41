"""Label Studio projects as annotators meet them: an empty Submit is refused for every task type, and the annotation
counters Label Studio shows agree with the annotations it stores after a simulated team labeled the tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.ingest import ensure_project, state_index_key
from labelflow.tasks.label_config import build_label_config
from labelflow.tasks.spec import STATE_BUCKET, ProjectSpec, load_spec, parse_spec
from labelflow.tasks.task_types import TASK_TYPES
from tests.conftest import RunningStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
LABELS = ["正面", "negative", "a&b"]


def spec_of_type(name: str, unique_name: str) -> ProjectSpec:
    """A spec of the task type in its own source and state buckets: the example spec for types without labels."""
    own = {
        "name": f"{name} {unique_name}",
        "source": f"s3://{unique_name}-src/x/",
        "state": f"s3://{unique_name}-state/{name}/",
    }
    if not TASK_TYPES[name].uses_labels:
        example = load_spec(str(ROOT / "examples" / "specs" / f"{name}.yaml"))
        return parse_spec({**example.model_dump(mode="json", exclude_none=True), **own})
    return parse_spec({**own, "task": name, "labels": LABELS})


@pytest.fixture
def made_projects(label_studio: LabelStudioClient, object_store: ObjectStore) -> Iterator[list[ProjectSpec]]:
    """Specs whose projects the test makes; afterwards their projects, state and buckets are gone."""
    specs: list[ProjectSpec] = []
    yield specs
    for spec in specs:
        while (project_id := label_studio.find_project(spec.name)) is not None:
            label_studio.delete_project(project_id)
        object_store.delete(STATE_BUCKET, state_index_key(spec.state_location))
        for location in (spec.state_location, *spec.sources):
            if object_store.bucket_exists(location.bucket):
                for item in list(object_store.list_objects(location.bucket)):
                    object_store.delete(location.bucket, item.key)
                object_store._client.delete_bucket(Bucket=location.bucket)


@pytest.mark.parametrize("name", list(TASK_TYPES))
def test_every_task_types_project_refuses_an_empty_annotation(
    name: str,
    label_studio: LabelStudioClient,
    object_store: ObjectStore,
    unique_name: str,
    made_projects: list[ProjectSpec],
) -> None:
    spec = spec_of_type(name, unique_name)
    made_projects.append(spec)
    project_id = ensure_project(label_studio, object_store, spec)
    project = label_studio.get_project(project_id)
    assert project is not None
    # A typed answer (sft) is refused empty by its `required` TextArea instead (tests/browser/test_empty_submit.py).
    assert project["enable_empty_annotation"] is (not spec.task_type.refuse_empty_annotations)
    assert spec.task_type.refuse_empty_annotations or 'required="true"' in project["label_config"]
    # Label Studio took the interface as built (with `required` and the region types' "nothing to mark" answer).
    assert project["label_config"] == build_label_config(spec)


def test_a_project_made_before_is_switched_to_refusing_empty_annotations_by_the_next_ingest(
    label_studio: LabelStudioClient, object_store: ObjectStore, unique_name: str, made_projects: list[ProjectSpec]
) -> None:
    spec = spec_of_type("text-classification", unique_name)
    made_projects.append(spec)
    # As labelflow used to create it: Label Studio's default (empty annotations accepted), no `required` choice.
    old_config = build_label_config(spec).replace(' required="true"', "")
    old_id = label_studio.create_project(title=spec.name, label_config=old_config, maximum_annotations=3)
    before = label_studio.get_project(old_id)
    assert before is not None and before["enable_empty_annotation"] is True

    assert ensure_project(label_studio, object_store, spec) == old_id
    after = label_studio.get_project(old_id)
    assert after is not None
    assert after["enable_empty_annotation"] is False and after["label_config"] == build_label_config(spec)


def test_after_simulate_each_tasks_annotation_counter_equals_its_stored_annotations(
    local_stack: RunningStack,
    label_studio: LabelStudioClient,
    object_store: ObjectStore,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
    made_projects: list[ProjectSpec],
) -> None:
    from labelflow.flows.ingest import ingest
    from labelflow.flows.simulate import simulate_annotations
    from labelflow.integrations.resources import Resources
    from labelflow.tasks.simulate import build_annotators

    tasks = 60
    spec = spec_of_type("text-classification", unique_name).model_copy(update={"overlap": 3})
    made_projects.append(spec)
    source = spec.sources[0]
    object_store.ensure_bucket(source.bucket)
    for i in range(tasks):
        label = LABELS[i % len(LABELS)]
        object_store.put_bytes(source.bucket, f"{source.prefix}{label}/{i:03d}.txt", f"text {i} {label}".encode())
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), allow_unicode=True), "utf-8")
    assert ingest(str(path))["tasks_created"] == tasks

    annotators = build_annotators([0.9, 0.8, 0.7], spammers=0, prefix=unique_name)
    resources = Resources(s3=local_stack.s3, label_studio=local_stack.label_studio)
    try:
        # Many workers: posting one task's annotations at once left 6 of these 60 tasks' counters short (2 or 1
        # of 3) on the local stack; posted in sequence per task, every counter is right.
        project_id, done = simulate_annotations(resources, spec, annotators, workers=16)
    finally:
        resources.close()
        for user_id, email in label_studio.users().items():
            if email in {a.email for a in annotators}:
                label_studio._request("DELETE", f"/api/users/{user_id}/", f"delete user {email}")
    assert done["annotations_created"] == tasks * 3

    listed = task_list(label_studio, project_id)
    assert len(listed) == tasks
    wrong = {
        task["id"]: (task["total_annotations"], stored)
        for task in listed
        if task["total_annotations"] != (stored := len(label_studio.get_task(task["id"])["annotations"]))
    }
    assert wrong == {}, "task id: (Label Studio's counter, annotations stored)"
    assert all(len(label_studio.get_task(task["id"])["annotations"]) == 3 for task in listed)
    project = label_studio.get_project(project_id)
    assert project is not None
    assert project["total_annotations_number"] == sum(task["total_annotations"] for task in listed) == tasks * 3


def task_list(label_studio: LabelStudioClient, project_id: int) -> list[dict[str, Any]]:
    """Every task of the project as the Data Manager lists it, with its `total_annotations` counter."""
    payload = label_studio._request(
        "GET", "/api/tasks", "list tasks", params={"project": project_id, "page_size": 1000, "fields": "all"}
    ).json()
    return payload["tasks"]
