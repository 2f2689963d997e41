"""Record files: every format streamed from small chunks, encodings, field paths, each quarantine reason, hashes."""

from __future__ import annotations

import codecs
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelflow.tasks import records
from labelflow.tasks.records import (
    DigestTable,
    ParsedRecord,
    RecordReason,
    RecordResult,
    RecordsSummary,
    RejectedRecord,
    choose_encoding,
    iter_records,
    record_sha256,
)
from labelflow.tasks.spec import RecordsSpec

PAIR = {"prompt": "q", "responses": ["a", "b"]}
CHINESE = "你好，世界！这是一条测试记录，天气很好。"
EMOJI = "naïve café 🙂 résumé"


@pytest.fixture
def small_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judge the encoding on the first 32 bytes, so tiny chunks flow through the incremental decoder after it."""
    monkeypatch.setattr(records, "PROBE_BYTES", 32)


def spec(fields: dict[str, Any] | None = None, **options: Any) -> RecordsSpec:
    return RecordsSpec(fields=fields or {"prompt": "q"}, **options)


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def parse(
    data: bytes, name: str = "f.jsonl", records_spec: RecordsSpec | None = None, chunk: int | None = None, **kw: Any
) -> list[RecordResult]:
    chunks = pieces(data, chunk) if chunk else [data]
    return list(iter_records(chunks, name, records_spec or spec(), **kw))


def jsonl(*rows: Any) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def accepted(results: list[RecordResult]) -> list[ParsedRecord]:
    return [r for r in results if isinstance(r, ParsedRecord)]


def rejected(results: list[RecordResult]) -> list[RejectedRecord]:
    return [r for r in results if isinstance(r, RejectedRecord)]


def only_rejection(results: list[RecordResult]) -> RejectedRecord:
    (rejection,) = rejected(results)
    return rejection


# --- JSONL ---------------------------------------------------------------------------------------------------------


def test_jsonl_records_become_fields_with_line_numbers_and_ids() -> None:
    data = b'{"id": 7, "q": "first", "a": "x", "b": "y"}\n\n   \n{"id": "r2", "q": "second", "a": "z", "b": "w"}\n'
    results = parse(data, records_spec=spec(PAIR, id="id"))
    assert [(r.index, r.record_id, r.fields) for r in accepted(results)] == [
        (1, "7", {"prompt": "first", "responses": ["x", "y"]}),
        (4, "r2", {"prompt": "second", "responses": ["z", "w"]}),
    ]
    assert not rejected(results)


def test_jsonl_last_line_without_newline_and_crlf_endings_are_read() -> None:
    results = parse(b'{"q": "one"}\r\n{"q": "two"}')
    assert [(r.index, r.fields["prompt"]) for r in accepted(results)] == [(1, "one"), (2, "two")]


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 6, 7])
def test_jsonl_parses_the_same_from_tiny_chunks_cutting_characters_and_lines(chunk: int, small_probe: None) -> None:
    data = jsonl({"q": CHINESE, "n": 1}, {"q": EMOJI}, {"q": "plain"}) + b"\n" + jsonl({"q": "😀" * 5})
    whole = parse(data)
    assert [r.fields["prompt"] for r in accepted(whole)] == [CHINESE, EMOJI, "plain", "😀" * 5]
    assert [r.index for r in accepted(whole)] == [1, 2, 3, 5]
    assert parse(data, chunk=chunk) == whole


def test_jsonl_bad_lines_are_quarantined_and_the_rest_of_the_file_continues() -> None:
    data = b'{"q": "ok"}\n{"q": "broken",\n[1, 2]\n"text"\n{"q": "after"}\n'
    results = parse(data)
    assert [r.index for r in accepted(results)] == [1, 5]
    bad = rejected(results)
    assert [(r.index, r.reason) for r in bad] == [(i, RecordReason.MALFORMED_RECORD) for i in (2, 3, 4)]
    assert bad[0].message.startswith("line 2: Expecting") and "column" in bad[0].message
    assert bad[1].message == "line 3: an array, not an object"
    assert bad[2].message == "line 4: a string, not an object"


def test_jsonl_line_over_the_record_limit_is_too_long_and_skipped_whole(small_probe: None) -> None:
    long_line = b'{"q": "' + b"x" * 500 + b'"}\n'
    data = b'{"q": "before"}\n' + long_line + b'{"q": "after"}\n'
    for chunk in (None, 7, 64):
        results = parse(data, chunk=chunk, max_record_chars=100)
        assert [(r.index, r.fields["prompt"]) for r in accepted(results)] == [(1, "before"), (3, "after")]
        rejection = only_rejection(results)
        assert (rejection.index, rejection.reason) == (2, RecordReason.TOO_LONG)
        assert "over 100 characters" in rejection.message


# --- JSON ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 5, 7])
def test_json_array_is_streamed_element_by_element(chunk: int | None, small_probe: None) -> None:
    rows = [{"q": CHINESE, "n": 12345}, {"q": EMOJI, "n": "NUMBER"}, {"q": "three", "n": True}]
    data = json.dumps(rows, ensure_ascii=False, indent=2).replace('"NUMBER"', "-1.5e3").encode("utf-8")
    results = parse(data, "f.json", spec({"prompt": "q", "n": "n"}), chunk=chunk)
    assert [(r.index, r.fields) for r in accepted(results)] == [
        (1, {"prompt": CHINESE, "n": "12345"}),
        (2, {"prompt": EMOJI, "n": "-1.5e3"}),
        (3, {"prompt": "three", "n": "true"}),
    ]


def test_json_array_never_holds_the_whole_file(monkeypatch: pytest.MonkeyPatch) -> None:
    data = json.dumps([{"q": f"record {i} " + "x" * 40} for i in range(20_000)]).encode("utf-8")
    largest = 0
    more = records._JsonValues.more

    def watched(self: records._JsonValues) -> bool:
        nonlocal largest
        largest = max(largest, len(self.buffer))
        return more(self)

    monkeypatch.setattr(records._JsonValues, "more", watched)
    results = parse(data, "f.json", chunk=1024)
    assert len(accepted(results)) == 20_000
    # the first piece is the encoding probe (64 KiB); after it, about one chunk
    assert 0 < largest < records.PROBE_BYTES + 4 * 1024 < len(data) // 10


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 4, 5, 6, 7])
def test_json_array_non_objects_are_malformed_and_a_syntax_error_stops_the_rest(
    chunk: int | None, small_probe: None
) -> None:
    data = b'[{"q": "one", "pad": "%s"}, 12345678, "s", {"q": "four"},\n {"q": "five" "oops"}, {"q": "six"}]' % (
        b"x" * 40
    )
    results = parse(data, "f.json", chunk=chunk)
    assert [r.index for r in accepted(results)] == [1, 4]
    bad = rejected(results)
    assert [(r.index, r.reason) for r in bad] == [
        (2, RecordReason.MALFORMED_RECORD),
        (3, RecordReason.MALFORMED_RECORD),
        (None, RecordReason.MALFORMED_RECORD),
    ]
    assert bad[0].message == "element 2 (line 1): a number, not an object"
    assert bad[2].message.startswith("element 5 (line 2): Expecting ',' delimiter")
    assert "rest of the file was not read" in bad[2].message


def test_json_file_of_objects_one_after_another_is_read_too(small_probe: None) -> None:
    data = b'{"q": "one"}\n{\n  "q": "two"\n}\n'
    assert [r.fields["prompt"] for r in accepted(parse(data, "f.json", chunk=3))] == ["one", "two"]


def test_unclosed_json_array_keeps_the_records_before() -> None:
    results = parse(b'[{"q": "one"}, {"q": "two"}', "f.json")
    assert [r.fields["prompt"] for r in accepted(results)] == ["one", "two"]
    assert only_rejection(results).index is None


# --- CSV and TSV ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 1, 3, 7])
def test_csv_quoted_newlines_index_is_the_first_line_of_the_record(chunk: int | None, small_probe: None) -> None:
    data = (
        'id,q,a,b\r\n1,"multi\r\nline\r\nprompt",x,y\r\n\r\n2,"say ""hi""",z,"w\nv"\r\n3,plain,' + CHINESE + ",u\r\n"
    ).encode("utf-8")
    results = parse(data, "f.csv", spec(PAIR, id="id"), chunk=chunk)
    assert [(r.index, r.record_id, r.fields) for r in accepted(results)] == [
        (2, "1", {"prompt": "multi\r\nline\r\nprompt", "responses": ["x", "y"]}),
        (6, "2", {"prompt": 'say "hi"', "responses": ["z", "w\nv"]}),
        (8, "3", {"prompt": "plain", "responses": [CHINESE, "u"]}),
    ]


