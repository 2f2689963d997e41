"""Validate steps: the tables as Great Expectations sees them, the spec's own expectations, and the gate."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelflow.integrations.great_expectations import BatchToValidate, ExpectationDefinition, ExpectationOutcome
from labelflow.integrations.object_store import content_type_of
from labelflow.tasks.ports import ObjectStorePort, ValidatorPort
from labelflow.tasks.spec import DEFAULT_EXPECTATIONS_DIR as DEFAULT_EXPECTATIONS_DIR  # re-exported: tests, benches
from labelflow.tasks.spec import ProjectSpec, S3Location

REGION_FIELDS = {
    "label": "region_label",
    "start": "span_start",
    "end": "span_end",
    "text": "span_text",
    "x": "box_x",
    "y": "box_y",
    "width": "box_width",
    "height": "box_height",
    "rotation": "box_rotation",
}
ID_COLUMNS = {"annotations": ["task_id", "annotation_id", "annotator_email"], "consensus": ["task_id", "source_uri"]}


class ValidationFailed(RuntimeError):
    """A batch did not meet its expectations; the message is the summary a person reads first."""

    def __init__(self, summary: ValidationSummary) -> None:
        super().__init__(summary.text())
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.summary,))


@dataclass
class ValidationSummary:
    """What one validation concluded and where the full result is kept."""

    success: bool
    evaluated: int
    failed: list[dict[str, Any]]
    rows: dict[str, int]
    result_uri: str | None = None
    docs_uri: str | None = None
    docs_index: str | None = None
    skipped: str | None = None
    suites: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)

    def text(self) -> str:
        """A few lines: which expectation failed, on how many rows, with examples."""
        if self.skipped:
            return f"validation skipped: {self.skipped}"
        head = (
            f"validation {'passed' if self.success else 'FAILED'}: "
            f"{self.evaluated - len(self.failed)} of {self.evaluated} expectations met "
            f"({', '.join(f'{name} {count} rows' for name, count in self.rows.items())})"
        )
        lines = [head]
        for failure in self.failed:
            count = failure.get("unexpected_count")
            where = f"{failure['batch']}.{failure['column']}" if failure.get("column") else failure["batch"]
            amount = f"{count} of {failure.get('element_count')} rows" if count is not None else "table-level"
            lines.append(f"- {where}: {failure['type']} ({failure['origin']}): {amount}. Guards: {failure['notes']}")
            if failure.get("exception"):
                lines.append(f"    error: {failure['exception']}")
            elif failure.get("examples"):
                lines.append(f"    e.g. {json.dumps(failure['examples'][:3], ensure_ascii=False, default=str)}")
            elif failure.get("observed") is not None:
                lines.append(f"    observed: {json.dumps(failure['observed'], ensure_ascii=False, default=str)[:300]}")
        if self.docs_index:
            lines.append(f"full result: {self.result_uri}  Data Docs: {self.docs_index}")
        return "\n".join(lines)


def _regions_exploded(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per region (span or box) and one row for each row without regions; `region_index` -1 marks the latter."""
    regions = frame["regions"] if "regions" in frame.columns else pd.Series([None] * len(frame), index=frame.index)
    has = regions.map(lambda r: r is not None and len(r) > 0).astype(bool)
    base = frame.drop(columns=["regions"], errors="ignore")
    plain = base[~has].assign(region_index=-1)
    if not has.any():
        result = plain
    else:
        exploded = base[has].assign(regions=regions[has]).explode("regions")
        exploded["region_index"] = exploded.groupby(level=0).cumcount()
        details = pd.DataFrame.from_records(
            [dict(r) if r is not None else {} for r in exploded["regions"]], index=exploded.index
        )
        details = details.reindex(columns=list(REGION_FIELDS)).rename(columns=REGION_FIELDS)
        exploded = pd.concat([exploded.drop(columns=["regions"]), details], axis=1)
        exploded["label"] = exploded["region_label"]
        result = pd.concat([plain, exploded], ignore_index=True)
    for column in REGION_FIELDS.values():
        if column not in result.columns:
            result[column] = np.nan if column.startswith(("box_", "span_s", "span_e")) else None
    return result.reset_index(drop=True)


