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
