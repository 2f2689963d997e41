"""Local stack mechanics that need no server: ports, credentials, process bookkeeping."""

from __future__ import annotations

import json
import socket
import stat
import time
from pathlib import Path

import psutil
import pytest

from infra.local_stack import (
    Credentials,
    LocalStack,
    Service,
    StackConfig,
    StackError,
    build_services,
    connection_env,
    port_is_free,
)


@pytest.fixture
def config(tmp_path: Path) -> StackConfig:
    return StackConfig(home=tmp_path / "stack")


def test_credentials_are_created_once_and_private(tmp_path: Path) -> None:
    first = Credentials.load_or_create(tmp_path)
    second = Credentials.load_or_create(tmp_path)
    assert first == second
    assert len(first.s3_secret_key) >= 32
    mode = stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode)
    assert mode == 0o600


def test_port_in_use_is_detected() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)


def test_up_reports_a_busy_port_instead_of_moving(config: StackConfig) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        busy = config.model_copy(update={"label_studio_port": port})
        with pytest.raises(StackError) as caught:
            LocalStack(busy).up()
    assert f"port {port} (label-studio http)" in str(caught.value)
    assert not (config.run_dir).exists(), "nothing may be started when a port is busy"


def test_ports_must_leave_room_for_grpc() -> None:
    with pytest.raises(ValueError, match="55535"):
        StackConfig(s3_port=60000)


def test_services_bind_loopback_and_switch_telemetry_off(config: StackConfig) -> None:
    creds = Credentials.load_or_create(config.home)
    services = {s.name: s for s in build_services(config, creds)}
    assert set(services) == {"listener", "s3", "label-studio", "mlflow", "prefect"}
    for service in services.values():
        assert service.url.startswith("http://127.0.0.1:")
        assert service.env["DO_NOT_TRACK"] == "true"
    assert "-master.telemetry=false" in services["s3"].command
    assert services["mlflow"].env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert services["prefect"].env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    ls_env = services["label-studio"].env
    assert ls_env["COLLECT_ANALYTICS"] == "false"
    assert ls_env["LATEST_VERSION_CHECK"] == "false"
    assert ls_env["SENTRY_DSN"] == "" and ls_env["FRONTEND_SENTRY_DSN"] == ""
    assert ls_env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert "SSRF_PROTECTION_ENABLED" not in ls_env, "SSRF protection must stay on"
    assert ls_env["S3_ENDPOINT"] == f"http://127.0.0.1:{config.s3_port}"


def test_the_filer_notifies_a_listener_that_starts_with_it(config: StackConfig) -> None:
    creds = Credentials.load_or_create(config.home)
    services = build_services(config, creds)
    assert services[0].name == "listener", "the listener starts first, so the filer never queues refused events"
    listener, weed = services[0], services[1]
    assert listener.command[-3:] == ["listen", "--port", str(config.listener_port)]
    assert listener.env["LABELFLOW_LISTENER_TOKEN"] == creds.listener_token
    assert listener.env["PREFECT_API_URL"] == f"http://127.0.0.1:{config.prefect_port}/api"
    env = weed.env
    assert env["WEED_NOTIFICATION_WEBHOOK_ENDPOINT"] == f"{listener.url}/hooks/seaweedfs"
    assert env["WEED_NOTIFICATION_WEBHOOK_BEARER_TOKEN"] == creds.listener_token
    # SeaweedFS reads a retry count <= 0 as its default of 3 with 3-30 s back-off, and delivers one event at a time:
    # a refused event must cost about a second, not twenty.
    assert int(env["WEED_NOTIFICATION_WEBHOOK_MAX_RETRIES"]) == 1
    assert int(env["WEED_NOTIFICATION_WEBHOOK_BACKOFF_SECONDS"]) == 1
    assert int(env["WEED_NOTIFICATION_WEBHOOK_MAX_BACKOFF_SECONDS"]) == 1
    assert env["WEED_NOTIFICATION_WEBHOOK_PATH_PREFIXES"].split() == ["/buckets/"]
    assert "delete" not in env["WEED_NOTIFICATION_WEBHOOK_EVENT_TYPES"].split()


