"""Ingest of files of records: 100,000 records in 10 JSONL files, next to one-object-per-text ingest and Label
Studio's own S3 sync of the same records as JSON task files. Prints figures.

Run against the local stack (`labelflow up` first):
    uv run python bench/ingest_records_bench.py                         # 100,000 records in 10 files
    uv run python bench/ingest_records_bench.py --records 10000 --objects 2000   # a quick pass
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest_bench import SENTENCES, line, run_ingest, upload  # noqa: E402
from labelflow.integrations.resources import Resources  # noqa: E402

CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    '<Choice value="positive"/><Choice value="negative"/><Choice value="neutral"/></Choices></View>'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--objects", type=int, default=10_000, help="texts as one object each, for the per-object rate")
    parser.add_argument("--append", type=int, default=1_000, help="records appended to one file for the re-run")
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "true")

    resources = Resources.from_settings()
    store, ls = resources.store, resources.label_studio_client
    run = uuid.uuid4().hex[:8]
    bucket, state = f"bench-rec-{run}", f"bench-rec-{run}-state"
    store.ensure_bucket(bucket)
    workdir = Path(tempfile.mkdtemp(prefix="labelflow-bench-"))
    print(f"labelflow record-file ingest benchmark (run {run}, bucket {bucket})\n")

    per_file = args.records // args.files
    records = [
        {"id": f"r{i}", "review": {"body": f"{SENTENCES[i % 5]} #{i}"}, "stars": i % 5 + 1}
        for i in range(per_file * args.files)
    ]
    files = [
        (
            f"records/part-{f:03d}.jsonl",
            "".join(
                json.dumps(r, ensure_ascii=False) + "\n" for r in records[f * per_file : (f + 1) * per_file]
            ).encode(),
        )
        for f in range(args.files)
    ]
    size = sum(len(data) for _, data in files)
    line(
        f"upload {len(records)} records in {args.files} JSONL files",
        f"{upload(store, bucket, files):.1f} s, {size / 1e6:.1f} MB",
    )
    # Label Studio's own path for files of tasks: JSON files of {"data": ...} objects, synced from S3 without blob URLs.
    task_files = [
        (
            f"ls-tasks/part-{f:03d}.json",
            json.dumps(
                [{"data": {"text": r["review"]["body"]}} for r in records[f * per_file : (f + 1) * per_file]],
                ensure_ascii=False,
            ).encode(),
        )
        for f in range(args.files)
    ]
    upload(store, bucket, task_files)
    del task_files

    base = {"labels": ["positive", "negative", "neutral"], "task": "text-classification"}
    spec = {
        **base,
        "name": f"bench records {run}",
        "source": f"s3://{bucket}/records/",
        "state": f"s3://{state}/records/",
        "records": {"format": "jsonl", "fields": {"text": "review.body"}, "id": "id"},
    }
    summary, seconds, peak = run_ingest(spec, workdir)
    assert summary["tasks_created"] == len(records), summary
    line(
        f"labelflow ingest {len(records)} records ({args.files} files)",
        f"{seconds:.1f} s, {len(records) / seconds:.0f} tasks/s, peak RSS {peak:.0f} MB",
    )
    line("  stages (s)", json.dumps(summary["seconds"]))

    project_id = ls.create_project(title=f"bench LS json sync {run}", label_config=CONFIG)
    synced, sync_seconds, status = _sync_task_files(ls, store, bucket, project_id)
    line(
        f"Label Studio S3 sync of the same records as {args.files} JSON task files",
        f"{sync_seconds:.1f} s, {synced} tasks, {synced / sync_seconds:.0f} tasks/s (sync {status})",
    )
    line(
        "  rate labelflow / Label Studio sync",
        f"{(len(records) / seconds) / (synced / sync_seconds):.2f}x (labelflow also dedups, quarantines, records lineage)",
    )

    rerun, rerun_seconds, _ = run_ingest(spec, workdir)
    assert rerun["tasks_created"] == 0 and rerun["new"] == 0, rerun
    line(f"re-run with nothing new over {len(records)} records", f"{rerun_seconds:.1f} s")

    if args.append:
        first = records[:per_file] + [
            {"id": f"a{i}", "review": {"body": f"appended {SENTENCES[i % 5]} #{i}"}} for i in range(args.append)
        ]
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in first).encode()
        store.put_bytes(bucket, "records/part-000.jsonl", data)
        appended, appended_seconds, _ = run_ingest(spec, workdir)
        assert appended["tasks_created"] == args.append and appended["records"]["unchanged"] == per_file, appended
        line(
            f"re-run after {args.append} records appended to one file",
            f"{appended_seconds:.1f} s, {args.append} tasks created",
        )

    if args.objects:
        texts = [(f"objects/{i:06d}.txt", f"{SENTENCES[i % 5]} o{i}".encode()) for i in range(args.objects)]
        upload(store, bucket, texts, workers=32)
        per_object = {
            **base,
            "name": f"bench objects {run}",
            "source": f"s3://{bucket}/objects/",
            "state": f"s3://{state}/objects/",
        }
        summary, object_seconds, object_peak = run_ingest(per_object, workdir)
        assert summary["tasks_created"] == args.objects, summary
        line(
            f"labelflow ingest {args.objects} texts, one object each",
            f"{object_seconds:.1f} s, {args.objects / object_seconds:.0f} tasks/s, peak RSS {object_peak:.0f} MB",
        )
        line(
            "  records vs one object per text",
            f"{(len(records) / seconds) / (args.objects / object_seconds):.1f}x the rate (no GET per text)",
        )


def _sync_task_files(ls, store, bucket: str, project_id: int) -> tuple[int, float, str]:  # type: ignore[no-untyped-def]
    """Label Studio reading JSON task files from S3 itself (use_blob_urls off); returns (tasks, seconds, status)."""
    import time

    storage = ls._request(
        "POST",
        "/api/storages/s3",
        "create storage",
        json={
            "project": project_id,
            "bucket": bucket,
            "prefix": "ls-tasks/",
            "use_blob_urls": False,
            "presign": False,
            "aws_access_key_id": store.settings.access_key,
            "aws_secret_access_key": store.settings.secret_key.get_secret_value(),
            "s3_endpoint": store.settings.endpoint,
            "region_name": store.settings.region,
        },
    ).json()
    began = time.perf_counter()
    ls._request("POST", f"/api/storages/s3/{storage['id']}/sync", "sync", timeout=3600)
    while True:
        status = ls._request("GET", f"/api/storages/s3/{storage['id']}", "status").json().get("status")
        if status in ("completed", "failed"):
            break
        time.sleep(0.2)
    seconds = time.perf_counter() - began
    return ls.count_tasks(project_id), seconds, str(status)


if __name__ == "__main__":
    main()
