"""`labelflow generate` without a stack: an in-memory object store, the flows' steps as plain calls, and the
deterministic OpenAI-compatible server of tests/openai_server.py (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import labelflow.cli.generate as generate_cli
import labelflow.integrations.openai_compatible as openai_compatible
from labelflow.cli import app
from labelflow.flows.generate import generate_spec
from labelflow.integrations.openai_compatible import MalformedAnswerError, OpenAICompatibleClient, OpenAICompatibleError
from labelflow.tasks.generate import (
    GenerateError,
    candidate_seed,
    check_generate,
    layout,
    marker_location,
    prompt_sha256,
)
from labelflow.tasks.records import ParsedRecord, iter_records
from labelflow.tasks.spec import ProjectSpec, SpecError, parse_spec
from labelflow.tasks.task_types import TASK_TYPES
from tests.openai_server import FakeOpenAIServer, completion_choice
from tests.unit.fakes import FakeObjectStore, PlainSteps

SOURCE, PROMPTS, STATE = "gen-src", "gen-prompts", "gen-state"
PROMPT_LINES = [
    {"id": "p1", "question": "What is the capital of France?"},
    {"id": "p2", "question": "用一句话解释光合作用。"},
    {"id": "p3", "question": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]},
    {"id": "p4", "question": "What is the capital of France?"},  # the same prompt as p1
    {"id": "p5", "question": "   "},  # empty: left out
]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_compatible, "BACKOFF_SECONDS", 0.0)


def spec_data(task: str, endpoint: str | None, candidates: int = 2, **generate: Any) -> dict[str, Any]:
    mapping = layout(TASK_TYPES[task], candidates).fields
    settings = {"model": "gen-model", "candidates": candidates, "seed": 11, "prompts": f"s3://{PROMPTS}/in/"}
    settings |= {"prompt_field": "question", "prompt_id_field": "id", "temperature": 0.8, "max_tokens": 40}
    if endpoint is not None:
        settings["endpoint"] = endpoint
    return {
        "name": f"generated {task}",
        "source": f"s3://{SOURCE}/tasks/",
        "state": f"s3://{STATE}/state/",
        "task": task,
        "records": {"fields": mapping, "id": "id"},
        "generate": settings | generate,
    }


def make_spec(task: str, endpoint: str | None, candidates: int = 2, **generate: Any) -> ProjectSpec:
    return parse_spec(spec_data(task, endpoint, candidates, **generate))


def store_with_prompts(lines: list[dict[str, Any]] = PROMPT_LINES) -> FakeObjectStore:
    store = FakeObjectStore()
    store.ensure_bucket(SOURCE)
    store.put_object(PROMPTS, "in/prompts.jsonl", jsonl(lines))
    store.put_object(PROMPTS, "in/readme.txt", b"not a prompt file")
    return store


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")


def run(spec: ProjectSpec, store: FakeObjectStore, server: FakeOpenAIServer, **kwargs: Any) -> dict[str, Any]:
    client = OpenAICompatibleClient(server.base_url, spec.generate.model, max_retries=1)
    return generate_spec(spec, store=store, client=client, steps=PlainSteps(), **kwargs)


def output_records(store: FakeObjectStore, spec: ProjectSpec) -> list[ParsedRecord]:
    """The generated files read back the way ingest reads them, with the spec's own `records` mapping."""
    parsed = []
    for key in store.keys(SOURCE, "tasks/generated/"):
        results = list(iter_records([store.get_bytes(SOURCE, key)], key, spec.records))
        assert all(isinstance(result, ParsedRecord) for result in results), results
        parsed += results
    return parsed


