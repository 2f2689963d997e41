"""The external systems as the steps see them: small Protocols, so in-memory fakes can stand in for the servers.

Each port lists only the calls steps make. The adapters in `integrations/` satisfy them as they are (structural
typing: nothing subclasses a port), and so do the fakes in `tests/unit/fakes.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.integrations.great_expectations import BatchToValidate, ExpectationDefinition, ValidationRun
    from labelflow.integrations.object_store import StoredObject
    from labelflow.integrations.settings import LabelStudioSettings, MLflowSettings, S3Settings, S3StorageSettings


class ObjectStorePort(Protocol):
    """Buckets and objects: the ingest ledger, the annotation table, reports, batches and the sources."""

    @property
    def settings(self) -> S3Settings:
        """The store's endpoint and keys (Label Studio's storage connections copy the endpoint)."""
        ...

    def ensure_bucket(self, bucket: str) -> None:
        """Create the bucket if it does not exist."""
        ...

    def bucket_exists(self, bucket: str) -> bool:
        """True when the bucket exists."""
        ...

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = ...) -> str:
        """Write one object; return its ETag."""
        ...

    def get_bytes(self, bucket: str, key: str, max_bytes: int | None = None) -> bytes:
        """Read one object (its first `max_bytes` when given); a missing one raises with `not_found` set."""
        ...

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        """Every object under a prefix, in key order."""
        ...

    def head(self, bucket: str, key: str) -> StoredObject | None:
        """Size and ETag of one object, as a listing gives them; None when it does not exist."""
        ...

    def iter_chunks(self, bucket: str, key: str, chunk_bytes: int = ...) -> Iterator[bytes]:
        """Stream one object in chunks; a missing one raises with `not_found` set."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Delete one object (no error if it is already gone)."""
        ...


class DatasetStorePort(ObjectStorePort, Protocol):
    """What the dataset registry needs on top: conditional writes (version claims) and file transfers."""

    def put_conditional(
        self, bucket: str, key: str, data: bytes, if_match: str | None = None, content_type: str = ...
    ) -> str | None:
        """Write only if no object exists (or, given `if_match`, only over that ETag); None when another won."""
        ...

    def stat(self, bucket: str, key: str) -> StoredObject:
        """Size and ETag of one object."""
        ...

    def upload_file(self, bucket: str, key: str, path: Path, content_type: str = ...) -> str:
        """Write one object from a local file; return its ETag."""
        ...

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        """Read one object into a local file."""
        ...