def test_csv_row_with_another_column_count_is_malformed() -> None:
    results = parse(b"q,a\nfine,1\nshort\nlong,1,2\nalso fine,2\n", "f.csv")
    assert [r.index for r in accepted(results)] == [2, 5]
    assert [(r.index, r.message) for r in rejected(results)] == [
        (3, "line 3: 1 values, the header has 2 columns"),
        (4, "line 4: 3 values, the header has 2 columns"),
    ]


def test_tsv_is_split_on_tabs() -> None:
    results = parse(b"id\tq\n1\ta, b and c\n", "f.tsv", spec(id="id"))
    assert [(r.index, r.record_id, r.fields) for r in accepted(results)] == [(2, "1", {"prompt": "a, b and c"})]


def test_csv_record_limit_applies_to_each_record_not_the_file() -> None:
    data = b"q\n" + b"".join(b"row %d\n" % i for i in range(100))
    assert len(accepted(parse(data, "f.csv", max_record_chars=20))) == 100


def test_csv_unclosed_quote_stops_the_file_after_the_record_limit() -> None:
    data = b'q\nfirst\n"never closed\n' + b"more text\n" * 50
    results = parse(data, "f.csv", max_record_chars=100)
    assert [r.fields["prompt"] for r in accepted(results)] == ["first"]
    rejection = only_rejection(results)
    assert (rejection.index, rejection.reason) == (None, RecordReason.TOO_LONG)
    assert rejection.message.startswith("line 3: a record runs over 100 characters")