def expected_text(spec: ProjectSpec, prompt: Any, index: int, text: str | None = None) -> str:
    """The candidate the deterministic server gives for this prompt and candidate index.

    `text` is the prompt as the records parser maps it (a chat becomes its canonical JSON text), which is hashed.
    """
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    body = {
        "model": spec.generate.model,
        "messages": messages,
        "temperature": spec.generate.temperature,
        "top_p": spec.generate.top_p,
        "max_tokens": spec.generate.max_tokens,
        "seed": candidate_seed(spec.generate.seed, prompt_sha256(text or prompt), index),
    }
    return completion_choice(body)["message"]["content"]


# --- the generated records ---------------------------------------------------------------------------------------------
def test_preference_records_carry_k_candidates_and_their_lineage(openai_server: FakeOpenAIServer) -> None:
    spec = make_spec("preference", openai_server.base_url)
    store = store_with_prompts()

    summary = run(spec, store, openai_server)

    assert summary["prompts_read"] == 5 and summary["quarantined"] == {"empty": 1, "duplicate": 1}
    assert summary["prompts_generated"] == 3 and summary["candidates"] == 6 and len(openai_server.chat_requests) == 6
    records = {record.record_id: record.fields for record in output_records(store, spec)}
    assert sorted(records) == ["p1", "p2", "p3"]
    for source in PROMPT_LINES[:3]:
        fields = records[source["id"]]
        prompt = source["question"]
        assert fields["response_a"] == expected_text(spec, prompt, 0, fields["prompt"])
        assert fields["response_b"] == expected_text(spec, prompt, 1, fields["prompt"])
        assert fields["response_a"] != fields["response_b"], "each candidate has its own seed"
        assert fields["model_a"] == fields["model_b"] == "gen-model"
        # the records parser keeps JSON numbers as their source text, nested ones included
        generation = json.loads(fields["generation"])
        text = fields["prompt"]
        assert generation["prompt_sha256"] == prompt_sha256(text)
        assert generation["seeds"] == [str(candidate_seed(11, prompt_sha256(text), i)) for i in range(2)]
        assert generation["params"] == {"temperature": "0.8", "top_p": "1.0", "max_tokens": "40"}
        assert generation["model"] == "gen-model" and generation["prompt_source"] == f"s3://{PROMPTS}/in/prompts.jsonl"
    # a chat prompt is sent as its own turns and written back as the chat
    assert json.loads(records["p3"]["prompt"]) == PROMPT_LINES[2]["question"]
    assert PROMPT_LINES[2]["question"] in [body["messages"] for body in openai_server.chat_requests]


def test_a_rerun_adds_nothing_and_new_prompts_cost_only_their_own_requests(openai_server: FakeOpenAIServer) -> None:
    spec = make_spec("preference", openai_server.base_url)
    store = store_with_prompts()
    run(spec, store, openai_server)
    files = store.keys(SOURCE)
    requests = len(openai_server.chat_requests)

    store.writes.clear()
    store.reads.clear()
    again = run(spec, store, openai_server)

    assert again["prompts_generated"] == 0 and again["prompt_files_unchanged"] == 1 and again["files_written"] == []
    assert len(openai_server.chat_requests) == requests and store.keys(SOURCE) == files
    assert not [key for key in store.writes if not key.startswith("state/")], "nothing new in the source"
    assert "in/prompts.jsonl" not in store.reads, "an unchanged prompt file is not read again"

    store.put_object(
        PROMPTS, "in/prompts.jsonl", jsonl([*PROMPT_LINES, {"id": "p6", "question": "Why is the sky blue?"}])
    )
    third = run(spec, store, openai_server)

    assert third["already_generated"] == 3 and third["prompts_generated"] == 1
    assert len(openai_server.chat_requests) == requests + 2
    assert sorted(r.record_id for r in output_records(store, spec)) == ["p1", "p2", "p3", "p6"]


def test_a_crashed_run_is_redone_with_the_same_seeds_into_the_same_file(openai_server: FakeOpenAIServer) -> None:
    spec = make_spec("preference", openai_server.base_url)
    store = store_with_prompts()
    run(spec, store, openai_server)
    written = {key: store.get_bytes(SOURCE, key) for key in store.keys(SOURCE)}
    for key in store.keys(STATE):  # the markers lost, as if the run died after writing its records
        store.delete(STATE, key)

    run(spec, store, openai_server)

    assert {key: store.get_bytes(SOURCE, key) for key in store.keys(SOURCE)} == written


