"""Secrets at rest and the object store's ports, probed as another local user (issue 13, item 3).

Tests run as root; `nobody` stands in for any other account on the machine. The integration tests use the session's
local stack (tests/conftest.py), whichever home and ports it was given (LABELFLOW_HOME, LABELFLOW_STACK_*).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from labelflow.infra.credentials import Credentials
from labelflow.infra.stack_config import StackConfig
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.integrations.resources import Resources
from labelflow.integrations.settings import S3Settings, S3StorageSettings, SettingsError, load_settings
from labelflow.tasks.ingest import ensure_storage_connections
from tests.conftest import RunningStack

OTHER_USER = "nobody"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="impersonating another user needs root")


def as_other_user(*command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command as another local account (its own environment: no keys, no certificates)."""
    return subprocess.run(
        list(command),
        user=OTHER_USER,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        cwd="/tmp",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def http_status_as_other_user(method: str, url: str, *extra: str) -> int:
    """HTTP status another user gets (0: no HTTP answer at all, e.g. connection refused)."""
    result = as_other_user("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, *extra, url)
    return int(result.stdout or 0)


# --- least privilege for Label Studio's storage connections (no stack needed) -------------------------------------


class FakeLabelStudio:
    """Records the keys storage connections are created or updated with."""

    def __init__(self, storages: list[dict[str, Any]] | None = None) -> None:
        self.storages = storages or []
        self.created: list[S3Settings] = []
        self.updated: dict[int, S3Settings] = {}

    def s3_import_storages(self, project_id: int) -> list[dict[str, Any]]:
        return self.storages

    def add_s3_import_storage(self, project_id: int, bucket: str, prefix: str, s3: S3Settings, **_: Any) -> int:
        self.created.append(s3)
        return 100 + len(self.created)

    def update_s3_import_storage_keys(self, storage_id: int, s3: S3Settings) -> None:
        self.updated[storage_id] = s3


@dataclass(frozen=True)
class Source:
    """The part of a spec's source that storage connections use."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _spec(*sources: tuple[str, str]) -> SimpleNamespace:
    return SimpleNamespace(
        sources=[Source(bucket, prefix) for bucket, prefix in sources],
        storage=SimpleNamespace(presign=True, presign_ttl_minutes=60),
    )


@pytest.fixture
def admin_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ObjectStore:
    for name in ("LABELFLOW_S3_STORAGE_ACCESS_KEY", "LABELFLOW_S3_STORAGE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LABELFLOW_HOME", str(tmp_path / "no-stack"))
    monkeypatch.chdir(tmp_path)  # no .env
    return ObjectStore(S3Settings(endpoint_url="http://127.0.0.1:9", access_key="admin", secret_key="admin-secret"))


def test_storage_connections_get_the_read_only_identity(
    admin_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELFLOW_S3_STORAGE_ACCESS_KEY", "reader")
    monkeypatch.setenv("LABELFLOW_S3_STORAGE_SECRET_KEY", "reader-secret")
    # One connection made by an older labelflow with the admin key, one source still unconnected.
    ls = FakeLabelStudio([{"id": 7, "bucket": "old", "prefix": "", "aws_access_key_id": "admin"}])
    ids = ensure_storage_connections(
        ls, admin_store, _spec(("old", ""), ("new", "raw")), 1, load_settings(S3StorageSettings)
    )
    assert ids == [7, 101]
    for s3 in [*ls.created, *ls.updated.values()]:
        assert (s3.access_key, s3.secret_key.get_secret_value()) == ("reader", "reader-secret")
        assert s3.endpoint == admin_store.settings.endpoint
    assert set(ls.updated) == {7}, "a connection holding the admin key is switched to the reader"


def test_without_a_read_only_identity_nothing_is_connected(admin_store: ObjectStore) -> None:
    ls = FakeLabelStudio()
    with pytest.raises(SettingsError) as caught:  # the flow resolves the identity before connecting anything
        ensure_storage_connections(ls, admin_store, _spec(("new", "")), 1, Resources.from_settings().reader_settings)
    message = str(caught.value)
    assert "LABELFLOW_S3_STORAGE_ACCESS_KEY is not set" in message
    assert "LABELFLOW_S3_STORAGE_SECRET_KEY is not set" in message
    assert ls.created == [], "no silent fallback to the admin key"


# --- the running stack, as another local user ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def config(local_stack: RunningStack) -> StackConfig:
    return local_stack.stack.config


@pytest.fixture(scope="module")
def creds(config: StackConfig) -> Credentials:
    return Credentials.load_or_create(config.home)


def _s3_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture
def stored_object(object_store: ObjectStore, unique_name: str) -> Iterator[tuple[str, str]]:
    object_store.ensure_bucket(unique_name)
    object_store.put_bytes(unique_name, "raw/_READY", b"private payload")
    yield unique_name, "raw/_READY"


@needs_root
def test_another_user_cannot_read_anything_under_the_stack_home(local_stack: RunningStack, config: StackConfig) -> None:
    home = config.home
    secrets_at_rest = [
        home / "credentials.json",
        home / "stack.json",
        home / "seaweedfs-s3.json",
        home / "seaweedfs-tls" / "seaweedfs.key",
        home / "data" / "label-studio" / "label_studio.sqlite3",  # storage keys, API token, webhook token
        *sorted((home / "data" / "seaweedfs").glob("*.dat"))[:3],  # object contents
        home / "logs" / "s3.log",
    ]
    for path in secrets_at_rest:
        assert path.is_file(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        result = as_other_user("cat", str(path))
        assert result.returncode != 0 and "Permission denied" in result.stderr, path
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    loose = []
    for directory, subdirs, files in os.walk(home):
        subdirs[:] = [d for d in subdirs if Path(directory, d) != home / "venvs"]
        for name in [*subdirs, *files]:
            path = Path(directory, name)
            info = path.lstat()
            # SeaweedFS writes its volume descriptors (*.vif: version and replication, no data) 0644 itself;
            # `up` tightens them and the 0700 directories above keep them out of reach meanwhile.
            if stat.S_ISLNK(info.st_mode) or name.endswith(".vif"):
                continue
            if info.st_mode & 0o077:
                loose.append(f"{oct(stat.S_IMODE(info.st_mode))} {path}")
    assert loose == [], loose


@needs_root
def test_filer_master_and_volume_http_refuse_another_user(
    config: StackConfig, stored_object: tuple[str, str], object_store: ObjectStore
) -> None:
    bucket, key = stored_object
    filer = f"http://127.0.0.1:{config.weed_filer_port}"
    master = f"http://127.0.0.1:{config.weed_master_port}"
    volume = f"http://127.0.0.1:{config.weed_volume_port}"
    refused = {
        "filer GET object": http_status_as_other_user("GET", f"{filer}/buckets/{bucket}/{key}"),
        "filer GET listing": http_status_as_other_user("GET", f"{filer}/buckets/{bucket}/"),
        "filer PUT object": http_status_as_other_user(
            "PUT", f"{filer}/buckets/{bucket}/raw/planted.txt", "--data-binary", "planted"
        ),
        "filer DELETE object": http_status_as_other_user("DELETE", f"{filer}/buckets/{bucket}/{key}"),
        "master assign": http_status_as_other_user("GET", f"{master}/dir/assign"),
        "master submit": http_status_as_other_user("POST", f"{master}/submit", "-F", "file=@/etc/hostname"),
        "master grow": http_status_as_other_user("GET", f"{master}/vol/grow?count=1&collection={bucket}"),
        "master delete bucket": http_status_as_other_user("GET", f"{master}/col/delete?collection={bucket}"),
        "volume GET by file id": http_status_as_other_user("GET", f"{volume}/1,0123456789"),
        "volume POST by file id": http_status_as_other_user("POST", f"{volume}/1,0123456789", "-F", "f=@/etc/hostname"),
    }
    accepted = {what: code for what, code in refused.items() if 200 <= code < 400}
    assert accepted == {}, f"answered without credentials: {accepted}"
    assert object_store.get_bytes(bucket, key) == b"private payload", "nothing was deleted"
    assert [o.key for o in object_store.list_objects(bucket)] == [key], "nothing was planted"


@needs_root
def test_seaweedfs_grpc_and_local_sockets_refuse_another_user(
    config: StackConfig, stored_object: tuple[str, str], object_store: ObjectStore
) -> None:
    bucket, _ = stored_object
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    shell = [
        "timeout",
        "20",
        weed,
        "shell",
        f"-master=127.0.0.1:{config.weed_master_port}",
        f"-filer=127.0.0.1:{config.weed_filer_port}",
    ]
    script = f"fs.ls /buckets\nlock\nfs.rm -r /buckets/{bucket}\nunlock\n"
    # Control: with the stack's client certificate, `weed shell` lists the buckets.
    tls = config.seaweedfs_tls_dir
    owner_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "WEED_GRPC_CA": str(tls / "ca.crt"),
        "WEED_GRPC_CLIENT_CERT": str(tls / "seaweedfs.crt"),
        "WEED_GRPC_CLIENT_KEY": str(tls / "seaweedfs.key"),
    }
    listing = subprocess.run(
        shell, input="fs.ls /buckets\n", env=owner_env, cwd="/tmp", capture_output=True, text=True, check=False
    )
    assert bucket in listing.stdout, listing.stdout[-500:] + listing.stderr[-500:]
    # Another user, without it: the gRPC ports refuse the connection (the shell retries until `timeout` ends it).
    other = subprocess.run(
        shell,
        input=script,
        user=OTHER_USER,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        cwd="/tmp",
        capture_output=True,
        text=True,
        check=False,
    )
    assert bucket not in other.stdout, other.stdout[-500:]
    assert object_store.bucket_exists(bucket), "the bucket survived `fs.rm` over gRPC"
    # SeaweedFS mini also serves its gRPC and HTTP APIs on unix sockets in /tmp, named by port.
    ports = {config.s3_port, config.weed_filer_port, config.weed_master_port, config.weed_volume_port}
    ports |= {port + 10000 for port in ports} | {config.weed_admin_port + 10000}
    sockets = [p for p in Path("/tmp").glob("seaweedfs-*.sock") if int(p.stem.rsplit("-", 1)[1]) in ports]
    assert sockets, "expected SeaweedFS's local sockets"
    for sock in sockets:
        assert stat.S_IMODE(sock.stat().st_mode) & 0o077 == 0, sock
        result = as_other_user("curl", "-s", "-o", "/dev/null", "--unix-socket", str(sock), "http://local/")
        assert result.returncode == 7, f"{sock}: another user connected (curl exit {result.returncode})"


def test_storage_reader_reads_and_lists_but_cannot_write_or_delete(
    config: StackConfig, creds: Credentials, stored_object: tuple[str, str], object_store: ObjectStore
) -> None:
    bucket, key = stored_object
    endpoint = f"http://127.0.0.1:{config.s3_port}"
    reader = _s3_client(endpoint, creds.s3_reader_access_key, creds.s3_reader_secret_key)
    assert reader.get_object(Bucket=bucket, Key=key)["Body"].read() == b"private payload"
    assert [o["Key"] for o in reader.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    for attempt in (
        lambda: reader.put_object(Bucket=bucket, Key="raw/planted.txt", Body=b"x"),
        lambda: reader.delete_object(Bucket=bucket, Key=key),
        lambda: reader.create_bucket(Bucket=f"{bucket}-new"),
    ):
        with pytest.raises(ClientError) as caught:
            attempt()
        assert caught.value.response["Error"]["Code"] == "AccessDenied"
    assert object_store.get_bytes(bucket, key) == b"private payload"
    assert [o.key for o in object_store.list_objects(bucket)] == [key]


def test_label_studio_reads_sources_through_the_reader_identity(
    label_studio: LabelStudioClient,
    object_store: ObjectStore,
    stored_object: tuple[str, str],
    unique_name: str,
    creds: Credentials,
    config: StackConfig,
) -> None:
    bucket, key = stored_object
    project_id = label_studio.create_project(
        title=unique_name, label_config='<View><Text name="t" value="$text"/></View>'
    )
    try:
        # A connection made the old way, with the admin key, as an existing stack home has them.
        object_store.put_bytes(bucket, "old/a.txt", b"a")
        old = label_studio.add_s3_import_storage(project_id, bucket, "old/", object_store.settings)
        ids = ensure_storage_connections(
            label_studio,
            object_store,
            _spec((bucket, "old/"), (bucket, "raw/")),
            project_id,
            Resources.from_settings().reader_settings,
        )
        assert old in ids
        # The API hides storage keys: read what Label Studio stored (as the owner).
        database = config.home / "data" / "label-studio" / "label_studio.sqlite3"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            stored = dict(
                db.execute(
                    "SELECT id, aws_access_key_id || ':' || aws_secret_access_key FROM io_storages_s3importstorage "
                    "WHERE project_id = ?",
                    (project_id,),
                ).fetchall()
            )
        reader = f"{creds.s3_reader_access_key}:{creds.s3_reader_secret_key}"
        assert stored == dict.fromkeys(ids, reader), "the admin key must not stay in Label Studio's database"
        (task_id,) = label_studio.import_tasks(project_id, [{"text": f"s3://{bucket}/{key}"}])
        resolved = label_studio.resolve_uri(task_id, f"s3://{bucket}/{key}")
        assert resolved.content == b"private payload", urllib.parse.unquote(str(resolved.url))[:200]
    finally:
        label_studio.delete_project(project_id)


def test_status_json_names_the_reader_identity(local_stack: RunningStack, creds: Credentials) -> None:
    env = json.loads((local_stack.stack.config.home / "stack.json").read_text())["env"]
    assert env["LABELFLOW_S3_STORAGE_ACCESS_KEY"] == creds.s3_reader_access_key
    assert env["LABELFLOW_S3_STORAGE_ACCESS_KEY"] != env["LABELFLOW_S3_ACCESS_KEY"]
