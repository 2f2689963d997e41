"""Escalation benchmark: the extra cost of a collect that escalates to the review project. Prints figures.

One Label Studio project of N tasks x 3 annotations (default 10,000; 80 % accurate annotators, so some tasks tie),
collected by two specs over the same project, each with its own state: `route_low_agreement: expert` with
`review_sample: 0.05`, then `route_low_agreement: overlap`. The expert spec runs first: the overlap spec's routing
changes the project's tasks (their overlap), the review project does not. For each: the first (full) collection,
then, once the import is older than the collect's safety window, one with nothing new (the steady-state cost of
reading the review project).

    uv run python bench/escalation_bench.py                  # on the local stack (`labelflow up` first)
    uv run python bench/escalation_bench.py --tasks 2000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = ["positive", "negative", "neutral"]


def make_project(tasks: int) -> tuple[str, int, Any]:
    """A project of `tasks` texts with three annotations each, imported in one go; (name, project id, resources)."""
    from labelflow.integrations.resources import Resources
    from labelflow.tasks.label_config import build_label_config
    from labelflow.tasks.spec import parse_spec
    from labelflow.tasks.task_types.classification import choice_result

    resources = Resources.from_settings(label_studio_timeout=1800)
    ls = resources.label_studio_client
    name = f"bench-escalation-{uuid.uuid4().hex[:8]}"
    spec = parse_spec(spec_body(name, "overlap"))
    project_id = ls.create_project(name, build_label_config(spec), maximum_annotations=3)
    users = [ls.create_user(f"{name}-{i}@bench.local") for i in range(3)]
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
                        for user in users
                    ],
                }
            )
        ls.import_tasks(project_id, batch)
    print(f"setup: {tasks} tasks x 3 annotations imported in {time.perf_counter() - began:.1f} s", flush=True)
    return name, project_id, resources


def spec_body(name: str, routing: str) -> dict[str, Any]:
    """The spec of one run: its own state location over the shared project."""
    quality: dict[str, Any] = {"route_low_agreement": routing}
    if routing == "expert":
        quality["review_sample"] = 0.05
    return {
        "name": name,
        "source": f"s3://{name}/texts/",
        "state": f"s3://{name}-{routing}-state/labelflow/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 3,
        "quality": quality,
    }


def run(name: str, project_id: int, resources: Any, routing: str) -> dict[str, float]:
    """Two collections of the project under one routing mode: (first, second) wall times and what they did."""
    from labelflow.flows.collect import collect_annotations

    body = spec_body(name, routing)
    store = resources.store
    bucket = f"{name}-{routing}-state"
    store.ensure_bucket(bucket)
    record = {"project_id": project_id, "title": name}  # as ingest records it
    store.put_bytes(bucket, "labelflow/project.json", json.dumps(record).encode(), "application/json")
    path = Path(f"/tmp/{name}-{routing}.yaml")
    path.write_text(yaml.safe_dump(body))
    figures: dict[str, float] = {}
    began = time.perf_counter()
    first = collect_annotations(str(path))
    figures["first_collect_s"] = time.perf_counter() - began
    figures["flagged_tasks"] = float(first["quality"]["flagged_tasks"])
    figures["routed_back"] = float(first["routed_back"])
    review = first["quality"].get("expert_review")
    if review:
        figures["escalated"] = float(review["escalated_now"])
        figures["sampled"] = float(review["sampled_now"])
        figures["first_escalation_step_s"] = float(review["seconds"])
    # Steady state: once the bulk import is older than the collect's safety window, a collect with nothing new
    # re-reads nothing of the main project; what remains is each mode's own work.
    collect_annotations(str(path))
    time.sleep(float(body.get("collect", {}).get("window_seconds", 60.0)) + 1)
    collect_annotations(str(path))
    began = time.perf_counter()
    steady = collect_annotations(str(path))
    figures["steady_collect_s"] = time.perf_counter() - began
    figures["steady_tasks_read"] = float(steady["collection"]["exported_tasks"])
    review = steady["quality"].get("expert_review")
    if review:
        figures["steady_escalation_step_s"] = float(review["seconds"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    from labelflow.runtime import prefect_connection

    name, project_id, resources = make_project(args.tasks)
    results: dict[str, dict[str, float]] = {}
    with prefect_connection():
        for routing in ("expert", "overlap"):  # expert first: overlap routing changes the project's tasks
            results[routing] = run(name, project_id, resources, routing)
            print(routing, json.dumps({k: round(v, 2) for k, v in results[routing].items()}), flush=True)
    expert, overlap = results["expert"], results["overlap"]
    print(
        json.dumps(
            {
                "tasks": args.tasks,
                "extra_first_collect_s": round(expert["first_collect_s"] - overlap["first_collect_s"], 2),
                "first_collect_ratio_expert_vs_overlap": round(
                    expert["first_collect_s"] / overlap["first_collect_s"], 3
                ),
                "extra_steady_collect_s": round(expert["steady_collect_s"] - overlap["steady_collect_s"], 2),
                "steady_collect_ratio_expert_vs_overlap": round(
                    expert["steady_collect_s"] / overlap["steady_collect_s"], 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
