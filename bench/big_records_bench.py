"""Ingest of one 2 GB JSONL file of long records (documents of about 100 KB each) into Label Studio: time and
peak RSS of the whole ingest process, which streams the file and imports it in bounded chunks. Prints figures.

Run against the local stack (`labelflow up` first; Label Studio's database grows by the file's size):
    uv run python bench/big_records_bench.py              # 2 GB: 20,000 records of 100 KB
    uv run python bench/big_records_bench.py --gb 0.2     # a quick pass
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest_bench import SENTENCES, line, run_ingest  # noqa: E402
from labelflow.integrations.resources import Resources  # noqa: E402


def write_file(path: Path, gigabytes: float, record_chars: int) -> tuple[int, int]:
    """A JSONL file of unique long records; returns (records, bytes)."""
    rng = random.Random(0)
    target = int(gigabytes * 1e9)
    written = records = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < target:
            words: list[str] = []
            size = 0
            while size < record_chars:
                sentence = SENTENCES[rng.randrange(len(SENTENCES))]
                words.append(sentence)
                size += len(sentence) + 1
            text = f"document {records}: " + " ".join(words)
            row = json.dumps({"id": f"d{records}", "body": text}, ensure_ascii=False) + "\n"
            handle.write(row)
            written += len(row.encode("utf-8"))
            records += 1
    return records, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--record-chars", type=int, default=100_000)
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "true")

    store = Resources.from_settings().store
    run = uuid.uuid4().hex[:8]
    bucket, state = f"bench-big-{run}", f"bench-big-{run}-state"
    store.ensure_bucket(bucket)
    workdir = Path(tempfile.mkdtemp(prefix="labelflow-bench-"))
    print(f"labelflow long-record ingest benchmark (run {run}, bucket {bucket})\n")
    path = workdir / "documents.jsonl"
    began = time.perf_counter()
    records, size = write_file(path, args.gb, args.record_chars)
    line(
        f"write {records} records of ~{args.record_chars // 1000} KB",
        f"{size / 1e9:.2f} GB in {time.perf_counter() - began:.1f} s",
    )
    began = time.perf_counter()
    store.upload_file(bucket, "docs/documents.jsonl", path)
    line("upload (multipart)", f"{time.perf_counter() - began:.1f} s")
    path.unlink()

    spec = {
        "name": f"bench big records {run}",
        "source": f"s3://{bucket}/docs/",
        "state": f"s3://{state}/docs/",
        "task": "text-classification",
        "labels": ["relevant", "irrelevant"],
        "records": {"format": "jsonl", "fields": {"text": "body"}, "id": "id", "max_chars": 2 * args.record_chars},
    }
    summary, seconds, peak = run_ingest(spec, workdir)
    assert summary["tasks_created"] == records, summary
    line(
        f"labelflow ingest of the {size / 1e9:.2f} GB file ({records} tasks)",
        f"{seconds:.1f} s, {size / 1e6 / seconds:.1f} MB/s, peak RSS {peak:.0f} MB",
    )
    line("  stages (s)", json.dumps(summary["seconds"]))
    rerun, rerun_seconds, rerun_peak = run_ingest(spec, workdir)
    assert rerun["tasks_created"] == 0
    line("re-run with nothing new", f"{rerun_seconds:.1f} s, peak RSS {rerun_peak:.0f} MB")


if __name__ == "__main__":
    main()
