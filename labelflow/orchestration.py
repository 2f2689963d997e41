"""Per-spec deployments from prefect.yaml, the work pool, the worker command and the event listener's wiring."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from labelflow.layout import WORK_POOL
from labelflow.tasks.spec import ProjectSpec

logger = logging.getLogger("labelflow.orchestration")

STAGES = ("ingest", "collect", "pipeline")  # deployment names in prefect.yaml that `labelflow deploy` copies
_EVERY = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class DeployError(RuntimeError):
    """prefect.yaml or a deploy option is unusable; the message says what to fix."""


def parse_every(text: str | None) -> timedelta | None:
    """`30s`, `10m`, `2h`, `1d` -> a timedelta; `off`, `0` or nothing -> no schedule."""
    if text is None or text.strip().lower() in {"", "off", "none", "0"}:
        return None
    match = _EVERY.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise DeployError(f"invalid interval {text!r}: use a number and a unit s/m/h/d, e.g. 10m, or `off`")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class DeploymentTemplate:
    """One deployment of prefect.yaml."""

    name: str
    entrypoint: str
    description: str
    tags: list[str]
    work_pool: str


def read_templates(prefect_yaml: Path) -> dict[str, DeploymentTemplate]:
    """The deployments prefect.yaml declares, by name."""
    try:
        data = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DeployError(f"cannot read {prefect_yaml}: {exc}") from None
    templates = {}
    for entry in data.get("deployments") or []:
        try:
            templates[entry["name"]] = DeploymentTemplate(
                name=entry["name"],
                entrypoint=entry["entrypoint"],
                description=entry.get("description", ""),
                tags=list(entry.get("tags") or []),
                work_pool=(entry.get("work_pool") or {}).get("name") or WORK_POOL,
            )
        except (KeyError, TypeError) as exc:
            raise DeployError(f"{prefect_yaml}: a deployment lacks {exc}") from None
    missing = [stage for stage in STAGES if stage not in templates]
    if missing:
        raise DeployError(f"{prefect_yaml} declares no deployment named {missing}")
    return templates


def ensure_work_pool(client: Any, name: str) -> None:
    """Create the process work pool if it does not exist."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        client.read_work_pool(name)
        return
    except ObjectNotFound:
        pass
    template = ProcessWorker.get_default_base_job_template()
    with contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))


@dataclass(frozen=True)
class Deployed:
    """What `labelflow deploy` registered for one stage."""

    stage: str
    deployment: str  # flow/name, as `prefect deployment run` takes it
    deployment_id: UUID
    every: timedelta | None


