"""MLflow tracking server behind one small client class."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import requests
from mlflow.entities import DatasetInput, InputTag, Run
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES
from mlflow.exceptions import MlflowException, RestException
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from labelflow.integrations.errors import AdapterError
from labelflow.integrations.mlflow_links import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    RUN_DESCRIPTION_TAG,
    experiment_runs_url,
    needs_model_training_kind,
    version_run_url,
)
from labelflow.integrations.settings import MLflowSettings

__all__ = [
    "EXPERIMENT_KIND_TAG",
    "MODEL_TRAINING_KIND",
    "RUN_DESCRIPTION_TAG",
    "LoadedModel",
    "MLflowError",
    "MLflowTracking",
    "dataset_schema",
    "experiment_runs_url",
    "mlflow_error",
    "needs_model_training_kind",
    "version_run_url",
]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


# MLflow's client repeats a failed call 7 times with backoff factor 2 and waits 120 s per try: about 4 minutes
# before a down server is reported. The flows' task retries already ride out outages, so one MLflow call gives up
# within seconds. MLflow reads these per request; values an operator sets in the environment win.
HTTP_REQUEST_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    # MLflow prints "View experiment at: .../#/experiments/N" when a run ends: a link that opens MLflow 3's GenAI
    # pages, on stdout. labelflow prints its own links to the runs table (mlflow_links).
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # A logged model must not depend on the directory it was logged from: without this, MLflow copies the current
    # directory's uv.lock and pyproject.toml (labelflow's own, in a checkout) into every model.
    "MLFLOW_UV_AUTO_DETECT": "false",
    # Loading a model downloads its artifacts: no progress bar on stderr for a few small files.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# The useful end of urllib3's long "Max retries exceeded with url: ... (Caused by ...)" messages.
_TRANSPORT_REASON = re.compile(r"\[Errno -?\d+\][^'\"()]*|too many \d+ error responses|timed out")
# MLflow's registered-model URIs: models:/<name>/<version>, models:/<name>/latest, models:/<name>@<alias>.
_MODEL_URI = re.compile(r"^models:/([^/\s@]+)(?:/([^/\s]+)|@([^/\s]+))$")
# What a logged pyfunc model needs installed to be loaded (given, so MLflow does not infer them in a subprocess).
MODEL_REQUIREMENTS = ("scikit-learn", "pandas", "numpy", "pillow", "soundfile")
ReturnT = TypeVar("ReturnT")


class MLflowError(AdapterError):
    """The tracking server refused or could not be reached; the message says which call and whether a retry helps."""

    def __init__(self, message: str, transient: bool | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self._transient = transient
        self.status = status

    @property
    def transient(self) -> bool:
        """Whether retrying can help: as given, else judged from the MLflow or HTTP error this was raised from."""
        if self._transient is not None:
            return self._transient
        cause = self.__cause__
        return isinstance(cause, MlflowException | requests.RequestException) and mlflow_error("", "", cause).transient


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _transient_status(status: int | None) -> bool:
    return status is not None and (status >= 500 or status == 429)


def mlflow_error(action: str, tracking_uri: str, exc: Exception) -> MLflowError:
    """A one-line MLflowError for an MLflow or HTTP failure: unreachable, timeouts, 5xx and 429 are transient."""
    where = f"MLflow {action} at {tracking_uri}"
    retried = f" (retried {MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()} times)"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:  # artifact uploads and downloads
        status = exc.response.status_code
        suffix = retried if _transient_status(status) else ""
        message = f"{where}: HTTP {status}: {_one_line(exc.response.text or str(exc))}{suffix}"
        return MLflowError(message, transient=_transient_status(status), status=status)
    if isinstance(exc, requests.RequestException):
        return MLflowError(f"{where}: cannot reach the server: {_transport_reason(str(exc))}{retried}", transient=True)
    if isinstance(exc, MlflowException):
        message = str(exc.message)
        if not isinstance(exc, RestException) and message.startswith("API request to") and " failed with " in message:
            reason = _transport_reason(message)  # MLflow's wrapper around a connection error or a timeout
            return MLflowError(f"{where}: cannot reach the server: {reason}{retried}", transient=True)
        status = exc.get_http_status_code()
        suffix = retried if _transient_status(status) else ""
        return MLflowError(
            f"{where}: HTTP {status} {exc.error_code}: {_one_line(message)}{suffix}",
            transient=_transient_status(status),
            status=status,
        )
    return MLflowError(f"{where}: {type(exc).__name__}: {_one_line(str(exc))}", transient=False)


def _transport_reason(message: str) -> str:
    found = _TRANSPORT_REASON.search(message)
    return found.group(0).strip() if found else _one_line(message, 200)


def dataset_schema(frame: pd.DataFrame) -> Any:
    """MLflow's column schema of a published table, read from its dtypes; a column with missing values is optional.

    Integer columns are `long` (64-bit) or `integer`; nested values (lists, dicts), text and anything else are strings.
    """
    from mlflow.types import ColSpec, DataType, Schema

    columns = []
    for column_name, column in frame.items():
        dtype = column.dtype
        if pd.api.types.is_bool_dtype(dtype):
            kind = DataType.boolean
        elif pd.api.types.is_integer_dtype(dtype):
            kind = DataType.long if dtype.itemsize == 8 else DataType.integer
        elif pd.api.types.is_float_dtype(dtype):
            kind = DataType.double if dtype.itemsize == 8 else DataType.float
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            kind = DataType.datetime
        else:
            kind = DataType.string
        columns.append(ColSpec(kind, str(column_name), required=not bool(column.isna().any())))
    return Schema(columns)


def _reported(action: str) -> Callable[[Callable[..., ReturnT]], Callable[..., ReturnT]]:
    """Method decorator: MLflow's and requests' exceptions leave as one MLflowError saying what failed."""

    def decorate(method: Callable[..., ReturnT]) -> Callable[..., ReturnT]:
        @functools.wraps(method)
        def reporting(self: MLflowTracking, *args: Any, **kwargs: Any) -> ReturnT:
            try:
                return method(self, *args, **kwargs)
            except (MlflowException, requests.RequestException) as exc:
                raise mlflow_error(action, self.settings.tracking_uri, exc) from exc

        return reporting

    return decorate


class MLflowTracking:
    """Experiments, runs, tags, artifacts and dataset inputs on one MLflow tracking server."""

    def __init__(self, settings: MLflowSettings) -> None:
        self.settings = settings
        for name, value in HTTP_REQUEST_SETTINGS.items():
            os.environ.setdefault(name, value)
        self.client = MlflowClient(tracking_uri=settings.tracking_uri)

    @_reported("ensure experiment")
    def ensure_experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        """Experiment id for a name, creating the experiment if needed."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND, **(tags or {})})

    @_reported("find experiment")
    def experiment_id(self, name: str) -> str | None:
        """Id of an existing experiment, or None."""
        experiment = self.client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment is not None else None

    def create_experiment_once(self, name: str, tags: dict[str, str]) -> tuple[str, bool]:
        """(experiment id, True) when this call created the experiment with `tags`; (id, False) when it existed.

        The server's unique experiment name makes this atomic: of concurrent callers exactly one gets True.
        """
        from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

        try:
            existing = self.client.get_experiment_by_name(name)
            if existing is not None:
                return existing.experiment_id, False
            try:  # every experiment labelflow creates holds runs: MLflow's UI shows it as model training
                created = self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND, **tags})
                return created, True
            except MlflowException as exc:
                if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                    raise
            existing = self.client.get_experiment_by_name(name)
            if existing is None:
                raise MlflowException(f"experiment {name!r} was reported to exist but is not found")
            return existing.experiment_id, False
        except MlflowException as exc:
            raise MLflowError(f"MLflow experiment {name!r} at {self.settings.tracking_uri}: {exc.message}") from exc

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        """An experiment's tags."""
        try:
            return dict(self.client.get_experiment(experiment_id).tags)
        except MlflowException as exc:
            raise MLflowError(
                f"MLflow experiment {experiment_id} at {self.settings.tracking_uri}: {exc.message}"
            ) from exc

    def set_experiment_tags(self, experiment_id: str, tags: dict[str, str]) -> None:
        """Set several tags on an experiment."""
        try:
            for key, value in tags.items():
                self.client.set_experiment_tag(experiment_id, key, value)
        except MlflowException as exc:
            raise MLflowError(
                f"MLflow experiment {experiment_id} at {self.settings.tracking_uri}: {exc.message}"
            ) from exc

    @_reported("experiment artifact location")
    def experiment_artifact_location(self, experiment_id: str) -> str:
        """Where the server stores this experiment's artifacts."""
        return self.client.get_experiment(experiment_id).artifact_location

    @_reported("search runs")
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

    @_reported("start run")
    def start_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        """Create a run (status RUNNING) with tags; return its id."""
        return self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id

    @_reported("set run tags")
    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set several tags on a run."""
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    @_reported("log params and metrics")
    def log_params_and_metrics(self, run_id: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Log parameters and numeric metrics."""
        for key, value in params.items():
            self.client.log_param(run_id, key, value)
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value))

    @_reported("log artifact")
    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload one local file as a run artifact."""
        self.client.log_artifact(run_id, str(path), artifact_path)

    @_reported("log dataset input")
    def log_dataset_input(
        self, run_id: str, frame: pd.DataFrame, name: str, source: str, digest: str, context: str = "training"
    ) -> None:
        """Record a table as the run's dataset input (`mlflow.log_input`): name, digest, schema, profile, source."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.entities import Dataset

        # The schema is given, not left to MLflow's inference (which warns about every integer column at each publish).
        resolved = resolve_dataset_source(source)
        dataset = Dataset(
            name=name,
            digest=digest,
            source_type=resolved._get_source_type(),
            source=resolved.to_json(),
            schema=json.dumps({"mlflow_colspec": dataset_schema(frame).to_dict()}),
            profile=json.dumps({"num_rows": len(frame), "num_elements": int(frame.size)}),
        )
        entity = DatasetInput(dataset=dataset, tags=[InputTag("mlflow.data.context", context)])
        self.client.log_inputs(run_id, datasets=[entity])

    @_reported("finish run")
    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        """End a run with a status (FINISHED, FAILED, KILLED)."""
        self.client.set_terminated(run_id, status=status)

    @_reported("delete run")
    def delete_run(self, run_id: str) -> None:
        """Move a run to the deleted lifecycle stage (hidden from searches and the UI)."""
        self.client.delete_run(run_id)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The run's page in the MLflow UI (with the model-training navigation)."""
        return version_run_url(self.settings.tracking_uri, experiment_id, run_id)

    def experiment_url(self, experiment_id: str) -> str:
        """The experiment's runs table in the MLflow UI."""
        return experiment_runs_url(self.settings.tracking_uri, experiment_id)

    # --- registered models ---------------------------------------------------------------------------------

    def _model_error(self, uri: str, exc: MlflowException) -> MLflowError:
        """A model the registry does not have is a plain one-line refusal; anything else is an MLflow failure."""
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or exc.get_http_status_code() == 404:
            return MLflowError(
                f"MLflow at {self.settings.tracking_uri} has no model {uri}: {_one_line(str(exc.message), 200)}",
                transient=False,
                status=404,
            )
        return mlflow_error(f"model {uri}", self.settings.tracking_uri, exc)

    def resolve_model_uri(self, uri: str) -> tuple[str, str]:
        """(registered model name, version number) of models:/<name>/<version>, models:/<name>/latest or
        models:/<name>@<alias>; MLflowError when the registry has no such model, version or alias."""
        found = _MODEL_URI.match(uri)
        if found is None:
            raise MLflowError(
                f"{uri!r} is not a registered model's URI: models:/<name>/<version>, models:/<name>@<alias> "
                "or models:/<name>/latest",
                transient=False,
            )
        name, version, alias = found.groups()
        try:
            if alias is not None:
                return name, str(self.client.get_model_version_by_alias(name, alias).version)
            if version == "latest":
                self.client.get_registered_model(name)  # RESOURCE_DOES_NOT_EXIST when no model has that name
                quoted = f'"{name}"' if "'" in name else f"'{name}'"
                versions = self.client.search_model_versions(f"name = {quoted}")
                if not versions:
                    raise MLflowError(
                        f"MLflow at {self.settings.tracking_uri} has no version of model {name!r} ({uri})",
                        transient=False,
                        status=404,
                    )
                return name, str(max(int(v.version) for v in versions))
            if not version.isdigit():
                raise MLflowError(f"{uri!r}: a model version is a number, 'latest', or @<alias>", transient=False)
            return name, str(self.client.get_model_version(name, version).version)
        except MlflowException as exc:
            if alias is not None and "alias" in str(exc.message) and "not found" in str(exc.message):
                raise MLflowError(
                    f"MLflow at {self.settings.tracking_uri} has no model {uri}: model {name!r} has no alias {alias!r}",
                    transient=False,
                    status=404,
                ) from exc
            raise self._model_error(uri, exc) from exc
        except requests.RequestException as exc:
            raise mlflow_error(f"model {uri}", self.settings.tracking_uri, exc) from exc

    def load_model(self, name: str, version: str) -> LoadedModel:
        """A registered version as a pyfunc model, with the metadata it was logged with."""
        import mlflow.pyfunc
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        uri = f"models:/{name}/{version}"
        try:
            with _use_tracking_uri(self.settings.tracking_uri):
                model = mlflow.pyfunc.load_model(uri)
        except MlflowException as exc:
            raise self._model_error(uri, exc) from exc
        except requests.RequestException as exc:
            raise mlflow_error(f"load model {uri}", self.settings.tracking_uri, exc) from exc
        except Exception as exc:  # unpickling a model whose code is not installed here, a damaged artifact
            raise MLflowError(f"cannot load {uri}: {type(exc).__name__}: {_one_line(str(exc), 200)}") from exc
        outputs = model.metadata.get_output_schema()
        columns = list(outputs.input_names()) if outputs is not None and outputs.has_input_names() else None
        return LoadedModel(uri, dict(model.metadata.metadata or {}), columns, model)

    @_reported("log model")
    def log_model(
        self,
        run_id: str,
        model: Any,
        registered_name: str,
        metadata: dict[str, Any],
        inputs: dict[str, str],
        outputs: dict[str, str],
    ) -> str:
        """Log `model` (anything with `predict(DataFrame) -> DataFrame`) as the run's pyfunc model, register it
        under `registered_name`; return the new version number. `inputs` and `outputs` name the columns and their
        MLflow types (`string`, `binary`, `double`): the model's signature."""
        import mlflow.pyfunc
        from mlflow.models import Model, ModelSignature
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
        from mlflow.types import ColSpec, Schema

        signature = ModelSignature(
            inputs=Schema([ColSpec(kind, column) for column, kind in inputs.items()]),
            outputs=Schema([ColSpec(kind, column) for column, kind in outputs.items()]),
        )
        with _use_tracking_uri(self.settings.tracking_uri), _quiet_model_logging():
            info = Model.log(
                artifact_path=None,
                name="model",
                flavor=mlflow.pyfunc,
                flavor_name="pyfunc",
                python_model=_FramePythonModel(model),
                signature=signature,
                run_id=run_id,
                registered_model_name=registered_name,
                metadata=metadata,
                pip_requirements=list(MODEL_REQUIREMENTS),
                await_registration_for=60,
            )
        return str(info.registered_model_version)

    def model_url(self, name: str, version: str) -> str:
        """The registered model version's page in the MLflow UI."""
        return f"{self.settings.tracking_uri}/#/models/{name}/versions/{version}"


