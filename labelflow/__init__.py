"""labelflow: object storage -> Label Studio -> quality -> Great Expectations -> versioned datasets in MLflow."""

from __future__ import annotations

from typing import Any

__all__ = ["load_dataset", "pull_dataset"]


def __getattr__(name: str) -> Any:
    """`load_dataset` and `pull_dataset`, imported on first use so the CLI starts fast."""
    if name in __all__:
        from labelflow import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'labelflow' has no attribute {name!r}")
