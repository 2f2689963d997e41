"""Decompression-bomb benchmark: peak RSS of `labelflow ingest` over a bucket of PNG bombs, and what it quarantined.

The bucket: six 15000 x 15000 RGB PNGs (225 MP, about 0.65 MB each in the bucket, 900 MB each once Pillow decodes
them), one 18000 x 18000 (324 MP), and some ordinary images. Ingest runs as `python -m labelflow.cli ingest --json`
in a subprocess, exactly as the CLI runs it, against the local stack (`labelflow up` first):

    .venv/bin/python bench/bomb_bench.py                       # this checkout's code
    git archive HEAD | tar -x -C /tmp/before
    .venv/bin/python bench/bomb_bench.py --tree /tmp/before    # another checkout's code, same stack

Everything it creates (objects, the Label Studio project) is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import psutil
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import labelflow.tasks.ingest  # noqa: E402
from labelflow.integrations.object_store import ObjectStore  # noqa: E402
from labelflow.integrations.resources import Resources  # noqa: E402
from labelflow.integrations.settings import labelflow_home  # noqa: E402
from labelflow.tasks.spec import S3Location  # noqa: E402


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def compressed_zero_rows(width: int, height: int, bytes_per_pixel: int) -> bytes:
    """IDAT payload of an all-black image: one filter byte and width*bpp zero bytes per row, deflated."""
    row = b"\x00" * (1 + width * bytes_per_pixel)
    compressor = zlib.compressobj(9)
    return b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()


def png_bomb(width: int, height: int, idat: bytes, tag: str) -> bytes:
    """A valid 8-bit RGB PNG; `tag` (a tEXt chunk) makes each copy's bytes unique so none is a duplicate."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            png_chunk(b"IHDR", header),
            png_chunk(b"tEXt", b"Comment\x00" + tag.encode()),
            png_chunk(b"IDAT", idat),
            png_chunk(b"IEND", b""),
        ]
    )


def ordinary_png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (i * 40 % 256, 90, 160)).save(buffer, "PNG")
    return buffer.getvalue()


def run_ingest(tree: Path, spec: dict[str, Any], workdir: Path) -> tuple[dict[str, Any], float, float, float]:
    """`labelflow ingest --json` with `tree`'s code; (summary, seconds, polled peak RSS MiB, the child's ru_maxrss MiB)."""
    path = workdir / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    env = {**os.environ, "LABELFLOW_HOME": str(labelflow_home()), "PYTHONPATH": str(tree)}
    out_path, err_path = workdir / "ingest.out", workdir / "ingest.err"
    began = time.perf_counter()
    with out_path.open("wb") as stdout, err_path.open("wb") as stderr:  # files: a full pipe would stall the child
        process = subprocess.Popen(
            [sys.executable, "-m", "labelflow.cli", "ingest", str(path), "--json"],
            cwd=tree,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
        handle = psutil.Process(process.pid)
        peak = 0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)  # this child's own rusage once it ends
            if pid:
                break
            with contextlib.suppress(psutil.Error):
                rss = handle.memory_info().rss + sum(c.memory_info().rss for c in handle.children(recursive=True))
                peak = max(peak, rss)
            time.sleep(0.05)
    seconds = time.perf_counter() - began
    max_rss_kb = usage.ru_maxrss  # KB on Linux
    returncode = os.waitstatus_to_exitcode(status)
    process.returncode = returncode
    if returncode != 0:
        raise SystemExit(f"ingest failed (exit {returncode}); see {err_path}")
    text = out_path.read_text(encoding="utf-8")
    return json.loads(text[text.index("{") :]), seconds, peak / 2**20, max_rss_kb / 1024


