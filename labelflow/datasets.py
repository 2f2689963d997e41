"""Model trainers' entry points: pull a published dataset version and load it as a DataFrame."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from labelflow.integrations.resources import Resources
from labelflow.integrations.settings import MLflowSettings, S3Settings, load_settings
from labelflow.tasks.registry import DatasetRegistry, PulledDataset

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.integrations.mlflow_tracking import MLflowError
    from labelflow.tasks.ports import TrackingPort

# MLflow's own client settings this reader does not handle: with any of them set, reads go through MLflow's client.
CLIENT_ONLY_VARIABLES = (
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
)
READ_TIMEOUT_SECONDS = 15.0


def default_cache_dir() -> Path:
    """Where `load_dataset` keeps verified copies: $LABELFLOW_CACHE or ~/.cache/labelflow/datasets."""
    return Path(os.environ.get("LABELFLOW_CACHE") or Path.home() / ".cache" / "labelflow" / "datasets")


@dataclass
class _RunInfo:
    run_id: str


@dataclass
class _RunData:
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Run:
    """The part of an MLflow run the registry reads: `.info.run_id` and `.data.tags`."""

    info: _RunInfo
    data: _RunData


class MLflowRestReader:
    """The registry's reads (experiment by name, runs by tag) over MLflow's REST API, without importing MLflow.

    Importing MLflow's client takes seconds; listing or pulling a version needs two HTTP requests.
    """

    def __init__(self, settings: MLflowSettings) -> None:
        import httpx

        self.settings = settings
        headers, auth = {}, None
        if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
            headers["Authorization"] = f"Bearer {token}"
        elif os.environ.get("MLFLOW_TRACKING_USERNAME"):
            auth = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
        # verify: an https server's certificate is checked; plain http needs no CA bundle (loading one takes 0.1 s+)
        self.http = httpx.Client(
            verify=settings.tracking_uri.startswith("https://"),
            base_url=f"{settings.tracking_uri}/api/2.0/mlflow/",
            headers=headers,
            auth=auth,
            timeout=READ_TIMEOUT_SECONDS,
        )

    @staticmethod
    def usable_for(settings: MLflowSettings) -> bool:
        """Whether this reader can serve the server: an http(s) one, with no client-only setting in the environment."""
        return settings.tracking_uri.startswith(("http://", "https://")) and not any(
            os.environ.get(name) for name in CLIENT_ONLY_VARIABLES
        )

    def _call(self, action: str, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        """One API call's JSON; None when MLflow answers RESOURCE_DOES_NOT_EXIST."""
        import httpx

        where = f"MLflow {action} at {self.settings.tracking_uri}"
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _mlflow_error(f"{where}: cannot reach the server: {type(exc).__name__}: {exc}", True, None) from None
        if response.status_code == 404 and "RESOURCE_DOES_NOT_EXIST" in response.text:
            return None
        if response.status_code != 200:
            status = response.status_code
            text = " ".join(response.text.split())[:300]
            raise _mlflow_error(f"{where}: HTTP {status}: {text}", status >= 500 or status == 429, status)
        return cast(dict[str, Any], response.json())

    def experiment_id(self, name: str) -> str | None:
        """Id of an existing experiment, or None."""
        found = self._call("find experiment", "GET", "experiments/get-by-name", params={"experiment_name": name})
        return None if found is None else str(found["experiment"]["experiment_id"])

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        """An experiment's tags."""
        found = self._call("get experiment", "GET", "experiments/get", params={"experiment_id": experiment_id})
        tags = (found or {}).get("experiment", {}).get("tags", [])
        return {tag["key"]: tag.get("value", "") for tag in tags}

    def search_runs(self, experiment_id: str, filter_string: str = "", max_results: int = 1000) -> list[_Run]:
        """Every active run of an experiment matching a filter, following pages."""
        runs: list[_Run] = []
        token = None
        while True:
            body: dict[str, Any] = {
                "experiment_ids": [experiment_id],
                "filter": filter_string,
                "max_results": max_results,
                "run_view_type": "ACTIVE_ONLY",
            }
            if token:
                body["page_token"] = token
            page = self._call("search runs", "POST", "runs/search", json=body) or {}
            for run in page.get("runs", []):
                tags = {tag["key"]: tag.get("value", "") for tag in run.get("data", {}).get("tags", [])}
                runs.append(_Run(_RunInfo(run["info"]["run_id"]), _RunData(tags)))
            token = page.get("next_page_token")
            if not token:
                return runs

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The run's page in the MLflow UI."""
        return f"{self.settings.tracking_uri}/#/experiments/{experiment_id}/runs/{run_id}"


def _mlflow_error(message: str, transient: bool, status: int | None) -> MLflowError:
    """labelflow's MLflowError (MLflow is imported only now: a failure may take the time a success must not)."""
    from labelflow.integrations.mlflow_tracking import MLflowError

    return MLflowError(message, transient=transient, status=status)


def dataset_registry(s3: S3Settings | None = None, mlflow: MLflowSettings | None = None) -> DatasetRegistry:
    """The published datasets on the given (default: the configured) object store and MLflow server, for reading."""
    resources = Resources(s3=s3, mlflow=mlflow)
    settings = mlflow or load_settings(MLflowSettings)
    if MLflowRestReader.usable_for(settings):
        return DatasetRegistry(resources.store, cast("TrackingPort", MLflowRestReader(settings)))
    return DatasetRegistry(resources.store, resources.tracking)


def pull_dataset(
    name: str,
    version: int | str = "latest",
    out: Path | None = None,
    cache_dir: Path | None = None,
    s3: S3Settings | None = None,
    mlflow: MLflowSettings | None = None,
) -> PulledDataset:
    """Download one version into `out` (default: the cache), verify every SHA-256, return its files and manifest."""
    registry = dataset_registry(s3, mlflow)
    number = None if version == "latest" else int(str(version).removeprefix("v"))
    resolved = registry.resolve(name, number)
    folder = out or (cache_dir or default_cache_dir()) / name / f"v{resolved.version}"
    return registry.pull_version(resolved, Path(folder))


def load_dataset(
    name: str,
    version: int | str = "latest",
    cache_dir: Path | None = None,
    s3: S3Settings | None = None,
    mlflow: MLflowSettings | None = None,
) -> pd.DataFrame:
    """The consensus table of a published version; `df.attrs["labelflow"]` holds the version, files and manifest."""
    import pandas as pd

    pulled = pull_dataset(name, version, cache_dir=cache_dir, s3=s3, mlflow=mlflow)
    frame = pd.read_parquet(pulled.path("consensus"))
    frame.attrs["labelflow"] = {
        "name": pulled.name,
        "version": pulled.version,
        "folder": str(pulled.folder),
        "files": {role["role"]: str(pulled.files[role["path"]]) for role in pulled.manifest["files"]},
        "manifest": pulled.manifest,
    }
    return frame
