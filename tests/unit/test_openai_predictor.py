"""The OpenAI-compatible adapter, the openai predictors of the record types and the judge-agreement table, against the
deterministic chat server of tests/openai_server.py (real HTTP on 127.0.0.1, no model)."""

from __future__ import annotations

import json
import math
import socket
from typing import Any

import httpx
import pandas as pd
import pytest
from pydantic import SecretStr
from sklearn.metrics import cohen_kappa_score

import labelflow.integrations.openai_compatible as openai_compatible
from labelflow.flows.steps import retry_if_transient
from labelflow.integrations.openai_compatible import MalformedAnswerError, OpenAICompatibleClient, OpenAICompatibleError
from labelflow.tasks.judge_agreement import judge_agreement, judge_agreement_metric, predicted_labels
from labelflow.tasks.prelabel import (
    PAIRWISE_RESULT_TO_NAME,
    DraftWriter,
    GradingJudge,
    PreferenceJudge,
    build_predictor,
)
from labelflow.tasks.spec import ProjectSpec, parse_spec
from tests.openai_server import FakeOpenAIServer, completion_choice, option_probabilities, request_digest


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_compatible, "BACKOFF_SECONDS", 0.0)


def record_spec(task: str, fields: dict[str, Any], endpoint: str, **extra: Any) -> ProjectSpec:
    prelabel = {"predictor": "openai", "model_version": "judge-1", "endpoint": endpoint, "model": "judge-model"}
    return parse_spec(
        {"name": f"{task} judge", "source": "s3://raw/x/", "task": task, "records": {"fields": fields}}
        | {"prelabel": prelabel}
        | extra
    )


def preference_spec(endpoint: str, **extra: Any) -> ProjectSpec:
    fields = {"prompt": "q", "response_a": "a", "response_b": "b"}
    return record_spec("preference", fields, endpoint, **extra)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the adapter ---------------------------------------------------------------------------------------------------
def test_chat_returns_the_first_choice_with_its_logprobs(openai_server: FakeOpenAIServer) -> None:
    client = OpenAICompatibleClient(openai_server.base_url, "m-1", timeout_seconds=10)
    messages = [{"role": "user", "content": "Pick one. Answer with exactly one of: A, B."}]

    answer = client.chat(messages, temperature=0, max_tokens=1, seed=7, logprobs=True, top_logprobs=3)

    body = openai_server.chat_requests[-1]
    assert body == {
        "model": "m-1",
        "messages": messages,
        "temperature": 0,
        "max_tokens": 1,
        "seed": 7,
        "logprobs": True,
        "top_logprobs": 3,
    }
    expected = completion_choice(body)
    assert answer.text == expected["message"]["content"] and answer.text in ("A", "B")
    assert answer.model == "m-1" and answer.finish_reason == "stop"
    first = answer.logprobs[0]
    assert first.token == answer.text
    assert [token for token, _ in first.top] == [t["token"] for t in expected["logprobs"]["content"][0]["top_logprobs"]]
    assert {"A", "B"} <= {token for token, _ in first.top}


def test_without_logprobs_asked_none_are_returned_and_the_key_is_sent(openai_server: FakeOpenAIServer) -> None:
    openai_server.api_key = "sekret"
    client = OpenAICompatibleClient(openai_server.base_url, "m", api_key=SecretStr("sekret"))
    answer = client.chat([{"role": "user", "content": "Say something."}], seed=1, temperature=0.7)
    assert answer.logprobs is None and answer.text.startswith("Candidate ")
    assert openai_server.requests[-1]["auth"] == "Bearer sekret"
    assert "logprobs" not in openai_server.chat_requests[-1]


def test_a_wrong_key_is_one_line_not_transient_and_not_retried(openai_server: FakeOpenAIServer) -> None:
    openai_server.api_key = "right"
    client = OpenAICompatibleClient(openai_server.base_url, "m", api_key=SecretStr("sk-not-this-one"))
    with pytest.raises(OpenAICompatibleError) as raised:
        client.chat([{"role": "user", "content": "hi"}])
    message = str(raised.value)
    assert raised.value.status == 401 and not raised.value.transient and "\n" not in message
    assert openai_server.base_url + "/chat/completions" in message and "API key" in message
    assert "Incorrect API key provided" in message and "sk-not-this-one" not in message
    assert len(openai_server.requests) == 1


