"""What every task type provides: the contract each module in tasks/task_types/ implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import random

    import pandas as pd
    from pydantic import BaseModel

    from labelflow.tasks.spec import ProjectSpec, RecordsSpec

# text: a task holds one text; image / audio: a task refers to one image or audio object, which Label Studio reads
# through its storage connection; record: a task holds a record's mapped fields (a prompt and responses, say), read
# from files of records.
Media = Literal["text", "image", "audio", "record"]
# Media a task only refers to (an s3:// URI): Label Studio resolves it through a storage connection.
STORED_MEDIA: frozenset[str] = frozenset({"image", "audio"})
# The name of the labeling control in every built-in template; pre-labels and collection read results by it.
FROM_NAME = "label"


def label_options(tag: str, labels: list[str]) -> str:
    """`<Choice value="..."/>` (or `<Label .../>`) lines for a label set, every value escaped as an XML attribute."""
    from xml.sax.saxutils import quoteattr  # imports urllib.request: only when a config is built

    return "".join(f"\n    <{tag} value={quoteattr(label)}/>" for label in labels)


class RecordRejected(ValueError):
    """A record a type cannot make a task of: ingest quarantines it with `reason` (`invalid_language`) and the message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TaskType(ABC):
    """One kind of labeling work: its media, Label Studio interface, result parsing, judging and exports.

    A subclass is stateless; the registry (tasks/task_types/__init__.py) holds one instance of each. Heavy
    libraries (pandas, numpy) are imported inside methods, so reading a spec stays fast.
    """

    name: ClassVar[str]  # the spec's `task` value
    media: ClassVar[Media]  # what a task carries (decides the cleaning checks and the task's data field)
    export_file: ClassVar[str]  # the training export's file name in a dataset version
    extra_export_files: ClassVar[tuple[str, ...]] = ()  # more training files the export writes (ranking's DPO pairs)
    expectation_suite: ClassVar[str]  # <table>.<suite>.json files in expectations/ hold this type's checks
    # Pre-label predictors (spec `prelabel.predictor`) that can produce results for this type.
    predictors: ClassVar[frozenset[str]] = frozenset()
    uses_labels: ClassVar[bool] = True  # annotators choose among the spec's `labels`
    # Task fields a records file must provide (`records.fields`), and those it may; empty: no record sources.
    record_fields: ClassVar[tuple[str, ...]] = ()
    optional_record_fields: ClassVar[tuple[str, ...]] = ()
    list_record_fields: ClassVar[frozenset[str]] = frozenset()  # fields holding several values (a list of paths)
    hidden_record_fields: ClassVar[frozenset[str]] = frozenset()  # record fields kept out of Label Studio
    options_model: ClassVar[type[BaseModel] | None] = None  # the type's own settings (spec `options:`)
    # Label Studio's project setting against empty Submits. A type whose answer is typed text turns it off: there
    # Submit stays disabled until the typed text is committed (Shift+Enter / Add), which annotators do not expect;
    # its `required` TextArea refuses an empty answer instead and submits text still being typed.
    refuse_empty_annotations: ClassVar[bool] = True
    # Answers are structured (a written text, a side, a score), read by `parse_answer` with the task's data into a
    # summary `label` and an `answer` (JSON); otherwise they are classes or regions, read by `parse_result`.
    structured_answers: ClassVar[bool] = False
    # One class per task that a classifier can predict: `labelflow train`, `automate`, uncertainty-first queues
    # and label-error detection work on the type (issue: model in the loop).
    model_in_the_loop: ClassVar[bool] = False

    @property
    def data_key(self) -> str:
        """The task data field annotators see: `text`, `image` or `audio`."""
        return self.media

    @property
    def stored_media(self) -> bool:
        """True when a task refers to an object that Label Studio reads through a storage connection."""
        return self.media in STORED_MEDIA

    # --- spec and interface -----------------------------------------------------------------------------------

    def check_spec(self, spec: ProjectSpec) -> None:
        """Raise ValueError for spec settings this type cannot honour (field checks common to all are in spec.py)."""
        return None  # the built-in types need nothing beyond the common checks

    def check_records(self, records: RecordsSpec | None) -> None:
        """Raise ValueError when the spec's `records` section does not give this type the fields it needs."""
        if records is None:
            if self.media == "record":
                raise ValueError(f"records: task {self.name} reads files of records; add a `records:` section")
            return
        if not self.record_fields:
            raise ValueError(f"records: task {self.name} does not read files of records")
        missing = [name for name in self.record_fields if name not in records.fields]
        if missing:
            raise ValueError(
                f"records.fields: task {self.name} needs {', '.join(self.record_fields)}; missing {', '.join(missing)}"
            )
        known = set(self.record_fields) | set(self.optional_record_fields)
        unknown = sorted(set(records.fields) - known)
        if unknown:
            raise ValueError(
                f"records.fields: task {self.name} has no field {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        for name, paths in records.fields.items():
            if isinstance(paths, list) and name not in self.list_record_fields:
                raise ValueError(f"records.fields.{name}: one field path expected, not a list")
            if isinstance(paths, str) and name in self.list_record_fields:
                raise ValueError(f"records.fields.{name}: a list of field paths expected")

    def parse_options(self, options: dict[str, Any]) -> Any:
        """The type's settings from the spec's `options:`; ValueError names the field."""
        if self.options_model is None:
            if options:
                raise ValueError(f"options: task {self.name} has no options")
            return None
        from pydantic import ValidationError

        from labelflow.tasks.spec import describe_error  # spec imports this module

        try:
            return self.options_model.model_validate(options)
        except ValidationError as exc:
            path, message = describe_error(exc.errors()[0])
            raise ValueError(f"options.{path}: {message}") from None

    @abstractmethod
    def label_config(self, labels: list[str]) -> str:
        """The built-in Label Studio labeling-interface XML for a label set."""

    def label_config_for(self, spec: ProjectSpec) -> str:
        """The built-in interface for a spec (types whose interface depends on `options:` override this)."""
        return self.label_config(spec.labels)

    def owns_result(self, item: dict[str, Any], from_name: str) -> bool:
        """True when a Label Studio result item belongs to this type's answer (by default: the labeling control's)."""
        return item.get("from_name") == from_name

    # --- records ----------------------------------------------------------------------------------------------

    def check_record(self, fields: dict[str, str | list[str]]) -> None:
        """Raise RecordRejected for a record whose mapped fields (hidden ones too) cannot make a task of this type."""
        return None  # the common checks (missing, empty, too long, undecodable) are made when the file is read

    def record_task_data(self, fields: dict[str, str | list[str]], spec: ProjectSpec) -> dict[str, Any]:
        """Label Studio task data shown for one record's mapped fields (a chat parsed back into messages, say)."""
        return dict(fields)

    # --- collected results -> table rows ----------------------------------------------------------------------

    @abstractmethod
    def parse_result(
        self, items: list[dict[str, Any]], labels: set[str], width: int | None, height: int | None
    ) -> tuple[str | None, list[dict[str, Any]] | None, list[str]]:
        """(class label, regions, problems) from one annotation's result items of the labeling control."""

    # --- judging ----------------------------------------------------------------------------------------------

    @abstractmethod
    def judge(
        self,
        consensus: pd.DataFrame,
        votes: pd.DataFrame,
        reviews: pd.DataFrame,
        spec: ProjectSpec,
        metrics: dict[str, Any],
    ) -> tuple[pd.DataFrame, dict[str, dict[Any, Any]]]:
        """Fill consensus label/regions, confidence, agreement, tie and method per task; (pairwise, annotator extras)."""

    @abstractmethod
    def score_annotator(
        self, on_finished: pd.DataFrame, gold_labels: pd.Series, finished: pd.DataFrame, spec: ProjectSpec
    ) -> tuple[float | None, float | None]:
        """(gold accuracy, agreement with consensus) of one annotator's usable rows on finished tasks.

        `gold_labels` is the gold label of each row's task (None where the task is not gold); `finished` is the
        consensus of finished tasks, indexed by task id.
        """

    def gold_metrics(self, finished: pd.DataFrame, spec: ProjectSpec) -> dict[str, Any]:
        """Project metrics measured on gold tasks (none unless the type scores gold)."""
        return {}

    @abstractmethod
    def labels_used(self, rows: pd.DataFrame) -> pd.Series:
        """One label per use (a class per task, or a label per region) in consensus or dataset rows."""

    def parse_answer(
        self, items: list[dict[str, Any]], data: dict[str, Any], spec: ProjectSpec
    ) -> tuple[str | None, dict[str, Any] | None, list[str]]:
        """(summary label, structured answer, problems) of one annotation, for types whose answer is not a class."""
        raise NotImplementedError(f"task {self.name} answers with classes or regions, read by parse_result")

    def validation_columns(self, frame: pd.DataFrame, table: str, spec: ProjectSpec) -> pd.DataFrame:
        """Derived columns this type's expectation suites check on the validated `annotations` or `consensus` rows."""
        return frame

    def spec_expectations(self, spec: ProjectSpec, table: str) -> list[tuple[str, dict[str, Any], str]]:
        """(expectation type, kwargs, notes) that follow from the spec's options, for one validated table."""
        return []

    # --- annotation simulation --------------------------------------------------------------------------------

    def simulated_result(self, from_name: str, to_name: str, label: str) -> list[dict[str, Any]] | None:
        """A Label Studio result a simulated annotator gives for a task whose true label is known; None: unsupported."""
        return None

    def simulated_answer(
        self, data: dict[str, Any], spec: ProjectSpec, accuracy: float, spammer: bool, rng: random.Random
    ) -> list[dict[str, Any]] | None:
        """A record task's simulated result: consistent with the record's `gold` with probability `accuracy`.

        None when the task has no known answer to simulate from (records without `gold`).
        """
        return None

    # --- dataset ----------------------------------------------------------------------------------------------

    @property
    @abstractmethod
    def consensus_columns(self) -> tuple[str, ...]:
        """Type-specific columns of a dataset's consensus table (`label` or `regions`, text or image size)."""

    @abstractmethod
    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """Write the training export of a version's consensus rows into `folder`; returns its path."""
