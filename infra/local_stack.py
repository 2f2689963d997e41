"""The embedded local service stack: SeaweedFS (S3), Label Studio, MLflow and Prefect on 127.0.0.1, no Docker."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from labelflow.infra.health_wait import HealthWait, HealthWaitError, WaitPolicy, Watched
from labelflow.infra.ports import STACK_PORTS
from labelflow.infra.seaweedfs_security import TLS_DIR_NAME, ensure_grpc_tls, seaweedfs_security_env, tls_files
from labelflow.integrations.object_store import ObjectStore, ObjectStoreError
from labelflow.integrations.settings import STACK_FILE_NAME, S3Settings, labelflow_home
from labelflow.layout import PROJECT_DIR, WORK_POOL

LOOPBACK = "127.0.0.1"
MLFLOW_ARTIFACT_BUCKET = "labelflow-mlflow"
LABEL_STUDIO_REQUIREMENTS = Path(__file__).parent / "local" / "label-studio-requirements.txt"
TELEMETRY_OFF = {"DO_NOT_TRACK": "true"}


class StackError(RuntimeError):
    """The local stack could not be brought to the requested state; the message says which service and why."""


class StackConfig(BaseSettings):
    """Where the local stack keeps its state and which loopback ports it uses (LABELFLOW_STACK_* overrides)."""

    model_config = SettingsConfigDict(env_prefix="LABELFLOW_STACK_", extra="ignore")

    home: Path = Field(default_factory=labelflow_home)
    s3_port: int = STACK_PORTS["s3_port"][1]
    label_studio_port: int = STACK_PORTS["label_studio_port"][1]
    mlflow_port: int = STACK_PORTS["mlflow_port"][1]
    prefect_port: int = STACK_PORTS["prefect_port"][1]
    weed_master_port: int = STACK_PORTS["weed_master_port"][1]
    weed_volume_port: int = STACK_PORTS["weed_volume_port"][1]
    weed_filer_port: int = STACK_PORTS["weed_filer_port"][1]
    weed_admin_port: int = STACK_PORTS["weed_admin_port"][1]
    listener_port: int = STACK_PORTS["listener_port"][1]
    worker_health_port: int = STACK_PORTS["worker_health_port"][1]
    # A starting service is waited for while it makes progress (its log grows or it uses CPU), up to a cap.
    start_stall_seconds: float = 120.0
    start_max_seconds: float = 1200.0

    @field_validator(
        "s3_port",
        "label_studio_port",
        "mlflow_port",
        "prefect_port",
        "weed_master_port",
        "weed_volume_port",
        "weed_filer_port",
        "weed_admin_port",
        "listener_port",
        "worker_health_port",
    )
    @classmethod
    def _port_range(cls, value: int) -> int:
        # SeaweedFS gRPC ports are the HTTP port + 10000.
        if not 1024 <= value <= 55535:
            raise ValueError("ports must be between 1024 and 55535 (SeaweedFS uses port+10000 for gRPC)")
        return value

    @property
    def logs_dir(self) -> Path:
        """One log file per service."""
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        """One state file per running service (pid and process start time)."""
        return self.home / "run"

    @property
    def data_dir(self) -> Path:
        """Persistent data of every service."""
        return self.home / "data"

    @property
    def label_studio_venv(self) -> Path:
        """Label Studio's own virtual environment (its pins clash with the pipeline's)."""
        return self.home / "venvs" / "label-studio"

    @property
    def seaweedfs_tls_dir(self) -> Path:
        """SeaweedFS's private CA, certificate and key for mutual TLS on its gRPC ports."""
        return self.home / TLS_DIR_NAME

    def with_ports(self, recorded: dict[str, dict[str, int]]) -> StackConfig:
        """This configuration with the ports a stack recorded when it started its services (by service name)."""
        fields = {
            ("s3", "s3"): "s3_port",
            ("s3", "master"): "weed_master_port",
            ("s3", "volume"): "weed_volume_port",
            ("s3", "filer"): "weed_filer_port",
            ("s3", "admin"): "weed_admin_port",
            ("label-studio", "http"): "label_studio_port",
            ("mlflow", "http"): "mlflow_port",
            ("prefect", "http"): "prefect_port",
            ("listener", "http"): "listener_port",
            ("worker", "health"): "worker_health_port",
        }
        update = {
            name: int(recorded[service][role])
            for (service, role), name in fields.items()
            if isinstance(recorded.get(service), dict) and isinstance(recorded[service].get(role), int)
        }
        return self.model_copy(update=update)


