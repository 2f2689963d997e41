"""Smoke-check flow: one round trip through every service the pipeline uses."""

from __future__ import annotations

from prefect import flow
from prefect.utilities.annotations import quote

from integrations.label_studio import LabelStudioClient
from integrations.mlflow_tracking import MLflowTracking
from integrations.object_store import ObjectStore
from integrations.settings import LabelStudioSettings, MLflowSettings, S3Settings, load_settings
from tasks.stack_checks import check_label_studio, check_mlflow, check_object_store


@flow(name="labelflow-smoke-check")
def smoke_check(bucket: str = "labelflow-smoke", experiment: str = "labelflow-smoke") -> list[str]:
    """Prove the object store, Label Studio (with S3 resolution) and MLflow work; the run itself proves Prefect."""
    store = ObjectStore(load_settings(S3Settings))
    ls = LabelStudioClient(load_settings(LabelStudioSettings))
    tracking = MLflowTracking(load_settings(MLflowSettings))
    try:
        return [
            check_object_store(quote(store), bucket),
            check_label_studio(quote(ls), quote(store), bucket),
            check_mlflow(quote(tracking), experiment),
        ]
    finally:
        ls.close()