# --- Parquet -------------------------------------------------------------------------------------------------------


def parquet_file(tmp_path: Path, rows: list[dict[str, Any]], **write: Any) -> Path:
    path = tmp_path / "records.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, **write)
    return path


PARQUET_ROWS = [
    {"id": 10, "messages": [{"role": "user", "content": "hi"}], "a": "x", "b": "y", "unused": "z" * 100},
    {"id": 11, "messages": [{"role": "user", "content": CHINESE}], "a": "p", "b": None, "unused": ""},
    {"id": None, "messages": [{"role": "user", "content": "third"}], "a": "r", "b": "s", "unused": "w"},
]
PARQUET_SPEC = spec({"prompt": "messages.0.content", "responses": ["a", "b"]}, id="id")


def expected_parquet(results: list[RecordResult]) -> None:
    assert [(r.index, r.record_id, r.fields) for r in accepted(results)] == [
        (1, "10", {"prompt": "hi", "responses": ["x", "y"]}),
        (3, None, {"prompt": "third", "responses": ["r", "s"]}),
    ]
    rejection = only_rejection(results)
    assert (rejection.index, rejection.reason, rejection.record_id) == (2, RecordReason.EMPTY, "11")
    assert rejection.message == "responses: 'b' is null"


def test_parquet_from_a_local_path_in_small_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "PARQUET_BATCH_BYTES", 1)  # one row a batch
    path = parquet_file(tmp_path, PARQUET_ROWS, row_group_size=2)
    expected_parquet(list(iter_records(path, "s3://b/records.parquet", PARQUET_SPEC)))


def test_parquet_from_chunks_is_spooled_and_found_by_its_magic(tmp_path: Path) -> None:
    data = parquet_file(tmp_path, PARQUET_ROWS).read_bytes()
    expected_parquet(parse(data, "s3://b/no-extension", PARQUET_SPEC, chunk=100))
    expected_parquet(list(iter_records(io.BytesIO(data), "x", PARQUET_SPEC)))


