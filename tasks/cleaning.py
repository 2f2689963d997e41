"""Pure checks that decide whether a raw object becomes a task or goes to quarantine, and why."""

from __future__ import annotations

import hashlib
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Literal

import numpy as np
from charset_normalizer import from_bytes
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from labelflow.tasks.spec import IngestOptions

DEFAULT_MAX_IMAGE_PIXELS: int = IngestOptions.model_fields["max_image_pixels"].default
DEFAULT_MAX_DURATION_SECONDS: float = IngestOptions.model_fields["max_duration_seconds"].default
# Each sniffed image type opens with its own Pillow plugin rather than `Image.open`: that reads the header without
# Pillow's process-wide decompression-bomb guard (a global that only errors above 2 x its value), so the spec's
# `ingest.max_image_pixels` alone decides, per call, before any pixel is decoded. The same header-first rule is
# meant for audio and record files when those task types arrive: a header that promises hours or gigabytes is
# refused before decoding.
IMAGE_PLUGINS: dict[str, type[ImageFile.ImageFile]] = {
    "image/png": PngImagePlugin.PngImageFile,
    "image/jpeg": JpegImagePlugin.JpegImageFile,
    "image/gif": GifImagePlugin.GifImageFile,
    "image/webp": WebPImagePlugin.WebPImageFile,
    "image/bmp": BmpImagePlugin.BmpImageFile,
    "image/tiff": TiffImagePlugin.TiffImageFile,
}
ONE_BYTE_MODES = frozenset({"1", "L", "P"})  # Pillow keeps 1-bit images one byte a pixel; most other modes take 4
MIN_PRINTABLE_RATIO = 0.9
TEXT_SLICE_CHARS = 1 << 20  # judged a slice at a time: 4 MB of UTF-32 at most, whatever the text's size


class Reason(StrEnum):
    """Why an object was quarantined."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    TOO_LONG = "too_long"
    CORRUPT = "corrupt"
    UNDECODABLE_TEXT = "undecodable_text"
    WRONG_TYPE = "wrong_type"
    UNSUPPORTED_TYPE = "unsupported_type"
    DUPLICATE = "duplicate"
    UNADDRESSABLE_KEY = "unaddressable_key"


@dataclass(frozen=True)
class Inspection:
    """What the content of one object turned out to be."""

    sha256: str
    media_type: str
    reason: Reason | None = None
    detail: str = ""
    text: str | None = None
    encoding: str | None = None
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None  # audio: what decoding found
    sample_rate: int | None = None
    channels: int | None = None

    @property
    def accepted(self) -> bool:
        """True when the object can become a task."""
        return self.reason is None


IMAGE_SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"BM", 0, "image/bmp"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
]
OTHER_SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"%PDF-", 0, "application/pdf"),
    (b"PK\x03\x04", 0, "application/zip"),
    (b"\x1f\x8b", 0, "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", 0, "application/x-7z-compressed"),
    # Audio is recognised first, by tasks/audio.sniff_audio_type (an Ogg stream whose first packet is not audio
    # is video or data; an MP3 needs no ID3 tag).
    (b"OggS", 0, "application/ogg"),
    (b"ftyp", 4, "video/mp4"),
    (b"\x1aE\xdf\xa3", 0, "video/webm"),
    (b"\x7fELF", 0, "application/x-executable"),
    (b"SQLite format 3\x00", 0, "application/vnd.sqlite3"),
]
BOMS: list[tuple[bytes, str]] = [
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
]


def sniff_media_type(data: bytes) -> str:
    """Media type from the content's signature; `text/plain` for text-like bytes, else octet-stream."""
    from labelflow.tasks.audio import sniff_audio_type  # soundfile loads libsndfile: only once something is sniffed

    audio = sniff_audio_type(data)
    if audio is not None:
        return audio
    for table in (IMAGE_SIGNATURES, OTHER_SIGNATURES):
        for signature, offset, media_type in table:
            if data[offset : offset + len(signature)] == signature:
                if media_type == "image/webp" and data[:4] != b"RIFF":
                    continue
                return media_type
    # The type comes from the start; inspect_text then refuses a NUL anywhere in the whole text.
    if any(data.startswith(bom) for bom, _ in BOMS) or b"\x00" not in data[:8192]:
        return "text/plain"
    return "application/octet-stream"


