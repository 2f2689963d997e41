"""What the LLM-data types share: tasks made from records, answers kept as JSON, gold read from the record."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar

from labelflow.tasks.task_types.base import TaskType

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec

# Every record type may map these: the known answer (gold tasks, and the simulator's truth) and the generation
# lineage `labelflow generate` writes (model, parameters, seed, prompt hash), carried into the published version.
COMMON_OPTIONAL_FIELDS = ("gold", "generation")
# Record fields never put in Label Studio's task data, where every user sees them (the Data Manager's columns, the
# API): a gold answer must stay unknown to annotators, model names would bias them, lineage is not theirs to read.
# They are kept in the ingest ledger and joined back into the task's record at collection.
HIDDEN_RECORD_FIELDS = frozenset({"gold", "generation", "model", "model_a", "model_b", "models", "draft_model"})


def record_of(value: Any) -> dict[str, Any]:
    """A task's `record` column (JSON text of its record fields) as a dict; {} when absent."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def merged_record(record: Any, hidden: Any) -> str | None:
    """A task's `record` JSON with its hidden fields (JSON from the ledger) joined back in."""
    if not isinstance(hidden, str) or not hidden:
        return record if isinstance(record, str) else None
    return json.dumps({**record_of(record), **record_of(hidden)}, ensure_ascii=False, sort_keys=True)


def answer_of(value: Any) -> dict[str, Any]:
    """An annotation's or consensus row's `answer` column (JSON text) as a dict; {} when absent."""
    return record_of(value)


def answer_json(answer: dict[str, Any] | None) -> str | None:
    """The canonical JSON text stored in an `answer` column."""
    return None if answer is None else json.dumps(answer, ensure_ascii=False, sort_keys=True)


class RecordTaskType(TaskType):
    """A type whose tasks are records (a prompt and responses) and whose answers are structured, not classes.

    Each annotation is read by `parse_answer` into a summary `label` (what agreement and gold compare: `A`, `4`,
    `2>1>3`) and an `answer` (the full structured answer, JSON in the tables). The interface is always the
    built-in one, since results are read by the control names it defines.
    """

    media = "record"
    uses_labels: ClassVar[bool] = False
    structured_answers: ClassVar[bool] = True
    # The Label Studio control names of this type's interface (every result item with one of them is read).
    control_names: ClassVar[frozenset[str]] = frozenset()
    hidden_record_fields: ClassVar[frozenset[str]] = HIDDEN_RECORD_FIELDS

    @property
    def data_key(self) -> str:
        """The task data field holding the prompt."""
        return "prompt"

    @property
    def record_data_keys(self) -> tuple[str, ...]:
        """The task data fields kept in the task table's `record` column."""
        return (*self.record_fields, *self.optional_record_fields)

    def check_spec(self, spec: ProjectSpec) -> None:
        """A record type reads results by its own control names, so its interface cannot be replaced."""
        if spec.label_config is not None:
            raise ValueError(f"label_config: task {self.name} uses its built-in interface; remove `label_config`")

    def label_config(self, labels: list[str]) -> str:
        """Record types build their interface from the spec's options: see `label_config_for`."""
        raise TypeError(f"task {self.name} builds its interface from the spec (label_config_for)")

    def owns_result(self, item: dict[str, Any], from_name: str) -> bool:
        """Every control of the built-in interface is part of the answer."""
        return item.get("from_name") in self.control_names

    def parse_result(
        self, items: list[dict[str, Any]], labels: set[str], width: int | None, height: int | None
    ) -> tuple[str | None, list[dict[str, Any]] | None, list[str]]:
        """Record types are read with the task's data: see `parse_answer`."""
        raise TypeError(f"task {self.name} reads annotations with parse_answer")

    def labels_used(self, rows: pd.DataFrame) -> pd.Series:
        """The summary label of each row (a side, a score, an order)."""
        return rows["label"].dropna()

    def gold_of(self, record: dict[str, Any]) -> str | None:
        """The record's known answer as a summary label comparable with `label`, or None."""
        value = record.get("gold")
        return None if value in (None, "") else str(value).strip()

    def agrees_with_gold(self, label: str | None, answer: dict[str, Any] | None, gold: str) -> bool:
        """Whether one answer counts as matching the record's known answer (the simulator's observed accuracy)."""
        return label == gold

    @property
    def consensus_columns(self) -> tuple[str, ...]:
        """The record, the summary label and the structured consensus answer."""
        return ("record", "label", "answer")
