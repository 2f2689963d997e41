"""Annotators benchmark: 8 simulated annotators posting through Label Studio's API while an ingest runs. Prints figures.

Each annotator is a real Label Studio user with its own HTTP connection; it annotates every task of one project,
starting at its own offset so that the team works on different tasks at any moment, as people do. While they
work, `labelflow ingest` adds new objects to the same project. Printed: annotations/s, failed requests, the
ingest's wall time and the `database is locked` lines Label Studio logged during the run.

Run against a running stack (`labelflow up`):
    uv run python bench/annotators_bench.py                        # 8 annotators x 120 tasks, 40-object ingest
    uv run python bench/annotators_bench.py --annotators 4 --tasks 40 --ingest 10   # a quick pass
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelflow.infra.local_stack import LocalStack, StackConfig  # noqa: E402
from labelflow.integrations.label_studio import LabelStudioClient, LabelStudioError  # noqa: E402
from labelflow.integrations.resources import Resources  # noqa: E402
from labelflow.tasks.label_config import label_interface  # noqa: E402
from labelflow.tasks.simulate import build_annotators, ensure_users  # noqa: E402
from labelflow.tasks.spec import parse_spec  # noqa: E402

LABELS = ["positive", "negative", "neutral"]
SENTENCES = [
    "The delivery was quick and the packaging intact.",
    "物流很快，包装完好，质量也不错。",
    "Stopped working after two days, very disappointed.",
    "Das Produkt entspricht der Beschreibung.",
    "画面清晰，声音也很好，推荐购买。",
]
LOCKED = b"database is locked"


def line(label: str, value: str) -> None:
    print(f"{label:<52} {value}", flush=True)


def run_ingest(spec: dict, workdir: Path) -> tuple[dict, float]:
    """`labelflow ingest SPEC --json` in a subprocess; returns (summary, seconds)."""
    path = workdir / f"{uuid.uuid4().hex}.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "labelflow.cli", "ingest", str(path), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise SystemExit(f"ingest failed (exit {done.returncode}): {' | '.join(said)}")
    return json.loads(done.stdout[done.stdout.index("{") :]), seconds


def label_studio_server(stack: LocalStack) -> str:
    """How the stack's Label Studio runs (from its state file): the server and its database."""
    state_path = stack.config.run_dir / "label-studio.json"
    if not state_path.is_file():
        return "unknown (not started by this stack)"
    command = json.loads(state_path.read_text())["command"]
    return " ".join(Path(part).name if part.startswith("/") else part for part in command[:4]) + " ..."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=120, help="tasks in the project; each annotator does every one")
    parser.add_argument("--ingest", type=int, default=40, help="new objects ingested while the annotators work")
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "true")

    stack = LocalStack(StackConfig())
    log = stack.log_path("label-studio")
    resources = Resources.from_settings()
    store, ls = resources.store, resources.label_studio_client
    run = uuid.uuid4().hex[:8]
    bucket = f"bench-annot-{run}"
    store.ensure_bucket(bucket)
    workdir = Path(tempfile.mkdtemp(prefix="labelflow-annotators-bench-"))
    print(f"labelflow annotators benchmark (run {run}; Label Studio: {label_studio_server(stack)})\n")

    for i in range(args.tasks):
        store.put_bytes(bucket, f"texts/{i:05d}.txt", f"{SENTENCES[i % 5]} #{i} {run}".encode())
    body = {
        "name": f"bench annotators {run}",
        "source": f"s3://{bucket}/texts/",
        "task": "text-classification",
        "labels": LABELS,
        "state": f"s3://{bucket}-state/",
        "overlap": args.annotators,
    }
    _, seconds = run_ingest(body, workdir)
    line(f"set-up: ingest {args.tasks} tasks (idle server)", f"{seconds:.1f} s")
    project_id = ls.find_project(body["name"])
    assert project_id is not None
    task_ids = ls.task_ids(project_id)
    assert len(task_ids) == args.tasks, (len(task_ids), args.tasks)

    spec = parse_spec(body)
    interface = label_interface(spec)
    annotators = build_annotators([0.9] * args.annotators, 0, prefix=f"bench-{run}")
    user_ids = ensure_users(ls, annotators)
    for i in range(args.ingest):  # the new objects the concurrent ingest picks up
        store.put_bytes(bucket, f"texts/new-{i:05d}.txt", f"{SENTENCES[i % 5]} new #{i} {run}".encode())

    log_start = log.stat().st_size if log.is_file() else 0
    errors: list[str] = []
    lock = threading.Lock()
    posted = 0

    def annotate(index: int) -> None:
        nonlocal posted
        user_id = user_ids[annotators[index].email]
        rng = random.Random(index)
        offset = index * len(task_ids) // args.annotators
        order = task_ids[offset:] + task_ids[:offset]
        client = LabelStudioClient(ls.settings)
        try:
            for task_id in order:
                result = spec.task_type.simulated_result(interface.from_name, interface.to_name, rng.choice(LABELS))
                try:
                    client.create_annotation(task_id, result, user_id, lead_time=1.0)
                except LabelStudioError as exc:
                    with lock:
                        errors.append(str(exc)[:200])
                    continue
                with lock:
                    posted += 1
        finally:
            client.close()

    ingest_result: dict[str, object] = {}

    def ingest_while_annotating() -> None:
        time.sleep(1.0)  # the team is at work first
        try:
            ingest_result["summary"], ingest_result["seconds"] = run_ingest(body, workdir)
        except SystemExit as exc:
            ingest_result["error"] = str(exc)

    began = time.perf_counter()
    ingest_thread = threading.Thread(target=ingest_while_annotating)
    ingest_thread.start()
    with ThreadPoolExecutor(args.annotators) as pool:
        list(pool.map(annotate, range(args.annotators)))
    annotating = time.perf_counter() - began
    ingest_thread.join()

    with log.open("rb") as handle:
        handle.seek(log_start)
        locked = handle.read().count(LOCKED)
    line(
        f"{args.annotators} annotators x {args.tasks} tasks",
        f"{posted} annotations in {annotating:.1f} s = {posted / annotating:.1f} annotations/s",
    )
    line("failed annotation requests", str(len(errors)))
    for message in sorted(set(errors))[:3]:
        line("  e.g.", message)
    if "error" in ingest_result:
        line("concurrent ingest", f"FAILED: {ingest_result['error']}")
    else:
        created = ingest_result["summary"]["tasks_created"]  # type: ignore[index]
        line(f"concurrent ingest of {args.ingest} new objects", f"{ingest_result['seconds']:.1f} s ({created} tasks)")
    line("`database is locked` in Label Studio's log", str(locked))
    ls.delete_project(project_id)


if __name__ == "__main__":
    main()
