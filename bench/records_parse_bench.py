"""Record-file parse benchmark: a large JSONL file through `iter_records`, 1 MiB chunks from disk. Prints figures.

Needs no stack. The file (preference-style records of about 1 KB, English and Chinese, with a nested chat and
unmapped metadata) is written to a temporary file in /tmp and deleted at the end unless --keep:

    .venv/bin/python bench/records_parse_bench.py              # about 2 GB
    .venv/bin/python bench/records_parse_bench.py --mb 300     # a quicker pass
    .venv/bin/python bench/records_parse_bench.py --file /tmp/records.jsonl   # parse an existing file

Peak RSS is the process's high-water mark (getrusage), so it covers the whole run; the design goal for a 2 GB
file is well under 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelflow.tasks.records import ParsedRecord, RecordsSummary, iter_records  # noqa: E402
from labelflow.tasks.spec import RecordsSpec  # noqa: E402

CHUNK_BYTES = 1 << 20
SPEC = RecordsSpec(
    fields={"prompt": "messages.0.content", "responses": ["chosen", "rejected"]},
    id="id",
)
PROMPTS = [
    "Explain why the sky looks blue at noon but red at sunset, for a curious ten-year-old.",
    "用三句话解释为什么正午的天空是蓝色的，而日落时是红色的。",
    "Write a short, polite e-mail declining a meeting invitation for next Tuesday.",
]
ANSWER = (
    "Sunlight is made of many colours. Air molecules scatter short (blue) wavelengths much more than long (red) "
    "ones, so at noon blue light reaches your eyes from every direction of the sky. At sunset the light crosses far "
    "more air, most blue is scattered away before it arrives, and the reds and oranges remain. "
)
ANSWER_ZH = "阳光由多种颜色组成。空气分子对短波长的蓝光散射得更强，所以正午时天空四处都是蓝色；日落时光线穿过更厚的大气层，蓝光大多被散射掉，剩下红色和橙色。"


def record_line(index: int) -> bytes:
    """One JSONL line of about 1 KB, unique by its index (a duplicate would be quarantined, not parsed)."""
    record = {
        "id": f"rec-{index:09d}",
        "messages": [{"role": "user", "content": f"{PROMPTS[index % 3]} (#{index})"}],
        "chosen": f"{ANSWER}{ANSWER_ZH} [{index}]",
        "rejected": f"It is blue because the sky reflects the ocean. [{index}]",
        "meta": {"source": "bench", "model_a": "model-a", "model_b": "model-b", "score": index % 7 / 7},
    }
    return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"


def write_file(path: Path, megabytes: int) -> tuple[int, float]:
    """Stream records to `path` until it holds `megabytes` MB; returns (records, seconds)."""
    began = time.perf_counter()
    target = megabytes * 1_000_000
    written = records = 0
    with path.open("wb", buffering=CHUNK_BYTES) as out:
        while written < target:
            line = record_line(records)
            out.write(line)
            written += len(line)
            records += 1
    return records, time.perf_counter() - began


def chunks_of(path: Path) -> Iterator[bytes]:
    """The file in 1 MiB chunks, as a streaming S3 GET hands them over."""
    with path.open("rb", buffering=0) as file:
        while chunk := file.read(CHUNK_BYTES):
            yield chunk


def peak_rss_mb() -> float:
    """The process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=2048, help="size of the generated JSONL file, in MB (1e6 bytes)")
    parser.add_argument("--file", type=Path, help="parse this JSONL file instead of generating one")
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    args = parser.parse_args()

    path = args.file
    if path is None:
        handle, name = tempfile.mkstemp(prefix="records-bench-", suffix=".jsonl", dir="/tmp")
        os.close(handle)
        path = Path(name)
        records, seconds = write_file(path, args.mb)
        print(f"wrote {path}: {records:,} records, {path.stat().st_size / 1e6:,.0f} MB in {seconds:.1f} s")
    size = path.stat().st_size
    try:
        rss_before = psutil.Process().memory_info().rss / 2**20
        peak_before = peak_rss_mb()
        summary = RecordsSummary()
        reasons: Counter[str] = Counter()
        began = time.perf_counter()
        for result in iter_records(chunks_of(path), path.name, SPEC, summary=summary):
            if not isinstance(result, ParsedRecord):
                reasons[result.reason] += 1
        seconds = time.perf_counter() - began
        total = summary.accepted + sum(summary.rejected.values())
        print(f"parsed {size / 1e6:,.0f} MB, {total:,} records in {seconds:.1f} s")
        print(f"  {total / seconds:,.0f} records/s, {size / 1e6 / seconds:,.1f} MB/s")
        print(f"  accepted {summary.accepted:,}, rejected {dict(reasons) or 0}")
        print(f"  RSS before parsing {rss_before:.0f} MB (peak so far {peak_before:.0f} MB)")
        print(
            f"  RSS after (parser freed) {psutil.Process().memory_info().rss / 2**20:.0f} MB, peak RSS {peak_rss_mb():.0f} MB"
        )
    finally:
        if args.file is None and not args.keep:
            path.unlink()


if __name__ == "__main__":
    main()
