"""LLM-data consensus benchmark: each record type's consensus against the simulator's truth, next to a plain
baseline computed here. Pure (no server, no stack). Prints figures; seeded, so the accuracies are reproducible.

For preference, ranking, response-grading and sft: N synthetic records (default 2,000) with a known answer
(`gold`), in the example spec of the type (examples/specs/<type>.yaml); each task answered by simulated annotators
through the type's own `simulated_answer`, read back by tasks/annotations.AnnotationNormalizer exactly as a
collection reads Label Studio's export (so `parse_answer` sets label, answer and problem), then judged by
tasks/quality.judge. Baselines, from the same usable votes the judge sees:
- preference: plain majority of labels, ties broken at random; the type's majority (ties flagged) and Dawid-Skene;
- ranking: the most frequent full order (plurality, ties at random) vs the type's Borda order;
- response-grading: the mode of the scores (ties at random) vs the type's (lower) median; exact accuracy and MAE;
- sft: one annotator's answer picked at random vs the type's medoid; chrF to the reference, share >= 0.5.

    uv run python bench/llm_consensus_bench.py                                   # 2,000 tasks per type
    uv run python bench/llm_consensus_bench.py --tasks 300 --types preference sft   # a quick pass
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TYPES = ("preference", "ranking", "response-grading", "sft")
# (name, pool of annotator accuracies with None for a spammer, annotations per task drawn from the pool)
SETUPS: list[tuple[str, list[float | None], int]] = [
    ("3 annotators 0.9/0.75/0.6", [0.9, 0.75, 0.6], 3),
    ("3 of 4: 0.9/0.75/0.6 + spammer", [0.9, 0.75, 0.6, None], 3),
    ("5 annotators 0.9/0.8/0.75/0.7/0.6", [0.9, 0.8, 0.75, 0.7, 0.6], 5),
    ("5 annotators 0.9/0.75/0.6/0.6 + spammer", [0.9, 0.75, 0.6, 0.6, None], 5),
]
MODELS = {"model-a": 1.2, "model-b": 0.6, "model-c": 0.0, "model-d": -0.5, "model-e": -1.0}  # latent strengths
GRADE_WEIGHTS = [0.10, 0.15, 0.25, 0.30, 0.20]  # gold scores 1..5
# Vocabulary of the synthetic English text (Chinese text draws characters from ZH_CHARS).
EN_TEXT = (
    "the your order account page settings password invoice refund shipping warranty router printer support "
    "team open check click select enter confirm restart wait contact update reset within two days after before "
    "again please first then menu button email address number store receipt"
)
EN_WORDS = EN_TEXT.split()
ZH_CHARS = "请您在设置中打开账户页面然后点击确认重新启动联系客服我们会三天内处理退款密码发票物流保修订单地址邮箱"


def line(label: str, value: str) -> None:
    print(f"{label:<58} {value}", flush=True)


def sentence(rng: random.Random, chinese: bool) -> str:
    """One synthetic sentence of 6-12 words (8-16 characters in Chinese)."""
    if chinese:
        return "".join(rng.choice(ZH_CHARS) for _ in range(rng.randint(8, 16))) + "。"
    return " ".join(rng.choice(EN_WORDS) for _ in range(rng.randint(6, 12))).capitalize() + "."


def paragraph(rng: random.Random, chinese: bool, sentences: int) -> str:
    return ("" if chinese else " ").join(sentence(rng, chinese) for _ in range(sentences))


def record_fields(kind: str, index: int, rng: random.Random) -> dict[str, Any]:
    """The mapped fields of one synthetic record of `kind`, with its `gold` answer."""
    prompt = f"Question {index}: {sentence(rng, False)}"
    models = list(MODELS)
    if kind == "preference":
        model_a, model_b = rng.sample(models, 2)
        draw = rng.random()
        if draw < 0.06:
            gold = "tie"
        elif draw < 0.10:
            gold = "both-bad"
        else:
            p_a = 1.0 / (1.0 + math.exp(MODELS[model_b] - MODELS[model_a]))
            gold = "A" if rng.random() < p_a else "B"
        return {
            "prompt": prompt,
            "response_a": paragraph(rng, False, 2),
            "response_b": paragraph(rng, False, 2),
            "model_a": model_a,
            "model_b": model_b,
            "gold": gold,
        }
    if kind == "ranking":
        picked = rng.sample(models, 4)
        noisy = {number: MODELS[model] + rng.gauss(0, 0.8) for number, model in enumerate(picked, start=1)}
        order = sorted(noisy, key=lambda number: -noisy[number])
        return {
            "prompt": prompt,
            "responses": [paragraph(rng, False, 2) for _ in picked],
            "models": picked,
            "gold": ">".join(map(str, order)),
        }
    if kind == "response-grading":
        score = rng.choices(range(1, 6), GRADE_WEIGHTS)[0]
        return {"prompt": prompt, "response": paragraph(rng, False, 2), "model": rng.choice(models), "gold": str(score)}
    chinese = rng.random() < 0.25
    reference = paragraph(rng, chinese, rng.randint(3, 5))
    first = reference.split("。" if chinese else ". ")[0]
    # A flawed model draft: the reference's first sentence, then two sentences of its own.
    draft = first + ("。" if chinese else ". ") + paragraph(rng, chinese, 2)
    return {"prompt": prompt, "draft": draft, "draft_model": rng.choice(models), "gold": reference}


def spec_for(kind: str, per_task: int, aggregation: str = "majority"):  # type: ignore[no-untyped-def]
    """The type's example spec, with the setup's overlap (and the preference aggregation)."""
    from labelflow.tasks.spec import parse_spec

    body = yaml.safe_load((ROOT / "examples" / "specs" / f"{kind}.yaml").read_text(encoding="utf-8"))
    body["overlap"] = per_task
    body.setdefault("quality", {})["aggregation"] = aggregation
    return parse_spec(body)


def simulate(kind: str, spec, tasks: int, pool: list[float | None], per_task: int, seed: int):  # type: ignore[no-untyped-def]
    """(tasks frame, annotations frame, gold per task id) as a collection would read them from Label Studio."""
    from labelflow.tasks.annotations import AnnotationNormalizer, annotations_table, tasks_table
    from labelflow.tasks.records import record_sha256
    from labelflow.tasks.task_types.base import FROM_NAME

    task_type = spec.task_type
    records_rng = random.Random(zlib.crc32(f"{seed}:records:{kind}".encode()))
    answer_rng = random.Random(zlib.crc32(f"{seed}:answers:{kind}:{pool}:{per_task}".encode()))
    users = {number: f"annotator{number}@bench.local" for number in range(1, len(pool) + 1)}
    normalizer = AnnotationNormalizer(spec, project_id=1, users=users, from_name=FROM_NAME)
    task_rows: list[dict[str, Any]] = []
    annotation_rows: list[dict[str, Any]] = []
    gold: dict[int, str] = {}
    annotation_id = 0
    stamp = "2026-11-23T12:00:00.000000Z"
    for index in range(tasks):
        fields = record_fields(kind, index, records_rng)
        data = task_type.record_task_data(fields, spec)
        data.update(
            source_uri=f"s3://bench/{kind}/records.jsonl",
            record_index=index + 1,
            record_id=f"r{index}",
            content_sha256=record_sha256(fields),
        )
        task_id = index + 1
        gold[task_id] = task_type.gold_of(data)
        annotations = []
        for who in answer_rng.sample(range(len(pool)), per_task):
            accuracy = pool[who]
            result = task_type.simulated_answer(data, spec, accuracy or 0.0, accuracy is None, answer_rng)
            annotation_id += 1
            annotations.append(
                {
                    "id": annotation_id,
                    "completed_by": who + 1,
                    "result": result,
                    "lead_time": round(answer_rng.uniform(5, 60), 2),
                    "created_at": stamp,
                    "updated_at": stamp,
                    "ground_truth": False,
                }
            )
        exported = {"id": task_id, "data": data, "annotations": annotations, "overlap": per_task, "updated_at": stamp}
        normalized = normalizer.task(exported, seq=1)
        task_rows.append(normalized.task)
        annotation_rows += normalized.annotations
    return tasks_table(task_rows).to_pandas(), annotations_table(annotation_rows).to_pandas(), gold


def timed_judge(tasks, annotations, spec):  # type: ignore[no-untyped-def]
    from labelflow.tasks.quality import judge

    began = time.perf_counter()
    report = judge(tasks, annotations, spec)
    return report, time.perf_counter() - began


def usable_votes(annotations) -> dict[int, list[tuple[str, str | None]]]:  # type: ignore[no-untyped-def]
    """(label, answer JSON) of each task's usable votes, in annotation order: what the judge counts."""
    usable = annotations[annotations["problem"].isna()].sort_values("annotation_id")
    votes: dict[int, list[tuple[str, str | None]]] = {}
    for task_id, label, answer in usable[["task_id", "label", "answer"]].itertuples(index=False):
        votes.setdefault(int(task_id), []).append((label, answer))
    return votes


