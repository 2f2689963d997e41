"""The labeling interface of a spec: its Label Studio XML and the control annotators answer with."""

from __future__ import annotations

from dataclasses import dataclass

from labelflow.tasks.spec import ProjectSpec
from labelflow.tasks.task_types import FROM_NAME

CONTROL_TYPES = {
    "Choices": "choices",
    "Labels": "labels",
    "RectangleLabels": "rectanglelabels",
    # the record types' answers (preference, ranking, grading, SFT)
    "Pairwise": "pairwise",
    "Ranker": "ranker",
    "Rating": "rating",
    "TextArea": "textarea",
}

__all__ = ["CONTROL_TYPES", "FROM_NAME", "LabelInterface", "build_label_config", "control_of", "label_interface"]


def build_label_config(spec: ProjectSpec) -> str:
    """The spec's raw `label_config`, or its task type's built-in template (every label escaped)."""
    if spec.label_config is not None:
        return spec.label_config
    return spec.task_type.label_config_for(spec)


def control_of(label_config: str) -> tuple[str, str, str]:
    """(from_name, to_name, result type) of the config's labeling control: the one named FROM_NAME (a built-in
    interface may have more, e.g. transcription's segment labels), else the first."""
    from xml.etree import ElementTree

    controls = [e for e in ElementTree.fromstring(label_config).iter() if e.tag in CONTROL_TYPES]
    for element in sorted(controls, key=lambda e: e.get("name") != FROM_NAME):  # stable: document order otherwise
        return element.get("name", FROM_NAME), element.get("toName", ""), CONTROL_TYPES[element.tag]
    raise ValueError(f"label_config has no labeling control ({', '.join(CONTROL_TYPES)})")


@dataclass(frozen=True)
class LabelInterface:
    """A spec's labeling-interface XML and its labeling control: whose results are read and written."""

    xml: str
    from_name: str
    to_name: str
    result_type: str


def label_interface(spec: ProjectSpec) -> LabelInterface:
    """The interface Label Studio shows for a spec, with its control's names (one parse, for every caller)."""
    xml = build_label_config(spec)
    return LabelInterface(xml, *control_of(xml))
