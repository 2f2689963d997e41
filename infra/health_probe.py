"""One HTTP health check of a stack service, over a plain socket.

`labelflow status` probes every service: httpx took 0.4 s to import (httpcore, h2 and, beside selenium, trio), most
of that command's time, and even http.client costs 15 ms (it loads ssl) for a GET on the loopback interface.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

# Enough of any health endpoint's answer to judge it (Prefect's is `true`).
MAX_ANSWER_BYTES = 64 * 1024


class HealthProtocolError(OSError):
    """The health endpoint answered something that is not HTTP."""


@dataclass(frozen=True)
class HealthAnswer:
    """What a health endpoint answered: what a service's `healthy_when` judges."""

    status_code: int
    text: str


def get_health(url: str, timeout: float) -> HealthAnswer:
    """GET an http:// `url` within `timeout` seconds in all, following no redirect; raises OSError when it cannot.

    HTTP/1.0 with `Connection: close`: the server answers with a plain body (never chunked) and closes, so the answer
    is everything read until then.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not a plain-HTTP URL: {url}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = f"GET {target} HTTP/1.0\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
    deadline = time.monotonic() + timeout
    # The host as bytes: getaddrinfo encodes a str host with the idna codec, another 5 ms of imports.
    address = (parts.hostname.encode("ascii"), parts.port or 80)
    with socket.create_connection(address, timeout=timeout) as connection:
        connection.sendall(request)
        answer = b""
        while len(answer) < MAX_ANSWER_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            connection.settimeout(remaining)
            data = connection.recv(MAX_ANSWER_BYTES - len(answer))
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or not status_line[1].isdigit():
        raise HealthProtocolError(f"not an HTTP answer: {head[:80]!r}")
    return HealthAnswer(int(status_line[1]), body.decode("utf-8", errors="replace"))
