"""Pre-labeling: predictors that turn task data into Label Studio predictions imported with the tasks."""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from labelflow.integrations.errors import AdapterError
from labelflow.integrations.openai_compatible import OpenAICompatibleClient, OpenAICompatibleError, TokenLogprob
from labelflow.tasks.label_config import label_interface
from labelflow.tasks.spec import ProjectSpec, S3Location, SpecError
from labelflow.tasks.task_types.base import FROM_NAME
from labelflow.tasks.task_types.preference import SELECTION_OF_SIDE, SIDES
from labelflow.tasks.task_types.sft import chat_messages

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from labelflow.tasks.ports import LoadedModelPort, ObjectStorePort, TrackingPort

Prediction = dict[str, Any]
# Label Studio's own Pairwise results name the Pairwise control as their object (Pairwise.js: `createResult({},
# {selected}, self, self.name)`; the tag registers itself as an object type); its editor resolves a result's
# `to_name` to a tag, so a prediction shaped that way is shown like an annotator's own choice.
PAIRWISE_RESULT_TO_NAME = FROM_NAME
SIDE_ANSWER = re.compile(r"^\W*(?:response\s+)?([AB])\b", re.IGNORECASE)
SCORE_ANSWER = re.compile(r"^\D*?(\d+)")
DRAFT_MAX_TOKENS = 1024


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


def chat_client(
    section: str,
    endpoint: str,
    model: str,
    api_key_env: str | None,
    timeout_seconds: float,
    max_retries: int = 3,
) -> OpenAICompatibleClient:
    """A client of a spec's OpenAI-compatible endpoint; the API key is read from `api_key_env` only now."""
    from pydantic import SecretStr

    api_key = None
    if api_key_env:
        value = os.environ.get(api_key_env)
        if not value:
            raise ValueError(f"{section}.api_key_env names {api_key_env}, which is not set")
        api_key = SecretStr(value)
    try:
        return OpenAICompatibleClient(endpoint, model, api_key, timeout_seconds, max_retries)
    except ValueError as exc:
        raise ValueError(f"{section}.endpoint: {exc}") from None


def prompt_text(prompt: Any) -> str:
    """A prompt as the judge reads it: text as it is, a chat (a list of {role, content}) one `role: content` a turn."""
    messages = chat_messages(prompt)
    if messages is None:
        return str(prompt or "")
    return "\n\n".join(f"{message['role']}: {message['content']}" for message in messages)


def option_probability(tokens: tuple[TokenLogprob, ...] | None, chosen: str, options: Sequence[str]) -> float | None:
    """The probability of `chosen` among `options` at the first token, from its top logprobs; None without logprobs.

    Tokens are compared stripped and case-folded (` A` and `a` are A); the alternatives Label Studio never sees (a
    token that is no option) are left out, so the options' probabilities are renormalised to sum to 1.
    """
    if not tokens:
        return None
    first = tokens[0]
    seen = dict(first.top)
    seen.setdefault(first.token, first.logprob)
    probabilities = dict.fromkeys(options, 0.0)
    for token, logprob in seen.items():
        option = next((o for o in options if o.casefold() == token.strip().casefold()), None)
        if option is not None:
            probabilities[option] += math.exp(logprob)
    total = sum(probabilities.values())
    if total <= 0.0:
        return None
    return round(probabilities[chosen] / total, 4)


class RecordJudge:
    """What the openai predictors of the record types share: one chat request per task, a few in flight.

    A request that still fails after the client's retries (an outage, a timeout) leaves its task without a
    prediction and is counted in `failures`; any other failure (a 4xx, an endpoint that answers garbage) stops the
    run with the adapter's one-line error, since it would fail every task the same way.
    """

    def __init__(self, spec: ProjectSpec, client: OpenAICompatibleClient | None = None) -> None:
        options = spec.prelabel
        assert options is not None and options.endpoint and options.model
        self.spec = spec
        self.model_version = options.model_version
        self.instructions = (spec.instructions or "").strip()
        self.max_concurrency = options.max_concurrency
        self.client = client or chat_client(
            "prelabel", options.endpoint, options.model, options.api_key_env, options.timeout_seconds
        )
        self.failures = 0

    def _guidelines(self) -> str:
        return f"\nGuidelines: {self.instructions}" if self.instructions else ""

    def prediction(self, item: dict[str, Any]) -> Prediction | None:
        """One task's prediction, or None when the model's answer does not fit the interface."""
        raise NotImplementedError

    def _one(self, item: dict[str, Any]) -> Prediction | None:
        try:
            return self.prediction(item)
        except OpenAICompatibleError as exc:
            if not exc.transient:
                raise
            self.failures += 1
            return None

    def _scored(self, result: dict[str, Any], score: float | None) -> Prediction:
        prediction: Prediction = {"model_version": self.model_version, "result": [result]}
        if score is not None:
            prediction["score"] = score
        return prediction

    def predict(self, items: Sequence[dict[str, Any]]) -> list[Prediction | None]:
        """One prediction (or None) per task's data, in order."""
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(self._one, items))