def test_parquet_reads_only_the_mapped_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = parquet_file(tmp_path, PARQUET_ROWS)
    asked: list[list[str]] = []
    iter_batches = pq.ParquetFile.iter_batches

    def watched(self: pq.ParquetFile, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["columns"])
        return iter_batches(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", watched)
    list(iter_records(path, "r.parquet", PARQUET_SPEC))
    assert asked == [["a", "b", "id", "messages"]]


def test_parquet_without_any_mapped_column_lacks_the_field_in_every_row(tmp_path: Path) -> None:
    summary = RecordsSummary()
    results = list(iter_records(parquet_file(tmp_path, PARQUET_ROWS), "r.parquet", spec(), summary=summary))
    assert [(r.index, r.reason) for r in rejected(results)] == [(i, RecordReason.MISSING_FIELD) for i in (1, 2, 3)]
    assert summary.missing_field_error("s3://b/r.parquet") == (
        "records.fields.prompt: field 'q' is missing in every record of s3://b/r.parquet"
    )


def test_a_corrupt_parquet_file_is_one_file_level_rejection() -> None:
    results = parse(b"PAR1 this is not parquet at all PAR1", "r.parquet")
    rejection = only_rejection(results)
    assert (rejection.index, rejection.reason) == (None, RecordReason.MALFORMED_RECORD)


# --- Encodings -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_gbk_file_decodes_with_the_declared_encoding(chunk: int | None, small_probe: None) -> None:
    data = "q,a\n" + f"{CHINESE},好\n第二条,坏\n"
    results = parse(data.encode("gbk"), "f.csv", spec({"prompt": "q", "a": "a"}), chunk=chunk, encodings=["gb18030"])
    assert [r.fields for r in accepted(results)] == [{"prompt": CHINESE, "a": "好"}, {"prompt": "第二条", "a": "坏"}]
    summary = RecordsSummary()
    list(iter_records([data.encode("gbk")], "f.csv", spec(), ["gb18030"], summary=summary))
    assert summary.encoding == "gb18030"


def test_undeclared_gbk_is_detected() -> None:
    rows = [{"q": f"{CHINESE}第{i}条记录，今天的天气非常好，我们一起去公园散步吧。"} for i in range(20)]
    summary = RecordsSummary()
    results = list(iter_records([jsonl(*rows).decode().encode("gbk")], "f.jsonl", spec(), summary=summary))
    assert [r.fields["prompt"] for r in accepted(results)] == [row["q"] for row in rows]
    assert summary.encoding == "gb18030"


@pytest.mark.parametrize(
    "bom, codec",
    [
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
    ],
)
def test_bom_picks_the_codec_and_is_not_part_of_the_first_column(bom: bytes, codec: str, small_probe: None) -> None:
    data = bom + f"q,id\n{EMOJI},1\n{CHINESE},2\n".encode(codec)
    for chunk in (None, 3):
        results = parse(data, "f.csv", spec(id="id"), chunk=chunk)
        assert [(r.record_id, r.fields["prompt"]) for r in accepted(results)] == [("1", EMOJI), ("2", CHINESE)]


def test_utf16_jsonl_splits_lines_after_decoding(small_probe: None) -> None:
    # U+0A0A holds the newline byte twice in UTF-16: splitting bytes at b"\n" would break it
    data = codecs.BOM_UTF16_LE + jsonl({"q": "\u0a0a one"}, {"q": "two"}).decode().encode("utf-16-le")
    assert [r.fields["prompt"] for r in accepted(parse(data, chunk=5))] == ["\u0a0a one", "two"]


def test_invalid_bytes_in_one_record_quarantine_that_record_only(small_probe: None) -> None:
    good = [{"q": f"{EMOJI} numéro {i}"} for i in range(30)]
    data = jsonl(*good[:15]) + b'{"q": "bad \xff\xfe bytes"}\n' + jsonl(*good[15:]) + b'{"q": "x", "y": "\xc3"\n'
    for chunk in (None, 7):
        results = parse(data, chunk=chunk)
        assert [r.fields["prompt"] for r in accepted(results)] == [row["q"] for row in good]
        assert [(r.index, r.reason) for r in rejected(results)] == [
            (16, RecordReason.UNDECODABLE_TEXT),
            (32, RecordReason.UNDECODABLE_TEXT),
        ]
        assert rejected(results)[0].message == "prompt: 'q' holds undecodable bytes"
        assert rejected(results)[1].message == "line 32: undecodable bytes"


def test_invalid_bytes_in_an_unmapped_column_do_not_reject_the_record() -> None:
    results = parse(b'{"q": "fine", "other": "\xff"}\n{"q": "also"}\n')
    assert [r.fields["prompt"] for r in accepted(results)] == ["fine", "also"]


def test_a_non_ascii_last_byte_is_not_a_cut_character_when_the_file_ends_there() -> None:
    results = parse(b"q\ncafe\nfianc\xe9", "f.csv", encodings=["cp1252"])
    assert [r.fields["prompt"] for r in accepted(results)] == ["cafe", "fiancé"]


def test_an_undecodable_file_is_one_file_level_rejection() -> None:
    data = bytes(range(128, 256)) * 40
    results = parse(data, "f.csv")
    rejection = only_rejection(results)
    assert (rejection.index, rejection.reason) == (None, RecordReason.UNDECODABLE_TEXT)


def test_choose_encoding_order() -> None:
    assert choose_encoding(codecs.BOM_UTF8 + b"x") == "utf-8-sig"
    assert choose_encoding("é".encode()[:1], complete=False) == "utf-8"  # a character cut by the probe's end
    assert choose_encoding(b"q\ncaf\xe9", complete=True) is None  # not UTF-16, whatever detection guesses
    assert choose_encoding(CHINESE.encode("gbk"), ["gb18030", "big5"], complete=True) == "gb18030"
    assert choose_encoding(CHINESE.encode("gbk"), ["big5", "gb18030"], complete=True) == "big5"  # declared order


# --- Field paths and values ----------------------------------------------------------------------------------------


def test_nested_paths_negative_indexes_dotted_keys_and_list_fields() -> None:
    record = {
        "messages": [{"role": "user", "content": "question"}, {"role": "assistant", "content": "answer"}],
        "meta.source": "web",
        "scores": {"a.b": {"c": 3}},
        "candidates": ["r1", "r2", "r3"],
    }
    fields = {
        "prompt": "messages.0.content",
        "last": "messages.-1.content",
        "source": "meta.source",
        "deep": "scores.a.b.c",
        "ranked": ["candidates.2", "candidates.0"],
    }
    (result,) = parse(jsonl(record), records_spec=spec(fields))
    assert isinstance(result, ParsedRecord)
    assert result.fields == {
        "prompt": "question",
        "last": "answer",
        "source": "web",
        "deep": "3",
        "ranked": ["r3", "r1"],
    }


def test_objects_become_canonical_json_text_and_scalars_their_json_spelling() -> None:
    data = b'{"chat": [{"role": "user", "content": "\\u4f60\\u597d"}], "n": 1.50, "flag": false, "big": 12345678901234567890}'
    (result,) = parse(data, records_spec=spec({k: k for k in ("chat", "n", "flag", "big")}))
    assert isinstance(result, ParsedRecord)
    assert result.fields == {
        "chat": '[{"content": "你好", "role": "user"}]',
        "n": "1.50",
        "flag": "false",
        "big": "12345678901234567890",
    }


def test_missing_paths_are_missing_fields_naming_field_and_path() -> None:
    fields = {"prompt": "messages.5.content", "responses": ["a", "b"]}
    results = parse(
        jsonl({"messages": [{"content": "x"}], "a": "1"}, {"messages": "text", "b": "2"}), records_spec=spec(fields)
    )
    assert [(r.index, r.reason, r.message) for r in rejected(results)] == [
        (1, RecordReason.MISSING_FIELD, "prompt: no field 'messages.5.content'; responses: no field 'b'"),
        (2, RecordReason.MISSING_FIELD, "prompt: no field 'messages.5.content'; responses: no field 'a'"),
    ]


def test_empty_blank_and_null_values_are_empty() -> None:
    results = parse(jsonl({"q": ""}, {"q": " \t\n"}, {"q": None}, {"q": "ok"}))
    assert [r.index for r in accepted(results)] == [4]
    assert [(r.reason, r.message) for r in rejected(results)] == [
        (RecordReason.EMPTY, "prompt: 'q' is empty"),
        (RecordReason.EMPTY, "prompt: 'q' is blank"),
        (RecordReason.EMPTY, "prompt: 'q' is null"),
    ]


def test_too_long_names_field_length_and_limit_with_per_field_overrides() -> None:
    records_spec = spec({"prompt": "q", "responses": ["a", "b"]}, max_chars=10, field_max_chars={"prompt": 3})
    results = parse(
        jsonl(
            {"q": "abc", "a": "0123456789", "b": "x"},
            {"q": "abcd", "a": "1", "b": "2"},
            {"q": "ab", "a": "1", "b": "x" * 11},
        ),
        records_spec=records_spec,
    )
    assert [r.index for r in accepted(results)] == [1]
    assert [(r.reason, r.message) for r in rejected(results)] == [
        (RecordReason.TOO_LONG, "prompt: 'q' has 4 characters, over the limit of 3"),
        (RecordReason.TOO_LONG, "responses: 'b' has 11 characters, over the limit of 10"),
    ]


def test_the_limit_counts_nfc_characters() -> None:
    decomposed = "e\u0301" * 3  # 6 code points, 3 characters once composed
    (result,) = parse(jsonl({"q": decomposed}), records_spec=spec(max_chars=3))
    assert isinstance(result, ParsedRecord) and result.fields["prompt"] == "é" * 3


def test_nul_and_lone_surrogates_are_undecodable_text() -> None:
    results = parse(b'{"q": "a\\u0000b"}\n{"q": "half \\ud800 pair"}\n{"q": "pair \\ud83d\\ude00"}\n')
    assert [r.fields["prompt"] for r in accepted(results)] == ["pair 😀"]
    assert [(r.reason, r.message) for r in rejected(results)] == [
        (RecordReason.UNDECODABLE_TEXT, "prompt: 'q' holds a NUL character"),
        (RecordReason.UNDECODABLE_TEXT, "prompt: 'q' holds an unpaired surrogate"),
    ]


def test_record_id_is_optional_lineage() -> None:
    results = parse(
        jsonl({"id": 5, "q": "a"}, {"q": "b"}, {"id": None, "q": "c"}, {"id": "", "q": ""}), records_spec=spec(id="id")
    )
    assert [(r.index, r.record_id) for r in results] == [(1, "5"), (2, None), (3, None), (4, None)]
    assert isinstance(results[3], RejectedRecord)


def test_rejected_records_keep_their_id() -> None:
    (result,) = parse(jsonl({"id": "k1", "q": " "}), records_spec=spec(id="id"))
    assert isinstance(result, RejectedRecord) and result.record_id == "k1"


# --- Hashes and duplicates -----------------------------------------------------------------------------------------


def test_hash_covers_mapped_fields_only_whatever_the_key_order_or_format() -> None:
    first = parse(b'{"q": "same", "a": "1", "b": "2", "extra": "one"}\n', records_spec=spec(PAIR))
    second = parse(b'{"extra": "two", "b": "2", "a": "1", "q": "same", "more": 3}\n', records_spec=spec(PAIR))
    from_csv = parse(b"b,q,a,unused\n2,same,1,zzz\n", "f.csv", spec(PAIR))
    hashes = {r.sha256 for r in accepted(first + second + from_csv)}
    assert len(hashes) == 1
    assert hashes == {record_sha256({"responses": ["1", "2"], "prompt": "same"})}
    assert hashes != {record_sha256({"prompt": "same", "responses": ["2", "1"]})}  # list order matters


def test_hash_is_canonical_json_over_nfc_values() -> None:
    fields = {"prompt": "caf\u00e9", "responses": ["x"]}
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    assert record_sha256(fields) == hashlib.sha256(canonical).hexdigest()
    assert record_sha256({"prompt": "cafe\u0301", "responses": ["x"]}) == record_sha256(fields)
    assert record_sha256({"prompt": "cafe", "responses": ["x"]}) != record_sha256(fields)


def test_duplicates_within_a_file_name_the_first_record() -> None:
    results = parse(jsonl({"q": "one", "x": 1}, {"q": "two"}, {"q": "one", "x": 2}))
    assert [r.index for r in accepted(results)] == [1, 2]
    rejection = only_rejection(results)
    assert (rejection.index, rejection.reason) == (3, RecordReason.DUPLICATE)
    assert rejection.message == "same mapped fields as line 1 of this file"
    assert rejection.sha256 == accepted(results)[0].sha256


@pytest.mark.parametrize("make_seen", [set, DigestTable], ids=["set", "DigestTable"])
def test_duplicates_against_seen_hashes_and_accepted_hashes_added(make_seen: Any) -> None:
    existing = record_sha256({"prompt": "old"})
    seen = make_seen([existing])
    first = parse(jsonl({"q": "old"}, {"q": "new"}), seen=seen)
    assert [r.fields["prompt"] for r in accepted(first)] == ["new"]
    assert only_rejection(first).reason == RecordReason.DUPLICATE
    assert "existing task" in only_rejection(first).message and only_rejection(first).sha256 == existing
    assert record_sha256({"prompt": "new"}) in seen
    second = parse(jsonl({"q": "new"}), "other.jsonl", seen=seen)  # another file of the same run
    assert only_rejection(second).reason == RecordReason.DUPLICATE


def test_digest_table_grows_and_keeps_indexes() -> None:
    table = DigestTable()
    digests = [record_sha256({"prompt": str(i)}) for i in range(5000)]
    for index, digest in enumerate(digests, start=1):
        table.add(digest, index)
    table.add(digests[0], 999)  # already there: keeps its first index
    assert len(table) == 5000
    assert [table.get(d) for d in digests[:3]] == [1, 2, 3] and table.get(digests[-1]) == 5000
    assert record_sha256({"prompt": "absent"}) not in table and digests[1234] in table


# --- Format choice and the summary ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, data, expected",
    [
        ("x.ndjson", b'{"q": "a"}\n', "jsonl"),
        ("s3://b/x.JSON", b'[{"q": "a"}]', "json"),
        ("x.txt", b'  \n[{"q": "a"}]', "json"),
        ("x", b'{"q": "a"}\n', "jsonl"),
        ("x.tsv", b"q\na\n", "tsv"),
    ],
)
def test_auto_format_from_extension_then_first_bytes(name: str, data: bytes, expected: str) -> None:
    summary = RecordsSummary()
    results = list(iter_records([data], name, spec(), summary=summary))
    assert summary.format == expected
    assert [r.fields for r in accepted(results)] == [{"prompt": "a"}]


