"""The CLI stays light: help imports no heavy library, and only up/down/status reach the local stack's machinery."""

from __future__ import annotations

import ast
import http.server
import json
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
