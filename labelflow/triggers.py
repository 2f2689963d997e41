"""Event-driven runs: object-store and Label Studio webhooks become debounced Prefect deployment runs.

The listener receives
- `POST /hooks/seaweedfs`: the SeaweedFS filer's webhook notification (the local stack),
- `POST /hooks/s3`: S3 event notifications as MinIO's webhook target or AWS SNS deliver them (production),
- `POST /hooks/label-studio`: Label Studio's project webhooks (annotation created / updated / deleted),

maps each event to the deployments `labelflow deploy` registered (new object under a spec's source -> that spec's
ingest deployment; annotation in a spec's project -> its collect deployment) and creates flow runs through a
debouncer, so a burst of events becomes a handful of runs. Schedules stay the safety net for lost webhooks.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote_plus
from uuid import UUID

logger = logging.getLogger("labelflow.triggers")

INGEST_FLOW = "labelflow-ingest"
COLLECT_FLOW = "labelflow-collect"
LABEL_STUDIO_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"]
# Flow-run states in which a run has not started yet: another event needs no new run while one of these waits.
NOT_STARTED = {"SCHEDULED", "PENDING"}
# Largest webhook body read: Label Studio's bulk-delete events list every annotation, yet stay far below this.
MAX_BODY_BYTES = 16 * 1024 * 1024
# A sender gets this long to deliver headers and body: a stalled or slow client must not hold a thread forever.
READ_TIMEOUT_SECONDS = 10.0


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


@dataclass(frozen=True)
class Route:
    """One deployment an event can start, and the spec it is for."""

    deployment_id: UUID
    deployment: str  # "flow/name"
    spec_path: str
    project: str


@dataclass
class Routes:
    """Which deployment each bucket prefix and each Label Studio project starts."""

    sources: list[tuple[str, str, Route]] = field(default_factory=list)  # (bucket, prefix, ingest route)
    projects: dict[int, Route] = field(default_factory=dict)  # Label Studio project id -> collect route

    def for_object(self, event: ObjectEvent) -> list[Route]:
        """Ingest routes whose source contains the object (one per spec)."""
        found = {
            route.deployment_id: route
            for bucket, prefix, route in self.sources
            if bucket == event.bucket and event.key.startswith(prefix)
        }
        return list(found.values())

    def for_project(self, project_id: int) -> Route | None:
        """The collect route of a Label Studio project."""
        return self.projects.get(project_id)


@dataclass
class _Pending:
    run_id: UUID
    due: float  # monotonic time the run is scheduled for


class Debouncer:
    """At most one not-yet-started run per route: the first event schedules a run `window` seconds ahead, and
    every event until it starts is absorbed into it; an event after it started schedules the next one."""

    def __init__(
        self,
        window_seconds: float,
        submit: Callable[[Route, datetime, str], UUID],
        run_state: Callable[[UUID], str | None],
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.window = window_seconds
        self._submit = submit
        self._run_state = run_state
        self._clock = clock
        self._now = now
        self._pending: dict[UUID, _Pending] = {}
        self._lock = threading.Lock()
        self.events = 0

    def offer(self, route: Route, source: str = "event") -> UUID | None:
        """Account for one event; returns the id of a run it created, or None when it was absorbed."""
        with self._lock:
            self.events += 1
            pending = self._pending.get(route.deployment_id)
            if pending is not None:
                if self._clock() < pending.due:
                    return None
                # Past its start time: absorb only while the run truly has not started (worker busy or down).
                if (self._run_state(pending.run_id) or "").upper() in NOT_STARTED:
                    return None
            run_id = self._submit(route, self._now() + timedelta(seconds=self.window), source)
            self._pending[route.deployment_id] = _Pending(run_id=run_id, due=self._clock() + self.window)
            return run_id


class PrefectRuns:
    """Creates and inspects flow runs of labelflow's deployments through the Prefect API."""

    def __init__(self, client: Any) -> None:
        self.client = client  # a sync PrefectClient (get_client(sync_client=True)), already entered

    def submit(self, route: Route, when: datetime, source: str) -> UUID:
        """Schedule one run of the route's deployment at `when`, tagged with what triggered it."""
        from prefect.states import Scheduled

        run = self.client.create_flow_run_from_deployment(
            route.deployment_id,
            state=Scheduled(scheduled_time=when),
            tags=["labelflow", f"trigger:{source}"],
        )
        logger.info("scheduled %s for %s at %s (trigger: %s)", route.deployment, route.project, when, source)
        return run.id

    def state(self, run_id: UUID) -> str | None:
        """The run's state type, e.g. SCHEDULED, RUNNING, COMPLETED."""
        run = self.client.read_flow_run(run_id)
        return run.state.type.value if run.state else None

    def labelflow_deployments(self) -> list[tuple[UUID, str, str, dict[str, Any]]]:
        """(id, flow name, deployment name, parameters) of every deployment `labelflow deploy` registered."""
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags, FlowFilter, FlowFilterName

        # Only the two flows events can start, by name: a server with many flows must not push them out of a page.
        flow_filter = FlowFilter(name=FlowFilterName(any_=[INGEST_FLOW, COLLECT_FLOW]))
        flows = {f.id: f.name for f in self.client.read_flows(flow_filter=flow_filter)}
        tags = DeploymentFilter(tags=DeploymentFilterTags(all_=["labelflow", "labelflow:spec"]))
        found, page = [], 200  # the API's largest page
        while True:
            batch = self.client.read_deployments(
                flow_filter=flow_filter, deployment_filter=tags, limit=page, offset=len(found)
            )
            found.extend(batch)
            if len(batch) < page:
                break
        return [(d.id, flows.get(d.flow_id, "?"), d.name, dict(d.parameters or {})) for d in found]


