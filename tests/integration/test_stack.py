"""The local stack's services, proven against the real servers."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from labelflow.cli import app
from labelflow.infra.services import MLFLOW_ARTIFACT_BUCKET
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.stack_checks import SMOKE_TEXT, check_label_studio, check_mlflow, check_object_store
from tests.conftest import RunningStack


def test_object_store_bucket_put_list_presigned_get(object_store: ObjectStore, unique_name: str) -> None:
    line = check_object_store(object_store, unique_name)
    assert f"s3://{unique_name}/smoke/" in line
    keys = [obj.key for obj in object_store.list_objects(unique_name)]
    assert len(keys) == 1
    (key,) = keys
    assert object_store.get_bytes(unique_name, key) == SMOKE_TEXT.encode()
    url = object_store.presigned_get_url(unique_name, key)
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert httpx.get(tampered, timeout=10).status_code == 403, "the store must really check signatures"


def test_object_store_lists_unicode_and_spaced_keys(object_store: ObjectStore, unique_name: str) -> None:
    object_store.ensure_bucket(unique_name)
    keys = ["raw/数据 标注.txt", "raw/with space.txt", "raw/ü/nested.txt"]
    for key in keys:
        object_store.put_bytes(unique_name, key, key.encode())
    assert sorted(o.key for o in object_store.list_objects(unique_name, "raw/")) == sorted(keys)


def test_label_studio_token_and_s3_resolution(
    label_studio: LabelStudioClient, object_store: ObjectStore, unique_name: str
) -> None:
    assert label_studio.whoami()["email"] == "admin@labelflow.local"
    line = check_label_studio(label_studio, object_store, unique_name)
    assert "resolved s3://" in line


def test_label_studio_keeps_ssrf_protection_for_user_endpoints(
    label_studio: LabelStudioClient, object_store: ObjectStore, unique_name: str
) -> None:
    """An explicit private endpoint is refused: only S3_ENDPOINT and 127.0.0.1 itself (the local stack's own
    services, for the event listener's webhooks) are carved out of Label Studio's block list."""
    object_store.ensure_bucket(unique_name)
    config = '<View><Text name="t" value="$text"/></View>'
    project_id = label_studio.create_project(title=unique_name, label_config=config)
    try:
        try:
            elsewhere = object_store.settings.model_copy(update={"endpoint_url": "http://127.0.0.2:8333"})
            label_studio.add_s3_import_storage(project_id, unique_name, "", elsewhere, use_server_endpoint=False)
        except Exception as exc:
            assert "reserved network address" in str(exc)
        else:
            raise AssertionError("Label Studio accepted 127.0.0.2: SSRF protection is off")
    finally:
        label_studio.delete_project(project_id)


def test_mlflow_artifact_lands_in_object_store(
    mlflow_tracking: MLflowTracking, object_store: ObjectStore, unique_name: str
) -> None:
    line = check_mlflow(mlflow_tracking, unique_name)
    run_id = line.split()[2]
    experiment_id = mlflow_tracking.ensure_experiment(unique_name)
    stored = [o.key for o in object_store.list_objects(MLFLOW_ARTIFACT_BUCKET, f"artifacts/{experiment_id}/{run_id}/")]
    assert stored == [f"artifacts/{experiment_id}/{run_id}/artifacts/smoke.txt"]


def test_prefect_server_records_a_flow_run(prefect_api: str, unique_name: str) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name=f"labelflow-test-{unique_name}")
    def trivial(x: int) -> int:
        return x + 1

    state = trivial(41, return_state=True)
    assert state.result() == 42
    flow_run_id = state.state_details.flow_run_id

    with get_client(sync_client=True) as client:
        assert str(client.api_url).rstrip("/") == prefect_api
        run = client.read_flow_run(flow_run_id)
    assert run.state is not None and run.state.is_completed()
    assert run.parameters == {"x": 41}


def _smoke_runs_on_server(api_url: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return client.count_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["labelflow-smoke-check"])))


def test_smoke_cli_round_trips_every_service_on_the_stack_prefect(local_stack: RunningStack) -> None:
    before = _smoke_runs_on_server(local_stack.prefect.url)
    result = CliRunner().invoke(app, ["smoke"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for fragment in ("object store:", "Label Studio:", "MLflow:", "Prefect:"):
        assert f"ok {fragment}" in result.output.replace("\n", " ")
    assert _smoke_runs_on_server(local_stack.prefect.url) == before + 1, "the run must land on the stack's server"


def test_status_json_gives_urls_and_credentials(local_stack: RunningStack) -> None:
    result = CliRunner().invoke(app, ["status", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert {s["name"]: s["healthy"] for s in payload["services"]} == {
        "listener": True,
        "s3": True,
        "label-studio": True,
        "mlflow": True,
        "prefect": True,
    }
    assert payload["env"]["LABEL_STUDIO_API_KEY"] == local_stack.label_studio.api_key.get_secret_value()
    assert payload["label_studio_login"]["username"] == "admin@labelflow.local"


def test_killed_service_shows_unhealthy_and_up_restarts_only_it(local_stack: RunningStack) -> None:
    stack = local_stack.stack
    s3 = next(s for s in stack.status() if s.name == "s3")
    assert s3.healthy and s3.pid
    os.killpg(s3.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and next(s for s in stack.status() if s.name == "s3").running:
        time.sleep(0.2)
    result = CliRunner().invoke(app, ["status"], catch_exceptions=False)
    assert result.exit_code == 1
    after_kill = {s.name: s for s in stack.status()}
    assert not after_kill["s3"].healthy and not after_kill["s3"].running
    assert all(after_kill[name].healthy for name in ("listener", "label-studio", "mlflow", "prefect"))

    reports = {r.name: r.action for r in stack.up()}
    assert reports == {
        "listener": "already running",
        "s3": "started",
        "label-studio": "already running",
        "mlflow": "already running",
        "prefect": "already running",
    }
    assert all(s.healthy for s in stack.status())


def test_status_of_a_home_uses_the_ports_its_stack_recorded(
    local_stack: RunningStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status --home DIR` with no port settings probes the ports that stack's services were started with."""
    config = local_stack.stack.config
    for name in [n for n in os.environ if n.startswith("LABELFLOW_STACK_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("LABELFLOW_HOME", raising=False)
    result = CliRunner().invoke(app, ["status", "--home", str(config.home), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    urls = {s["name"]: s["url"] for s in payload["services"]}
    assert urls["label-studio"] == f"http://127.0.0.1:{config.label_studio_port}"
    assert urls["s3"] == f"http://127.0.0.1:{config.s3_port}"
    assert payload["env"]["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{config.mlflow_port}"
    assert all(s["healthy"] for s in payload["services"])


def _label_studio_processes(local_stack: RunningStack) -> list[psutil.Process]:
    """The stack's Label Studio process and everything it started."""
    state = json.loads((local_stack.stack.config.run_dir / "label-studio.json").read_text())
    root = psutil.Process(int(state["pid"]))
    return [root, *root.children(recursive=True)]


def test_label_studio_serves_from_gunicorn_workers_on_sqlite_in_wal_mode(local_stack: RunningStack) -> None:
    config = local_stack.stack.config
    commands = [" ".join(p.cmdline()) for p in _label_studio_processes(local_stack)]
    gunicorn = [c for c in commands if "bin/gunicorn" in c and f"127.0.0.1:{config.label_studio_port}" in c]
    assert len(gunicorn) == 1 + config.label_studio_workers, commands  # the master and its workers
    assert not any("runserver" in c or " start " in c for c in commands), commands
    database = config.data_dir / "label-studio" / "label_studio.sqlite3"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_label_studio_static_files_come_from_whitenoise_with_long_caching(local_stack: RunningStack) -> None:
    base = local_stack.label_studio.base_url
    page = httpx.get(f"{base}/user/login/", timeout=30)
    assert page.status_code == 200
    hashed = sorted(set(re.findall(r'/static/[^"\']+\.[0-9a-f]{12}\.(?:js|css)', page.text)))
    assert hashed, "the login page links hashed static files"
    response = httpx.get(f"{base}{hashed[0]}", timeout=30)
    assert response.status_code == 200 and len(response.content) > 0
    assert "immutable" in response.headers["cache-control"], response.headers
    # the one file Label Studio rewrites per request still goes through its view
    roboto = httpx.get(f"{base}/static/fonts/roboto/roboto.css", timeout=30)
    assert roboto.status_code == 200 and "{{HOSTNAME}}" not in roboto.text


def test_eight_annotators_at_once_all_land_without_database_locked(
    label_studio: LabelStudioClient, local_stack: RunningStack, unique_name: str
) -> None:
    log = local_stack.stack.log_path("label-studio")
    log_start = log.stat().st_size
    config = (
        '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
        '<Choice value="a"/><Choice value="b"/></Choices></View>'
    )
    project_id = label_studio.create_project(title=unique_name, label_config=config)
    try:
        task_ids = label_studio.import_tasks(project_id, [{"text": f"text {i}"} for i in range(6)])
        result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["a"]}}]

        def annotate_every_task(annotator: int) -> list[int]:
            client = LabelStudioClient(label_studio.settings)
            try:
                order = task_ids[annotator % len(task_ids) :] + task_ids[: annotator % len(task_ids)]
                return [client.create_annotation(task_id, result) for task_id in order]
            finally:
                client.close()

        with ThreadPoolExecutor(8) as pool:
            created = [i for ids in pool.map(annotate_every_task, range(8)) for i in ids]
        assert len(set(created)) == 8 * len(task_ids)
        for task_id in task_ids:
            assert len(label_studio.get_task(task_id)["annotations"]) == 8
    finally:
        label_studio.delete_project(project_id)
    with log.open("rb") as handle:
        handle.seek(log_start)
        assert b"database is locked" not in handle.read()