def report(
    store: ObjectStore, what: str, summary: dict[str, Any], seconds: float, peak_mb: float, max_rss_mb: float
) -> None:
    """Print one ingest's figures and its quarantine report."""
    print(
        f"ingest of the {what}: {seconds:.1f} s, peak RSS {peak_mb:.0f} MiB (process tree, polled every 50 ms), "
        f"ru_maxrss {max_rss_mb:.0f} MiB"
    )
    print(f"tasks created: {summary['tasks_created']}, quarantined: {summary['quarantined_by_reason']}")
    report_bucket, report_key = summary["quarantine_report"].removeprefix("s3://").split("/", 1)
    for row in csv.DictReader(io.StringIO(store.get_bytes(report_bucket, report_key).decode())):
        print(f"  {row['uri'].rsplit('/', 1)[-1]}: {row['reason']}: {row['detail']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose labelflow code runs the ingest")
    parser.add_argument("--bombs", type=int, default=6, help="15000 x 15000 RGB PNGs")
    parser.add_argument("--normal", type=int, default=10, help="ordinary 640 x 480 PNGs")
    parser.add_argument(
        "--near-limit", type=int, default=8, help="9500 x 9500 RGB PNGs (90 MP, under the limit) ingested in a 2nd run"
    )
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "true")

    resources = Resources.from_settings()
    store, ls = resources.store, resources.label_studio_client
    run = uuid.uuid4().hex[:8]
    bucket = f"bench-bombs-{run}"
    spec = {
        "name": f"bench bombs {run}",
        "source": f"s3://{bucket}/in/",
        "state": f"s3://{bucket}/state/",
        "task": "image-classification",
        "labels": ["cat", "dog"],
    }
    near_spec = {**spec, "name": f"bench near-limit {run}", "source": f"s3://{bucket}/near/"}
    near_spec["state"] = f"s3://{bucket}/state-near/"
    store.ensure_bucket(bucket)
    workdir = Path(tempfile.mkdtemp(prefix="labelflow-bomb-bench-"))
    print(f"bomb bench (run {run}, bucket {bucket}, code from {args.tree})", flush=True)
    try:
        objects: dict[str, bytes] = {}
        idat = compressed_zero_rows(15000, 15000, 3)
        for i in range(args.bombs):
            objects[f"in/bomb-15000-{i}.png"] = png_bomb(15000, 15000, idat, f"copy {i}")
        objects["in/bomb-18000.png"] = png_bomb(18000, 18000, compressed_zero_rows(18000, 18000, 3), "huge")
        for i in range(args.normal):
            objects[f"in/photo-{i}.png"] = ordinary_png(i)
        for key, data in objects.items():
            store.put_bytes(bucket, key, data)
        bomb_bytes = sum(len(v) for k, v in objects.items() if "bomb" in k)
        print(f"uploaded {len(objects)} objects; the {args.bombs + 1} bombs take {bomb_bytes / 2**20:.1f} MiB")

        summary, seconds, peak_mb, max_rss_mb = run_ingest(args.tree, spec, workdir)
        report(store, "bombs", summary, seconds, peak_mb, max_rss_mb)

        if args.near_limit:
            # images the pixel limit lets through, each 344 MiB decoded: only the pool's shared budget bounds these
            idat = compressed_zero_rows(9500, 9500, 3)
            for i in range(args.near_limit):
                store.put_bytes(bucket, f"near/large-9500-{i}.png", png_bomb(9500, 9500, idat, f"large {i}"))
            print(f"\nuploaded {args.near_limit} 9500x9500 RGB PNGs (90 MP each, under the 100 MP default)")
            summary, seconds, peak_mb, max_rss_mb = run_ingest(args.tree, near_spec, workdir)
            report(store, "near-limit images", summary, seconds, peak_mb, max_rss_mb)
    finally:
        for name in (spec["name"], near_spec["name"]):
            project_id = ls.find_project(name)
            if project_id:
                ls.delete_project(project_id)
        index_key = getattr(
            labelflow.tasks.ingest, "state_index_key", None
        )  # a registry of custom state locations, if any
        if index_key is not None:
            for prefix in ("state", "state-near"):
                store.delete("labelflow-state", index_key(S3Location(bucket=bucket, prefix=prefix)))
        for item in list(store.list_objects(bucket)):
            store.delete(bucket, item.key)
        store._client.delete_bucket(Bucket=bucket)


if __name__ == "__main__":
    main()
