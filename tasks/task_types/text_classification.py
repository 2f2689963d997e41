"""Text classification: annotators choose one label for a text; exported as JSON Lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from labelflow.tasks.task_types.classification import ClassificationTask

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec


class TextClassification(ClassificationTask):
    """One class per text."""

    name: ClassVar[str] = "text-classification"
    media = "text"
    record_fields = ("text",)  # a file of records may hold the texts: one task per record
    tag = "Text"
    export_file = "train.jsonl"
    expectation_suite = "text-classification"
    predictors = frozenset({"keyword", "openai", "mlflow"})
    model_in_the_loop = True

    @property
    def consensus_columns(self) -> tuple[str, ...]:
        """The text and its class."""
        return ("text", "label")

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """train.jsonl: {task_id, text, label, source_uri} per task."""
        path = folder / self.export_file
        with path.open("w", encoding="utf-8") as handle:
            for task_id, text, label, uri in rows[["task_id", "text", "label", "source_uri"]].itertuples(index=False):
                record = {"task_id": int(task_id), "text": text, "label": label, "source_uri": uri}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path
