"""The CLI stays light: help imports no heavy library, and only up/down/status reach the local stack's machinery."""

from __future__ import annotations

import ast
import base64
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LOCAL_STACK = "labelflow.infra.local_stack"
HEAVY = ["prefect", "mlflow", "great_expectations", "boto3", "minio", "pandas", LOCAL_STACK]
# The CLI is a package: every module of it is held to the same rules.
CLI_MODULES = sorted((ROOT / "labelflow" / "cli").rglob("*.py"))
LOADED_AFTER = """
import json, sys
from labelflow.cli import app
import typer.main
try:
    typer.main.get_command(app).main(args=sys.argv[1:], prog_name="labelflow", standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(name for name in {modules!r} if name in sys.modules)))
"""


def heavy_modules_loaded_by(*args: str) -> list[str]:
    """Which heavy modules a fresh interpreter has loaded after running `labelflow ARGS` in-process."""
    return modules_loaded_by(args, HEAVY)


def modules_loaded_by(args: tuple[str, ...], modules: list[str]) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded after running `labelflow ARGS` in-process."""
    result = subprocess.run(
        [sys.executable, "-c", LOADED_AFTER.format(modules=modules), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def command_names() -> list[str]:
    import typer.main

    from labelflow.cli import app

    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_top_level_help_imports_no_heavy_library() -> None:
    assert heavy_modules_loaded_by("--help") == []


@pytest.mark.parametrize("command", command_names())
def test_every_commands_help_imports_no_heavy_library(command: str) -> None:
    assert heavy_modules_loaded_by(command, "--help") == []


def test_nothing_under_flows_tasks_or_integrations_imports_infra() -> None:
    offenders = []
    for folder in ("flows", "tasks", "integrations"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] == "infra"]
    assert offenders == []


def imports_the_local_stack(node: ast.AST) -> bool:
    """Whether an import statement loads labelflow.infra.local_stack, however it is spelled."""
    if isinstance(node, ast.Import):
        return any(alias.name == LOCAL_STACK for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        package, _, module = LOCAL_STACK.rpartition(".")
        return node.module == LOCAL_STACK or (node.module == package and module in {a.name for a in node.names})
    return False


def is_type_checking_block(node: ast.stmt) -> bool:
    """`if TYPE_CHECKING:`: imports for type hints only, never run."""
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def test_help_loads_every_cli_module_so_the_checks_above_cover_them() -> None:
    expected = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in CLI_MODULES
        if path.name != "__main__.py"
    }
    assert modules_loaded_by(("--help",), sorted(expected)) == sorted(expected)


def test_only_up_down_and_status_reach_the_local_stack_module() -> None:
    users, loaded_with_the_cli = set(), []
    for path in CLI_MODULES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for statement in tree.body:
            if isinstance(statement, ast.FunctionDef):
                for node in ast.walk(statement):
                    if imports_the_local_stack(node):
                        users.add(statement.name)
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_stack":
                        users.add(statement.name)
            elif not is_type_checking_block(statement):
                where = path.relative_to(ROOT)
                loaded_with_the_cli += [
                    f"{where}:{n.lineno}" for n in ast.walk(statement) if imports_the_local_stack(n)
                ]
    assert loaded_with_the_cli == [], "the local stack must not be imported when the CLI modules load"
    assert {"up", "down", "status"} <= users, "the commands that need the local stack were not found"
    # `demo` brings the stack up itself when it is not running (the README's one command).
    assert users <= {"_stack", "up", "down", "status", "demo"}, users


class FakeMLflow(http.server.BaseHTTPRequestHandler):
    """An MLflow tracking server that knows no experiment (what a read of an unknown dataset meets)."""

    def do_GET(self) -> None:
        body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such experiment"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def fake_mlflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeMLflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    yield url
    server.shutdown()


READ_ONLY_MUST_NOT_LOAD = ["prefect", "great_expectations", "mlflow"]


@pytest.mark.parametrize(
    "args",
    [("datasets", "some-dataset"), ("datasets", "some-dataset", "--json"), ("pull", "some-dataset:latest")],
    ids=" ".join,
)
def test_reading_datasets_starts_no_prefect_engine_and_imports_neither_gx_nor_mlflow(
    args: tuple[str, ...], fake_mlflow: str, tmp_path: Path
) -> None:
    extra = ("--out", str(tmp_path)) if args[0] == "pull" else ()
    assert modules_loaded_by((*args, *extra), READ_ONLY_MUST_NOT_LOAD) == []


def test_status_starts_no_prefect_engine_and_imports_neither_gx_nor_mlflow(tmp_path: Path) -> None:
    assert modules_loaded_by(("status", "--home", str(tmp_path)), READ_ONLY_MUST_NOT_LOAD) == []


# What `labelflow status` never needs (issue 16: within 0.5 s of bare Python): an HTTP client library (httpx brings
# httpcore, h2 and, with selenium installed, trio: 0.4 s), pydantic-settings, `up`'s one-off setup, and the
# pipeline's libraries.
STATUS_MUST_NOT_LOAD = [
    "httpx",
    "httpcore",
    "trio",
    "pydantic_settings",
    "labelflow.infra.bootstrap",
    "labelflow.integrations.settings",
    "prefect",
    "great_expectations",
    "mlflow",
    "pandas",
    "boto3",
    "minio",
]


class FakeHealth(http.server.BaseHTTPRequestHandler):
    """A service's health endpoint: 200 on GET /health."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_status_probing_a_running_service_imports_no_http_client_library_nor_pydantic_settings(tmp_path: Path) -> None:
    import psutil

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The listener of this home "runs": its state file names this test's own process and the fake health endpoint's
    # port, so status really probes it over HTTP.
    (tmp_path / "run").mkdir()
    state = {"pid": os.getpid(), "create_time": psutil.Process().create_time(), "ports": {"http": server.server_port}}
    (tmp_path / "run" / "listener.json").write_text(json.dumps(state), encoding="utf-8")
    try:
        result = subprocess.run(
            [sys.executable, "-c", LOADED_AFTER.format(modules=STATUS_MUST_NOT_LOAD), "status", "--home",
             str(tmp_path), "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    finally:
        server.shutdown()
    document, _, loaded = result.stdout.strip().rpartition("\n")
    services = {s["name"]: s for s in json.loads(document)["services"]}
    assert services["listener"]["healthy"], services["listener"]
    assert services["listener"]["url"] == f"http://127.0.0.1:{server.server_port}"
    assert not services["s3"]["running"]
    assert json.loads(loaded) == []


# What reading a dataset or answering "nothing changed" never needs: the tables and statistics libraries, and
# boto3 (the object store's reads go through MinIO's client).
READS_MUST_NOT_LOAD = ["pandas", "numpy", "pyarrow", "scipy", "boto3", "botocore", "labelflow.tasks.annotations"]
FILE_BODY = b'{"text": "good", "label": "positive"}\n'
FILE_ENTRY = {"path": "train.jsonl", "bytes": len(FILE_BODY), "sha256": hashlib.sha256(FILE_BODY).hexdigest()}
MANIFEST_BODY = json.dumps({"rows": 1, "files": [{**FILE_ENTRY, "role": "training-export"}]}).encode()
MANIFEST_SHA = hashlib.sha256(MANIFEST_BODY).hexdigest()
OBJECTS = {
    "/datasets/some-dataset/v1/_READY": json.dumps({"manifest_sha256": MANIFEST_SHA}).encode(),
    "/datasets/some-dataset/v1/manifest.json": MANIFEST_BODY,
    "/datasets/some-dataset/v1/train.jsonl": FILE_BODY,
}
RUN_TAGS = {
    "labelflow.dataset.name": "some-dataset",
    "labelflow.dataset.version": "1",
    "labelflow.dataset.status": "ready",
    "labelflow.dataset.location": "s3://datasets/some-dataset/v1/",
    "labelflow.dataset.digest": "0" * 64,
    "labelflow.dataset.manifest_sha256": MANIFEST_SHA,
    "labelflow.dataset.rows": "1",
}


class FakeRegistryServer(http.server.BaseHTTPRequestHandler):
    """MLflow's REST API with one dataset of one ready version, and an S3 store holding that version's files."""

    def _send(self, status: int, body: bytes, content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{hashlib.md5(body).hexdigest()}"')
        self.send_header("Last-Modified", "Mon, 30 Nov 2026 00:00:00 GMT")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _object(self, head: bool) -> None:
        path = self.path.split("?")[0]
        if path in OBJECTS:
            self._send(200, OBJECTS[path], "application/octet-stream", head)
            return
        error = f"<Error><Code>NoSuchKey</Code><Message>no such key</Message><Key>{path}</Key></Error>".encode()
        self._send(404, error, "application/xml", head)

    def do_HEAD(self) -> None:
        self._object(head=True)

    def do_GET(self) -> None:
        if self.path.startswith("/api/2.0/mlflow/experiments/get-by-name"):
            self._send(
                200, json.dumps({"experiment": {"experiment_id": "1", "name": "datasets/some-dataset"}}).encode()
            )
        elif self.path.startswith("/api/2.0/mlflow/experiments/get"):
            self._send(200, json.dumps({"experiment": {"experiment_id": "1", "tags": []}}).encode())
        else:
            self._object(head=False)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        tags = [{"key": key, "value": value} for key, value in RUN_TAGS.items()]
        self._send(200, json.dumps({"runs": [{"info": {"run_id": "run-1"}, "data": {"tags": tags}}]}).encode())

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A served dataset version: MLflow and the object store on one local fake server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistryServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("LABELFLOW_S3_ENDPOINT_URL", url)
    monkeypatch.setenv("LABELFLOW_S3_ACCESS_KEY", "reader")
    monkeypatch.setenv("LABELFLOW_S3_SECRET_KEY", "secret")
    yield url
    server.shutdown()


def test_pulling_a_version_reads_through_minio_without_pandas_scipy_or_boto3(
    fake_registry: str, tmp_path: Path
) -> None:
    loaded = modules_loaded_by(("pull", "some-dataset:latest", "--out", str(tmp_path)), [*READS_MUST_NOT_LOAD, "minio"])
    assert (tmp_path / "train.jsonl").read_bytes() == FILE_BODY, "the version was not pulled"
    assert loaded == ["minio"]


def test_listing_versions_loads_neither_pandas_scipy_nor_an_object_store_client(fake_registry: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOADED_AFTER.format(modules=[*READS_MUST_NOT_LOAD, "minio"]),
            "datasets",
            "some-dataset",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "s3://datasets/some-dataset/v1/" in result.stdout, "the version was not listed"
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


UNCHANGED_COLLECT = """
import base64, json, sys
from labelflow.cli import render
from labelflow.integrations.object_store import ObjectStoreError
from labelflow.tasks.collect_shortcut import unchanged_summary
from labelflow.tasks.spec import ProjectSpec

objects = {{tuple(k.split("/", 1)): base64.b64decode(v) for k, v in json.loads(open(sys.argv[1]).read()).items()}}

class Store:
    def get_bytes(self, bucket, key, max_bytes=None):
        if (bucket, key) not in objects:
            raise ObjectStoreError(f"get s3://{{bucket}}/{{key}}: NoSuchKey", not_found=True)
        return objects[(bucket, key)]

class LabelStudio:
    def tasks_updated_after(self, project_id, since, limit):
        return []

summary = unchanged_summary(Store(), LabelStudio(), ProjectSpec.model_validate_json(open(sys.argv[2]).read()), None)
render.collect_summary(summary)
print(json.dumps(sorted(name for name in {modules!r} if name in sys.modules)))
"""


def test_a_collect_with_nothing_to_do_answers_and_prints_without_pandas_scipy_or_boto3(tmp_path: Path) -> None:
    from labelflow.flows.collect import collect_validate_register
    from labelflow.flows.ingest import ingest_spec
    from tests.unit.fakes import FakeClients, FakeValidator, PlainSteps
    from tests.unit.stage_fixtures import annotate_all, text_spec, upload_reviews

    clients = FakeClients()
    spec = text_spec(dataset={"name": "reviews"})
    upload_reviews(clients, 0, 6)
    annotate_all(clients, int(ingest_spec(spec, clients=clients, steps=PlainSteps())["project_id"]))
    collect_validate_register(spec, None, clients=clients, validator=FakeValidator(), steps=PlainSteps())
    objects = {f"{bucket}/{key}": base64.b64encode(data).decode() for (bucket, key), (data, _) in
               clients.store.objects.items()}  # fmt: skip
    (tmp_path / "objects.json").write_text(json.dumps(objects), encoding="utf-8")
    (tmp_path / "spec.json").write_text(spec.model_dump_json(), encoding="utf-8")

    result = subprocess.run(
        [sys.executable, "-c", UNCHANGED_COLLECT.format(modules=READS_MUST_NOT_LOAD), str(tmp_path / "objects.json"),
         str(tmp_path / "spec.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "no new version (nothing changed since the collect of" in result.stdout, result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
