"""Ingest benchmark: labelflow vs Label Studio's own S3 sync, 100k objects, and a no-op re-run. Prints figures.

Run against the local stack (`labelflow up` first):
    uv run python bench/ingest_bench.py                      # 10,000 texts + 2,000 images + 2,000 clips, 100,000 texts
    uv run python bench/ingest_bench.py --texts 1000 --images 200 --audio 200 --large 0   # a quick pass
    uv run python bench/ingest_bench.py --texts 0 --images 0 --large 0                    # 2,000 audio clips only
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelflow.integrations.label_studio import LabelStudioClient  # noqa: E402
from labelflow.integrations.object_store import ObjectStore  # noqa: E402
from labelflow.integrations.resources import Resources  # noqa: E402

SENTENCES = [
    "The delivery was quick and the packaging intact.",
    "物流很快，包装完好，质量也不错。",
    "Stopped working after two days, very disappointed.",
    "Das Produkt entspricht der Beschreibung.",
    "画面清晰，声音也很好，推荐购买。",
]


def upload(store: ObjectStore, bucket: str, items: list[tuple[str, bytes]], workers: int = 16) -> float:
    """Put objects in parallel; returns seconds."""
    began = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda kv: store.put_bytes(bucket, kv[0], kv[1]), items))
    return time.perf_counter() - began


def png(i: int) -> bytes:
    buffer = io.BytesIO()
    # unique content per index (identical images would rightly be quarantined as duplicates)
    Image.new("RGB", (64, 64), (i % 256, (i // 256) % 256, (i // 65536) % 256)).save(buffer, "PNG")
    return buffer.getvalue()


def clip(i: int) -> bytes:
    """A short audio clip (0.5-2 s, 16 kHz mono): WAV, FLAC or Ogg Vorbis in turn, each with its own tone."""
    import numpy as np
    import soundfile as sf

    seconds = 0.5 + (i % 4) * 0.5
    t = np.arange(int(seconds * 16000)) / 16000
    buffer = io.BytesIO()
    sf.write(buffer, 0.4 * np.sin(2 * np.pi * (200 + i % 800) * t), 16000, format=("WAV", "FLAC", "OGG")[i % 3])
    return buffer.getvalue()


def run_ingest(spec: dict, workdir: Path) -> tuple[dict, float, float]:
    """Run `labelflow ingest --json` in a subprocess; returns (summary, seconds, peak RSS MB incl. children)."""
    path = workdir / f"{uuid.uuid4().hex}.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return run_cli("ingest", path)


def run_cli(command: str, spec_path: Path) -> tuple[dict, float, float]:
    """Run `labelflow COMMAND SPEC --json` in a subprocess; returns (summary, seconds, peak RSS MB incl. children)."""
    out = spec_path.with_suffix(f".{command}.json")
    errors = spec_path.with_suffix(f".{command}.err")
    began = time.perf_counter()
    with out.open("wb") as stdout, errors.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "labelflow.cli", command, str(spec_path), "--json"],
            cwd=ROOT,
            stdout=stdout,
            stderr=stderr,
        )
        handle = psutil.Process(process.pid)
        peak = 0
        while process.poll() is None:
            try:
                rss = handle.memory_info().rss + sum(c.memory_info().rss for c in handle.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.1)
    seconds = time.perf_counter() - began
    if process.returncode != 0:
        said = (out.read_text(encoding="utf-8") + errors.read_text(encoding="utf-8")).strip().splitlines()[-3:]
        raise SystemExit(f"{command} failed (exit {process.returncode}): {' | '.join(said)}; spec {spec_path}")
    text = out.read_text(encoding="utf-8")
    return json.loads(text[text.index("{") :]), seconds, peak / 1e6


def label_studio_sync(
    ls: LabelStudioClient, store: ObjectStore, bucket: str, prefix: str, config: str
) -> tuple[int, float]:
    """What users do without labelflow: a project with an S3 import storage, synced. Returns (tasks, seconds)."""
    project_id = ls.create_project(title=f"bench LS sync {uuid.uuid4().hex[:6]}", label_config=config)
    storage = ls._request(
        "POST",
        "/api/storages/s3",
        "create storage",
        json={
            "project": project_id,
            "bucket": bucket,
            "prefix": prefix,
            "use_blob_urls": True,
            "presign": True,
            "aws_access_key_id": store.settings.access_key,
            "aws_secret_access_key": store.settings.secret_key.get_secret_value(),
            "region_name": store.settings.region,
        },
    ).json()
    began = time.perf_counter()
    ls._request("POST", f"/api/storages/s3/{storage['id']}/sync", "sync", timeout=3600)
    while True:
        status = ls._request("GET", f"/api/storages/s3/{storage['id']}", "status").json().get("status")
        if status in ("completed", "failed"):
            break
        time.sleep(0.2)
    seconds = time.perf_counter() - began
    return ls.count_tasks(project_id), seconds


def line(label: str, value: str) -> None:
    print(f"{label:<58} {value}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=2_000)
    parser.add_argument("--audio", type=int, default=2_000, help="short audio clips (WAV, FLAC, Ogg)")
    parser.add_argument("--large", type=int, default=100_000, help="small text objects for the scale run (0: skip)")
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "true")

    resources = Resources.from_settings()
    store, ls = resources.store, resources.label_studio_client
    run = uuid.uuid4().hex[:8]
    bucket, state = f"bench-{run}", f"bench-{run}-state"
    store.ensure_bucket(bucket)
    workdir = Path(tempfile.mkdtemp(prefix="labelflow-bench-"))
    print(f"labelflow ingest benchmark (run {run}, bucket {bucket})\n")

    texts = [(f"texts/{i:06d}.txt", f"{SENTENCES[i % 5]} #{i}".encode()) for i in range(args.texts)]
    line(f"upload {args.texts} texts", f"{upload(store, bucket, texts):.1f} s")
    images = [(f"images/{i:06d}.png", png(i)) for i in range(args.images)]
    line(f"upload {args.images} images", f"{upload(store, bucket, images):.1f} s")
    clips = [(f"audio/{i:06d}.{('wav', 'flac', 'ogg')[i % 3]}", clip(i)) for i in range(args.audio)]
    line(f"upload {args.audio} audio clips", f"{upload(store, bucket, clips):.1f} s")

    base = {"labels": ["positive", "negative", "neutral"], "ingest": {"batch_size": 500}}
    for kind, prefix, task, count in (
        ("texts", "texts/", "text-classification", args.texts),
        ("images", "images/", "image-classification", args.images),
        ("audio clips", "audio/", "audio-classification", args.audio),
    ):
        if not count:
            continue
        spec = {
            **base,
            "name": f"bench {kind} {run}",
            "source": f"s3://{bucket}/{prefix}",
            "task": task,
            "state": f"s3://{state}/{prefix}",
        }
        summary, seconds, peak = run_ingest(spec, workdir)
        assert summary["tasks_created"] == count, summary
        line(
            f"labelflow ingest {count} {kind}",
            f"{seconds:.1f} s, {count / seconds:.0f} tasks/s, peak RSS {peak:.0f} MB",
        )
        line("  stages (s)", json.dumps(summary["seconds"]))
        data_key = {"texts": "text", "images": "image"}.get(kind, "audio")
        tag = data_key.capitalize()
        config = (
            f'<View><{tag} name="{data_key}" value="${data_key}"/><Choices name="label" toName="{data_key}">'
            '<Choice value="positive"/><Choice value="negative"/><Choice value="neutral"/></Choices></View>'
        )
        synced, sync_seconds = label_studio_sync(ls, store, bucket, prefix, config)
        line(f"Label Studio S3 sync of the same {count} {kind}", f"{sync_seconds:.1f} s ({synced} tasks)")
        line(
            "  ratio labelflow / Label Studio sync",
            f"{seconds / sync_seconds:.2f}x the time (labelflow also cleans, dedups, records lineage)",
        )
        rerun, rerun_seconds, _ = run_ingest(spec, workdir)
        assert rerun["tasks_created"] == 0
        line(f"  re-run with nothing new over {count}", f"{rerun_seconds:.1f} s")

    if args.large:
        large = [(f"large/{i:07d}.txt", f"{SENTENCES[i % 5]} n={i}".encode()) for i in range(args.large)]
        line(f"upload {args.large} small texts", f"{upload(store, bucket, large, workers=32):.1f} s")
        del large
        spec = {
            **base,
            "name": f"bench large {run}",
            "source": f"s3://{bucket}/large/",
            "task": "text-classification",
            "state": f"s3://{state}/large/",
        }
        summary, seconds, peak = run_ingest(spec, workdir)
        assert summary["tasks_created"] == args.large, summary
        line(
            f"labelflow ingest {args.large} small texts",
            f"{seconds:.1f} s, {args.large / seconds:.0f} tasks/s, peak RSS {peak:.0f} MB",
        )
        line("  stages (s)", json.dumps(summary["seconds"]))
        rerun, rerun_seconds, rerun_peak = run_ingest(spec, workdir)
        assert rerun["tasks_created"] == 0 and rerun["listed"] == args.large
        line(f"re-run with nothing new over {args.large}", f"{rerun_seconds:.1f} s, peak RSS {rerun_peak:.0f} MB")
        line("  stages (s)", json.dumps(rerun["seconds"]))


if __name__ == "__main__":
    main()
