"""An OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama, LiteLLM) behind one small client."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from labelflow.integrations.errors import AdapterError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Pauses before the retries of a request: this, then doubled, each at most MAX_BACKOFF_SECONDS (also the cap on a
# server's Retry-After), so a rate limit or a restart is ridden out and an outage reported within seconds.
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0
CONNECT_TIMEOUT_SECONDS = 5.0
SNIPPET_CHARS = 120  # of a garbage answer, quoted in the error


class OpenAICompatibleError(AdapterError):
    """A chat-completions call failed; the message names the endpoint and the answer, on one line."""

    def __init__(self, message: str, transient: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


class MalformedAnswerError(OpenAICompatibleError):
    """The endpoint answered, but not with a chat completion (an HTML page, text, JSON without message content)."""


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log probability and the most likely alternatives at its position."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ChatAnswer:
    """The first choice of a chat completion: its text, the model that wrote it and, when asked for, its logprobs."""

    text: str
    model: str
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None


def _one_line(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else f"{flat[:limit]}..."


def _logprobs(choice: dict[str, Any]) -> tuple[TokenLogprob, ...] | None:
    """The choice's `logprobs.content` as tokens; None when the server sent none (many do not support them)."""
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if not isinstance(content, list):
        return None
    tokens = []
    for entry in content:
        if not isinstance(entry, dict) or not isinstance(entry.get("logprob"), int | float):
            continue
        top = tuple(
            (str(alt.get("token", "")), float(alt["logprob"]))
            for alt in entry.get("top_logprobs") or []
            if isinstance(alt, dict) and isinstance(alt.get("logprob"), int | float)
        )
        tokens.append(TokenLogprob(str(entry.get("token", "")), float(entry["logprob"]), top))
    return tuple(tokens)


class OpenAICompatibleClient:
    """POSTs /chat/completions under one base URL; retries 429, 5xx and transport errors a bounded number of times."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: SecretStr | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{base_url!r} is not an http(s) base URL such as http://127.0.0.1:8000/v1")
        self.base_url = base_url.strip().rstrip("/").removesuffix("/chat/completions")
        self.model = model
        self.max_retries = max_retries
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key is not None else {}
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, CONNECT_TIMEOUT_SECONDS)),
            transport=transport,
        )

    @property
    def endpoint(self) -> str:
        """The URL requests go to (named in every error)."""
        return f"{self.base_url}/chat/completions"

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
    ) -> ChatAnswer:
        """The first choice of one chat completion; OpenAICompatibleError (transient or not) when there is none."""
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        optional = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed}
        body.update({key: value for key, value in optional.items() if value is not None})
        if logprobs:
            body["logprobs"] = True
            if top_logprobs:
                body["top_logprobs"] = top_logprobs
        return self._parse(self._post(body))

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        """The endpoint's answer with a status below 400, after at most `max_retries` retries of transient failures."""
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.post(self.endpoint, json=body)
            except httpx.TransportError as exc:
                if attempt < attempts:
                    time.sleep(self._pause(attempt, None))
                    continue
                reason = _one_line(str(exc)) or "no answer"
                raise OpenAICompatibleError(
                    f"cannot reach {self.endpoint}: {type(exc).__name__}: {reason} ({attempts} attempts)",
                    transient=True,
                ) from None
            if response.status_code in RETRY_STATUSES and attempt < attempts:
                time.sleep(self._pause(attempt, response.headers.get("Retry-After")))
                continue
            if response.status_code >= 400:
                raise self._status_error(response, attempt)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _pause(attempt: int, retry_after: str | None) -> float:
        """Seconds before the next attempt: the server's Retry-After (in seconds) or an exponential backoff, capped."""
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), MAX_BACKOFF_SECONDS)
            except ValueError:
                pass  # an HTTP date: fall back to the backoff
        return min(BACKOFF_SECONDS * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)

    def _status_error(self, response: httpx.Response, attempts: int) -> OpenAICompatibleError:
        status = response.status_code
        transient = status in RETRY_STATUSES
        try:
            error = response.json().get("error")
            detail = error.get("message") if isinstance(error, dict) else error
        except (ValueError, AttributeError):
            detail = None
        hint = {
            401: " (the API key is missing or wrong)",
            403: " (the API key may not use this model)",
            404: f" (check the base URL, usually ending in /v1, and the model {self.model!r})",
        }.get(status, "")
        tried = f" after {attempts} attempts" if transient else ""
        answer = _one_line(str(detail) if detail else response.text) or "(empty body)"
        return OpenAICompatibleError(
            f"{self.endpoint} answered HTTP {status}{tried}{hint}: {answer}", transient=transient, status=status
        )

    def _parse(self, response: httpx.Response) -> ChatAnswer:
        """The first choice of a chat completion; MalformedAnswerError for anything that is not one."""
        kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
        try:
            payload = json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            what = "an HTML page" if "html" in kind or response.text.lstrip()[:1] == "<" else f"{kind}, not JSON"
            raise self._garbage(f"{what}: {_one_line(response.text)!r}") from None
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._garbage(f"JSON without choices: {_one_line(response.text)!r}")
        choice = choices[0]
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise self._garbage(f"JSON without choices[0].message.content: {_one_line(response.text)!r}")
        model = payload.get("model") if isinstance(payload.get("model"), str) else self.model
        return ChatAnswer(content, model, choice.get("finish_reason"), _logprobs(choice))

    def _garbage(self, what: str) -> MalformedAnswerError:
        return MalformedAnswerError(
            f"{self.endpoint} does not answer like an OpenAI-compatible chat-completions API: it sent {what}"
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> OpenAICompatibleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
