"""The task-type registry: every kind of labeling work labelflow supports, one class per module, listed here.

Adding a type is one module with a `TaskType` subclass, one line in `TASK_TYPES`, and its expectation suites
(README, "Adding a task type").
"""

from __future__ import annotations

from labelflow.tasks.task_types.audio_classification import AudioClassification
from labelflow.tasks.task_types.base import FROM_NAME, Media, TaskType
from labelflow.tasks.task_types.image_captioning import ImageCaptioning
from labelflow.tasks.task_types.image_classification import ImageClassification
from labelflow.tasks.task_types.ner import NamedEntities
from labelflow.tasks.task_types.object_detection import ObjectDetection
from labelflow.tasks.task_types.preference import Preference
from labelflow.tasks.task_types.ranking import Ranking
from labelflow.tasks.task_types.response_grading import ResponseGrading
from labelflow.tasks.task_types.sft import SupervisedFineTuning
from labelflow.tasks.task_types.text_classification import TextClassification
from labelflow.tasks.task_types.text_pair import TextPair
from labelflow.tasks.task_types.transcription import Transcription

TASK_TYPES: dict[str, TaskType] = {
    task_type.name: task_type
    for task_type in (
        TextClassification(),
        ImageClassification(),
        NamedEntities(),
        ObjectDetection(),
        AudioClassification(),
        ImageCaptioning(),
        Transcription(),
        Preference(),
        Ranking(),
        ResponseGrading(),
        SupervisedFineTuning(),
        TextPair(),
    )
}

__all__ = ["FROM_NAME", "TASK_TYPES", "Media", "TaskType", "task_type"]


def task_type(name: str) -> TaskType:
    """The registered task type called `name`."""
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown task type {name!r}; known: {', '.join(TASK_TYPES)}") from None
