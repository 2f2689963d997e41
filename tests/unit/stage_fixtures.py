"""Projects on the in-memory fakes: a text-classification spec, its source texts, ingested and annotated."""

from __future__ import annotations

from typing import Any

from labelflow.flows.collect import collect_validate_register
from labelflow.flows.ingest import ingest_spec
from labelflow.tasks.spec import ProjectSpec, parse_spec
from tests.unit.fakes import FakeClients, FakeValidator, PlainSteps

LABELS = ["positive", "negative", "neutral"]
SOURCE_BUCKET = "raw"


def text_spec(**extra: Any) -> ProjectSpec:
    """A text-classification spec over s3://raw/reviews/ with three annotators per task."""
    body = {
        "name": "reviews",
        "source": f"s3://{SOURCE_BUCKET}/reviews/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 3,
        "quality": {"route_low_agreement": False},
        **extra,
    }
    return parse_spec(body)


def upload_reviews(clients: FakeClients, start: int, count: int) -> None:
    """Texts under reviews/<true label>/ (the folder is the truth the annotators below answer with)."""
    for i in range(start, start + count):
        label = LABELS[i % len(LABELS)]
        clients.store.put_object(SOURCE_BUCKET, f"reviews/{label}/{i:03d}.txt", f"review {i}: {label}".encode())


def ingest(clients: FakeClients, spec: ProjectSpec) -> dict[str, Any]:
    """The ingest flow's logic on the fakes; returns its run summary."""
    return ingest_spec(spec, clients=clients, steps=PlainSteps())


def annotate_all(clients: FakeClients, project_id: int, annotators: int = 3) -> list[int]:
    """Every unannotated task gets one answer (its true label) from each of `annotators` new users."""
    ls = clients.label_studio_client
    users = [ls.add_user(f"annotator{i}@labelflow.fake") for i in range(annotators)]
    for task in ls.project_tasks(project_id):
        if not task["annotations"]:
            truth = task["data"]["source_key"].split("/")[1]
            for user in users:
                ls.annotate(task["id"], truth, user)
    ls.clock.tick(5)
    return users


def collect(clients: FakeClients, spec: ProjectSpec, full: bool = False) -> tuple[dict[str, Any], PlainSteps]:
    """The collect flow's logic (collect, judge, validate, register) on the fakes: (run summary, its steps)."""
    steps = PlainSteps()
    summary = collect_validate_register(spec, None, full, clients=clients, validator=FakeValidator(), steps=steps)
    clients.label_studio_client.clock.tick(1)
    return summary, steps
