"""Links to the MLflow UI pages of a dataset's versions, and the experiment tags that shape those pages.

Kept free of MLflow imports (importing MLflow takes seconds): the CLI builds these links for read-only commands.
`labelflow.integrations.mlflow_tracking` re-exports everything here.
"""

from __future__ import annotations

from urllib.parse import quote

# MLflow 3's UI shows an experiment either as a GenAI app (traces, overview dashboards) or as model training (the runs
# table). The 3.17 UI takes that choice from the link's `workflowType` query parameter, else from the browser's last
# choice, GenAI by default: a bare `#/experiments/N` link opens an empty GenAI dashboard. Earlier MLflow 3 UIs read the
# experiment's `mlflow.experimentKind` tag instead, so dataset experiments carry that tag as well.
WORKFLOW_PARAMETER = "workflowType=machine_learning"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# Kinds MLflow's UI shows as model training (its ExperimentKind values); any other value, or none, is replaced.
MODEL_TRAINING_KINDS = frozenset(
    {MODEL_TRAINING_KIND, "custom_model_development_inferred", "finetuning", "forecasting", "classification"}
    | {"regression", "automl"}
)
# The run's description, as MLflow's UI shows and edits it (markdown).
RUN_DESCRIPTION_TAG = "mlflow.note.content"


def _base(tracking_uri: str) -> str:
    return tracking_uri.rstrip("/")


def experiment_runs_url(tracking_uri: str, experiment_id: str) -> str:
    """The runs table of a dataset's experiment (one row per version) in the MLflow UI."""
    return (
        f"{_base(tracking_uri)}/#/experiments/{quote(str(experiment_id), safe='')}/runs"
        f"?{WORKFLOW_PARAMETER}&compareRunsMode=TABLE"
    )


def version_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The page of one version's run in the MLflow UI, with the model-training navigation around it."""
    experiment, run = quote(str(experiment_id), safe=""), quote(str(run_id), safe="")
    return f"{_base(tracking_uri)}/#/experiments/{experiment}/runs/{run}?{WORKFLOW_PARAMETER}"


def needs_model_training_kind(experiment_tags: dict[str, str]) -> bool:
    """Whether an experiment's tags lack a model-training kind (so the UI would not open it on its runs)."""
    return experiment_tags.get(EXPERIMENT_KIND_TAG) not in MODEL_TRAINING_KINDS
