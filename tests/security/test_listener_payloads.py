"""Hostile webhook bodies: every malformed payload gets a 4xx with a reason, is logged, and queues nothing."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import datetime
from uuid import UUID, uuid4

import pytest

from labelflow.triggers import Debouncer, EventListener, Route, Routes

TOKEN = "s3cret-listener-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
def listener() -> Iterator[tuple[EventListener, int]]:
    """The real listener HTTP server on a free loopback port (no Prefect: routes are empty, no run is created)."""

    def submit(route: Route, when: datetime, source: str) -> UUID:
        return uuid4()

    events = EventListener(TOKEN, Debouncer(15.0, submit, lambda _: None), Routes)
    server = events.server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield events, server.server_address[1]
    server.shutdown()
    server.server_close()


def post(port: int, hook: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """POST a raw body; returns (status, JSON answer). A dropped connection raises, failing the test."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", f"/hooks/{hook}", body=body, headers=headers or AUTH)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send bytes as they are and read the whole answer (for framing no HTTP client would produce)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


LS_PAYLOADS = {
    "path in the project id": {"action": "ANNOTATION_CREATED", "project": {"id": "9/../10"}},
    "string project id": {"action": "ANNOTATION_CREATED", "project": {"id": "10"}},
    "float project id": {"action": "ANNOTATION_CREATED", "project": {"id": 1.5}},
    "boolean project id": {"action": "ANNOTATION_CREATED", "project": {"id": True}},
    "list project id": {"action": "ANNOTATION_CREATED", "project": {"id": [1]}},
    "negative project id": {"action": "ANNOTATION_CREATED", "project": {"id": -3}},
    "huge project id": {"action": "ANNOTATION_CREATED", "project": {"id": 10**40}},
    "project id on the task": {"action": "ANNOTATION_UPDATED", "task": {"project": "x"}},
    "annotations not a list": {"action": "ANNOTATIONS_DELETED", "annotations": "nope"},
    "no project at all": {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}},
    "no action": {"project": {"id": 3}},
    "action not a string": {"action": ["ANNOTATION_CREATED"], "project": {"id": 3}},
}
S3_PAYLOADS = {
    "records not a list": {"Records": "abc"},
    "record not an object": {"Records": [1, 2]},
    "bucket not a string": {
        "Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": 5}, "object": {"key": "k"}}}]
    },
    "s3 not an object": {"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": "x"}]},
    "no records": {"hello": "world"},
    "SNS message not JSON": {"Type": "Notification", "Message": "{not json"},
}
SEAWEED_PAYLOADS = {
    "message not an object": {"event_type": "create", "key": "/buckets/raw/a.txt", "message": "x"},
    "entry not an object": {"event_type": "create", "key": "/buckets/raw/a.txt", "message": {"new_entry": 3}},
    "key not a string": {"event_type": "create", "key": ["/buckets/raw/a.txt"], "message": {"new_entry": {}}},
    "no event type": {"key": "/buckets/raw/a.txt"},
}


@pytest.mark.parametrize(
    ("hook", "payload"),
    [("label-studio", p) for p in LS_PAYLOADS.values()]
    + [("s3", p) for p in S3_PAYLOADS.values()]
    + [("seaweedfs", p) for p in SEAWEED_PAYLOADS.values()],
    ids=[*LS_PAYLOADS, *S3_PAYLOADS, *SEAWEED_PAYLOADS],
)
def test_malformed_payloads_get_400_with_a_reason_and_are_logged(
    listener: tuple[EventListener, int], hook: str, payload: dict, caplog: pytest.LogCaptureFixture
) -> None:
    events, port = listener
    with caplog.at_level(logging.WARNING, logger="labelflow.triggers"):
        status, answer = post(port, hook, json.dumps(payload).encode())
    assert status == 400, answer
    assert answer.get("error"), answer
    assert any("rejected" in r.getMessage() and hook in r.getMessage() for r in caplog.records), caplog.text
    assert events.counts["received"] == 0 and events.counts["rejected"] == 1
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe\x00garbage", b"[" * 100_000 + b"]" * 100_000, b"[1, 2]", b'"text"', b"", b"null"],
    ids=["bad JSON", "not UTF-8", "deeply nested", "a list", "a string", "empty", "null"],
)
def test_bodies_that_are_not_a_json_object_get_400(listener: tuple[EventListener, int], body: bytes) -> None:
    status, answer = post(listener[1], "label-studio", body)
    assert status == 400 and answer["error"]


def test_a_huge_body_is_refused_without_reading_it(listener: tuple[EventListener, int]) -> None:
    events, port = listener
    # Only the headers are sent: a listener that tried to read 10 GB would hang here instead of answering.
    answer = raw_exchange(
        port,
        b"POST /hooks/seaweedfs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{",
    )
    assert answer.startswith(b"HTTP/1.0 413") or answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"too large" in answer
    assert events.counts["rejected"] == 1


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1e3"])
def test_a_malformed_content_length_gets_400(listener: tuple[EventListener, int], length: bytes) -> None:
    answer = raw_exchange(
        listener[1],
        b"POST /hooks/s3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Length: " + length + b"\r\nConnection: close\r\n\r\n{}",
    )
    assert b" 400 " in answer.split(b"\r\n", 1)[0], answer[:200]
    assert b"Content-Length" in answer


def test_a_body_shorter_than_announced_is_answered_not_hung(listener: tuple[EventListener, int]) -> None:
    events, port = listener
    events.read_timeout_seconds = 1.0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /hooks/s3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Length: 100\r\n\r\n{}"
        )
        answer = sock.recv(65536)
    assert b" 400 " in answer.split(b"\r\n", 1)[0], answer[:200]


def test_well_formed_events_are_still_accepted(listener: tuple[EventListener, int]) -> None:
    events, port = listener
    ls = {"action": "ANNOTATION_CREATED", "project": {"id": 7}, "annotation": {"id": 1}}
    assert post(port, "label-studio", json.dumps(ls).encode()) == (202, {"events": 1})
    other = {"action": "PROJECT_UPDATED", "project": {"id": 7}}  # an action we do not act on: ignored, not an error
    assert post(port, "label-studio", json.dumps(other).encode()) == (202, {"events": 0})
    record = {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "raw"}, "object": {"key": "a%20b"}}}
    assert post(port, "s3", json.dumps({"Records": [record]}).encode()) == (202, {"events": 1})
    confirmation = {"Type": "SubscriptionConfirmation", "SubscribeURL": "https://sns.example"}
    assert post(port, "s3", json.dumps(confirmation).encode()) == (202, {"events": 0})
    weed = {"event_type": "create", "key": "/buckets/raw/x.txt", "message": {"new_entry": {"name": "x.txt"}}}
    assert post(port, "seaweedfs", json.dumps(weed).encode()) == (202, {"events": 1})
    delete = {"event_type": "delete", "key": "/buckets/raw/x.txt", "message": {}}
    assert post(port, "seaweedfs", json.dumps(delete).encode()) == (202, {"events": 0})
    assert events.counts["received"] == 3 and events.counts["rejected"] == 0


def test_wrong_token_is_still_401_before_the_body_is_judged(listener: tuple[EventListener, int]) -> None:
    status, _ = post(listener[1], "label-studio", b"{not json", {"Authorization": "Bearer wrong"})
    assert status == 401
