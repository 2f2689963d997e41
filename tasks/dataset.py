"""Dataset files for one published version: consensus, raw annotations, sources, a training export, a manifest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from labelflow.tasks.dataset_files import file_sha256
from labelflow.tasks.guidelines import GUIDELINES_FILE, version_counts
from labelflow.tasks.spec import ProjectSpec

MANIFEST_FORMAT = "labelflow-dataset/1"
CONSENSUS_COLUMNS = [
    "task_id",
    "source_uri",
    "content_sha256",
    "text",
    "image_width",
    "image_height",
    "audio_duration",
    "audio_sample_rate",
    "audio_channels",
    "record",
    "label",
    "answer",
    "regions",
    "confidence",
    "agreement",
    "annotations",
    "reviewed",
    "method",
    "model_version",  # the model whose label a `method: model` row carries (automated labeling)
    "gold_label",
]
# Columns every task type's consensus table has; the type adds its own (tasks/task_types, `consensus_columns`).
COMMON_CONSENSUS_COLUMNS = frozenset(CONSENSUS_COLUMNS) - {
    "text", "image_width", "image_height", "audio_duration", "audio_sample_rate", "audio_channels", "record", "label",
    "answer", "regions"
}  # fmt: skip


@dataclass(frozen=True)
class DatasetFile:
    """One file of a version: its name in the version folder, size and SHA-256."""

    path: str
    bytes: int
    sha256: str
    role: str

    def as_dict(self) -> dict[str, Any]:
        """Manifest entry."""
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256, "role": self.role}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, float) and np.isnan(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        return value.item()
    return value


def dataset_rows(published: pd.DataFrame, tasks: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """The consensus dataset: one row per published task with its text or image size, sorted by task id."""
    info = tasks.drop_duplicates("task_id").set_index("task_id")
    rows = published.copy()
    for column in (
        "text",
        "image_width",
        "image_height",
        "audio_duration",
        "audio_sample_rate",
        "audio_channels",
        "record",
    ):
        if column in rows.columns and column == "record":
            continue  # record types' consensus already holds it
        rows[column] = rows["task_id"].map(info[column]) if column in info.columns else None
    if "regions" not in rows.columns:
        rows["regions"] = None
    wanted = COMMON_CONSENSUS_COLUMNS | set(spec.task_type.consensus_columns)
    if "regions" in wanted:
        rows["regions"] = rows["regions"].map(lambda r: _plain(r) if r is not None else [])
    keep = [c for c in CONSENSUS_COLUMNS if c in rows.columns and c in wanted]
    return rows[keep].sort_values("task_id", kind="stable").reset_index(drop=True)


def raw_annotations(annotations: pd.DataFrame, task_ids: pd.Series, pseudonym_salt: str | None = None) -> pd.DataFrame:
    """The raw annotations behind the published tasks, sorted (collection bookkeeping columns dropped).

    With `pseudonym_salt` (the dataset's name, unless the spec sets `dataset.include_annotator_ids`), annotators
    appear under stable pseudonyms instead of their email and Label Studio id (`pseudonymous`).
    """
    rows = annotations[annotations["task_id"].isin(set(task_ids.tolist()))]
    rows = rows.drop(columns=["seq"], errors="ignore")
    if "guideline_version" in rows.columns and rows["guideline_version"].isna().all():
        # A project without guidelines publishes the same files (and content digest) as before stamps existed.
        rows = rows.drop(columns=["guideline_version"])
    rows = rows.sort_values(["task_id", "annotation_id"], kind="stable").reset_index(drop=True)
    return pseudonymous(rows, pseudonym_salt) if pseudonym_salt is not None else rows


def pseudonymous(rows: pd.DataFrame, salt: str) -> pd.DataFrame:
    """Annotators as `annotator-<12 hex>` and a 48-bit id: SHA-256 of the salt and their email (or id), so the same
    person keeps one pseudonym in every version of a dataset and different ones in different datasets.

    A pseudonym, not anonymity: whoever knows an email and the dataset's name can compute it.
    """
    if "annotator_email" not in rows.columns and "annotator_id" not in rows.columns:
        return rows
    emails = rows.get("annotator_email", pd.Series([None] * len(rows), index=rows.index))
    ids = rows.get("annotator_id", pd.Series([None] * len(rows), index=rows.index))
    who = [
        f"email:{str(email).strip().lower()}" if isinstance(email, str) and email else f"id:{user}"
        for email, user in zip(emails, ids, strict=True)
    ]
    digests = {name: hashlib.sha256(f"labelflow-pseudonym|{salt}|{name}".encode()).hexdigest() for name in set(who)}
    rows = rows.copy()
    known = pd.Series([user is not None and not pd.isna(user) for user in ids], index=rows.index)
    if "annotator_email" in rows.columns:
        rows["annotator_email"] = [f"annotator-{digests[name][:12]}" for name in who]
    if "annotator_id" in rows.columns:
        pseudo = pd.Series([int(digests[name][:12], 16) for name in who], index=rows.index, dtype="Int64")
        rows["annotator_id"] = pseudo.where(known, pd.NA).astype(rows["annotator_id"].dtype, errors="ignore")
    return rows


SOURCE_COLUMNS = ["task_id", "bucket", "key", "etag", "size", "sha256"]
# Tasks made from files of records also name the record: its 1-based place in the file and its own id; `sha256`
# is then the record's (record_sha256 over its mapped fields), not the file's.
RECORD_SOURCE_COLUMNS = [*SOURCE_COLUMNS, "record_index", "record_id"]


def source_rows(ledger: pd.DataFrame, task_ids: pd.Series, records: bool = False) -> pd.DataFrame:
    """The source objects (bucket, key, ETag, size, SHA-256), or records, each published task was made from."""
    columns = RECORD_SOURCE_COLUMNS if records else SOURCE_COLUMNS
    if ledger.empty:
        return pd.DataFrame(columns=columns)
    wanted = set(task_ids.tolist())
    rows = ledger[(ledger["status"] == "ingested") & ledger["task_id"].isin(wanted)]
    identity = ["bucket", "key", "etag", "record_index"] if records else ["bucket", "key", "etag"]
    rows = rows.sort_values(["task_id", "bucket", "key"], kind="stable").drop_duplicates(identity)
    types = {"task_id": "int64", "size": "int64"} | ({"record_index": "Int64"} if records else {})
    return rows.reindex(columns=columns).astype(types).reset_index(drop=True)


def has_nested_values(column: pd.Series) -> bool:
    """True for an object column holding lists, arrays or dicts (which need encoding before hashing)."""
    if column.dtype != object:
        return False
    values = column.dropna()
    return bool(len(values)) and values.map(lambda v: isinstance(v, list | tuple | dict | np.ndarray)).any()


def _frame_digest(frame: pd.DataFrame) -> bytes:
    """Order-sensitive content hash of a table that does not depend on the file format's encoding."""
    digest = hashlib.sha256(json.dumps(list(map(str, frame.columns))).encode())
    if len(frame):
        hashable = frame.copy()
        for column in hashable.columns:
            if has_nested_values(hashable[column]):
                hashable[column] = hashable[column].map(
                    lambda v: json.dumps(_plain(v), sort_keys=True, ensure_ascii=False, default=str)
                )
        digest.update(pd.util.hash_pandas_object(hashable, index=False).to_numpy().tobytes())
    return digest.digest()


def content_digest(consensus: pd.DataFrame, annotations: pd.DataFrame, sources: pd.DataFrame, spec: ProjectSpec) -> str:
    """SHA-256 over the dataset's content and label set: equal digests mean nothing a trainer uses changed."""
    digest = hashlib.sha256(f"{MANIFEST_FORMAT}|{spec.task}|{json.dumps(spec.labels, ensure_ascii=False)}".encode())
    for frame in (consensus, annotations, sources):
        digest.update(_frame_digest(frame))
    return digest.hexdigest()


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(None)  # no pandas/writer metadata that varies between runs
    pq.write_table(table, path, compression="zstd")


def write_training_export(rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
    """The task type's training format (JSONL, image list CSV, CoNLL (BIO), COCO, ...) in `folder`."""
    return spec.task_type.write_training_export(rows, spec, folder)


@dataclass
class BuiltDataset:
    """A version's files in a local folder, ready to upload, and its content digest."""

    folder: Path
    files: list[DatasetFile]
    digest: str
    rows: pd.DataFrame
    label_distribution: dict[str, int]
    sources: int
    guidelines: dict[str, Any] | None = None  # the shipped guideline file and the versions its labels were made under


def build_dataset(
    folder: Path,
    spec: ProjectSpec,
    published: pd.DataFrame,
    annotations: pd.DataFrame,
    tasks: pd.DataFrame,
    ledger: pd.DataFrame,
) -> BuiltDataset:
    """Write consensus.parquet, annotations.parquet, sources.parquet and the training export into `folder`."""
    rows = dataset_rows(published, tasks, spec)
    # Annotators are published under pseudonyms unless the spec asks for their identities.
    salt = spec.dataset.name if spec.dataset else spec.name
    include_ids = spec.dataset is not None and spec.dataset.include_annotator_ids
    raw = raw_annotations(annotations, rows["task_id"], None if include_ids else salt)
    sources = source_rows(ledger, rows["task_id"], records=spec.task_type.media == "record")
    digest = content_digest(rows, raw, sources, spec)
    written = {
        "consensus.parquet": ("consensus", rows),
        "annotations.parquet": ("annotations", raw),
        "sources.parquet": ("sources", sources),
    }
    for name, (_, frame) in written.items():
        _write_parquet(frame, folder / name)
    export = write_training_export(rows, spec, folder)
    roles = {name: role for name, (role, _) in written.items()} | {export.name: "training-export"}
    roles |= {name: f"training-export-{Path(name).stem}" for name in spec.task_type.extra_export_files}
    guidelines = None
    if spec.guidelines is not None:
        # The normalised text, so the file's SHA-256 in the manifest is the guideline version.
        (folder / GUIDELINES_FILE).write_bytes(spec.guidelines.text.encode("utf-8"))
        roles[GUIDELINES_FILE] = "guidelines"
        guidelines = {
            "file": GUIDELINES_FILE,
            "path": spec.guidelines.path,
            "version": spec.guidelines.sha256,
            "label_versions": version_counts(raw),
        }
    files = [
        DatasetFile(name, (folder / name).stat().st_size, file_sha256(folder / name), role)
        for name, role in roles.items()
    ]
    distribution = label_distribution(rows, spec)
    return BuiltDataset(folder, files, digest, rows, distribution, len(sources), guidelines)


def label_distribution(rows: pd.DataFrame, spec: ProjectSpec) -> dict[str, int]:
    """Rows per label: every spec label (zero included), or, for types without labels, each summary label used."""
    counts = spec.task_type.labels_used(rows).value_counts()
    if not spec.task_type.uses_labels:
        return {str(label): int(count) for label, count in sorted(counts.items(), key=lambda item: str(item[0]))}
    return {label: int(counts.get(label, 0)) for label in spec.labels}


def manifest_cost(cost: dict[str, Any], rows: int) -> dict[str, Any]:
    """The collect's cost summary (`quality.cost_per_annotation`) with the cost per row over the version's rows."""
    total = cost.get("total")
    per_row = float(total) / rows if isinstance(total, int | float) and rows else None
    return {**cost, "published_rows": rows, "per_published_row": per_row}


def manifest_automation(automation: dict[str, Any], rows: pd.DataFrame) -> dict[str, Any]:
    """What of the version is machine-made: its rows by method, and the machine rows' estimated accuracy."""
    methods = rows["method"].fillna("none").value_counts() if "method" in rows.columns else pd.Series(dtype=int)
    machine = int(methods.get("model", 0))
    keep = ("status", "reason", "model_version", "target_accuracy", "threshold", "audits_done", "audit_disagreements")
    return {
        **{key: automation.get(key) for key in keep},
        "rows_by_method": {str(method): int(n) for method, n in methods.items()},
        "machine_labeled_rows": machine,
        # The accuracy of the machine labels measured where people labeled too (calibration evidence and audits),
        # with its 90 % Wilson interval: the lower end is the one-sided 95 % bound compared with the target.
        "estimated_accuracy": automation.get("measured_accuracy") if machine else None,
        "accuracy_interval": [automation.get("accuracy_low"), automation.get("accuracy_high")] if machine else None,
    }


def manifest(
    name: str,
    version: int,
    built: BuiltDataset,
    spec: ProjectSpec,
    lineage: dict[str, Any],
    cost: dict[str, Any] | None = None,
    automation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The version's manifest: every file with size and SHA-256, content digest, counts, lineage and cost."""
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "digest": built.digest,
        "task": spec.task,
        "labels": spec.labels,
        "rows": len(built.rows),
        "label_distribution": built.label_distribution,
        "files": [f.as_dict() for f in built.files],
        "sources": {
            "file": "sources.parquet",
            "count": built.sources,
            "columns": RECORD_SOURCE_COLUMNS if spec.task_type.media == "record" else SOURCE_COLUMNS,
        },
        "lineage": lineage,
        # Guideline versions (SHA-256) of the published labels with their counts, and the shipped guidelines.md.
        **({"guidelines": built.guidelines} if built.guidelines is not None else {}),
        **({"cost": manifest_cost(cost, len(built.rows))} if cost is not None else {}),
        **({"automation": manifest_automation(automation, built.rows)} if automation is not None else {}),
    }
