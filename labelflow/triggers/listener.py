"""The event listener: queues the events of accepted webhooks and dispatches them to debounced runs."""

from __future__ import annotations

import hmac
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from labelflow.triggers.payloads import (
    ObjectEvent,
    PayloadError,
    parse_label_studio_event,
    parse_s3_event,
    parse_seaweedfs_event,
)
from labelflow.triggers.routing import Debouncer, Route, Routes
from labelflow.triggers.server import MAX_BODY_BYTES, READ_TIMEOUT_SECONDS, WebhookServer

logger = logging.getLogger(__package__)  # "labelflow.triggers": one name for the listener's log lines


class EventListener:
    """Receives webhooks, answers at once, and turns events into debounced runs on a background thread.

    An event is matched against routes loaded after it arrived: one that matches nothing in older routes waits
    ("parked") for the next refresh, since its deployment may have been registered a moment before its upload.
    Refreshes happen at most every `min_refresh_seconds`, and every `refresh_seconds` regardless. The keys of
    object events absorbed into waiting runs reach those runs at most every `sync_seconds`.
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
        sync_seconds: float = 1.0,
    ) -> None:
        self.token = token
        self.debouncer = debouncer
        self._load_routes = load_routes
        self._on_routes = on_routes
        self.refresh_seconds = refresh_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.sync_seconds = sync_seconds
        self._synced_at = float("-inf")
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

    def server(self, host: str, port: int) -> WebhookServer:
        """An HTTP server bound to host:port serving the hooks and /health."""
        return WebhookServer(self, host, port)

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
        """Dispatch one queued event (waiting up to `timeout` for one), then retry parked events, pass absorbed keys
        on to their runs and refresh."""
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
        self._sync_keys()
        self.refresh()

    def _sync_keys(self) -> None:
        """Pass the keys of absorbed events on to their waiting runs (one update per run, every `sync_seconds`)."""
        if self._clock() - self._synced_at < self.sync_seconds:
            return
        self._synced_at = self._clock()
        try:
            self.counts["runs"] += self.debouncer.sync()
        except Exception as exc:  # Prefect unreachable: the keys stay pending for the next attempt
            self.counts["errors"] += 1
            logger.warning("could not pass new keys on to waiting runs: %s", exc)

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
            key = f"s3://{item.bucket}/{item.key}" if isinstance(item, ObjectEvent) else None
            for route in routes:
                if self.debouncer.offer(route, source, key=key) is not None:
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
