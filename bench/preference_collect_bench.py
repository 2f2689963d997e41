"""Preference collect benchmark: ingest, 3 annotations per task, then collect + validate + publish of N preference
tasks (default 10,000 x 3 = 30,000 annotations), next to Label Studio's own export of the same project. Prints figures.

Run against the local stack (`labelflow up` first):
    uv run python bench/preference_collect_bench.py                  # 10,000 tasks x 3 annotations
    uv run python bench/preference_collect_bench.py --tasks 500      # a quick pass

One JSONL file of N records (prompt, two responses, model_a / model_b over 5 models, `gold` drawn from the models'
latent Bradley-Terry strengths: 6% tie, 4% both-bad) in examples/specs/preference.yaml's layout is uploaded, then:
1. `labelflow ingest SPEC` (a subprocess) into project P1: the ingest figure (time, rate, peak RSS);
2. the same file through the ingest flow in this process into project P2, with LabelStudioClient.import_tasks
   wrapped so each import request also carries each task's 3 annotations (annotators of accuracy 0.9 / 0.75 / 0.6,
   answers from the type's own simulated_answer). Label Studio has no bulk endpoint that annotates existing tasks
   (one POST per annotation: about 13/s on this stack, 40 min for 30,000), so annotations travel inside the import,
   as in bench/collect_bench.py; the annotation-creation figure is P2's import seconds minus P1's. Tasks, ledger
   and lineage are the ingest flow's own. Annotations Label Studio drops on a retried import (see
   reconcile_annotations) are re-created one POST each and reported apart.
3. Label Studio's quick JSON export of P2 (the anchor), then `labelflow collect SPEC --json` on P2 (a subprocess:
   collect, judge, validate, publish; wall time and peak RSS), and the model leaderboard next to the true strengths.
Left behind, as the other benches leave theirs: the source and state buckets, project P2 with its users and the
published dataset (MLflow). P1, only needed for the ingest figure, is deleted from Label Studio.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest_bench import SENTENCES, line, run_cli, run_ingest  # noqa: E402
from bench.llm_consensus_bench import MODELS  # noqa: E402
from labelflow.integrations.label_studio import LabelStudioClient  # noqa: E402
from labelflow.integrations.resources import Resources  # noqa: E402

ACCURACIES = (0.9, 0.75, 0.6)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def records(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """Preference records in examples/specs/preference.yaml's layout, gold from the models' latent strengths."""
    rng = random.Random(seed)
    models = list(MODELS)
    for i in range(count):
        model_a, model_b = rng.sample(models, 2)
        draw = rng.random()
        if draw < 0.06:
            gold = "tie"
        elif draw < 0.10:
            gold = "both-bad"
        else:
            gold = "A" if rng.random() < 1.0 / (1.0 + math.exp(MODELS[model_b] - MODELS[model_a])) else "B"
        yield {
            "id": f"p{i:06d}",
            "question": f"Question {i}: what do you think of this review? {SENTENCES[i % len(SENTENCES)]}",
            "answers": [
                {"text": f"{SENTENCES[(i + 1) % len(SENTENCES)]} (answer {i}, first)", "model": model_a},
                {"text": f"{SENTENCES[(i + 2) % len(SENTENCES)]} (answer {i}, second)", "model": model_b},
            ],
            "preferred": gold,
        }


def spec_body(name: str, bucket: str, state: str) -> dict[str, Any]:
    """The example preference spec on this run's buckets; flagged tasks are not routed back (one PATCH each)."""
    body = yaml.safe_load((ROOT / "examples" / "specs" / "preference.yaml").read_text(encoding="utf-8"))
    body.update(
        name=name,
        source=f"s3://{bucket}/records/",
        state=f"s3://{state}/{name}/",
        overlap=len(ACCURACIES),
        quality={**body.get("quality", {}), "route_low_agreement": False},
        dataset={"name": name},
    )
    return body


