"""Talent pool benchmark: do levels order annotators as their true accuracies do? And how long do profiles take?

1. Level ordering, over many seeds. Each seed: 5 simulated annotators with true accuracies drawn uniformly from
   [0.55, 0.98] label a 3-class project of 40 gold tasks (everyone answers them) and 400 others (3 of the 5 answer
   each), so each person gives about 280 annotations. The project is judged by the real collect judge
   (tasks/quality.judge, Dawid-Skene aggregation, default tiers), its annotator table becomes evidence
   (tasks/talent_pool.evidence_table) and profiles (build_profiles, default ladder). A seed orders the annotators
   when no pair whose true accuracies are at least 0.05 apart has the better one at a LOWER level. Compared:
   - the pool's levels (gold pooled with the Dawid-Skene estimate, lower bound of the interval);
   - the same ladder on gold alone (Wilson lower bound of 40 gold answers);
   - today's gold-only tiers (trainee / qualified / expert on the gold accuracy's point estimate).
   Ordering alone rewards a coarse scale (everyone on one level never inverts), so the share of those pairs put on
   different levels (the better one higher) is printed too.
2. Building profiles from 1,000,000 evidence rows (10,000 people x 4 projects in 2 domains x 25 collects), in a
   fresh process: seconds and peak RSS.

    uv run python bench/levels_bench.py                 # 200 seeds, 1,000,000 rows
    uv run python bench/levels_bench.py --seeds 50 --rows 200000
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelflow.tasks.annotations import ANNOTATION_SCHEMA, TASK_SCHEMA  # noqa: E402
from labelflow.tasks.levels import DEFAULT_LADDER  # noqa: E402
from labelflow.tasks.quality import judge  # noqa: E402
from labelflow.tasks.spec import parse_spec  # noqa: E402
from labelflow.tasks.talent_pool import EVIDENCE_SCHEMA, build_profiles, evidence_table  # noqa: E402

LABELS = ["positive", "negative", "neutral"]
PEOPLE = 5
GOLD_TASKS = 40
OTHER_TASKS = 400
PER_TASK = 3
CLEAR_GAP = 0.05
TIER_ORDER = {"unrated": -1, "trainee": 0, "qualified": 1, "expert": 2}


def simulated_project(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[float]]:
    """(tasks, annotations, gold, true accuracies) of one simulated project."""
    rng = random.Random(seed)
    accuracies = [rng.uniform(0.55, 0.98) for _ in range(PEOPLE)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    tasks, annotations, gold = [], [], []
    for task_id in range(1, GOLD_TASKS + OTHER_TASKS + 1):
        truth = rng.choice(LABELS)
        is_gold = task_id <= GOLD_TASKS
        workers = range(PEOPLE) if is_gold else rng.sample(range(PEOPLE), PER_TASK)
        digest = f"h{task_id}"
        tasks.append({"project_id": 1, "task_id": task_id, "source_uri": f"s3://b/{task_id}.txt",
                      "content_sha256": digest, "overlap": len(workers), "annotations": len(workers),
                      "cancelled": 0, "deleted": False, "seq": 1})  # fmt: skip
        if is_gold:
            gold.append({"content_sha256": digest, "gold_label": truth})
        for worker in workers:
            right = rng.random() < accuracies[worker]
            label = truth if right else rng.choice([x for x in LABELS if x != truth])
            at = start + timedelta(minutes=task_id)
            annotations.append({"project_id": 1, "task_id": task_id, "annotation_id": len(annotations) + 1,
                                "source_uri": f"s3://b/{task_id}.txt", "content_sha256": digest,
                                "annotator_id": worker + 1, "annotator_email": f"w{worker}@bench",
                                "label": label, "lead_time_seconds": 8.0, "created_at": at, "updated_at": at,
                                "ground_truth": False, "seq": 1})  # fmt: skip
    task_frame = pa.Table.from_pylist(tasks, schema=TASK_SCHEMA).to_pandas()
    annotation_frame = pa.Table.from_pylist(annotations, schema=ANNOTATION_SCHEMA).to_pandas()
    return task_frame, annotation_frame, pd.DataFrame(gold), accuracies


def ordered(truth: list[float], placed: list[int]) -> tuple[bool, int, int]:
    """(no clear pair inverted, clear pairs separated, clear pairs) for levels `placed` of people with `truth`."""
    inverted, separated, clear = False, 0, 0
    for i, j in combinations(range(len(truth)), 2):
        better, worse = (i, j) if truth[i] >= truth[j] else (j, i)
        if truth[better] - truth[worse] < CLEAR_GAP:
            continue
        clear += 1
        inverted |= placed[better] < placed[worse]
        separated += placed[better] > placed[worse]
    return not inverted, separated, clear


def level_ordering(seeds: int) -> None:
    spec = parse_spec(
        {"name": "levels bench", "source": "s3://bench-src/", "task": "text-classification", "labels": LABELS,
         "overlap": PER_TASK, "quality": {"aggregation": "dawid-skene"}}
    )  # fmt: skip
    methods = ("pool levels (gold + Dawid-Skene, lower bound)", "same ladder, gold only", "today's gold-only tiers")
    passed = dict.fromkeys(methods, 0)
    separated = dict.fromkeys(methods, 0)
    clear_pairs = 0
    names = [level.name for level in DEFAULT_LADDER]
    seen_levels: dict[str, int] = dict.fromkeys(names, 0)
    started = time.perf_counter()
    for seed in range(seeds):
        tasks, annotations, gold, truth = simulated_project(seed)
        report = judge(tasks, annotations, spec, gold)
        evidence = evidence_table(spec, report.annotators, annotations, datetime.now(UTC), 1)
        people = report.annotators.set_index("annotator_id")
        placements = {}
        for method, rows in ((methods[0], evidence), (methods[1], _without_model(evidence))):
            profiles = build_profiles(rows, DEFAULT_LADDER, with_trend=False).set_index("label_studio_user_id")
            placements[method] = [int(profiles.loc[w + 1, "level_rank"]) for w in range(PEOPLE)]
        placements[methods[2]] = [TIER_ORDER[people.loc[w + 1, "tier"]] for w in range(PEOPLE)]
        for rank in placements[methods[0]]:
            seen_levels[names[rank]] += 1
        for method, placed in placements.items():
            ok, apart, clear = ordered(truth, placed)
            passed[method] += ok
            separated[method] += apart
        clear_pairs += clear
    seconds = time.perf_counter() - started
    print(f"Level ordering over {seeds} seeds ({PEOPLE} annotators, true accuracy U[0.55, 0.98], {GOLD_TASKS} gold "
          f"+ {OTHER_TASKS} tasks, {PER_TASK} answers per non-gold task; {seconds:.1f} s)")  # fmt: skip
    print(f"  pairs at least {CLEAR_GAP:.2f} apart in true accuracy: {clear_pairs} ({clear_pairs / seeds:.1f} a seed)")
    print(f"  {'method':<48} {'seeds ordered':>14} {'clear pairs separated':>22}")
    for method in methods:
        print(f"  {method:<48} {passed[method] / seeds:>13.1%} {separated[method] / max(clear_pairs, 1):>22.1%}")
    total = sum(seen_levels.values())
    print("  pool levels given: " + ", ".join(f"{n} {c / total:.0%}" for n, c in seen_levels.items()))


def _without_model(evidence: pa.Table) -> pa.Table:
    column = EVIDENCE_SCHEMA.get_field_index("estimated_accuracy")
    return evidence.set_column(column, "estimated_accuracy", pa.nulls(evidence.num_rows, pa.float64()))


def synthetic_evidence(rows: int, seed: int = 0) -> pa.Table:
    """`rows` evidence rows: 10,000 people (fewer for fewer rows) x 4 projects in 2 domains x N collects each."""
    rng = np.random.default_rng(seed)
    projects, collects = 4, 25
    people = max(1, rows // (projects * collects))
    n = people * projects * collects
    person = np.repeat(np.arange(people), projects * collects)
    project = np.tile(np.repeat(np.arange(projects), collects), people)
    collect = np.tile(np.arange(collects), people * projects)
    accuracy = rng.uniform(0.5, 0.99, people)[person]
    annotations = (collect + 1) * 20
    gold = np.minimum(annotations, 40)
    start = np.datetime64("2026-01-01T00:00:00", "us")
    at = start + (collect * 7 * 86400 + project * 3600).astype("timedelta64[s]").astype("timedelta64[us]")
    ids = np.char.add("e", np.arange(n).astype(str))
    emails = np.char.add(np.char.add("person", np.arange(people).astype(str)), "@pool.bench")[person]
    columns = {
        "evidence_id": ids,
        "collected_at": at,
        "project": np.char.add("project-", project.astype(str)),
        "project_id": project,
        "task_type": np.full(n, "text-classification"),
        "domain": np.where(project < 2, "zh-sentiment", "news-topics"),
        "annotator_email": emails,
        "label_studio_user_id": person,
        "annotations": annotations,
        "invalid_annotations": np.zeros(n, dtype=np.int64),
        "gold_answered": gold,
        "gold_correct": np.round(gold * np.clip(accuracy + rng.normal(0, 0.03, n), 0, 1)),
        "agreement": np.clip(accuracy + rng.normal(0, 0.02, n), 0, 1),
        "estimated_accuracy": np.clip(accuracy + rng.normal(0, 0.02, n), 0, 1),
        "median_lead_time_seconds": rng.uniform(3, 30, n),
        "first_annotation_at": at - np.timedelta64(3600, "s"),
        "last_annotation_at": at,
        "guideline_version": np.full(n, None),
    }
    return pa.Table.from_pydict(
        {name: pa.array(values, type=EVIDENCE_SCHEMA.field(name).type) for name, values in columns.items()},
        schema=EVIDENCE_SCHEMA,
    )


CHILD = """
import sys, time
sys.path.insert(0, {root!r})