def deploy_spec(
    client: Any,
    spec: ProjectSpec,
    spec_path: Path,
    every: dict[str, timedelta | None],
    project_dir: Path,
    pool: str | None = None,
) -> list[Deployed]:
    """Register this spec's copy of each stage deployment with its schedule (replacing this spec's earlier ones)."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.flows import load_flow_arguments_from_entrypoint
    from prefect.utilities.callables import parameter_schema_from_entrypoint

    templates = read_templates(project_dir / "prefect.yaml")
    spec_path = spec_path.resolve()
    result = []
    for work_pool in {pool or templates[stage].work_pool for stage in STAGES}:
        ensure_work_pool(client, work_pool)
    for stage in STAGES:
        template = templates[stage]
        work_pool = pool or template.work_pool
        file_part, func = template.entrypoint.rsplit(":", 1)
        absolute_entrypoint = f"{project_dir / file_part}:{func}"
        flow_name = load_flow_arguments_from_entrypoint(absolute_entrypoint, arguments={"name"}).get("name")
        if not flow_name:
            raise DeployError(f"{template.entrypoint}: the @flow decorator has no name")
        interval = every.get(stage)
        schedules = []
        if interval is not None:
            schedule = IntervalSchedule(interval=interval, anchor_date=datetime.now(UTC), timezone="UTC")
            schedules.append(DeploymentScheduleCreate(schedule=schedule, active=True, slug=f"{stage}-{spec.slug}"))
        deployment_id = client.create_deployment(
            flow_id=client.create_flow_from_name(flow_name),
            name=spec.slug,
            entrypoint=template.entrypoint,
            work_pool_name=work_pool,
            parameters={"spec_path": str(spec_path)},
            parameter_openapi_schema=parameter_schema_from_entrypoint(absolute_entrypoint).model_dump_for_openapi(),
            description=f"{template.description} Spec: {spec.name} ({spec_path}).",
            tags=sorted({*template.tags, "labelflow", "labelflow:spec", f"project:{spec.slug}"}),
            schedules=schedules,
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(project_dir)}}],
            path=str(project_dir),
            enforce_parameter_schema=True,
        )
        if schedules:  # create the first runs now instead of at the scheduler's next loop (up to a minute later)
            client._client.post(f"/deployments/{deployment_id}/schedule", json={}).raise_for_status()
        result.append(Deployed(stage, f"{flow_name}/{spec.slug}", deployment_id, interval))
    return result


def worker_environment(project_dir: Path) -> dict[str, str]:
    """What the worker and its flow-run processes need: the project on the path, telemetry off."""
    from labelflow.runtime import TELEMETRY_OFF

    env = {**os.environ, **TELEMETRY_OFF, "LABELFLOW_PROJECT_DIR": str(project_dir)}
    env.setdefault("LABELFLOW_HOME", str((project_dir / ".labelflow").resolve()))
    return env


def prefect_worker_command(pool: str, health_port: int | None) -> list[str]:
    """`prefect worker start` for the pool, with Prefect's own health check when a port is given."""
    prefect = Path(sys.executable).parent / "prefect"
    command = [str(prefect), "worker", "start", "--pool", pool, "--type", "process", "--name", f"labelflow-{pool}"]
    return command + (["--with-healthcheck"] if health_port else [])


def serve_until_stopped(server: Any, on_stop: Callable[[], None]) -> None:
    """Serve the listener until SIGINT/SIGTERM, then stop dispatching and close the socket."""

    def stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        on_stop()
        server.server_close()


def build_listener(client: Any, listener_url: str, token: str, store: Any, ls: Any, debounce_seconds: float) -> Any:
    """The event listener wired to Prefect (routes, runs), the object store (project records) and Label Studio."""
    from labelflow.integrations.label_studio import LabelStudioError
    from labelflow.tasks.ingest import read_project_record
    from labelflow.tasks.spec import load_spec
    from labelflow.triggers import LABEL_STUDIO_ACTIONS, Debouncer, EventListener, PrefectRuns, Routes, build_routes

    runs = PrefectRuns(client)
    debouncer = Debouncer(debounce_seconds, runs.submit, runs.state, set_keys=runs.set_keys)
    hooked: set[int] = set()
    hook_url = f"{listener_url.rstrip('/')}/hooks/label-studio"

    def project_id_of(spec: ProjectSpec) -> int | None:
        record = read_project_record(store, spec)
        return int(record["project_id"]) if record else None

    def load_routes() -> Routes:
        return build_routes(runs.labelflow_deployments(), load_spec, project_id_of)

    def ensure_webhooks(routes: Routes) -> None:
        for project_id in routes.projects:
            if project_id in hooked:
                continue
            try:
                ls.ensure_webhook(project_id, hook_url, LABEL_STUDIO_ACTIONS, {"Authorization": f"Bearer {token}"})
                hooked.add(project_id)
                logger.info("Label Studio project %d posts annotation events to %s", project_id, hook_url)
            except LabelStudioError as exc:  # e.g. SSRF protection refusing the URL: say so, keep the schedule
                logger.warning("cannot register the webhook of project %d at %s: %s", project_id, hook_url, exc)

    return EventListener(token, debouncer, load_routes, on_routes=ensure_webhooks)
