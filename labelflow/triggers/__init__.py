"""Event-driven runs: object-store and Label Studio webhooks become debounced Prefect deployment runs.

The listener receives
- `POST /hooks/seaweedfs`: the SeaweedFS filer's webhook notification (the local stack),
- `POST /hooks/s3`: S3 event notifications as MinIO's webhook target or AWS SNS deliver them (production),
- `POST /hooks/label-studio`: Label Studio's project webhooks (annotation created / updated / deleted),

maps each event to the deployments `labelflow deploy` registered (new object under a spec's source -> that spec's
ingest deployment; annotation in a spec's project -> its collect deployment) and creates flow runs through a
debouncer, so a burst of events becomes a handful of runs. An ingest run started by object events is given the
keys they name and reads only those objects (a HEAD each, no listing of the source); the schedules, which list the
sources, stay the safety net for lost webhooks.

`payloads` parses the bodies, `routing` maps events to deployments and debounces them, `prefect_runs` talks to
Prefect, `listener` queues and dispatches events, and `server` is the HTTP side. This package re-exports their
public names, so callers import from `labelflow.triggers`.
"""

from __future__ import annotations

from labelflow.triggers.listener import EventListener
from labelflow.triggers.payloads import (
    LABEL_STUDIO_ACTIONS,
    ObjectEvent,
    PayloadError,
    parse_label_studio_event,
    parse_s3_event,
    parse_seaweedfs_event,
)
from labelflow.triggers.prefect_runs import PrefectRuns
from labelflow.triggers.routing import (
    COLLECT_FLOW,
    INGEST_FLOW,
    MAX_RUN_KEYS,
    NOT_STARTED,
    Debouncer,
    Route,
    Routes,
    build_routes,
)
from labelflow.triggers.server import MAX_BODY_BYTES, READ_TIMEOUT_SECONDS, WebhookServer

__all__ = [
    "COLLECT_FLOW",
    "INGEST_FLOW",
    "LABEL_STUDIO_ACTIONS",
    "MAX_BODY_BYTES",
    "MAX_RUN_KEYS",
    "NOT_STARTED",
    "READ_TIMEOUT_SECONDS",
    "Debouncer",
    "EventListener",
    "ObjectEvent",
    "PayloadError",
    "PrefectRuns",
    "Route",
    "Routes",
    "WebhookServer",
    "build_routes",
    "parse_label_studio_event",
    "parse_s3_event",
    "parse_seaweedfs_event",
]
