"""Ingest against the real stack: every task type, every quarantine reason, re-runs, crashes and bad servers."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from labelflow.cli import app
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.ledger import IngestLedger, LedgerRow
from labelflow.tasks.spec import parse_spec

ROOT = Path(__file__).parents[2]


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def write_spec(tmp_path: Path, spec: dict[str, Any]) -> Path:
    parse_spec(spec)  # the test's own spec must be valid
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return path


def run_ingest(spec_path: Path) -> dict[str, Any]:
    """The ingest flow as a deployment would run it (on the stack's Prefect server)."""
    from labelflow.flows.ingest import ingest

    return ingest(str(spec_path))


def all_tasks(ls: LabelStudioClient, project_id: int) -> list[dict[str, Any]]:
    tasks, page = [], 1
    while True:
        response = ls._request(
            "GET",
            "/api/tasks",
            "list",
            params={"project": project_id, "page": page, "page_size": 500, "fields": "all", "resolve_uri": "false"},
        )
        payload = response.json()
        tasks.extend(payload["tasks"])
        if len(payload["tasks"]) < 500 or len(tasks) >= payload["total"]:
            return tasks
        page += 1


def quarantine_report(store: ObjectStore, uri: str) -> dict[str, str]:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    rows = csv.DictReader(io.StringIO(store.get_bytes(bucket, key).decode("utf-8")))
    return {row["uri"].rsplit("/", 1)[-1]: row["reason"] for row in rows}


def ingest_killed_after(
    spec_path: Path, prefect_api: str, store: ObjectStore, ls: LabelStudioClient, state: str, tasks: int
) -> tuple[int, int]:
    """Run `labelflow ingest` in a process and SIGKILL it once its project (state `k/`) has `tasks` tasks.

    Returns (project id, tasks when killed).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "labelflow.cli", "ingest", str(spec_path)],
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": prefect_api},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    project_id, killed_at = None, 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            project_id = json.loads(store.get_bytes(state, "k/project.json"))["project_id"]
            killed_at = ls.count_tasks(project_id)
        except Exception:
            killed_at = 0
        if killed_at >= tasks:
            os.killpg(process.pid, signal.SIGKILL)
            break
        assert process.poll() is None, "ingest finished before it could be killed"
        time.sleep(0.2)
    process.wait(timeout=30)
    assert project_id is not None, "ingest never recorded its project"
    return int(project_id), killed_at


@pytest.fixture
def buckets(object_store: ObjectStore, unique_name: str) -> tuple[str, str]:
    source, state = f"{unique_name}-src", f"{unique_name}-state"
    object_store.ensure_bucket(source)
    return source, state


def test_text_ingest_cleans_quarantines_and_is_idempotent(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    buckets: tuple[str, str],
    tmp_path: Path,
    prefect_api: str,
) -> None:
    source, state = buckets
    long_gbk = "数据标注是机器学习的基础，我们需要高质量的标注数据来训练模型。".encode("gb18030")
    objects = {
        "in/en.txt": b"The battery lasts all day. Great phone.",
        "in/中文 评论.txt": "这个产品非常好，我很喜欢！".encode(),
        "in/gbk.txt": long_gbk,
        "in/same-as-en.txt": b"The battery lasts all day. Great phone.",
        "in/empty.txt": b"",
        "in/blank.txt": " \n\t\u3000 ".encode(),
        "in/big.txt": b"word " * 1000,
        "in/photo.txt": image_bytes(),
        "in/report.pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\x00",
        "in/mojibake.txt": bytes(range(128, 256)) * 4,
    }
    for key, data in objects.items():
        object_store.put_bytes(source, key, data)
    spec_path = write_spec(
        tmp_path,
        {
            "name": f"text {source}",
            "source": f"s3://{source}/in/",
            "state": f"s3://{state}/labelflow/",
            "task": "text-classification",
            "labels": ["好评", "差评", "a & <b>"],
            "overlap": 2,
            "instructions": "选择情感 / choose the sentiment",
            "ingest": {"max_object_bytes": 4096},
        },
    )

    first = run_ingest(spec_path)
    assert first["listed"] == 10 and first["new"] == 10
    assert first["tasks_created"] == 3
    assert first["quarantined_by_reason"] == {
        "duplicate": 1,
        "empty": 2,
        "too_large": 1,
        "undecodable_text": 1,
        "unsupported_type": 1,
        "wrong_type": 1,
    }
    assert set(first["seconds"]) >= {"ledger", "list", "clean", "import", "record"}
    report = quarantine_report(object_store, first["quarantine_report"])
    assert report == {
        "same-as-en.txt": "duplicate",
        "empty.txt": "empty",
        "blank.txt": "empty",
        "big.txt": "too_large",
        "mojibake.txt": "undecodable_text",
        "report.pdf": "unsupported_type",
        "photo.txt": "wrong_type",
    }

    project_id = first["project_id"]
    project = label_studio.get_project(project_id)
    assert project["maximum_annotations"] == 2
    assert project["expert_instruction"] == "选择情感 / choose the sentiment"
    tasks = {t["data"]["source_key"]: t["data"] for t in all_tasks(label_studio, project_id)}
    assert set(tasks) == {"in/en.txt", "in/中文 评论.txt", "in/gbk.txt"}
    assert tasks["in/中文 评论.txt"]["text"] == "这个产品非常好，我很喜欢！"
    assert tasks["in/gbk.txt"]["text"] == long_gbk.decode("gb18030")
    assert tasks["in/gbk.txt"]["source_encoding"] == "gb18030"
    cjk = tasks["in/中文 评论.txt"]
    assert cjk["source_uri"] == f"s3://{source}/in/中文 评论.txt" and cjk["source_bucket"] == source
    assert len(cjk["content_sha256"]) == 64 and cjk["source_etag"]

    second = run_ingest(spec_path)
    assert second["new"] == 0 and second["tasks_created"] == 0
    assert second["already_ingested_or_quarantined"] == 10
    assert len(all_tasks(label_studio, project_id)) == 3

    object_store.put_bytes(source, "in/later-copy.txt", b"The battery lasts all day. Great phone.")
    object_store.put_bytes(source, "in/later.txt", "新的评论：物流很快".encode())
    object_store.put_bytes(source, "in/en.txt", b"The battery lasts all day. Great phone. EDITED")
    third = run_ingest(spec_path)
    assert third["new"] == 3 and third["tasks_created"] == 2, "a changed object is new work"
    assert third["quarantined_by_reason"] == {"duplicate": 1}
    assert len(all_tasks(label_studio, project_id)) == 5


def test_image_tasks_resolve_through_storage(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    buckets: tuple[str, str],
    tmp_path: Path,
    prefect_api: str,
) -> None:
    source, state = buckets
    good = {
        "imgs/a.png": image_bytes("PNG", (64, 48), "red"),
        "imgs/数据 标注/b.jpg": image_bytes("JPEG", (30, 20), "blue"),
        "imgs/no-extension": image_bytes("PNG", (8, 8), "green"),
    }
    bad = {
        "imgs/truncated.jpg": image_bytes("JPEG", (200, 200), "white")[:-300],
        "imgs/notes.png": b"this is text, not a picture",
        "imgs/q?x=1.png": image_bytes("PNG", (5, 5), "black"),
    }
    for key, data in {**good, **bad}.items():
        object_store.put_bytes(source, key, data)
    for task_type in ("image-classification", "object-detection"):
        spec_path = write_spec(
            tmp_path,
            {
                "name": f"{task_type} {source}",
                "source": f"s3://{source}/imgs/",
                "state": f"s3://{state}/{task_type}/",
                "task": task_type,
                "labels": ["cat", "狗"],
            },
        )
        summary = run_ingest(spec_path)
        assert summary["tasks_created"] == 3, summary
        assert summary["quarantined_by_reason"] == {"corrupt": 1, "wrong_type": 1, "unaddressable_key": 1}
        tasks = all_tasks(label_studio, summary["project_id"])
        assert len(tasks) == 3
        for task in tasks:
            key = task["data"]["source_key"]
            assert task["data"]["image"] == f"s3://{source}/{key}"
            served = label_studio.resolve_uri(task["id"], task["data"]["image"])
            assert served.status_code == 200 and served.content == good[key]
        sizes = {t["data"]["source_key"]: (t["data"]["image_width"], t["data"]["image_height"]) for t in tasks}
        assert sizes["imgs/a.png"] == (64, 48) and sizes["imgs/数据 标注/b.jpg"] == (30, 20)
        storages = label_studio.s3_import_storages(summary["project_id"])
        assert [(s["bucket"], s["prefix"]) for s in storages] == [(source, "imgs/")]
        assert run_ingest(spec_path)["tasks_created"] == 0
        assert len(label_studio.s3_import_storages(summary["project_id"])) == 1


def test_ner_with_keyword_prelabels(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    buckets: tuple[str, str],
    tmp_path: Path,
    prefect_api: str,
) -> None:
    source, state = buckets
    texts = {"n/1.txt": "我在北京的清华大学读书。", "n/2.txt": "Berlin is nice.", "n/3.txt": "nothing here"}
    for key, text in texts.items():
        object_store.put_bytes(source, key, text.encode())
    spec_path = write_spec(
        tmp_path,
        {
            "name": f"ner {source}",
            "source": f"s3://{source}/n/",
            "state": f"s3://{state}/ner/",
            "task": "ner",
            "labels": ["LOC", "ORG"],
            "prelabel": {
                "predictor": "keyword",
                "model_version": "gazetteer-1",
                "keywords": {"LOC": ["北京", "Berlin"], "ORG": ["清华大学"]},
            },
        },
    )
    summary = run_ingest(spec_path)
    assert summary["tasks_created"] == 3 and summary["predictions"] == 2
    tasks = {t["data"]["source_key"]: t for t in all_tasks(label_studio, summary["project_id"])}
    (prediction,) = tasks["n/1.txt"]["predictions"]
    assert prediction["model_version"] == "gazetteer-1"
    spans = sorted(
        (r["value"]["start"], r["value"]["end"], r["value"]["text"], r["value"]["labels"][0])
        for r in prediction["result"]
    )
    assert spans == [(2, 4, "北京", "LOC"), (5, 9, "清华大学", "ORG")]
    assert tasks["n/3.txt"]["predictions"] == []


def test_interrupted_batch_is_recovered_without_duplicates(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    buckets: tuple[str, str],
    tmp_path: Path,
    prefect_api: str,
) -> None:
    """A run that imported a batch and died before recording it: the next run records it and creates no copies."""
    source, state = buckets
    for i in range(20):
        object_store.put_bytes(source, f"t/{i:02d}.txt", f"text number {i}".encode())
    spec_dict = {
        "name": f"recover {source}",
        "source": f"s3://{source}/t/",
        "state": f"s3://{state}/r/",
        "task": "text-classification",
        "labels": ["x", "y"],
        "ingest": {"batch_size": 5},
    }
    spec_path = write_spec(tmp_path, spec_dict)
    assert run_ingest(spec_path)["tasks_created"] == 20
    project_id = json.loads(object_store.get_bytes(state, "r/project.json"))["project_id"]

    # Simulate the crash window: 3 new objects imported by a run that died before writing its ledger part.
    crashed = []
    for i in range(20, 23):
        key = f"t/{i:02d}.txt"
        object_store.put_bytes(source, key, f"text number {i}".encode())
        listed = next(o for o in object_store.list_objects(source, key))
        crashed.append(
            LedgerRow(
                bucket=source,
                key=key,
                etag=listed.etag,
                size=listed.size,
                sha256="",
                status="ingested",
                batch_id="deadbeef",
            )
        )
    ledger = IngestLedger(object_store, parse_spec(spec_dict).state_location)
    ledger.mark_pending("deadbeef", crashed)
    label_studio.import_tasks(
        project_id,
        [
            {"text": f"text number {i}", "source_uri": f"s3://{source}/t/{i:02d}.txt", "labelflow_batch": "deadbeef"}
            for i in range(20, 22)
        ],
    )
    summary = run_ingest(spec_path)
    assert summary["recovered_from_interrupted_run"] == 2
    assert summary["tasks_created"] == 1, "only the object whose task never reached Label Studio is imported"
    uris = Counter(t["data"]["source_uri"] for t in all_tasks(label_studio, project_id))
    assert len(uris) == 23 and set(uris.values()) == {1}
    assert ledger.pending_batches() == {}


def test_sigkill_mid_ingest_then_resume_gives_exactly_one_task_per_object(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    buckets: tuple[str, str],
    tmp_path: Path,
    prefect_api: str,
) -> None:
    source, state = buckets
    total = 3000
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: object_store.put_bytes(source, f"k/{i:05d}.txt", f"document {i} 文档".encode()), range(total)
            )
        )
    spec_path = write_spec(
        tmp_path,
        {
            "name": f"kill {source}",
            "source": f"s3://{source}/k/",
            "state": f"s3://{state}/k/",
            "task": "text-classification",
            "labels": ["x", "y"],
            "ingest": {"batch_size": 25, "chunk_objects": 200},
        },
    )
    project_id, killed_at = ingest_killed_after(spec_path, prefect_api, object_store, label_studio, state, 300)
    assert 300 <= killed_at < total, killed_at

    summary = run_ingest(spec_path)
    assert summary["listed"] == total
    tasks = all_tasks(label_studio, project_id)
    uris = Counter(t["data"]["source_uri"] for t in tasks)
    assert len(tasks) == total, f"{len(tasks)} tasks for {total} objects"
    assert set(uris.values()) == {1} and len(uris) == total
    assert run_ingest(spec_path)["tasks_created"] == 0


def test_bad_token_down_server_and_missing_bucket_fail_clearly(
    buckets: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str
) -> None:
    source, state = buckets
    spec = {
        "name": f"bad {source}",
        "source": f"s3://{source}/",
        "state": f"s3://{state}/",
        "task": "ner",
        "labels": ["A"],
    }
    spec_path = write_spec(tmp_path, spec)
    runner = CliRunner()

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "0" * 40)
    began = time.monotonic()
    result = runner.invoke(app, ["ingest", str(spec_path)])
    assert result.exit_code == 1 and "HTTP 401" in result.output and "LABEL_STUDIO_API_KEY" in result.output
    assert time.monotonic() - began < 30, "a 401 is not retried"
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")

    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    result = runner.invoke(app, ["ingest", str(spec_path)])
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:9" in result.output
    monkeypatch.delenv("LABEL_STUDIO_URL")

    missing = write_spec(tmp_path, {**spec, "source": "s3://no-such-bucket-labelflow/x/"})
    result = runner.invoke(app, ["ingest", str(missing)])
    assert result.exit_code == 1 and "source bucket 'no-such-bucket-labelflow'" in result.output

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nsource: s3://b/\ntask: ner\nlabels: []\n", encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(broken)])
    assert result.exit_code == 2 and "labels: List should have at least 1 item" in result.output