def peak_mb():
    # VmHWM: this process's own high-water mark (ru_maxrss would include the parent's, inherited across fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024



import pandas, pyarrow.parquet as pq
from labelflow.tasks.talent_pool import build_profiles
before = peak_mb()
started = time.perf_counter()
evidence = pq.ParquetFile({path!r}).read()
read = time.perf_counter() - started
profiles = build_profiles(evidence)
total = time.perf_counter() - started
peak = peak_mb()
print(evidence.num_rows, len(profiles), f"{{read:.2f}}", f"{{total:.2f}}", f"{{before:.0f}}", f"{{peak:.0f}}")
"""


def profile_building(rows: int) -> None:
    import pyarrow.parquet as pq

    evidence = synthetic_evidence(rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "evidence.parquet"
        pq.write_table(evidence, path, compression="zstd")
        size = path.stat().st_size
        result = subprocess.run(
            [sys.executable, "-c", CHILD.format(root=str(ROOT), path=str(path))],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    n, profiles, read, total, before, peak = result.stdout.split()
    print(f"Profiles from {int(n):,} evidence rows ({size / 1e6:.1f} MB of Parquet, zstd), in a fresh process:")
    print(f"  {int(profiles):,} profiles in {float(total):.2f} s (reading the Parquet: {float(read):.2f} s)")
    print(f"  peak RSS {float(peak):.0f} MB (after imports: {float(before):.0f} MB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    level_ordering(args.seeds)
    profile_building(args.rows)
    print(f"(bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