def test_up_starts_seaweedfs_only_once_the_listener_answers(
    config: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The filer notifies from its first write on; events that meet a closed port are lost (and leak in SeaweedFS's
    # dead-letter queue). The slow servers start meanwhile, so this costs `up` no time.
    stack = LocalStack(config)
    calls: list[tuple[str, object]] = []

    def healthy(services: list[Service], started: dict[str, float]) -> dict[str, float]:
        assert all(s.name in started for s in services)
        calls.append(("healthy", [s.name for s in services]))
        return {s.name: 1.0 for s in services}

    monkeypatch.setattr(stack, "_start", lambda service: calls.append(("start", service.name)))
    monkeypatch.setattr(stack, "_wait_healthy", healthy)
    monkeypatch.setattr(stack, "ensure_label_studio_env", lambda echo: None)
    monkeypatch.setattr(stack, "_after_start", lambda creds: None)
    monkeypatch.setattr("infra.local_stack.port_is_free", lambda port: True)
    reports = stack.up()
    assert calls == [
        ("start", "listener"),
        ("start", "label-studio"),
        ("start", "mlflow"),
        ("start", "prefect"),
        ("healthy", ["listener"]),
        ("start", "s3"),
        ("healthy", ["s3", "label-studio", "mlflow", "prefect"]),
    ]
    assert {r.name: r.action for r in reports} == dict.fromkeys(
        ["listener", "s3", "label-studio", "mlflow", "prefect"], "started"
    )


def test_connection_env_carries_every_variable(config: StackConfig) -> None:
    env = connection_env(config, Credentials.load_or_create(config.home))
    assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{config.prefect_port}/api"
    assert env["LABEL_STUDIO_URL"] == f"http://127.0.0.1:{config.label_studio_port}"
    assert env["LABELFLOW_S3_ENDPOINT_URL"] == f"http://127.0.0.1:{config.s3_port}"


def test_status_of_a_stack_never_started(config: StackConfig) -> None:
    statuses = LocalStack(config).status()
    assert [s.running for s in statuses] == [False] * 5
    assert not (config.home / "credentials.json").exists(), "status must not create state"


def _sleeper(config: StackConfig, name: str = "s3") -> Service:
    """A stand-in process registered under a service name (no server needed)."""
    return Service(
        name=name, title=name, url="", health_url="", ports={}, command=["sleep", "300"], env={"PATH": "/usr/bin:/bin"}
    )


def test_down_stops_exactly_the_processes_it_started(config: StackConfig) -> None:
    config.home.mkdir(parents=True)
    stack = LocalStack(config)
    stack._start(_sleeper(config))
    state = json.loads((config.run_dir / "s3.json").read_text())
    ours = psutil.Process(state["pid"])
    bystander = psutil.Popen(["sleep", "300"])
    try:
        outcome = stack.down()
        assert outcome["s3"] == "stopped"
        assert outcome["label-studio"] == "not running"
        assert not ours.is_running() or ours.status() == psutil.STATUS_ZOMBIE
        assert bystander.is_running()
        assert not (config.run_dir / "s3.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_recycled_pid_is_not_mistaken_for_a_service(config: StackConfig) -> None:
    config.run_dir.mkdir(parents=True)
    stranger = psutil.Popen(["sleep", "300"])
    try:
        fake = {"pid": stranger.pid, "create_time": time.time() - 3600}
        (config.run_dir / "mlflow.json").write_text(json.dumps(fake))
        stack = LocalStack(config)
        assert stack.down()["mlflow"] == "not running"
        assert stranger.is_running(), "down must never kill a process it did not start"
    finally:
        stranger.kill()
        stranger.wait()