# Read-only S3 identity for Label Studio's storage connections: its key sits in Label Studio's database.
S3_READER_ACCESS_KEY = "labelflow-storage-reader"


def _new_secret() -> str:
    return secrets.token_hex(20)


@dataclass(frozen=True)
class Credentials:
    """Local-only credentials, generated once per stack home and kept in credentials.json (mode 600)."""

    s3_access_key: str
    s3_secret_key: str
    label_studio_username: str
    label_studio_password: str
    label_studio_token: str
    listener_token: str = ""  # bearer token the object store and Label Studio send to the event listener
    s3_reader_access_key: str = ""  # read and list only: what Label Studio's storage connections use
    s3_reader_secret_key: str = ""
    # SeaweedFS's JWT keys: volume writes and reads (signed by the master), filer writes and reads (by the gateway).
    seaweed_jwt_write_key: str = ""
    seaweed_jwt_read_key: str = ""
    seaweed_filer_jwt_write_key: str = ""
    seaweed_filer_jwt_read_key: str = ""

    @classmethod
    def placeholder(cls) -> Credentials:
        """Stand-in values for building service definitions when only names, ports and URLs are needed."""
        return cls(*(["-"] * len(dataclasses.fields(cls))))

    def _with_missing_keys(self) -> Credentials:
        """Keys added by later labelflow versions, generated for a stack home that predates them."""
        missing: dict[str, str] = {
            name: _new_secret()
            for name in (
                "listener_token",
                "s3_reader_secret_key",
                "seaweed_jwt_write_key",
                "seaweed_jwt_read_key",
                "seaweed_filer_jwt_write_key",
                "seaweed_filer_jwt_read_key",
            )
            if not getattr(self, name)
        }
        if not self.s3_reader_access_key:
            missing["s3_reader_access_key"] = S3_READER_ACCESS_KEY
        return dataclasses.replace(self, **missing) if missing else self

    @classmethod
    def load_or_create(cls, home: Path) -> Credentials:
        """Read the stack's credentials, creating random ones the first time (and keys added since)."""
        path = home / "credentials.json"
        if path.is_file():
            stored = cls(**json.loads(path.read_text(encoding="utf-8")))
            creds = stored._with_missing_keys()
            if creds != stored or stat.S_IMODE(path.stat().st_mode) != 0o600:
                _write_private_json(path, creds.__dict__)
            return creds
        creds = cls(
            s3_access_key="labelflow",
            s3_secret_key=_new_secret(),
            label_studio_username="admin@labelflow.local",
            label_studio_password=secrets.token_urlsafe(12),
            label_studio_token=_new_secret(),
        )._with_missing_keys()
        home.mkdir(parents=True, exist_ok=True)
        _write_private_json(path, creds.__dict__)
        return creds


def _write_private_json(path: Path, data: Any) -> None:
    """Write JSON only the owner can read, whatever the umask and the file's previous mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    path.chmod(0o600)


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
    healthy_when: Callable[[httpx.Response], bool] = field(default=lambda r: r.status_code == 200)


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


def _bin(name: str) -> str:
    """Path of a console script installed beside this interpreter (checked when the service starts)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name) or name


def _base_env() -> dict[str, str]:
    """The parent's environment without anything that would steer a child into the wrong Python or server."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PREFECT_API_URL", "MLFLOW_TRACKING_URI"}
    }
    env.update(TELEMETRY_OFF)
    return env


# Label Studio 1.23's default SSRF block list (core/utils/io.py: validate_ip).
LABEL_STUDIO_DEFAULT_BANNED_SUBNETS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "233.252.0.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:0000::/32",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
]


def banned_subnets_except_loopback_host() -> list[str]:
    """Label Studio's default block list with 127.0.0.1/32 (and only it) carved out of 127.0.0.0/8."""
    loopback, host = ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network(f"{LOOPBACK}/32")
    result: list[str] = []
    for subnet in LABEL_STUDIO_DEFAULT_BANNED_SUBNETS:
        if ipaddress.ip_network(subnet) == loopback:
            result.extend(sorted(str(net) for net in loopback.address_exclude(host)))
        else:
            result.append(subnet)
    return result