def mode_at_random(labels: list[str], rng: random.Random) -> str | None:
    """The most frequent label, a tie broken at random; None without labels."""
    if not labels:
        return None
    counts = Counter(labels)
    top = max(counts.values())
    return rng.choice(sorted(label for label, count in counts.items() if count == top))


def consensus_labels(report) -> dict[int, str | None]:  # type: ignore[no-untyped-def]
    frame = report.consensus
    return {
        int(t): (label if isinstance(label, str) else None)
        for t, label in zip(frame["task_id"], frame["label"], strict=True)
    }


def accuracy(picked: dict[int, str | None], gold: dict[int, str]) -> float:
    """Share of all tasks whose pick equals gold (no pick counts as wrong)."""
    return sum(picked.get(task_id) == truth for task_id, truth in gold.items()) / len(gold)


def bench_preference(setup: tuple[str, list[float | None], int], tasks: int, seed: int) -> None:
    name, pool, per_task = setup
    spec = spec_for("preference", per_task)
    frame, annotations, gold = simulate("preference", spec, tasks, pool, per_task, seed)
    rng = random.Random(seed)
    votes = usable_votes(annotations)
    baseline = {task_id: mode_at_random([label for label, _ in votes.get(task_id, [])], rng) for task_id in gold}
    majority, majority_seconds = timed_judge(frame, annotations, spec)
    dawid_skene, ds_seconds = timed_judge(frame, annotations, spec_for("preference", per_task, "dawid-skene"))
    picked = consensus_labels(majority)
    decided = {task_id: label for task_id, label in picked.items() if label is not None}
    line(name, f"{len(annotations):,} annotations, {int(annotations['problem'].notna().sum())} invalid")
    line("  plain majority, ties broken at random (baseline)", f"accuracy {accuracy(baseline, gold):.3f}")
    line(
        "  consensus: majority, ties flagged (the type's default)",
        f"accuracy {accuracy(picked, gold):.3f} (a tie counts wrong; {accuracy(decided, {t: gold[t] for t in decided}):.3f}"
        f" of the {len(decided):,} decided, {1 - len(decided) / len(gold):.1%} tied)",
    )
    line(
        "  consensus: dawid-skene (quality.aggregation)",
        f"accuracy {accuracy(consensus_labels(dawid_skene), gold):.3f}",
    )
    line("  seconds per judge call", f"{majority_seconds:.2f} s majority, {ds_seconds:.2f} s dawid-skene")


