"""The one place that builds clients of the external systems (Dagster's resources): settings in, adapters out."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from labelflow.integrations.settings import (
    LabelStudioSettings,
    MLflowSettings,
    S3Settings,
    S3StorageSettings,
    load_settings,
)

if TYPE_CHECKING:
    from labelflow.integrations.label_studio import LabelStudioClient
    from labelflow.integrations.mlflow_tracking import MLflowTracking
    from labelflow.integrations.object_store import ObjectStore


@dataclass(frozen=True)
class Resources:
    """Settings of every external system; each client is built once, on first use (importing MLflow takes seconds)."""

    s3: S3Settings | None = None
    label_studio: LabelStudioSettings | None = None
    mlflow: MLflowSettings | None = None
    storage_reader: S3StorageSettings | None = None
    label_studio_timeout: float = 60.0

    @classmethod
    def from_settings(cls, label_studio_timeout: float = 60.0) -> Resources:
        """Resources for the configured systems (environment, .env, then the local stack), read when first needed."""
        return cls(label_studio_timeout=label_studio_timeout)

    @functools.cached_property
    def store(self) -> ObjectStore:
        """The object store client."""
        from labelflow.integrations.object_store import ObjectStore

        return ObjectStore(self.s3 or load_settings(S3Settings))

    @functools.cached_property
    def label_studio_client(self) -> LabelStudioClient:
        """The Label Studio client."""
        from labelflow.integrations.label_studio import LabelStudioClient

        return LabelStudioClient(self.label_studio or load_settings(LabelStudioSettings), self.label_studio_timeout)

    @functools.cached_property
    def tracking(self) -> MLflowTracking:
        """The MLflow tracking client."""
        from labelflow.integrations.mlflow_tracking import MLflowTracking

        return MLflowTracking(self.mlflow or load_settings(MLflowSettings))

    @functools.cached_property
    def reader_settings(self) -> S3StorageSettings:
        """The read-only S3 identity Label Studio's storage connections use (required: never the admin key)."""
        return self.storage_reader or load_settings(S3StorageSettings)

    def close(self) -> None:
        """Close the clients that hold connections (only those built)."""
        if "label_studio_client" in self.__dict__:
            self.label_studio_client.close()
