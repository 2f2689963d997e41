"""Audio cleaning: sniffing from content, header-first duration limits, complete decoding, silence."""

from __future__ import annotations

import io
import re
from typing import get_args

import pytest
import soundfile as sf
from PIL import Image

from labelflow.tasks import audio
from labelflow.tasks.audio import AudioReason, AudioVerdict, inspect_audio, sniff_audio_type, walk_mpeg_frames
from labelflow.tasks.cleaning import Reason
from tests import audio_signals as signals

HALF_HOUR = 1800.0
MEDIA_TYPES = {"WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg", "MP3": "audio/mpeg"}


def inspect(data: bytes, max_duration_seconds: float = HALF_HOUR) -> AudioVerdict:
    """Sniff then inspect, as cleaning does: the type comes from the bytes."""
    return inspect_audio(data, "sha", sniff_audio_type(data) or "application/octet-stream", max_duration_seconds)


def refused(data: bytes, reason: str, max_duration_seconds: float = HALF_HOUR) -> str:
    """Assert the verdict's reason and return its one-line detail."""
    verdict = inspect(data, max_duration_seconds)
    assert verdict.info is None and not verdict.accepted
    assert verdict.reason == reason, verdict.detail
    assert verdict.detail and "\n" not in verdict.detail
    return verdict.detail


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "green").save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("audio_format", signals.FORMATS)
def test_good_audio_is_accepted_with_duration_rate_and_channels(audio_format: str) -> None:
    verdict = inspect(signals.tone(1.5, rate=16000, audio_format=audio_format))
    assert verdict.accepted and verdict.info is not None, verdict.detail
    assert verdict.info.media_type == MEDIA_TYPES[audio_format]
    assert (verdict.info.sample_rate, verdict.info.channels, verdict.info.frames) == (16000, 1, 24000)
    assert verdict.info.duration_seconds == pytest.approx(1.5)


@pytest.mark.parametrize("audio_format", signals.FORMATS)
def test_stereo_at_44k(audio_format: str) -> None:
    verdict = inspect(signals.tone(2.0, rate=44100, channels=2, audio_format=audio_format))
    assert verdict.info is not None, verdict.detail
    assert (verdict.info.sample_rate, verdict.info.channels) == (44100, 2)
    assert verdict.info.duration_seconds == pytest.approx(2.0)


def test_noise_is_sound() -> None:
    assert inspect(signals.noise(audio_format="FLAC")).accepted


def test_type_comes_from_content() -> None:
    for audio_format, media_type in MEDIA_TYPES.items():
        assert sniff_audio_type(signals.tone(audio_format=audio_format)) == media_type
    mp3 = signals.tone(audio_format="MP3")
    assert mp3[:3] != b"ID3", "libsndfile writes bare frames: sniffed by frame sync alone"
    assert sniff_audio_type(signals.with_id3v2(mp3)) == "audio/mpeg"
    assert inspect(signals.with_id3v2(mp3)).accepted


@pytest.mark.parametrize(
    "data",
    [
        b"just some words",
        "数据标注".encode(),
        "\ufeffhello".encode("utf-16"),  # FF FE: a sync-like first byte, but no MPEG frame follows
        b"\xff\xfb\x90\x00" + b"\x00" * 20,  # one plausible MP3 header, then nothing that continues the stream
        b"OggS" + b"\x00" * 22 + b"\x01\x1e\x80theora",  # Ogg video, not audio
        b"%PDF-1.7\n",
        bytes(range(256)) * 4,
    ],
)
def test_text_images_and_other_bytes_are_not_audio(data: bytes) -> None:
    assert sniff_audio_type(data) is None
    assert refused(data, "unsupported_type")


def test_jpeg_is_not_mpeg_audio() -> None:
    data = jpeg()
    assert data[:2] == b"\xff\xd8"  # FF then D8: not the 11 set bits of an MPEG frame sync
    assert sniff_audio_type(data) is None
    assert refused(data, "unsupported_type") == "application/octet-stream is not a supported audio type"


def test_zero_bytes_are_empty() -> None:
    assert refused(b"", "empty") == "zero bytes"