def test_429_and_5xx_are_retried_a_bounded_number_of_times(openai_server: FakeOpenAIServer) -> None:
    client = OpenAICompatibleClient(openai_server.base_url, "m", max_retries=3)
    openai_server.fail_next(2, 503)
    assert client.chat([{"role": "user", "content": "hi"}]).text
    assert len(openai_server.requests) == 3

    openai_server.requests.clear()
    openai_server.fail_next(10, 429)
    with pytest.raises(OpenAICompatibleError) as raised:
        client.chat([{"role": "user", "content": "hi"}])
    assert raised.value.transient and raised.value.status == 429 and "after 4 attempts" in str(raised.value)
    assert len(openai_server.requests) == 4, "1 try + max_retries retries, then the error"


def test_an_unreachable_endpoint_is_a_transient_error_after_its_retries() -> None:
    client = OpenAICompatibleClient(f"http://127.0.0.1:{closed_port()}/v1", "m", timeout_seconds=2, max_retries=1)
    with pytest.raises(OpenAICompatibleError) as raised:
        client.chat([{"role": "user", "content": "hi"}])
    assert raised.value.transient and "cannot reach http://127.0.0.1:" in str(raised.value)
    assert "(2 attempts)" in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("mode", "what"),
    [
        ("html", "an HTML page"),
        ("text", "text/plain, not JSON"),
        ("no-choices", "JSON without choices"),
        ("no-content", "JSON without choices[0].message.content"),
    ],
)
def test_an_endpoint_answering_garbage_is_one_line_and_never_retried(
    openai_server: FakeOpenAIServer, mode: Any, what: str
) -> None:
    openai_server.mode = mode
    client = OpenAICompatibleClient(openai_server.base_url, "m")
    with pytest.raises(MalformedAnswerError) as raised:
        client.chat([{"role": "user", "content": "hi"}])
    message = str(raised.value)
    assert f"{openai_server.base_url}/chat/completions does not answer like an OpenAI-compatible" in message
    assert what in message and "\n" not in message
    assert not raised.value.transient and len(openai_server.requests) == 1
    state = type("State", (), {"result": lambda self: (_ for _ in ()).throw(raised.value)})()
    assert retry_if_transient(None, None, state) is False, "the flows' retry policy must not repeat garbage"


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    pause = OpenAICompatibleClient._pause
    assert pause(1, "3") == 3.0 and pause(1, "3600") == openai_compatible.MAX_BACKOFF_SECONDS
    assert pause(3, None) == 4 * openai_compatible.BACKOFF_SECONDS
    assert pause(1, "Wed, 21 Oct 2015 07:28:00 GMT") == openai_compatible.BACKOFF_SECONDS


def test_a_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="not an http"):
        OpenAICompatibleClient("127.0.0.1:8000/v1", "m")
    assert OpenAICompatibleClient("http://h:1/v1/chat/completions/", "m").endpoint == "http://h:1/v1/chat/completions"


# --- the predictors ------------------------------------------------------------------------------------------------
def expected_side_probability(body: dict[str, Any], side: str) -> float:
    """What the judge's score must be: P(side) over P(A) + P(B), from the server's first-token distribution."""
    probabilities = option_probabilities(request_digest(body), ["A", "B"])
    return round(probabilities[side] / (probabilities["A"] + probabilities["B"]), 4)


def test_preference_judge_answers_a_side_scored_by_its_logprobs(openai_server: FakeOpenAIServer) -> None:
    spec = preference_spec(openai_server.base_url, instructions="Prefer the correct answer.")
    judge = build_predictor(spec)
    assert isinstance(judge, PreferenceJudge)
    items = [
        {"prompt": f"What is {n} + {n}?", "response_a": f"{2 * n}", "response_b": f"{2 * n + 1}"} for n in range(6)
    ]

    predictions = judge.predict(items)

    bodies = {json.dumps(body["messages"]): body for body in openai_server.chat_requests}
    sides = set()
    for item, prediction in zip(items, predictions, strict=True):
        assert prediction is not None and prediction["model_version"] == "judge-1"
        (result,) = prediction["result"]
        assert result["from_name"] == "label" and result["to_name"] == PAIRWISE_RESULT_TO_NAME
        assert result["type"] == "pairwise" and result["value"]["selected"] in ("left", "right")
        side = {"left": "A", "right": "B"}[result["value"]["selected"]]
        body = bodies[json.dumps(judge.messages(item))]
        assert body["logprobs"] is True and body["max_tokens"] == 1 and body["temperature"] == 0
        assert prediction["score"] == expected_side_probability(body, side)
        assert 0.5 < prediction["score"] < 1.0, "the chosen side is the likelier one once A and B are renormalised"
        # the preference type reads the prediction back as the side the judge chose
        label, _, problems = spec.task_type.parse_answer(prediction["result"], item, spec)
        assert (label, problems) == (side, [])
        sides.add(side)
    assert sides == {"A", "B"}, "a deterministic judge still varies with the task"
    assert "Prefer the correct answer." in openai_server.chat_requests[0]["messages"][0]["content"]