def test_limit_stops_early_and_the_next_run_finishes(openai_server: FakeOpenAIServer) -> None:
    spec = make_spec("preference", openai_server.base_url)
    store = store_with_prompts()
    first = run(spec, store, openai_server, limit=2)
    assert first["prompts_generated"] == 2 and first["limited"]
    second = run(spec, store, openai_server)
    assert second["prompts_generated"] == 1 and second["already_generated"] == 2 and not second["limited"]


def test_grading_writes_one_record_per_candidate(openai_server: FakeOpenAIServer) -> None:
    spec = make_spec("response-grading", openai_server.base_url, candidates=3, batch_prompts=2)
    store = store_with_prompts()

    summary = run(spec, store, openai_server)

    assert summary["records_written"] == 9 and len(summary["files_written"]) == 2
    records = {record.record_id: record.fields for record in output_records(store, spec)}
    assert sorted(records) == [f"p{p}-{i}" for p in (1, 2, 3) for i in range(3)]
    for index in range(3):
        fields = records[f"p1-{index}"]
        assert fields["response"] == expected_text(spec, PROMPT_LINES[0]["question"], index)
        generation = json.loads(fields["generation"])
        assert generation["candidate"] == str(index)
        assert generation["seed"] == str(candidate_seed(11, prompt_sha256(fields["prompt"]), index))


def test_ranking_maps_k_responses(openai_server: FakeOpenAIServer) -> None:
    spec = make_spec("ranking", openai_server.base_url, candidates=4)
    store = store_with_prompts(PROMPT_LINES[:1])
    run(spec, store, openai_server)
    (record,) = output_records(store, spec)
    assert record.fields["responses"] == [expected_text(spec, PROMPT_LINES[0]["question"], i) for i in range(4)]
    assert record.fields["models"] == ["gen-model"] * 4


# --- bad input ---------------------------------------------------------------------------------------------------
def test_an_endpoint_answering_garbage_writes_nothing(openai_server: FakeOpenAIServer) -> None:
    spec = make_spec("preference", openai_server.base_url)
    store = store_with_prompts()
    openai_server.mode = "html"
    with pytest.raises(MalformedAnswerError, match="does not answer like an OpenAI-compatible"):
        run(spec, store, openai_server)
    assert store.writes == [] and store.keys(SOURCE) == [] and STATE not in store.buckets


