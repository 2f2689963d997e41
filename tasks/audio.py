"""Pure checks for audio objects: sniff the container from its bytes, refuse from the header, then decode all of it."""

from __future__ import annotations

import io
import math
import re
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf

# The strings of tasks/cleaning.py's Reason (cleaning imports this module, so importing Reason here would be a cycle).
AudioReason = Literal["corrupt", "empty", "too_long", "unsupported_type"]

AUDIO_MEDIA_TYPES = frozenset({"audio/wav", "audio/flac", "audio/ogg", "audio/mpeg"})
# Peak below which decoded audio counts as silent. -60 dBFS is far under any recorded sound (quiet speech peaks
# around -30 dBFS) yet well above what encoders leave in digital silence (16-bit dither sits near -90 dBFS, MP3 and
# Vorbis noise floors lower still), so a track of encoded nothing is `empty` while a faint real recording is not.
SILENCE_PEAK_DBFS = -60.0
SILENCE_PEAK = 10 ** (SILENCE_PEAK_DBFS / 20)
DECODE_BLOCK_SAMPLES = 1 << 18  # samples per decoded block, all channels together: 1 MB of float32 at a time

# Ogg carries video and text too: only streams whose first packet names an audio codec libsndfile decodes are audio.
OGG_AUDIO_CODECS = (b"\x01vorbis", b"OpusHead", b"\x7fFLAC")
# MPEG audio frame header tables, indexed [version][layer][bitrate index] in kbit/s; version 1 is MPEG-1, 2 is
# MPEG-2 and MPEG-2.5 (which share their bitrates); bitrate index 0 is "free format", which has no computable length.
MPEG_BITRATES_KBPS: dict[int, dict[int, tuple[int, ...]]] = {
    1: {
        1: (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
        2: (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
        3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    },
    2: {
        1: (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
        2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
        3: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    },
}
MPEG_SAMPLE_RATES: dict[int, tuple[int, int, int]] = {
    0b11: (44100, 48000, 32000),  # MPEG-1
    0b10: (22050, 24000, 16000),  # MPEG-2
    0b00: (11025, 12000, 8000),  # MPEG-2.5
}
# Tags that may follow the last MPEG frame: ID3v1, APEv2, Lyrics3, an appended ID3v2.
MPEG_TRAILING_TAGS = (b"TAG", b"APETAGEX", b"LYRICSBEGIN", b"ID3")
# RIFF format tags whose data is whole frames of block_align bytes (PCM, IEEE float, A-law, mu-law, extensible).
WAV_FRAME_FORMATS = frozenset({0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE})
BYTES_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")  # soundfile names the buffer it was given
WAV_UNKNOWN_SIZE = 0xFFFFFFFF  # what streaming writers put in a data chunk they could not go back and size
# Samples libmpg123 may rightly drop from what the frames hold: the encoder delay and end padding that a LAME tag
# declares (12 bits each) are trimmed for gapless playback.
MPEG_GAPLESS_TRIM_SAMPLES = 2 * 4095


@dataclass(frozen=True)
class AudioInfo:
    """What an accepted audio object decoded to."""

    media_type: str
    duration_seconds: float
    sample_rate: int
    channels: int
    frames: int


@dataclass(frozen=True)
class AudioVerdict:
    """Either the decoded audio's facts, or why it is refused (a cleaning Reason value) with a one-line detail."""

    info: AudioInfo | None = None
    reason: AudioReason | None = None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        """True when the audio can become a task."""
        return self.reason is None


@dataclass(frozen=True)
class MpegFrame:
    """One MPEG audio frame header, decoded."""

    version: int  # 0b11 MPEG-1, 0b10 MPEG-2, 0b00 MPEG-2.5
    layer: int  # 1, 2 or 3
    sample_rate: int
    channels: int
    length: int  # bytes, header included
    samples: int  # per channel


def mpeg_frame_at(data: bytes, offset: int) -> MpegFrame | None:
    """The MPEG audio frame header at offset, or None if the bytes there are not one (or are free format)."""
    if offset + 4 > len(data):
        return None
    b0, b1, b2, b3 = data[offset : offset + 4]
    # 11 set sync bits: JPEG's FF D8 fails here; UTF-16's FF FE passes (as Layer I) and is caught by the field checks
    # below or, in sniffing, by the absence of a second frame where this one ends.
    if b0 != 0xFF or b1 & 0xE0 != 0xE0:
        return None
    version, layer_bits = (b1 >> 3) & 0b11, (b1 >> 1) & 0b11
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 0b11, (b2 >> 1) & 1
    if version == 0b01 or layer_bits == 0 or bitrate_index in (0, 0b1111) or rate_index == 0b11 or b3 & 0b11 == 0b10:
        return None  # reserved version, layer, bitrate, sample rate or emphasis; or free format
    layer = 4 - layer_bits
    bitrate = MPEG_BITRATES_KBPS[1 if version == 0b11 else 2][layer][bitrate_index] * 1000
    sample_rate = MPEG_SAMPLE_RATES[version][rate_index]
    if layer == 1:
        length, samples = (12 * bitrate // sample_rate + padding) * 4, 384
    elif layer == 3 and version != 0b11:
        length, samples = 72 * bitrate // sample_rate + padding, 576
    else:
        length, samples = 144 * bitrate // sample_rate + padding, 1152
    channels = 1 if b3 >> 6 == 0b11 else 2
    return MpegFrame(version, layer, sample_rate, channels, length, samples)


def id3v2_end(data: bytes) -> int:
    """Offset just past a leading ID3v2 tag (0 when there is none)."""
    if len(data) < 10 or data[:3] != b"ID3":
        return 0
    size = 0
    for byte in data[6:10]:  # a "syncsafe" integer: 7 bits a byte
        size = (size << 7) | (byte & 0x7F)
    footer = 10 if data[5] & 0x10 else 0
    return 10 + size + footer


def _is_mpeg_stream(data: bytes, offset: int) -> bool:
    """A frame header at offset, followed by another frame of the same stream (or by the end of the data)."""
    first = mpeg_frame_at(data, offset)
    if first is None:
        return False
    following = offset + first.length
    if following >= len(data):
        return following == len(data)
    second = mpeg_frame_at(data, following)
    return second is not None and (second.version, second.layer, second.sample_rate) == (
        first.version,
        first.layer,
        first.sample_rate,
    )


def sniff_audio_type(data: bytes) -> str | None:
    """The audio media type of these bytes from their content alone (WAV, FLAC, Ogg audio, MPEG audio), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:4] == b"fLaC":
        return "audio/flac"
    if data[:4] == b"OggS":
        # First page: 27-byte header, then one lacing value per segment, then the first packet.
        packet = 27 + (data[26] if len(data) > 26 else 0)
        return "audio/ogg" if data[packet : packet + 8].startswith(OGG_AUDIO_CODECS) else None
    if data[:3] == b"ID3":
        return "audio/mpeg"
    # No tag: two consecutive frame headers, so that text or image bytes that open with FF Ex are not taken for MP3.
    return "audio/mpeg" if _is_mpeg_stream(data, 0) else None


def _xing_frame_count(data: bytes, first: MpegFrame, offset: int) -> int | None:
    """Audio frames promised by a Xing/Info header in the stream's first frame (which itself holds no audio)."""
    body = data[offset : offset + first.length]
    for marker in (b"Xing", b"Info"):
        at = body.find(marker, 4, 64)
        if at >= 0 and at + 12 <= len(body):
            (flags,) = struct.unpack_from(">I", body, at + 4)
            if flags & 1:
                return struct.unpack_from(">I", body, at + 8)[0]
    return None


@dataclass(frozen=True)
class MpegWalk:
    """An MPEG audio stream walked frame header by frame header: its audio frames, or why the walk broke."""

    frames: int
    samples_per_frame: int
    sample_rate: int
    problem: str | None = None

    @property
    def seconds(self) -> float:
        """Duration of the whole frames walked (encoder delay and padding included)."""
        return self.frames * self.samples_per_frame / self.sample_rate


def walk_mpeg_frames(data: bytes) -> MpegWalk:
    """Follow every frame header of an MPEG audio stream to the end or a trailing tag, noting the first break: a
    header out of sync, a format change, a cut last frame, or a frame count other than its Xing header's."""
    # libmpg123 hides all of these: it skips bytes until it finds a sync and pads or trims the output to the Xing
    # count, so soundfile reports a damaged MP3 as complete. Payload damage inside a frame is invisible to both (LAME
    # writes no CRC by default, and Layer III's CRC covers only the side information).
    offset = id3v2_end(data)
    first = mpeg_frame_at(data, offset)
    if first is None:
        return MpegWalk(0, 1152, 44100, f"no MPEG audio frame at byte {offset}")
    promised = _xing_frame_count(data, first, offset)
    stream = (first.version, first.layer, first.sample_rate, first.channels)
    frames, problem = 0, None
    while offset < len(data):
        frame = mpeg_frame_at(data, offset)
        if frame is None:
            if not data.startswith(MPEG_TRAILING_TAGS, offset):
                problem = f"no MPEG frame header at byte {offset} (after frame {frames})"
            break
        if (frame.version, frame.layer, frame.sample_rate, frame.channels) != stream:
            problem = f"frame {frames} at byte {offset} changes the stream's format"
            break
        if offset + frame.length > len(data):
            problem = f"frame {frames} at byte {offset} is cut short ({len(data) - offset} of {frame.length} bytes)"
            break
        offset += frame.length
        frames += 1
    audio_frames = frames - 1 if promised is not None else frames  # a Xing/Info frame carries no audio
    if problem is None and promised is not None and audio_frames != promised:
        problem = f"has {audio_frames} MPEG frames where its Xing header promises {promised}"
    return MpegWalk(audio_frames, first.samples, first.sample_rate, problem)


def wav_header_claim(data: bytes) -> tuple[int, int] | None:
    """Frames and sample rate a WAV's own fmt and data chunks promise; None when its header cannot say."""
    # libsndfile clamps a WAV's frame count to the bytes present, so a header promising hours over a few seconds of
    # data reads as a short file: only the RIFF header itself tells that it was cut or is lying.
    offset, block_align, format_tag, rate = 12, 0, 0, 0
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk_id == b"fmt " and body + 14 <= len(data):
            format_tag, _, rate, _, block_align = struct.unpack_from("<HHIIH", data, body)
        elif chunk_id == b"data":
            if size == WAV_UNKNOWN_SIZE or format_tag not in WAV_FRAME_FORMATS or block_align == 0 or rate == 0:
                return None
            return size // block_align, rate
        offset = body + size + (size & 1)  # chunks are padded to an even length
    return None


def _clock(seconds: float) -> str:
    """Seconds as h:mm:ss for details ('3:00:00'), with the exact seconds alongside."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d} ({seconds:g} s)"


def _too_long(what: str, seconds: float, limit: float) -> str:
    return f"{what} {_clock(seconds)}, over ingest.max_duration_seconds ({limit:g} s)"


def inspect_audio(data: bytes, sha256: str, media_type: str, max_duration_seconds: float) -> AudioVerdict:
    """Refuse from the header audio over the duration limit; accept other audio only if all of it decodes to sound."""
    del sha256  # the caller's identity for the object; the verdict is the same for identical bytes
    if not data:
        return AudioVerdict(reason="empty", detail="zero bytes")
    if media_type not in AUDIO_MEDIA_TYPES:
        return AudioVerdict(reason="unsupported_type", detail=f"{media_type} is not a supported audio type")
    claim = wav_header_claim(data) if media_type == "audio/wav" else None
    walk: MpegWalk | None = None
    if claim is not None and claim[0] / claim[1] > max_duration_seconds:
        return AudioVerdict(
            reason="too_long", detail=_too_long("header promises", claim[0] / claim[1], max_duration_seconds)
        )
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            rate, channels = audio.samplerate, audio.channels
            # For MP3 this is the Xing header's count or libmpg123's estimate from the byte length and first
            # bitrate: neither decodes the stream (bench/audio_bench.py times a 3-hour file).
            header_frames = audio.frames if claim is None else max(claim[0], audio.frames)
            if rate <= 0:
                return AudioVerdict(reason="corrupt", detail=f"{media_type} header gives sample rate {rate}")
            if header_frames / rate > max_duration_seconds:
                return AudioVerdict(
                    reason="too_long", detail=_too_long("header promises", header_frames / rate, max_duration_seconds)
                )
            if media_type == "audio/mpeg":
                walk = walk_mpeg_frames(data)
                # Every frame header together may outweigh the first's estimate; less what gapless playback trims.
                if walk.seconds - MPEG_GAPLESS_TRIM_SAMPLES / rate > max_duration_seconds:
                    return AudioVerdict(
                        reason="too_long",
                        detail=_too_long("frame headers add up to", walk.seconds, max_duration_seconds),
                    )
                if walk.problem is not None:
                    return AudioVerdict(
                        reason="corrupt", detail=f"{media_type} does not decode completely: {walk.problem}"
                    )
            # libsndfile reads no further than the frame count it reported, already held to the limit above.
            decoded, peak = 0, 0.0
            for block in audio.blocks(blocksize=max(1, DECODE_BLOCK_SAMPLES // channels), dtype="float32"):
                decoded += len(block)
                if len(block):
                    peak = max(peak, float(np.abs(block).max()))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        message = (
            BYTES_REPR.sub("the bytes", str(exc).strip()).splitlines()[0] if str(exc).strip() else type(exc).__name__
        )
        return AudioVerdict(reason="corrupt", detail=f"{media_type} does not decode completely: {message}")
    # An MP3 is measured against its frames, not its header: without a Xing header the reported count is libmpg123's
    # estimate from the first frame's bitrate, and a VBR stream then decodes only that far.
    if walk is not None and decoded + MPEG_GAPLESS_TRIM_SAMPLES < walk.frames * walk.samples_per_frame:
        detail = f"{decoded} of the {walk.frames * walk.samples_per_frame} samples its frames hold"
        return AudioVerdict(reason="corrupt", detail=f"{media_type} does not decode completely: {detail}")
    if walk is None and decoded < header_frames:
        detail = f"{decoded} of the {header_frames} frames its header promises"
        return AudioVerdict(reason="corrupt", detail=f"{media_type} does not decode completely: {detail}")
    if decoded == 0:
        return AudioVerdict(reason="empty", detail="no samples")
    if peak < SILENCE_PEAK:
        level = f"{20 * math.log10(peak):.1f} dBFS" if peak > 0 else "digital zero"
        return AudioVerdict(reason="empty", detail=f"silent: peak {level}, under {SILENCE_PEAK_DBFS:g} dBFS")
    return AudioVerdict(AudioInfo(media_type, decoded / rate, rate, channels, decoded))