def bench_ranking(setup: tuple[str, list[float | None], int], tasks: int, seed: int) -> None:
    from labelflow.tasks.task_types.ranking import kendall_tau, parse_order

    name, pool, per_task = setup
    spec = spec_for("ranking", per_task)
    frame, annotations, gold = simulate("ranking", spec, tasks, pool, per_task, seed)
    rng = random.Random(seed)
    votes = usable_votes(annotations)
    plurality = {task_id: mode_at_random([label for label, _ in votes.get(task_id, [])], rng) for task_id in gold}
    report, seconds = timed_judge(frame, annotations, spec)
    borda = consensus_labels(report)

    def mean_tau(picked: dict[int, str | None]) -> float:
        taus = []
        for task_id, truth in gold.items():
            order, true_order = parse_order(picked.get(task_id)), parse_order(truth)
            taus.append(kendall_tau(order, true_order) if order and sorted(order) == sorted(true_order) else -1.0)
        return statistics.fmean(taus)

    tied = float(report.consensus["flag_reason"].fillna("").str.contains("tied").mean())
    line(name, f"{len(annotations):,} annotations, {int(annotations['problem'].notna().sum())} invalid")
    line(
        "  most frequent full order, ties at random (baseline)",
        f"exact order {accuracy(plurality, gold):.3f}, mean Kendall tau to gold {mean_tau(plurality):.3f}",
    )
    line(
        "  consensus: Borda count",
        f"exact order {accuracy(borda, gold):.3f}, mean Kendall tau to gold {mean_tau(borda):.3f} "
        f"({tied:.1%} tied for first)",
    )
    line("  seconds per judge call", f"{seconds:.2f} s")


