"""Collect and judge benchmark. Prints figures.

1. `collect`: a Label Studio project of N tasks x 3 annotations (default 10,000), on the local stack
   (`labelflow up` first): labelflow's first (full) collection side by side with Label Studio's quick JSON export
   of the same project in the same run, then 100 new annotations and the incremental collection.
2. `judge`: agreement + consensus (majority and Dawid-Skene) on 1,000,000 annotation rows: wall time, peak RSS.
3. `consensus`: Dawid-Skene vs majority vote against the known truth, 3-5 simulated annotators of mixed quality.

    uv run python bench/collect_bench.py                    # all three
    uv run python bench/collect_bench.py --only judge --rows 200000
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = ["positive", "negative", "neutral"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_collect(tasks: int, incremental: int) -> dict[str, float]:
    """Full and incremental collection of a tasks x 3 project vs Label Studio's quick export."""
    import hashlib

    from labelflow.integrations.resources import Resources
    from labelflow.runtime import prefect_connection
    from labelflow.tasks.spec import parse_spec
    from labelflow.tasks.task_types.classification import choice_result

    resources = Resources.from_settings(label_studio_timeout=1800)
    ls, store = resources.label_studio_client, resources.store
    name = f"bench-collect-{uuid.uuid4().hex[:8]}"
    body = {
        "name": name,
        "source": f"s3://{name}/texts/",
        "state": f"s3://{name}-state/labelflow/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 3,
        "quality": {"aggregation": "dawid-skene", "route_low_agreement": False},
    }
    spec = parse_spec(body)
    spec_path = Path(f"/tmp/{name}.yaml")
    spec_path.write_text(yaml.safe_dump(body))
    from labelflow.tasks.label_config import build_label_config

    project_id = ls.create_project(name, build_label_config(spec), maximum_annotations=3)
    store.ensure_bucket(f"{name}-state")
    store.put_bytes(
        f"{name}-state", "labelflow/project.json", json.dumps({"project_id": project_id}).encode(), "application/json"
    )
    users = [ls.create_user(f"{name}-{i}@bench.local") for i in range(4)]
    rng = random.Random(0)
    began = time.perf_counter()
    for start in range(0, tasks, 500):
        batch = []
        for i in range(start, min(tasks, start + 500)):
            text = f"review {i}: {rng.random()}"
            truth = LABELS[i % 3]
            batch.append(
                {
                    "data": {
                        "text": text,
                        "source_uri": f"s3://{name}/texts/{truth}/{i}.txt",
                        "content_sha256": hashlib.sha256(text.encode()).hexdigest(),
                    },
                    "annotations": [
                        {
                            "completed_by": user,
                            "lead_time": rng.uniform(2, 20),
                            "result": choice_result(
                                "label", "text", truth if rng.random() < 0.8 else rng.choice(LABELS)
                            ),
                        }
                        for user in users[:3]
                    ],
                }
            )
        ls.import_tasks(project_id, batch)
    print(f"setup: {tasks} tasks x 3 annotations imported in {time.perf_counter() - began:.1f} s")

    figures: dict[str, float] = {}
    began = time.perf_counter()
    exported = ls.quick_export(project_id)
    figures["label_studio_quick_export_s"] = time.perf_counter() - began
    assert len(exported) == tasks
    del exported
    with prefect_connection():
        from labelflow.flows.collect import collect_annotations

        began = time.perf_counter()
        first = collect_annotations(str(spec_path))
        figures["first_collection_flow_s"] = time.perf_counter() - began
        figures["first_collection_fetch_and_store_s"] = sum(first["collection"]["seconds"].values())
        assert first["collection"]["annotation_rows"] == tasks * 3, first["collection"]
        ids = ls.task_ids(project_id)[:incremental]
        # The first incremental run re-reads the bulk import: it is inside the safety window of the last read.

        def annotate(task_id: int) -> None:
            ls.create_annotation(task_id, choice_result("label", "text", "neutral"), users[3], 4.0)

        began = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(annotate, ids))
        print(f"setup: {len(ids)} new annotations through the API in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        second = collect_annotations(str(spec_path))
        figures["incremental_collection_flow_s"] = time.perf_counter() - began
        figures["incremental_collection_fetch_and_store_s"] = sum(second["collection"]["seconds"].values())
        assert second["collection"]["changed_tasks"] == len(ids), second["collection"]
        # Steady state: once a collection has run more than the window after the bulk change, the bulk is no
        # longer re-read; another 100 annotations cost only the tasks touched inside the window.
        time.sleep(spec.collect.window_seconds)
        collect_annotations(str(spec_path))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(annotate, ls.task_ids(project_id)[incremental : 2 * incremental]))
        began = time.perf_counter()
        third = collect_annotations(str(spec_path))
        figures["steady_state_incremental_flow_s"] = time.perf_counter() - began
        figures["steady_state_incremental_fetch_and_store_s"] = sum(third["collection"]["seconds"].values())
        figures["steady_state_tasks_read"] = float(third["collection"]["exported_tasks"])
    figures["ratio_first_collection_fetch_and_store_vs_quick_export"] = (
        figures["first_collection_fetch_and_store_s"] / figures["label_studio_quick_export_s"]
    )
    figures["ratio_first_collection_flow_vs_quick_export"] = (
        figures["first_collection_flow_s"] / figures["label_studio_quick_export_s"]
    )
    return figures


