"""Adapter errors: transport failures and 5xx are transient (retried), 4xx are not, and messages stay one line."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

import labelflow.integrations.label_studio as label_studio
from labelflow.flows.steps import retry_if_transient
from labelflow.integrations.label_studio import LabelStudioClient, LabelStudioError
from labelflow.integrations.mlflow_tracking import MLflowError, MLflowTracking, mlflow_error
from labelflow.integrations.settings import LabelStudioSettings, MLflowSettings


def client_answering(handler: Callable[[httpx.Request], httpx.Response]) -> LabelStudioClient:
    """A Label Studio client whose requests go to `handler` instead of a server."""
    client = LabelStudioClient(LabelStudioSettings(url="http://ls.test:8080", api_key="k" * 40))
    client._http = httpx.Client(base_url="http://ls.test:8080", transport=httpx.MockTransport(handler))
    return client


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(label_studio, "READ_RETRY_DELAYS", (0.0, 0.0, 0.0))


def dropped(request: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)


def test_import_tasks_turns_a_dropped_connection_into_a_transient_error() -> None:
    with pytest.raises(LabelStudioError) as raised:
        client_answering(dropped).import_tasks(3, [{"data": {"text": "a"}}])
    assert raised.value.transient
    assert "cannot reach http://ls.test:8080" in str(raised.value) and "RemoteProtocolError" in str(raised.value)


@pytest.mark.parametrize(("status", "transient"), [(500, True), (502, True), (503, True), (429, True), (400, False)])
def test_import_tasks_status_codes(status: int, transient: bool) -> None:
    client = client_answering(lambda request: httpx.Response(status, text="<html>\nbusy\n</html>"))
    with pytest.raises(LabelStudioError) as raised:
        client.import_tasks(3, [{"data": {"text": "a"}}])
    assert raised.value.transient is transient and raised.value.status == status
    assert "\n" not in str(raised.value)


def test_import_is_sent_once_its_retries_belong_to_the_idempotent_batch_import() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return dropped(request)

    with pytest.raises(LabelStudioError):
        client_answering(handler).import_tasks(3, [{"data": {"text": "a"}}])
    assert calls == ["POST"]  # a lost answer may hide created tasks: only the batch lookup may decide a retry


def test_reads_are_retried_with_backoff_then_succeed_or_say_how_often() -> None:
    calls: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) <= 2:
            return dropped(request) if len(calls) == 1 else httpx.Response(503, text="busy")
        return httpx.Response(200, json={"results": [{"id": 4, "title": "p"}]})

    assert client_answering(flaky).find_project("p") == 4 and len(calls) == 3

    with pytest.raises(LabelStudioError) as raised:
        client_answering(dropped).find_project("p")
    assert raised.value.transient and "(retried 3 times)" in str(raised.value)


def test_a_401_is_not_retried() -> None:
    calls: list[int] = []

    def refused(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(401, json={"detail": "Invalid token."})

    with pytest.raises(LabelStudioError) as raised:
        client_answering(refused).find_project("p")
    assert not raised.value.transient and len(calls) == 1 and "LABEL_STUDIO_API_KEY" in str(raised.value)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (MlflowException("API request to http://x/api failed with exception Max retries exceeded"), True),
        (MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE), True),
        (RestException({"error_code": "INTERNAL_ERROR", "message": "db locked"}), True),
        (RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"}), False),
        (RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad tag"}), False),
        (requests.ConnectionError("refused"), True),
        (requests.Timeout("slow"), True),
    ],
)
def test_mlflow_errors_are_transient_for_outages_and_5xx_only(error: Exception, transient: bool) -> None:
    mapped = mlflow_error("search runs", "http://127.0.0.1:5000", error)
    assert isinstance(mapped, MLflowError) and mapped.transient is transient
    assert "search runs" in str(mapped) and "http://127.0.0.1:5000" in str(mapped) and "\n" not in str(mapped)


@pytest.mark.parametrize(("status", "transient"), [(503, True), (500, True), (403, False), (404, False)])
def test_artifact_http_errors_map_by_status(status: int, transient: bool) -> None:
    response = requests.Response()
    response.status_code = status
    mapped = mlflow_error("log artifact", "http://m", requests.HTTPError(f"{status} Error", response=response))
    assert mapped.transient is transient and mapped.status == status


def test_prefect_retries_transient_errors_of_every_adapter() -> None:
    class FailedState:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def result(self) -> Any:
            raise self.exc

    assert retry_if_transient(None, None, FailedState(MLflowError("down", transient=True)))
    assert not retry_if_transient(None, None, FailedState(MLflowError("bad parameter", transient=False)))
    assert retry_if_transient(None, None, FailedState(LabelStudioError("down", transient=True)))
    assert not retry_if_transient(None, None, FailedState(ValueError("bug")))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_client_retries_are_bounded_by_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    ):
        monkeypatch.setenv(name, "0")  # recorded, so the adapter's value is removed after the test
        monkeypatch.delenv(name)
    tracking = MLflowTracking(MLflowSettings(tracking_uri=f"http://127.0.0.1:{free_port()}"))
    began = time.monotonic()
    with pytest.raises(MLflowError) as raised:
        tracking.experiment_id("anything")
    assert raised.value.transient and "cannot reach" in str(raised.value)
    assert time.monotonic() - began < 15, "MLflow's own defaults retry for minutes"
    assert int(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 3


def test_an_operator_setting_for_mlflow_retries_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    MLflowTracking(MLflowSettings(tracking_uri="http://127.0.0.1:5000"))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"


def test_object_store_down_is_a_transient_one_line_error_within_seconds() -> None:
    from labelflow.integrations.object_store import ObjectStore, ObjectStoreError
    from labelflow.integrations.settings import S3Settings

    url = f"http://127.0.0.1:{free_port()}"
    store = ObjectStore(S3Settings(endpoint_url=url, access_key="a", secret_key="s"))
    for call in (lambda: store.get_bytes("some-bucket", "k.json"), lambda: store.bucket_exists("some-bucket")):
        began = time.monotonic()
        with pytest.raises(ObjectStoreError) as raised:
            call()
        assert raised.value.transient and f"cannot reach the object store at {url}" in str(raised.value)
        assert "Connection refused" in str(raised.value) and "\n" not in str(raised.value)
        assert time.monotonic() - began < 15


def test_object_store_client_side_errors_are_not_transient() -> None:
    from botocore.exceptions import NoCredentialsError

    from labelflow.integrations.object_store import _wrap

    assert not _wrap("put s3://b/k", NoCredentialsError()).transient


def test_cli_failures_print_one_unwrapped_line_and_never_read_the_error_as_markup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import typer

    from labelflow.cli.errors import fail

    long = "MLflow search runs at http://127.0.0.1:5000: cannot reach the server: [Errno 111] Connection refused " * 3
    exit_ = fail("datasets failed", MLflowError(long + "[/bold] [red]"), 1)
    assert isinstance(exit_, typer.Exit) and exit_.exit_code == 1
    printed = capsys.readouterr().err
    assert printed.count("\n") == 1 and "[/bold] [red]" in printed and "[Errno 111]" in printed


def test_console_logs_drop_only_expected_tracebacks() -> None:
    from labelflow.cli.errors import WithoutTracebacksOf

    formatter = WithoutTracebacksOf(logging.Formatter("%(message)s"), (LabelStudioError,))

    def record_of(exc: Exception) -> logging.LogRecord:
        try:
            raise exc
        except Exception:
            return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())

    expected = record_of(LabelStudioError("down", transient=True))
    assert formatter.format(expected) == "failed" and expected.exc_info is not None  # other handlers keep it
    assert "Traceback" in formatter.format(record_of(ValueError("a bug")))