def test_preference_judge_reads_a_chat_prompt_turn_by_turn(openai_server: FakeOpenAIServer) -> None:
    spec = preference_spec(openai_server.base_url, options={"chat": True})
    chat = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "2+2?"},
    ]
    PreferenceJudge(spec).predict([{"prompt": chat, "response_a": "4", "response_b": "5"}])
    user = openai_server.chat_requests[0]["messages"][1]["content"]
    assert "user: Hello\n\nassistant: Hi\n\nuser: 2+2?" in user


def test_grading_judge_gives_a_rating_on_the_specs_scale(openai_server: FakeOpenAIServer) -> None:
    spec = record_spec(
        "response-grading",
        {"prompt": "q", "response": "r"},
        openai_server.base_url,
        options={"scale": 7, "rubric": ["factual", "polite"]},
    )
    judge = build_predictor(spec)
    assert isinstance(judge, GradingJudge)
    items = [{"prompt": f"question {n}", "response": f"answer {n}"} for n in range(8)]

    predictions = judge.predict(items)

    bodies = {json.dumps(body["messages"]): body for body in openai_server.chat_requests}  # sent concurrently
    scores = []
    for item, prediction in zip(items, predictions, strict=True):
        body = bodies[json.dumps(judge.messages(item))]
        (result,) = prediction["result"]
        assert {k: result[k] for k in ("from_name", "to_name", "type")} == {
            "from_name": "label",
            "to_name": "response",
            "type": "rating",
        }
        score = result["value"]["rating"]
        assert 1 <= score <= 7 and "Answer with exactly one of: 1, 2, 3, 4, 5, 6, 7." in body["messages"][1]["content"]
        probabilities = option_probabilities(request_digest(body), [str(s) for s in range(1, 8)])
        total = sum(p for token, p in probabilities.items() if token != "The")
        assert prediction["score"] == round(probabilities[str(score)] / total, 4)
        assert spec.task_type.parse_answer(prediction["result"], item, spec)[0] == str(score)
        scores.append(score)
    assert len(set(scores)) > 1
    assert "factual; polite" in openai_server.chat_requests[0]["messages"][0]["content"]


def test_sft_draft_writer_imports_the_answer_as_a_textarea(openai_server: FakeOpenAIServer) -> None:
    spec = record_spec("sft", {"prompt": "q"}, openai_server.base_url, instructions="Answer briefly.")
    writer = build_predictor(spec)
    assert isinstance(writer, DraftWriter)

    (prediction,) = writer.predict([{"prompt": "Explain gravity."}])

    body = openai_server.chat_requests[0]
    assert body["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Explain gravity."},
    ]
    expected = completion_choice(body)
    (result,) = prediction["result"]
    assert result == {
        "from_name": "label",
        "to_name": "prompt",
        "type": "textarea",
        "value": {"text": [expected["message"]["content"]]},
    }
    logprobs = [token["logprob"] for token in expected["logprobs"]["content"]]
    assert prediction["score"] == round(math.exp(sum(logprobs) / len(logprobs)), 4)


def test_a_judge_survives_an_outage_per_task_but_stops_on_garbage(openai_server: FakeOpenAIServer) -> None:
    spec = preference_spec(openai_server.base_url)
    judge = PreferenceJudge(spec, OpenAICompatibleClient(openai_server.base_url, "m", max_retries=1))
    openai_server.fail_next(2, 502)
    item = {"prompt": "p", "response_a": "a", "response_b": "b"}
    assert judge.predict([item]) == [None] and judge.failures == 1
    assert judge.predict([item])[0] is not None

    openai_server.mode = "html"
    with pytest.raises(MalformedAnswerError):
        judge.predict([item])