class PreferenceJudge(RecordJudge):
    """Which response is better, A or B: a Pairwise result whose score is P(chosen side) from the first token's logprobs."""

    def messages(self, item: dict[str, Any]) -> list[dict[str, str]]:
        """The judge's request: the prompt, both responses, and the two allowed answers."""
        system = (
            "You compare two responses to the same prompt and say which one is better: more helpful, correct, "
            "honest and clear. Judge the content, not the order or the length." + self._guidelines()
        )
        user = (
            f"Prompt:\n{prompt_text(item.get('prompt'))}\n\nResponse A:\n{item.get('response_a', '')}\n\n"
            f"Response B:\n{item.get('response_b', '')}\n\nWhich response is better? {answer_with(SIDES)}"
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def prediction(self, item: dict[str, Any]) -> Prediction | None:
        """A Pairwise result (left is A, right is B), or None when the answer is neither A nor B."""
        answer = self.client.chat(self.messages(item), temperature=0, max_tokens=1, logprobs=True, top_logprobs=5)
        found = SIDE_ANSWER.match(answer.text)
        if found is None:
            return None
        side = found.group(1).upper()
        result = {
            "from_name": FROM_NAME,
            "to_name": PAIRWISE_RESULT_TO_NAME,
            "type": "pairwise",
            "value": {"selected": SELECTION_OF_SIDE[side]},
        }
        return self._scored(result, option_probability(answer.logprobs, side, SIDES))


class GradingJudge(RecordJudge):
    """A score 1..K for the response (`options.scale`): a Rating result whose score is P(that score) from logprobs."""

    def messages(self, item: dict[str, Any]) -> list[dict[str, str]]:
        """The judge's request: the prompt, the response, the scale (and the rubric checks to weigh)."""
        options = self.spec.task_options
        scores = [str(score) for score in range(1, options.scale + 1)]
        rubric = f" Weigh these checks: {'; '.join(options.rubric)}." if options.rubric else ""
        system = (
            f"You grade a response to a prompt on a scale from 1 (worst) to {options.scale} (best) for how "
            f"helpful, correct, honest and clear it is.{rubric}" + self._guidelines()
        )
        user = (
            f"Prompt:\n{prompt_text(item.get('prompt'))}\n\nResponse:\n{item.get('response', '')}\n\n"
            f"What score does the response deserve? {answer_with(scores)}"
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def prediction(self, item: dict[str, Any]) -> Prediction | None:
        """A Rating result, or None when the answer is not a score on the scale."""
        scale = self.spec.task_options.scale
        answer = self.client.chat(
            self.messages(item), temperature=0, max_tokens=3, logprobs=True, top_logprobs=min(20, scale + 5)
        )
        found = SCORE_ANSWER.match(answer.text)
        if found is None or not 1 <= int(found.group(1)) <= scale:
            return None
        score = int(found.group(1))
        result = {"from_name": FROM_NAME, "to_name": "response", "type": "rating", "value": {"rating": score}}
        options = [str(value) for value in range(1, scale + 1)]
        return self._scored(result, option_probability(answer.logprobs, str(score), options))


class DraftWriter(RecordJudge):
    """A draft answer to the prompt, for annotators to edit: a TextArea result scored by its mean token probability."""

    def messages(self, item: dict[str, Any]) -> list[dict[str, str]]:
        """The prompt as the conversation to continue (a chat as its turns), after the spec's instructions."""
        prompt = item.get("prompt")
        turns = chat_messages(prompt) or [{"role": "user", "content": str(prompt or "")}]
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        return [*system, *turns]

    def prediction(self, item: dict[str, Any]) -> Prediction | None:
        """A TextArea result holding the draft, or None for an empty answer."""
        answer = self.client.chat(self.messages(item), temperature=0, max_tokens=DRAFT_MAX_TOKENS, logprobs=True)
        draft = answer.text.strip()
        if not draft:
            return None
        score = None
        if answer.logprobs:
            # The geometric mean of the tokens' probabilities: how sure the model was of its draft, on average.
            mean = sum(token.logprob for token in answer.logprobs) / len(answer.logprobs)
            score = round(math.exp(mean), 4)
        result = {"from_name": FROM_NAME, "to_name": "prompt", "type": "textarea", "value": {"text": [draft]}}
        return self._scored(result, score)


def answer_with(options: Sequence[str]) -> str:
    """The closing instruction of a judge's request, naming the only answers it may give."""
    return f"Answer with exactly one of: {', '.join(options)}."


# The openai predictor of each record type that has one.
RECORD_JUDGES: dict[str, type[RecordJudge]] = {
    "preference": PreferenceJudge,
    "response-grading": GradingJudge,
    "sft": DraftWriter,
}


class MLflowPredictor:
    """A classifier registered in MLflow (a pyfunc model) as the pre-labeler of a classification type.

    The model takes a DataFrame with a `text` column (text tasks) or a `content` column of the file's bytes (images,
    audio), and returns one probability column per class, named by the class (and, usually, `label`). Its classes
    come from the model's metadata (`classes`, which `labelflow train` writes) or else its output signature, and
    must be the spec's labels. An item the model crashes on, or returns no probabilities for, gets no prediction
    (it goes to people as usual) and is counted in `failures`.
    """

    def __init__(
        self, spec: ProjectSpec, tracking: TrackingPort, read_object: Callable[[str], bytes] | None = None
    ) -> None:
        options = spec.prelabel
        assert options is not None and options.model_uri
        from labelflow.tasks.training import INPUT_COLUMN, media_of

        try:
            media = media_of(spec)
        except ValueError as exc:
            raise SpecError(f"prelabel.predictor mlflow: {exc}") from None
        if media != "text" and read_object is None:
            raise SpecError(f"prelabel.predictor mlflow: {media} tasks need a reader of their objects")
        try:
            name, version = tracking.resolve_model_uri(options.model_uri)
            self.model = tracking.load_model(name, version)
        except AdapterError as exc:
            if exc.transient:
                raise
            raise SpecError(f"prelabel.model_uri: {exc}") from None
        self.model_version = f"models:/{name}/{version}"
        self.classes = list(spec.labels)
        self.media = media
        self.data_key = spec.data_key
        self.read_object = read_object
        self.input_column = str(self.model.metadata.get("input") or INPUT_COLUMN[media])
        self.failures = 0
        self.queue_order = spec.queue.order
        check_model_classes(self.model_version, model_classes(self.model), self.classes)
        interface = label_interface(spec)
        self.from_name, self.to_name = interface.from_name, interface.to_name

    def _frame(self, items: Sequence[dict[str, Any]]) -> pd.DataFrame:
        import pandas as pd

        if self.media == "text":
            values: list[Any] = [str(item.get(self.data_key) or "") for item in items]
        else:
            assert self.read_object is not None
            values = [self.read_object(str(item.get("source_uri") or item.get(self.data_key))) for item in items]
        return pd.DataFrame({self.input_column: values})

    def _rows(self, output: Any, count: int) -> np.ndarray:
        """The model's output as (count, k) probabilities in `classes` order; ValueError when it is not that."""
        import numpy as np
        import pandas as pd

        if not isinstance(output, pd.DataFrame) or len(output) != count:
            raise ValueError("the model's output is not a DataFrame with one row per input")
        missing = [c for c in self.classes if c not in output.columns]
        if missing:
            raise ValueError(f"the model's output has no column for {missing}")
        values = output[self.classes].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, copy=True)
        values[~np.isfinite(values).all(axis=1)] = np.nan
        return np.clip(values, 0.0, 1.0)

    def _predict_batch(self, frame: pd.DataFrame) -> np.ndarray:
        import numpy as np

        try:
            return self._rows(self.model.predict(frame), len(frame))
        except Exception:  # a model's crash on one item must not cost the others their predictions
            rows = np.full((len(frame), len(self.classes)), np.nan)
            for i in range(len(frame)):
                with contextlib.suppress(Exception):  # this item goes to people; `probabilities` counts it
                    rows[i] = self._rows(self.model.predict(frame.iloc[[i]].reset_index(drop=True)), 1)[0]
            return rows

    def probabilities(self, items: Sequence[dict[str, Any]]) -> np.ndarray:
        """P(class) per item, shape (len(items), len(classes)) in the spec's label order; a NaN row for each item
        the model crashed on or gave no probabilities for (counted in `failures`)."""
        import numpy as np

        out = np.full((len(items), len(self.classes)), np.nan)
        for start in range(0, len(items), MODEL_BATCH):
            batch = items[start : start + MODEL_BATCH]
            out[start : start + len(batch)] = self._predict_batch(self._frame(batch))
        self.failures += int(np.isnan(out).any(axis=1).sum())
        return out

    def out_of_fold(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(task ids, probabilities in `classes` order) of the rows the model was trained on, each scored by a model
        fitted without it (`labelflow train` logs them); None for a model that does not carry them."""
        import numpy as np

        inner = self.model.python_object()
        found = getattr(inner, "out_of_fold", None)
        if found is None:
            return None
        task_ids, probabilities = found
        learned = [str(c) for c in getattr(inner, "classes", self.classes)]
        return np.asarray(task_ids), np.asarray(probabilities)[:, [learned.index(c) for c in self.classes]]

    def predict(self, items: Sequence[dict[str, Any]]) -> list[Prediction | None]:
        """Label Studio predictions: the most probable class, scored by its probability; None where the model failed."""
        import numpy as np

        predictions: list[Prediction | None] = []
        for row in self.probabilities(items):
            if np.isnan(row).any():
                predictions.append(None)
                continue
            best = int(row.argmax())
            result = {
                "from_name": self.from_name,
                "to_name": self.to_name,
                "type": "choices",
                "value": {"choices": [self.classes[best]]},
            }
            score = float(row[best])
            if self.queue_order != "off":
                # The queue's certainty by the spec's measure, so collect's queue ordering finds it already right.
                from labelflow.tasks.queue_order import queue_scores

                score = float(queue_scores(row[None, :], self.queue_order)[0])
            predictions.append({"model_version": self.model_version, "score": round(score, 6), "result": [result]})
        return predictions


MODEL_BATCH = 256  # items per model call: bounds the bytes of images or clips held at once


def model_classes(model: LoadedModelPort) -> list[str] | None:
    """The classes a loaded model declares: its metadata's `classes`, else its output columns but `label`."""
    declared = model.metadata.get("classes")
    if declared:
        return [str(c) for c in declared]
    if model.output_columns:
        return [c for c in model.output_columns if c != "label"]
    return None


def check_model_classes(model_version: str, declared: list[str] | None, labels: Sequence[str]) -> None:
    """SpecError (a ValueError, one line) unless the model's classes are exactly the spec's labels (in any order)."""
    if declared is None:
        raise SpecError(
            f"prelabel.model_uri: {model_version} declares no classes (metadata `classes` or an output signature), "
            "so they cannot be checked against the spec's labels"
        )
    if set(declared) != set(labels) or len(declared) != len(labels):
        extra = sorted(set(declared) - set(labels))
        missing = sorted(set(labels) - set(declared))
        details = (
            "; ".join(
                part
                for part in (
                    f"not in the spec: {', '.join(extra)}" if extra else "",
                    f"missing: {', '.join(missing)}" if missing else "",
                )
                if part
            )
            or "repeated classes"
        )
        raise SpecError(
            f"prelabel.model_uri: {model_version} predicts the classes {', '.join(declared)}, not the spec's labels "
            f"{', '.join(labels)} ({details})"
        )


def task_items(spec: ProjectSpec, tasks: pd.DataFrame) -> list[dict[str, Any]]:
    """The predictor's items for a table of tasks (collect's tasks table: task_id, source_uri, text), one per row,
    in the table's order: the same fields as the task data ingest predicts on."""
    items = []
    text = spec.task_type.media == "text"
    for row in tasks.itertuples(index=False):
        source_uri = getattr(row, "source_uri", None)
        value = getattr(row, "text", None) if text else source_uri
        items.append({spec.data_key: value, "source_uri": source_uri, "task_id": int(row.task_id)})
    return items


def object_reader(store: ObjectStorePort) -> Callable[[str], bytes]:
    """`read_object(uri) -> bytes` for s3:// URIs on a store."""

    def read_object(uri: str) -> bytes:
        location = S3Location.parse(uri)
        return store.get_bytes(location.bucket, location.prefix)

    return read_object


def build_predictor(
    spec: ProjectSpec, tracking: TrackingPort | None = None, read_object: Callable[[str], bytes] | None = None
) -> Predictor | None:
    """The predictor the spec asks for, or None; the mlflow one needs the tracking server and, for images and
    audio, a reader of the objects (SpecError, one line, for a model that is missing or unfit)."""
    if spec.prelabel is None:
        return None
    if spec.prelabel.predictor == "keyword":
        return KeywordPredictor(spec)
    if spec.prelabel.predictor == "mlflow":
        if tracking is None:
            raise SpecError("prelabel.predictor mlflow needs the tracking server's client")
        return MLflowPredictor(spec, tracking, read_object)
    if spec.task_type.media == "record":
        judge = RECORD_JUDGES.get(spec.task)
        if judge is None:
            raise ValueError(f"prelabel.predictor: task {spec.task} has no openai predictor")
        return judge(spec)
    return OpenAIChatPredictor(spec)