def _add_task_context(frame: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """Columns the region checks compare against: text length, image size, derived box edges and span checks."""
    lookup = tasks.drop_duplicates("task_id").set_index("task_id")
    texts = frame["task_id"].map(lookup["text"]) if "text" in lookup.columns else pd.Series(None, index=frame.index)
    frame["text_length"] = texts.map(lambda t: len(t) if isinstance(t, str) else np.nan)
    for column in ("image_width", "image_height", "audio_duration", "audio_sample_rate", "audio_channels"):
        known = lookup[column] if column in lookup.columns else pd.Series(dtype=float)  # tables from before audio
        frame[column] = pd.to_numeric(frame["task_id"].map(known), errors="coerce")
    start = pd.to_numeric(frame["span_start"], errors="coerce")
    end = pd.to_numeric(frame["span_end"], errors="coerce")
    frame["span_length"] = end - start
    is_span = start.notna() & end.notna()
    matches = pd.Series(None, index=frame.index, dtype=object)
    for index in frame.index[is_span]:
        text, span = texts.at[index], frame.at[index, "span_text"]
        if isinstance(text, str) and isinstance(span, str):
            matches.at[index] = text[int(start.at[index]) : int(end.at[index])] == span
    frame["span_text_matches"] = matches
    x, y = frame["box_x"].astype(float), frame["box_y"].astype(float)
    width, height = frame["box_width"].astype(float), frame["box_height"].astype(float)
    overflow = pd.concat([-x, -y, x + width - frame["image_width"], y + height - frame["image_height"]], axis=1).max(
        axis=1, skipna=False
    )
    frame["box_overflow_px"] = overflow.clip(lower=0).where(x.notna())
    return frame


def annotation_frame(annotations: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """The annotation table as validated: one row per annotation region (or per annotation for classes)."""
    frame = _regions_exploded(annotations.drop(columns=["seq"], errors="ignore"))
    return _add_task_context(frame, tasks)


def publishable(consensus: pd.DataFrame) -> pd.DataFrame:
    """Finished tasks whose consensus is not flagged: the rows a dataset version contains."""
    keep = consensus["finished"].astype(bool) & ~consensus["flagged"].astype(bool)
    return consensus[keep].reset_index(drop=True)


def consensus_frame(published: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """The consensus dataset as validated: one row per consensus region (or per task for classes)."""
    media = ["text", "image_width", "image_height", "audio_duration", "audio_sample_rate", "audio_channels"]
    frame = _regions_exploded(published.drop(columns=media, errors="ignore"))
    return _add_task_context(frame, tasks)


def spec_expectations(spec: ProjectSpec, table: str) -> list[ExpectationDefinition]:
    """Expectations that follow from the spec (label set, overlap, agreement, rows per class), never hand-copied."""
    labels = list(spec.labels)
    found: list[ExpectationDefinition] = [
        ExpectationDefinition(kind, kwargs, notes, "spec")
        for kind, kwargs, notes in spec.task_type.spec_expectations(spec, table)
    ]
    if spec.task_type.uses_labels:
        found.append(
            ExpectationDefinition(
                "expect_column_values_to_be_in_set",
                {"column": "label", "value_set": labels},
                f"every {'annotated' if table == 'annotations' else 'consensus'} label is one of the spec's labels",
                "spec",
            )
        )
    if table == "consensus":
        condition: dict[str, Any] = {
            "type": "comparison",
            "column": {"name": "reviewed"},
            "operator": "==",
            "parameter": False,
        }
        if spec.automate is not None:  # machine labels (`method: model`) have no annotations and no agreement
            machine = {"type": "comparison", "column": {"name": "method"}, "operator": "!=", "parameter": "model"}
            condition = {"type": "and", "conditions": [condition, machine]}
        unreviewed = {"row_condition": condition}
        found += [
            ExpectationDefinition(
                "expect_column_values_to_be_between",
                {"column": "annotations", "min_value": spec.overlap, **unreviewed},
                f"every published task that no reviewer accepted has at least the spec's overlap ({spec.overlap}) annotations",
                "spec",
            ),
            ExpectationDefinition(
                "expect_column_values_to_be_between",
                {"column": "agreement", "min_value": spec.quality.min_agreement, "max_value": 1.0, **unreviewed},
                f"every published task that no reviewer accepted reached quality.min_agreement ({spec.quality.min_agreement})",
                "spec",
            ),
        ]
        minimum = spec.dataset.min_rows_per_class if spec.dataset else 0
        if minimum > 0 and spec.task_type.uses_labels:
            found.append(
                ExpectationDefinition(
                    "expect_column_value_counts_to_be_at_least",
                    {"column": "label", "value_set": labels, "min_count": minimum},
                    f"every class has at least dataset.min_rows_per_class ({minimum}) published rows",
                    "spec",
                )
            )
    return found


def batches_to_validate(
    spec: ProjectSpec,
    validator: ValidatorPort,
    annotations: pd.DataFrame,
    consensus: pd.DataFrame,
    tasks: pd.DataFrame,
) -> list[BatchToValidate]:
    """The annotation table and the consensus dataset, each with its file suites and the spec's expectations."""
    return [
        BatchToValidate(
            "annotations",
            spec.task_type.validation_columns(annotation_frame(annotations, tasks), "annotations", spec),
            validator.suite_for("annotations", spec.task_type.expectation_suite)
            + spec_expectations(spec, "annotations"),
            ID_COLUMNS["annotations"],
            project=spec.slug,
        ),
        BatchToValidate(
            "consensus",
            spec.task_type.validation_columns(consensus_frame(publishable(consensus), tasks), "consensus", spec),
            validator.suite_for("consensus", spec.task_type.expectation_suite) + spec_expectations(spec, "consensus"),
            ID_COLUMNS["consensus"],
            project=spec.slug,
        ),
    ]


def summarize(
    outcomes: list[ExpectationOutcome], rows: dict[str, int], suites: dict[str, list[str]]
) -> ValidationSummary:
    """The summary of a validation run's outcomes."""
    failed = [asdict(o) for o in outcomes if not o.success]
    return ValidationSummary(success=not failed, evaluated=len(outcomes), failed=failed, rows=rows, suites=suites)


def docs_run_name(spec: ProjectSpec, run_name: str) -> str:
    """The run name Data Docs show: the project's slug and the collect run (both safe in a path)."""
    return f"{spec.slug}-{run_name}"


def run_validation(
    store: ObjectStorePort,
    spec: ProjectSpec,
    validator: ValidatorPort,
    annotations: pd.DataFrame,
    consensus: pd.DataFrame,
    tasks: pd.DataFrame,
    run_name: str,
) -> ValidationSummary:
    """Validate a collected batch; keep the JSON result and offline Data Docs in the object store either way."""
    batches = batches_to_validate(spec, validator, annotations, consensus, tasks)
    for batch in batches:  # Data Docs list the run under the project and its collect run
        batch.run_name = docs_run_name(spec, run_name)
    rows = {b.name: len(b.frame) for b in batches}
    suites = {b.name: sorted({d.origin for d in b.expectations}) for b in batches}
    if rows["annotations"] == 0:
        return ValidationSummary(
            success=True, evaluated=0, failed=[], rows=rows, suites=suites, skipped="no annotations yet"
        )
    docs = Path(tempfile.mkdtemp(prefix="labelflow-datadocs-"))
    try:
        run = validator.validate(batches, docs_dir=docs)
        summary = summarize(run.outcomes, rows, suites)
        state: S3Location = spec.state_location
        base = state.join("validation", run_name)
        payload = {"summary": summary.as_dict(), "results": run.results}
        store.put_bytes(
            state.bucket,
            f"{base}/result.json",
            json.dumps(payload, indent=2, ensure_ascii=False, default=str).encode("utf-8"),
            "application/json",
        )
        for path in sorted(p for p in docs.rglob("*") if p.is_file()):
            key = f"{base}/docs/{path.relative_to(docs).as_posix()}"
            store.put_bytes(state.bucket, key, path.read_bytes(), content_type_of(path))
        summary.result_uri = f"s3://{state.bucket}/{base}/result.json"
        summary.docs_uri = f"s3://{state.bucket}/{base}/docs/"
        summary.docs_index = f"s3://{state.bucket}/{base}/docs/index.html"
        return summary
    finally:
        shutil.rmtree(docs, ignore_errors=True)
