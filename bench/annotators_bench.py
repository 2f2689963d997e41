"""Annotators benchmark: 8 simulated annotators posting through Label Studio's API while an ingest runs. Prints figures.

Each annotator is a real Label Studio user with its own HTTP connection; it annotates every task of one project,
starting at its own offset so that the team works on different tasks at any moment, as people do. While they
work, `labelflow ingest` adds new objects to the same project. Printed: annotations/s, failed requests, the
ingest's wall time and the `database is locked` lines Label Studio logged during the run, with the CPU Label Studio
used and the machine's load (other work on the machine shares its cores).

`--compare-runserver` measures before and after in one run on the same stack: first the stack's Label Studio as it
runs (gunicorn, SQLite in WAL mode), then the same benchmark (a fresh project, the same sizes) against Label Studio
as labelflow used to start it: `label-studio start` (Django's runserver, one process) on the same port, data
directory and environment, with the settings module of that time (no WAL, no IMMEDIATE transactions, no busy
timeout; the database file is switched back to SQLite's rollback journal). Then it restores the stack's own Label
Studio (`labelflow up`) and prints both side by side.

Run against a running stack (`labelflow up`):
    uv run python bench/annotators_bench.py                        # 8 annotators x 120 tasks, 40-object ingest
    uv run python bench/annotators_bench.py --annotators 4 --tasks 40 --ingest 10   # a quick pass
    uv run python bench/annotators_bench.py --compare-runserver    # runserver vs gunicorn, one run, same stack
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelflow.infra.credentials import Credentials  # noqa: E402
from labelflow.infra.local_stack import LocalStack, StackConfig  # noqa: E402
from labelflow.infra.services import Service, build_services  # noqa: E402
from labelflow.infra.stack_config import LOOPBACK  # noqa: E402
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
# Label Studio's settings as they were under runserver (before WAL): a module beside this script.
RUNSERVER_SETTINGS_DIR = Path(__file__).resolve().parent / "label_studio_runserver"
RUNSERVER_SETTINGS_MODULE = "labelflow_label_studio_runserver_settings"


def line(label: str, value: str) -> None:
    print(f"{label:<52} {value}", flush=True)


@dataclass
class Figures:
    """What one benchmark run measured."""

    server: str
    journal_mode: str
    annotations: int
    seconds: float
    failed: int
    locked: int
    ingest_seconds: float | None  # None: the concurrent ingest failed
    label_studio_cpu_seconds: float  # Label Studio's processes, while the annotators worked
    client_cpu_seconds: float  # this process (the annotators' HTTP clients), over the same time
    machine_busy_cores: float  # every process on the machine, averaged over the same time
    load_before: float  # 1-minute load average as the annotators started
    load_after: float  # ... and as they finished
    server_cores: int  # cores Label Studio can use at once: runserver is one Python process (its GIL), gunicorn more

    @property
    def cpu_ceiling(self) -> float:
        """Annotations/s if Label Studio had `server_cores` cores to itself at the CPU per annotation measured."""
        return (
            self.server_cores * self.annotations / self.label_studio_cpu_seconds
            if self.label_studio_cpu_seconds
            else 0.0
        )

    @property
    def rate(self) -> float:
        """Annotations per second."""
        return self.annotations / self.seconds if self.seconds else 0.0


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
    """How the stack's Label Studio runs (from its state file): `gunicorn`, `runserver` or unknown."""
    state_path = stack.config.run_dir / "label-studio.json"
    if not state_path.is_file():
        return "unknown (not started by this stack)"
    command = json.loads(state_path.read_text())["command"]
    if "start" in command and Path(command[0]).name == "label-studio":
        return "runserver (label-studio start)"
    return f"gunicorn, {command[-1]} workers" if command[-1].isdigit() else " ".join(command[:4])


def label_studio_cores(stack: LocalStack) -> int:
    """How many cores the stack's Label Studio can keep busy: 1 for runserver (one process), else its workers."""
    state_path = stack.config.run_dir / "label-studio.json"
    try:
        command = json.loads(state_path.read_text())["command"]
    except (OSError, ValueError, KeyError):
        return 1
    if "start" in command:  # `label-studio start`: runserver, whose last argument is the port
        return 1
    workers = int(command[-1]) if command and command[-1].isdigit() else 1
    return min(workers, psutil.cpu_count() or 1)


def label_studio_database(config: StackConfig) -> Path:
    """Label Studio's SQLite file in the stack's data directory (its default DATABASE_NAME)."""
    return config.data_dir / "label-studio" / "label_studio.sqlite3"


