"""Smoke-check flow: one round trip through every service the pipeline uses."""

from __future__ import annotations

from prefect import flow

from labelflow.flows.steps import PrefectSteps
from labelflow.integrations.resources import Resources
from labelflow.tasks.stack_checks import check_label_studio, check_mlflow, check_object_store


@flow(name="labelflow-smoke-check")
def smoke_check(bucket: str = "labelflow-smoke", experiment: str = "labelflow-smoke") -> list[str]:
    """Prove the object store, Label Studio (with S3 resolution) and MLflow work; the run itself proves Prefect."""
    steps = PrefectSteps()
    resources = Resources.from_settings()
    store, ls, tracking = resources.store, resources.label_studio_client, resources.tracking
    try:
        return [
            steps(check_object_store, store, bucket),
            steps(check_label_studio, ls, store, bucket),
            steps(check_mlflow, tracking, experiment),
        ]
    finally:
        ls.close()
