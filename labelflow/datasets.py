"""Model trainers' entry points: pull a published dataset version and load it as a DataFrame."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from labelflow.integrations.resources import Resources
from labelflow.integrations.settings import MLflowSettings, S3Settings
from labelflow.tasks.registry import DatasetRegistry, PulledDataset


def default_cache_dir() -> Path:
    """Where `load_dataset` keeps verified copies: $LABELFLOW_CACHE or ~/.cache/labelflow/datasets."""
    return Path(os.environ.get("LABELFLOW_CACHE") or Path.home() / ".cache" / "labelflow" / "datasets")


def dataset_registry(s3: S3Settings | None = None, mlflow: MLflowSettings | None = None) -> DatasetRegistry:
    """The published datasets on the given (default: the configured) object store and MLflow server."""
    resources = Resources(s3=s3, mlflow=mlflow)
    return DatasetRegistry(resources.store, resources.tracking)


def pull_dataset(
    name: str,
    version: int | str = "latest",
    out: Path | None = None,
    cache_dir: Path | None = None,
    s3: S3Settings | None = None,
    mlflow: MLflowSettings | None = None,
) -> PulledDataset:
    """Download one version into `out` (default: the cache), verify every SHA-256, return its files and manifest."""
    registry = dataset_registry(s3, mlflow)
    number = None if version == "latest" else int(str(version).removeprefix("v"))
    resolved = registry.resolve(name, number)
    folder = out or (cache_dir or default_cache_dir()) / name / f"v{resolved.version}"
    return registry.pull_version(resolved, Path(folder))


def load_dataset(
    name: str,
    version: int | str = "latest",
    cache_dir: Path | None = None,
    s3: S3Settings | None = None,
    mlflow: MLflowSettings | None = None,
) -> pd.DataFrame:
    """The consensus table of a published version; `df.attrs["labelflow"]` holds the version, files and manifest."""
    pulled = pull_dataset(name, version, cache_dir=cache_dir, s3=s3, mlflow=mlflow)
    frame = pd.read_parquet(pulled.path("consensus"))
    frame.attrs["labelflow"] = {
        "name": pulled.name,
        "version": pulled.version,
        "folder": str(pulled.folder),
        "files": {role["role"]: str(pulled.files[role["path"]]) for role in pulled.manifest["files"]},
        "manifest": pulled.manifest,
    }
    return frame
