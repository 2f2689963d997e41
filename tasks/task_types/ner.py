"""Named-entity recognition: labeled character spans in a text; exported as CoNLL (BIO tags)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from labelflow.tasks.task_types.base import FROM_NAME, label_options
from labelflow.tasks.task_types.regions import RegionTask, nothing_control

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec

# CJK ideographs, kana and hangul are one token each; other scripts split on whitespace and punctuation.
TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W_]+|[^\w\s]|_", re.UNICODE)


def _offset(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def conll_lines(text: str, spans: list[dict[str, Any]]) -> list[str]:
    """CoNLL/BIO lines ("token TAG") for one text and its character spans."""
    lines = []
    ordered = sorted((s for s in spans if s.get("start") is not None), key=lambda s: (s["start"], -s["end"]))
    for match in TOKEN.finditer(text):
        tag = "O"
        for span in ordered:
            if match.start() < span["end"] and match.end() > span["start"]:
                tag = ("B-" if match.start() <= span["start"] else "I-") + str(span["label"])
                break
        lines.append(f"{match.group(0)} {tag}")
    return lines


NOTHING_TEXT = "No entities in this text"


class NamedEntities(RegionTask):
    """Spans of a text, each with one entity label."""

    name: ClassVar[str] = "ner"
    media = "text"
    record_fields = ("text",)  # a file of records may hold the texts: one task per record
    region_kind = "spans"
    consensus_method = "span-vote"
    export_file = "train.conll"
    expectation_suite = "ner"
    predictors = frozenset({"keyword"})

    def label_config(self, labels: list[str]) -> str:
        """A `<Labels>` control over a `<Text>` with character granularity, and the "no entities" answer."""
        return (
            f'<View>\n  <Labels name="{FROM_NAME}" toName="text">{label_options("Label", labels)}\n  </Labels>\n'
            '  <Text name="text" value="$text" granularity="symbol"/>\n'
            f"{nothing_control('text', NOTHING_TEXT)}</View>"
        )

    def region_geometry(
        self, item: dict[str, Any], value: dict[str, Any], region: dict[str, Any], width: int | None, height: int | None
    ) -> list[str]:
        """Character offsets (end exclusive) and the covered text."""
        region.update(start=_offset(value.get("start")), end=_offset(value.get("end")), text=value.get("text"))
        if region["start"] is None or region["end"] is None:
            return [f"span {item.get('id')!r} has no start/end offsets"]
        return []

    def merge(self, per_annotator: dict[int, list[dict[str, Any]]], iou_threshold: float) -> tuple[list, float]:
        """Spans most annotators marked identically."""
        from labelflow.tasks.consensus import span_consensus

        return span_consensus(per_annotator)

    def agreement_metrics(
        self, consensus: pd.DataFrame, agreements: list[float], ious: list[float], metrics: dict[str, Any]
    ) -> None:
        """Mean pairwise span F1."""
        from labelflow.tasks.agreement import mean_or_none

        metrics["mean_pairwise_span_f1"] = mean_or_none(agreements)

    @property
    def consensus_columns(self) -> tuple[str, ...]:
        """The text and its spans."""
        return ("text", "regions")

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """train.conll: a `# task_id = N` comment, then one "token TAG" line per token, a blank line between texts."""
        path = folder / self.export_file
        with path.open("w", encoding="utf-8") as handle:
            for task_id, text, regions in rows[["task_id", "text", "regions"]].itertuples(index=False):
                handle.write(f"# task_id = {task_id}\n")
                handle.write("\n".join(conll_lines(text or "", list(regions or []))) + "\n\n")
        return path
