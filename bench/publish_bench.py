"""Validate / register / pull benchmark on the local stack (`labelflow up` first). Prints figures.

A synthetic collected batch of N annotation rows (default 1,000,000: 333,333 text tasks x 3 annotations from 40
annotators, with a source ledger) is written to the object store; then each stage runs in its own process, so
each peak RSS is that stage's alone:
1. validation: the Great Expectations gate on the annotation table and the consensus dataset, with the JSON
   result and offline Data Docs written to the object store;
2. registration: dataset files, upload with read-back verification, manifest, MLflow run, ready marker;
3. pull: download and SHA-256 verification of every file.

    uv run python bench/publish_bench.py
    uv run python bench/publish_bench.py --rows 100000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

LABELS = ["positive", "negative", "neutral"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spec_for(name: str):
    from labelflow.tasks.spec import parse_spec

    return parse_spec(
        {
            "name": f"bench {name}",
            "source": f"s3://{name}-src/texts/",
            "state": f"s3://{name}-state/lf/",
            "task": "text-classification",
            "labels": LABELS,
            "overlap": 3,
            "quality": {"min_agreement": 0.3},
            "dataset": {"name": name},
        }
    )


def clients():
    from labelflow.integrations.resources import Resources
    from labelflow.tasks.registry import DatasetRegistry

    resources = Resources.from_settings()
    return resources.store, DatasetRegistry(resources.store, resources.tracking)


def setup(name: str, rows: int) -> str:
    """Write a synthetic collected batch (and the ingest ledger behind it); return the batch URI."""
    from collect_bench import synthetic

    from labelflow.tasks.collect import BatchRecord, write_batch
    from labelflow.tasks.ledger import IngestLedger, LedgerRow
    from labelflow.tasks.quality import judge

    store, _ = clients()
    spec = spec_for(name)
    tasks, annotations, _ = synthetic(rows, annotators=40)
    hashes = np.array([hashlib.sha256(str(i).encode()).hexdigest() for i in tasks["task_id"]], dtype=object)
    keys = np.array([f"texts/{i:07d}.txt" for i in tasks["task_id"]], dtype=object)
    tasks = tasks.assign(
        project_id=1,
        content_sha256=hashes,
        source_uri=[f"s3://{name}-src/{k}" for k in keys],
        text=[f"评论 {i}: a short review text" for i in tasks["task_id"]],
        image_width=None,
        image_height=None,
    )
    by_task = tasks.set_index("task_id")
    annotations = annotations.assign(
        project_id=1,
        source_uri=annotations["task_id"].map(by_task["source_uri"]),
        content_sha256=annotations["task_id"].map(by_task["content_sha256"]),
        created_at=annotations["updated_at"],
        prediction_model_version=None,
        ground_truth=False,
    )
    consensus = judge(tasks, annotations, spec).consensus
    state = spec.state_location
    store.ensure_bucket(state.bucket)
    ledger = IngestLedger(store, state)
    ledger.append(
        LedgerRow(f"{name}-src", k, h[:32], 40, h, "ingested", task_id=int(t))
        for k, h, t in zip(keys, hashes, tasks["task_id"], strict=True)
    )
    batch = f"s3://{state.bucket}/{state.join('collect', 'reports', 'bench')}/"
    location = spec.state_location
    import io

    buffer = io.BytesIO()
    consensus.to_parquet(buffer, index=False)
    store.put_bytes(
        location.bucket, f"{state.join('collect', 'reports', 'bench')}/consensus.parquet", buffer.getvalue()
    )
    record = BatchRecord(
        project_id=1,
        label_studio_url="http://127.0.0.1:8080/projects/1",
        watermark="2026-11-23T00:00:00Z",
        batch_uri=batch,
    )
    write_batch(store, record, tasks, annotations)
    return batch


def stage(kind: str, name: str, batch: str) -> dict[str, float]:
    """One stage, timed from the moment its inputs are in memory (reading the batch is timed separately)."""
    from labelflow.tasks.collect import read_batch

    store, registry = clients()
    spec = spec_for(name)
    figures: dict[str, float] = {}
    if kind == "pull":
        began = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            pulled = registry.pull(name, None, Path(scratch))
            figures["files_mb"] = sum(f["bytes"] for f in pulled.manifest["files"]) / 1e6
        figures["seconds"] = time.perf_counter() - began
        figures["peak_rss_mb"] = peak_rss_mb()
        return figures
    began = time.perf_counter()
    meta, tables = read_batch(store, batch)
    figures["read_batch_seconds"] = time.perf_counter() - began
    if kind == "validate":
        began = time.perf_counter()
        import great_expectations  # noqa: F401  (importing it takes seconds: reported apart)

        from labelflow.integrations.great_expectations import GreatExpectations
        from labelflow.tasks.validate import DEFAULT_EXPECTATIONS_DIR, run_validation

        figures["import_gx_seconds"] = time.perf_counter() - began
        began = time.perf_counter()
        summary = run_validation(
            store,
            spec,
            GreatExpectations(DEFAULT_EXPECTATIONS_DIR),
            tables["annotations"],
            tables["consensus"],
            tables["tasks"],
            f"bench-{uuid.uuid4().hex[:6]}",
        )
        figures["seconds"] = time.perf_counter() - began
        figures["expectations"] = summary.evaluated
        figures["failed"] = len(summary.failed)
        figures["annotation_rows"] = summary.rows["annotations"]
        figures["consensus_rows"] = summary.rows["consensus"]
        Path(tempfile.gettempdir(), f"{name}-validation.json").write_text(json.dumps(summary.as_dict(), default=str))
    else:
        from labelflow.tasks.collect import BatchRecord, BatchTables
        from labelflow.tasks.publish import publish_dataset
        from labelflow.tasks.validate import ValidationSummary

        # Validation ran in another process: its summary comes from the file it left.
        summary = ValidationSummary(**json.loads(Path(tempfile.gettempdir(), f"{name}-validation.json").read_text()))
        began = time.perf_counter()
        result = publish_dataset(store, registry, spec, BatchTables(**tables), BatchRecord.from_dict(meta), summary)
        figures["seconds"] = time.perf_counter() - began
        figures["version"] = result.version
        figures["rows"] = result.rows
    figures["peak_rss_mb"] = peak_rss_mb()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stage", choices=["setup", "validate", "register", "pull"], help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--batch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "setup":
        print(json.dumps({"batch": setup(args.name, args.rows)}))
        return
    if args.stage:
        print(json.dumps(stage(args.stage, args.name, args.batch)))
        return
    name = f"bench-{uuid.uuid4().hex[:8]}"

    def child(*extra: str) -> dict:
        began = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--name", name, "--rows", str(args.rows), *extra],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["process_wall_seconds"] = time.perf_counter() - began
        return result

    print(f"== {args.rows:,} annotation rows, dataset {name} ==")
    batch = child("--stage", "setup")["batch"]
    for kind in ("validate", "register", "pull"):
        figures = child("--stage", kind, "--batch", batch)
        print(
            json.dumps({"stage": kind, **{k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}})
        )


if __name__ == "__main__":
    main()
