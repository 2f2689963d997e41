"""Pre-labeling: predictors that turn task data into Label Studio predictions imported with the tasks."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import httpx

from labelflow.tasks.label_config import label_interface
from labelflow.tasks.spec import ProjectSpec

Prediction = dict[str, Any]


class Predictor(Protocol):
    """Anything that pre-labels a batch of task data; returns one prediction (or None) per item."""

    model_version: str

    def predict(self, items: Sequence[dict[str, Any]]) -> list[Prediction | None]:
        """Predictions in Label Studio's format: {model_version, score, result: [...]}."""
        ...


class KeywordPredictor:
    """Offline zero-shot rule: labels by keyword hits (classification) or keyword spans (NER)."""

    def __init__(self, spec: ProjectSpec) -> None:
        assert spec.prelabel is not None
        self.model_version = spec.prelabel.model_version
        interface = label_interface(spec)
        self.from_name, self.to_name, self.result_type = interface.from_name, interface.to_name, interface.result_type
        self.data_key = spec.data_key
        self.patterns = {
            label: re.compile("|".join(re.escape(word) for word in sorted(words, key=len, reverse=True)), re.IGNORECASE)
            for label, words in spec.prelabel.keywords.items()
            if words
        }

    def _classify(self, text: str) -> Prediction | None:
        hits = {label: len(pattern.findall(text)) for label, pattern in self.patterns.items()}
        total = sum(hits.values())
        if total == 0:
            return None
        label, best = max(hits.items(), key=lambda item: item[1])
        if list(hits.values()).count(best) > 1:
            return None  # a tie is no evidence either way
        result = {
            "from_name": self.from_name,
            "to_name": self.to_name,
            "type": "choices",
            "value": {"choices": [label]},
        }
        return {"model_version": self.model_version, "score": round(best / total, 4), "result": [result]}

    def _spans(self, text: str) -> Prediction | None:
        taken: list[tuple[int, int]] = []
        result = []
        for label, pattern in self.patterns.items():
            for match in pattern.finditer(text):
                start, end = match.span()
                if any(start < e and s < end for s, e in taken):
                    continue
                taken.append((start, end))
                result.append(
                    {
                        "from_name": self.from_name,
                        "to_name": self.to_name,
                        "type": "labels",
                        "value": {"start": start, "end": end, "text": match.group(0), "labels": [label]},
                    }
                )
        if not result:
            return None
        return {"model_version": self.model_version, "score": 0.5, "result": result}

    def predict(self, items: Sequence[dict[str, Any]]) -> list[Prediction | None]:
        """One prediction per item, None where no keyword matched."""
        texts = [str(item.get(self.data_key, "")) for item in items]
        if self.result_type == "labels":
            return [self._spans(text) for text in texts]
        return [self._classify(text) for text in texts]


class OpenAIChatPredictor:
    """Text classification by an OpenAI-compatible chat-completions endpoint that a team runs itself."""

    def __init__(self, spec: ProjectSpec, client: httpx.Client | None = None) -> None:
        options = spec.prelabel
        assert options is not None and options.endpoint and options.model
        self.model_version = options.model_version
        self.model = options.model
        self.labels = spec.labels
        self.instructions = spec.instructions or ""
        self.max_concurrency = options.max_concurrency
        interface = label_interface(spec)
        self.from_name, self.to_name = interface.from_name, interface.to_name
        headers = {}
        if options.api_key_env:
            key = os.environ.get(options.api_key_env)
            if not key:
                raise ValueError(f"prelabel.api_key_env names {options.api_key_env}, which is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.client = client or httpx.Client(
            base_url=options.endpoint.rstrip("/"), headers=headers, timeout=options.timeout_seconds
        )
        self.failures = 0

    def _prompt(self, text: str) -> list[dict[str, str]]:
        labels = ", ".join(self.labels)
        system = (
            "You are a data-labeling assistant. Classify the text into exactly one of these labels: "
            f"{labels}. Answer with the label only."
            + (f" Guidelines: {self.instructions}" if self.instructions else "")
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": text}]

    def _one(self, text: str) -> Prediction | None:
        body = {
            "model": self.model,
            "messages": self._prompt(text),
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 1,
        }
        for attempt in range(3):
            try:
                response = self.client.post("/chat/completions", json=body)
                if response.status_code >= 500 or response.status_code == 429:
                    raise httpx.HTTPStatusError("retryable", request=response.request, response=response)
                response.raise_for_status()
                break
            except (httpx.TransportError, httpx.HTTPStatusError):
                if attempt == 2:
                    self.failures += 1
                    return None
        choice = response.json()["choices"][0]
        answer = str(choice["message"]["content"]).strip().strip(".\"'")
        label = next((lbl for lbl in self.labels if lbl.casefold() == answer.casefold()), None)
        if label is None:
            return None  # an answer outside the label set is never imported
        score = 1.0
        logprobs = (choice.get("logprobs") or {}).get("content") or []
        if logprobs:
            import math

            score = round(math.exp(sum(token.get("logprob", 0.0) for token in logprobs)), 4)
        result = {
            "from_name": self.from_name,
            "to_name": self.to_name,
            "type": "choices",
            "value": {"choices": [label]},
        }
        return {"model_version": self.model_version, "score": score, "result": [result]}

    def predict(self, items: Sequence[dict[str, Any]]) -> list[Prediction | None]:
        """One request per text, a few in flight at once."""
        texts = [str(item.get("text", "")) for item in items]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(self._one, texts))


def build_predictor(spec: ProjectSpec) -> Predictor | None:
    """The predictor the spec asks for, or None."""
    if spec.prelabel is None:
        return None
    if spec.prelabel.predictor == "keyword":
        return KeywordPredictor(spec)
    return OpenAIChatPredictor(spec)
