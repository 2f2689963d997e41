"""`labelflow worker` and `labelflow listen` failures that need no server."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from labelflow.cli import app


def test_worker_names_the_prefect_server_it_cannot_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    result = CliRunner().invoke(app, ["worker", "--pool", "labelflow"])
    assert result.exit_code == 1, result.output
    assert "cannot reach the Prefect server at http://127.0.0.1:9/api" in " ".join(result.output.split())


def test_listen_refuses_a_busy_port_before_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("LABELFLOW_LISTENER_URL", "http://127.0.0.1:8700")
    monkeypatch.setenv("LABELFLOW_LISTENER_TOKEN", "t" * 32)
    monkeypatch.setenv("LABELFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LABELFLOW_S3_ACCESS_KEY", "k")
    monkeypatch.setenv("LABELFLOW_S3_SECRET_KEY", "s")
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "0" * 40)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["listen", "--port", str(port)])
    assert result.exit_code == 1, result.output
    assert "listen failed" in result.output and "Address already in use" in " ".join(result.output.split())
