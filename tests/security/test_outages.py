"""Outages of Label Studio, MLflow and the object store: retried with backoff, then one line, exit 1, within ~60 s."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.integrations.settings import LabelStudioSettings
from labelflow.tasks.ingest import import_batch_idempotently, read_project_record
from labelflow.tasks.spec import parse_spec
from tests.conftest import RunningStack

ROOT = Path(__file__).resolve().parents[2]
# What "reported within about 60 s" allows on a busy 2-core machine (a Python start and Prefect's import included).
REPORT_WITHIN_SECONDS = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    seconds: float


def run_cli(*args: str, env: dict[str, str], timeout: float = 600) -> CliResult:
    """`labelflow ARGS` in a fresh process, as a user runs it."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "labelflow.cli", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "80", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(done.returncode, done.stdout, done.stderr, time.monotonic() - began)


def assert_one_line_failure(result: CliResult, stage: str, *expected: str) -> str:
    """Exit 1, no traceback anywhere, and the error as the last stderr line, whole (not wrapped)."""
    assert result.code == 1, (result.code, result.stderr[-3000:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-5000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    last = lines[-1]
    assert last.startswith(f"{stage} failed: "), result.stderr[-3000:]
    for text in expected:
        assert text in last, last
    assert result.seconds < REPORT_WITHIN_SECONDS, f"reported after {result.seconds:.0f} s"
    print(f"{stage}: reported in {result.seconds:.0f} s: {last}")
    return last


# --- Label Studio ---------------------------------------------------------------------------------------------
class FlakyLabelStudio:
    """A loopback HTTP server in front of Label Studio that drops chosen requests without an answer.

    `upstream=None` answers itself like an empty project (imports get ids, lookups find nothing).
    """

    def __init__(self, upstream: str | None = None, drop_imports: int = 0) -> None:
        self.upstream = upstream
        self.drop_imports = drop_imports  # the first N import requests are dropped
        self.down_after_imports: int | None = None  # after N answered imports, every request is dropped
        self.imports_seen = 0
        self.imports_answered = 0
        self.lock = threading.Lock()
        self.http = httpx.Client(base_url=upstream, timeout=60) if upstream else None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                is_import = self.command == "POST" and self.path.split("?")[0].endswith("/import")
                with fake.lock:
                    down = fake.down_after_imports is not None and fake.imports_answered >= fake.down_after_imports
                    if is_import:
                        fake.imports_seen += 1
                        drop = down or fake.imports_seen <= fake.drop_imports
                        if not drop:
                            fake.imports_answered += 1
                    else:
                        drop = down
                if drop:
                    self.close_connection = True  # no status line: the client sees RemoteProtocolError
                    return
                status, headers, content = fake.answer(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = handle_one

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        if self.http is None:
            if path.split("?")[0].endswith("/import"):
                count = len(json.loads(body))
                return 201, {"Content-Type": "application/json"}, json.dumps({"task_ids": list(range(count))}).encode()
            return 200, {"Content-Type": "application/json"}, json.dumps({"tasks": [], "total": 0}).encode()
        forwarded = {k: v for k, v in headers.items() if k.lower() not in {"host", "content-length", "connection"}}
        response = self.http.request(method, path, headers=forwarded, content=body)
        kept = {k: v for k, v in response.headers.items() if k.lower() in {"content-type", "location"}}
        return response.status_code, kept, response.content

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.http is not None:
            self.http.close()


def test_import_survives_dropped_connections_and_creates_each_task_once() -> None:
    fake = FlakyLabelStudio(drop_imports=2)
    try:
        client = LabelStudioClient(LabelStudioSettings(url=fake.url, api_key="k" * 40))
        payloads = [{"data": {"text": f"t{i}", "source_uri": f"s3://b/{i}.txt"}} for i in range(3)]
        began = time.monotonic()
        created = import_batch_idempotently(client, 7, payloads, "batch-1")
        assert created == {"s3://b/0.txt": 0, "s3://b/1.txt": 1, "s3://b/2.txt": 2}
        assert fake.imports_seen == 3 and fake.imports_answered == 1
        assert time.monotonic() - began >= 3, "the retries back off (1 s, then 2 s)"
    finally:
        fake.close()


@pytest.fixture
def text_source(object_store: ObjectStore, unique_name: str, tmp_path: Path) -> tuple[Path, str]:
    """30 texts and a spec importing them 5 per request."""
    source, state = f"{unique_name}-src", f"{unique_name}-state"
    object_store.ensure_bucket(source)
    for i in range(30):
        object_store.put_bytes(source, f"t/{i:02d}.txt", f"outage text number {i}".encode())
    body = {
        "name": f"outage {unique_name}",
        "source": f"s3://{source}/t/",
        "state": f"s3://{state}/p/",
        "task": "text-classification",
        "labels": ["x", "y"],
        "ingest": {"batch_size": 5},
    }
    parse_spec(body)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path, state


def test_label_studio_stopping_mid_ingest_is_retried_then_one_line_and_the_next_run_recovers(
    local_stack: RunningStack, object_store: ObjectStore, label_studio: LabelStudioClient, text_source: tuple
) -> None:
    spec_path, _ = text_source
    proxy = FlakyLabelStudio(upstream=local_stack.label_studio.base_url)
    proxy.down_after_imports = 2  # Label Studio "stops" after two batches of five
    env = {"PREFECT_API_URL": local_stack.prefect.url, "LABEL_STUDIO_URL": proxy.url}
    try:
        result = run_cli("ingest", str(spec_path), env=env)
    finally:
        proxy.close()
    last = assert_one_line_failure(result, "ingest", "Label Studio", f"cannot reach {proxy.url}", "retried")
    assert "RemoteProtocolError" in last
    assert "retrying in" in result.stderr, "the import was retried with backoff before giving up"

    spec = parse_spec(yaml.safe_load(spec_path.read_text()))
    project_id = int(read_project_record(object_store, spec)["project_id"])
    assert label_studio.count_tasks(project_id) == 10
    summary = json.loads(
        run_cli("ingest", str(spec_path), "--json", env={"PREFECT_API_URL": local_stack.prefect.url}).stdout
    )
    assert summary["tasks_created"] == 20
    params = {"project": project_id, "fields": "all", "resolve_uri": "false"}
    uris = Counter(t["data"]["source_uri"] for t in label_studio._task_pages(params, "list tasks", 100))
    assert len(uris) == 30 and set(uris.values()) == {1}, "exactly one task per object"


def test_label_studio_refusing_connections_is_one_line(local_stack: RunningStack, text_source: tuple) -> None:
    spec_path, _ = text_source
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli(
        "ingest", str(spec_path), env={"PREFECT_API_URL": local_stack.prefect.url, "LABEL_STUDIO_URL": url}
    )
    assert_one_line_failure(result, "ingest", f"cannot reach {url}", "retried")


# --- MLflow and the object store ----------------------------------------------------------------------------
class AlwaysBusy:
    """A loopback HTTP server answering every request 503, like an MLflow whose artifact store is down."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def busy(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "artifact store unreachable"}'
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = busy

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()


@pytest.fixture
def busy_server() -> Iterator[AlwaysBusy]:
    server = AlwaysBusy()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_datasets_with_mlflow_down_is_one_line_quickly(local_stack: RunningStack) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("datasets", "anything", env={"MLFLOW_TRACKING_URI": url})
    assert_one_line_failure(result, "datasets", "MLflow", url, "cannot reach")
    assert result.seconds < 30


def test_datasets_with_mlflow_answering_503_is_one_line_quickly(
    local_stack: RunningStack, busy_server: AlwaysBusy
) -> None:
    result = run_cli("datasets", "anything", env={"MLFLOW_TRACKING_URI": busy_server.url})
    assert_one_line_failure(result, "datasets", "MLflow", busy_server.url, "503")


def test_pull_with_mlflow_down_is_one_line(local_stack: RunningStack, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("pull", "anything:latest", "--out", str(tmp_path / "out"), env={"MLFLOW_TRACKING_URI": url})
    assert_one_line_failure(result, "pull", "MLflow", url)


def test_collect_with_the_object_store_down_is_one_line(local_stack: RunningStack, text_source: tuple) -> None:
    spec_path, _ = text_source
    url = f"http://127.0.0.1:{free_port()}"
    env = {"PREFECT_API_URL": local_stack.prefect.url, "LABELFLOW_S3_ENDPOINT_URL": url}
    result = run_cli("collect", str(spec_path), env=env)
    assert_one_line_failure(result, "collect", url)


def test_collect_with_mlflow_down_is_one_line_and_publishes_nothing(
    local_stack: RunningStack,
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    unique_name: str,
    tmp_path: Path,
    busy_server: AlwaysBusy,
) -> None:
    from labelflow.tasks.simulate import build_annotators, run

    labels = ["positive", "negative", "neutral"]
    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    for i in range(12):
        object_store.put_bytes(source, f"r/{labels[i % 3]}/{i:03d}.txt", f"review {i}: {labels[i % 3]}".encode())
    body = {
        "name": f"mlflow outage {unique_name}",
        "source": f"s3://{source}/r/",
        "state": f"s3://{unique_name}-state/s/",
        "task": "text-classification",
        "labels": labels,
        "overlap": 3,
        "quality": {"route_low_agreement": False},
        "dataset": {"name": unique_name},
    }
    spec = parse_spec(body)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(body), encoding="utf-8")
    stack_env = {"PREFECT_API_URL": local_stack.prefect.url}
    assert run_cli("ingest", str(spec_path), env=stack_env).code == 0
    project_id = int(read_project_record(object_store, spec)["project_id"])
    run(label_studio, spec, project_id, build_annotators([1.0, 1.0, 1.0], spammers=0, prefix=unique_name), seed=1)

    for down in (f"http://127.0.0.1:{free_port()}", busy_server.url):
        result = run_cli("collect", str(spec_path), env={**stack_env, "MLFLOW_TRACKING_URI": down})
        assert_one_line_failure(result, "collect", "MLflow", down)
        # MLflow is first needed by the dataset-ownership check, before any collecting: that task retries, then fails
        # (the terminal shows only the flow's lines; the task runs' retries are in the Prefect UI and the message).
        assert "(retried 2 times)" in result.stderr, "retried before giving up"
    assert run_cli("datasets", unique_name, "--json", env=stack_env).stdout.strip() == "[]"
