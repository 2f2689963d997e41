"""Audio cleaning benchmark: how fast a 3-hour file is refused against a 30-minute limit, and what the accepted path
(frame walk plus complete decode) costs. Pure, no stack needed:

    .venv/bin/python bench/audio_bench.py

Files are made in memory: a real 3-hour 8 kHz 8-bit WAV (86 MB), header-only 3-hour claims in FLAC and MP3 (Xing),
a real 3-hour constant-bitrate MP3 without a Xing header (frames repeated, so libmpg123 can only estimate its length),
and for the accepted path a 25-minute MP3 and WAV. Prints seconds per call (best of several) and the verdict.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelflow.tasks.audio import inspect_audio, sniff_audio_type  # noqa: E402
from tests import audio_signals as signals  # noqa: E402

LIMIT = 1800.0


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """libmpg123 prints its resync notes straight to file descriptor 2; repeated frames make many."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def repeated_mp3(seconds: float, rate: int = 8000) -> bytes:
    """A constant-bitrate MP3 of `seconds`: one minute of frames (its Xing frame dropped) repeated end to end."""
    minute = signals.mp3_without_xing(signals.mp3_cbr(60.0, rate=rate))
    whole, part = divmod(seconds, 60.0)
    offsets = signals.mpeg_frame_offsets(minute)
    tail = minute[: offsets[int(len(offsets) * part / 60.0)]] if part else b""
    return minute * int(whole) + tail


def timed(label: str, data: bytes, limit: float = LIMIT, repeat: int = 3) -> None:
    media_type = sniff_audio_type(data) or "application/octet-stream"
    best = float("inf")
    with quiet_stderr():
        for _ in range(repeat):
            start = time.perf_counter()
            verdict = inspect_audio(data, "", media_type, limit)
            best = min(best, time.perf_counter() - start)
    outcome = f"accepted {verdict.info.duration_seconds:.1f} s" if verdict.info else verdict.reason
    print(f"{label:<48} {len(data) / 1e6:8.1f} MB {best * 1000:10.2f} ms  {outcome}: {verdict.detail}")


def main() -> None:
    three_hours = signals.THREE_HOURS
    print(f"limit {LIMIT:g} s; best of 3 calls")
    timed("3 h WAV, real (8 kHz 8-bit mono)", signals.long_wav(three_hours))
    timed("3 h WAV header claim over 1 s of data", signals.wav_header_claim(three_hours))
    timed("3 h FLAC STREAMINFO claim over 1 s", signals.flac_header_claim(three_hours))
    timed("3 h MP3 Xing claim over 1 s", signals.mp3_xing_claim(three_hours))
    timed("3 h MP3, real CBR frames, no Xing header", repeated_mp3(three_hours))
    timed("25 min MP3, CBR no Xing (walk + decode)", repeated_mp3(25 * 60.0), repeat=1)
    timed("25 min WAV 8 kHz 8-bit (decode)", signals.long_wav(25 * 60.0), repeat=1)
    timed("3 h WAV decoded in full (limit 4 h)", signals.long_wav(three_hours), limit=4 * 3600.0, repeat=1)


if __name__ == "__main__":
    main()
