"""Pure checks that decide whether a raw object becomes a task or goes to quarantine, and why."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from charset_normalizer import from_bytes
from PIL import Image, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 200_000_000  # refuse decompression bombs beyond ~200 megapixels


class Reason(StrEnum):
    """Why an object was quarantined."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
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
    (b"ID3", 0, "audio/mpeg"),
    (b"OggS", 0, "audio/ogg"),
    (b"fLaC", 0, "audio/flac"),
    (b"WAVE", 8, "audio/wav"),
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
    for table in (IMAGE_SIGNATURES, OTHER_SIGNATURES):
        for signature, offset, media_type in table:
            if data[offset : offset + len(signature)] == signature:
                if media_type == "image/webp" and data[:4] != b"RIFF":
                    continue
                if media_type == "audio/wav" and data[:4] != b"RIFF":
                    continue
                return media_type
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


def _printable_ratio(text: str) -> float:
    sample = text[:4096]
    if not sample:
        return 1.0
    printable = sum(1 for ch in sample if ch.isprintable() or ch.isspace())
    return printable / len(sample)


def inspect_text(data: bytes, sha256: str, encodings: Sequence[str] = ()) -> Inspection:
    """Accept decodable, non-blank text; normalise it to a Python str (stored as UTF-8)."""
    decoded = decode_text(data, encodings)
    if decoded is None:
        return Inspection(sha256, "text/plain", Reason.UNDECODABLE_TEXT, "not UTF-8 and no other encoding detected")
    text, encoding = decoded
    if _printable_ratio(text) < 0.9:
        return Inspection(
            sha256, "text/plain", Reason.UNDECODABLE_TEXT, f"decoded as {encoding} but mostly control characters"
        )
    if not text.strip():
        return Inspection(sha256, "text/plain", Reason.EMPTY, "only whitespace")
    return Inspection(sha256, "text/plain", text=text, encoding=encoding)


def inspect_image(data: bytes, sha256: str, media_type: str) -> Inspection:
    """Accept images that decode completely (truncated or corrupt files are rejected)."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
    except Image.DecompressionBombError as exc:
        return Inspection(sha256, media_type, Reason.TOO_LARGE, f"image too large to decode safely: {exc}")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return Inspection(sha256, media_type, Reason.CORRUPT, f"{media_type} does not decode: {exc}")
    if width == 0 or height == 0:
        return Inspection(sha256, media_type, Reason.EMPTY, "image has no pixels")
    return Inspection(sha256, media_type, width=width, height=height)


def inspect_content(data: bytes, modality: Literal["text", "image"], encodings: Sequence[str] = ()) -> Inspection:
    """Decide from the bytes alone (never the file name) whether an object fits a project of this modality."""
    sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        return Inspection(sha256, "application/x-empty", Reason.EMPTY, "zero bytes")
    media_type = sniff_media_type(data)
    if media_type.startswith("image/"):
        if modality != "image":
            return Inspection(sha256, media_type, Reason.WRONG_TYPE, f"{media_type} in a {modality} project")
        return inspect_image(data, sha256, media_type)
    if media_type == "text/plain":
        if modality != "text":
            inspected = inspect_text(data, sha256, encodings)
            what = "text" if inspected.accepted else "neither an image nor text"
            return Inspection(sha256, media_type, Reason.WRONG_TYPE, f"{what} in an image project")
        return inspect_text(data, sha256, encodings)
    return Inspection(sha256, media_type, Reason.UNSUPPORTED_TYPE, f"{media_type} is not supported")


def unaddressable_reason(key: str) -> str | None:
    """Why Label Studio could not reference this key by an s3:// URI (it parses '?' and '#'), or None."""
    bad = sorted({ch for ch in key if ch in "?#" or ord(ch) < 32 or ord(ch) == 127})
    if bad:
        return f"key contains {bad!r}, which Label Studio cannot resolve in an s3:// URI"
    return None
