"""The stack's local secrets: generated once, kept in owner-only files, handed out as connection variables."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelflow.infra.stack_config import LOOPBACK, StackConfig, listener_url

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
    postgres_password: str = ""  # the `labelflow` superuser of the stack's PostgreSQL (`up --db postgres`)

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
                "postgres_password",
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
                write_private_json(path, creds.__dict__)
            return creds
        creds = cls(
            s3_access_key="labelflow",
            s3_secret_key=_new_secret(),
            label_studio_username="admin@labelflow.local",
            label_studio_password=secrets.token_urlsafe(12),
            label_studio_token=_new_secret(),
        )._with_missing_keys()
        home.mkdir(parents=True, exist_ok=True)
        write_private_json(path, creds.__dict__)
        return creds


def write_private_json(path: Path, data: Any) -> None:
    """Write JSON only the owner can read, whatever the umask and the file's previous mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    path.chmod(0o600)


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Create files and directories owner-only for the duration (umask 077)."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def remove_group_and_other_access(root: Path) -> None:
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


def seaweedfs_identities(creds: Credentials) -> dict[str, Any]:
    """SeaweedFS's S3 identities file: the pipeline's full-access key and Label Studio's read-only one."""
    return {
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
