"""Local stack mechanics that need no server: ports, credentials, process bookkeeping."""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import threading
import time
from pathlib import Path

import psutil
import pytest

from labelflow.infra.credentials import Credentials, connection_env
from labelflow.infra.local_stack import LocalStack
from labelflow.infra.ports import STACK_PORTS
from labelflow.infra.seaweedfs_security import ensure_grpc_tls
from labelflow.infra.services import Service, build_services
from labelflow.infra.stack_config import StackConfig, StackError, port_is_free


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
    monkeypatch.setattr("labelflow.infra.local_stack.port_is_free", lambda port: True)
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


# --- issue 13: secrets at rest, managed ports, recorded ports, adaptive health wait -------------------------------


def test_services_start_with_a_private_umask(config: StackConfig) -> None:
    # Label Studio's sqlite file holds the S3 key, the API token and the listener's token: it must be 0600.
    config.home.mkdir(parents=True)
    stack = LocalStack(config)
    probe = Service(
        name="s3",
        title="s3",
        url="",
        health_url="",
        ports={},
        command=["sh", "-c", "umask; touch made-by-service.db; sleep 300"],
        env={"PATH": "/usr/bin:/bin"},
    )
    stack._start(probe)
    try:
        deadline = time.monotonic() + 10
        while not (config.home / "made-by-service.db").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "0077" in stack.log_path("s3").read_text()
        assert stat.S_IMODE((config.home / "made-by-service.db").stat().st_mode) == 0o600
        for path in (stack.log_path("s3"), config.run_dir / "s3.json"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        stack.down()


def test_up_makes_an_existing_stack_home_private(config: StackConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stack home from before the fix: world-readable database, logs and volume files.
    database = config.data_dir / "label-studio" / "label_studio.sqlite3"
    volume = config.data_dir / "seaweedfs" / "bucket_1.dat"
    log = config.logs_dir / "label-studio.log"
    for path in (database, volume, log):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("secret")
        path.chmod(0o644)
        path.parent.chmod(0o755)
    config.home.chmod(0o755)
    stack = LocalStack(config)
    monkeypatch.setattr(stack, "_start", lambda service: None)
    monkeypatch.setattr(stack, "_wait_healthy", lambda services, started: {s.name: 1.0 for s in services})
    monkeypatch.setattr(stack, "ensure_label_studio_env", lambda echo: None)
    monkeypatch.setattr(stack, "_after_start", lambda creds: None)
    monkeypatch.setattr("labelflow.infra.local_stack.port_is_free", lambda port: True)
    stack.up()
    for path in (database, volume, log, config.home / "credentials.json", config.home / "seaweedfs-s3.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for directory in (config.home, database.parent, volume.parent, config.logs_dir):
        assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0, directory


def test_every_seaweedfs_port_is_managed_and_protected(config: StackConfig) -> None:
    creds = Credentials.load_or_create(config.home)
    ensure_grpc_tls(config.seaweedfs_tls_dir)  # `up` creates them
    weed = next(s for s in build_services(config, creds) if s.name == "s3")
    command = weed.command
    # The admin server binds even with its UI off; an unmanaged port silently moves to the next free one.
    assert f"-admin.port={config.weed_admin_port}" in command
    assert f"-admin.port.grpc={config.weed_admin_port + 10000}" in command
    assert weed.ports["admin"] == config.weed_admin_port
    assert weed.ports["admin-grpc"] == config.weed_admin_port + 10000
    # Master and filer HTTP APIs off: the S3 gateway talks gRPC; the master's /submit and /col/delete took
    # anonymous writes and deletes.
    assert "-disableHttp" in command
    env = weed.env
    for name in (
        "WEED_JWT_SIGNING_KEY",
        "WEED_JWT_SIGNING_READ_KEY",
        "WEED_JWT_FILER_SIGNING_KEY",
        "WEED_JWT_FILER_SIGNING_READ_KEY",
    ):
        assert len(env[name]) >= 32, name
    assert len({env[n] for n in env if n.startswith("WEED_JWT_")}) == 4, "four distinct keys"
    for component in ("MASTER", "VOLUME", "FILER", "S3", "ADMIN", "WORKER", "CLIENT"):
        assert Path(env[f"WEED_GRPC_{component}_CERT"]).is_file()
        assert stat.S_IMODE(Path(env[f"WEED_GRPC_{component}_KEY"]).stat().st_mode) == 0o600
    assert not any(secret in " ".join(command) for secret in (env["WEED_JWT_SIGNING_KEY"], creds.s3_secret_key)), (
        "secrets never go on a command line (ps shows it to every user)"
    )


def test_the_s3_config_has_a_read_only_identity_for_label_studio(config: StackConfig) -> None:
    creds = Credentials.load_or_create(config.home)
    LocalStack(config)._write_seaweed_identities(creds)
    identities = json.loads((config.home / "seaweedfs-s3.json").read_text())["identities"]
    by_key = {i["credentials"][0]["accessKey"]: i for i in identities}
    assert by_key[creds.s3_access_key]["actions"] == ["Admin", "Read", "List", "Tagging", "Write"]
    reader = by_key[creds.s3_reader_access_key]
    assert sorted(reader["actions"]) == ["List", "Read"]
    assert creds.s3_reader_secret_key != creds.s3_secret_key and len(creds.s3_reader_secret_key) >= 32
    env = connection_env(config, creds)
    assert env["LABELFLOW_S3_STORAGE_ACCESS_KEY"] == creds.s3_reader_access_key
    assert env["LABELFLOW_S3_STORAGE_SECRET_KEY"] == creds.s3_reader_secret_key


def test_credentials_of_an_older_stack_home_gain_the_new_keys(tmp_path: Path) -> None:
    old = {
        "s3_access_key": "labelflow",
        "s3_secret_key": "s" * 40,
        "label_studio_username": "admin@labelflow.local",
        "label_studio_password": "p",
        "label_studio_token": "t" * 40,
        "listener_token": "l" * 40,
    }
    (tmp_path / "credentials.json").write_text(json.dumps(old))
    (tmp_path / "credentials.json").chmod(0o644)
    creds = Credentials.load_or_create(tmp_path)
    assert creds.s3_secret_key == old["s3_secret_key"], "existing keys are kept"
    assert creds.s3_reader_access_key and len(creds.s3_reader_secret_key) >= 32
    assert Credentials.load_or_create(tmp_path) == creds
    assert stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode) == 0o600


def _serve_health(port: int) -> object:
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_status_of_another_home_probes_the_ports_it_recorded(tmp_path: Path) -> None:
    # Stack B ran with other ports than the defaults; `status --home B` must probe B's, not the defaults.
    recorded_port = next(port for port in range(21731, 22731) if port_is_free(port))
    other = StackConfig(home=tmp_path / "b", mlflow_port=recorded_port)
    other.home.mkdir(parents=True)
    stack_b = LocalStack(other)
    mlflow_b = _sleeper(other, "mlflow")
    mlflow_b.ports = {"http": recorded_port}
    stack_b._start(mlflow_b)
    server = _serve_health(recorded_port)
    try:
        seen_from_defaults = LocalStack(StackConfig(home=other.home))
        mlflow = next(s for s in seen_from_defaults.status() if s.name == "mlflow")
        assert mlflow.url == f"http://127.0.0.1:{recorded_port}"
        assert mlflow.healthy, mlflow.detail
        env = seen_from_defaults.connection()["env"]
        assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{recorded_port}"
    finally:
        server.shutdown()  # type: ignore[attr-defined]
        stack_b.down()


def test_up_keeps_waiting_for_a_service_that_makes_progress(
    config: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cold start on a busy 2-core machine: Label Studio migrated for more than 180 s and `up` gave up.
    config.home.mkdir(parents=True)
    stack = LocalStack(config)
    service = _sleeper(config, "label-studio")
    stack._start(service)
    now = [0.0]
    monkeypatch.setattr("labelflow.infra.supervisor.time.monotonic", lambda: now[0])
    monkeypatch.setattr("labelflow.infra.supervisor.time.sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))

    def probe(svc: Service, timeout: float = 3.0) -> tuple[bool, str]:
        with stack.log_path("label-studio").open("a") as log:  # a migration line now and then
            log.write(f"Applying migration at {now[0]:.0f}\n")
        return now[0] >= 400, "ConnectError"

    monkeypatch.setattr(stack, "_probe", probe)
    try:
        ready = stack._wait_healthy([service], {"label-studio": 0.0})
        assert ready["label-studio"] >= 400
    finally:
        monkeypatch.undo()
        stack.down()


def test_up_help_lists_every_port() -> None:
    from typer.testing import CliRunner

    from labelflow.cli import app

    result = CliRunner().invoke(app, ["up", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for fragment in ("--listener-port", "8700", "8701", "9333", "8480", "8888", "23646", "+10000"):
        assert fragment in text, fragment


# --- issue 16: `labelflow status` within 0.5 s of bare Python --------------------------------------------------


def _pretend_running(config: StackConfig, name: str, port: int) -> None:
    """Record this test's own process as the stack's `name` on `port`, so status finds it running and probes it."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    state = {"pid": os.getpid(), "create_time": psutil.Process().create_time(), "ports": {"http": port}}
    (config.run_dir / f"{name}.json").write_text(json.dumps(state))


def test_status_probes_the_services_all_at_once(config: StackConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    # One after another, five probes of busy servers added up; at once, status waits for the slowest only.
    names = ["listener", "s3", "label-studio", "mlflow", "prefect"]
    for name in names:
        _pretend_running(config, name, 20000)
    stack = LocalStack(config)
    all_probing = threading.Barrier(len(names), timeout=10)

    def probe(service: Service, timeout: float = 3.0) -> tuple[bool, str]:
        try:
            all_probing.wait()  # passes only when every probe is under way at the same time
        except threading.BrokenBarrierError:
            return False, "probed one after another"
        return True, "healthy"

    monkeypatch.setattr(stack, "_probe", probe)
    statuses = stack.status()
    assert [s.name for s in statuses] == names, "status lists the services in start order"
    assert [(s.running, s.healthy, s.detail) for s in statuses] == [(True, True, "healthy")] * len(names)


def test_status_reports_a_service_that_does_not_answer_instead_of_waiting_for_it(
    config: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("labelflow.infra.local_stack.STATUS_PROBE_SECONDS", 0.5)
    with socket.socket() as hung:  # accepts connections (the kernel's backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        _pretend_running(config, "mlflow", hung.getsockname()[1])
        mlflow = next(s for s in LocalStack(config).status() if s.name == "mlflow")
    assert mlflow.running and not mlflow.healthy
    assert "timed out" in mlflow.detail


class _PrefectHealth(http.server.BaseHTTPRequestHandler):
    """Prefect's /api/health, answering what the test puts in `answer`."""

    answer = b"true"

    def do_GET(self) -> None:
        body = self.answer if self.path == "/api/health" else b"not found"
        self.send_response(200 if self.path == "/api/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("answer", "healthy", "detail"), [(b"true", True, "healthy"), (b"false", False, "HTTP 200")])
def test_prefect_is_healthy_when_its_health_endpoint_answers_true(
    config: StackConfig, answer: bytes, healthy: bool, detail: str
) -> None:
    handler = type("Answer", (_PrefectHealth,), {"answer": answer})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _pretend_running(config, "prefect", server.server_port)
        prefect = next(s for s in LocalStack(config).status() if s.name == "prefect")
    finally:
        server.shutdown()
    assert prefect.url == f"http://127.0.0.1:{server.server_port}"
    assert prefect.healthy is healthy and detail in prefect.detail


def test_a_service_that_refuses_connections_is_unhealthy(config: StackConfig) -> None:
    port = next(port for port in range(21731, 22731) if port_is_free(port))
    _pretend_running(config, "label-studio", port)
    label_studio = next(s for s in LocalStack(config).status() if s.name == "label-studio")
    assert label_studio.running and not label_studio.healthy
    assert "refused" in label_studio.detail.lower()


def test_stack_config_reads_its_variables_under_the_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELFLOW_STACK_MLFLOW_PORT", "5123")
    monkeypatch.setenv("LABELFLOW_STACK_PREFECT_PORT", "4321")
    monkeypatch.setenv("LABELFLOW_STACK_DB", "postgres")
    monkeypatch.setenv("LABELFLOW_STACK_LABEL_STUDIO_VENV_DIR", str(tmp_path / "venv"))
    monkeypatch.setenv("LABELFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LABELFLOW_STACK_S3_PORT", raising=False)
    config = StackConfig(prefect_port=4999)
    assert (config.mlflow_port, config.prefect_port, config.database) == (5123, 4999, "postgres")
    assert config.label_studio_venv == tmp_path / "venv"
    assert config.home == tmp_path / "home"
    assert config.s3_port == STACK_PORTS["s3_port"][1], "the defaults are the ports table's"
    monkeypatch.setenv("LABELFLOW_STACK_S3_PORT", "70000")
    with pytest.raises(ValueError, match="55535"):
        StackConfig()


def test_a_health_port_that_does_not_speak_http_is_unhealthy(config: StackConfig) -> None:
    with socket.socket() as stranger:  # another program on the service's port answers in its own protocol
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()

        def greet() -> None:
            connection, _ = stranger.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(b"500 unrecognised command\r\n")

        threading.Thread(target=greet, daemon=True).start()
        _pretend_running(config, "listener", stranger.getsockname()[1])
        listener = next(s for s in LocalStack(config).status() if s.name == "listener")
    assert listener.running and not listener.healthy
    assert "not an HTTP answer" in listener.detail


def test_a_label_studio_left_on_the_development_server_or_with_old_file_modes_is_restarted_by_up() -> None:
    from labelflow.infra.local_stack import outdated_reason
    from labelflow.infra.services import Service
    from labelflow.infra.supervisor import FILE_PRIVACY_VERSION

    gunicorn = ["/venv/bin/python", "-m", "labelflow_label_studio_serve", "127.0.0.1", "8080", "4"]
    service = Service("label-studio", "Label Studio", "http://x", "http://x/health", {"http": 8080}, gunicorn, {})
    current = {"command": gunicorn, "file_privacy": FILE_PRIVACY_VERSION}
    assert outdated_reason(service, None) is None and outdated_reason(service, current) is None
    runserver = {**current, "command": ["/venv/bin/label-studio", "start", "--no-browser", "--port", "8080"]}
    assert "development server" in (outdated_reason(service, runserver) or "")
    assert outdated_reason(service, {**current, "command": [*gunicorn[:-1], "2"]}) == "its command changed"
    assert "world-readable" in (outdated_reason(service, {**current, "file_privacy": 0}) or "")
    mlflow = Service("mlflow", "MLflow", "http://x", "http://x/health", {"http": 5000}, ["mlflow", "server"], {})
    assert outdated_reason(mlflow, {**current, "command": ["mlflow", "server", "--old"]}) is None  # only Label Studio
