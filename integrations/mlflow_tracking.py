"""MLflow tracking server behind one small client class."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from integrations.settings import MLflowSettings


class MLflowTracking:
    """Experiments, runs and artifacts on one MLflow tracking server."""

    def __init__(self, settings: MLflowSettings) -> None:
        self.settings = settings
        self.client = MlflowClient(tracking_uri=settings.tracking_uri)

    def ensure_experiment(self, name: str) -> str:
        """Experiment id for a name, creating the experiment if needed."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(name)

    def experiment_artifact_location(self, experiment_id: str) -> str:
        """Where the server stores this experiment's artifacts."""
        return self.client.get_experiment(experiment_id).artifact_location
