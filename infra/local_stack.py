"""The embedded local service stack: SeaweedFS (S3), Label Studio, MLflow and Prefect on 127.0.0.1, no Docker.

`up`, `down` and `status` live here and put together: stack_config (home, paths, ports), credentials (secrets in
owner-only files), services (what each service runs), supervisor (start, find and stop processes),
label_studio_env (Label Studio's own virtualenv and settings) and bootstrap (setup once the servers answer).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

# Only what `status` and `down` need is imported here; `up`'s setup (bootstrap with its HTTP and S3 clients, the
# PostgreSQL and Label Studio installers) is imported where `up` uses it, so `labelflow status` stays fast.
from labelflow.infra.credentials import (
    Credentials,
    connection_env,
    private_umask,
    remove_group_and_other_access,
    seaweedfs_identities,
    write_private_json,
)
from labelflow.infra.services import Service, base_env, build_services, build_worker_service
from labelflow.infra.stack_config import LOOPBACK, StackConfig, StackError, port_is_free
from labelflow.infra.supervisor import FILE_PRIVACY_VERSION, ServiceSupervisor
from labelflow.integrations.stack_home import STACK_FILE_NAME

# What the CLI imports from here (`up`, `down`, `status`, `demo`).
__all__ = ["LocalStack", "ServiceStatus", "StackConfig", "StackError", "UpReport"]

# How long `status` waits for a health endpoint to connect and to answer: the probes run at once, so this bounds
# the whole command when a server hangs (`up` waits patiently instead, see supervisor._wait_healthy).
STATUS_PROBE_SECONDS = 2.0


@dataclass
class ServiceStatus:
    """What `status` reports for one service."""

    name: str
    title: str
    url: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str
    log: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dict(self.__dict__)


@dataclass
class UpReport:
    """Outcome of `up` for one service."""

    name: str
    action: str  # "started" or "already running"
    seconds: float
    url: str


def outdated_reason(service: Service, state: dict[str, Any] | None) -> str | None:
    """Why a running service started by an earlier `up` must be restarted to be what this labelflow starts, or None."""
    if state is None:
        return None
    if state.get("file_privacy", 0) < FILE_PRIVACY_VERSION:
        # Its umask is fixed at start: until restarted, every file it creates stays readable by other users.
        return "started by an older labelflow: its new files were world-readable"
    recorded = state.get("command")
    if service.name == "label-studio" and isinstance(recorded, list) and recorded != service.command:
        # An older labelflow ran Label Studio on Django's development server (`label-studio start`): one process
        # that queued a team's requests; the data directory is the same, so a restart only changes the server.
        if "start" in recorded[1:3]:
            return "it runs Django's development server; labelflow now serves Label Studio with gunicorn"
        return "its command changed"
    return None


class LocalStack(ServiceSupervisor):
    """Starts, checks and stops the local services; state, logs and data live under `config.home`."""

    # --- setup -----------------------------------------------------------------------------------
    def ensure_label_studio_env(self, echo: Callable[[str], None] = lambda _: None) -> None:
        """Create Label Studio's own virtual environment from the locked requirements, once."""
        from labelflow.infra.label_studio_env import ensure_label_studio_venv

        ensure_label_studio_venv(self.config, self.log_path("label-studio-install"), base_env(), echo)

    def _write_seaweed_identities(self, creds: Credentials) -> None:
        """SeaweedFS's S3 identities file (read when it starts; part of its configuration digest)."""
        write_private_json(self.config.home / "seaweedfs-s3.json", seaweedfs_identities(creds))

    def make_home_private(self) -> None:
        """Make everything under the stack home owner-only (a home from an older labelflow had 0644 files)."""
        home = self.config.home
        home.chmod(0o700)
        for entry in home.iterdir():
            # Label Studio's environment holds no secrets, is large, and may be a link to a shared one.
            if entry.name == "venvs" or entry.is_symlink():
                continue
            remove_group_and_other_access(entry)

    def _seaweedfs_config_digest(self, service: Service) -> str:
        """What SeaweedFS reads only when it starts: a running one with another digest is restarted by `up`."""
        path = self.config.home / "seaweedfs-s3.json"
        identities = path.read_bytes() if path.is_file() else b""
        weed_env = sorted((k, v) for k, v in service.env.items() if k.startswith("WEED_"))
        material = json.dumps([service.command, weed_env]).encode() + identities
        return hashlib.sha256(material).hexdigest()

    def _state_extras(self, service: Service) -> dict[str, Any]:
        """SeaweedFS's state records the digest of its start-time configuration (compared by `_up`)."""
        return {"config_digest": self._seaweedfs_config_digest(service)} if service.name == "s3" else {}

    # --- lifecycle -------------------------------------------------------------------------------
    def _services(self, creds: Credentials, with_worker: bool = False) -> list[Service]:
        """The listener and the four servers, plus the worker when asked for or already started."""
        services = build_services(self.config, creds)
        if with_worker or self._read_state("worker") is not None:
            services.append(build_worker_service(self.config))
        return services

    def up(self, echo: Callable[[str], None] = lambda _: None, with_worker: bool = False) -> list[UpReport]:
        """Start every service that is not running, wait for health, publish the connection file."""
        with private_umask():  # the directories `up` creates itself (logs, run, data/...) are owner-only too
            reports = self._up(echo, with_worker)
            # Again at the end: SeaweedFS writes its *.vif volume descriptors 0644 whatever the umask.
            self.make_home_private()
        return reports

    def _up(self, echo: Callable[[str], None], with_worker: bool) -> list[UpReport]:
        from labelflow.infra import postgres
        from labelflow.infra.seaweedfs_security import ensure_grpc_tls

        self._echo = echo
        self.config.home.mkdir(parents=True, exist_ok=True)
        self.make_home_private()
        creds = Credentials.load_or_create(self.config.home)
        ensure_grpc_tls(self.config.seaweedfs_tls_dir)
        self._write_seaweed_identities(creds)
        self._record_database()
        services = self._services(creds, with_worker)
        servers = [s for s in services if s.name != "worker"]
        weed_service = next(s for s in services if s.name == "s3")
        weed_state = self._read_state("s3") or {}
        if self._process("s3") is not None and weed_state.get("config_digest") != self._seaweedfs_config_digest(
            weed_service
        ):
            # Started by an older labelflow or with other keys: its access control is only read at start.
            echo("restarting s3 (its security configuration changed) ...")
            self.stop("s3")
        for service in services:
            why = outdated_reason(service, self._read_state(service.name))
            if why is not None and self._process(service.name) is not None:
                echo(f"restarting {service.name} ({why}) ...")
                self.stop(service.name)
        running = [s for s in services if self._process(s.name) is not None]
        to_start = [s for s in services if s not in running]
        busy = [
            f"port {port} ({service.name} {role})"
            for service in to_start
            for role, port in service.ports.items()
            if not port_is_free(port)
        ]
        if busy:
            raise StackError(
                "cannot start: " + ", ".join(busy) + " already in use by another process. "
                "Stop that process or choose other ports (LABELFLOW_STACK_*_PORT, see `labelflow up --help`)."
            )
        if any(s.name == "label-studio" for s in to_start):
            self.ensure_label_studio_env(echo)
        started_at: dict[str, float] = {s.name: time.monotonic() for s in running}
        durations: dict[str, float] = {}
        database = [s for s in services if s.name == "postgres"]
        if database:  # before every other server: Label Studio, Prefect and MLflow migrate their databases at start
            if database[0] in to_start:
                postgres.ensure_cluster(self.config, creds.postgres_password)
                echo("starting postgres ...")
                started_at["postgres"] = time.monotonic()
                self._start(database[0])
                durations.update(self._wait_healthy(database, started_at))
            for name in postgres.ensure_databases(self.config, creds.postgres_password):
                echo(f"created database {name}")
        for sub in ("seaweedfs", "label-studio", "mlflow", "prefect"):
            (self.config.data_dir / sub).mkdir(parents=True, exist_ok=True)

        for service in [s for s in to_start if s.name not in {"worker", "s3", "postgres"}]:
            echo(f"starting {service.name} ...")
            started_at[service.name] = time.monotonic()
            self._start(service)
        weed = [s for s in to_start if s.name == "s3"]
        if weed:  # the filer notifies from its first write on: start it once the listener answers (~10 s, while
            # the slow servers start), or its first events go nowhere and leak in its dead-letter queue
            durations.update(self._wait_healthy([s for s in servers if s.name == "listener"], started_at))
            echo(f"starting {weed[0].name} ...")
            started_at[weed[0].name] = time.monotonic()
            self._start(weed[0])
        durations.update(self._wait_healthy([s for s in servers if s.name not in durations], started_at))

        self._after_start(creds)
        self._write_stack_file(creds, servers)
        worker = [s for s in to_start if s.name == "worker"]
        if worker:  # after the stack file: the worker reads its connection settings from it
            echo("starting worker ...")
            started_at["worker"] = time.monotonic()
            self._start(worker[0])
        if any(s.name == "worker" for s in services):
            durations.update(self._wait_healthy([s for s in services if s.name == "worker"], started_at))
        names_started = {s.name for s in to_start}
        return [
            UpReport(
                name=s.name,
                action="started" if s.name in names_started else "already running",
                seconds=round(durations[s.name], 1) if s.name in names_started else 0.0,
                url=s.url,
            )
            for s in services
        ]

    def _record_database(self) -> None:
        """Keep the database `up` was asked for in the home; refuse to switch under running services."""
        recorded = self.config.recorded_database
        wanted = self.config.database
        if (recorded or "sqlite") != wanted:  # a home from before database.json ran on SQLite
            running = [
                name
                for name in ("postgres", "listener", "s3", "label-studio", "mlflow", "prefect", "worker")
                if self.running(name)
            ]
            if running:
                raise StackError(
                    f"the stack runs on {recorded or 'sqlite'}: stop it with `labelflow down` before `up --db {wanted}` "
                    f"(each database keeps its own projects, flow runs and experiments)"
                )
        if recorded != wanted:
            write_private_json(self.config.database_file, {"db": wanted})
        self.config = self.config.model_copy(update={"db": wanted})

    def _after_start(self, creds: Credentials) -> None:
        """One-off setup that needs the servers: the MLflow artifact bucket and a working LS token."""
        from labelflow.infra.bootstrap import ensure_label_studio_token, ensure_mlflow_artifact_bucket

        ensure_mlflow_artifact_bucket(self.config, creds, self.log_path("s3"))
        ensure_label_studio_token(self.config, creds, self.log_path("label-studio"))

    def _write_stack_file(self, creds: Credentials, services: list[Service]) -> None:
        data = {
            "env": connection_env(self.config, creds),
            "services": {s.name: s.url for s in services},
            "label_studio_login": {
                "username": creds.label_studio_username,
                "password": creds.label_studio_password,
            },
        }
        # Created 0600, never briefly world-readable (write_text + chmod left a window).
        write_private_json(self.config.home / STACK_FILE_NAME, data)

    def down(self) -> dict[str, str]:
        """Stop exactly the processes this stack started; report what happened to each."""
        outcome = {s.name: self.stop(s.name) for s in reversed(self._services(Credentials.placeholder()))}
        (self.config.home / STACK_FILE_NAME).unlink(missing_ok=True)
        return outcome

    def recorded_config(self) -> StackConfig:
        """This stack's configuration with the ports its running services were started with (run/*.json)."""
        recorded: dict[str, dict[str, int]] = {}
        for name in ("postgres", "listener", "s3", "label-studio", "mlflow", "prefect", "worker"):
            state = self._read_state(name)
            if state and isinstance(state.get("ports"), dict):
                recorded[name] = state["ports"]
        return self.config.with_ports(recorded)

    def status(self) -> list[ServiceStatus]:
        """Each service: whether its process runs, whether its health check passes, its URL and log."""
        # Probe the ports this home's services were started with, not the defaults (another stack may own those).
        services = LocalStack(self.recorded_config())._services(Credentials.placeholder())
        processes = {service.name: self._process(service.name) for service in services}
        running = [service for service in services if processes[service.name] is not None]
        # All at once: one after another, the probes of busy servers added up.
        with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            probes = {s.name: pool.submit(self._probe, s, STATUS_PROBE_SECONDS) for s in running}
            outcomes = {name: probe.result() for name, probe in probes.items()}
        result = []
        for service in services:
            proc = processes[service.name]
            healthy, detail = outcomes.get(service.name, (False, "not running"))
            result.append(
                ServiceStatus(
                    name=service.name,
                    title=service.title,
                    url=service.url,
                    pid=proc.pid if proc else None,
                    running=proc is not None,
                    healthy=healthy,
                    detail=detail,
                    log=str(self.log_path(service.name)),
                )
            )
        return result

    def connection(self) -> dict[str, Any]:
        """Machine-readable URLs and local credentials (for `status --json`)."""
        creds = Credentials.load_or_create(self.config.home)
        config = self.recorded_config()
        return {
            "home": str(config.home),
            "database": config.database,
            "env": connection_env(config, creds),
            "label_studio_login": {
                "url": f"http://{LOOPBACK}:{config.label_studio_port}",
                "username": creds.label_studio_username,
                "password": creds.label_studio_password,
            },
        }
