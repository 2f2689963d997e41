"""Where the local stack lives and listens: its home and paths, its loopback ports, and the error it reports."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labelflow.infra.ports import STACK_PORTS
from labelflow.infra.seaweedfs_security import TLS_DIR_NAME, tls_files
from labelflow.integrations.stack_home import labelflow_home

LOOPBACK = "127.0.0.1"
# LABELFLOW_STACK_<FIELD> (any case) sets a field of StackConfig that its arguments leave out.
ENV_PREFIX = "LABELFLOW_STACK_"


class StackError(RuntimeError):
    """The local stack could not be brought to the requested state; the message says which service and why."""


class StackConfig(BaseModel):
    """Where the local stack keeps its state and which loopback ports it uses (LABELFLOW_STACK_* overrides)."""

    # A plain model that reads its variables itself: pydantic-settings took 0.07 s of every `labelflow status`.
    model_config = ConfigDict(extra="ignore", validate_default=True)

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
    postgres_port: int = STACK_PORTS["postgres_port"][1]
    # The services' databases: SQLite files, or one PostgreSQL server as in production (`up --db`). None: what this
    # home was last started with (database.json), SQLite for a new home.
    db: Literal["sqlite", "postgres"] | None = None
    # A starting service is waited for while it makes progress (its log grows or it uses CPU), up to a cap.
    start_stall_seconds: float = 120.0
    start_max_seconds: float = 1200.0
    # Label Studio's virtualenv: under the home unless set (the test suite's own stack shares the user's, built once).
    label_studio_venv_dir: Path | None = None
    # Label Studio's gunicorn worker processes (its production image runs 4 uWSGI processes); ~250 MB each.
    label_studio_workers: int = Field(default=4, ge=1, le=64)

    @model_validator(mode="before")
    @classmethod
    def _variables_under_arguments(cls, data: Any) -> Any:
        """The arguments, and a LABELFLOW_STACK_<FIELD> variable for each field they leave out."""
        if not isinstance(data, dict):
            return data
        variables = {name.upper(): value for name, value in os.environ.items() if name.upper().startswith(ENV_PREFIX)}
        from_variables = {
            name: variables[f"{ENV_PREFIX}{name.upper()}"]
            for name in cls.model_fields
            if f"{ENV_PREFIX}{name.upper()}" in variables
        }
        return {**from_variables, **data}

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
        "postgres_port",
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
        return self.label_studio_venv_dir or self.home / "venvs" / "label-studio"

    @property
    def database_file(self) -> Path:
        """Which database the home's services were last started with (read by later `up`, `status`, `down`)."""
        return self.home / "database.json"

    @property
    def recorded_database(self) -> str | None:
        """The database recorded in the home, or None for a home never started."""
        try:
            value = json.loads(self.database_file.read_text(encoding="utf-8")).get("db")
        except (OSError, ValueError, AttributeError):
            return None
        return value if value in ("sqlite", "postgres") else None

    @property
    def database(self) -> str:
        """`sqlite` or `postgres`: asked for, else recorded, else SQLite."""
        return self.db or self.recorded_database or "sqlite"

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
            ("postgres", "postgres"): "postgres_port",
        }
        update = {
            name: int(recorded[service][role])
            for (service, role), name in fields.items()
            if isinstance(recorded.get(service), dict) and isinstance(recorded[service].get(role), int)
        }
        return self.model_copy(update=update)


def listener_url(config: StackConfig) -> str:
    """Base URL of the stack's event listener (`labelflow listen`)."""
    return f"http://{LOOPBACK}:{config.listener_port}"


def seaweedfs_tls_files(config: StackConfig) -> tuple[Path, Path, Path]:
    """Where the stack keeps SeaweedFS's CA, certificate and key (created by `up`)."""
    return tls_files(config.seaweedfs_tls_dir)


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = 15) -> str:
    """Last lines of a log file, for the messages of a StackError."""
    if not path.is_file():
        return "(no log yet)"
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 8192))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