def test_wav_header_with_no_samples_is_empty() -> None:
    data = signals.wav_header_no_samples()
    assert len(data) == 44 and sniff_audio_type(data) == "audio/wav"
    assert refused(data, "empty") == "no samples"


@pytest.mark.parametrize("audio_format", signals.FORMATS)
def test_silence_is_empty(audio_format: str) -> None:
    assert refused(signals.silence(2.0, audio_format=audio_format), "empty").startswith("silent: peak")


def test_silence_threshold() -> None:
    quiet = refused(signals.tone(amplitude=10 ** (-70 / 20)), "empty")  # -70 dBFS, give or take 16-bit rounding
    match = re.fullmatch(r"silent: peak (-\d+\.\d) dBFS, under -60 dBFS", quiet)
    assert match and float(match.group(1)) == pytest.approx(-70, abs=1)
    assert inspect(signals.tone(amplitude=10 ** (-50 / 20))).accepted


def test_truncated_flac_is_corrupt() -> None:
    data = signals.truncated_flac()
    assert sf.info(io.BytesIO(data)).frames == 32000, "its header still promises two seconds"
    assert refused(data, "corrupt").startswith("audio/flac does not decode completely: ")


def test_truncated_wav_is_corrupt_though_libsndfile_reads_it_as_short() -> None:
    data = signals.truncated_wav(2.0)
    assert sf.info(io.BytesIO(data)).frames < 16000 * 2, "libsndfile clamps to the bytes present"
    detail = refused(data, "corrupt")
    assert detail == "audio/wav does not decode completely: 15989 of the 32000 frames its header promises"


