"""Audio classification: annotators listen to a clip and choose one label; exported as JSON Lines of clips."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from labelflow.tasks.task_types.classification import ClassificationTask

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec


def seconds_or_none(value: object) -> float | None:
    """A duration cell as float seconds, None when missing."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else round(number, 3)


class AudioClassification(ClassificationTask):
    """One class per audio clip; Label Studio plays the clip through its storage connection."""

    name: ClassVar[str] = "audio-classification"
    media = "audio"
    tag = "Audio"
    # The waveform with its own play control; `hotkey` lets annotators play and pause without the mouse.
    tag_attributes = ' hotkey="ctrl+p"'
    export_file = "audio.jsonl"
    expectation_suite = "audio-classification"
    predictors = frozenset({"mlflow"})
    model_in_the_loop = True

    @property
    def consensus_columns(self) -> tuple[str, ...]:
        """The clip's duration, sample rate and channels, and its class."""
        return ("audio_duration", "audio_sample_rate", "audio_channels", "label")

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """audio.jsonl: {audio (s3 URI), duration, label, task_id} per task."""
        path = folder / self.export_file
        with path.open("w", encoding="utf-8") as handle:
            for task_id, uri, duration, label in rows[["task_id", "source_uri", "audio_duration", "label"]].itertuples(
                index=False
            ):
                record = {"audio": uri, "duration": seconds_or_none(duration), "label": label, "task_id": int(task_id)}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path
