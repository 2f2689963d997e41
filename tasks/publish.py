"""Register step: build a validated batch's dataset files and publish them as a new version, if anything changed."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from labelflow.integrations.mlflow_links import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    RUN_DESCRIPTION_TAG,
    experiment_runs_url,
    needs_model_training_kind,
    version_run_url,
)
from labelflow.tasks.collect import BatchRecord, BatchTables
from labelflow.tasks.dataset import BuiltDataset, build_dataset, manifest
from labelflow.tasks.ledger import IngestLedger
from labelflow.tasks.ports import ObjectStorePort, TrackingPort
from labelflow.tasks.registry import DatasetPublisher, DatasetRegistry, pipeline_revision
from labelflow.tasks.spec import ProjectSpec, S3Location
from labelflow.tasks.validate import ValidationSummary, publishable

METRIC_NAME = re.compile(r"[A-Za-z0-9_. /-]+")  # what MLflow accepts in a metric name
# The keys of a PublishResult's summary, in the order the run summary has always shown them.
RESULT_KEYS = (
    "dataset",
    "rows",
    "label_distribution",
    "digest",
    "published",
    "version",
    "reason",
    "location",
    "mlflow_url",
    "mlflow_versions_url",
    "version_conflicts",
)
# Labels a run description lists by name; more are summed up (a description is read on one screen).
DESCRIBED_LABELS = 12


@dataclass(frozen=True)
class PublishResult:
    """What registration did: a new version, or why none (nothing to publish, unchanged content, skipped)."""

    published: bool
    reason: str | None = None
    dataset: str | None = None
    rows: int | None = None
    label_distribution: dict[str, int] | None = None
    digest: str | None = None
    version: int | None = None
    location: str | None = None
    mlflow_url: str | None = None  # the version's run page
    mlflow_versions_url: str | None = None  # the runs table of every version
    version_conflicts: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The run summary's `dataset` entry: only what applies (no version when none exists, say)."""
        return {key: getattr(self, key) for key in RESULT_KEYS if key == "published" or getattr(self, key) is not None}


def spec_document(spec: ProjectSpec) -> tuple[bytes, str]:
    """The spec as YAML (every default made explicit) and its SHA-256."""
    text = yaml.safe_dump(spec.model_dump(mode="json"), allow_unicode=True, sort_keys=True).encode("utf-8")
    return text, hashlib.sha256(text).hexdigest()


def dataset_base(spec: ProjectSpec) -> S3Location:
    """Where the dataset's versions live (the spec says: `dataset.location`, or s3://labelflow-datasets/<name>)."""
    location = spec.dataset_location
    if location is None:
        raise ValueError("the spec has no `dataset` section: nothing to register")
    return location


def dataset_publisher(spec: ProjectSpec) -> DatasetPublisher:
    """The project publishing the spec's dataset: its slug (identity), name and `dataset.shared`."""
    assert spec.dataset is not None
    return DatasetPublisher(project=spec.slug, project_name=spec.name, shared=spec.dataset.shared)


def check_dataset_owner(registry: DatasetRegistry, spec: ProjectSpec) -> None:
    """Refuse, before any collecting, a spec whose dataset belongs to another project (publishing checks again)."""
    if spec.dataset is not None:
        registry.check_owner(spec.dataset.name, dataset_publisher(spec), dataset_base(spec))


def show_as_model_training(tracking: TrackingPort, experiment_id: str) -> None:
    """Tag a dataset's experiment (also one made by an older labelflow) as model training, unless it already is."""
    if needs_model_training_kind(tracking.experiment_tags(experiment_id)):
        tracking.set_experiment_tags(experiment_id, {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})


def mlflow_links(tracking: TrackingPort, experiment_id: str, run_id: str) -> dict[str, str]:
    """The version's run page and the runs table of every version, both opening MLflow's model-training pages."""
    uri = tracking.settings.tracking_uri
    return {
        "mlflow_url": version_run_url(uri, experiment_id, run_id),
        "mlflow_versions_url": experiment_runs_url(uri, experiment_id),
    }