def test_truncated_ogg_is_corrupt() -> None:
    data = signals.tone(2.0, audio_format="OGG")
    assert refused(data[: len(data) // 2], "corrupt").startswith("audio/ogg does not decode completely")


def test_mp3_with_a_broken_frame_is_corrupt_though_libsndfile_decodes_it_in_full() -> None:
    data = signals.mp3_with_broken_frame(2.0)
    # libmpg123 resyncs past the damage without an error: soundfile alone would accept this file
    assert len(sf.read(io.BytesIO(data))[0]) > 0.95 * 32000
    detail = refused(data, "corrupt")
    assert detail.startswith("audio/mpeg does not decode completely: no MPEG frame header at byte ")


def test_mp3_cut_between_frames_is_corrupt() -> None:
    detail = refused(signals.mp3_cut_at_frame(2.0), "corrupt")
    assert "MPEG frames where its Xing header promises" in detail


def test_mp3_cut_inside_a_frame_is_corrupt() -> None:
    data = signals.tone(2.0, audio_format="MP3")
    assert "is cut short" in refused(data[:-10], "corrupt")


def test_mp3_frame_walk_accepts_trailing_id3v1_tag() -> None:
    data = signals.tone(audio_format="MP3") + b"TAG" + b"\x00" * 125
    assert walk_mpeg_frames(data).problem is None
    assert inspect(data).accepted


def test_three_hour_wav_header_claim_is_too_long_before_corrupt() -> None:
    data = signals.wav_header_claim(signals.THREE_HOURS)  # promises 3 h, holds 1 s: too long wins, header first
    assert refused(data, "too_long") == ("header promises 3:00:00 (10800 s), over ingest.max_duration_seconds (1800 s)")


def test_a_real_three_hour_wav_is_refused_from_its_header_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = signals.long_wav(signals.THREE_HOURS)
    assert len(data) == 44 + 3 * 3600 * 8000

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the audio was decoded")

    monkeypatch.setattr(sf.SoundFile, "blocks", no_decoding)
    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    assert "3:00:00" in refused(data, "too_long")


@pytest.mark.parametrize(
    "data",
    [signals.flac_header_claim(signals.THREE_HOURS), signals.mp3_xing_claim(signals.THREE_HOURS)],
    ids=["flac", "mp3"],
)
def test_flac_and_mp3_headers_promising_three_hours_are_refused_undecoded(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the audio was decoded or walked")

    monkeypatch.setattr(sf.SoundFile, "blocks", no_decoding)
    monkeypatch.setattr(audio, "walk_mpeg_frames", no_decoding)
    detail = refused(data, "too_long")
    match = re.fullmatch(
        r"header promises \d:\d\d:\d\d \(([\d.]+) s\), over ingest.max_duration_seconds \(1800 s\)", detail
    )
    assert match and float(match.group(1)) == pytest.approx(signals.THREE_HOURS, abs=1), detail


@pytest.mark.parametrize("audio_format", signals.FORMATS)
def test_duration_limit_itself_is_allowed(audio_format: str) -> None:
    assert inspect(signals.tone(2.0, audio_format=audio_format), max_duration_seconds=2.0).accepted


def test_over_the_limit_is_too_long() -> None:
    data = signals.tone(2.0)
    assert refused(data, "too_long", max_duration_seconds=1.5).startswith("header promises 0:00:02 (2 s)")


def test_unsupported_media_type_argument() -> None:
    verdict = inspect_audio(signals.tone(), "sha", "video/mp4", HALF_HOUR)
    assert (verdict.reason, verdict.detail) == ("unsupported_type", "video/mp4 is not a supported audio type")


def test_reasons_are_cleanings_reason_values() -> None:
    assert set(get_args(AudioReason)) <= {reason.value for reason in Reason}  # inspect_content maps each to a Reason


def test_vbr_mp3_without_xing_header_does_not_decode_completely() -> None:
    data = signals.mp3_vbr_without_xing(6.0)
    walk = walk_mpeg_frames(data)
    assert walk.problem is None and walk.seconds > 6.0, "every frame is intact"
    assert len(sf.read(io.BytesIO(data))[0]) < 16000 * 3, "libmpg123 stops at its estimate"
    detail = refused(data, "corrupt")
    assert re.fullmatch(r"audio/mpeg does not decode completely: \d+ of the \d+ samples its frames hold", detail)


def test_cbr_mp3_without_xing_header_is_accepted() -> None:
    data = signals.mp3_without_xing(signals.mp3_cbr(2.0))
    assert sniff_audio_type(data) == "audio/mpeg"
    verdict = inspect(data)
    assert verdict.info is not None and verdict.info.duration_seconds == pytest.approx(2.0, abs=0.1)


def test_mp3_understating_its_length_is_too_long_from_its_frame_headers() -> None:
    data = signals.mp3_understated(6.0)
    assert sf.info(io.BytesIO(data)).duration < 4.0, "libmpg123's estimate from the first frame"
    detail = refused(data, "too_long", max_duration_seconds=4.0)
    assert detail.startswith("frame headers add up to 0:00:06")


def test_inspect_content_routes_audio_by_content_and_refuses_it_in_other_projects() -> None:
    from labelflow.tasks.cleaning import inspect_content

    clip = signals.tone(1.0, 440, 16000, 2, "FLAC")
    accepted = inspect_content(clip, "audio")
    assert accepted.accepted and accepted.media_type == "audio/flac"
    assert (accepted.duration_seconds, accepted.sample_rate, accepted.channels) == (1.0, 16000, 2)
    mp3 = inspect_content(signals.mp3_without_xing(signals.tone(1.0, audio_format="MP3")), "audio")
    assert mp3.media_type == "audio/mpeg"  # no ID3 tag, no extension: the frames say what it is
    for modality in ("text", "image"):
        refused = inspect_content(clip, modality)
        assert (refused.reason, refused.detail) == (
            Reason.WRONG_TYPE,
            f"audio/flac in a{'n' * (modality == 'image')} {modality} project",
        )
    text = inspect_content("一段文字".encode(), "audio")
    assert (text.reason, text.detail) == (Reason.WRONG_TYPE, "text in an audio project")
    too_long = inspect_content(signals.wav_header_claim(3 * 3600.0), "audio", max_duration_seconds=1800)
    assert too_long.reason == Reason.TOO_LONG and "3:00:00" in too_long.detail
    assert inspect_content(b"", "audio").reason == Reason.EMPTY
