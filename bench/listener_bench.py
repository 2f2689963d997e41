"""Event-listener benchmark on the local stack (`labelflow up` first). Prints figures.

1. A burst of N uploads to a bucket no spec reads: how long the filer + listener take to receive and decide on
   every event, and how many route reloads that costs (each unmatched event waits for routes newer than itself).
2. `labelflow deploy` of a new spec, then at once a burst of N uploads into its source: how long until the
   triggered ingest run exists, and how many runs the burst became (debouncing).

    uv run python bench/listener_bench.py                 # 10,000 uploads each
    uv run python bench/listener_bench.py --uploads 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def health(url: str) -> dict[str, Any]:
    """The listener's counters."""
    return httpx.get(f"{url}/health", timeout=10).json()


def burst(store: Any, bucket: str, prefix: str, count: int) -> float:
    """Put `count` small objects with 16 threads; returns seconds."""
    began = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: store.put_bytes(bucket, f"{prefix}{i:06d}.txt", f"event {i}".encode()), range(count)))
    return time.perf_counter() - began


def settle(url: str, received_before: int, count: int, timeout: float = 600) -> tuple[float, dict[str, Any]]:
    """Seconds until the listener received `count` more events and has none queued or parked; its counters."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        state = health(url)
        if state["received"] - received_before >= count and state["queued"] == 0 and state["parked"] == 0:
            return time.perf_counter() - began, state
        time.sleep(0.2)
    raise SystemExit(f"the listener did not settle within {timeout:.0f} s: {health(url)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=10_000, help="objects per burst")
    args = parser.parse_args()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from labelflow.integrations.resources import Resources
    from labelflow.integrations.settings import ListenerSettings, load_settings
    from labelflow.layout import PROJECT_DIR
    from labelflow.orchestration import deploy_spec, parse_every
    from labelflow.runtime import prefect_connection
    from labelflow.tasks.spec import load_spec

    url = load_settings(ListenerSettings).base_url
    store = Resources.from_settings().store
    n = args.uploads

    # 1. Events no spec reads.
    bucket = f"bench-nowhere-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    before = health(url)
    upload_s = burst(store, bucket, "x/", n)
    settle_s, after = settle(url, before["received"], n)
    print(f"1. {n:,} uploads to a bucket no spec reads: uploaded in {upload_s:.1f} s ({n / upload_s:,.0f}/s)")
    print(
        f"   all decided {settle_s:.1f} s after the last upload; unrouted +{after['unrouted'] - before['unrouted']:,}"
    )
    print(f"   route reloads: {after['reloads'] - before['reloads']}, errors +{after['errors'] - before['errors']}")

    # 2. Deploy, then a burst into the new spec's source at once.
    name = f"bench-listen-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(name)
    with tempfile.TemporaryDirectory() as tmp, prefect_connection(), get_client(sync_client=True) as client:
        spec_path = Path(tmp) / f"{name}.yaml"
        spec_path.write_text(
            yaml.safe_dump(
                {
                    "name": name,
                    "source": f"s3://{name}/texts/",
                    "task": "text-classification",
                    "labels": ["a", "b"],
                    "dataset": {"name": name},
                }
            ),
            encoding="utf-8",
        )
        intervals = {stage: parse_every("off") for stage in ("ingest", "collect", "pipeline")}
        deployed = {d.stage: d for d in deploy_spec(client, load_spec(spec_path), spec_path, intervals, PROJECT_DIR)}
        ingest_id = deployed["ingest"].deployment_id
        ingest_runs = DeploymentFilter(id=DeploymentFilterId(any_=[ingest_id]))
        try:
            before = health(url)
            began = time.perf_counter()
            first_run: list[float] = []

            def watch() -> None:  # polls during the burst: when did the listener schedule the run?
                while not first_run and time.perf_counter() - began < 600:
                    if health(url)["runs"] > before["runs"]:
                        first_run.append(time.perf_counter() - began)
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            upload_s = burst(store, name, "texts/", n)
            watcher.join()
            first_run_s = first_run[0]
            settle_s, after = settle(url, before["received"], n)
            runs = client.read_flow_runs(deployment_filter=ingest_runs, limit=200)
            print(f"2. labelflow deploy, then {n:,} uploads into its source at once ({upload_s:.1f} s):")
            print(f"   the first run was scheduled {first_run_s:.1f} s after the first upload")
            print(f"   runs from the burst: {len(runs)}; unrouted +{after['unrouted'] - before['unrouted']:,}")
            print(f"   route reloads: {after['reloads'] - before['reloads']}; settled {settle_s:.1f} s after the burst")
        finally:
            for run in client.read_flow_runs(deployment_filter=ingest_runs, limit=200):
                client.delete_flow_run(run.id)  # no worker needs to take them: nothing to ingest here
            for d in deployed.values():
                client.delete_deployment(d.deployment_id)


if __name__ == "__main__":
    main()
