"""Pure ingest logic: request batching, task data, predictors (the LLM one against a local stub server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from labelflow.integrations.object_store import StoredObject
from labelflow.tasks.cleaning import Inspection
from labelflow.tasks.ingest import CleanedObject, IngestStats, request_batches, task_data
from labelflow.tasks.ledger import LedgerIndex
from labelflow.tasks.prelabel import KeywordPredictor, OpenAIChatPredictor, build_predictor
from labelflow.tasks.spec import parse_spec

TEXT_SPEC = {"name": "p", "source": "s3://raw/x/", "task": "text-classification", "labels": ["positive", "negative"]}


def test_request_batches_respect_count_and_bytes() -> None:
    payloads = [{"data": {"text": "x" * 100}} for _ in range(25)]
    assert [len(b) for b in request_batches(payloads, max_tasks=10, max_bytes=10**9)] == [10, 10, 5]
    by_bytes = list(request_batches(payloads, max_tasks=1000, max_bytes=500))
    assert all(len(b) <= 4 for b in by_bytes) and sum(len(b) for b in by_bytes) == 25
    huge = [{"data": {"text": "x" * 10_000}}]
    assert list(request_batches(huge, max_tasks=10, max_bytes=100)) == [[0]], "one oversized task still goes alone"


def test_task_data_carries_lineage() -> None:
    spec = parse_spec({**TEXT_SPEC, "task": "image-classification"})
    obj = StoredObject(bucket="raw", key="x/数据 1.png", size=10, etag="abc")
    data = task_data(spec, CleanedObject(obj, Inspection("f00", "image/png", width=3, height=4)), batch_id="b1")
    assert data["image"] == "s3://raw/x/数据 1.png"
    assert data == {
        **data,
        "source_uri": "s3://raw/x/数据 1.png",
        "source_bucket": "raw",
        "source_key": "x/数据 1.png",
        "source_etag": "abc",
        "content_sha256": "f00",
        "labelflow_batch": "b1",
        "image_width": 3,
        "image_height": 4,
    }


def test_ledger_index_knows_versions() -> None:
    index = LedgerIndex()
    index.add("b", "k", "etag1", "sha", "ingested", 7)
    assert index.is_known("b", "k", "etag1")
    assert not index.is_known("b", "k", "etag2"), "a changed object is new work"
    assert index.task_by_hash == {"sha": 7}


def test_stats_summary_shape() -> None:
    stats = IngestStats()
    stats.quarantined["empty"] += 2
    with stats.timed("list"):
        pass
    summary = stats.as_dict()
    assert summary["quarantined"] == 2 and summary["quarantined_by_reason"] == {"empty": 2}
    assert "list" in summary["seconds"]


def test_keyword_predictor_classifies_and_abstains() -> None:
    spec = parse_spec(
        {
            **TEXT_SPEC,
            "prelabel": {
                "predictor": "keyword",
                "model_version": "kw",
                "keywords": {"positive": ["love", "好"], "negative": ["broken"]},
            },
        }
    )
    predictor = build_predictor(spec)
    assert isinstance(predictor, KeywordPredictor)
    love, broken, none, tie = predictor.predict(
        [{"text": "I LOVE it, 好"}, {"text": "broken"}, {"text": "meh"}, {"text": "love but broken"}]
    )
    assert love == {
        "model_version": "kw",
        "score": 1.0,
        "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}],
    }
    assert broken["result"][0]["value"]["choices"] == ["negative"]
    assert none is None and tie is None


def test_keyword_predictor_finds_ner_spans() -> None:
    spec = parse_spec(
        {
            "name": "n",
            "source": "s3://raw/x/",
            "task": "ner",
            "labels": ["LOC", "ORG"],
            "prelabel": {
                "predictor": "keyword",
                "model_version": "g",
                "keywords": {"LOC": ["北京"], "ORG": ["清华大学"]},
            },
        }
    )
    (prediction,) = KeywordPredictor(spec).predict([{"text": "我在北京的清华大学"}])
    spans = sorted((r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in prediction["result"])
    assert spans == [(2, 4, "LOC"), (5, 9, "ORG")]
    assert all(r["type"] == "labels" and r["from_name"] == "label" for r in prediction["result"])


class _StubLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat-completions server: answers by keyword, fails once, or answers off-label."""

    calls: ClassVar[list[dict]] = []
    failed_once: ClassVar[set[str]] = set()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _StubLLM.calls.append({"auth": self.headers.get("Authorization"), "path": self.path, "body": body})
        text = body["messages"][-1]["content"]
        if "flaky" in text and text not in _StubLLM.failed_once:
            _StubLLM.failed_once.add(text)
            self.send_response(503)
            self.end_headers()
            return
        answer = "Positive." if "good" in text else ("banana" if "odd" in text else "negative")
        payload = {
            "choices": [
                {
                    "message": {"role": "assistant", "content": answer},
                    "logprobs": {"content": [{"token": answer, "logprob": -0.105}]},
                }
            ]
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def stub_llm() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _StubLLM.calls.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_predictor_against_stub_server(stub_llm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_KEY", "sekret")
    spec = parse_spec(
        {
            **TEXT_SPEC,
            "prelabel": {
                "predictor": "openai",
                "model_version": "stub-1",
                "endpoint": stub_llm,
                "model": "tiny",
                "api_key_env": "STUB_KEY",
            },
        }
    )
    predictor = build_predictor(spec)
    assert isinstance(predictor, OpenAIChatPredictor)
    good, bad, odd, flaky = predictor.predict([{"text": "good"}, {"text": "awful"}, {"text": "odd"}, {"text": "flaky"}])
    assert good["result"][0]["value"]["choices"] == ["positive"] and good["score"] == pytest.approx(0.9003, abs=1e-3)
    assert bad["result"][0]["value"]["choices"] == ["negative"]
    assert odd is None, "an answer outside the label set is never imported"
    assert flaky is not None, "a 503 is retried"
    assert all(c["auth"] == "Bearer sekret" and c["path"] == "/v1/chat/completions" for c in _StubLLM.calls)
    assert "positive, negative" in _StubLLM.calls[0]["body"]["messages"][0]["content"]


def test_openai_predictor_needs_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSING_KEY", raising=False)
    spec = parse_spec(
        {
            **TEXT_SPEC,
            "prelabel": {
                "predictor": "openai",
                "model_version": "v",
                "endpoint": "http://127.0.0.1:9/v1",
                "model": "m",
                "api_key_env": "MISSING_KEY",
            },
        }
    )
    with pytest.raises(ValueError, match="MISSING_KEY, which is not set"):
        build_predictor(spec)


def test_fast_client_is_used_only_for_keys_it_accepts() -> None:
    from labelflow.integrations.object_store import _minio_accepts

    assert _minio_accepts("a b/数据.txt")
    assert not _minio_accepts("x/../y.txt") and not _minio_accepts("./y.txt")


def test_store_errors_say_not_found_without_parsing_messages() -> None:
    from botocore.exceptions import ClientError

    from labelflow.integrations.object_store import _wrap

    def client_error(code: str, status: int) -> ClientError:
        return ClientError(
            {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
        )

    assert _wrap("get", client_error("NoSuchKey", 404)).not_found
    assert not _wrap("get", client_error("AccessDenied", 403)).not_found, "a 403 must never pass for a missing object"
    denied = _wrap("get", client_error("AccessDenied", 403))
    assert not denied.transient
    assert _wrap("get", client_error("SlowDown", 503)).transient
