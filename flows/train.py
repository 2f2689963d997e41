"""Train flow: a published dataset version -> a baseline classifier logged and registered in MLflow."""

from __future__ import annotations

from typing import Any

from prefect import flow

from labelflow.flows.steps import PrefectSteps, StepRunner
from labelflow.integrations.resources import Resources
from labelflow.tasks.ports import ClientsPort
from labelflow.tasks.prelabel import object_reader
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.spec import ProjectSpec, load_spec
from labelflow.tasks.training import log_baseline, pull_training_table, train_baseline, trainable_dataset

TRAIN_TIMEOUT_SECONDS = 3 * 3600


@flow(name="labelflow-train", timeout_seconds=TRAIN_TIMEOUT_SECONDS, persist_result=True)
def train(spec_path: str, version: int | None = None) -> dict[str, Any]:
    """Train the spec's baseline on a published version (the latest when `version` is None), log and register it."""
    return train_spec(load_spec(spec_path), version)


def train_spec(
    spec: ProjectSpec, version: int | None = None, clients: ClientsPort | None = None, steps: StepRunner | None = None
) -> dict[str, Any]:
    """The train stage for a loaded spec: pull, train (held-out accuracy, then on every row), log and register."""
    trainable_dataset(spec)  # a spec without a dataset, or a type without a baseline, fails before any server call
    steps = steps or PrefectSteps()
    clients = clients or Resources.from_settings()
    registry = DatasetRegistry(clients.store, clients.tracking)
    dataset, frame = steps(pull_training_table, registry, spec, version)
    steps.log.info("training on %s v%d: %d rows", dataset.name, dataset.version, len(frame))
    # Not retried as a whole: training is deterministic, and only reading objects talks to a server.
    trained = steps.once(train_baseline, spec, frame, object_reader(clients.store))
    registered = steps.once(log_baseline, clients.tracking, spec, dataset, frame, trained)
    summary = {
        "project": spec.name,
        "dataset": dataset.name,
        "dataset_version": dataset.version,
        "model_uri": registered.model_uri,
        "model_name": registered.model_name,
        "model_version": registered.model_version,
        "media": trained.model.media,
        "classes": trained.model.classes,
        "rows_per_class": trained.class_counts,
        "train_rows": trained.train_rows,
        "holdout_rows": trained.holdout_rows,
        "holdout_accuracy": round(trained.accuracy, 4),
        "run_url": registered.run_url,
        "model_url": registered.model_url,
    }
    steps.artifact(
        f"train-{spec.slug}",
        f"# Baseline for {spec.name}\n\n`{registered.model_uri}` trained on {dataset.name} v{dataset.version}: "
        f"held-out accuracy {trained.accuracy:.1%} on {trained.holdout_rows} rows ({trained.train_rows} to learn "
        f"from), then refitted on all of them.\n\nMLflow run: {registered.run_url}",
        f"labelflow baseline for {spec.name}",
    )
    return summary