def hidden_fields(generated: Iterator[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Record id -> the fields annotators never see (gold, model names), which Label Studio's task data may omit."""
    return {
        r["id"]: {"gold": r["preferred"], "model_a": r["answers"][0]["model"], "model_b": r["answers"][1]["model"]}
        for r in generated
    }


def planned_annotations(
    spec: Any, data: dict[str, Any], truth: dict[str, dict[str, str]], user_ids: list[int], seed: int
) -> list[dict[str, Any]]:
    """A task's 3 simulated annotations, seeded by its record id, so a re-run (or a repair) gives the same answers."""
    rng = random.Random(zlib.crc32(f"{seed}:{data['record_id']}".encode()))
    known = {**data, **truth[data["record_id"]]}
    return [
        {
            "completed_by": user_id,
            "result": spec.task_type.simulated_answer(known, spec, accuracy, False, rng),
            "lead_time": round(rng.uniform(5, 60), 2),
            "ground_truth": False,
        }
        for user_id, accuracy in zip(user_ids, ACCURACIES, strict=True)
    ]


@contextmanager
def annotations_in_imports(
    spec: Any, truth: dict[str, dict[str, str]], user_ids: list[int], seed: int
) -> Iterator[dict[str, int]]:
    """While active, every Label Studio task import also creates each task's simulated annotations."""
    original = LabelStudioClient.import_tasks
    created = {"annotations": 0}

    def import_with_annotations(self: LabelStudioClient, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        payloads = [
            {**task, "annotations": planned_annotations(spec, task["data"], truth, user_ids, seed)} for task in tasks
        ]
        ids = original(self, project_id, payloads)
        created["annotations"] += sum(len(p["annotations"]) for p in payloads)
        return ids

    LabelStudioClient.import_tasks = import_with_annotations  # type: ignore[method-assign]
    try:
        yield created
    finally:
        LabelStudioClient.import_tasks = original  # type: ignore[method-assign]


def reconcile_annotations(
    ls: LabelStudioClient, project_id: int, spec: Any, truth: dict[str, dict[str, str]], user_ids: list[int], seed: int
) -> tuple[int, int]:
    """Give every task exactly its planned annotations again; returns (created, deleted), one request each.

    Label Studio 1.23 retries a bulk import after SQLite's "database is locked" (retry_database_locked on
    TaskSerializerBulk.create), but the first attempt already popped each task's `annotations`: the retry creates
    the tasks bare and still answers 201, so on a shared stack with concurrent writers whole batches arrive without
    annotations. Re-creating them one POST each can in turn duplicate one, when a POST the server committed is
    retried by the client after a timeout; a duplicate (same task, same annotator) is deleted. Suspects are found
    by Label Studio's per-task counter (cheap), each is then read and fixed by its actual annotations (the counter
    itself can drift); the caller checks the whole project in Label Studio's export.
    """
    params = {"project": project_id, "fields": "task_only"}
    suspects = [t for t in ls._task_pages(params, "list tasks", 1000) if t.get("total_annotations") != len(user_ids)]

    def fix(task: dict[str, Any]) -> tuple[int, int]:
        made = removed = 0
        seen: set[int] = set()
        for annotation in sorted(ls.get_task(int(task["id"]))["annotations"], key=lambda a: int(a["id"])):
            user = annotation["completed_by"]
            user = int(user["id"] if isinstance(user, dict) else user)
            if user in seen:
                ls.delete_annotation(int(annotation["id"]))
                removed += 1
            seen.add(user)
        for planned in planned_annotations(spec, task["data"], truth, user_ids, seed):
            if planned["completed_by"] not in seen:
                ls.create_annotation(int(task["id"]), planned["result"], planned["completed_by"], planned["lead_time"])
                made += 1
        return made, removed

    with ThreadPoolExecutor(4) as pool:
        fixed = list(pool.map(fix, suspects))
    return sum(made for made, _ in fixed), sum(removed for _, removed in fixed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "true")
    # The in-process ingest flow's Prefect run logs would interleave with the figures (read before Prefect loads).
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    resources = Resources.from_settings(label_studio_timeout=1800)
    store, ls = resources.store, resources.label_studio_client
    run = uuid.uuid4().hex[:8]
    bucket, state = f"bench-pref-{run}", f"bench-pref-{run}-state"
    workdir = Path(tempfile.mkdtemp(prefix="labelflow-bench-"))
    print(f"labelflow preference collect benchmark (run {run}, bucket {bucket}, {args.tasks:,} tasks x 3)")
    line("load average at start", load_average())

    store.ensure_bucket(bucket)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records(args.tasks, args.seed)).encode()
    began = time.perf_counter()
    store.put_bytes(bucket, "records/pairs.jsonl", data)
    line(
        f"upload 1 JSONL file of {args.tasks:,} records",
        f"{time.perf_counter() - began:.1f} s, {len(data) / 1e6:.1f} MB",
    )

    plain = spec_body(f"bench-pref-plain-{run}", bucket, state)
    summary, ingest_seconds, ingest_peak = run_ingest(plain, workdir)
    assert summary["tasks_created"] == args.tasks, summary
    line(
        f"labelflow ingest {args.tasks:,} records (P1, CLI)",
        f"{ingest_seconds:.1f} s, {args.tasks / ingest_seconds:.0f} tasks/s, peak RSS {ingest_peak:.0f} MB",
    )
    line("  stages (s)", json.dumps({k: round(v, 2) for k, v in summary["seconds"].items()}))
    ls.delete_project(int(summary["project_id"]))  # P1: only the ingest figure needed it

    name = f"bench-pref-{run}"
    spec_path = workdir / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec_body(name, bucket, state), allow_unicode=True), encoding="utf-8")
    user_ids = [ls.create_user(f"{name}-{i}@bench.local") for i in range(len(ACCURACIES))]
    from labelflow.runtime import prefect_connection
    from labelflow.tasks.spec import load_spec

    spec = load_spec(spec_path)
    truth = hidden_fields(records(args.tasks, args.seed))
    with prefect_connection(), annotations_in_imports(spec, truth, user_ids, args.seed) as created:
        from labelflow.flows.ingest import ingest

        began = time.perf_counter()
        annotated = ingest(str(spec_path))
        annotated_seconds = time.perf_counter() - began
    assert annotated["tasks_created"] == args.tasks and created["annotations"] == 3 * args.tasks, (annotated, created)
    project_id = int(annotated["project_id"])
    began = time.perf_counter()
    repaired, duplicates = reconcile_annotations(ls, project_id, spec, truth, user_ids, args.seed)
    repair_seconds = time.perf_counter() - began
    extra = annotated["seconds"]["import"] - summary["seconds"]["import"]
    line(
        f"ingest with {created['annotations']:,} annotations in the imports (P2)",
        f"{annotated_seconds:.1f} s (import stage {annotated['seconds']['import']:.1f} s vs "
        f"{summary['seconds']['import']:.1f} s without)",
    )
    line(
        f"annotation creation: {created['annotations']:,} annotations",
        f"{extra:.1f} s, {created['annotations'] / max(extra, 1e-9):.0f} annotations/s (import seconds P2 - P1)",
    )
    line(
        "  dropped by a retried import, re-created one POST each",
        f"{repaired:,} annotations ({duplicates} duplicates deleted) in {repair_seconds:.1f} s, listing included",
    )
    began = time.perf_counter()
    exported = ls.quick_export(project_id)
    export_seconds = time.perf_counter() - began
    exported_annotations = sum(len(task.get("annotations") or []) for task in exported)
    del exported
    if exported_annotations != 3 * args.tasks:
        raise SystemExit(
            f"Label Studio exports {exported_annotations} annotations of project {project_id}, not {3 * args.tasks}"
        )
    line(
        "Label Studio quick JSON export of P2 (anchor)",
        f"{export_seconds:.1f} s ({exported_annotations:,} annotations)",
    )

    result, collect_seconds, collect_peak = run_cli("collect", spec_path)
    collection, quality = result["collection"], result["quality"]
    validation, dataset = result["validation"], result["dataset"]
    line(
        "labelflow collect + validate + publish (CLI)",
        f"{collect_seconds:.1f} s, peak RSS {collect_peak:.0f} MB, {collect_seconds / export_seconds:.1f}x the export",
    )
    line(
        "  collection (fetch and store)",
        f"{sum(collection['seconds'].values()):.1f} s, {collection['annotation_rows']:,} annotation rows, "
        f"{collection['changed_tasks']:,} tasks",
    )
    line(
        "  validation",
        "skipped: " + str(validation["skipped"])
        if validation.get("skipped")
        else f"{validation['evaluated']} expectations, {len(validation.get('failed') or [])} failed",
    )
    line(
        "  dataset",
        f"version {dataset.get('version')}, {dataset.get('rows'):,} rows" if dataset.get("published") else str(dataset),
    )
    line(
        "  quality",
        f"consensus accuracy on gold {quality.get('consensus_accuracy_on_gold', float('nan')):.3f}, "
        f"percent agreement {quality.get('percent_agreement') or float('nan'):.3f}, "
        f"alpha {quality.get('krippendorff_alpha') or float('nan'):.3f}, "
        f"{quality['flagged_tasks']:,} flagged",
    )
    true_rank = {model: rank for rank, model in enumerate(sorted(MODELS, key=lambda m: -MODELS[m]), start=1)}
    print("model leaderboard (Bradley-Terry on consensus):")
    for rank, row in enumerate(quality.get("model_leaderboard") or [], start=1):
        line(
            f"  {rank}. {row['model']} (true rank {true_rank.get(row['model'])}, strength {MODELS[row['model']]:+.1f})",
            f"BT {row['strength']:.3f}, {row['wins']} W / {row['losses']} L / {row['ties']} T of {row['comparisons']}",
        )

    line("load average at end", load_average())
    line("left behind", f"buckets {bucket}, {state}; Label Studio project {project_id}; dataset {name}")


if __name__ == "__main__":
    main()
