"""Audio test signals made on the fly with numpy and soundfile (never shipped): tones, silence, noise, broken files."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import soundfile as sf

from labelflow.tasks.audio import id3v2_end, mpeg_frame_at

FORMATS = ("WAV", "FLAC", "OGG", "MP3")
THREE_HOURS = 3 * 3600.0


def encode(samples: np.ndarray, rate: int, audio_format: str, subtype: str | None = None) -> bytes:
    """Samples (frames x channels, or frames) as a file of this soundfile format, in memory."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=audio_format, subtype=subtype)
    return buffer.getvalue()


def _channels(mono: np.ndarray, channels: int) -> np.ndarray:
    return mono if channels == 1 else np.repeat(mono[:, None], channels, axis=1)


def tone(
    seconds: float = 1.0,
    freq: float = 440.0,
    rate: int = 16000,
    channels: int = 1,
    audio_format: str = "WAV",
    amplitude: float = 0.5,
) -> bytes:
    """A sine tone."""
    t = np.arange(round(seconds * rate)) / rate
    return encode(_channels(amplitude * np.sin(2 * np.pi * freq * t), channels), rate, audio_format)


def silence(seconds: float = 1.0, rate: int = 16000, channels: int = 1, audio_format: str = "WAV") -> bytes:
    """Digital silence."""
    return encode(_channels(np.zeros(round(seconds * rate)), channels), rate, audio_format)


def noise(
    seconds: float = 1.0, rate: int = 16000, audio_format: str = "WAV", amplitude: float = 0.3, seed: int = 0
) -> bytes:
    """Uniform white noise."""
    samples = np.random.default_rng(seed).uniform(-amplitude, amplitude, round(seconds * rate))
    return encode(samples, rate, audio_format)


def truncated_flac(seconds: float = 2.0, keep: float = 0.5) -> bytes:
    """A FLAC tone cut after `keep` of its bytes: STREAMINFO still promises every sample."""
    data = tone(seconds, audio_format="FLAC")
    return data[: int(len(data) * keep)]


def mpeg_frame_offsets(data: bytes) -> list[int]:
    """Byte offsets of the frames of an intact MPEG audio stream."""
    offsets, offset = [], id3v2_end(data)
    while (frame := mpeg_frame_at(data, offset)) is not None:
        offsets.append(offset)
        offset += frame.length
    return offsets


