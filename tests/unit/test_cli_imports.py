"""The CLI stays light: help imports no heavy library, and only up/down/status reach the local stack's machinery."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
HEAVY = ["prefect", "mlflow", "great_expectations", "boto3", "minio", "pandas", "labelflow.infra.local_stack"]
LOADED_AFTER = """
import json, sys
from labelflow.cli import app
import typer.main
try:
    typer.main.get_command(app).main(args=sys.argv[1:], prog_name="labelflow", standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(name for name in {heavy!r} if name in sys.modules)))
"""


def heavy_modules_loaded_by(*args: str) -> list[str]:
    """Which heavy modules a fresh interpreter has loaded after running `labelflow ARGS` in-process."""
    result = subprocess.run(
        [sys.executable, "-c", LOADED_AFTER.format(heavy=HEAVY), *args],
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


def test_only_up_down_and_status_reach_the_local_stack_module() -> None:
    source = (ROOT / "labelflow" / "cli.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    users = set()
    for function in [n for n in tree.body if isinstance(n, ast.FunctionDef)]:
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and node.module == "labelflow.infra.local_stack":
                users.add(function.name)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_stack":
                users.add(function.name)
    top_level = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "labelflow.infra.local_stack"]
    assert top_level == [], "the local stack must not be imported when the CLI module loads"
    # `demo` brings the stack up itself when it is not running (the README's one command).
    assert users <= {"_stack", "up", "down", "status", "demo"}, users
