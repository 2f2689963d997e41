"""The small JSON record a completed run leaves in a project's state, which the nothing-new shortcuts read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from labelflow.integrations.object_store import ObjectStoreError
from labelflow.tasks.ports import ObjectStorePort
from labelflow.tasks.spec import S3Location


def now_iso() -> str:
    """The current UTC time to the second, as the records store it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_run_record(store: ObjectStorePort, state: S3Location, name: str, record: dict[str, Any]) -> None:
    """Write a run record as JSON under the project's state (values JSON cannot hold are written as text)."""
    payload = json.dumps(record, ensure_ascii=False, default=str).encode("utf-8")
    store.put_bytes(state.bucket, state.join(name), payload, "application/json")


def read_run_record(store: ObjectStorePort, state: S3Location, name: str) -> dict[str, Any] | None:
    """A run record under the project's state, or None when no run was recorded (any other store error is raised)."""
    try:
        return json.loads(store.get_bytes(state.bucket, state.join(name)))
    except ObjectStoreError as exc:
        if exc.not_found:
            return None
        raise