def mp3_with_broken_frame(seconds: float = 2.0) -> bytes:
    """An MP3 tone whose middle frame header is overwritten with zeros (libmpg123 resyncs past it, silently)."""
    data = bytearray(tone(seconds, audio_format="MP3"))
    offsets = mpeg_frame_offsets(bytes(data))
    middle = offsets[len(offsets) // 2]
    data[middle : middle + 4] = b"\x00\x00\x00\x00"
    return bytes(data)


def mp3_cut_at_frame(seconds: float = 2.0) -> bytes:
    """An MP3 tone cut exactly between two frames halfway through: every frame whole, fewer than Xing promises."""
    data = tone(seconds, audio_format="MP3")
    return data[: mpeg_frame_offsets(data)[len(mpeg_frame_offsets(data)) // 2]]


def with_id3v2(data: bytes) -> bytes:
    """The data behind a minimal ID3v2.3 tag holding a title."""
    title = b"\x00tone"  # encoding byte (ISO-8859-1), then the text
    frame = b"TIT2" + struct.pack(">I", len(title)) + b"\x00\x00" + title
    size = len(frame)
    syncsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x03\x00\x00" + syncsafe + frame + data


def mp3_xing_claim(seconds: float) -> bytes:
    """A short MP3 whose Xing header promises `seconds` of frames: a long header claim with little behind it."""
    data = bytearray(tone(1.0, audio_format="MP3"))
    first = mpeg_frame_at(bytes(data), 0)
    assert first is not None
    at = max(data.find(b"Xing", 0, first.length), data.find(b"Info", 0, first.length))
    struct.pack_into(">I", data, at + 8, math.ceil(seconds * first.sample_rate / first.samples))
    return bytes(data)


def flac_header_claim(seconds: float, rate: int = 16000) -> bytes:
    """A short FLAC whose STREAMINFO promises `seconds` of samples."""
    data = bytearray(tone(1.0, rate=rate, audio_format="FLAC"))
    # STREAMINFO body starts at byte 8; its bytes 10..17 pack rate (20 bits), channels, depth, total samples (36).
    (packed,) = struct.unpack_from(">Q", data, 18)
    packed = (packed & ~((1 << 36) - 1)) | int(seconds * rate)
    struct.pack_into(">Q", data, 18, packed)
    return bytes(data)


def wav_header(data_bytes: int, rate: int = 8000, channels: int = 1, bits: int = 16) -> bytes:
    """A canonical 44-byte PCM WAV header whose data chunk claims `data_bytes`."""
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block_align, block_align, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", data_bytes))
    )


def wav_header_no_samples(rate: int = 16000) -> bytes:
    """A valid WAV header with an empty data chunk."""
    return wav_header(0, rate)


def wav_header_claim(seconds: float = THREE_HOURS, rate: int = 8000, present_seconds: float = 1.0) -> bytes:
    """A 16-bit mono WAV header promising `seconds`, followed by only `present_seconds` of a tone."""
    present = tone(present_seconds, rate=rate)[44:]
    return wav_header(int(seconds * rate) * 2, rate) + present


def long_wav(seconds: float = THREE_HOURS, rate: int = 8000) -> bytes:
    """A real, complete 8-bit mono WAV tone (1 kHz at 8 kHz repeats every 8 samples): 86 MB for 3 hours."""
    cycle = np.round(128 + 100 * np.sin(2 * np.pi * np.arange(8) / 8)).astype(np.uint8).tobytes()
    frames = int(seconds * rate)
    return wav_header(frames, rate, bits=8) + cycle * (frames // 8) + cycle[: frames % 8]


def truncated_wav(seconds: float = 2.0, keep: float = 0.5) -> bytes:
    """A WAV tone cut after `keep` of its bytes: the data chunk still promises every frame."""
    data = tone(seconds)
    return data[: int(len(data) * keep)]


def mp3_without_xing(data: bytes) -> bytes:
    """An MP3 stream without its first frame, the Xing/Info frame libsndfile's encoder writes."""
    first = mpeg_frame_at(data, 0)
    assert first is not None
    return data[first.length :]


def mp3_cbr(seconds: float = 2.0, rate: int = 16000) -> bytes:
    """A constant-bitrate MP3 tone (libsndfile writes variable bitrate unless told a mode and a level)."""
    t = np.arange(round(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(
        buffer, 0.5 * np.sin(2 * np.pi * 440 * t), rate, format="MP3", bitrate_mode="CONSTANT", compression_level=0.5
    )
    return buffer.getvalue()


def mp3_vbr_without_xing(seconds: float = 6.0, rate: int = 16000) -> bytes:
    """Variable-bitrate MP3 (tone then noise, each second) with no Xing header: libmpg123 can only estimate its
    length from the first frame's bitrate, and stops decoding at that estimate."""
    t = np.arange(round(seconds * rate)) / rate
    tone_part = 0.5 * np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.5)
    noise_part = 0.3 * np.random.default_rng(0).uniform(-1, 1, len(t)) * (t % 1 >= 0.5)
    buffer = io.BytesIO()
    sf.write(buffer, tone_part + noise_part, rate, format="MP3", bitrate_mode="VARIABLE", compression_level=0.5)
    return mp3_without_xing(buffer.getvalue())


def mp3_understated(seconds: float = 6.0, rate: int = 16000) -> bytes:
    """Half a second at the highest bitrate, then `seconds` at a low one, no Xing header: libmpg123's estimate from
    the first frame's bitrate understates the length about fourfold; only the frames tell the truth."""
    t = np.arange(round(seconds * rate)) / rate
    parts = []
    for level, part in ((0.0, t[: rate // 2]), (0.9, t)):
        buffer = io.BytesIO()
        samples = 0.5 * np.sin(2 * np.pi * 440 * part)
        sf.write(buffer, samples, rate, format="MP3", bitrate_mode="CONSTANT", compression_level=level)
        parts.append(mp3_without_xing(buffer.getvalue()))
    return b"".join(parts)