def decode_text(data: bytes, preferred: Sequence[str] = ()) -> tuple[str, str] | None:
    """Decode text: BOM, strict UTF-8, the spec's declared encodings in order, then detection (GB18030, Big5 ...)."""
    for bom, codec in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec), codec.removesuffix("-sig")
            except UnicodeDecodeError:
                return None
    for codec in ("utf-8", *preferred):
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError:
            continue
    best = from_bytes(data).best()
    if best is None or best.encoding is None:
        return None
    text = str(best)
    if "\x00" in text or best.chaos > 0.2:
        return None
    return text, best.encoding


@cache
def _unprintable_code_points() -> np.ndarray:
    """For every code point, whether it is neither printable nor whitespace (built once, on first use)."""
    table = np.zeros(sys.maxunicode + 1, dtype=bool)
    table[[code for code in range(sys.maxunicode + 1) if not (chr(code).isprintable() or chr(code).isspace())]] = True
    return table


def _printable_ratio(text: str) -> float:
    """Share of the whole text that is printable or whitespace, counted slice by slice at C speed."""
    if not text:
        return 1.0
    unprintable_table = _unprintable_code_points()
    unprintable = 0
    for start in range(0, len(text), TEXT_SLICE_CHARS):
        piece = text[start : start + TEXT_SLICE_CHARS].encode("utf-32-le", "surrogatepass")
        unprintable += int(np.count_nonzero(unprintable_table[np.frombuffer(piece, dtype=np.uint32)]))
    return 1 - unprintable / len(text)


def inspect_text(data: bytes, sha256: str, encodings: Sequence[str] = ()) -> Inspection:
    """Accept decodable, non-blank text; normalise it to a Python str (stored as UTF-8). The whole text is judged."""
    decoded = decode_text(data, encodings)
    if decoded is None:
        return Inspection(sha256, "text/plain", Reason.UNDECODABLE_TEXT, "not UTF-8 and no other encoding detected")
    text, encoding = decoded
    nul = text.find("\x00")
    if nul >= 0:
        # Label Studio on PostgreSQL refuses NUL in task text, and no real document carries one.
        return Inspection(
            sha256, "text/plain", Reason.UNDECODABLE_TEXT, f"decoded as {encoding} but has a NUL at character {nul}"
        )
    if _printable_ratio(text) < MIN_PRINTABLE_RATIO:
        return Inspection(
            sha256, "text/plain", Reason.UNDECODABLE_TEXT, f"decoded as {encoding} but mostly control characters"
        )
    if not text.strip():
        return Inspection(sha256, "text/plain", Reason.EMPTY, "only whitespace")
    return Inspection(sha256, "text/plain", text=text, encoding=encoding)


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header promises, read without decoding a pixel."""

    width: int
    height: int
    mode: str

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        """Memory Pillow allocates to decode it: one byte a pixel for 1-bit, grey and palette images, else four."""
        return self.pixels * (1 if self.mode in ONE_BYTE_MODES else 4)


def _open_image(data: bytes, media_type: str) -> ImageFile.ImageFile:
    """Open with the sniffed type's plugin: parses the header only (pixels are decoded by `load`)."""
    plugin = IMAGE_PLUGINS.get(media_type)
    if plugin is None:
        raise UnidentifiedImageError(f"no image plugin for {media_type}")
    return plugin(io.BytesIO(data))


def read_image_header(data: bytes) -> ImageHeader | None:
    """Size and mode from an image's header; None for anything that is not an image with a readable header."""
    media_type = sniff_media_type(data)
    if not media_type.startswith("image/"):
        return None
    try:
        with _open_image(data, media_type) as image:
            return ImageHeader(*image.size, image.mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:g} MP"


