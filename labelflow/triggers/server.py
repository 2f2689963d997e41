"""The listener's HTTP server: reads each webhook defensively, answers at once, and hands the body to the listener."""

from __future__ import annotations

import contextlib
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

from labelflow.triggers.payloads import PayloadError

if TYPE_CHECKING:
    from labelflow.triggers.listener import EventListener

logger = logging.getLogger(__package__)  # "labelflow.triggers": one name for the listener's log lines

HOOKS = {"seaweedfs", "s3", "label-studio"}
# Largest webhook body read: Label Studio's bulk-delete events list every annotation, yet stay far below this.
MAX_BODY_BYTES = 16 * 1024 * 1024
# A sender gets this long to deliver headers and body: a stalled or slow client must not hold a thread forever.
READ_TIMEOUT_SECONDS = 10.0


class WebhookServer(ThreadingHTTPServer):
    """An HTTP server bound to host:port serving one listener's hooks and /health."""

    daemon_threads = True

    def __init__(self, listener: EventListener, host: str, port: int) -> None:
        self.listener = listener
        super().__init__((host, port), WebhookHandler)


class WebhookHandler(BaseHTTPRequestHandler):
    """One connection: `POST /hooks/<sender>` with a bearer token, or `GET /health`."""

    @property
    def listener(self) -> EventListener:
        """The listener this server feeds (its limits, counts and token)."""
        return cast(WebhookServer, self.server).listener

    @property
    def timeout(self) -> float:  # type: ignore[override]  # read per connection by StreamRequestHandler
        return self.listener.read_timeout_seconds

    def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reject(self, source: str, status: HTTPStatus, reason: str) -> None:
        self.listener.counts["rejected"] += 1
        logger.warning("rejected %s webhook from %s: HTTP %d %s", source, self.client_address[0], status, reason)
        self.close_connection = True
        self._reply(status, {"error": reason})

    def _discard_unread(self) -> None:
        """Drain what the client already sent (bounded), so closing does not reset the connection."""
        with contextlib.suppress(OSError):
            self.connection.settimeout(0.2)
            for _ in range(16):
                if not self.connection.recv(65536):
                    break

    def _read_body(self, source: str) -> bytes | None:
        """The request body, or None after answering why it cannot be read."""
        if self.headers.get("Transfer-Encoding"):
            self._reject(source, HTTPStatus.BAD_REQUEST, "send the body with a Content-Length, not chunked")
            return None
        announced = (self.headers.get("Content-Length") or "").strip()
        if not announced.isdigit() or not announced.isascii():
            what = f"invalid Content-Length {announced[:20]!r}" if announced else "missing Content-Length"
            self._reject(source, HTTPStatus.BAD_REQUEST, f"{what}: send a JSON object")
            return None
        length = int(announced)
        if length > self.listener.max_body_bytes:
            self._reject(
                source,
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body too large: {length} bytes, at most {self.listener.max_body_bytes}",
            )
            self._discard_unread()
            return None
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            body = b""
        if len(body) < length:
            self._reject(source, HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {length} announced bytes")
            return None
        return body

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/health":
            self._reply(HTTPStatus.OK, self.listener.health())
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:
        source = self.path.rstrip("/").removeprefix("/hooks/")
        if source not in HOOKS:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"unknown hook {self.path[:200]}"})
            return
        if not self.listener.authorized(self.headers.get("Authorization")):
            self._reply(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong bearer token"})
            return
        body = self._read_body(source)
        if body is None:
            return
        if not body.strip():
            self._reject(source, HTTPStatus.BAD_REQUEST, "empty body: send a JSON object")
            return
        try:
            payload = json.loads(body)
        except RecursionError:
            self._reject(source, HTTPStatus.BAD_REQUEST, "body is not JSON: nested too deeply")
            return
        except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes in no encoding
            self._reject(source, HTTPStatus.BAD_REQUEST, f"body is not JSON: {str(exc)[:200]}")
            return
        try:
            events = self.listener.accept(source, payload)
        except PayloadError as exc:
            self._reject(source, HTTPStatus.BAD_REQUEST, str(exc))
            return
        except Exception as exc:  # a shape the parsers did not foresee: still the sender's error, and answered
            logger.exception("unexpected %s webhook body", source)
            self._reject(source, HTTPStatus.BAD_REQUEST, f"malformed payload ({type(exc).__name__})")
            return
        self._reply(HTTPStatus.ACCEPTED, {"events": events})

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)
