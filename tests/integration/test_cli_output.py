"""What the CLI prints when its output is a pipe, as a script reads it: `--json` is one JSON document on stdout for
every command that has it (success and failure), URLs and messages are never cut or wrapped, and a collect whose
validation fails says so once, in a few lines, without Prefect's tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from tests.conftest import RunningStack
from tests.openai_server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["positive", "negative"]
TEXTS = 12
# How many lines a failed collect may print in all (issue 16: it was 105, the message four times).
FAILED_COLLECT_MAX_LINES = 15


def json_commands() -> list[str]:
    """Every command of the Typer app with a `--json` option (a new one is covered without editing this test)."""
    import typer.main

    from labelflow.cli import app

    group = typer.main.get_command(app)
    return sorted(
        name
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        if any("--json" in getattr(param, "opts", []) for param in command.params)
    )


def labelflow(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`labelflow ARGS` in a subprocess, stdout and stderr pipes (not terminals)."""
    return subprocess.run(
        [sys.executable, "-m", "labelflow.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_json_document(result: subprocess.CompletedProcess[str]) -> Any:
    """stdout parsed as exactly one JSON document (json.loads refuses anything before or after it)."""
    assert result.stdout.strip(), f"nothing on stdout; stderr: {result.stderr[-2000:]}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def project(local_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A 12-text project run through the CLI with --json: ingest, simulate (one exact annotator), collect."""
    import uuid

    name = f"t-{uuid.uuid4().hex[:12]}"
    store = ObjectStore(local_stack.s3)
    store.ensure_bucket(name)
    for i in range(TEXTS):
        label = LABELS[i % 2]
        store.put_bytes(name, f"reviews/{label}/{i:03d}.txt", f"评论 {i}: a {label} review of item {i}".encode())
    body = {
        "name": f"cli output {name}",
        "source": f"s3://{name}/reviews/",
        "state": f"s3://{name}/state/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 1,
        "quality": {"route_low_agreement": False},
        "dataset": {"name": name, "min_rows_per_class": 1},
    }
    folder = tmp_path_factory.mktemp("cli-output")
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    outputs = {
        "ingest": labelflow("ingest", str(spec), "--json"),
        "simulate": labelflow("simulate", str(spec), "--json", "--accuracy", "1.0"),  # truth: the label folder
        "collect": labelflow("collect", str(spec), "--json"),
    }
    yield {"name": name, "spec": spec, "folder": folder, "outputs": outputs}
    client = LabelStudioClient(local_stack.label_studio)
    project_id = client.find_project(body["name"])
    if project_id:
        client.delete_project(project_id)
    client.close()
    for item in list(store.list_objects(name)):
        store.delete(name, item.key)


def generate_spec(folder: Path, name: str, store: ObjectStore, server: FakeOpenAIServer) -> Path:
    """A preference spec that generates two candidates for one prompt through the fake endpoint."""
    from labelflow.tasks.generate import layout
    from labelflow.tasks.task_types import TASK_TYPES

    store.put_bytes(name, "prompts/in.jsonl", json.dumps({"id": "q1", "text": "Name a prime number."}).encode())
    body = {
        "name": f"cli output generate {name}",
        "source": f"s3://{name}/generated/",
        "state": f"s3://{name}/generate-state/",
        "task": "preference",
        "records": {"fields": layout(TASK_TYPES["preference"], 2).fields, "id": "id"},
        "generate": {
            "endpoint": server.base_url,
            "model": "gen-model",
            "candidates": 2,
            "prompts": f"s3://{name}/prompts/",
            "prompt_field": "text",
            "prompt_id_field": "id",
        },
    }
    path = folder / "generate.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


def succeeding_run(
    command: str, project: dict[str, Any], store: ObjectStore, server: FakeOpenAIServer
) -> subprocess.CompletedProcess[str]:
    """A successful `labelflow COMMAND ... --json` on the module's project."""
    spec, name, folder = str(project["spec"]), project["name"], project["folder"]
    if command in project["outputs"]:
        return project["outputs"][command]
    runs = {
        "status": lambda: labelflow("status", "--json"),
        "datasets": lambda: labelflow("datasets", name, "--json"),
        "pull": lambda: labelflow("pull", f"{name}:latest", "--out", str(folder / "pulled"), "--json"),
        "deploy": lambda: labelflow(
            "deploy", spec, "--ingest-every", "off", "--collect-every", "off", "--pipeline-every", "off", "--json"
        ),
        "generate": lambda: labelflow("generate", str(generate_spec(folder, name, store, server)), "--json"),
        "open": lambda: labelflow("open", spec, "project", "--json"),
        "annotators": lambda: labelflow("annotators", "--json"),
        "train": lambda: labelflow("train", spec, "--json"),  # 6 texts of each label: enough for a baseline
    }
    assert command in runs, f"add a successful run of `labelflow {command} --json` to this test"
    return runs[command]()


def failing_run(command: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """A failing `labelflow COMMAND ... --json`: a missing spec, an unknown version, an unreachable server."""
    missing_spec = str(tmp_path / "missing.yaml")
    runs = {
        "status": lambda: labelflow("status", "--home", str(tmp_path / "no-stack"), "--json"),
        "datasets": lambda: labelflow("datasets", "any", "--json", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}),
        "pull": lambda: labelflow("pull", "no-such-dataset:3", "--out", str(tmp_path / "out"), "--json"),
        "open": lambda: labelflow("open", missing_spec, "project", "--json"),
        "annotators": lambda: labelflow("annotators", "--ladder", str(tmp_path / "missing-ladder.yaml"), "--json"),
    }
    if command in runs:
        return runs[command]()
    return labelflow(command, missing_spec, "--json")  # every other --json command takes a spec first


def remove_deployments(document: list[dict[str, Any]], prefect_url: str) -> None:
    """Delete the deployments a test registered (the stack is shared by the whole suite)."""
    import httpx

    for row in document:
        httpx.delete(f"{prefect_url}/deployments/{row['id']}", timeout=30)


@pytest.mark.parametrize("command", json_commands())
def test_json_output_is_one_document_on_stdout_on_success(
    command: str,
    project: dict[str, Any],
    object_store: ObjectStore,
    openai_server: FakeOpenAIServer,
    local_stack: RunningStack,
) -> None:
    result = succeeding_run(command, project, object_store, openai_server)
    assert result.returncode == 0, result.stderr[-3000:]
    document = one_json_document(result)
    assert "error" not in document
    if command == "collect":  # the run that publishes: MLflow's run links must not reach stdout
        assert document["dataset"]["published"] is True, document["dataset"]
    if command == "deploy":
        remove_deployments(document, local_stack.prefect.url)


@pytest.mark.parametrize("command", json_commands())
def test_json_output_is_one_document_on_stdout_on_failure(
    command: str, tmp_path: Path, local_stack: RunningStack
) -> None:
    result = failing_run(command, tmp_path)
    assert result.returncode != 0
    document = one_json_document(result)
    if command == "status":  # a stack that is not running: the services, each unhealthy
        assert document["services"] and not any(s["healthy"] for s in document["services"])
    else:
        assert document["error"]["exit_code"] == result.returncode and document["error"]["message"]
        assert document["error"]["message"] in result.stderr  # people still read it on stderr


def test_status_prints_urls_and_paths_whole_into_a_pipe(local_stack: RunningStack) -> None:
    result = labelflow("status")
    assert result.returncode == 0, result.stderr
    for service in local_stack.stack.status():
        assert service.url in result.stdout and service.log in result.stdout
    assert "…" not in result.stdout


def test_error_messages_are_not_wrapped(tmp_path: Path, local_stack: RunningStack) -> None:
    name = "a-dataset-whose-name-is-long-enough-that-the-message-passes-eighty-columns"
    result = labelflow("pull", f"{name}:1", "--out", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and local_stack.mlflow.tracking_uri in lines[0], result.stderr


def test_a_failed_validation_is_printed_once_in_a_few_lines_without_tracebacks(
    object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str, tmp_path: Path
) -> None:
    """An empty annotation (a Submit without a choice) fails validation: the CLI says it once, briefly."""
    object_store.ensure_bucket(unique_name)
    for i in range(3):
        object_store.put_bytes(unique_name, f"texts/{i}.txt", f"text {i}".encode())
    body = {
        "name": f"cli empty {unique_name}",
        "source": f"s3://{unique_name}/texts/",
        "state": f"s3://{unique_name}/state/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 1,
    }
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(body), encoding="utf-8")
    ingested = labelflow("ingest", str(spec), "--json")
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    project_id = int(json.loads(ingested.stdout)["project_id"])
    try:
        task_id = label_studio.task_ids(project_id)[0]
        label_studio.create_annotation(task_id, [], label_studio.whoami()["id"])

        result = labelflow("collect", str(spec))
        printed = (result.stdout + result.stderr).strip().splitlines()
        assert result.returncode == 1
        assert len(printed) <= FAILED_COLLECT_MAX_LINES, "\n".join(printed)
        assert sum("validation FAILED" in line for line in printed) == 1, "\n".join(printed)
        assert "no class chosen" in result.stderr and "Traceback" not in result.stderr

        as_json = labelflow("collect", str(spec), "--json")
        assert as_json.returncode == 1
        assert "validation FAILED" in one_json_document(as_json)["error"]["message"]
    finally:
        label_studio.delete_project(project_id)
        for item in list(object_store.list_objects(unique_name)):
            object_store.delete(unique_name, item.key)


def test_a_collect_with_nothing_new_answers_from_the_last_run_without_a_flow(
    project: dict[str, Any], local_stack: RunningStack
) -> None:
    from labelflow.integrations.resources import Resources
    from labelflow.tasks.collect_shortcut import unchanged_summary
    from labelflow.tasks.spec import load_spec

    published = one_json_document(project["outputs"]["collect"])
    # Once more first: anything changed since the fixture's collect (a commit to labelflow, Label Studio touching
    # a task) is work for this run, and the next one then has nothing to do.
    labelflow("collect", str(project["spec"]), "--json")
    again = labelflow("collect", str(project["spec"]), "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    summary = one_json_document(again)
    assert summary["collection"]["mode"] == "unchanged" and "Flow run" not in again.stderr
    assert summary["dataset"]["published"] is False and summary["dataset"]["version"] == published["dataset"]["version"]
    assert summary["quality"] == published["quality"]

    # An annotation made since is work to do: the check says so, and the next collect runs the flow.
    resources = Resources.from_settings()
    spec = load_spec(project["spec"])
    client = resources.label_studio_client
    task_id = client.task_ids(int(published["project_id"]))[0]
    client.create_annotation(task_id, [], client.whoami()["id"])
    assert unchanged_summary(resources.store, client, spec, str(project["spec"])) is None
    client.close()