def version_description(
    name: str,
    version: int,
    location: str,
    built: BuiltDataset,
    spec: ProjectSpec,
    spec_sha: str,
    batch: BatchRecord,
    validation: ValidationSummary,
) -> str:
    """The version run's description (markdown, MLflow's run note): what was published, from where, its validation."""
    size = sum(f.bytes for f in built.files)
    files = ", ".join(f"`{f.path}`" for f in built.files)
    shown = list(built.label_distribution.items())
    labels = ", ".join(f"{label} {count}" for label, count in shown[:DESCRIBED_LABELS])
    if len(shown) > DESCRIBED_LABELS:
        labels += f" and {len(shown) - DESCRIBED_LABELS} more labels"
    met = validation.evaluated - len(validation.failed)
    tables = ", ".join(f"{table} {rows} rows" for table, rows in validation.rows.items())
    verdict = "passed" if validation.success else "FAILED"
    # MLflow's run page shows the first lines and folds the rest: what was published, from where and the verdict first.
    return "\n".join(
        [
            f"**{name} version {version}**: {len(built.rows)} rows ({labels}). "
            f"Validation {verdict}: {met} of {validation.evaluated} expectations met ({tables}).",
            "",
            f"From Label Studio project {batch.project_id} ({batch.label_studio_url}), spec **{spec.name}** "
            f"(`{spec.slug}`, {spec.task}, sha256 `{spec_sha[:12]}`).",
            "",
            f"{len(built.files)} files ({files}; {size:,} bytes) at `{location}`, content digest `{built.digest}`. "
            f"Collection batch `{batch.batch_uri}`, {built.sources} source objects. Validation result "
            f"`{validation.result_uri}`, Data Docs `{validation.docs_index}` (`labelflow open SPEC docs` opens a copy).",
        ]
    )


def model_versions(annotations: pd.DataFrame, rows: pd.DataFrame) -> dict[str, list[str]]:
    """The models behind a version: those whose pre-labels annotators were shown, and those that labeled rows."""
    found: dict[str, list[str]] = {}
    if "prediction_model_version" in annotations.columns:
        shown = annotations.loc[annotations["task_id"].isin(rows["task_id"]), "prediction_model_version"]
        if shown.notna().any():
            found["prelabels_shown"] = sorted(shown.dropna().astype(str).unique().tolist())
    if "model_version" in rows.columns and rows["model_version"].notna().any():
        found["labeled_rows"] = sorted(rows["model_version"].dropna().astype(str).unique().tolist())
    return found


def automation_tags(automation: dict[str, Any]) -> dict[str, str]:
    """The MLflow run tags a trainer filters versions by: machine-labeled rows and their estimated accuracy."""
    interval = automation.get("accuracy_interval") or [None, None]
    values = {
        "labelflow.automation.status": automation.get("status"),
        "labelflow.automation.model_version": automation.get("model_version"),
        "labelflow.automation.machine_labeled_rows": automation.get("machine_labeled_rows"),
        "labelflow.automation.estimated_accuracy": automation.get("estimated_accuracy"),
        "labelflow.automation.accuracy_low": interval[0],
        "labelflow.automation.accuracy_high": interval[1],
    }
    return {key: (f"{value:.4f}" if isinstance(value, float) else str(value)) for key, value in values.items()
            if value is not None}  # fmt: skip


def _read_ledger(store: ObjectStorePort, spec: ProjectSpec) -> pd.DataFrame:
    return IngestLedger(store, spec.state_location).read_all().to_pandas()


