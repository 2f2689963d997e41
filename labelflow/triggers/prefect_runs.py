"""The listener's Prefect client: the deployments events can start, and the runs it schedules and inspects."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from labelflow.triggers.routing import COLLECT_FLOW, INGEST_FLOW, Route

logger = logging.getLogger(__package__)  # "labelflow.triggers": one name for the listener's log lines


class PrefectRuns:
    """Creates and inspects flow runs of labelflow's deployments through the Prefect API."""

    def __init__(self, client: Any) -> None:
        self.client = client  # a sync PrefectClient (get_client(sync_client=True)), already entered

    def submit(self, route: Route, when: datetime, source: str, keys: list[str] | None = None) -> UUID:
        """Schedule one run of the route's deployment at `when`, tagged with what triggered it; given `keys` (object
        URIs), the run reads only those objects (the ingest flow's `keys` parameter)."""
        from prefect.states import Scheduled

        run = self.client.create_flow_run_from_deployment(
            route.deployment_id,
            parameters={} if keys is None else {"keys": keys},
            state=Scheduled(scheduled_time=when),
            tags=["labelflow", f"trigger:{source}"],
        )
        named = "" if keys is None else f", {len(keys)} keys"
        logger.info("scheduled %s for %s at %s (trigger: %s%s)", route.deployment, route.project, when, source, named)
        return run.id

    def set_keys(self, run_id: UUID, keys: list[str] | None) -> bool:
        """Change the keys a scheduled run reads (None: it lists its sources); its other parameters stay.

        False when the run no longer exists (deleted from the UI, say).
        """
        from prefect.exceptions import ObjectNotFound

        try:
            # Prefect replaces a run's parameters as a whole: merge with those the run was created with.
            parameters = dict(self.client.read_flow_run(run_id).parameters or {})
            self.client.update_flow_run(run_id, parameters={**parameters, "keys": keys})
        except ObjectNotFound:
            return False
        return True

    def state(self, run_id: UUID) -> str | None:
        """The run's state type, e.g. SCHEDULED, RUNNING, COMPLETED; None for a run deleted meanwhile."""
        from prefect.exceptions import ObjectNotFound

        try:
            run = self.client.read_flow_run(run_id)
        except ObjectNotFound:
            return None  # the next event schedules a new run instead of failing on this one forever
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
