"""Content-based cleaning: every quarantine reason, encodings, and key safety."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageFile

from labelflow.tasks.cleaning import (
    Reason,
    decode_text,
    decoded_size_estimate,
    inspect_content,
    sniff_media_type,
    unaddressable_reason,
)
from labelflow.tasks.spec import SpecError, parse_spec
from tests.hostile_media import png_bomb

PILLOW_DEFAULT_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3
TEXT_SPEC = {"name": "p", "source": "s3://raw/x/", "task": "text-classification", "labels": ["a", "b"]}


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


# --- decompression bombs (issue 13, item 1) -------------------------------------------------------------------
def test_image_past_max_pixels_is_refused_from_its_header_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = png_bomb(18000, 18000)
    assert len(bomb) < 100_000, "the bomb is small on disk"

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    result = inspect_content(bomb, "image")
    assert result.reason is Reason.TOO_LARGE
    assert result.detail == "18000x18000 = 324 MP exceeds ingest.max_image_pixels (100 MP)"


def test_max_image_pixels_is_passed_explicitly() -> None:
    small = png((100, 100))
    refused = inspect_content(small, "image", max_image_pixels=5_000)
    assert refused.reason is Reason.TOO_LARGE
    assert refused.detail == "100x100 = 0.01 MP exceeds ingest.max_image_pixels (0.005 MP)"
    assert inspect_content(small, "image", max_image_pixels=10_000).accepted, "the limit itself is allowed"


def test_an_image_below_pillows_hard_limit_but_over_the_setting_is_refused() -> None:
    # 15000 x 15000 = 225 MP: with the old global of 200 MP, Pillow only warned (its error starts at 2 x the global)
    result = inspect_content(png_bomb(15000, 15000), "image", max_image_pixels=100_000_000)
    assert result.reason is Reason.TOO_LARGE and "15000x15000 = 225 MP" in result.detail


def test_cleaning_leaves_pillows_global_guard_alone() -> None:
    inspect_content(png(), "image", max_image_pixels=1_000_000_000)
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_MAX_IMAGE_PIXELS


def test_decoded_size_is_estimated_from_the_header() -> None:
    assert decoded_size_estimate(png((100, 50)), "image", max_image_pixels=10**8) == 100 * 50 * 4  # Pillow: 4 B/px RGB
    assert decoded_size_estimate(png_bomb(3000, 2000), "image", max_image_pixels=10**8) == 3000 * 2000  # 1 B/px
    assert decoded_size_estimate(png_bomb(18000, 18000), "image", max_image_pixels=10**8) == 0, "never decoded"
    assert decoded_size_estimate(b"some text", "text", max_image_pixels=10**8) == 0
    assert decoded_size_estimate(b"\x89PNG\r\n\x1a\nbroken", "image", max_image_pixels=10**8) == 0


def test_ingest_limits_are_spec_settings() -> None:
    spec = parse_spec(TEXT_SPEC)
    assert spec.ingest.max_image_pixels == 100_000_000
    assert spec.ingest.memory_budget_bytes == 512 * 1024 * 1024
    custom = parse_spec({**TEXT_SPEC, "ingest": {"max_image_pixels": 250_000_000, "memory_budget_bytes": 2**31}})
    assert custom.ingest.max_image_pixels == 250_000_000 and custom.ingest.memory_budget_bytes == 2**31
    for field in ("max_image_pixels", "memory_budget_bytes"):
        with pytest.raises(SpecError, match=f"ingest.{field}: Input should be greater than 0"):
            parse_spec({**TEXT_SPEC, "ingest": {field: 0}})


# --- the whole text is judged (issue 13, item 8) ---------------------------------------------------------------
def test_a_nul_anywhere_is_refused() -> None:
    late_nul = b"a" * 9000 + b"\x00" + b"b" * 100
    assert sniff_media_type(late_nul) == "text/plain", "the type sniff looks at the start"
    result = inspect_content(late_nul, "text")
    assert result.reason is Reason.UNDECODABLE_TEXT
    assert "NUL" in result.detail and "9000" in result.detail
    utf16_nul = "\ufeffhello\x00world".encode("utf-16-le")
    assert inspect_content(b"\xff\xfe" + utf16_nul[2:], "text").reason is Reason.UNDECODABLE_TEXT


def test_control_characters_after_the_first_4096_are_counted() -> None:
    mostly_control = "A fine start. " * 300 + "\x01\x02\x03\x1b" * 20_000
    result = inspect_content(mostly_control.encode(), "text")
    assert result.reason is Reason.UNDECODABLE_TEXT
    assert "control characters" in result.detail


@pytest.mark.parametrize(
    "text",
    [
        "数据标注是机器学习的基础。\n" * 2000,
        "Great phone 👍🏽 😀\tfive stars\r\n" * 2000,
        ("col1\tcol2\tcol3\n" * 5000) + "\x0c",
        "x" * 5000 + "\x07" * 100,  # a few control characters stay under the threshold
    ],
)
def test_long_legitimate_texts_are_still_accepted(text: str) -> None:
    result = inspect_content(text.encode(), "text")
    assert result.accepted, result.detail
    assert result.text == text