def build_routes(
    deployments: Iterable[tuple[UUID, str, str, dict[str, Any]]],
    load_spec: Callable[[str], Any],
    project_id_of: Callable[[Any], int | None],
) -> Routes:
    """Routes from the registered deployments: their spec's sources (ingest) and recorded project (collect)."""
    routes = Routes()
    for deployment_id, flow_name, name, parameters in deployments:
        spec_path = parameters.get("spec_path")
        if flow_name not in {INGEST_FLOW, COLLECT_FLOW} or not spec_path:
            continue
        try:
            spec = load_spec(spec_path)
        except Exception as exc:  # a spec deleted or broken since it was deployed: skip it, keep the others
            logger.warning("deployment %s/%s: cannot load %s: %s", flow_name, name, spec_path, exc)
            continue
        route = Route(deployment_id, f"{flow_name}/{name}", spec_path, spec.name)
        if flow_name == INGEST_FLOW:
            routes.sources.extend((source.bucket, source.prefix, route) for source in spec.sources)
        else:
            project_id = project_id_of(spec)
            if project_id is not None:
                routes.projects[project_id] = route
    return routes


class EventListener:
    """Receives webhooks, answers at once, and turns events into debounced runs on a background thread.

    An event is matched against routes loaded after it arrived: one that matches nothing in older routes waits
    ("parked") for the next refresh, since its deployment may have been registered a moment before its upload.
    Refreshes happen at most every `min_refresh_seconds`, and every `refresh_seconds` regardless.
    """

    def __init__(
        self,
        token: str,
        debouncer: Debouncer,
        load_routes: Callable[[], Routes],
        refresh_seconds: float = 30.0,
        on_routes: Callable[[Routes], None] = lambda _: None,
        min_refresh_seconds: float = 2.0,
        max_parked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.debouncer = debouncer
        self._load_routes = load_routes
        self._on_routes = on_routes
        self.refresh_seconds = refresh_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.max_parked = max_parked
        self._clock = clock
        self.routes = Routes()
        self._attempted_at = float("-inf")  # when the last refresh started, successful or not
        self._loaded_at = float("-inf")  # when the refresh that produced `self.routes` started
        self._queue: queue.Queue[tuple[str, Any, float]] = queue.Queue()
        self._parked: list[tuple[str, Any, float]] = []
        self._stop = threading.Event()
        self.counts: dict[str, int] = {
            "received": 0,
            "rejected": 0,
            "unrouted": 0,
            "runs": 0,
            "errors": 0,
            "dropped": 0,
            "reloads": 0,
        }
        self.max_body_bytes = MAX_BODY_BYTES
        self.read_timeout_seconds = READ_TIMEOUT_SECONDS
        self._thread = threading.Thread(target=self._dispatch_loop, name="labelflow-dispatch", daemon=True)

    # --- receiving (HTTP threads) ----------------------------------------------------------------
    def authorized(self, header: str | None) -> bool:
        """Bearer token check (also accepts the bare token, as some senders omit the scheme)."""
        given = (header or "").removeprefix("Bearer ").strip()
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    def accept(self, source: str, payload: Any) -> int:
        """Parse one webhook body and queue its events; returns how many events it carried.

        A body its sender would never produce raises PayloadError (the HTTP answer is a 400 with the reason).
        """
        if not isinstance(payload, dict):
            raise PayloadError("the body must be a JSON object")
        if source == "label-studio":
            project_id = parse_label_studio_event(payload)
            items: list[Any] = [project_id] if project_id is not None else []
        elif source == "seaweedfs":
            items = parse_seaweedfs_event(payload)
        elif source == "s3":
            items = parse_s3_event(payload)
        else:
            raise KeyError(source)
        received_at = self._clock()
        for item in items:
            self._queue.put((source, item, received_at))
        self.counts["received"] += len(items)
        return len(items)

    # --- dispatching (one background thread) -----------------------------------------------------
    def start(self) -> None:
        """Start dispatching; routes load on that thread (events wait for them), so the hooks answer at once."""
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching (queued events are dropped; the schedules catch up)."""
        self._stop.set()
        self._thread.join(timeout=10)

    def refresh(self, force: bool = False) -> bool:
        """Reload routes from Prefect when stale (or forced); keep the old ones if that fails. True if reloaded."""
        started = self._clock()
        if not force and started - self._attempted_at < self.refresh_seconds:
            return False
        self._attempted_at = started
        try:
            routes = self._load_routes()
        except Exception as exc:
            self.counts["errors"] += 1
            logger.warning("could not refresh routes: %s", exc)
            return False
        self.routes, self._loaded_at = routes, started
        self.counts["reloads"] += 1
        try:
            self._on_routes(routes)
        except Exception as exc:
            self.counts["errors"] += 1
            logger.warning("after refreshing routes: %s", exc)
        return True

    def step(self, timeout: float = 1.0) -> None:
        """Dispatch one queued event (waiting up to `timeout` for one), then retry parked events and refresh."""
        try:
            source, item, received_at = self._queue.get(timeout=timeout)
        except queue.Empty:
            pass
        else:
            try:
                self._dispatch(source, item, received_at)
            finally:
                self._queue.task_done()
        self._retry_parked()
        self.refresh()

    def _routes_for(self, source: str, item: Any) -> list[Route]:
        if source == "label-studio":
            route = self.routes.for_project(item)
            return [route] if route else []
        return self.routes.for_object(item)

    def _dispatch(self, source: str, item: Any, received_at: float) -> None:
        try:
            routes = self._routes_for(source, item)
            if not routes and self._loaded_at <= received_at:  # routes not newer than the event: look again later
                if len(self._parked) < self.max_parked:
                    self._parked.append((source, item, received_at))
                else:  # routes unreachable for long under a flood of events: the schedules catch up
                    self.counts["dropped"] += 1
                return
            if not routes:
                self.counts["unrouted"] += 1
            for route in routes:
                if self.debouncer.offer(route, source) is not None:
                    self.counts["runs"] += 1
        except Exception as exc:
            self.counts["errors"] += 1
            logger.exception("dispatching %s event failed: %s", source, exc)

    def _retry_parked(self) -> None:
        """Reload routes for parked events (at most every `min_refresh_seconds`) and dispatch those now covered."""
        if not self._parked or self._clock() - self._attempted_at < self.min_refresh_seconds:
            return
        if not self.refresh(force=True):
            return  # Prefect unreachable: they stay parked for the next attempt
        parked, self._parked = self._parked, []
        for source, item, received_at in parked:
            self._dispatch(source, item, received_at)

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            self.step(timeout=0.2 if self._parked else 1.0)

    def health(self) -> dict[str, Any]:
        """What `GET /health` answers."""
        return {
            "status": "ok",
            **self.counts,
            "queued": self._queue.qsize(),
            "parked": len(self._parked),
            "ingest_routes": len(self.routes.sources),
            "collect_routes": len(self.routes.projects),
        }

    # --- HTTP ------------------------------------------------------------------------------------
    def server(self, host: str, port: int) -> ThreadingHTTPServer:
        """An HTTP server bound to host:port serving the hooks and /health."""
        listener = self

        class Handler(BaseHTTPRequestHandler):
            @property
            def timeout(self) -> float:  # type: ignore[override]  # read per connection by StreamRequestHandler
                return listener.read_timeout_seconds

            def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _reject(self, source: str, status: HTTPStatus, reason: str) -> None:
                listener.counts["rejected"] += 1
                logger.warning(
                    "rejected %s webhook from %s: HTTP %d %s", source, self.client_address[0], status, reason
                )
                self.close_connection = True
                self._reply(status, {"error": reason})

            def _discard_unread(self) -> None:
                """Drain what the client already sent (bounded), so closing does not reset the connection."""
                with contextlib.suppress(OSError):
                    self.connection.settimeout(0.2)
                    for _ in range(16):
                        if not self.connection.recv(65536):
                            break

            def _read_body(self, source: str) -> bytes | None:
                """The request body, or None after answering why it cannot be read."""
                if self.headers.get("Transfer-Encoding"):
                    self._reject(source, HTTPStatus.BAD_REQUEST, "send the body with a Content-Length, not chunked")
                    return None
                announced = (self.headers.get("Content-Length") or "").strip()
                if not announced.isdigit() or not announced.isascii():
                    what = f"invalid Content-Length {announced[:20]!r}" if announced else "missing Content-Length"
                    self._reject(source, HTTPStatus.BAD_REQUEST, f"{what}: send a JSON object")
                    return None
                length = int(announced)
                if length > listener.max_body_bytes:
                    self._reject(
                        source,
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"body too large: {length} bytes, at most {listener.max_body_bytes}",
                    )
                    self._discard_unread()
                    return None
                try:
                    body = self.rfile.read(length)
                except TimeoutError:
                    body = b""
                if len(body) < length:
                    self._reject(
                        source, HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {length} announced bytes"
                    )
                    return None
                return body

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/health":
                    self._reply(HTTPStatus.OK, listener.health())
                else:
                    self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})

            def do_POST(self) -> None:
                source = self.path.rstrip("/").removeprefix("/hooks/")
                if source not in {"seaweedfs", "s3", "label-studio"}:
                    self._reply(HTTPStatus.NOT_FOUND, {"error": f"unknown hook {self.path[:200]}"})
                    return
                if not listener.authorized(self.headers.get("Authorization")):
                    self._reply(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong bearer token"})
                    return
                body = self._read_body(source)
                if body is None:
                    return
                if not body.strip():
                    self._reject(source, HTTPStatus.BAD_REQUEST, "empty body: send a JSON object")
                    return
                try:
                    payload = json.loads(body)
                except RecursionError:
                    self._reject(source, HTTPStatus.BAD_REQUEST, "body is not JSON: nested too deeply")
                    return
                except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes in no encoding
                    self._reject(source, HTTPStatus.BAD_REQUEST, f"body is not JSON: {str(exc)[:200]}")
                    return
                try:
                    events = listener.accept(source, payload)
                except PayloadError as exc:
                    self._reject(source, HTTPStatus.BAD_REQUEST, str(exc))
                    return
                except Exception as exc:  # a shape the parsers did not foresee: still the sender's error, and answered
                    logger.exception("unexpected %s webhook body", source)
                    self._reject(source, HTTPStatus.BAD_REQUEST, f"malformed payload ({type(exc).__name__})")
                    return
                self._reply(HTTPStatus.ACCEPTED, {"events": events})

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("%s %s", self.address_string(), format % args)

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        return server