@dataclass(frozen=True)
class LoadedModel:
    """A registered pyfunc model loaded for predictions: its URI (with the version number), its metadata."""

    uri: str
    metadata: dict[str, Any]
    output_columns: list[str] | None  # from the model's signature, when it has one
    pyfunc: Any

    def predict(self, frame: pd.DataFrame) -> Any:
        """The model's output for a DataFrame of inputs."""
        return self.pyfunc.predict(frame)

    def python_object(self) -> Any:
        """The object a labelflow-logged model wraps, or None for any other pyfunc model."""
        try:
            wrapper = self.pyfunc.unwrap_python_model()
        except Exception:  # not a Python-function model of ours (a sklearn flavour, another loader)
            return None
        return getattr(wrapper, "model", None) if isinstance(wrapper, _FramePythonModel) else None


@contextlib.contextmanager
def _quiet_model_logging() -> Iterator[None]:
    """MLflow's warnings while logging a model that do not apply here (a cloudpickled object is how labelflow's
    models are saved; pip's version is not needed; the signature is given, so no input example) stay out of the
    command's output."""
    loggers = [logging.getLogger(name) for name in ("mlflow.pyfunc", "mlflow.utils.environment")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class _FramePythonModel(PythonModel):
    """The pyfunc face of a plain model object: MLflow pickles this wrapper with the object inside."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """The wrapped model's output frame."""
        return self.model.predict(model_input)
