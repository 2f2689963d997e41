"""What each service of the local stack runs: its command line, environment, ports and health check."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from labelflow.infra import postgres
from labelflow.infra.credentials import Credentials, connection_env
from labelflow.infra.label_studio_env import LABEL_STUDIO_SERVE_MODULE, label_studio_variables
from labelflow.infra.seaweedfs_security import seaweedfs_security_env
from labelflow.infra.stack_config import LOOPBACK, StackConfig, listener_url, seaweedfs_tls_files
from labelflow.layout import PROJECT_DIR, WORK_POOL

if TYPE_CHECKING:
    from labelflow.infra.health_probe import HealthAnswer

MLFLOW_ARTIFACT_BUCKET = "labelflow-mlflow"
TELEMETRY_OFF = {"DO_NOT_TRACK": "true"}


@dataclass
class Service:
    """One server process of the stack: how to start it and how to tell it is healthy."""

    name: str
    title: str
    url: str
    health_url: str
    ports: dict[str, int]
    command: list[str]
    env: dict[str, str]
    healthy_when: Callable[[HealthAnswer], bool] = field(default=lambda r: r.status_code == 200)
    # A health check that is not an HTTP GET (PostgreSQL): (healthy, detail).
    probe: Callable[[], tuple[bool, str]] | None = None
    # The system user the process runs as (None: the caller); PostgreSQL refuses to run as root.
    run_as: str | None = None


def _bin(name: str) -> str:
    """Path of a console script installed beside this interpreter (checked when the service starts)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name) or name