class LabelStudioPort(Protocol):
    """Projects, storage connections, task imports and exports on one Label Studio server."""

    @property
    def settings(self) -> LabelStudioSettings:
        """The server's address (recorded with the project, shown in summaries)."""
        ...

    def find_project(self, title: str) -> int | None:
        """Id of the project with exactly this title, or None."""
        ...

    def get_project(self, project_id: int) -> dict[str, Any] | None:
        """A project's settings, or None if it does not exist."""
        ...

    def create_project(self, title: str, label_config: str, **options: Any) -> int:
        """Create a project and return its id."""
        ...

    def update_project(self, project_id: int, **fields: Any) -> None:
        """Change project settings."""
        ...

    def s3_import_storages(self, project_id: int) -> list[dict[str, Any]]:
        """The project's S3 import storage connections."""
        ...

    def add_s3_import_storage(
        self,
        project_id: int,
        bucket: str,
        prefix: str,
        s3: S3Settings,
        use_server_endpoint: bool = True,
        presign: bool = True,
        presign_ttl_minutes: int = 60,
        title: str = ...,
    ) -> int:
        """Connect a bucket so Label Studio resolves the tasks' s3:// URIs; return the connection's id."""
        ...

    def update_s3_import_storage_keys(self, storage_id: int, s3: S3Settings) -> None:
        """Replace the keys a storage connection reads with."""
        ...

    def tasks_where(self, project_id: int, field: str, value: str, page_size: int = 1000) -> list[dict[str, Any]]:
        """Every task whose data field equals a value."""
        ...

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Create tasks in one request and return their ids (sent once: only a batch lookup may decide a retry)."""
        ...

    def export_snapshot(
        self, project_id: int, updated_after: str | None = None, timeout: float = 1800.0
    ) -> tuple[list[dict[str, Any]], str]:
        """(Tasks updated after `updated_after`, or all, with their annotations; the server's time of the export)."""
        ...

    def users(self) -> dict[int, str]:
        """Every user: id -> email."""
        ...

    def set_task_overlap(self, task_id: int, overlap: int) -> None:
        """Ask for `overlap` annotations on one task."""
        ...

    def hold_tasks(self, project_id: int, task_ids: list[int]) -> int:
        """Take tasks out of the labeling queue (they count as finished); returns how many were held."""
        ...

    def release_tasks(self, project_id: int, task_ids: list[int], overlap: int) -> int:
        """Put held tasks back in the labeling queue asking for `overlap` annotations; returns how many."""
        ...

    def model_versions(self, project_id: int) -> dict[str, int]:
        """The model versions of the project's predictions, with their counts."""
        ...

    def import_predictions(self, project_id: int, predictions: list[dict[str, Any]]) -> int:
        """Add predictions to existing tasks in one request; returns how many were created."""
        ...

    def prediction_scores(self, project_id: int, model_version: str) -> dict[int, list[tuple[int, float | None]]]:
        """Task id -> [(prediction id, score)] of the project's predictions of exactly `model_version`."""
        ...

    def set_prediction_score(self, prediction_id: int, score: float) -> None:
        """Change one prediction's score."""
        ...


class TrackingPort(Protocol):
    """Experiments and runs on the tracking server: the dataset registry's records of versions and owners."""

    @property
    def settings(self) -> MLflowSettings:
        """The tracking server's address (named in errors)."""
        ...

    def experiment_id(self, name: str) -> str | None:
        """Id of an existing experiment, or None."""
        ...

    def create_experiment_once(self, name: str, tags: dict[str, str]) -> tuple[str, bool]:
        """(experiment id, True) when this call created it; (id, False) when it existed."""
        ...

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        """An experiment's tags."""
        ...

    def set_experiment_tags(self, experiment_id: str, tags: dict[str, str]) -> None:
        """Set several tags on an experiment."""
        ...

    def search_runs(self, experiment_id: str, filter_string: str = "") -> Sequence[Any]:
        """The experiment's active runs matching a filter (each with `.info.run_id` and `.data.tags`)."""
        ...

    def start_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        """Create a running run with tags; return its id."""
        ...

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set several tags on a run."""
        ...

    def log_params_and_metrics(self, run_id: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Log parameters and numeric metrics."""
        ...

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload one local file as a run artifact."""
        ...

    def log_dataset_input(
        self, run_id: str, frame: pd.DataFrame, name: str, source: str, digest: str, context: str = ...
    ) -> None:
        """Record a table as the run's dataset input."""
        ...

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        """End a run with a status."""
        ...

    def delete_run(self, run_id: str) -> None:
        """Hide a run (deleted lifecycle stage)."""
        ...

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The run's page in the tracking UI."""
        ...

    def ensure_experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        """Experiment id for a name, creating the experiment if needed."""
        ...

    def resolve_model_uri(self, uri: str) -> tuple[str, str]:
        """(registered model name, version number) of models:/<name>/<version>, /latest or @<alias>."""
        ...

    def load_model(self, name: str, version: str) -> LoadedModelPort:
        """A registered model version, loaded for predictions."""
        ...

    def log_model(
        self,
        run_id: str,
        model: Any,
        registered_name: str,
        metadata: dict[str, Any],
        inputs: dict[str, str],
        outputs: dict[str, str],
    ) -> str:
        """Log a model (anything with `predict(DataFrame) -> DataFrame`) to a run and register it; its version."""
        ...

    def model_url(self, name: str, version: str) -> str:
        """The registered model version's page in the tracking UI."""
        ...


class LoadedModelPort(Protocol):
    """A registered model loaded from the tracking server: what it declared when logged, and its predictions."""

    uri: str
    metadata: dict[str, Any]
    output_columns: list[str] | None

    def predict(self, frame: pd.DataFrame) -> Any:
        """The model's output for a DataFrame of inputs."""
        ...

    def python_object(self) -> Any:
        """The object a labelflow-logged model wraps (e.g. tasks/training.py's BaselineClassifier), else None."""
        ...


class ValidatorPort(Protocol):
    """Expectation suites and the validation of tables against them (Great Expectations, in process)."""

    def suite_for(self, table: str, task_type: str) -> list[ExpectationDefinition]:
        """The expectations the suite files hold for one table of one task type."""
        ...

    def validate(self, batches: list[BatchToValidate], docs_dir: Path | None = None) -> ValidationRun:
        """Validate each table against its expectations; render Data Docs into `docs_dir` when given."""
        ...


class ClientsPort(Protocol):
    """The clients a flow hands its steps, built once (`integrations.resources.Resources` is one)."""

    @property
    def store(self) -> DatasetStorePort:
        """The object store."""
        ...

    @property
    def label_studio_client(self) -> LabelStudioPort:
        """Label Studio."""
        ...

    @property
    def tracking(self) -> TrackingPort:
        """The tracking server."""
        ...

    @property
    def reader_settings(self) -> S3StorageSettings:
        """The read-only S3 identity Label Studio's storage connections use."""
        ...
