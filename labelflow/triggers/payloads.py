"""Webhook bodies to events: what each sender posts, checked against what it documents."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

LABEL_STUDIO_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"]


class PayloadError(ValueError):
    """A webhook body that is not what its sender documents; the message is the reason sent back with the 400."""


@dataclass(frozen=True)
class ObjectEvent:
    """An object was created or overwritten."""

    bucket: str
    key: str


def _object(value: Any, what: str) -> dict[str, Any]:
    """`value` when it is a JSON object (missing counts as empty), else a PayloadError naming `what`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _text(value: Any, what: str) -> str:
    """`value` when it is a JSON string (missing counts as empty), else a PayloadError naming `what`."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{what} must be a string, not {type(value).__name__}")
    return value


def _project_id(value: Any, what: str) -> int:
    """A Label Studio project id: a positive JSON integer (no strings, floats or booleans: ids become routes)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise PayloadError(f"{what} must be a positive integer, got {json.dumps(value)[:50]}")
    return value


def parse_seaweedfs_event(payload: dict[str, Any]) -> list[ObjectEvent]:
    """Files created or updated under /buckets/<bucket>/ (directories, deletes and internal entries ignored)."""
    if "event_type" not in payload:
        raise PayloadError("a SeaweedFS event needs an event_type")
    event_type = _text(payload.get("event_type"), "event_type")
    message = _object(payload.get("message"), "message")
    entry = _object(message.get("new_entry"), "message.new_entry")
    path = _text(payload.get("key"), "key")
    if event_type not in {"create", "update", "rename"}:
        return []
    if entry.get("is_directory"):
        return []
    if event_type == "rename":
        parent = _text(message.get("new_parent_path"), "message.new_parent_path")
        path = f"{parent.rstrip('/')}/{_text(entry.get('name'), 'message.new_entry.name')}"
    parts = path.split("/", 3)  # "", "buckets", bucket, key
    if len(parts) < 4 or parts[1] != "buckets" or not parts[3]:
        return []
    bucket, key = parts[2], parts[3]
    if bucket.startswith(".") or key.startswith(".uploads/") or "/.uploads/" in key:
        return []  # SeaweedFS' own metadata and in-progress multipart parts
    return [ObjectEvent(bucket, key)]


def parse_s3_event(payload: dict[str, Any]) -> list[ObjectEvent]:
    """ObjectCreated records of an S3 event notification (MinIO webhook, AWS S3 direct or wrapped by SNS)."""
    if payload.get("Type") == "Notification":
        try:
            payload = _object(json.loads(_text(payload.get("Message"), "Message")), "Message")
        except (json.JSONDecodeError, RecursionError) as exc:
            raise PayloadError(f"the SNS Message is not JSON: {exc}") from None
    elif "Type" in payload:  # SNS subscription confirmations and the like: nothing to ingest
        return []
    records = payload.get("Records")
    if not isinstance(records, list):
        raise PayloadError("an S3 event notification needs a Records list")
    events = []
    for number, record in enumerate(records):
        record = _object(record, f"Records[{number}]")
        if not _text(record.get("eventName"), "eventName").startswith(("ObjectCreated", "s3:ObjectCreated")):
            continue
        s3 = _object(record.get("s3"), f"Records[{number}].s3")
        bucket = _text(_object(s3.get("bucket"), "s3.bucket").get("name"), "s3.bucket.name")
        key = _text(_object(s3.get("object"), "s3.object").get("key"), "s3.object.key")
        if not bucket or not key:
            raise PayloadError(f"Records[{number}] lacks s3.bucket.name or s3.object.key")
        events.append(ObjectEvent(bucket, unquote_plus(key)))  # S3 URL-encodes keys in notifications
    return events


def parse_label_studio_event(payload: dict[str, Any]) -> int | None:
    """The project id of an annotation webhook, or None for other actions."""
    if "action" not in payload:
        raise PayloadError("a Label Studio webhook needs an action")
    if _text(payload.get("action"), "action") not in LABEL_STUDIO_ACTIONS:
        return None
    project = _object(payload.get("project"), "project")
    if project.get("id") is not None:
        return _project_id(project["id"], "project.id")
    annotations = payload.get("annotations") or []
    if not isinstance(annotations, list):
        raise PayloadError("annotations must be a list")
    candidates = [
        ("annotation", payload.get("annotation")),
        *((f"annotations[{number}]", item) for number, item in enumerate(annotations)),
        ("task", payload.get("task")),
    ]
    for what, item in candidates:
        found = _object(item, what).get("project")
        if found is not None:
            return _project_id(found, f"{what}.project")
    raise PayloadError(f"{payload['action']} names no project (project.id, annotation.project or task.project)")
