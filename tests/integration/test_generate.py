"""`labelflow generate` on the real stack, against the deterministic OpenAI-compatible server of tests/openai_server.py:
candidates written into the source, a re-run that adds nothing, then ingest turning them into preference tasks
pre-annotated by the LLM judge (a side, scored from the logprobs); an endpoint answering garbage touches nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from labelflow.cli import app
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.annotations import AnnotationNormalizer
from labelflow.tasks.collect import hidden_record_fields
from labelflow.tasks.generate import candidate_seed, layout, prompt_sha256
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.prelabel import PAIRWISE_RESULT_TO_NAME, PreferenceJudge
from labelflow.tasks.spec import ProjectSpec, parse_spec
from labelflow.tasks.task_types import TASK_TYPES
from labelflow.tasks.task_types.record_task import merged_record
from tests.openai_server import FakeOpenAIServer, option_probabilities, request_digest

PROMPTS = [
    "What is the capital of France?",
    "用一句话解释光合作用。",
    "Give one reason to write tests.",
    "Name a prime number above 100.",
]


@pytest.fixture
def buckets(object_store: ObjectStore, unique_name: str, label_studio: LabelStudioClient) -> Iterator[dict[str, str]]:
    """Prompt, source and state buckets; afterwards their objects and the Label Studio project are removed."""
    names = {"prompts": f"{unique_name}-prompts", "source": f"{unique_name}-src", "state": f"{unique_name}-state"}
    object_store.ensure_bucket(names["prompts"])
    object_store.ensure_bucket(names["source"])
    lines = "".join(
        json.dumps({"id": f"q{i}", "text": text}, ensure_ascii=False) + "\n" for i, text in enumerate(PROMPTS)
    )
    object_store.put_bytes(names["prompts"], "in/prompts.jsonl", lines.encode("utf-8"))
    yield names
    project_id = label_studio.find_project(f"generated {unique_name}")
    if project_id:
        label_studio.delete_project(project_id)
    for bucket in names.values():
        if object_store.bucket_exists(bucket):
            for item in list(object_store.list_objects(bucket)):
                object_store.delete(bucket, item.key)


def write_spec(
    tmp_path: Path, buckets: dict[str, str], server: FakeOpenAIServer, name: str
) -> tuple[Path, ProjectSpec]:
    body: dict[str, Any] = {
        "name": f"generated {name}",
        "source": f"s3://{buckets['source']}/tasks/",
        "state": f"s3://{buckets['state']}/labelflow/",
        "task": "preference",
        "records": {"fields": layout(TASK_TYPES["preference"], 2).fields, "id": "id"},
        "generate": {
            "endpoint": server.base_url,
            "model": "gen-model",
            "candidates": 2,
            "temperature": 0.9,
            "seed": 3,
            "prompts": f"s3://{buckets['prompts']}/in/",
            "prompt_field": "text",
            "prompt_id_field": "id",
        },
        "prelabel": {"predictor": "openai", "model_version": "judge-1", "endpoint": server.base_url, "model": "judge"},
    }
    path = tmp_path / "generated.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path, parse_spec(body)


def test_generated_candidates_become_preference_tasks_with_judge_predictions(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    buckets: dict[str, str],
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
    openai_server: FakeOpenAIServer,
) -> None:
    from labelflow.flows.ingest import ingest

    path, spec = write_spec(tmp_path, buckets, openai_server, unique_name)
    runner = CliRunner()

    result = runner.invoke(app, ["generate", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["prompts_generated"] == len(PROMPTS) and summary["candidates"] == 2 * len(PROMPTS)
    (written,) = summary["files_written"]
    assert written.startswith(f"s3://{buckets['source']}/tasks/generated/") and written.endswith(".jsonl")
    requests = len(openai_server.chat_requests)
    keys = [item.key for item in object_store.list_objects(buckets["source"])]

    again = runner.invoke(app, ["generate", str(path), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["prompts_generated"] == 0
    assert len(openai_server.chat_requests) == requests, "a re-run asks the endpoint for nothing"
    assert [item.key for item in object_store.list_objects(buckets["source"])] == keys

    ingested = ingest(str(path))
    assert ingested["tasks_created"] == len(PROMPTS) and ingested["predictions"] == len(PROMPTS)

    project_id = int(read_project_record(object_store, spec)["project_id"])
    tasks = label_studio.export_tasks(project_id)
    assert sorted(task["data"]["record_id"] for task in tasks) == [f"q{i}" for i in range(len(PROMPTS))]
    judge = PreferenceJudge(spec)
    judged = {json.dumps(body["messages"]): body for body in openai_server.chat_requests[requests:]}
    hidden = hidden_record_fields(object_store, spec)  # lineage and model names stay out of Label Studio
    for exported in tasks:
        data = exported["data"]
        text = data["prompt"]
        assert "generation" not in data and "model_a" not in data
        kept = json.loads(hidden[int(exported["id"])])
        generation = json.loads(kept["generation"])
        assert generation["prompt_sha256"] == prompt_sha256(text) and generation["model"] == "gen-model"
        assert generation["seeds"] == [str(candidate_seed(3, prompt_sha256(text), i)) for i in range(2)]
        assert data["response_a"] != data["response_b"] and kept["model_a"] == "gen-model"

        (prediction,) = label_studio.get_task(int(exported["id"]))["predictions"]
        (item,) = prediction["result"]
        assert prediction["model_version"] == "judge-1" and item["type"] == "pairwise"
        assert item["from_name"] == "label" and item["to_name"] == PAIRWISE_RESULT_TO_NAME
        side = {"left": "A", "right": "B"}[item["value"]["selected"]]
        body = judged[json.dumps(judge.messages(data))]
        probabilities = option_probabilities(request_digest(body), ["A", "B"])
        assert prediction["score"] == pytest.approx(
            probabilities[side] / (probabilities["A"] + probabilities["B"]), abs=1e-4
        )

        # the generation lineage is part of the task's record, which collect keeps into consensus.parquet
        task_row = AnnotationNormalizer(spec, project_id, {}, "label").task(exported, seq=1).task
        record = json.loads(merged_record(task_row["record"], hidden[int(exported["id"])]))
        assert json.loads(record["generation"]) == generation


def test_an_endpoint_answering_garbage_exits_2_in_one_line_and_touches_nothing(
    object_store: ObjectStore,
    buckets: dict[str, str],
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
    openai_server: FakeOpenAIServer,
) -> None:
    path, _ = write_spec(tmp_path, buckets, openai_server, unique_name)
    openai_server.mode = "html"

    result = CliRunner().invoke(app, ["generate", str(path)])

    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"{openai_server.base_url}/chat/completions does not answer like an OpenAI-compatible" in lines[0]
    assert "an HTML page" in lines[0]
    assert list(object_store.list_objects(buckets["source"])) == []
    assert not object_store.bucket_exists(buckets["state"]) or not list(object_store.list_objects(buckets["state"]))