def journal_mode(config: StackConfig) -> str:
    """Label Studio's database and, for SQLite, the journal mode its file header records (read without opening it)."""
    if config.database == "postgres":
        return "PostgreSQL"
    try:
        with label_studio_database(config).open("rb") as handle:
            header = handle.read(20)
    except OSError:
        return "SQLite (no file)"
    # Byte 18 of the header, the file format write version: 1 rollback journal, 2 WAL.
    return {1: "SQLite, rollback journal", 2: "SQLite, WAL"}.get(header[18] if len(header) > 18 else 0, "SQLite")


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of the processes still alive."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def label_studio_processes(stack: LocalStack) -> list[psutil.Process]:
    """The stack's Label Studio process and its children (gunicorn's workers)."""
    state_path = stack.config.run_dir / "label-studio.json"
    try:
        root = psutil.Process(int(json.loads(state_path.read_text())["pid"]))
        return [root, *root.children(recursive=True)]
    except (OSError, ValueError, KeyError, psutil.Error):
        return []


def busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def benchmark(stack: LocalStack, args: argparse.Namespace) -> Figures:
    """One run: set up a fresh project, let the annotators work while an ingest runs, print and return the figures."""
    log = stack.log_path("label-studio")
    resources = Resources.from_settings()
    store, ls = resources.store, resources.label_studio_client
    run = uuid.uuid4().hex[:8]
    bucket = f"bench-annot-{run}"
    store.ensure_bucket(bucket)
    workdir = Path(tempfile.mkdtemp(prefix="labelflow-annotators-bench-"))
    server, database = label_studio_server(stack), journal_mode(stack.config)
    print(f"labelflow annotators benchmark (run {run}; Label Studio: {server}; {database})\n", flush=True)

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

    server_processes = label_studio_processes(stack)
    server_cpu_before, busy_before, load_before = cpu_seconds(server_processes), busy_seconds(), os.getloadavg()[0]
    client_cpu_before = cpu_seconds([psutil.Process()])
    began = time.perf_counter()
    ingest_thread = threading.Thread(target=ingest_while_annotating)
    ingest_thread.start()
    with ThreadPoolExecutor(args.annotators) as pool:
        list(pool.map(annotate, range(args.annotators)))
    annotating = time.perf_counter() - began
    server_cpu = cpu_seconds(server_processes) - server_cpu_before
    client_cpu = cpu_seconds([psutil.Process()]) - client_cpu_before
    busy_cores = (busy_seconds() - busy_before) / annotating
    load_after = os.getloadavg()[0]
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
    ingest_seconds: float | None = None
    if "error" in ingest_result:
        line("concurrent ingest", f"FAILED: {ingest_result['error']}")
    else:
        ingest_seconds = float(ingest_result["seconds"])  # type: ignore[arg-type]
        created = ingest_result["summary"]["tasks_created"]  # type: ignore[index]
        line(f"concurrent ingest of {args.ingest} new objects", f"{ingest_seconds:.1f} s ({created} tasks)")
    line("`database is locked` in Label Studio's log", str(locked))
    line(
        "Label Studio CPU per annotation",
        f"{1000 * server_cpu / max(posted, 1):.0f} ms ({server_cpu / annotating:.2f} cores busy on average)",
    )
    line(
        f"machine ({psutil.cpu_count()} cores)",
        f"{busy_cores:.2f} cores busy on average (the annotators' clients {client_cpu / annotating:.2f}); "
        f"load average (1 min) {load_before:.2f} -> {load_after:.2f}",
    )
    print(flush=True)
    ls.delete_project(project_id)
    return Figures(
        server=server,
        journal_mode=database,
        annotations=posted,
        seconds=annotating,
        failed=len(errors),
        locked=locked,
        ingest_seconds=ingest_seconds,
        label_studio_cpu_seconds=server_cpu,
        client_cpu_seconds=client_cpu,
        machine_busy_cores=busy_cores,
        load_before=load_before,
        load_after=load_after,
        server_cores=label_studio_cores(stack),
    )


def runserver_service(config: StackConfig) -> Service:
    """The stack's Label Studio as labelflow started it before gunicorn: `label-studio start`, the old settings."""
    service = next(
        s for s in build_services(config, Credentials.load_or_create(config.home)) if s.name == "label-studio"
    )
    service.command = [
        str(config.label_studio_venv / "bin" / "label-studio"),
        "start",
        "--no-browser",
        "--internal-host",
        LOOPBACK,
        "--port",
        str(config.label_studio_port),
    ]
    # Same port, data directory, credentials and variables; only the settings module is the one of that time.
    service.env = {
        **service.env,
        "DJANGO_SETTINGS_MODULE": RUNSERVER_SETTINGS_MODULE,
        "PYTHONPATH": str(RUNSERVER_SETTINGS_DIR),
    }
    return service


def switch_to_runserver(stack: LocalStack) -> None:
    """Stop the stack's Label Studio and start runserver in its place (recorded as the stack's, so `down` stops it)."""
    print("switching Label Studio to runserver (label-studio start) ...", flush=True)
    stack.stop("label-studio")
    if stack.config.database == "sqlite":
        # WAL is stored in the database file: back to SQLite's default rollback journal, as before the change. The
        # stack's settings switch it to WAL again when its own Label Studio next opens the file.
        with contextlib.closing(sqlite3.connect(label_studio_database(stack.config))) as connection:
            connection.execute("PRAGMA journal_mode=DELETE").fetchone()
    service = runserver_service(stack.config)
    began = time.monotonic()
    # The supervisor's own start writes the state file: `labelflow down` stops runserver even if this script dies.
    stack._start(service)
    stack._wait_healthy([service], {service.name: began})
    print(f"runserver answers after {time.monotonic() - began:.0f} s\n", flush=True)


