"""Steps are plain functions: nothing under tasks/ imports Prefect, and the flows apply one retry policy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from labelflow.integrations.label_studio import LabelStudioError
from labelflow.integrations.object_store import ObjectStoreError
from tests.unit.fakes import FakeClients, PlainSteps
from tests.unit.stage_fixtures import text_spec, upload_reviews

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT_FOLDERS = ("flows", "tasks", "integrations", "infra", "expectations")
ORCHESTRATION = ("prefect", "prefect_dask")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function (`from x import y` counts x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def source_of(module: str) -> Path | None:
    """The checkout file of a `labelflow...` module (the top-level folders are mapped under labelflow)."""
    parts = module.split(".")
    if parts[0] != "labelflow":
        return None
    base = ROOT / parts[1] if len(parts) > 1 and parts[1] in CHECKOUT_FOLDERS else ROOT / "labelflow"
    rest = parts[2:] if base.name in CHECKOUT_FOLDERS else parts[1:]
    for candidate in (base.joinpath(*rest).with_suffix(".py"), base.joinpath(*rest, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def orchestration_imports_reached_from(start: Path) -> list[str]:
    """`file: module` for each Prefect import in `start` or in any labelflow module it imports, transitively."""
    offenders, seen, queue = [], set(), [start]
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            if module.split(".")[0] in ORCHESTRATION:
                offenders.append(f"{path.relative_to(ROOT)}: {module}")
            elif (found := source_of(module)) is not None:
                queue.append(found)
    return offenders


@pytest.mark.parametrize("path", sorted((ROOT / "tasks").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_step_reaches_prefect(path: Path) -> None:
    assert orchestration_imports_reached_from(path) == []


def test_the_checker_finds_a_prefect_import_in_what_a_module_imports() -> None:
    assert "flows/steps.py: prefect" in orchestration_imports_reached_from(ROOT / "flows" / "ingest.py")
    assert orchestration_imports_reached_from(ROOT / "tasks" / "ingest.py") == []


def test_retries_are_configured_in_one_place() -> None:
    # Prefect's retry options, wherever a task is made or re-optioned in the flows or the steps.
    retry_options = {"retries", "retry_delay_seconds", "retry_condition_fn"}
    makers = {"task", "step", "partial", "with_options"}
    configured = []
    for folder in ("flows", "tasks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call) or not retry_options & {k.arg for k in node.keywords}:
                    continue
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in makers:
                    configured.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert configured and {where.split(":")[0] for where in configured} == {"flows/steps.py"}, configured


def test_the_policy_retries_transient_adapter_errors_twice_and_nothing_else() -> None:
    from labelflow.flows.steps import RETRIES, RETRY_DELAY_SECONDS, as_task, retry_if_transient
    from labelflow.tasks.collect import recorded_project
    from labelflow.tasks.ingest import import_and_record

    class Failed:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def result(self) -> None:
            raise self.error

    retried = as_task(recorded_project)
    assert retried.name == "recorded_project" and retried.retries == RETRIES == 2
    assert retried.retry_delay_seconds == RETRY_DELAY_SECONDS == [2, 10]
    assert retried.retry_condition_fn is retry_if_transient and as_task(recorded_project) is retried
    assert as_task(import_and_record, retried=False).retries == 0
    assert retry_if_transient(None, None, Failed(ObjectStoreError("down", transient=True)))
    assert not retry_if_transient(None, None, Failed(ObjectStoreError("NoSuchBucket", not_found=True)))
    assert not retry_if_transient(None, None, Failed(LabelStudioError("HTTP 400", status=400)))


def test_only_the_import_runs_once_the_other_ingest_steps_under_the_policy() -> None:
    from labelflow.flows.ingest import ingest_spec

    clients = FakeClients()
    upload_reviews(clients, 0, 3)
    steps = PlainSteps()
    ingest_spec(text_spec(), clients=clients, steps=steps)
    assert steps.once_calls == ["import_and_record"]
    assert steps.calls == [
        "check_sources",
        "ensure_project",
        "load_ledger",
        "recover_interrupted_batches",
        "clean_objects",
        "import_and_record",
        "write_run_report",
    ]