def test_an_answer_outside_the_options_is_not_imported() -> None:
    answers = iter(["C", "Response B.", "maybe"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"model": "m", "choices": [{"message": {"content": next(answers)}}]})

    client = OpenAICompatibleClient("http://judge.test/v1", "m", transport=httpx.MockTransport(handler))
    judge = PreferenceJudge(preference_spec("http://judge.test/v1"), client)
    item = {"prompt": "p", "response_a": "a", "response_b": "b"}
    first, second, third = (judge.predict([item])[0] for _ in range(3))  # one at a time: answers in order
    assert first is None and third is None
    assert second["result"][0]["value"] == {"selected": "right"} and "score" not in second, "no logprobs: no score"


# --- judge agreement -----------------------------------------------------------------------------------------------
def test_judge_agreement_per_model_version_matches_a_reference_kappa() -> None:
    judge_v1 = {1: "A", 2: "B", 3: "A", 4: "B", 5: "A"}
    judge_v2 = {1: "B", 2: "B", 3: "B"}
    annotations = pd.DataFrame(
        [
            # task, label, shown version, problem
            (1, "A", "v1", None),
            (1, "A", None, None),
            (2, "B", "v1", None),
            (2, "A", None, None),
            (3, "A", None, None),
            (4, "A", "v1", None),
            (5, "A", None, None),
            (5, None, None, "picks neither response"),
            (3, "B", None, "contradictory answer"),
            (9, "A", None, None),  # no judge labeled task 9
        ],
        columns=["task_id", "label", "prediction_model_version", "problem"],
    )
    predictions = pd.DataFrame(
        [(t, "v1", label) for t, label in judge_v1.items()] + [(t, "v2", label) for t, label in judge_v2.items()],
        columns=["task_id", "model_version", "label"],
    )

    table = judge_agreement(annotations, predictions).set_index("model_version")

    usable = annotations[annotations["problem"].isna() & annotations["label"].notna()]
    for version, judged in (("v1", judge_v1), ("v2", judge_v2)):
        rows = usable[usable["task_id"].isin(judged)]
        humans, judges = rows["label"].tolist(), [judged[t] for t in rows["task_id"]]
        assert table.loc[version, "annotations"] == len(rows)
        assert table.loc[version, "tasks"] == rows["task_id"].nunique()
        assert table.loc[version, "agreement"] == pytest.approx(
            sum(h == j for h, j in zip(humans, judges, strict=True)) / len(rows)
        )
        assert table.loc[version, "cohen_kappa"] == pytest.approx(cohen_kappa_score(humans, judges))
    assert table.loc["v1", "shown"] == 3 and table.loc["v2", "shown"] == 0
    metric = judge_agreement_metric(annotations, predictions)
    assert [row["model_version"] for row in metric] == ["v1", "v2"] and metric[0]["annotations"] == 7


def test_judge_agreement_from_the_prediction_each_annotator_started_from() -> None:
    annotations = pd.DataFrame(
        {
            "task_id": [1, 2, 3, 4],
            "label": ["4", "2", "5", "3"],
            "prediction_model_version": ["g1", "g1", "g1", None],
            "prediction_label": ["4", "3", "5", None],
        }
    )
    table = judge_agreement(annotations)
    assert table.to_dict("records")[0] | {"cohen_kappa": None} == {
        "model_version": "g1",
        "tasks": 3,
        "annotations": 3,
        "shown": 3,
        "agreement": pytest.approx(2 / 3),
        "cohen_kappa": None,
    }
    assert table["cohen_kappa"].iloc[0] == pytest.approx(cohen_kappa_score(["4", "2", "5"], ["4", "3", "5"]))
    assert judge_agreement(annotations.iloc[3:]).empty, "no annotation started from a prediction"
    single = judge_agreement_metric(annotations.iloc[:1])
    assert single[0]["cohen_kappa"] is None, "one pair: kappa is undefined, reported as None (JSON-safe)"


def test_predicted_labels_reads_an_exported_tasks_predictions_like_annotations() -> None:
    spec = preference_spec("http://judge.test/v1")
    pairwise = {"from_name": "label", "to_name": "label", "type": "pairwise", "value": {"selected": "right"}}
    exported = {
        "id": 41,
        "data": {"prompt": "p", "response_a": "a", "response_b": "b"},
        "predictions": [
            {"model_version": "judge-1", "score": 0.8, "result": [pairwise]},
            {"model_version": "judge-0", "result": [{**pairwise, "value": {"selected": "none"}}]},  # picks nothing
            17,  # Label Studio's default export gives ids only
        ],
    }
    assert predicted_labels(exported, spec) == [{"task_id": 41, "model_version": "judge-1", "label": "B"}]