def decoded_size_estimate(data: bytes, modality: Literal["text", "image", "audio"], max_image_pixels: int) -> int:
    """Bytes that inspecting this object will decode into: an image within the pixel limit, else nothing (audio is
    decoded a bounded block at a time)."""
    if modality != "image":
        return 0
    header = read_image_header(data)
    if header is None or header.pixels > max_image_pixels:
        return 0  # refused from its header or unreadable: never decoded
    return header.decoded_bytes


def inspect_image(
    data: bytes, sha256: str, media_type: str, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> Inspection:
    """Refuse from the header an image over the pixel limit; accept others only if they decode completely."""
    try:
        with _open_image(data, media_type) as probe:
            width, height = probe.size
            if width * height > max_image_pixels:
                detail = (
                    f"{width}x{height} = {_megapixels(width * height)} exceeds ingest.max_image_pixels "
                    f"({_megapixels(max_image_pixels)})"
                )
                return Inspection(sha256, media_type, Reason.TOO_LARGE, detail)
            probe.verify()
        with _open_image(data, media_type) as image:
            image.load()
    except Image.DecompressionBombError as exc:  # Pillow's own guard still covers GIF frames and TIFF tiles
        return Inspection(sha256, media_type, Reason.TOO_LARGE, f"image too large to decode safely: {exc}")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return Inspection(sha256, media_type, Reason.CORRUPT, f"{media_type} does not decode: {exc}")
    if width == 0 or height == 0:
        return Inspection(sha256, media_type, Reason.EMPTY, "image has no pixels")
    return Inspection(sha256, media_type, width=width, height=height)


def _a_project(modality: str) -> str:
    return f"{'an' if modality[0] in 'aeiou' else 'a'} {modality} project"


def inspect_audio_object(data: bytes, sha256: str, media_type: str, max_duration_seconds: float) -> Inspection:
    """Refuse from the header audio over the duration limit; accept other audio only if all of it decodes to sound."""
    from labelflow.tasks.audio import inspect_audio

    verdict = inspect_audio(data, sha256, media_type, max_duration_seconds)
    if verdict.info is None:
        return Inspection(sha256, media_type, Reason(verdict.reason), verdict.detail)
    info = verdict.info
    return Inspection(
        sha256,
        media_type,
        duration_seconds=round(info.duration_seconds, 3),
        sample_rate=info.sample_rate,
        channels=info.channels,
    )


def inspect_content(
    data: bytes,
    modality: Literal["text", "image", "audio"],
    encodings: Sequence[str] = (),
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_duration_seconds: float = DEFAULT_MAX_DURATION_SECONDS,
) -> Inspection:
    """Decide from the bytes alone (never the file name) whether an object fits a project of this modality."""
    sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        return Inspection(sha256, "application/x-empty", Reason.EMPTY, "zero bytes")
    media_type = sniff_media_type(data)
    if media_type.startswith("audio/"):
        if modality != "audio":
            return Inspection(sha256, media_type, Reason.WRONG_TYPE, f"{media_type} in {_a_project(modality)}")
        return inspect_audio_object(data, sha256, media_type, max_duration_seconds)
    if media_type.startswith("image/"):
        if modality != "image":
            return Inspection(sha256, media_type, Reason.WRONG_TYPE, f"{media_type} in {_a_project(modality)}")
        return inspect_image(data, sha256, media_type, max_image_pixels)
    if media_type == "text/plain":
        if modality != "text":
            inspected = inspect_text(data, sha256, encodings)
            what = (
                "text" if inspected.accepted else f"neither {'an image' if modality == 'image' else 'audio'} nor text"
            )
            return Inspection(sha256, media_type, Reason.WRONG_TYPE, f"{what} in {_a_project(modality)}")
        return inspect_text(data, sha256, encodings)
    return Inspection(sha256, media_type, Reason.UNSUPPORTED_TYPE, f"{media_type} is not supported")


def unaddressable_reason(key: str) -> str | None:
    """Why Label Studio could not reference this key by an s3:// URI (it parses '?' and '#'), or None."""
    bad = sorted({ch for ch in key if ch in "?#" or ord(ch) < 32 or ord(ch) == 127})
    if bad:
        return f"key contains {bad!r}, which Label Studio cannot resolve in an s3:// URI"
    return None
