"""Wall time of `labelflow open SPEC TARGET` for each target, next to bare `python -c pass`. Prints figures.

Needs a spec that has been ingested and collected (with a `dataset` section, for the dataset target) on the stack
LABELFLOW_HOME and the LABELFLOW_STACK_*_PORT variables point at. Each command runs in a subprocess, N times; the
report, Data Docs and quarantine copies go to a fresh cache folder, so the first run of each copies every file and
the later ones find them current (the figures show both).

    LABELFLOW_HOME=.labelflow-test LABELFLOW_STACK_..._PORT=... uv run python bench/open_bench.py SPEC --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("report", "docs", "quarantine", "project", "dataset")


def timed(argv: list[str]) -> tuple[float, str]:
    """(wall seconds, stdout) of one subprocess; fail loudly when it fails."""
    began = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path, help="an ingested and collected spec")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    python = [sys.executable, "-c", "pass"]
    bare = statistics.median(timed(python)[0] for _ in range(args.runs))
    print(f"python -c pass: {bare:.2f} s (median of {args.runs})")
    with tempfile.TemporaryDirectory(prefix="labelflow-open-bench-") as cache:
        for target in args.targets.split(","):
            command = [sys.executable, "-m", "labelflow.cli", "open", str(args.spec), target, "--json"]
            command += ["--cache", cache]
            first_seconds, first_out = timed(command)
            first = json.loads(first_out)
            later = [timed(command) for _ in range(max(args.runs - 1, 1))]
            last = json.loads(later[-1][1])
            copy = ""
            if first.get("path"):
                copy = (
                    f"; first call copied {first['downloaded']} files, later calls {last['downloaded']} "
                    f"({last['unchanged']} unchanged)"
                )
            print(
                f"open {target:<10} first {first_seconds:.2f} s, then median {statistics.median(s for s, _ in later):.2f} s"
                f"{copy}"
            )


if __name__ == "__main__":
    main()
