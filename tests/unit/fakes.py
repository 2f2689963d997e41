"""In-memory stand-ins for the ports of tasks/ports.py and for the flows' step runner: unit tests need no server.

Each fake keeps the behaviour the steps rely on (S3's conditional writes and not-found errors, Label Studio's
`updated_at` filter on exports, MLflow's unique experiment names and tag filters) and records what it was asked,
so tests can assert on the calls as well as on the results.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ParamSpec, TypeVar

import pandas as pd

from labelflow.integrations.great_expectations import (
    BatchToValidate,
    ExpectationDefinition,
    ExpectationOutcome,
    ValidationRun,
)
from labelflow.integrations.label_studio import LabelStudioError
from labelflow.integrations.object_store import ObjectStoreError, StoredObject
from labelflow.integrations.settings import LabelStudioSettings, MLflowSettings, S3Settings, S3StorageSettings
from labelflow.tasks.annotations import parse_time

P = ParamSpec("P")
R = TypeVar("R")
LS_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # how Label Studio writes its timestamps


# --- object store --------------------------------------------------------------------------------------------------
class FakeObjectStore:
    """Buckets of objects in a dict. ETags are the content's MD5 (as S3's for a simple PUT); conditional writes
    are atomic (or, with `honours_conditions=False`, ignored, as by a store without If-None-Match/If-Match);
    `fail_on` makes the next matching call raise, as an outage or a killed process would."""

    def __init__(self, honours_conditions: bool = True) -> None:
        self.settings = S3Settings(
            endpoint_url=f"http://store-{uuid.uuid4().hex[:8]}.fake", access_key="a", secret_key="s"
        )
        self.buckets: set[str] = set()
        self.objects: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.reads: list[str] = []  # every key read, in order
        self.writes: list[str] = []  # every key written, in order
        self.failures: list[tuple[str, str, ObjectStoreError]] = []  # (operation, key prefix, error), used once
        self.lock = threading.Lock()
        self.honours_conditions = honours_conditions

    def fail_on(self, operation: str, prefix: str, transient: bool = False) -> None:
        """Make the next `operation` ("put", "get", "delete") on a key under `prefix` fail once."""
        self.failures.append((operation, prefix, ObjectStoreError(f"fake {operation} failure", transient=transient)))

    def _maybe_fail(self, operation: str, key: str) -> None:
        for failure in self.failures:
            if failure[0] == operation and key.startswith(failure[1]):
                self.failures.remove(failure)
                raise failure[2]

    def put_object(self, bucket: str, key: str, data: bytes) -> str:
        """Set up an object (a test's source data) without recording it as a write."""
        self.buckets.add(bucket)
        etag = hashlib.md5(data).hexdigest()
        self.objects[(bucket, key)] = (data, etag)
        return etag

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys under a prefix, sorted."""
        return [item.key for item in self.list_objects(bucket, prefix)]

    # the port
    def ensure_bucket(self, bucket: str) -> None:
        self.buckets.add(bucket)

    def bucket_exists(self, bucket: str) -> bool:
        return bucket in self.buckets

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self._maybe_fail("put", key)
        if bucket not in self.buckets:
            raise ObjectStoreError(f"put s3://{bucket}/{key}: NoSuchBucket", not_found=True)
        with self.lock:
            self.writes.append(key)
            etag = hashlib.md5(data).hexdigest()
            self.objects[(bucket, key)] = (data, etag)
            return etag

    def get_bytes(self, bucket: str, key: str, max_bytes: int | None = None) -> bytes:
        self._maybe_fail("get", key)
        with self.lock:
            self.reads.append(key)
            if (bucket, key) not in self.objects:
                raise ObjectStoreError(f"get s3://{bucket}/{key}: NoSuchKey", not_found=True)
            data = self.objects[(bucket, key)][0]
        return data[:max_bytes] if max_bytes else data

    def iter_chunks(self, bucket: str, key: str, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        data = self.get_bytes(bucket, key)
        for start in range(0, len(data), chunk_bytes):
            yield data[start : start + chunk_bytes]

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        with self.lock:
            found = sorted((k, v) for (b, k), v in self.objects.items() if b == bucket and k.startswith(prefix))
        for key, (data, etag) in found:
            yield StoredObject(bucket, key, len(data), etag)

    def head(self, bucket: str, key: str) -> StoredObject | None:
        with self.lock:
            found = self.objects.get((bucket, key))
        return StoredObject(bucket, key, len(found[0]), found[1]) if found else None

    def delete(self, bucket: str, key: str) -> None:
        self._maybe_fail("delete", key)
        with self.lock:
            self.objects.pop((bucket, key), None)

    def put_conditional(
        self, bucket: str, key: str, data: bytes, if_match: str | None = None, content_type: str = "application/json"
    ) -> str | None:
        with self.lock:
            current = self.objects.get((bucket, key))
            if self.honours_conditions:
                if if_match is None and current is not None:
                    return None
                if if_match is not None and (current is None or current[1] != if_match):
                    return None
            etag = hashlib.md5(data).hexdigest()
            self.objects[(bucket, key)] = (data, etag)
            return etag

    def stat(self, bucket: str, key: str) -> StoredObject:
        with self.lock:
            if (bucket, key) not in self.objects:
                raise ObjectStoreError(f"stat s3://{bucket}/{key}: NoSuchKey", not_found=True)
            data, etag = self.objects[(bucket, key)]
        return StoredObject(bucket, key, len(data), etag)

    def upload_file(self, bucket: str, key: str, path: Path, content_type: str = "application/octet-stream") -> str:
        return self.put_bytes(bucket, key, path.read_bytes(), content_type)

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        path.write_bytes(self.get_bytes(bucket, key))


# --- Label Studio --------------------------------------------------------------------------------------------------
class FakeClock:
    """Label Studio's clock, moved by the test."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def tick(self, seconds: float) -> str:
        """Move on and return the new time as Label Studio writes it."""
        self.now += timedelta(seconds=seconds)
        return self.stamp()

    def stamp(self, offset_seconds: float = 0.0) -> str:
        """Now (or `offset_seconds` from now) as Label Studio writes it."""
        return (self.now + timedelta(seconds=offset_seconds)).strftime(LS_TIME)


def choice(label: str) -> list[dict[str, Any]]:
    """A Label Studio result choosing one class with the built-in text classification config."""
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


class FakeLabelStudio:
    """Projects, tasks, annotations and users in dicts; every change stamps the task's `updated_at`, and exports
    filter on it as the server does. `exports` records the `updated_after` of each export asked for."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.settings = LabelStudioSettings(url="http://label-studio.fake", api_key="k" * 40)
        self.clock = clock or FakeClock()
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.user_emails: dict[int, str] = {1: "admin@labelflow.fake"}
        self.storages: dict[int, dict[str, Any]] = {}
        self.exports: list[str | None] = []
        self.import_requests = 0
        self.failing_imports: set[int] = set()  # the numbers (1-based) of import requests refused (HTTP 400)
        self.lost_answers: set[int] = set()  # ... and of those whose tasks are created but whose answer is lost
        self._ids = itertools.count(1)

    # test helpers
    def add_user(self, email: str) -> int:
        """A new annotator; returns the id."""
        user_id = next(self._ids) + 1000
        self.user_emails[user_id] = email
        return user_id

    def annotate(self, task_id: int, label: str, user_id: int, lead_time: float = 5.0, stamp: str | None = None) -> int:
        """Save an annotation now (or with a given `updated_at`, as a late-committing transaction has)."""
        stamp = stamp or self.clock.stamp()
        annotation_id = next(self._ids)
        self.tasks[task_id]["annotations"].append(
            {
                "id": annotation_id,
                "completed_by": user_id,
                "result": choice(label),
                "lead_time": lead_time,
                "was_cancelled": False,
                "ground_truth": False,
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
        self.tasks[task_id]["updated_at"] = stamp
        return annotation_id

    def relabel(self, annotation_id: int, label: str) -> None:
        """Edit an annotation's answer."""
        for task in self.tasks.values():
            for annotation in task["annotations"]:
                if annotation["id"] == annotation_id:
                    annotation["result"] = choice(label)
                    annotation["updated_at"] = task["updated_at"] = self.clock.stamp()

    def project_tasks(self, project_id: int) -> list[dict[str, Any]]:
        """The project's tasks, in id order."""
        return [task for task in self.tasks.values() if task["project"] == project_id]

    # the port
    def find_project(self, title: str) -> int | None:
        return min((pid for pid, p in self.projects.items() if p["title"] == title), default=None)

    def get_project(self, project_id: int) -> dict[str, Any] | None:
        return copy.deepcopy(self.projects.get(project_id))

    def create_project(self, title: str, label_config: str, **options: Any) -> int:
        project_id = next(self._ids)
        self.projects[project_id] = {"id": project_id, "title": title, "label_config": label_config, **options}
        return project_id

    def update_project(self, project_id: int, **fields: Any) -> None:
        self.projects[project_id].update(fields)

    def s3_import_storages(self, project_id: int) -> list[dict[str, Any]]:
        return [copy.deepcopy(s) for s in self.storages.values() if s["project"] == project_id]

    def add_s3_import_storage(
        self,
        project_id: int,
        bucket: str,
        prefix: str,
        s3: S3Settings,
        use_server_endpoint: bool = True,
        presign: bool = True,
        presign_ttl_minutes: int = 60,
        title: str = "labelflow source",
    ) -> int:
        storage_id = next(self._ids)
        self.storages[storage_id] = {
            "id": storage_id,
            "project": project_id,
            "bucket": bucket,
            "prefix": prefix,
            "aws_access_key_id": s3.access_key,
        }
        return storage_id

    def update_s3_import_storage_keys(self, storage_id: int, s3: S3Settings) -> None:
        self.storages[storage_id]["aws_access_key_id"] = s3.access_key

    def tasks_where(self, project_id: int, field: str, value: str, page_size: int = 1000) -> list[dict[str, Any]]:
        return [copy.deepcopy(t) for t in self.project_tasks(project_id) if t["data"].get(field) == value]

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        self.import_requests += 1
        if self.import_requests in self.failing_imports:
            raise LabelStudioError(f"Label Studio import into project {project_id}: HTTP 400: refused", status=400)
        ids = []
        for payload in tasks:
            data = payload.get("data", payload)  # Label Studio takes {"data": ...} or the data itself
            task_id = next(self._ids)
            self.tasks[task_id] = {
                "id": task_id,
                "project": project_id,
                "data": copy.deepcopy(data),
                "annotations": [],
                "predictions": copy.deepcopy(payload.get("predictions", [])),
                "updated_at": self.clock.stamp(),
            }
            ids.append(task_id)
        if self.import_requests in self.lost_answers:
            raise LabelStudioError(f"Label Studio import into project {project_id}: cannot reach it", transient=True)
        return ids

    def export_snapshot(
        self, project_id: int, updated_after: str | None = None, timeout: float = 1800.0
    ) -> tuple[list[dict[str, Any]], str]:
        self.exports.append(updated_after)
        since = parse_time(updated_after)
        found = [
            copy.deepcopy(task)
            for task in self.project_tasks(project_id)
            if since is None or (parse_time(task["updated_at"]) or since) > since
        ]
        return found, self.clock.stamp()

    def users(self) -> dict[int, str]:
        return dict(self.user_emails)

    def set_task_overlap(self, task_id: int, overlap: int) -> None:
        self.tasks[task_id]["overlap"] = overlap
        self.tasks[task_id]["updated_at"] = self.clock.stamp()


# --- MLflow --------------------------------------------------------------------------------------------------------
@dataclass
class FakeRun:
    """One run: its tags, status, logged values and whether it was deleted."""

    run_id: str
    experiment_id: str
    tags: dict[str, str]
    status: str = "RUNNING"
    deleted: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return SimpleNamespace(tags=dict(self.tags))

    @property
    def info(self) -> Any:
        return SimpleNamespace(run_id=self.run_id)


@dataclass
class FakeTracking:
    """Experiments with unique names and runs with tags; `search_runs` reads `tags.`k` = 'v'` filters."""

    experiments: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    runs: dict[str, FakeRun] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    settings: MLflowSettings = field(default_factory=lambda: MLflowSettings(tracking_uri="http://mlflow.fake"))

    def live_runs(self) -> list[FakeRun]:
        """Runs not deleted."""
        return [run for run in self.runs.values() if not run.deleted]

    def experiment_id(self, name: str) -> str | None:
        return self.experiments[name][0] if name in self.experiments else None

    def create_experiment_once(self, name: str, tags: dict[str, str]) -> tuple[str, bool]:
        with self.lock:
            if name in self.experiments:
                return self.experiments[name][0], False
            self.experiments[name] = (str(len(self.experiments) + 1), dict(tags))
            return self.experiments[name][0], True

    def _tags(self, experiment_id: str) -> dict[str, str]:
        return next(tags for eid, tags in self.experiments.values() if eid == experiment_id)

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        return dict(self._tags(experiment_id))

    def set_experiment_tags(self, experiment_id: str, tags: dict[str, str]) -> None:
        self._tags(experiment_id).update(tags)

    def search_runs(self, experiment_id: str, filter_string: str = "") -> Sequence[Any]:
        wanted = dict(re.findall(r"tags\.`([^`]+)` = '([^']*)'", filter_string))
        with self.lock:
            return [
                run
                for run in self.runs.values()
                if run.experiment_id == experiment_id
                and not run.deleted
                and all(run.tags.get(k) == v for k, v in wanted.items())
            ]

    def start_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        with self.lock:
            run_id = uuid.uuid4().hex
            self.runs[run_id] = FakeRun(run_id, experiment_id, dict(tags))
            return run_id

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        with self.lock:
            if self.runs[run_id].deleted:  # as MLflow refuses to tag a deleted run
                raise RuntimeError("the run must be active")
            self.runs[run_id].tags.update(tags)

    def log_params_and_metrics(self, run_id: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
        self.runs[run_id].params.update(params)
        self.runs[run_id].metrics.update(metrics)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.runs[run_id].artifacts.append(path.name)

    def log_dataset_input(
        self, run_id: str, frame: pd.DataFrame, name: str, source: str, digest: str, context: str = "training"
    ) -> None:
        self.runs[run_id].inputs.append(source)

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        with self.lock:
            self.runs[run_id].status = status

    def delete_run(self, run_id: str) -> None:
        with self.lock:
            self.runs[run_id].deleted = True

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.settings.tracking_uri}/#/experiments/{experiment_id}/runs/{run_id}"


# --- Great Expectations --------------------------------------------------------------------------------------------
class FakeValidator:
    """Checks the spec's label-set expectations itself (every other expectation counts as met), without Great
    Expectations: enough for the gate's logic (a label outside the set fails the batch, nothing is published)."""

    def __init__(self) -> None:
        self.validated: list[dict[str, int]] = []  # rows per table, per validation

    def suite_for(self, table: str, task_type: str) -> list[ExpectationDefinition]:
        return []

    def validate(self, batches: list[BatchToValidate], docs_dir: Path | None = None) -> ValidationRun:
        self.validated.append({batch.name: len(batch.frame) for batch in batches})
        outcomes = [self._outcome(batch, d) for batch in batches for d in batch.expectations]
        if docs_dir is not None:
            (docs_dir / "index.html").write_text("<html>fake Data Docs</html>", encoding="utf-8")
        results = {
            batch.name: {"success": all(o.success for o in outcomes if o.batch == batch.name)} for batch in batches
        }
        return ValidationRun(all(o.success for o in outcomes), outcomes, results)

    @staticmethod
    def _outcome(batch: BatchToValidate, definition: ExpectationDefinition) -> ExpectationOutcome:
        column = definition.kwargs.get("column")
        unexpected: list[Any] = []
        if definition.type == "expect_column_values_to_be_in_set":
            values = batch.frame[column].dropna()
            unexpected = [v for v in values if v not in set(definition.kwargs["value_set"])]
        return ExpectationOutcome(
            batch=batch.name,
            type=definition.type,
            column=column,
            notes=definition.notes,
            origin=definition.origin,
            success=not unexpected,
            element_count=len(batch.frame),
            unexpected_count=len(unexpected),
            unexpected_percent=100.0 * len(unexpected) / len(batch.frame) if len(batch.frame) else 0.0,
            observed=None,
            examples=[{column: value} for value in unexpected[:3]],
        )


# --- the clients and the flows' step runner ------------------------------------------------------------------------
@dataclass
class FakeClients:
    """The clients a flow hands its steps, all in memory."""

    store: FakeObjectStore = field(default_factory=FakeObjectStore)
    label_studio_client: FakeLabelStudio = field(default_factory=FakeLabelStudio)
    tracking: FakeTracking = field(default_factory=FakeTracking)
    reader_settings: S3StorageSettings = field(
        default_factory=lambda: S3StorageSettings(access_key="reader", secret_key="reader-secret")
    )


class PlainSteps:
    """The flows' step runner without Prefect: each step a plain call, recorded by name; artifacts kept by key."""

    def __init__(self) -> None:
        self.log = logging.getLogger("labelflow.tests.steps")
        self.calls: list[str] = []
        self.once_calls: list[str] = []  # the steps run without the retry policy
        self.artifacts: dict[str, str] = {}

    def __call__(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        self.calls.append(fn.__name__)
        return fn(*args, **kwargs)

    def once(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        self.calls.append(fn.__name__)
        self.once_calls.append(fn.__name__)
        return fn(*args, **kwargs)

    def on_dask(self, address: str, fn: Callable[..., R], /, **kwargs: Any) -> R:
        self.calls.append(f"{fn.__name__}@dask")
        return fn(**kwargs)

    def artifact(self, key: str, markdown: str, description: str) -> None:
        self.artifacts[key] = markdown
