"""MLflow tracking server behind one small client class."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import DatasetInput, InputTag, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from integrations.settings import MLflowSettings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _listed(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


class MLflowError(RuntimeError):
    """The tracking server refused or could not be reached; the message says which call."""


class MLflowTracking:
    """Experiments, runs, tags, artifacts and dataset inputs on one MLflow tracking server."""

    def __init__(self, settings: MLflowSettings) -> None:
        self.settings = settings
        self.client = MlflowClient(tracking_uri=settings.tracking_uri)

    def ensure_experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        """Experiment id for a name, creating the experiment if needed."""
        try:
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            return self.client.create_experiment(name, tags=tags)
        except MlflowException as exc:
            raise MLflowError(f"MLflow experiment {name!r} at {self.settings.tracking_uri}: {exc.message}") from exc

    def experiment_id(self, name: str) -> str | None:
        """Id of an existing experiment, or None."""
        experiment = self.client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment is not None else None

    def experiment_artifact_location(self, experiment_id: str) -> str:
        """Where the server stores this experiment's artifacts."""
        return self.client.get_experiment(experiment_id).artifact_location

    def search_runs(self, experiment_id: str, filter_string: str = "", max_results: int = 1000) -> list[Run]:
        """Every active run of an experiment matching a filter, following pages."""
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=filter_string, max_results=max_results, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def start_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        """Create a run (status RUNNING) with tags; return its id."""
        return self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set several tags on a run."""
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def log_params_and_metrics(self, run_id: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Log parameters and numeric metrics."""
        for key, value in params.items():
            self.client.log_param(run_id, key, value)
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value))

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload one local file as a run artifact."""
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_dataset_input(
        self, run_id: str, frame: pd.DataFrame, name: str, source: str, digest: str, context: str = "training"
    ) -> None:
        """Record a table as the run's dataset input (`mlflow.log_input`): name, digest, schema, profile, source."""
        import mlflow.data

        # MLflow infers an object column's type value by value; typed string columns are read from the dtype.
        typed = frame.copy()
        for column in typed.columns:
            if typed[column].dtype == object:
                values = typed[column].dropna()
                nested = values.map(lambda v: not isinstance(v, str)).any() if len(values) else False
                typed[column] = (
                    typed[column].map(lambda v: None if v is None else json.dumps(v, default=_listed))
                    if nested
                    else typed[column]
                ).astype("string")
        dataset = mlflow.data.from_pandas(typed, source=source, name=name, digest=digest)
        entity = DatasetInput(dataset=dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
        self.client.log_inputs(run_id, datasets=[entity])

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        """End a run with a status (FINISHED, FAILED, KILLED)."""
        self.client.set_terminated(run_id, status=status)

    def delete_run(self, run_id: str) -> None:
        """Move a run to the deleted lifecycle stage (hidden from searches and the UI)."""
        self.client.delete_run(run_id)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The run's page in the MLflow UI."""
        return f"{self.settings.tracking_uri}/#/experiments/{experiment_id}/runs/{run_id}"