def test_declared_format_wins_over_the_extension() -> None:
    results = parse(b"q\na\n", "x.json", spec(format="csv"))
    assert [r.fields for r in accepted(results)] == [{"prompt": "a"}]


def test_unknown_format_is_one_file_level_rejection() -> None:
    rejection = only_rejection(parse(b"q,a\n1,2\n", "s3://b/data.txt"))
    assert (rejection.index, rejection.reason) == (None, RecordReason.MALFORMED_RECORD)
    assert "set records.format" in rejection.message


def test_an_empty_file_has_no_records() -> None:
    assert parse(b"", "x.jsonl") == [] and parse(b"", "x.csv") == [] and list(iter_records([], "x", spec())) == []


def test_summary_counts_and_finds_a_field_missing_in_every_record() -> None:
    summary = RecordsSummary()
    data = jsonl({"question": "x", "a": "1"}, {"question": "y", "a": "2", "b": "3"}) + b"oops\n"
    list(iter_records([data], "f.jsonl", spec({"prompt": "q", "responses": ["a", "b"]}), summary=summary))
    assert (summary.accepted, dict(summary.rejected), summary.parsed) == (
        0,
        {RecordReason.MISSING_FIELD: 2, RecordReason.MALFORMED_RECORD: 1},
        2,
    )
    assert summary.missing_in_every_record("prompt") and not summary.missing_in_every_record("responses")
    assert summary.paths_missing_everywhere("responses") == []
    assert summary.missing_field_error("s3://b/f.jsonl") == (
        "records.fields.prompt: field 'q' is missing in every record of s3://b/f.jsonl"
    )


def test_summary_does_not_flag_a_field_some_records_have() -> None:
    summary = RecordsSummary()
    list(iter_records([jsonl({"x": 1}, {"q": "here"})], "f.jsonl", spec(), summary=summary))
    assert summary.accepted == 1 and summary.missing_field_error("s3://b/f") is None
    assert RecordsSummary().missing_field_error("s3://b/f") is None  # nothing parsed yet: nothing to say


def test_a_file_level_error_is_kept_in_the_summary() -> None:
    summary = RecordsSummary()
    list(iter_records([b"[1, 2"], "f.json", spec(), summary=summary))
    assert summary.file_error is not None and summary.file_error.index is None