def bench_grading(setup: tuple[str, list[float | None], int], tasks: int, seed: int) -> None:
    name, pool, per_task = setup
    spec = spec_for("response-grading", per_task)
    frame, annotations, gold = simulate("response-grading", spec, tasks, pool, per_task, seed)
    rng = random.Random(seed)
    votes = usable_votes(annotations)
    mode = {task_id: mode_at_random([label for label, _ in votes.get(task_id, [])], rng) for task_id in gold}
    report, seconds = timed_judge(frame, annotations, spec)
    median = consensus_labels(report)

    def mae(picked: dict[int, str | None]) -> float:
        # A task without a score counts as the whole scale off.
        return statistics.fmean(
            abs(int(picked[t]) - int(g)) if picked.get(t) is not None else len(GRADE_WEIGHTS) - 1
            for t, g in gold.items()
        )

    line(name, f"{len(annotations):,} annotations, {int(annotations['problem'].notna().sum())} invalid")
    line("  mode of the scores, ties at random (baseline)", f"exact {accuracy(mode, gold):.3f}, MAE {mae(mode):.3f}")
    line("  consensus: median (lower middle)", f"exact {accuracy(median, gold):.3f}, MAE {mae(median):.3f}")
    line("  seconds per judge call", f"{seconds:.2f} s")


def bench_sft(setup: tuple[str, list[float | None], int], tasks: int, seed: int) -> None:
    from labelflow.tasks.comparisons import chrf
    from labelflow.tasks.task_types.record_task import answer_of
    from labelflow.tasks.task_types.sft import GOLD_MATCH_CHRF

    name, pool, per_task = setup
    spec = spec_for("sft", per_task)
    frame, annotations, gold = simulate("sft", spec, tasks, pool, per_task, seed)
    rng = random.Random(seed)
    votes = usable_votes(annotations)
    picked_at_random = {t: rng.choice(votes[t])[1] if votes.get(t) else None for t in gold}
    report, seconds = timed_judge(frame, annotations, spec)
    medoid = {int(t): a for t, a in zip(report.consensus["task_id"], report.consensus["answer"], strict=True)}

    def scores(picked: dict[int, str | None]) -> str:
        values = [chrf(answer_of(picked.get(t)).get("text") or "", reference) for t, reference in gold.items()]
        matching = sum(value >= GOLD_MATCH_CHRF for value in values) / len(values)
        return f"mean chrF to reference {statistics.fmean(values):.3f}, share >= {GOLD_MATCH_CHRF} {matching:.3f}"

    invalid = int(annotations["problem"].notna().sum())
    line(
        name,
        f"{len(annotations):,} answers, {invalid} invalid (the draft unchanged: forbid_unedited_draft); "
        f"{report.metrics['finished_tasks']:,} tasks finished",
    )
    line("  one annotator's answer at random (baseline)", scores(picked_at_random))
    line("  consensus: medoid (chrF)", scores(medoid))
    line("  seconds per judge call", f"{seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2_000, help="tasks per type and setup")
    parser.add_argument("--types", nargs="+", choices=TYPES, default=list(TYPES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs = {
        "preference": bench_preference,
        "ranking": bench_ranking,
        "response-grading": bench_grading,
        "sft": bench_sft,
    }
    truths = {
        "preference": "gold A/B from Bradley-Terry strengths of 5 models; 6% tie, 4% both-bad",
        "ranking": "4 responses; gold order by noisy model strengths; a miss swaps one adjacent pair",
        "response-grading": "gold scores 1..5 weighted 10/15/25/30/20%; a miss is one point off",
        "sft": "references of 3-5 sentences (25% Chinese); a miss is the draft or the first 15-40%",
    }
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"labelflow LLM-data consensus benchmark: {args.tasks:,} tasks per type and setup, seed {args.seed}")
    print(f"load average at start: {load}")
    began = time.perf_counter()
    for kind in args.types:
        print(f"\n== {kind}: {truths[kind]} ==")
        for setup in SETUPS:
            runs[kind](setup, args.tasks, args.seed)
    print(f"\ntotal {time.perf_counter() - began:.0f} s; load average at end: "
          + " ".join(f"{value:.2f}" for value in os.getloadavg()))  # fmt: skip


if __name__ == "__main__":
    main()
