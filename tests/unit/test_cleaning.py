"""Content-based cleaning: every quarantine reason, encodings, and key safety."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tasks.cleaning import Reason, decode_text, inspect_content, sniff_media_type, unaddressable_reason


def png(size: tuple[int, int] = (16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "blue").save(buffer, "PNG")
    return buffer.getvalue()


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "green").save(buffer, "JPEG")
    return buffer.getvalue()


def test_valid_images_are_accepted_with_their_size() -> None:
    result = inspect_content(png((16, 12)), "image")
    assert result.accepted and (result.width, result.height) == (16, 12)
    assert result.media_type == "image/png"
    assert inspect_content(jpeg(), "image").media_type == "image/jpeg"


def test_truncated_and_corrupt_images_are_rejected() -> None:
    truncated = jpeg()[:-200]
    assert inspect_content(truncated, "image").reason is Reason.CORRUPT
    garbage = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    assert inspect_content(garbage, "image").reason is Reason.CORRUPT


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", Reason.EMPTY),
        (b"   \n\t  ", Reason.EMPTY),
        ("　\u3000".encode(), Reason.EMPTY),  # ideographic spaces only
        (b"%PDF-1.7\n\x00\x01binary", Reason.UNSUPPORTED_TYPE),
        (bytes(range(256)) * 8, Reason.UNSUPPORTED_TYPE),
        (b"PK\x03\x04zipdata", Reason.UNSUPPORTED_TYPE),
    ],
)
def test_text_project_rejections(data: bytes, reason: Reason) -> None:
    result = inspect_content(data, "text")
    assert result.reason is reason, result.detail
    assert result.detail


def test_wrong_type_both_ways() -> None:
    assert inspect_content(png(), "text").reason is Reason.WRONG_TYPE
    assert inspect_content(b"just some words", "image").reason is Reason.WRONG_TYPE


def test_type_comes_from_content_not_extension() -> None:
    assert sniff_media_type(png()) == "image/png"
    assert sniff_media_type("plain 文本".encode()) == "text/plain"


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("数据标注是机器学习的基础，我们需要高质量的标注数据来训练模型。", "gb18030"),
        ("數據標註是機器學習的基礎，我們需要高品質的資料。", "big5"),
        ("日本語のテキストです。品質の高いデータが必要です。", "shift_jis"),
        ("hello wörld", "utf-16"),
    ],
)
def test_legacy_encodings_are_normalised(text: str, encoding: str) -> None:
    result = inspect_content(text.encode(encoding), "text")
    assert result.accepted and result.text == text


def test_declared_encoding_wins_for_short_texts() -> None:
    short = "这个产品非常好".encode("gb18030")
    declared = decode_text(short, ["gb18030"])
    assert declared == ("这个产品非常好", "gb18030")


def test_utf8_with_bom_and_cjk() -> None:
    result = inspect_content("\ufeff中文标注".encode("utf-8"), "text")
    assert result.text == "中文标注"


def test_identical_content_has_identical_hash() -> None:
    assert inspect_content(b"same", "text").sha256 == inspect_content(b"same", "text").sha256


def test_keys_label_studio_cannot_address() -> None:
    assert unaddressable_reason("photos/数据 标注/a b.png") is None
    assert unaddressable_reason("photos/../a.png") is None  # opaque key, resolved by the store as-is
    assert "Label Studio cannot resolve" in (unaddressable_reason("a?b=1.png") or "")
    assert unaddressable_reason("a#frag.png") is not None
    assert unaddressable_reason("a\nb.png") is not None