def publish_dataset(
    store: ObjectStorePort,
    registry: DatasetRegistry,
    spec: ProjectSpec,
    tables: BatchTables,
    batch: BatchRecord,
    validation: ValidationSummary,
) -> PublishResult:
    """Publish the batch as version N+1 unless its content digest equals the latest version's."""
    if spec.dataset is None:
        raise ValueError("the spec has no `dataset` section: nothing to register")
    if not validation.success:
        raise ValueError("refusing to publish a batch that failed validation")
    name = spec.dataset.name
    publisher, base = dataset_publisher(spec), dataset_base(spec)
    registry.check_owner(name, publisher, base)  # refuse another project's dataset before anything is written
    published = publishable(tables.consensus)
    ledger = _read_ledger(store, spec)
    with tempfile.TemporaryDirectory(prefix="labelflow-dataset-") as scratch:
        built = build_dataset(Path(scratch), spec, published, tables.annotations, tables.tasks, ledger)
        content = {
            "dataset": name,
            "rows": len(built.rows),
            "label_distribution": built.label_distribution,
            "digest": built.digest,
        }
        ready = registry.versions(name)
        if built.rows.empty:
            return PublishResult(False, "no finished task with an unflagged consensus yet", **content)
        if ready and ready[-1].digest == built.digest:
            latest = ready[-1]
            show_as_model_training(registry.tracking, latest.experiment_id)
            return PublishResult(
                False,
                f"content unchanged since version {latest.version} (digest {built.digest[:12]})",
                **content,
                version=latest.version,
                location=latest.location,
                **mlflow_links(registry.tracking, latest.experiment_id, latest.run_id),
            )
        spec_yaml, spec_sha = spec_document(spec)
        revision = pipeline_revision()
        commit = revision.split("+git.", 1)[1] if "+git." in revision else "unknown"
        tags = {
            "labelflow.spec.name": spec.name,
            "labelflow.spec.sha256": spec_sha,
            "labelflow.task_type": spec.task,
            "labelflow.label_studio.project_id": str(batch.project_id),
            "labelflow.label_studio.url": str(batch.label_studio_url),
            "labelflow.collection.watermark": str(batch.watermark),
            "labelflow.collection.batch": str(batch.batch_uri),
            "labelflow.validation.success": str(validation.success).lower(),
            "labelflow.validation.result": str(validation.result_uri),
            "labelflow.validation.docs": str(validation.docs_index),
            "labelflow.version": revision,
            # Only a run from labelflow's own checkout knows its commit (an installed wheel does not).
            "labelflow.git.revision": commit,
            **({"mlflow.source.git.commit": commit} if commit != "unknown" else {}),
        }
        # The claim makes this the only publisher of its version; a failure removes what it wrote.
        with registry.publishing(name, built.digest, base, tags, publisher) as version:
            show_as_model_training(registry.tracking, version.experiment_id)
            description = version_description(
                name, version.version, version.location, built, spec, spec_sha, batch, validation
            )
            registry.tracking.set_tags(version.run_id, {RUN_DESCRIPTION_TAG: description})
            registry.upload(version, built)
            lineage = {
                "spec": {"name": spec.name, "sha256": spec_sha},
                "label_studio": {
                    "project_id": batch.project_id,
                    "url": batch.label_studio_url,
                    "tasks": int(built.rows["task_id"].nunique()),
                    "watermark": batch.watermark,
                },
                "collection_batch": batch.batch_uri,
                "source_locations": spec.source,
                "validation": {
                    "success": validation.success,
                    "result": validation.result_uri,
                    "docs": validation.docs_index,
                },
                "pipeline_revision": revision,
            }
            models = model_versions(tables.annotations, built.rows)
            if models:  # the pre-labels people saw and the models whose labels are published
                lineage["models"] = models
            automation = batch.quality.get("automation")
            document = manifest(
                name, version.version, built, spec, lineage, cost=batch.quality.get("cost"), automation=automation
            )
            if automation is not None:
                registry.tracking.set_tags(version.run_id, automation_tags(document["automation"]))
            # Suspected label errors kept out of this version until a review or new votes resolve them
            # (`quality.review_suspects`, tasks/label_errors.py); their rows are flagged, so not in `published`.
            label_errors = batch.quality.get("label_errors")
            if isinstance(label_errors, dict) and "held_back" in label_errors:
                document["held_back_suspects"] = int(label_errors["held_back"])
            quality = batch.quality
            metrics = {"rows": float(len(built.rows))}
            metrics |= {
                f"rows.{label}": float(n)
                for label, n in built.label_distribution.items()
                if METRIC_NAME.fullmatch(label)
            }
            for key in ("mean_task_agreement", "krippendorff_alpha", "fleiss_kappa", "mean_confidence"):
                if isinstance(quality.get(key), int | float):
                    metrics[key] = float(quality[key])
            artifacts = {
                "spec.yaml": spec_yaml,
                "validation.json": json.dumps(validation.as_dict(), indent=2, ensure_ascii=False, default=str).encode(),
                "label_distribution.json": json.dumps(built.label_distribution, ensure_ascii=False, indent=2).encode(),
            }
            params = {
                "task_type": spec.task,
                "labels": ",".join(spec.labels)[:500],
                "aggregation": spec.quality.aggregation,
            }
            registry.finish(version, document, built.rows, artifacts, params, metrics)
    return PublishResult(
        True,
        **content,
        version=version.version,
        location=version.location,
        **mlflow_links(registry.tracking, version.experiment_id, version.run_id),
        version_conflicts=version.claim.conflicts if version.claim else 0,
    )
