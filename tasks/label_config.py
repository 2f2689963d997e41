"""Label Studio labeling-interface XML for the built-in task types, with every label safely escaped."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from labelflow.tasks.spec import ProjectSpec

# Label Studio tag names of the result each task type produces, used by pre-labels and collection.
FROM_NAME = "label"


def _options(tag: str, labels: list[str]) -> str:
    return "".join(f"\n    <{tag} value={quoteattr(label)}/>" for label in labels)


def build_label_config(spec: ProjectSpec) -> str:
    """The spec's raw `label_config`, or the built-in template for its task type."""
    if spec.label_config is not None:
        return spec.label_config
    if spec.task == "text-classification":
        return (
            '<View>\n  <Text name="text" value="$text"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="text" choice="single-radio" showInLine="true">'
            f"{_options('Choice', spec.labels)}\n  </Choices>\n</View>"
        )
    if spec.task == "image-classification":
        return (
            '<View>\n  <Image name="image" value="$image"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="image" choice="single-radio" showInLine="true">'
            f"{_options('Choice', spec.labels)}\n  </Choices>\n</View>"
        )
    if spec.task == "ner":
        return (
            f'<View>\n  <Labels name="{FROM_NAME}" toName="text">{_options("Label", spec.labels)}\n  </Labels>\n'
            '  <Text name="text" value="$text" granularity="symbol"/>\n</View>'
        )
    if spec.task == "object-detection":
        return (
            '<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
            f'  <RectangleLabels name="{FROM_NAME}" toName="image">'
            f"{_options('Label', spec.labels)}\n  </RectangleLabels>\n</View>"
        )
    raise ValueError(f"no built-in template for task type {spec.task!r}")


CONTROL_TYPES = {"Choices": "choices", "Labels": "labels", "RectangleLabels": "rectanglelabels"}


def control_of(label_config: str) -> tuple[str, str, str]:
    """(from_name, to_name, result type) of the first labeling control in a config."""
    from xml.etree import ElementTree

    for element in ElementTree.fromstring(label_config).iter():
        if element.tag in CONTROL_TYPES:
            return element.get("name", FROM_NAME), element.get("toName", ""), CONTROL_TYPES[element.tag]
    raise ValueError("label_config has no Choices, Labels or RectangleLabels control")
