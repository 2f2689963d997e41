"""What `find_suspects` costs as a project grows: seconds and peak memory on the current consensus. Prints figures.

Each size is a consensus of that many rows whose texts are the demo's Chinese reviews (labelflow/demo_data,
reviews_zh.jsonl) with a row number appended, 5 % of the labels flipped; each size runs in a fresh process so the
peak resident memory is its own.

    uv run python bench/label_error_suspects_bench.py --rows 1000 10000 50000
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one(rows: int) -> None:
    """Time find_suspects on `rows` consensus rows and print a line."""
    import pandas as pd

    from labelflow.tasks.label_errors import MAX_TRAIN_ROWS, find_suspects
    from labelflow.tasks.spec import parse_spec

    lines = files("labelflow").joinpath("demo_data", "reviews_zh.jsonl").read_text(encoding="utf-8").splitlines()
    corpus = [json.loads(line) for line in lines]
    classes = sorted({row["label"] for row in corpus})
    rng = random.Random(0)
    texts, labels = [], []
    for i in range(rows):
        row = corpus[i % len(corpus)]
        texts.append(f"{row['text']} #{i}")
        flip = rng.random() < 0.05
        labels.append(next(c for c in classes if c != row["label"]) if flip else row["label"])
    spec = parse_spec({"name": "bench", "source": "s3://raw/x/", "task": "text-classification", "labels": classes})
    ids = list(range(rows))
    tasks = pd.DataFrame({"task_id": ids, "text": texts})
    consensus = pd.DataFrame(
        {"task_id": ids, "label": labels, "finished": True, "flagged": False, "method": "majority", "annotations": 3}
    )
    import importlib

    for module in ("cleanlab.filter", "cleanlab.rank", "sklearn.linear_model"):  # before the clock: the work only
        importlib.import_module(module)

    began = time.perf_counter()
    found = find_suspects(spec, consensus, tasks)
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{rows:>7} rows: {seconds:6.1f} s, peak RSS {peak:5.0f} MiB, {len(found.table)} suspects "
        f"(each fold learns from at most {MAX_TRAIN_ROWS} rows)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one)
        return
    for rows in args.rows:
        subprocess.run([sys.executable, __file__, "--one", str(rows)], check=True)


if __name__ == "__main__":
    main()
