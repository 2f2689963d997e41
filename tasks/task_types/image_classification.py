"""Image classification: annotators choose one label for an image; exported as a CSV of image URIs and labels."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from labelflow.tasks.task_types.classification import ClassificationTask

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec


class ImageClassification(ClassificationTask):
    """One class per image."""

    name: ClassVar[str] = "image-classification"
    media = "image"
    tag = "Image"
    export_file = "images.csv"
    expectation_suite = "image-classification"
    predictors = frozenset({"mlflow"})
    model_in_the_loop = True

    @property
    def consensus_columns(self) -> tuple[str, ...]:
        """The image size and its class."""
        return ("image_width", "image_height", "label")

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """images.csv: source_uri, label, task_id, image_width, image_height."""
        path = folder / self.export_file
        rows[["source_uri", "label", "task_id", "image_width", "image_height"]].to_csv(path, index=False)
        return path
