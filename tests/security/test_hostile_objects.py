"""Hostile objects against the real stack: decompression bombs and texts that hide NUL or control characters late."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

import labelflow.tasks.ingest
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.spec import S3Location, parse_spec
from tests.hostile_media import png_bomb


def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), "orange").save(buffer, "PNG")
    return buffer.getvalue()


def run_ingest(tmp_path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """The ingest flow as a deployment runs it (on the stack's Prefect server)."""
    from labelflow.flows.ingest import ingest

    parse_spec(spec)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return ingest(str(path))


def quarantine_rows(store: ObjectStore, uri: str) -> dict[str, tuple[str, str]]:
    """Quarantine report as {key's last part: (reason, detail)}."""
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    rows = csv.DictReader(io.StringIO(store.get_bytes(bucket, key).decode("utf-8")))
    return {row["uri"].rsplit("/", 1)[-1]: (row["reason"], row["detail"]) for row in rows}


def project_tasks(ls: LabelStudioClient, project_id: int) -> list[dict[str, Any]]:
    response = ls._request(
        "GET", "/api/tasks", "list", params={"project": project_id, "page_size": 100, "resolve_uri": "false"}
    )
    return response.json()["tasks"]


@pytest.fixture
def hostile_bucket(object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str) -> Iterator[str]:
    """A source bucket (state under its own prefix); afterwards its objects and the tests' projects are removed."""
    bucket = f"{unique_name}-hostile"
    object_store.ensure_bucket(bucket)
    yield bucket
    for title in (f"bombs {bucket}", f"texts {bucket}"):
        project_id = label_studio.find_project(title)
        if project_id:
            label_studio.delete_project(project_id)
    index_key = getattr(
        labelflow.tasks.ingest, "state_index_key", None
    )  # the registry of custom state locations, if any
    for kind in ("bombs", "texts"):
        if index_key is not None:
            object_store.delete("labelflow-state", index_key(S3Location(bucket=bucket, prefix=f"state/{kind}")))
    for item in list(object_store.list_objects(bucket)):
        object_store.delete(bucket, item.key)
    object_store._client.delete_bucket(Bucket=bucket)


def test_a_decompression_bomb_is_quarantined_too_large_and_never_becomes_a_task(
    object_store: ObjectStore, label_studio: LabelStudioClient, hostile_bucket: str, tmp_path: Path, prefect_api: str
) -> None:
    object_store.put_bytes(hostile_bucket, "in/bomb.png", png_bomb(18000, 18000))  # 324 MP in a few KB
    object_store.put_bytes(hostile_bucket, "in/fine.png", small_png())
    summary = run_ingest(
        tmp_path,
        {
            "name": f"bombs {hostile_bucket}",
            "source": f"s3://{hostile_bucket}/in/",
            "state": f"s3://{hostile_bucket}/state/bombs/",
            "task": "image-classification",
            "labels": ["cat", "dog"],
        },
    )
    assert summary["tasks_created"] == 1 and summary["quarantined_by_reason"] == {"too_large": 1}, summary
    report = quarantine_rows(object_store, summary["quarantine_report"])
    assert report == {
        "bomb.png": ("too_large", "18000x18000 = 324 MP exceeds ingest.max_image_pixels (100 MP)"),
    }
    assert [t["data"]["source_key"] for t in project_tasks(label_studio, summary["project_id"])] == ["in/fine.png"]


def test_texts_with_a_late_nul_or_late_control_characters_are_quarantined(
    object_store: ObjectStore, label_studio: LabelStudioClient, hostile_bucket: str, tmp_path: Path, prefect_api: str
) -> None:
    opening = "A perfectly ordinary review. " * 400  # 11,600 characters: past the old 8 KB and 4,096 samples
    object_store.put_bytes(hostile_bucket, "in/late-nul.txt", (opening + "\x00 and then more words").encode())
    object_store.put_bytes(hostile_bucket, "in/late-control.txt", (opening + "\x01\x02\x1b\x7f" * 30_000).encode())
    object_store.put_bytes(hostile_bucket, "in/fine.txt", ("数据标注 👍🏽\tfine\n" * 2000).encode())
    summary = run_ingest(
        tmp_path,
        {
            "name": f"texts {hostile_bucket}",
            "source": f"s3://{hostile_bucket}/in/",
            "state": f"s3://{hostile_bucket}/state/texts/",
            "task": "text-classification",
            "labels": ["good", "bad"],
        },
    )
    assert summary["tasks_created"] == 1 and summary["quarantined_by_reason"] == {"undecodable_text": 2}, summary
    report = quarantine_rows(object_store, summary["quarantine_report"])
    assert set(report) == {"late-nul.txt", "late-control.txt"}
    assert "NUL" in report["late-nul.txt"][1]
    assert "control characters" in report["late-control.txt"][1]
    tasks_created = project_tasks(label_studio, summary["project_id"])
    assert [t["data"]["source_key"] for t in tasks_created] == ["in/fine.txt"]
    assert "\x00" not in tasks_created[0]["data"]["text"]
