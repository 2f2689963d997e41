"""`labelflow up --db postgres`: Label Studio, Prefect and MLflow keep their data in one PostgreSQL server.

Runs only when the suite's stack is on PostgreSQL: `make test-postgres` (LABELFLOW_TEST_DB=postgres).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from labelflow.infra import postgres
from labelflow.infra.credentials import Credentials
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.registry import DatasetRegistry
from tests.conftest import RunningStack
from tests.integration.test_publish import annotate, collect, text_project

pytestmark = pytest.mark.skipif(
    os.environ.get("LABELFLOW_TEST_DB") != "postgres", reason="the suite's stack is not on PostgreSQL"
)


def query(stack: RunningStack, database: str, sql: str) -> list[str]:
    """Rows of one SQL query against one of the stack's databases, read with psql."""
    password = Credentials.load_or_create(stack.stack.config.home).postgres_password
    return postgres.psql(stack.stack.recorded_config(), password, sql, database).splitlines()


def test_status_lists_a_healthy_postgres_and_no_service_keeps_a_sqlite_file(local_stack: RunningStack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "labelflow.cli", "status", "--json"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["database"] == "postgres"
    services = {s["name"]: s for s in status["services"]}
    assert status["services"][0]["name"] == "postgres" and services["postgres"]["healthy"]
    assert services["postgres"]["url"] == f"postgresql://127.0.0.1:{local_stack.stack.recorded_config().postgres_port}"
    data = local_stack.stack.config.data_dir
    assert not [p for pattern in ("**/*.sqlite3", "**/*.db") for p in data.glob(pattern)]
    assert set(query(local_stack, "postgres", "SELECT datname FROM pg_database")) >= set(postgres.DATABASES)


def test_each_service_writes_its_own_database(
    local_stack: RunningStack, label_studio: LabelStudioClient, mlflow_tracking: MLflowTracking, unique_name: str
) -> None:
    config = (
        '<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/></Choices></View>'
    )
    project_id = label_studio.create_project(title=unique_name, label_config=config)
    experiment_id = mlflow_tracking.client.create_experiment(unique_name)
    flow = httpx.post(f"{local_stack.prefect.url}/flows/", json={"name": unique_name}, timeout=30)
    flow.raise_for_status()
    try:
        assert query(local_stack, "labelstudio", f"SELECT id FROM project WHERE title = '{unique_name}'") == [
            str(project_id)
        ]
        assert query(local_stack, "mlflow", f"SELECT experiment_id FROM experiments WHERE name = '{unique_name}'") == [
            str(experiment_id)
        ]
        assert query(local_stack, "prefect", f"SELECT id FROM flow WHERE name = '{unique_name}'") == [flow.json()["id"]]
    finally:
        label_studio.delete_project(project_id)
        mlflow_tracking.client.delete_experiment(experiment_id)
        httpx.delete(f"{local_stack.prefect.url}/flows/{flow.json()['id']}", timeout=30)


def test_ingest_collect_publish_on_postgres(
    local_stack: RunningStack,
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    flow_runs_before = int(query(local_stack, "prefect", "SELECT count(*) FROM flow_run")[0])
    path, spec = text_project(object_store, tmp_path, unique_name, 6)
    assert annotate(label_studio, object_store, spec, unique_name) == 18
    result = collect(path)
    assert result["validation"]["success"]
    assert result["dataset"]["published"] and result["dataset"]["version"] == 1
    published = DatasetRegistry(object_store, mlflow_tracking).resolve(unique_name)
    pulled = DatasetRegistry(object_store, mlflow_tracking).pull(unique_name, 1, tmp_path / "pulled")
    assert pulled.version == 1 and pulled.path("consensus").is_file()

    # The same facts, read straight from each service's database.
    assert query(local_stack, "mlflow", f"SELECT status FROM runs WHERE run_uuid = '{published.run_id}'") == [
        "FINISHED"
    ]
    project = result["project_id"]
    assert query(local_stack, "labelstudio", f"SELECT count(*) FROM task WHERE project_id = {project}") == ["6"]
    assert query(
        local_stack,
        "labelstudio",
        f"SELECT count(*) FROM task_completion c JOIN task t ON c.task_id = t.id WHERE t.project_id = {project}",
    ) == ["18"]
    # ingest and collect, with their subflows, ran as flow runs recorded in Prefect's database
    assert int(query(local_stack, "prefect", "SELECT count(*) FROM flow_run")[0]) >= flow_runs_before + 2
