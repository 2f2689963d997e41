"""Wall time of the everyday commands next to bare `python -c pass`. Prints figures.

Sets up its own 200-review project like the demo's (`Demo: 中文评论`) on the stack LABELFLOW_HOME and the
LABELFLOW_STACK_*_PORT variables point at (upload, ingest, three simulated annotators, collect: one published
version), then runs each command N times in a subprocess, stdout a pipe, and prints the median:

    labelflow --help | status | datasets NAME | pull NAME:latest | ingest SPEC (nothing new) | collect SPEC (nothing new)

Goals (issue 16): --help and status within 0.5 s of bare Python; datasets and pull within 2 s; ingest and collect
with nothing to do within 5 s. Bytecode is cached (a private PYTHONPYCACHEPREFIX, warmed by one untimed run of each
command), as on a user's machine after the first run, even where PYTHONDONTWRITEBYTECODE is set.

    LABELFLOW_HOME=.labelflow-test LABELFLOW_STACK_..._PORT=... uv run python bench/cli_bench.py --runs 5
    uv run python bench/cli_bench.py --only help,status        # no project needed
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOALS = {  # seconds over bare Python (help, status) or in all (the rest)
    "--help": ("over python", 0.5),
    "status": ("over python", 0.5),
    "datasets": ("total", 2.0),
    "pull": ("total", 2.0),
    "ingest (nothing new)": ("total", 5.0),
    "collect (nothing new)": ("total", 5.0),
}


def child_env(pycache: Path) -> dict[str, str]:
    """The environment of every timed command: this one, with bytecode cached in a private folder."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


# The checkout whose CLI is timed (`--checkout`): `python -m labelflow.cli` run in it imports its own labelflow.
CHECKOUT = ROOT


def run(argv: list[str], env: dict[str, str], ok_codes: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """(wall seconds, CPU seconds) one subprocess took; fail loudly when it fails."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    result = subprocess.run(argv, cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - began
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if result.returncode not in ok_codes:
        said = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"{' '.join(argv)} failed (exit {result.returncode}): " + " | ".join(said))
    return seconds, cpu


def labelflow(*args: str) -> list[str]:
    """The command line `labelflow ARGS` of the timed checkout."""
    return [sys.executable, "-m", "labelflow.cli", *args]


def set_up_project(name: str, workdir: Path) -> tuple[Path, str]:
    """A 200-review text-classification project with one published version (idempotent): (spec path, dataset)."""
    from labelflow.demo import ANNOTATORS, reviews_sample
    from labelflow.flows.simulate import simulate_annotations
    from labelflow.integrations.resources import Resources
    from labelflow.runtime import prefect_connection
    from labelflow.tasks.quality import parse_gold
    from labelflow.tasks.simulate import build_annotators
    from labelflow.tasks.spec import load_spec

    bucket, dataset = name, name
    uploads, _ = reviews_sample(200, seed=0)
    body = {
        "name": f"CLI bench: {name}",
        "source": f"s3://{bucket}/reviews/",
        "state": f"s3://{bucket}/labelflow-state/",
        "task": "text-classification",
        "labels": ["positive", "negative"],
        "overlap": len(ANNOTATORS),
        "quality": {"aggregation": "dawid-skene", "route_low_agreement": False, "min_annotations_for_tier": 10},
        "dataset": {"name": dataset, "min_rows_per_class": 3},
    }
    spec_path = workdir / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(body, allow_unicode=True, sort_keys=False), encoding="utf-8")
    resources = Resources.from_settings(label_studio_timeout=600)
    resources.store.ensure_bucket(bucket)
    for key, payload, _ in uploads:
        resources.store.put_bytes(bucket, key, payload)
    env = dict(os.environ)
    print(f"setup: ingest {len(uploads)} reviews", flush=True)
    run(labelflow("ingest", str(spec_path)), env)
    truth_csv = "source_uri,label\n" + "".join(f"s3://{bucket}/{key},{label}\n" for key, _, label in uploads)
    spec = load_spec(spec_path)
    print("setup: three simulated annotators", flush=True)
    with prefect_connection():
        simulate_annotations(
            resources, spec, build_annotators(ANNOTATORS, 0), parse_gold(truth_csv.encode(), "truth.csv", spec.labels)
        )
    print("setup: collect (publishes version 1 the first time)", flush=True)
    run(labelflow("collect", str(spec_path)), env)
    return spec_path, dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (the median is printed)")
    parser.add_argument("--name", default="cli-bench", help="bucket, project and dataset name of the bench project")
    parser.add_argument("--only", default="", help="comma-separated: help,status,datasets,pull,ingest,collect")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="time this checkout's CLI (e.g. an old revision)")
    args = parser.parse_args()
    global CHECKOUT
    CHECKOUT = args.checkout.resolve()
    only = {item.strip() for item in args.only.split(",") if item.strip()}
    pycache = Path(tempfile.gettempdir()) / "labelflow-cli-bench-pycache"
    env = child_env(pycache)
    workdir = Path(tempfile.mkdtemp(prefix="labelflow-cli-bench-"))

    commands: dict[str, tuple[list[str], tuple[int, ...]]] = {
        "--help": (labelflow("--help"), (0,)),
        "status": (labelflow("status"), (0, 1)),
    }
    if not only or only & {"datasets", "pull", "ingest", "collect"}:
        spec_path, dataset = set_up_project(args.name, workdir)
        commands |= {
            "datasets": (labelflow("datasets", dataset), (0,)),
            "pull": (labelflow("pull", f"{dataset}:latest", "--out", str(workdir / "pulled")), (0,)),
            "ingest (nothing new)": (labelflow("ingest", str(spec_path)), (0,)),
            "collect (nothing new)": (labelflow("collect", str(spec_path)), (0,)),
        }
    if only:
        commands = {label: c for label, c in commands.items() if label.lstrip("-").split(" ")[0] in only}

    bare = [sys.executable, "-c", "pass"]
    run(bare, env)
    for argv, ok in commands.values():  # warm the bytecode cache and the servers' caches, untimed
        run(argv, env, ok)
    python = statistics.median(run(bare, env)[0] for _ in range(args.runs))
    print(
        f"\n{CHECKOUT}: {args.runs} runs each, median seconds (wall, and CPU of the process and its children); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'command':<24}{'wall s':>8}{'over python':>13}{'CPU s':>8}   goal (wall)")
    print(f"{'python -c pass':<24}{python:>8.2f}{'':>13}")
    for label, (argv, ok) in commands.items():
        timings = [run(argv, env, ok) for _ in range(args.runs)]
        wall, cpu = statistics.median(t[0] for t in timings), statistics.median(t[1] for t in timings)
        kind, limit = GOALS[label]
        measured = wall - python if kind == "over python" else wall
        verdict = "met" if measured <= limit else "MISSED"
        goal = f"{'+' if kind == 'over python' else '<='}{limit:g} s {verdict}"
        print(f"{label:<24}{wall:>8.2f}{wall - python:>13.2f}{cpu:>8.2f}   {goal}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