def synthetic(rows: int, annotators: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Task and annotation frames (the collected schema) with 3 votes per task from annotators of mixed accuracy."""
    rng = np.random.default_rng(seed)
    n_tasks = rows // 3
    truth = rng.integers(0, 3, n_tasks)
    accuracy = rng.uniform(0.55, 0.97, annotators)
    who = np.stack([rng.choice(annotators, 3, replace=False) for _ in range(min(n_tasks, 5000))])
    who = who[rng.integers(0, len(who), n_tasks)]  # reuse assignment patterns: fast to generate
    correct = rng.random((n_tasks, 3)) < accuracy[who]
    wrong = (truth[:, None] + rng.integers(1, 3, (n_tasks, 3))) % 3
    given = np.where(correct, truth[:, None], wrong)
    task_ids = np.arange(1, n_tasks + 1)
    labels = np.array(LABELS, dtype=object)
    annotations = pd.DataFrame(
        {
            "task_id": np.repeat(task_ids, 3),
            "annotation_id": np.arange(1, n_tasks * 3 + 1),
            "annotator_id": who.ravel().astype(np.int64),
            "annotator_email": pd.Series(who.ravel()).map(lambda a: f"a{a}@x").to_numpy(),
            "label": labels[given.ravel()],
            "regions": None,
            "problem": None,
            "lead_time_seconds": rng.uniform(1, 30, n_tasks * 3),
            "updated_at": pd.Timestamp("2026-11-23", tz="UTC"),
        }
    )
    tasks = pd.DataFrame(
        {
            "task_id": task_ids,
            "source_uri": [f"s3://b/{i}" for i in task_ids],
            "content_sha256": [f"h{i}" for i in task_ids],
            "overlap": 3,
            "deleted": False,
        }
    )
    return tasks, annotations, labels[truth]


def bench_judge(rows: int, aggregation: str) -> dict[str, float]:
    """Agreement + consensus + annotator scores on `rows` annotation rows (run in a fresh process for peak RSS)."""
    from labelflow.tasks.quality import judge
    from labelflow.tasks.spec import parse_spec

    tasks, annotations, _ = synthetic(rows, annotators=40)
    before = peak_rss_mb()
    spec = parse_spec(
        {"name": "b", "source": "s3://bench/texts/", "task": "text-classification", "labels": LABELS, "overlap": 3,
         "quality": {"aggregation": aggregation}}
    )  # fmt: skip
    began = time.perf_counter()
    report = judge(tasks, annotations, spec)
    seconds = time.perf_counter() - began
    return {
        "rows": float(len(annotations)),
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_judge_mb": before,
        "alpha": report.metrics["krippendorff_alpha"],
    }


def bench_consensus(items: int, repeats: int) -> list[dict[str, object]]:
    """Accuracy of Dawid-Skene and majority vote against the truth, for 3-5 annotators of mixed quality."""
    from labelflow.tasks.consensus import dawid_skene, majority_vote
    from labelflow.tasks.simulate import simulated_votes

    setups = {
        "3 annotators 0.9/0.75/0.6": [0.9, 0.75, 0.6],
        "4 annotators 0.95/0.8/0.6 + spammer": [0.95, 0.8, 0.6, None],
        "5 annotators 0.9/0.7/0.6/0.55 + spammer": [0.9, 0.7, 0.6, 0.55, None],
        "5 annotators 0.85/0.8/0.75/0.7/0.65": [0.85, 0.8, 0.75, 0.7, 0.65],
    }
    results = []
    for name, accuracies in setups.items():
        mv_scores, ds_scores = [], []
        for seed in range(repeats):
            votes, truth = simulated_votes(items, accuracies, LABELS, seed)
            truth_array = np.array(truth)
            mv_scores.append(np.mean(np.array(majority_vote(votes, LABELS, "random").labels) == truth_array))
            ds_scores.append(np.mean(np.array(dawid_skene(votes, LABELS, "random").labels) == truth_array))
        results.append(
            {
                "setup": name,
                "items": items,
                "repeats": repeats,
                "majority_accuracy": round(float(np.mean(mv_scores)), 4),
                "dawid_skene_accuracy": round(float(np.mean(ds_scores)), 4),
                "ds_at_least_majority_in": f"{sum(d >= m for d, m in zip(ds_scores, mv_scores, strict=True))}/{repeats}",
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["collect", "judge", "consensus"])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--incremental", type=int, default=100)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--judge-child", choices=["majority", "dawid-skene"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.judge_child:
        print(json.dumps(bench_judge(args.rows, args.judge_child)))
        return
    if args.only in (None, "consensus"):
        print("== consensus accuracy against the known truth (simulated annotators) ==")
        for row in bench_consensus(args.items, args.repeats):
            print(json.dumps(row))
    if args.only in (None, "judge"):
        print(f"== agreement + consensus + annotator scores on {args.rows:,} annotation rows ==")
        for aggregation in ("majority", "dawid-skene"):
            out = subprocess.run(
                [sys.executable, __file__, "--judge-child", aggregation, "--rows", str(args.rows)],
                check=True,
                capture_output=True,
                text=True,
            )
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps({"aggregation": aggregation, **{k: round(v, 3) for k, v in figures.items()}}))
    if args.only in (None, "collect"):
        print(f"== collection: {args.tasks:,} tasks x 3 annotations, then {args.incremental} new annotations ==")
        figures = bench_collect(args.tasks, args.incremental)
        for key, value in figures.items():
            print(f"{key}: {value:.2f}")


if __name__ == "__main__":
    main()