def test_an_outage_fails_the_run_without_writing_its_batch(openai_server: FakeOpenAIServer) -> None:
    spec = make_spec("preference", openai_server.base_url)
    store = store_with_prompts()
    openai_server.fail_next(100, 503)
    with pytest.raises(OpenAICompatibleError) as raised:
        run(spec, store, openai_server)
    assert raised.value.transient and store.writes == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"generate": None}, "generate: the spec has no `generate:` section"),
        ({"generate.endpoint": None}, "generate.endpoint: labelflow generate needs the base URL"),
        ({"records.fields.response_a": "candidates.1.text"}, "records.fields.response_a: generated preference"),
        ({"records.fields.gold": "gold"}, "records.fields.gold: generated preference records have no such field"),
        ({"records.fields.generation": None}, "records.fields.generation: map `generation: generation`"),
        (
            {"generate.candidates": 3},
            "generate.candidates: task preference shows 2 responses (response_a, response_b); set candidates: 2, not 3",
        ),
        ({"records.format": "csv"}, "records.format: generate writes JSONL files"),
        ({"generate.api_key_env": "LABELFLOW_TEST_NO_SUCH_KEY"}, "generate.api_key_env names LABELFLOW_TEST_NO"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    change: dict[str, Any], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = spec_data("preference", "http://127.0.0.1:9/v1")
    for path, value in change.items():
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        if value is None:
            node.pop(leaf)
        else:
            node[leaf] = value
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    def contacted() -> None:
        raise AssertionError("bad input must be reported before any server is contacted")

    monkeypatch.setattr(generate_cli, "prefect_connection", contacted)
    result = CliRunner().invoke(app, ["generate", str(spec_path)])

    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


def test_a_suggested_mapping_is_the_layout_itself() -> None:
    data = spec_data("ranking", "http://127.0.0.1:9/v1", candidates=3)
    data["records"]["fields"]["responses"] = ["a", "b", "c"]
    with pytest.raises(GenerateError) as raised:
        check_generate(parse_spec(data))
    assert "map {prompt: prompt, responses: [candidates.0.text, candidates.1.text, candidates.2.text]" in str(
        raised.value
    )


def test_other_tasks_and_prompts_inside_the_source_are_refused() -> None:
    with pytest.raises(GenerateError, match="task: generate writes candidates for tasks with responses"):
        check_generate(
            parse_spec(
                {
                    "name": "sft",
                    "source": "s3://sft-src/x/",
                    "task": "sft",
                    "records": {"fields": {"prompt": "prompt"}},
                    "generate": {"endpoint": "http://h/v1", "model": "m", "prompts": "s3://sft-prompts/in/"},
                }
            )
        )
    inside = spec_data("preference", "http://h/v1", prompts=f"s3://{SOURCE}/tasks/prompts/")
    with pytest.raises(SpecError, match=r"generate\.prompts: .* overlaps the source"):
        parse_spec(inside)
    with pytest.raises(SpecError, match=r"generate\.endpoint"):
        parse_spec(spec_data("preference", "127.0.0.1:8000/v1"))


def test_seeds_differ_per_candidate_and_prompt_and_follow_the_spec_seed() -> None:
    a, b = prompt_sha256("one"), prompt_sha256("two")
    seeds = {candidate_seed(s, p, i) for s in (0, 1) for p in (a, b) for i in range(3)}
    assert len(seeds) == 12 and all(0 <= seed < 2**31 for seed in seeds)
    assert candidate_seed(0, a, 1) == candidate_seed(0, a, 1)


def test_markers_live_under_the_state_location_per_model(openai_server: FakeOpenAIServer) -> None:
    spec = make_spec("preference", openai_server.base_url)
    store = store_with_prompts()
    run(spec, store, openai_server)
    markers = marker_location(spec)
    assert markers.bucket == STATE and markers.prefix.startswith("state/generate/")
    keys = store.keys(STATE, markers.prefix)
    assert len([key for key in keys if "/prompts/" in key]) == 3 and len([key for key in keys if "/files/" in key]) == 1
    other_model = make_spec("preference", openai_server.base_url, model="another-model")
    assert marker_location(other_model) != markers, "another model generates its own candidates"


def test_the_layout_follows_each_types_record_fields() -> None:
    assert layout(TASK_TYPES["preference"], 2).fields == {
        "prompt": "prompt",
        "response_a": "candidates.0.text",
        "response_b": "candidates.1.text",
        "model_a": "candidates.0.model",
        "model_b": "candidates.1.model",
        "generation": "generation",
    }
    ranking = layout(TASK_TYPES["ranking"], 3)
    assert ranking.fields["responses"] == ["candidates.0.text", "candidates.1.text", "candidates.2.text"]
    assert ranking.fields["models"] == ["candidates.0.model", "candidates.1.model", "candidates.2.model"]
    grading = layout(TASK_TYPES["response-grading"], 5)
    assert grading.per_candidate and grading.fields == {
        "prompt": "prompt",
        "response": "response",
        "model": "model",
        "generation": "generation",
    }
    with pytest.raises(GenerateError, match="not text-classification"):
        layout(TASK_TYPES["text-classification"], 2)