def base_env() -> dict[str, str]:
    """The parent's environment without anything that would steer a child into the wrong Python or server."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PREFECT_API_URL", "MLFLOW_TRACKING_URI"}
    }
    env.update(TELEMETRY_OFF)
    return env


def _loopback_service(
    name: str,
    title: str,
    port: int,
    command: list[str],
    env: dict[str, str],
    *,
    port_name: str = "http",
    health_path: str = "/health",
    healthy_when: Callable[[HealthAnswer], bool] | None = None,
) -> Service:
    """A server on one loopback port, healthy when `health_path` there answers (by default: with 200)."""
    url = f"http://{LOOPBACK}:{port}"
    service = Service(
        name=name,
        title=title,
        url=url,
        health_url=f"{url}{health_path}",
        ports={port_name: port},
        command=command,
        env=env,
    )
    if healthy_when is not None:
        service.healthy_when = healthy_when
    return service


def build_services(config: StackConfig, creds: Credentials) -> list[Service]:
    """The services in start order (PostgreSQL with `--db postgres`, then the event listener first)."""
    database = [_postgres_service(config)] if config.database == "postgres" else []
    return [
        *database,
        build_listener_service(config, creds),
        _seaweedfs_service(config, creds),
        _label_studio_service(config, creds),
        _mlflow_service(config, creds),
        _prefect_service(config, creds),
    ]


def _postgres_service(config: StackConfig) -> Service:
    """One PostgreSQL server with a database each for Label Studio, Prefect and MLflow (as in infra/compose)."""
    url = f"postgresql://{LOOPBACK}:{config.postgres_port}"
    return Service(
        name="postgres",
        title="PostgreSQL (Label Studio, Prefect, MLflow)",
        url=url,
        health_url=url,
        ports={"postgres": config.postgres_port},
        command=postgres.server_command(config),
        env={**base_env(), "LC_ALL": "C.UTF-8"},
        probe=lambda: postgres.is_ready(config),
        run_as=postgres.run_as(),
    )


def _seaweedfs_service(config: StackConfig, creds: Credentials) -> Service:
    """`weed mini`: master, volume, filer and the S3 gateway in one process, each on a pinned port."""
    data = config.data_dir
    s3_url = f"http://{LOOPBACK}:{config.s3_port}"
    s3_config = config.home / "seaweedfs-s3.json"
    return Service(
        name="s3",
        title="SeaweedFS (S3 object store)",
        url=s3_url,
        health_url=f"{s3_url}/healthz",
        ports={
            "s3": config.s3_port,
            "s3-grpc": config.s3_port + 10000,
            "master": config.weed_master_port,
            "master-grpc": config.weed_master_port + 10000,
            "volume": config.weed_volume_port,
            "volume-grpc": config.weed_volume_port + 10000,
            "filer": config.weed_filer_port,
            "filer-grpc": config.weed_filer_port + 10000,
            "admin": config.weed_admin_port,
            "admin-grpc": config.weed_admin_port + 10000,
        },
        command=[
            _bin("weed"),
            "mini",
            f"-dir={data / 'seaweedfs'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-s3.port={config.s3_port}",
            f"-s3.port.grpc={config.s3_port + 10000}",
            f"-s3.config={s3_config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-master.port={config.weed_master_port}",
            f"-master.port.grpc={config.weed_master_port + 10000}",
            "-master.telemetry=false",
            f"-volume.port={config.weed_volume_port}",
            # Every bucket is a SeaweedFS collection with volumes of its own; the automatic limit (free disk / a
            # reserved size) allowed only ~77 volumes here, so a stack with many buckets stopped accepting writes.
            # Volumes are sparse files: a high cap costs nothing until used.
            "-volume.max=2000",
            f"-volume.port.grpc={config.weed_volume_port + 10000}",
            f"-filer.port={config.weed_filer_port}",
            f"-filer.port.grpc={config.weed_filer_port + 10000}",
            # The admin server binds even with its UI off; a default port that is taken silently moves (an explicit
            # one fails instead), so it is pinned like every other port.
            f"-admin.port={config.weed_admin_port}",
            f"-admin.port.grpc={config.weed_admin_port + 10000}",
            "-webdav=false",
            "-admin.ui=false",
            # The master's and filer's HTTP APIs are off: the S3 gateway uses gRPC, and the master's /submit,
            # /vol/grow and /col/delete took anonymous writes and deleted whole buckets. Volume reads and writes
            # need a JWT and every gRPC port needs this stack's client certificate (see seaweedfs_security.py).
            "-disableHttp",
        ],
        # The filer posts new and changed objects under /buckets/ to the event listener, which turns those in a
        # spec's sources into debounced ingest runs. Delivery is asynchronous, so writes never wait for it, but it
        # is serial (one event at a time until it succeeds or fails for good) and SeaweedFS reads a retry count
        # of 0 as "the default, 3" (3 + 6 + 12 s of back-off per event). With no listener running, a few hundred
        # uploads queued for hours ahead of every later event. Hence: the listener is a stack service that runs
        # whenever SeaweedFS does, one retry after 1 s, and only the events the listener uses. A lost event is
        # cheap: the ingest schedule picks its object up.
        env={
            **base_env(),
            "WEED_NOTIFICATION_WEBHOOK_ENABLED": "true",
            "WEED_NOTIFICATION_WEBHOOK_ENDPOINT": f"{listener_url(config)}/hooks/seaweedfs",
            "WEED_NOTIFICATION_WEBHOOK_BEARER_TOKEN": creds.listener_token,
            "WEED_NOTIFICATION_WEBHOOK_TIMEOUT_SECONDS": "5",
            "WEED_NOTIFICATION_WEBHOOK_MAX_RETRIES": "1",
            "WEED_NOTIFICATION_WEBHOOK_BACKOFF_SECONDS": "1",
            "WEED_NOTIFICATION_WEBHOOK_MAX_BACKOFF_SECONDS": "1",
            # Lists are whitespace-separated in SeaweedFS's environment configuration.
            "WEED_NOTIFICATION_WEBHOOK_EVENT_TYPES": "create update rename",
            "WEED_NOTIFICATION_WEBHOOK_PATH_PREFIXES": "/buckets/",
            **seaweedfs_security_env(
                seaweedfs_tls_files(config),
                write_key=creds.seaweed_jwt_write_key,
                read_key=creds.seaweed_jwt_read_key,
                filer_write_key=creds.seaweed_filer_jwt_write_key,
                filer_read_key=creds.seaweed_filer_jwt_read_key,
            ),
        },
    )


def _label_studio_service(config: StackConfig, creds: Credentials) -> Service:
    """Label Studio from its own virtual environment: migrations and admin once, then gunicorn with several workers."""
    ls_env = base_env()
    ls_env.update(label_studio_variables(config, creds))
    return _loopback_service(
        "label-studio",
        "Label Studio",
        config.label_studio_port,
        # `label-studio start` is Django's development server, one process: under a team of annotators it queued
        # requests and logged "database is locked". See infra/local/label_studio_settings/.
        command=[
            str(config.label_studio_venv / "bin" / "python"),
            "-m",
            LABEL_STUDIO_SERVE_MODULE,
            LOOPBACK,
            str(config.label_studio_port),
            str(config.label_studio_workers),
        ],
        env=ls_env,
    )


def _mlflow_service(config: StackConfig, creds: Credentials) -> Service:
    """The MLflow tracking server: run metadata in SQLite or PostgreSQL, artifacts in the stack's own S3 bucket."""
    data = config.data_dir
    s3_url = f"http://{LOOPBACK}:{config.s3_port}"
    mlflow_env = base_env()
    mlflow_env.update(
        {
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_S3_ENDPOINT_URL": s3_url,
            "AWS_ACCESS_KEY_ID": creds.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": creds.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    if config.database == "postgres":  # in the environment, not on a command line any local user can read
        mlflow_env["MLFLOW_BACKEND_STORE_URI"] = postgres.database_url(config, creds.postgres_password, "mlflow")
        store: list[str] = []
    else:
        store = ["--backend-store-uri", f"sqlite:///{data / 'mlflow' / 'mlflow.db'}"]
    return _loopback_service(
        "mlflow",
        "MLflow tracking server",
        config.mlflow_port,
        command=[
            _bin("mlflow"),
            "server",
            "--host",
            LOOPBACK,
            "--port",
            str(config.mlflow_port),
            *store,
            "--artifacts-destination",
            f"s3://{MLFLOW_ARTIFACT_BUCKET}/artifacts",
            "--workers",
            "1",
        ],
        env=mlflow_env,
    )


def _prefect_service(config: StackConfig, creds: Credentials) -> Service:
    """The Prefect server with its SQLite database under the stack's data directory, or on PostgreSQL."""
    data = config.data_dir
    prefect_url = f"http://{LOOPBACK}:{config.prefect_port}"
    prefect_env = base_env()
    prefect_env.update(
        {
            "PREFECT_HOME": str(data / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": (
                postgres.database_url(config, creds.postgres_password, "prefect", driver="postgresql+asyncpg")
                if config.database == "postgres"
                else f"sqlite+aiosqlite:///{data / 'prefect' / 'prefect.db'}"
            ),
            "PREFECT_UI_API_URL": f"{prefect_url}/api",
            "PREFECT_SERVER_API_HOST": LOOPBACK,
            "PREFECT_SERVER_API_PORT": str(config.prefect_port),
        }
    )
    return _loopback_service(
        "prefect",
        "Prefect server",
        config.prefect_port,
        command=[_bin("prefect"), "server", "start", "--host", LOOPBACK, "--port", str(config.prefect_port)],
        env=prefect_env,
        health_path="/api/health",
        healthy_when=lambda r: r.status_code == 200 and r.text.strip() == "true",
    )


def build_listener_service(config: StackConfig, creds: Credentials) -> Service:
    """`labelflow listen`: webhooks from the filer and Label Studio -> debounced runs; up whenever SeaweedFS is."""
    env = base_env()
    env.update(connection_env(config, creds))  # its own settings: it may start before the stack file exists
    env["LABELFLOW_HOME"] = str(config.home)
    return _loopback_service(
        "listener",
        "Event listener (webhooks -> runs)",
        config.listener_port,
        command=[_bin("labelflow"), "listen", "--port", str(config.listener_port)],
        env=env,
    )


def build_worker_service(config: StackConfig) -> Service:
    """The optional sixth service: `labelflow worker`, a Prefect process worker for the stack's work pool."""
    env = base_env()
    env["LABELFLOW_HOME"] = str(config.home)  # `--project-dir` sets LABELFLOW_PROJECT_DIR for the flow runs
    return _loopback_service(
        "worker",
        "Prefect worker",
        config.worker_health_port,
        command=[
            _bin("labelflow"),
            "worker",
            "--pool",
            WORK_POOL,
            "--health-port",
            str(config.worker_health_port),
            "--project-dir",
            str(PROJECT_DIR),
        ],
        env=env,
        port_name="health",
    )
