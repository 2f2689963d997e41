"""A deterministic OpenAI-compatible chat-completions server for tests: real HTTP on 127.0.0.1, no model, no network.

Every answer is derived from a SHA-256 of (model, messages, seed, temperature), so the same request always gets the
same answer and a different seed gets another one. A request whose messages end an instruction with
"Answer with exactly one of: A, B." is answered with one of those options, as an instruction-following model would,
and its `logprobs` (when asked for) put most of the first token's probability on that option. Anything else gets a
short free text. `mode` makes the server answer garbage instead (an HTML page, text, JSON that is no completion),
`fail_next` makes it fail a number of requests first, and `requests` records every request it received.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

OPTIONS = re.compile(r"Answer with exactly one of: (?P<options>[^\n]+?)\.\s*$", re.MULTILINE)
WORDS = [
    "the",
    "answer",
    "depends",
    "on",
    "context",
    "and",
    "careful",
    "reading",
    "of",
    "the",
    "question",
    "shows",
    "a",
    "clear",
    "path",
    "forward",
    "first",
    "consider",
    "the",
    "facts",
    "then",
    "weigh",
    "each",
    "option",
    "before",
    "giving",
    "a",
    "short",
    "summary",
    "with",
    "an",
    "example",
]
GARBAGE = {
    "html": (
        "text/html; charset=utf-8",
        "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n"
        "<body><h1>Welcome to nginx!</h1></body></html>\n",
    ),
    "text": ("text/plain", "OK\n"),
    "no-choices": ("application/json", json.dumps({"object": "chat.completion", "status": "ok"})),
    "no-content": ("application/json", json.dumps({"choices": [{"index": 0, "message": {"role": "assistant"}}]})),
}
Mode = Literal["normal", "html", "text", "no-choices", "no-content"]


def request_digest(body: dict[str, Any], choice: int = 0) -> str:
    """The hex digest an answer is derived from: model, messages, seed and temperature (and the choice index)."""
    key = [body.get("model"), body.get("messages"), body.get("seed"), body.get("temperature"), choice]
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _options(messages: list[dict[str, Any]]) -> list[str] | None:
    """The options of the last "Answer with exactly one of: ..." instruction in the messages, or None."""
    found = None
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            for match in OPTIONS.finditer(content):
                found = [option.strip() for option in match["options"].split(",") if option.strip()]
    return found


def option_probabilities(digest: str, options: list[str]) -> dict[str, float]:
    """The first token's distribution for an options question: the chosen option 0.55-0.95, a distractor 10% of the rest."""
    chosen = options[int(digest[:8], 16) % len(options)]
    top = 0.55 + 0.4 * int(digest[8:10], 16) / 255
    rest = 1.0 - top
    others = [option for option in options if option != chosen]
    probabilities = {chosen: top, "The": rest * 0.1}
    for option in others:
        probabilities[option] = rest * 0.9 / len(others)
    return probabilities


def _token(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def completion_choice(body: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """One deterministic choice of a chat completion for a request body (also what tests compare against)."""
    digest = request_digest(body, index)
    messages = body.get("messages") or []
    options = _options(messages)
    wants_logprobs = bool(body.get("logprobs"))
    top_n = int(body.get("top_logprobs") or 0)
    if options:
        probabilities = option_probabilities(digest, options)
        ranked = sorted(probabilities.items(), key=lambda item: -item[1])
        text = ranked[0][0]
        first = _token(text, math.log(ranked[0][1]))
        first["top_logprobs"] = [_token(token, math.log(p)) for token, p in ranked[:top_n]]
        tokens = [first]
        finish = "stop"
    else:
        max_tokens = int(body.get("max_tokens") or 64)
        count = 6 + int(digest[:2], 16) % 10
        words = [WORDS[int(digest[2 * i : 2 * i + 2], 16) % len(WORDS)] for i in range(1, count + 1)]
        pieces = [f"Candidate {digest[:8]}:", *words][:max_tokens]
        finish = "length" if len(pieces) < count + 1 else "stop"
        text = " ".join(pieces)
        tokens = []
        for position, piece in enumerate(pieces):
            logprob = -2.0 * int(digest[(2 * position) % 60 : (2 * position) % 60 + 2], 16) / 255
            entry = _token(piece if position == 0 else f" {piece}", logprob)
            entry["top_logprobs"] = [dict(entry)][:top_n]
            tokens.append(entry)
    return {
        "index": index,
        "message": {"role": "assistant", "content": text},
        "logprobs": {"content": tokens} if wants_logprobs else None,
        "finish_reason": finish,
    }


def completion(body: dict[str, Any]) -> dict[str, Any]:
    """The whole deterministic chat completion for a request body."""
    choices = [completion_choice(body, index) for index in range(int(body.get("n") or 1))]
    return {
        "id": f"chatcmpl-{request_digest(body)[:24]}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": body.get("model"),
        "system_fingerprint": "fp_labelflow_fake",
        "choices": choices,
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


@dataclass
class FakeOpenAIServer:
    """The server, on 127.0.0.1 and a free port, in a background thread; use as a context manager."""

    api_key: str | None = None  # when set, requests must carry `Authorization: Bearer <api_key>`
    mode: Mode = "normal"
    requests: list[dict[str, Any]] = field(default_factory=list)  # every request: path, auth, body
    _failures: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        """The API's base URL, as clients are configured with it (`http://127.0.0.1:PORT/v1`)."""
        assert self._server is not None, "the server is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """The bodies of the chat-completion requests received, in order."""
        with self._lock:
            return [entry["body"] for entry in self.requests if entry["path"] == "/v1/chat/completions"]

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next `count` requests with this HTTP status."""
        with self._lock:
            self._failures.extend([status] * count)

    def start(self) -> FakeOpenAIServer:
        """Listen and serve in a daemon thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet test output
                return None

            def _send(self, status: int, content_type: str, text: str) -> None:
                data = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str) -> None:
                payload = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
                self._send(status, "application/json", json.dumps(payload))

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = None
                with fake._lock:
                    fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                    failure = fake._failures.pop(0) if fake._failures else None
                if failure is not None:
                    return self._error(failure, f"simulated HTTP {failure}")
                if self.path != "/v1/chat/completions":
                    return self._error(404, f"no route {self.path}")
                if fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self._error(401, "Incorrect API key provided")
                if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                    return self._error(400, "the body must be JSON with a `messages` list")
                if fake.mode != "normal":
                    return self._send(200, *GARBAGE[fake.mode])
                return self._send(200, "application/json", json.dumps(completion(body), ensure_ascii=False))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
