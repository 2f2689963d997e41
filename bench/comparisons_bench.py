"""Bradley-Terry on a million pairwise comparisons, and Kendall's W / chrF medoid at realistic sizes.

uv run python bench/comparisons_bench.py [--comparisons 1000000] [--models 20]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from labelflow.tasks.comparisons import bradley_terry, kendalls_w, medoid


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    true = np.exp(rng.normal(0.0, 1.0, args.models))
    first = rng.integers(0, args.models, args.comparisons)
    second = (first + rng.integers(1, args.models, args.comparisons)) % args.models
    outcome = (rng.random(args.comparisons) < true[first] / (true[first] + true[second])).astype(float)
    began = time.perf_counter()
    strength, iterations = bradley_terry(first, second, outcome, args.models)
    seconds = time.perf_counter() - began
    error = float(np.abs(strength - true / true.sum()).max() / (true / true.sum()).max())
    print(
        f"Bradley-Terry: {args.comparisons:,} comparisons, {args.models} models: {seconds:.2f} s "
        f"({iterations} MM iterations), max relative error vs the generating strengths {error:.3f}"
    )
    ranks = np.stack([rng.permutation(10) + 1 for _ in range(100_000)])
    began = time.perf_counter()
    for start in range(0, len(ranks), 5):  # 20,000 tasks, each 5 annotators ranking 10 responses
        kendalls_w(ranks[start : start + 5])
    print(f"Kendall's W: 20,000 tasks x 5 annotators x 10 responses: {time.perf_counter() - began:.2f} s")
    answers = [
        "机器学习需要大量标注数据。" * 20,
        "Machine learning needs a lot of labeled data. " * 10,
        "标注成本很高。" * 30,
    ]
    began = time.perf_counter()
    for _ in range(1000):
        medoid(answers)
    print(f"chrF medoid of 3 answers (~300 characters each): {(time.perf_counter() - began):.2f} ms per task")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