def listener_url(config: StackConfig) -> str:
    """Base URL of the stack's event listener (`labelflow listen`)."""
    return f"http://{LOOPBACK}:{config.listener_port}"


def seaweedfs_tls_files(config: StackConfig) -> tuple[Path, Path, Path]:
    """Where the stack keeps SeaweedFS's CA, certificate and key (created by `up`)."""
    return tls_files(config.seaweedfs_tls_dir)


# 1: services start with umask 077; 2: Label Studio also saves exports and uploads 0600. A running service started
# with less is restarted by `up`: its umask and settings are fixed at start.
FILE_PRIVACY_VERSION = 2
LABEL_STUDIO_SETTINGS_DIR = Path(__file__).parent / "local" / "label_studio_settings"
LABEL_STUDIO_SETTINGS_MODULE = "labelflow_label_studio_settings"


def build_services(config: StackConfig, creds: Credentials) -> list[Service]:
    """The five services in start order (the event listener first), each with its command line and environment."""
    data = config.data_dir
    s3_url = f"http://{LOOPBACK}:{config.s3_port}"
    s3_config = config.home / "seaweedfs-s3.json"
    weed = Service(
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
            **_base_env(),
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

    ls_url = f"http://{LOOPBACK}:{config.label_studio_port}"
    ls_env = _base_env()
    ls_env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data / "label-studio"),
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_HOST": ls_url,
            "LABEL_STUDIO_USERNAME": creds.label_studio_username,
            "LABEL_STUDIO_PASSWORD": creds.label_studio_password,
            "LABEL_STUDIO_USER_TOKEN": creds.label_studio_token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            # SSRF protection stays ON. Storages created without an explicit endpoint fall back to this
            # operator-set endpoint, which Label Studio trusts; every user-supplied URL is still checked.
            "S3_ENDPOINT": s3_url,
            # ... against Label Studio's own list of reserved networks minus exactly 127.0.0.1, so that its webhooks
            # reach the event listener on this machine; 127.0.0.2-255, private networks, link-local (cloud metadata)
            # and the rest stay refused.
            "USE_DEFAULT_BANNED_SUBNETS": "false",
            "USER_ADDITIONAL_BANNED_SUBNETS": ",".join(banned_subnets_except_loopback_host()),
            "HOME": str(data / "label-studio"),
            # Label Studio's settings plus FILE_UPLOAD_PERMISSIONS 0o600: Django chmods saved exports 0644 otherwise.
            "DJANGO_SETTINGS_MODULE": LABEL_STUDIO_SETTINGS_MODULE,
            "PYTHONPATH": str(LABEL_STUDIO_SETTINGS_DIR),
        }
    )
    label_studio = Service(
        name="label-studio",
        title="Label Studio",
        url=ls_url,
        health_url=f"{ls_url}/health",
        ports={"http": config.label_studio_port},
        command=[
            str(config.label_studio_venv / "bin" / "label-studio"),
            "start",
            "--no-browser",
            "--internal-host",
            LOOPBACK,
            "--port",
            str(config.label_studio_port),
        ],
        env=ls_env,
    )

    mlflow_url = f"http://{LOOPBACK}:{config.mlflow_port}"
    mlflow_env = _base_env()
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
    mlflow = Service(
        name="mlflow",
        title="MLflow tracking server",
        url=mlflow_url,
        health_url=f"{mlflow_url}/health",
        ports={"http": config.mlflow_port},
        command=[
            _bin("mlflow"),
            "server",
            "--host",
            LOOPBACK,
            "--port",
            str(config.mlflow_port),
            "--backend-store-uri",
            f"sqlite:///{data / 'mlflow' / 'mlflow.db'}",
            "--artifacts-destination",
            f"s3://{MLFLOW_ARTIFACT_BUCKET}/artifacts",
            "--workers",
            "1",
        ],
        env=mlflow_env,
    )

    prefect_url = f"http://{LOOPBACK}:{config.prefect_port}"
    prefect_env = _base_env()
    prefect_env.update(
        {
            "PREFECT_HOME": str(data / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{data / 'prefect' / 'prefect.db'}",
            "PREFECT_UI_API_URL": f"{prefect_url}/api",
            "PREFECT_SERVER_API_HOST": LOOPBACK,
            "PREFECT_SERVER_API_PORT": str(config.prefect_port),
        }
    )
    prefect = Service(
        name="prefect",
        title="Prefect server",
        url=prefect_url,
        health_url=f"{prefect_url}/api/health",
        ports={"http": config.prefect_port},
        command=[_bin("prefect"), "server", "start", "--host", LOOPBACK, "--port", str(config.prefect_port)],
        env=prefect_env,
        healthy_when=lambda r: r.status_code == 200 and r.text.strip() == "true",
    )
    return [build_listener_service(config, creds), weed, label_studio, mlflow, prefect]


def build_listener_service(config: StackConfig, creds: Credentials) -> Service:
    """`labelflow listen`: webhooks from the filer and Label Studio -> debounced runs; up whenever SeaweedFS is."""
    url = listener_url(config)
    env = _base_env()
    env.update(connection_env(config, creds))  # its own settings: it may start before the stack file exists
    env["LABELFLOW_HOME"] = str(config.home)
    return Service(
        name="listener",
        title="Event listener (webhooks -> runs)",
        url=url,
        health_url=f"{url}/health",
        ports={"http": config.listener_port},
        command=[_bin("labelflow"), "listen", "--port", str(config.listener_port)],
        env=env,
    )


def build_worker_service(config: StackConfig) -> Service:
    """The optional sixth service: `labelflow worker`, a Prefect process worker for the stack's work pool."""
    url = f"http://{LOOPBACK}:{config.worker_health_port}"
    env = _base_env()
    env["LABELFLOW_HOME"] = str(config.home)  # `--project-dir` sets LABELFLOW_PROJECT_DIR for the flow runs
    return Service(
        name="worker",
        title="Prefect worker",
        url=url,
        health_url=f"{url}/health",
        ports={"health": config.worker_health_port},
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
    )


def connection_env(config: StackConfig, creds: Credentials) -> dict[str, str]:
    """The connection variables other labelflow commands read when the user exported nothing."""
    return {
        "LABELFLOW_S3_ENDPOINT_URL": f"http://{LOOPBACK}:{config.s3_port}",
        "LABELFLOW_S3_ACCESS_KEY": creds.s3_access_key,
        "LABELFLOW_S3_SECRET_KEY": creds.s3_secret_key,
        "LABELFLOW_S3_STORAGE_ACCESS_KEY": creds.s3_reader_access_key,
        "LABELFLOW_S3_STORAGE_SECRET_KEY": creds.s3_reader_secret_key,
        "LABEL_STUDIO_URL": f"http://{LOOPBACK}:{config.label_studio_port}",
        "LABEL_STUDIO_API_KEY": creds.label_studio_token,
        "MLFLOW_TRACKING_URI": f"http://{LOOPBACK}:{config.mlflow_port}",
        "PREFECT_API_URL": f"http://{LOOPBACK}:{config.prefect_port}/api",
        "LABELFLOW_LISTENER_URL": listener_url(config),
        "LABELFLOW_LISTENER_TOKEN": creds.listener_token,
    }


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    """Last lines of a log file, for error messages."""
    if not path.is_file():
        return "(no log yet)"
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 8192))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class LocalStack:
    """Starts, checks and stops the local services; state, logs and data live under `config.home`."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._echo: Callable[[str], None] = lambda _: None

    # --- files -----------------------------------------------------------------------------------
    def _state_path(self, name: str) -> Path:
        return self.config.run_dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        """Log file of one service."""
        return self.config.logs_dir / f"{name}.log"

    def _read_state(self, name: str) -> dict[str, Any] | None:
        path = self._state_path(name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None

    def _process(self, name: str) -> psutil.Process | None:
        """The live process this stack started for `name`, or None (never a recycled pid)."""
        state = self._read_state(name)
        if not state:
            return None
        try:
            proc = psutil.Process(int(state["pid"]))
            if abs(proc.create_time() - float(state["create_time"])) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            return None

    # --- setup -----------------------------------------------------------------------------------
    def ensure_label_studio_env(self, echo: Callable[[str], None] = lambda _: None) -> None:
        """Create Label Studio's own virtual environment from the locked requirements, once."""
        venv = self.config.label_studio_venv
        wanted = hashlib.sha256(LABEL_STUDIO_REQUIREMENTS.read_bytes()).hexdigest()
        marker = venv / ".labelflow-requirements.sha256"
        if marker.is_file() and marker.read_text().strip() == wanted and (venv / "bin" / "label-studio").exists():
            return
        echo(f"Installing Label Studio into {venv} (once; about 1 GB) ...")
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path("label-studio-install")
        uv = os.environ.get("UV") or shutil.which("uv")
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        if uv:
            steps = [
                [uv, "venv", "--quiet", "--allow-existing", "--python", python, str(venv)],
                [
                    uv,
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(venv / "bin" / "python"),
                    "-r",
                    str(LABEL_STUDIO_REQUIREMENTS),
                ],
            ]
        else:
            steps = [
                [sys.executable, "-m", "venv", str(venv)],
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(LABEL_STUDIO_REQUIREMENTS)],
            ]
        env = _base_env()
        with log.open("ab") as out:
            for step in steps:
                result = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
                if result.returncode != 0:
                    raise StackError(
                        f"label-studio: installing its environment failed ({' '.join(step[:3])} ...); "
                        f"see {log}\n{_tail(log)}"
                    )
        marker.write_text(wanted)

    def _write_seaweed_identities(self, creds: Credentials) -> None:
        identities = {
            "identities": [
                {
                    "name": "labelflow",
                    "credentials": [{"accessKey": creds.s3_access_key, "secretKey": creds.s3_secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                },
                {
                    # Label Studio's storage connections: their keys sit in its database, so they can only read.
                    "name": "label-studio-storage",
                    "credentials": [{"accessKey": creds.s3_reader_access_key, "secretKey": creds.s3_reader_secret_key}],
                    "actions": ["Read", "List"],
                },
            ]
        }
        _write_private_json(self.config.home / "seaweedfs-s3.json", identities)

    def make_home_private(self) -> None:
        """Make everything under the stack home owner-only (a home from an older labelflow had 0644 files)."""
        home = self.config.home
        home.chmod(0o700)
        for entry in home.iterdir():
            # Label Studio's environment holds no secrets, is large, and may be a link to a shared one.
            if entry.name == "venvs" or entry.is_symlink():
                continue
            _remove_group_and_other_access(entry)

    def _seaweedfs_config_digest(self, service: Service) -> str:
        """What SeaweedFS reads only when it starts: a running one with another digest is restarted by `up`."""
        path = self.config.home / "seaweedfs-s3.json"
        identities = path.read_bytes() if path.is_file() else b""
        weed_env = sorted((k, v) for k, v in service.env.items() if k.startswith("WEED_"))
        material = json.dumps([service.command, weed_env]).encode() + identities
        return hashlib.sha256(material).hexdigest()

    # --- lifecycle -------------------------------------------------------------------------------
    def _start(self, service: Service) -> None:
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        executable = service.command[0]
        if not (Path(executable).exists() or shutil.which(executable)):
            raise StackError(f"{service.name}: `{executable}` is not installed; run `uv sync` first")
        log = self.log_path(service.name)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            out.write(f"\n=== labelflow: starting {service.name} at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                service.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=service.env,
                cwd=self.config.home,
                start_new_session=True,
                # Everything a service writes (Label Studio's database with its stored S3 key and tokens,
                # SeaweedFS's volumes, MLflow's and Prefect's databases) is readable by its owner only.
                umask=0o077,
            )
        state = {
            "pid": proc.pid,
            "create_time": psutil.Process(proc.pid).create_time(),
            "command": service.command,
            "ports": service.ports,
            "url": service.url,
            "file_privacy": FILE_PRIVACY_VERSION,  # how its files were made private (see `_up`)
        }
        if service.name == "s3":
            state["config_digest"] = self._seaweedfs_config_digest(service)
        _write_private_json(self._state_path(service.name), state)

    def _probe(self, service: Service, timeout: float = 3.0) -> tuple[bool, str]:
        try:
            response = httpx.get(service.health_url, timeout=timeout)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        if service.healthy_when(response):
            return True, "healthy"
        return False, f"health check answered HTTP {response.status_code}"

    def _progress(self, name: str) -> tuple[int, int]:
        """Log size and whole CPU seconds of the service's process tree: either moves while it works."""
        log = self.log_path(name)
        size = log.stat().st_size if log.is_file() else 0
        proc = self._process(name)
        cpu = 0.0
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                for member in [proc, *proc.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = member.cpu_times()
                        cpu += times.user + times.system
        return size, int(cpu)

    def _wait_healthy(self, services: list[Service], started: dict[str, float]) -> dict[str, float]:
        """Wait while each service starts and makes progress; fail naming one that died, stalled or hit the cap."""
        watched = [
            Watched(
                name=service.name,
                healthy=lambda service=service: self._probe(service, timeout=2.0),
                alive=lambda name=service.name: self._process(name) is not None,
                progress=lambda name=service.name: self._progress(name),
                started_at=started[service.name],
            )
            for service in services
        ]
        policy = WaitPolicy(stall_seconds=self.config.start_stall_seconds, max_seconds=self.config.start_max_seconds)
        # time.monotonic and time.sleep are looked up now, so a test can substitute a fake clock.
        wait = HealthWait(policy=policy, clock=time.monotonic, sleep=time.sleep, echo=self._echo)
        try:
            return wait.wait(watched)
        except HealthWaitError as exc:
            log = self.log_path(exc.name)
            raise StackError(f"{exc}; see {log}\n{_tail(log)}") from None

    def _services(self, creds: Credentials, with_worker: bool = False) -> list[Service]:
        """The listener and the four servers, plus the worker when asked for or already started."""
        services = build_services(self.config, creds)
        if with_worker or self._read_state("worker") is not None:
            services.append(build_worker_service(self.config))
        return services

    def up(self, echo: Callable[[str], None] = lambda _: None, with_worker: bool = False) -> list[UpReport]:
        """Start every service that is not running, wait for health, publish the connection file."""
        with _private_umask():  # the directories `up` creates itself (logs, run, data/...) are owner-only too
            reports = self._up(echo, with_worker)
            # Again at the end: SeaweedFS writes its *.vif volume descriptors 0644 whatever the umask.
            self.make_home_private()
        return reports

    def _up(self, echo: Callable[[str], None], with_worker: bool) -> list[UpReport]:
        self._echo = echo
        self.config.home.mkdir(parents=True, exist_ok=True)
        self.make_home_private()
        creds = Credentials.load_or_create(self.config.home)
        ensure_grpc_tls(self.config.seaweedfs_tls_dir)
        self._write_seaweed_identities(creds)
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
            state = self._read_state(service.name)
            outdated = state is not None and state.get("file_privacy", 0) < FILE_PRIVACY_VERSION
            if outdated and self._process(service.name) is not None:
                # Its umask is fixed at start: until restarted, every file it creates stays readable by other users.
                echo(
                    f"restarting {service.name} (started by an older labelflow: its new files were world-readable) ..."
                )
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
        for sub in ("seaweedfs", "label-studio", "mlflow", "prefect"):
            (self.config.data_dir / sub).mkdir(parents=True, exist_ok=True)

        started_at: dict[str, float] = {s.name: time.monotonic() for s in running}
        durations: dict[str, float] = {}
        for service in [s for s in to_start if s.name not in {"worker", "s3"}]:
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

    def _after_start(self, creds: Credentials) -> None:
        """One-off setup that needs the servers: the MLflow artifact bucket and a working LS token."""
        store = ObjectStore(
            S3Settings(
                endpoint_url=f"http://{LOOPBACK}:{self.config.s3_port}",
                access_key=creds.s3_access_key,
                secret_key=creds.s3_secret_key,
            )
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                store.ensure_bucket(MLFLOW_ARTIFACT_BUCKET)
                break
            except ObjectStoreError as exc:  # the volume server may still be registering with the master
                if time.monotonic() > deadline:
                    raise StackError(
                        f"s3: could not create bucket {MLFLOW_ARTIFACT_BUCKET}: {exc}; see {self.log_path('s3')}"
                    ) from exc
                time.sleep(1)

        ls = f"http://{LOOPBACK}:{self.config.label_studio_port}"
        headers = {"Authorization": f"Token {creds.label_studio_token}"}
        response = httpx.get(f"{ls}/api/current-user/whoami", headers=headers, timeout=10)
        if response.status_code == 401:
            # An organisation created before legacy tokens were enabled: switch them on with a session login.
            self._enable_legacy_tokens(ls, creds)
            response = httpx.get(f"{ls}/api/current-user/whoami", headers=headers, timeout=10)
        if response.status_code != 200:
            raise StackError(
                f"label-studio: the API token is refused (HTTP {response.status_code}: {response.text[:200]}); "
                f"see {self.log_path('label-studio')}"
            )

    def _enable_legacy_tokens(self, ls: str, creds: Credentials) -> None:
        with httpx.Client(base_url=ls, timeout=10, follow_redirects=True) as http:
            http.get("/user/login/")
            csrf = http.cookies.get("csrftoken", "")
            http.post(
                "/user/login/",
                data={
                    "email": creds.label_studio_username,
                    "password": creds.label_studio_password,
                    "csrfmiddlewaretoken": csrf,
                },
                headers={"Referer": f"{ls}/user/login/"},
            )
            csrf = http.cookies.get("csrftoken", csrf)
            http.post(
                "/api/jwt/settings",
                json={"legacy_api_tokens_enabled": True, "api_tokens_enabled": True},
                headers={"X-CSRFToken": csrf, "Referer": ls},
            )

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
        _write_private_json(self.config.home / STACK_FILE_NAME, data)

    def down(self) -> dict[str, str]:
        """Stop exactly the processes this stack started; report what happened to each."""
        outcome = {s.name: self.stop(s.name) for s in reversed(self._services(Credentials.placeholder()))}
        (self.config.home / STACK_FILE_NAME).unlink(missing_ok=True)
        return outcome

    def running(self, name: str) -> bool:
        """Whether this stack's process for `name` is alive."""
        return self._process(name) is not None

    def stop(self, name: str) -> str:
        """Stop one service this stack started (e.g. the worker); the others keep running."""
        proc = self._process(name)
        if proc is not None:
            _stop_process_tree(proc)
        self._state_path(name).unlink(missing_ok=True)
        return "not running" if proc is None else "stopped"

    def recorded_config(self) -> StackConfig:
        """This stack's configuration with the ports its running services were started with (run/*.json)."""
        recorded: dict[str, dict[str, int]] = {}
        for name in ("listener", "s3", "label-studio", "mlflow", "prefect", "worker"):
            state = self._read_state(name)
            if state and isinstance(state.get("ports"), dict):
                recorded[name] = state["ports"]
        return self.config.with_ports(recorded)

    def status(self) -> list[ServiceStatus]:
        """Each service: whether its process runs, whether its health check passes, its URL and log."""
        result = []
        # Probe the ports this home's services were started with, not the defaults (another stack may own those).
        recorded = LocalStack(self.recorded_config())
        for service in recorded._services(Credentials.placeholder()):
            proc = self._process(service.name)
            if proc is None:
                running, healthy, detail = False, False, "not running"
            else:
                running = True
                healthy, detail = self._probe(service)
            result.append(
                ServiceStatus(
                    name=service.name,
                    title=service.title,
                    url=service.url,
                    pid=proc.pid if proc else None,
                    running=running,
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
            "env": connection_env(config, creds),
            "label_studio_login": {
                "url": f"http://{LOOPBACK}:{config.label_studio_port}",
                "username": creds.label_studio_username,
                "password": creds.label_studio_password,
            },
        }


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    """Create files and directories owner-only for the duration (umask 077)."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _remove_group_and_other_access(root: Path) -> None:
    """chmod go-rwx on a file or a whole tree (symbolic links are left alone, never followed)."""
    paths = [root]
    if root.is_dir() and not root.is_symlink():
        for directory, subdirs, files in os.walk(root):
            paths.extend(Path(directory, name) for name in [*subdirs, *files])
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # a service may remove a file meanwhile
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode) or stat.S_ISSOCK(info.st_mode):
                continue
            if info.st_mode & 0o077:
                path.chmod(stat.S_IMODE(info.st_mode) & ~0o077)


def _stop_process_tree(proc: psutil.Process, timeout: float = 15.0) -> None:
    """SIGTERM the service's process group and children, then SIGKILL what is left."""
    try:
        children = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    family = [proc, *children]
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.terminate()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=5)
