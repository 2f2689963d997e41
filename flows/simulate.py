"""Simulated annotation: the one wiring of `labelflow simulate`, the demo and the end-to-end bench."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from labelflow.tasks.collect import hidden_record_fields, recorded_project
from labelflow.tasks.model_loop import held_tasks
from labelflow.tasks.simulate import SimulatedAnnotator, run

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.integrations.resources import Resources
    from labelflow.tasks.spec import ProjectSpec


def simulate_annotations(
    resources: Resources,
    spec: ProjectSpec,
    annotators: list[SimulatedAnnotator],
    truth: pd.DataFrame | None = None,
    truth_pattern: str | None = None,
    per_task: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, dict[str, Any]]:
    """(Label Studio project id, what was done) after the simulated annotators labeled the spec's ingested tasks.

    No Prefect task: creating annotations is not idempotent, so it must never be retried as a whole.
    """
    project_id = recorded_project(resources.store, spec)
    hidden = hidden_record_fields(resources.store, spec) if spec.task_type.media == "record" else None
    held = held_tasks(resources.store, spec) if spec.automate is not None else frozenset()
    result = run(
        resources.label_studio_client,
        spec,
        project_id,
        annotators,
        truth,
        truth_pattern,
        per_task,
        limit,
        seed,
        workers,
        progress,
        hidden,
        held,
    )
    return project_id, result
