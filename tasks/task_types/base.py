"""What every task type provides: the contract each module in tasks/task_types/ implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec

Media = Literal["text", "image"]
# The name of the labeling control in every built-in template; pre-labels and collection read results by it.
FROM_NAME = "label"


def label_options(tag: str, labels: list[str]) -> str:
    """`<Choice value="..."/>` (or `<Label .../>`) lines for a label set, every value escaped as an XML attribute."""
    from xml.sax.saxutils import quoteattr  # imports urllib.request: only when a config is built

    return "".join(f"\n    <{tag} value={quoteattr(label)}/>" for label in labels)


class TaskType(ABC):
    """One kind of labeling work: its media, Label Studio interface, result parsing, judging and exports.

    A subclass is stateless; the registry (tasks/task_types/__init__.py) holds one instance of each. Heavy
    libraries (pandas, numpy) are imported inside methods, so reading a spec stays fast.
    """

    name: ClassVar[str]  # the spec's `task` value
    media: ClassVar[Media]  # what a task carries (decides the cleaning checks and the task's data field)
    export_file: ClassVar[str]  # the training export's file name in a dataset version
    expectation_suite: ClassVar[str]  # <table>.<suite>.json files in expectations/ hold this type's checks
    # Pre-label predictors (spec `prelabel.predictor`) that can produce results for this type.
    predictors: ClassVar[frozenset[str]] = frozenset()

    @property
    def data_key(self) -> str:
        """The task data field annotators see: `text` or `image`."""
        return self.media

    # --- spec and interface -----------------------------------------------------------------------------------

    def check_spec(self, spec: ProjectSpec) -> None:
        """Raise ValueError for spec settings this type cannot honour (field checks common to all are in spec.py)."""
        return None  # the built-in types need nothing beyond the common checks

    @abstractmethod
    def label_config(self, labels: list[str]) -> str:
        """The built-in Label Studio labeling-interface XML for a label set."""

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

    def gold_metrics(self, finished: pd.DataFrame) -> dict[str, Any]:
        """Project metrics measured on gold tasks (none unless the type scores gold)."""
        return {}

    @abstractmethod
    def labels_used(self, rows: pd.DataFrame) -> pd.Series:
        """One label per use (a class per task, or a label per region) in consensus or dataset rows."""

    # --- annotation simulation --------------------------------------------------------------------------------

    def simulated_result(self, from_name: str, to_name: str, label: str) -> list[dict[str, Any]] | None:
        """A Label Studio result a simulated annotator gives for a task whose true label is known; None: unsupported."""
        return None

    # --- dataset ----------------------------------------------------------------------------------------------

    @property
    @abstractmethod
    def consensus_columns(self) -> tuple[str, ...]:
        """Type-specific columns of a dataset's consensus table (`label` or `regions`, text or image size)."""

    @abstractmethod
    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """Write the training export of a version's consensus rows into `folder`; returns its path."""
