"""Which deployment an event starts, and the debouncer that turns a burst of events into one run per deployment."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from labelflow.triggers.payloads import ObjectEvent

logger = logging.getLogger(__package__)  # "labelflow.triggers": one name for the listener's log lines

INGEST_FLOW = "labelflow-ingest"
COLLECT_FLOW = "labelflow-collect"
# Flow-run states in which a run has not started yet: another event needs no new run while one of these waits.
NOT_STARTED = {"SCHEDULED", "PENDING"}


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


# Keys one run carries as its `keys` parameter. A bigger burst (a bulk upload) runs the full listing instead: past
# a few thousand objects, listing the source costs less than a HEAD each, and the parameter stays small.
MAX_RUN_KEYS = 1000


@dataclass
class _Pending:
    run_id: UUID
    due: float  # monotonic time the run is scheduled for
    route: Route
    source: str
    keys: set[str] | None = None  # object URIs the run is to read; None: it lists its sources
    sent: set[str] | None = None  # the keys its parameters hold (None: none, the full listing)

    @property
    def keys_changed(self) -> bool:
        return self.keys != self.sent


class Debouncer:
    """At most one not-yet-started run per route: the first event schedules a run `window` seconds ahead, and
    every event until it starts is absorbed into it; an event after it started schedules the next one.

    Given `set_keys`, a run triggered by object events reads only the objects they name: the first event's key goes
    into the run's parameters, and `sync` adds those of the events absorbed since (one update per run, not one per
    event). Keys that reach a run only after it started get a run of their own.
    """

    def __init__(
        self,
        window_seconds: float,
        submit: Callable[..., UUID],  # (route, when, source, keys=None) -> run id
        run_state: Callable[[UUID], str | None],
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        set_keys: Callable[[UUID, list[str] | None], bool] | None = None,
        max_keys: int = MAX_RUN_KEYS,
    ) -> None:
        self.window = window_seconds
        self._submit = submit
        self._run_state = run_state
        self._set_keys = set_keys
        self._clock = clock
        self._now = now
        self.max_keys = max_keys
        self._pending: dict[UUID, _Pending] = {}
        self._lock = threading.Lock()
        self.events = 0

    def offer(self, route: Route, source: str = "event", key: str | None = None) -> UUID | None:
        """Account for one event (naming the object URI `key`, if any); returns the id of a run it created, or None
        when it was absorbed."""
        with self._lock:
            self.events += 1
            pending = self._pending.get(route.deployment_id)
            if pending is not None and self._not_started(pending):
                if pending.keys is not None:
                    if key is None or len(pending.keys) >= self.max_keys:
                        pending.keys = None  # the run lists its sources
                    else:
                        pending.keys.add(key)
                return None
            keys = {key} if key is not None and self._set_keys is not None else None
            return self._schedule(route, source, keys).run_id

    def _not_started(self, pending: _Pending) -> bool:
        """True while the run has not started: before its start time, or past it while it still waits for a worker."""
        if self._clock() < pending.due:
            return True
        return (self._run_state(pending.run_id) or "").upper() in NOT_STARTED

    def _schedule(self, route: Route, source: str, keys: set[str] | None) -> _Pending:
        when = self._now() + timedelta(seconds=self.window)
        if keys is None:
            run_id = self._submit(route, when, source)
        else:
            run_id = self._submit(route, when, source, keys=sorted(keys))
        pending = _Pending(run_id, self._clock() + self.window, route, source, keys, set(keys) if keys else None)
        self._pending[route.deployment_id] = pending
        return pending

    def sync(self) -> int:
        """Give each waiting run the keys of the events it absorbed since; returns how many runs it had to create.

        The update comes first, then the run's state: a run still waiting then will start with the new keys. One
        that started meanwhile may have read the old ones, so its new keys get the next run (reading an object twice
        is harmless: ingest is idempotent).
        """
        if self._set_keys is None:
            return 0
        created = 0
        with self._lock:
            for pending in [p for p in self._pending.values() if p.keys_changed]:
                keys = None if pending.keys is None else set(pending.keys)
                updated = self._set_keys(pending.run_id, None if keys is None else sorted(keys))
                if updated and (self._run_state(pending.run_id) or "").upper() in NOT_STARTED:
                    pending.sent = keys
                    continue
                # Started (it may have read only the keys sent before), or deleted (it read none of them).
                late = keys if keys is None or not updated or pending.sent is None else keys - pending.sent
                logger.info(
                    "run %s started or is gone: another run for %s keys", pending.run_id, len(late) if late else "all"
                )
                self._schedule(pending.route, pending.source, late)
                created += 1
        return created
