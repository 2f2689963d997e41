"""Smoke-check flow: one round trip through every service the pipeline uses."""

from __future__ import annotations

from prefect import flow
from prefect.utilities.annotations import quote

from labelflow.integrations.resources import Resources
from labelflow.tasks.stack_checks import check_label_studio, check_mlflow, check_object_store


@flow(name="labelflow-smoke-check")
def smoke_check(bucket: str = "labelflow-smoke", experiment: str = "labelflow-smoke") -> list[str]:
    """Prove the object store, Label Studio (with S3 resolution) and MLflow work; the run itself proves Prefect."""
    resources = Resources.from_settings()
    store, ls, tracking = resources.store, resources.label_studio_client, resources.tracking
    try:
        return [
            check_object_store(quote(store), bucket),
            check_label_studio(quote(ls), quote(store), bucket),
            check_mlflow(quote(tracking), experiment),
        ]
    finally:
        ls.close()