def restore_label_studio(stack: LocalStack) -> None:
    """Stop runserver and let `labelflow up` start the stack's own Label Studio again."""
    print("restoring the stack's Label Studio (labelflow up) ...", flush=True)
    stack.stop("label-studio")
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "labelflow.cli", "up"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise SystemExit(f"`labelflow up` failed (exit {done.returncode}): {' | '.join(said)}")
    print(
        f"restored in {time.monotonic() - began:.0f} s: {label_studio_server(stack)}; {journal_mode(stack.config)}\n",
        flush=True,
    )


def ratio(after: float | None, before: float | None) -> str:
    """after / before as `N.NNx`, or a dash when either is missing or zero."""
    if not after or not before:
        return "-"
    return f"{after / before:.2f}x"


def print_comparison(before: Figures, after: Figures, args: argparse.Namespace) -> None:
    """The two runs side by side, with after/before."""

    def row(label: str, old: str, new: str, change: str = "") -> None:
        print(f"{label:<40} {old:>26} {new:>26} {change:>14}", flush=True)

    def seconds(value: float | None) -> str:
        return "FAILED" if value is None else f"{value:.1f}"

    print(f"before / after, {args.annotators} annotators x {args.tasks} tasks, concurrent ingest of {args.ingest}")
    row("", "before: runserver", "after: gunicorn", "after/before")
    row("Label Studio database", before.journal_mode, after.journal_mode)
    row("annotations/s", f"{before.rate:.1f}", f"{after.rate:.1f}", ratio(after.rate, before.rate))
    row("annotations posted", str(before.annotations), str(after.annotations))
    row("failed annotation requests", str(before.failed), str(after.failed))
    row("`database is locked` log lines", str(before.locked), str(after.locked))
    row(
        "concurrent ingest wall time (s)",
        seconds(before.ingest_seconds),
        seconds(after.ingest_seconds),
        ratio(after.ingest_seconds, before.ingest_seconds),
    )
    row(
        "Label Studio CPU ms per annotation",
        f"{1000 * before.label_studio_cpu_seconds / max(before.annotations, 1):.0f}",
        f"{1000 * after.label_studio_cpu_seconds / max(after.annotations, 1):.0f}",
    )
    row(
        "Label Studio cores busy",
        f"{before.label_studio_cpu_seconds / before.seconds:.2f}",
        f"{after.label_studio_cpu_seconds / after.seconds:.2f}",
    )
    row(
        "CPU-bound ceiling, annotations/s (*)",
        f"{before.cpu_ceiling:.1f} ({before.server_cores} core)",
        f"{after.cpu_ceiling:.1f} ({after.server_cores} cores)",
        ratio(after.cpu_ceiling, before.cpu_ceiling),
    )
    row(
        "annotators' clients cores busy",
        f"{before.client_cpu_seconds / before.seconds:.2f}",
        f"{after.client_cpu_seconds / after.seconds:.2f}",
    )
    row(
        f"machine cores busy (of {psutil.cpu_count()})",
        f"{before.machine_busy_cores:.2f}",
        f"{after.machine_busy_cores:.2f}",
    )
    row(
        "load average, 1 min (start -> end)",
        f"{before.load_before:.2f} -> {before.load_after:.2f}",
        f"{after.load_before:.2f} -> {after.load_after:.2f}",
    )
    print(
        "(*) the rate if Label Studio had the cores it can use to itself, at its measured CPU per annotation: "
        "runserver is one process, gunicorn's workers run in parallel"
    )
    speed_up = after.rate / before.rate if before.rate else 0.0
    print(
        f"\nthroughput after/before {speed_up:.2f}x (goal 3x: {'reached' if speed_up >= 3 else 'not reached'}); "
        f"`database is locked` after: {after.locked} (goal 0: {'met' if after.locked == 0 else 'not met'}); "
        f"failed requests after: {after.failed}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=120, help="tasks in the project; each annotator does every one")
    parser.add_argument("--ingest", type=int, default=40, help="new objects ingested while the annotators work")
    parser.add_argument(
        "--compare-runserver",
        action="store_true",
        help="also run against `label-studio start` (runserver, as before gunicorn) on the same stack, then restore it",
    )
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "true")

    stack = LocalStack(StackConfig())
    stack.config = stack.recorded_config()  # the ports this home's services were started with
    if not args.compare_runserver:
        benchmark(stack, args)
        return
    if not stack.running("label-studio"):
        raise SystemExit("Label Studio is not running in this stack: start it with `labelflow up` first")
    after = benchmark(stack, args)
    try:
        switch_to_runserver(stack)
        before = benchmark(stack, args)
    finally:
        restore_label_studio(stack)
    print_comparison(before, after, args)


if __name__ == "__main__":
    main()
