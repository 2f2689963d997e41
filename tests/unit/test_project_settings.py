"""The Label Studio project settings ingest keeps: an empty annotation can never be submitted, new project or old."""

from __future__ import annotations

from labelflow.tasks.ingest import ensure_project
from labelflow.tasks.label_config import build_label_config
from tests.unit.fakes import FakeClients
from tests.unit.stage_fixtures import text_spec


def test_a_new_project_refuses_empty_annotations_and_requires_a_class() -> None:
    clients = FakeClients()
    spec = text_spec()
    project_id = ensure_project(clients.label_studio_client, clients.store, spec)
    project = clients.label_studio_client.projects[project_id]
    assert project["enable_empty_annotation"] is False
    assert 'required="true"' in project["label_config"]


def test_an_existing_project_that_accepts_empty_annotations_is_switched_over() -> None:
    clients = FakeClients()
    spec = text_spec()
    ls = clients.label_studio_client
    # A project made before this setting existed: Label Studio's defaults, the old interface without `required`.
    old_config = build_label_config(spec).replace(' required="true"', "")
    project_id = ls.create_project(title=spec.name, label_config=old_config, enable_empty_annotation=True)
    assert ensure_project(ls, clients.store, spec) == project_id
    assert ls.projects[project_id]["enable_empty_annotation"] is False
    assert ls.projects[project_id]["label_config"] == build_label_config(spec)
    # Switched on again in the UI: the next ingest (which finds the project through its state record) turns it off.
    ls.projects[project_id]["enable_empty_annotation"] = True
    ensure_project(ls, clients.store, spec)
    assert ls.projects[project_id]["enable_empty_annotation"] is False
