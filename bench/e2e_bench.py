"""End-to-end benchmark on the local stack (`labelflow up` first). Prints figures.

1. A fresh text project of N tasks (default 10,000) and 3 simulated annotators, from upload to published dataset:
   wall time and peak memory (RSS of this process, which runs the flows) per stage.
2. The steady-state cycle on top of it: 100 new objects -> ingest, 300 new annotations -> collect + validate +
   register, which should cost in proportion to the new work, not to the project's history.

    uv run python bench/e2e_bench.py                          # 10,000 tasks: 38 min, 37 of them annotating at ~13.5/s
    uv run python bench/e2e_bench.py --tasks 1000             # the same, smaller
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = ["positive", "negative", "neutral"]
ANNOTATORS = [0.95, 0.85, 0.65]


@contextmanager
def measured(figures: dict[str, dict[str, float]], stage: str) -> Iterator[None]:
    """Wall time and peak RSS (sampled every 0.1 s) of this process during one stage."""
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
        figures[stage] = {"seconds": time.perf_counter() - began, "peak_rss_mb": peak[0] / 2**20}
        print(f"  {stage:<45} {figures[stage]['seconds']:8.1f} s  {figures[stage]['peak_rss_mb']:7.0f} MB", flush=True)


def upload(store: Any, bucket: str, start: int, count: int) -> None:
    """`count` short reviews under texts/<label>/ (the folder is the truth the simulator reads)."""

    def put(i: int) -> None:
        label = LABELS[i % len(LABELS)]
        text = f"评论 {i}: the product was {label} {random.Random(i).random():.6f}"
        store.put_bytes(bucket, f"texts/{label}/{i:06d}.txt", text.encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(start, start + count)))


def run_bench(tasks: int, new_objects: int, workers: int) -> dict[str, dict[str, float]]:
    from labelflow.flows.collect import collect
    from labelflow.flows.ingest import ingest
    from labelflow.flows.simulate import simulate_annotations
    from labelflow.integrations.resources import Resources
    from labelflow.tasks.simulate import build_annotators
    from labelflow.tasks.spec import load_spec

    resources = Resources.from_settings(label_studio_timeout=3600)
    store, ls = resources.store, resources.label_studio_client
    name = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(name)
    spec_path = Path(f"/tmp/{name}.yaml")
    body = {
        "name": name,
        "source": f"s3://{name}/texts/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": len(ANNOTATORS),
        "quality": {"aggregation": "dawid-skene", "route_low_agreement": False},
        "dataset": {"name": name},
    }
    spec_path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    spec = load_spec(spec_path)
    people = build_annotators(ANNOTATORS, 0)
    pattern = r"/texts/(?P<label>[a-z]+)/"
    figures: dict[str, dict[str, float]] = {}

    def annotate(limit: int | None = None) -> Callable[[], dict[str, Any]]:
        return lambda: simulate_annotations(resources, spec, people, None, pattern, None, limit, 0, workers)[1]

    print(f"project {name}: {tasks} text tasks x {len(ANNOTATORS)} simulated annotators")
    with measured(figures, f"upload {tasks} objects"):
        upload(store, name, 0, tasks)
    with measured(figures, "ingest (clean, dedupe, create tasks)"):
        created = ingest(str(spec_path))["tasks_created"]
    with measured(figures, f"annotate ({tasks * len(ANNOTATORS)} annotations via API)"):
        annotated = annotate()()["annotations_created"]
    with measured(figures, "collect + judge + validate + register"):
        first = collect(str(spec_path))
    total = sum(v["seconds"] for v in figures.values())
    print(
        f"  {'upload -> published, total':<45} {total:8.1f} s  (tasks {created}, annotations {annotated}, "
        f"published version {first['dataset'].get('version')}: {first['dataset'].get('rows')} rows)"
    )

    print(f"steady state on top of {tasks}: {new_objects} new objects, {new_objects * len(ANNOTATORS)} annotations")
    with measured(figures, f"upload {new_objects} new objects"):
        upload(store, name, tasks, new_objects)
    with measured(figures, f"ingest {new_objects} new (history {tasks})"):
        new_tasks = ingest(str(spec_path))["tasks_created"]
    with measured(figures, f"annotate {new_objects * len(ANNOTATORS)} new"):
        annotate()()
    with measured(figures, f"collect {new_objects * len(ANNOTATORS)} new + validate + register"):
        second = collect(str(spec_path))
    print(
        f"  new tasks {new_tasks}; collection {second['collection']['mode']}: "
        f"{second['collection']['changed_tasks']} changed tasks; version {second['dataset'].get('version')}"
    )
    ls.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--new-objects", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4, help="concurrent annotation requests")
    args = parser.parse_args()
    from labelflow.runtime import prefect_connection

    with prefect_connection():
        run_bench(args.tasks, args.new_objects, args.workers)


if __name__ == "__main__":
    main()
