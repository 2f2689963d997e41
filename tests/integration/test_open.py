"""`labelflow open` against the real stack after a real ingest, annotation and collect: the quality report and the
Data Docs copied into a local cache (a second call fetches nothing, a new run only what changed), the Label Studio
project and the MLflow run of the published version; `--browser` hands the URL to the configured browser."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from typer.testing import CliRunner

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_links import version_run_url
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.links import MIRROR_MANIFEST
from labelflow.tasks.registry import DatasetRegistry
from tests.conftest import RunningStack
from tests.integration.test_publish import annotate, collect, text_project

ROOT = Path(__file__).resolve().parents[2]


def open_json(spec: Path, target: str, cache: Path) -> dict[str, Any]:
    """`labelflow open SPEC TARGET --json --cache CACHE`, in this process: the printed JSON object."""
    from labelflow.cli import app

    result = CliRunner().invoke(app, ["open", str(spec), target, "--json", "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def copied_files(folder: Path) -> dict[str, int]:
    """Each file of a local copy and its modification time (ns)."""
    return {
        p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and p.name != MIRROR_MANIFEST
    }


def test_open_gives_the_report_docs_project_and_dataset_of_a_collected_project(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    local_stack: RunningStack,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    path, spec = text_project(object_store, tmp_path, unique_name, 6)
    annotate(label_studio, object_store, spec, unique_name)
    first = collect(path)
    assert first["dataset"]["published"] and first["validation"]["success"]
    cache = tmp_path / "cache"

    # The report: the collect run's folder, copied without its parquet table; the page names the project.
    report = open_json(path, "report", cache)
    assert report["source"] == first["report"] and report["url"] == Path(report["path"]).as_uri()
    page = Path(report["path"])
    assert page.name == "report.html" and page.parent == cache / "reports" / spec.slug
    assert spec.name in page.read_text(encoding="utf-8")
    assert {"metrics.json", "annotators.csv", "report.html"} <= set(copied_files(page.parent))
    assert not list(page.parent.glob("*.parquet"))

    # The Data Docs: the whole tree of the same run, every file of it, then nothing more on a second call.
    docs = open_json(path, "docs", cache)
    assert docs["source"] == first["validation"]["docs_uri"] and docs["run"] == report["run"]
    index = Path(docs["path"])
    assert index == cache / "docs" / spec.slug / "index.html" and "<html" in index.read_text("utf-8").lower()
    bucket, prefix = docs["source"].removeprefix("s3://").split("/", 1)
    stored = {o.key.removeprefix(prefix) for o in object_store.list_objects(bucket, prefix)}
    before = copied_files(index.parent)
    assert set(before) == stored and len(stored) > 20
    assert (docs["downloaded"], docs["unchanged"]) == (len(stored), 0)
    again = open_json(path, "docs", cache)
    assert (again["downloaded"], again["unchanged"], again["removed"]) == (0, len(stored), 0)
    assert copied_files(index.parent) == before  # not one file written again

    # The Label Studio project: the page of the project ingest created, which Label Studio still has.
    project = open_json(path, "project", cache)
    assert project["url"] == first["label_studio_url"]
    assert label_studio.get_project(first["project_id"])["title"] == spec.name  # type: ignore[index]

    # The dataset: the MLflow run of version 1, on the tracking server the stack runs.
    dataset = open_json(path, "dataset", cache)
    version = DatasetRegistry(object_store, mlflow_tracking).resolve(unique_name)
    tracking_uri = local_stack.mlflow.tracking_uri
    assert dataset["run"] == "1" and dataset["source"] == version.location
    # The same link the collect summary printed: the run's page in the runs table's navigation.
    assert dataset["url"] == version_run_url(tracking_uri, version.experiment_id, version.run_id)
    assert dataset["url"] == first["dataset"]["mlflow_url"]
    served = requests.get(f"{tracking_uri}/api/2.0/mlflow/runs/get", params={"run_id": version.run_id}, timeout=30)
    assert served.ok and served.json()["run"]["info"]["experiment_id"] == version.experiment_id

    # A new collect run: its Data Docs replace the copy, fetching only the files that differ (the run's pages),
    # not the static assets every run shares; the old run's pages are removed.
    second = collect(path)
    newer = open_json(path, "docs", cache)
    assert newer["run"] != docs["run"] and newer["source"] == second["validation"]["docs_uri"]
    after = copied_files(index.parent)
    bucket, prefix = newer["source"].removeprefix("s3://").split("/", 1)
    assert set(after) == {o.key.removeprefix(prefix) for o in object_store.list_objects(bucket, prefix)}
    assert 0 < newer["downloaded"] < len(after) and newer["unchanged"] > 0
    rewritten = {name for name in after if before.get(name) != after[name]}
    assert len(rewritten) == newer["downloaded"] and "index.html" in rewritten
    assert not any(name.startswith("static/") for name in rewritten)


def test_open_with_browser_hands_the_url_to_the_browser_and_quarantine_copies_the_ingest_report(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.ingest import ingest

    path, spec = text_project(object_store, tmp_path, unique_name, 3)
    object_store.put_bytes(f"{unique_name}-src", "reviews/positive/empty.txt", b"")
    ingested = ingest(str(path))
    assert ingested["tasks_created"] == 0 and ingested["quarantined_by_reason"] == {"empty": 1}
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}\n', encoding="utf-8")
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    done = subprocess.run(
        [sys.executable, "-m", "labelflow.cli", "open", str(path), "project", "--browser"],
        cwd=ROOT,
        env={**os.environ, "BROWSER": str(browser)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    assert done.stdout.count("\n") == 1 and url.startswith(f"{label_studio.settings.base_url}/projects/")
    assert opened.read_text(encoding="utf-8") == url

    # The quarantine report of that ingest, copied next to the others: the empty object and why.
    quarantine = open_json(path, "quarantine", tmp_path / "cache")
    assert Path(quarantine["path"]) == tmp_path / "cache" / "quarantine" / spec.slug / "quarantine.csv"
    assert quarantine["source"] == ingested["quarantine_report"].removesuffix("quarantine.csv")
    rows = Path(quarantine["path"]).read_text("utf-8").splitlines()
    assert rows[0].startswith("uri,reason,") and len(rows) == 2
    assert rows[1].startswith(f"s3://{unique_name}-src/reviews/positive/empty.txt,empty,")

    done = subprocess.run(
        [sys.executable, "-m", "labelflow.cli", "open", str(path), "report"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"open: no quality report yet for {'publish ' + unique_name!r}: run `labelflow collect {path}` first "
        f"(nothing under s3://{unique_name}-state/labelflow/collect/reports/)"
    ]
