"""Event-driven ingest benchmark: one new object in a 100,000-object source, found by its event's key, against the
scheduled run that lists the whole source. Prints figures.

Run against a running stack (`labelflow up` first; for the test stack, LABELFLOW_HOME=.labelflow-test and
LABELFLOW_STACK_*_PORT at the default ports + 100):
    uv run python bench/event_ingest_bench.py                    # 100,000 objects, ingested once, then timed runs
    uv run python bench/event_ingest_bench.py --objects 5000     # a quick pass
    uv run python bench/event_ingest_bench.py --reuse RUN        # time again over the source an earlier run built
    uv run python bench/event_ingest_bench.py --seed-ledger      # record the objects in the ledger directly

By default the source is ingested once for real (`labelflow ingest`, about an hour for 100,000 objects on a busy
2-core machine). `--seed-ledger` instead writes the ledger rows that ingest would have written (in parts of
ingest.chunk_objects rows, as ingest writes them) without creating the Label Studio tasks: the timed runs read the
same ledger and list the same source, so their figures are the same, and the set-up takes minutes.

Each timed run is the ingest flow called in a fresh process, as a worker runs a deployment: "run" is the flow call
(the Prefect flow run, from its start to its summary), "process" adds starting Python and importing labelflow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest_bench import SENTENCES, line, run_cli, upload  # noqa: E402
from labelflow.integrations.object_store import ObjectStore  # noqa: E402
from labelflow.integrations.resources import Resources  # noqa: E402
from labelflow.tasks.ledger import IngestLedger, LedgerRow  # noqa: E402
from labelflow.tasks.spec import parse_spec  # noqa: E402

# The flow called in a fresh process; prints one JSON line: the flow call's seconds and its summary.
TIMED_RUN = """
import json, sys, time
from labelflow.runtime import prefect_connection
with prefect_connection():
    from labelflow.flows.ingest import ingest
    keys = json.loads(sys.argv[2])
    began = time.perf_counter()
    summary = ingest(sys.argv[1], keys=keys)
    seconds = time.perf_counter() - began
print("RESULT " + json.dumps({"seconds": seconds, "summary": summary}))
"""


def timed_run(spec_path: Path, keys: list[str] | None) -> tuple[float, float, dict[str, Any]]:
    """Run the ingest flow (given `keys`, or listing) in a new process; returns (run s, process s, summary)."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", TIMED_RUN, str(spec_path), json.dumps(keys)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    process_seconds = time.perf_counter() - began
    results = [row for row in done.stdout.splitlines() if row.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        said = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"ingest failed (exit {done.returncode}): {' | '.join(said)}")
    result = json.loads(results[-1].removeprefix("RESULT "))
    return result["seconds"], process_seconds, result["summary"]


def seed_ledger(store: ObjectStore, spec: dict[str, Any], objects: list[tuple[str, bytes]]) -> float:
    """Record the objects as ingested, part by part as ingest records them; returns seconds."""
    began = time.perf_counter()
    project = parse_spec(spec)
    bucket = project.sources[0].bucket
    sample_key, sample = objects[0]
    stored = store.head(bucket, sample_key)
    assert stored is not None and stored.etag == hashlib.md5(sample).hexdigest(), "ETags are not the content's MD5"
    ledger = IngestLedger(store, project.state_location)
    store.ensure_bucket(project.state_location.bucket)
    part = project.ingest.chunk_objects
    for start in range(0, len(objects), part):
        rows = [
            LedgerRow(
                bucket=bucket,
                key=key,
                etag=hashlib.md5(data).hexdigest(),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                status="ingested",
                task_id=1_000_000 + start + offset,
            )
            for offset, (key, data) in enumerate(objects[start : start + part])
        ]
        ledger.append(rows)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=100_000, help="objects in the source")
    parser.add_argument("--events", type=int, default=3, help="runs given one new key each")
    parser.add_argument("--listings", type=int, default=2, help="scheduled runs with nothing new (full listing)")
    parser.add_argument("--reuse", metavar="RUN", help="the run id of an earlier invocation whose source to reuse")
    parser.add_argument("--seed-ledger", action="store_true", help="record the objects in the ledger, not ingest them")
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "true")

    store = Resources.from_settings().store
    run = args.reuse or uuid.uuid4().hex[:8]
    bucket, state = f"bench-event-{run}", f"bench-event-{run}-state"
    workdir = Path(tempfile.gettempdir()) / f"labelflow-event-bench-{run}"
    workdir.mkdir(exist_ok=True)
    spec_path = workdir / "spec.yaml"
    spec = {
        "name": f"bench events {run}",
        "source": f"s3://{bucket}/large/",
        "task": "text-classification",
        "labels": ["positive", "negative", "neutral"],
        "state": f"s3://{state}/large/",
        "ingest": {"batch_size": 500},
    }
    spec_path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    print(f"labelflow event-driven ingest benchmark (run {run}, source s3://{bucket}/large/)\n")

    if not args.reuse:
        store.ensure_bucket(bucket)
        objects = [(f"large/{i:07d}.txt", f"{SENTENCES[i % 5]} n={i}".encode()) for i in range(args.objects)]
        line(f"upload {args.objects} small texts", f"{upload(store, bucket, objects, workers=32):.1f} s")
        if args.seed_ledger:
            line(f"ledger seeded with {args.objects} ingested objects", f"{seed_ledger(store, spec, objects):.1f} s")
        else:
            summary, seconds, _ = run_cli("ingest", spec_path)
            assert summary["tasks_created"] == args.objects, summary
            line(f"first ingest of {args.objects} objects", f"{seconds:.1f} s ({args.objects / seconds:.0f} tasks/s)")
        del objects

    listing_runs = []
    for _ in range(args.listings):
        seconds, process, summary = timed_run(spec_path, None)
        assert summary["tasks_created"] == 0 and summary["listed"] >= args.objects, summary
        listing_runs.append(seconds)
        line(
            f"(a) scheduled run, nothing new, listing {summary['listed']}",
            f"run {seconds:.2f} s, process {process:.2f} s",
        )
        line("    stages (s)", json.dumps(summary["seconds"]))

    event_runs = []
    for _ in range(args.events):
        key = f"large/event-{uuid.uuid4().hex[:8]}.txt"
        store.put_bytes(bucket, key, f"a review its upload event names ({key})".encode())
        seconds, process, summary = timed_run(spec_path, [f"s3://{bucket}/{key}"])
        assert summary["listed"] == 0 and summary["checked"] == 1 and summary["tasks_created"] == 1, summary
        event_runs.append(seconds)
        line(
            f"(b) event run, keys=[1 new key]: listed {summary['listed']}, checked {summary['checked']}",
            f"run {seconds:.2f} s, process {process:.2f} s, {summary['tasks_created']} task created",
        )
        line("    stages (s)", json.dumps(summary["seconds"]))

    print()
    line("median (a) scheduled run with full listing", f"{statistics.median(listing_runs):.2f} s")
    line("median (b) run given the one new key", f"{statistics.median(event_runs):.2f} s (goal: within 5 s)")
    print(f"\nreuse this source: python bench/event_ingest_bench.py --reuse {run}")


if __name__ == "__main__":
    main()
