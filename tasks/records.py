"""Record files (JSONL, JSON array, CSV, TSV, Parquet) read as a stream: each record is accepted or quarantined.

Pure and bounded in memory: the input is the object's bytes in chunks (as streamed from S3), and at any time the
parser holds about one chunk, the record being parsed (at most `max_record_chars`) and, to find duplicates within
the file, 18 to 36 bytes per accepted record (`DigestTable`). The encoding is judged once, on the first chunks (at
least PROBE_BYTES); bytes after them that it cannot decode quarantine their record as `undecodable_text`.
Parquet needs random access, so it is read from a seekable file: pass a local path or an open file; chunks are
first spooled to an anonymous temporary file (in TMPDIR, as large as the object).

Each result carries its lineage: `index` is the 1-based line number for JSONL, the line of the record's first line
for CSV and TSV (the header is line 1), the 1-based position in the array for JSON, and the row number for Parquet.

Field values:
- A task field maps to a dotted path (`messages.0.content`): keys of objects and indexes of lists (negative ones
  count from the end). At each level the longest literal key wins, so a column named `a.b` is found as well.
- Strings are kept as they are; JSON numbers keep their source text (`1.50` stays `1.50`); booleans become
  `true`/`false`; dates and times ISO 8601; a mapped object or list becomes canonical JSON text (sorted keys,
  ensure_ascii off), which a task type can parse back (a chat as `Paragraphs`).
- Every value is NFC-normalised. A null, empty or whitespace-only value is `empty`; the character limit
  (`spec.limit(field)`) applies to each value, so to each item of a list field.

`record_sha256` is the SHA-256 of the mapped fields only: canonical JSON of {task field: value} (sorted keys,
ensure_ascii off, no spaces) over the NFC values. Unmapped columns, key order and the file's encoding do not
change it, so a record with the same mapped content as one seen before is a `duplicate`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
import re
import tempfile
import unicodedata
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from itertools import chain
from pathlib import PurePosixPath
from typing import IO, Any, Protocol

from labelflow.tasks.cleaning import BOMS, decode_text
from labelflow.tasks.spec import RecordsSpec

READ_CHUNK_BYTES = 1 << 20  # how a local path or an open file is read
PROBE_BYTES = 64 * 1024  # at least this much of the file's start judges its encoding (more if the first chunk is)
# A record longer than this is quarantined as too_long without being parsed: it bounds the memory one record takes
# (a str of 16 Mi characters is 16 to 64 MB). It is far above any sane per-field limit (100,000 by default).
MAX_RECORD_CHARS = 16 * 1024 * 1024
PARQUET_BATCH_BYTES = 8 * 1024 * 1024  # uncompressed column bytes turned into Python objects at once
PARQUET_MAGIC = b"PAR1"
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}
# Bytes the file's codec cannot decode become this lone surrogate: no decoder produces one from valid input, so a
# record (or a mapped value) that holds one held undecodable bytes.
MARK = "\udcff"
MARK_ERRORS = "labelflow.records.mark"
SURROGATE = re.compile("[\ud800-\udfff]")
JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
INDEX = re.compile(r"-?[0-9]+")
# JSON numbers and constants keep their source text: the values become task text anyway, and `1.50` must not turn
# into `1.5` (nor a 20-digit id into a float).
JSON = json.JSONDecoder(parse_float=str, parse_int=str, parse_constant=str)
CANONICAL_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
MISSING = object()


def _mark_undecodable(error: UnicodeError) -> tuple[str, int]:
    """Stand in for each undecodable byte sequence with MARK, so one bad record does not fail the whole file."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return MARK, error.end


codecs.register_error(MARK_ERRORS, _mark_undecodable)


class RecordReason(StrEnum):
    """Why a record was quarantined."""

    MALFORMED_RECORD = "malformed_record"
    MISSING_FIELD = "missing_field"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    UNDECODABLE_TEXT = "undecodable_text"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class ParsedRecord:
    """A record that becomes a task: its task fields, its position in the file, its own id and its hash."""

    index: int
    record_id: str | None
    fields: dict[str, str | list[str]]
    sha256: str


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A quarantined record; `index` is None when the failure is the file's (unreadable, or the rest of it)."""

    index: int | None
    reason: RecordReason
    message: str
    record_id: str | None = None
    sha256: str | None = None  # for a duplicate: the hash it shares, so the caller can find the record it repeats


RecordResult = ParsedRecord | RejectedRecord
Row = tuple[int, dict[str, Any]] | RejectedRecord  # what a format reader gives: a parsed object, or why not


class SeenDigests(Protocol):
    """Record hashes already taken (a `set[str]` or a `DigestTable`)."""

    def __contains__(self, digest: object, /) -> bool: ...

    def add(self, digest: str, /) -> None: ...


# Digests are keyed by their first 64 bits (open addressing, at most two thirds full): 10 million records have about
# a 3-in-a-million chance of one false duplicate, for 18 to 36 bytes a record instead of about 150 in a set[str].
class DigestTable:
    """A compact set of SHA-256 hex digests, each with the index of the record that added it: 12 bytes a slot."""

    def __init__(self, digests: Iterable[str] = ()) -> None:
        self._keys = array("Q", [0]) * 1024
        self._indexes = array("I", [0]) * 1024
        self._mask = 1023
        self._count = 0
        for digest in digests:
            self.add(digest)

    def __len__(self) -> int:
        return self._count

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and self.get(digest) is not None

    @staticmethod
    def _key(digest: str) -> int:
        return int(digest[:16], 16) or 1  # 0 marks an empty slot

    def get(self, digest: str) -> int | None:
        """The index stored with this digest, or None when it was never added."""
        key, keys, mask = self._key(digest), self._keys, self._mask
        slot = key & mask
        while (found := keys[slot]) != 0:
            if found == key:
                return self._indexes[slot]
            slot = (slot + 1) & mask
        return None

    def add(self, digest: str, index: int = 0) -> None:
        """Add a digest (a digest already present keeps its first index)."""
        self._insert(self._key(digest), index)

    def _insert(self, key: int, index: int) -> None:
        keys, mask = self._keys, self._mask
        slot = key & mask
        while (found := keys[slot]) != 0:
            if found == key:
                return
            slot = (slot + 1) & mask
        keys[slot] = key
        self._indexes[slot] = min(index, 0xFFFFFFFF)
        self._count += 1
        if self._count * 3 > 2 * len(keys):
            self._grow()

    def _grow(self) -> None:
        old = zip(self._keys, self._indexes, strict=True)
        size = 2 * len(self._keys)
        self._keys, self._indexes = array("Q", [0]) * size, array("I", [0]) * size  # no temporary copy
        self._mask, self._count = size - 1, 0
        for key, index in old:
            if key:
                self._insert(key, index)


@dataclass
class RecordsSummary:
    """What one file's parse found, updated as records are read, so a caller may consult it before the end."""

    fields: dict[str, list[str]] = field(default_factory=dict)  # task field -> its record paths
    format: str | None = None
    encoding: str | None = None
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    parsed: int = 0  # records that parsed into an object, so their fields were looked up
    missing: Counter[tuple[str, str]] = field(default_factory=Counter)  # (task field, path) -> records without it
    file_error: RejectedRecord | None = None  # the file, or its rest, could not be read

    def count(self, result: RecordResult) -> None:
        """Add one result."""
        if isinstance(result, ParsedRecord):
            self.accepted += 1
            return
        self.rejected[result.reason] += 1
        if result.index is None:
            self.file_error = result

    def paths_missing_everywhere(self, name: str) -> list[str]:
        """The paths of a task field that no parsed record so far has (none before the first record)."""
        if not self.parsed:
            return []
        return [path for path in self.fields.get(name, []) if self.missing[(name, path)] == self.parsed]

    def missing_in_every_record(self, name: str) -> bool:
        """True when a path of this task field is absent from every record parsed so far (at least one)."""
        return bool(self.paths_missing_everywhere(name))

    def missing_field_error(self, source_uri: str) -> str | None:
        """One line naming the first task field whose path no parsed record has, or None."""
        for name in self.fields:
            for path in self.paths_missing_everywhere(name):
                return f"records.fields.{name}: field {path!r} is missing in every record of {source_uri}"
        return None


def record_sha256(fields: dict[str, str | list[str]]) -> str:
    """SHA-256 of mapped fields: canonical JSON (sorted keys, no spaces, not ASCII-escaped) of their NFC values."""
    normal = {
        name: unicodedata.normalize("NFC", value)
        if isinstance(value, str)
        else [unicodedata.normalize("NFC", item) for item in value]
        for name, value in fields.items()
    }
    return _canonical_sha256(normal)


def _canonical_sha256(fields: dict[str, str | list[str]]) -> str:
    return hashlib.sha256(CANONICAL_JSON.encode(fields).encode("utf-8")).hexdigest()


def format_from_name(name: str, declared: str = "auto") -> str | None:
    """The declared format, else the one the name's extension says (`s3://b/x.jsonl` -> jsonl), else None."""
    if declared != "auto":
        return declared
    return EXTENSIONS.get(PurePosixPath(name.split("?", 1)[0]).suffix.lower())


# The order of text objects (tasks/cleaning.py): BOM, strict UTF-8, the declared encodings in order, detection. One
# step is added before detection: UTF-8 or a declared encoding that decodes all but a few lines, so one corrupt
# record quarantines itself instead of the whole file being misdetected (as cp932 or cp1250, say). `complete` says
# the probe is the whole file, so a character cut at its end is an error, not the next chunk's start.
def choose_encoding(probe: bytes, declared: Sequence[str] = (), complete: bool = False) -> str | None:
    """The file's codec, judged on its first bytes; None when nothing fits."""
    for bom, codec in BOMS:
        if probe.startswith(bom):
            return codec  # utf-8-sig, utf-16 and utf-32 consume the BOM
    candidates = ("utf-8", *declared)
    for codec in candidates:
        try:
            codecs.getincrementaldecoder(codec)().decode(probe, final=complete)
        except UnicodeDecodeError:
            continue
        return codec
    for codec in candidates:
        if _decodes_most_lines(probe, codec, need_non_ascii=codec == "utf-8"):
            return codec
    whole_lines = probe if complete else probe[: probe.rfind(b"\n") + 1] or probe
    decoded = decode_text(whole_lines)
    if decoded is None:
        return None
    encoding = decoded[1]
    # A records file's structure (brackets, quotes, commas, newlines) is ASCII, which UTF-16 and UTF-32 write with
    # NUL bytes: without any, such a guess (common on a few bytes) is wrong.
    if encoding.replace("-", "_").startswith(("utf_16", "utf_32")) and b"\x00" not in probe:
        return None
    return encoding


def _decodes_most_lines(probe: bytes, codec: str, need_non_ascii: bool) -> bool:
    """True when at most one line in ten fails (and fewer than half); with need_non_ascii, some non-ASCII decodes."""
    text = codecs.getincrementaldecoder(codec)(errors=MARK_ERRORS).decode(probe)
    lines = [line for line in text.split("\n") if line.strip()]
    bad = sum(MARK in line for line in lines)
    if bad > max(1, len(lines) // 10) or 2 * bad >= len(lines):
        return False
    # A valid multi-byte UTF-8 line is strong evidence of UTF-8; pure ASCII says nothing about the other lines.
    return not need_non_ascii or any(not line.isascii() and MARK not in line for line in lines)


# `source` is the object's bytes as chunks, an open binary file, or a local path; `name` is its key or URI (its
# extension picks the format under `auto`). `encodings` are the declared text encodings (`ingest.text_encodings`).
# `seen` holds the hashes of existing tasks and of earlier files in the run: a record found there is a duplicate,
# and each accepted record's hash is added to it. `summary`, when given, is filled as the records are read.
def iter_records(
    source: Iterable[bytes] | IO[bytes] | str | os.PathLike[str],
    name: str,
    spec: RecordsSpec,
    encodings: Sequence[str] = (),
    *,
    seen: SeenDigests | None = None,
    summary: RecordsSummary | None = None,
    max_record_chars: int = MAX_RECORD_CHARS,
    optional: frozenset[str] = frozenset(),
) -> Iterator[RecordResult]:
    """Each record of one file, accepted or quarantined, in file order; bad records never stop the file.

    Task fields named in `optional` (a type's optional fields: `gold`, `model_a`, ...) may be absent, null or empty
    in a record: the record is accepted without them (and its hash is over the fields it has).
    """
    summary = summary if summary is not None else RecordsSummary()
    summary.fields = {name_: spec.paths(name_) for name_ in spec.fields if name_ not in optional}
    mapper = _RecordMapper(spec, summary, seen, optional)
    for row in _rows(source, name, spec, encodings, summary, max_record_chars):
        result = row if isinstance(row, RejectedRecord) else mapper.map(*row)
        summary.count(result)
        yield result


def _rows(
    source: Iterable[bytes] | IO[bytes] | str | os.PathLike[str],
    name: str,
    spec: RecordsSpec,
    encodings: Sequence[str],
    summary: RecordsSummary,
    max_chars: int,
) -> Iterator[Row]:
    """The file's records as parsed objects, or the reason one (or the file) could not be parsed."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            yield from _rows(file, name, spec, encodings, summary, max_chars)
        return
    file: IO[bytes] | None = None
    if hasattr(source, "read"):
        file = source  # type: ignore[assignment]
        start = file.tell() if file.seekable() else 0
        chunks: Iterator[bytes] = iter(lambda: file.read(READ_CHUNK_BYTES), b"")
    else:
        chunks = iter(source)  # type: ignore[arg-type]
    head, complete = _probe(chunks)
    record_format = format_from_name(name, spec.format)
    if record_format is None and head.startswith(PARQUET_MAGIC):
        record_format = "parquet"
    if record_format == "parquet":
        summary.format = "parquet"
        paths = [_path_parts(path) for name_ in spec.fields for path in spec.paths(name_)]
        if spec.id:
            paths.append(_path_parts(spec.id))
        if file is not None and file.seekable():
            file.seek(start)
            yield from _parquet_rows(file, paths)
            return
        with tempfile.TemporaryFile() as spool:  # Parquet's footer is at its end: it needs the whole file at hand
            for chunk in chain([head], chunks):
                spool.write(chunk)
            spool.seek(0)
            yield from _parquet_rows(spool, paths)
        return
    if not head:
        summary.format = record_format
        return  # an empty file holds no records
    codec = choose_encoding(head, encodings, complete)
    if codec is None:
        declared = f", not {', '.join(encodings)}" if encodings else ""
        yield RejectedRecord(
            None, RecordReason.UNDECODABLE_TEXT, f"not UTF-8{declared}, and no encoding detected in its first bytes"
        )
        return
    summary.encoding = codec
    pieces = _decoded(chain([head], chunks), codec)
    if record_format is None:
        first, pieces = _first_character(pieces)
        record_format = {"[": "json", "{": "jsonl"}.get(first)
        if record_format is None:
            summary.format = None
            yield RejectedRecord(
                None,
                RecordReason.MALFORMED_RECORD,
                f"cannot tell the record format of {name}: no {'/'.join(EXTENSIONS)} extension, and it starts "
                "with neither '[', '{' nor PAR1; set records.format",
            )
            return
    summary.format = record_format
    if record_format == "jsonl":
        yield from _jsonl_rows(pieces, max_chars)
    elif record_format == "json":
        yield from _JsonValues(pieces, max_chars).rows()
    else:
        yield from _csv_rows(pieces, "\t" if record_format == "tsv" else ",", max_chars)


def _probe(chunks: Iterator[bytes]) -> tuple[bytes, bool]:
    """The file's first chunks, at least PROBE_BYTES of them when it has that many; True when that is all of it."""
    head: list[bytes] = []
    size = 0
    for chunk in chunks:
        head.append(chunk)
        size += len(chunk)
        if size >= PROBE_BYTES:
            return b"".join(head), False
    return b"".join(head), True


def _decoded(chunks: Iterable[bytes], codec: str) -> Iterator[str]:
    """Text pieces, decoded incrementally: a character cut across chunks comes out whole, bad bytes as MARK."""
    decoder = codecs.getincrementaldecoder(codec)(errors=MARK_ERRORS)
    for chunk in chunks:
        if text := decoder.decode(chunk):
            yield text
    if tail := decoder.decode(b"", final=True):
        yield tail


def _first_character(pieces: Iterator[str]) -> tuple[str, Iterator[str]]:
    """The first non-whitespace character ('' for none) and the pieces, still whole."""
    taken: list[str] = []
    for piece in pieces:
        taken.append(piece)
        if stripped := piece.lstrip():
            return stripped[0], chain(taken, pieces)
    return "", iter(taken)


def _json_kind(first: str) -> str:
    """What a JSON value starting with this character is, for messages."""
    kinds = {"[": "an array", '"': "a string", "t": "a boolean", "f": "a boolean", "n": "null", "{": "an object"}
    return kinds.get(first, "a number")


def _jsonl_rows(pieces: Iterable[str], max_chars: int) -> Iterator[Row]:
    """One object per line; blank lines are skipped (they still count as lines)."""
    line_number = 0
    partial: list[str] = []  # the start of a line cut by a piece's end
    partial_chars = 0
    skipping = False  # inside a line already quarantined as too long
    for piece in pieces:
        start = 0
        if skipping:
            start = piece.find("\n") + 1
            if not start:
                continue
            skipping = False
        end = piece.rfind("\n")
        if end < start:
            partial.append(piece[start:])
            partial_chars += len(piece) - start
            if partial_chars > max_chars:
                line_number += 1
                yield _too_long_record(line_number, max_chars)
                partial, partial_chars, skipping = [], 0, True
            continue
        lines = piece[start:end].split("\n")
        if partial:
            lines[0] = "".join(partial) + lines[0]
        for line in lines:
            line_number += 1
            if line and not line.isspace():
                yield _jsonl_row(line_number, line, max_chars)
        rest = piece[end + 1 :]
        partial, partial_chars = ([rest], len(rest)) if rest else ([], 0)
    if partial and not skipping:
        line = "".join(partial)
        if not line.isspace():
            yield _jsonl_row(line_number + 1, line, max_chars)


def _too_long_record(index: int, max_chars: int) -> RejectedRecord:
    return RejectedRecord(
        index, RecordReason.TOO_LONG, f"line {index}: the record is over {max_chars} characters and was not parsed"
    )


def _jsonl_row(line_number: int, line: str, max_chars: int) -> Row:
    if len(line) > max_chars:
        return _too_long_record(line_number, max_chars)
    try:
        record = JSON.decode(line)
    except ValueError as error:  # JSONDecodeError
        if MARK in line:
            return RejectedRecord(line_number, RecordReason.UNDECODABLE_TEXT, f"line {line_number}: undecodable bytes")
        message = f"{error.msg} at column {error.colno}" if isinstance(error, json.JSONDecodeError) else str(error)
        return RejectedRecord(line_number, RecordReason.MALFORMED_RECORD, f"line {line_number}: {message}")
    except RecursionError:
        return RejectedRecord(line_number, RecordReason.MALFORMED_RECORD, f"line {line_number}: nested too deeply")
    if not isinstance(record, dict):
        kind = _json_kind(line.lstrip()[:1])
        return RejectedRecord(line_number, RecordReason.MALFORMED_RECORD, f"line {line_number}: {kind}, not an object")
    return line_number, record


class _JsonValues:
    """A JSON array of objects (or objects one after another), decoded one value at a time from a sliding buffer."""

    def __init__(self, pieces: Iterator[str], max_chars: int) -> None:
        self.pieces = pieces
        self.max_chars = max_chars
        self.buffer = ""
        self.position = 0
        self.ended = False
        # Newlines before `counted_to` in the file: counted forward once, not from the buffer's start each time.
        self.counted_to = 0
        self.newlines = 0

    def line(self, position: int | None = None) -> int:
        """The 1-based line of a buffer position in the file."""
        at = self.position if position is None else position
        if at < self.counted_to:  # behind the count (never in practice): count that stretch back
            return self.newlines - self.buffer.count("\n", at, self.counted_to) + 1
        self.newlines += self.buffer.count("\n", self.counted_to, at)
        self.counted_to = at
        return self.newlines + 1

    def more(self) -> bool:
        """Append the next piece (dropping what was consumed); False at the end of the file."""
        piece = next(self.pieces, None)
        if piece is None:
            self.ended = True
            return False
        self.line(self.position)  # count the newlines about to be dropped
        self.buffer = self.buffer[self.position :] + piece
        self.position = self.counted_to = 0
        return True

    def next_character(self) -> str:
        """The next non-whitespace character, not consumed ('' at the end of the file)."""
        while True:
            self.position = JSON_WHITESPACE.match(self.buffer, self.position).end()  # type: ignore[union-attr]
            if self.position < len(self.buffer):
                return self.buffer[self.position]
            if not self.more():
                return ""

    def value(self) -> Any:
        """Decode the value at the position, reading more of the file while it is cut by the buffer's end."""
        while True:
            try:
                value, end = JSON.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as error:
                cut = error.pos >= len(self.buffer) - 16 or error.msg.startswith("Unterminated string")
                if not cut or self.ended or len(self.buffer) - self.position > self.max_chars:
                    raise
                self.more()
                continue
            # A number at the buffer's end may go on in the next piece; `}`, `]` and `"` close a value for sure.
            if end == len(self.buffer) and self.buffer[end - 1] not in '}]"' and self.more():
                continue
            self.position = end
            return value

    def fail(self, index: int, message: str) -> RejectedRecord:
        """The file-level error that stops reading: nothing after this point can be found again reliably."""
        return RejectedRecord(
            None,
            RecordReason.MALFORMED_RECORD,
            f"element {index} (line {self.line()}): {message}; the rest of the file was not read",
        )

    def rows(self) -> Iterator[Row]:
        """Each element: an object, or a malformed_record; a syntax error ends the file."""
        first = self.next_character()
        in_array = first == "["
        if in_array:
            self.position += 1
        elif first != "{":
            if first:
                yield RejectedRecord(
                    None, RecordReason.MALFORMED_RECORD, f"{_json_kind(first)}, not an array of objects"
                )
            return
        index = 0
        while True:
            character = self.next_character()
            if in_array and index == 0 and character == "]":
                self.position += 1
                break
            if not character:
                if in_array:
                    yield self.fail(index + 1, "the array is not closed")
                return
            index += 1
            line, start = self.line(), self.position
            try:
                value = self.value()
            except json.JSONDecodeError as error:
                if len(self.buffer) - self.position > self.max_chars:
                    yield self.fail(index, f"the record is over {self.max_chars} characters")
                elif MARK in self.buffer[self.position : error.pos + 1]:
                    yield self.fail(index, "undecodable bytes")
                else:
                    yield self.fail(index, f"{error.msg} at line {self.line(error.pos)}")
                return
            except RecursionError:
                yield self.fail(index, "nested too deeply")
                return
            where = f"element {index} (line {line})"
            if self.position - start > self.max_chars:
                message = f"{where}: the record is over {self.max_chars} characters"
                yield RejectedRecord(index, RecordReason.TOO_LONG, message)
            elif isinstance(value, dict):
                yield index, value
            else:
                message = f"{where}: {_json_kind(character)}, not an object"
                yield RejectedRecord(index, RecordReason.MALFORMED_RECORD, message)
            if not in_array:
                continue
            separator = self.next_character()
            if separator == ",":
                self.position += 1
            elif separator == "]":
                self.position += 1
                break
            else:
                yield self.fail(index + 1, "expected ',' or ']' after an element")
                return
        if self.next_character():
            yield RejectedRecord(
                None, RecordReason.MALFORMED_RECORD, f"line {self.line()}: text after the end of the array was ignored"
            )


class _RecordTooLong(Exception):
    """A CSV record ran over the character limit (an unclosed quote, or a huge line)."""


class _Lines:
    """Text lines, each with its newline (as the csv module wants), counting them and the current record's size."""

    def __init__(self, pieces: Iterable[str], max_chars: int) -> None:
        self.pieces = iter(pieces)
        self.max_chars = max_chars
        self.ready: list[str] = []
        self.next_ready = 0
        self.partial: list[str] = []
        self.partial_chars = 0
        self.line_number = 0  # lines handed out so far
        self.record_chars = 0  # characters handed out since the current record began

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        while self.next_ready >= len(self.ready):
            self._refill()
        line = self.ready[self.next_ready]
        self.next_ready += 1
        self.line_number += 1
        self.record_chars += len(line)
        if self.record_chars > self.max_chars:
            raise _RecordTooLong
        return line

    def _refill(self) -> None:
        """Split the next piece into lines; StopIteration at the end of the file."""
        self.ready, self.next_ready = [], 0
        piece = next(self.pieces, None)
        if piece is None:
            if not self.partial:
                raise StopIteration
            self.ready, self.partial = ["".join(self.partial)], []
            return
        end = piece.rfind("\n")
        if end < 0:
            self.partial.append(piece)
            self.partial_chars += len(piece)
            if self.partial_chars > self.max_chars:
                raise _RecordTooLong
            return
        lines = piece[: end + 1].split("\n")
        lines.pop()  # the empty text after the last newline
        if self.partial:
            lines[0] = "".join(self.partial) + lines[0]
        self.ready = [line + "\n" for line in lines]
        rest = piece[end + 1 :]
        self.partial, self.partial_chars = ([rest], len(rest)) if rest else ([], 0)


def _csv_rows(pieces: Iterable[str], delimiter: str, max_chars: int) -> Iterator[Row]:
    """Rows under the header line; quoted fields may hold newlines. A row with another column count is malformed."""
    # The csv module refuses a field over its limit (131,072 by default) as an error; records are bounded by
    # max_chars instead, so a long field is reported as too_long. The limit is process-wide, so it only grows.
    csv.field_size_limit(max(csv.field_size_limit(), max_chars))
    lines = _Lines(pieces, max_chars)
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] | None = None
    while True:
        first_line = lines.line_number + 1
        lines.record_chars = 0
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _RecordTooLong:
            yield RejectedRecord(
                None,
                RecordReason.TOO_LONG,
                f"line {first_line}: a record runs over {max_chars} characters (an unclosed quote?); the rest of "
                "the file was not read",
            )
            return
        except csv.Error as error:
            yield RejectedRecord(first_line, RecordReason.MALFORMED_RECORD, f"line {first_line}: {error}")
            continue
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # a blank line
        if header is None:
            header = cells
            continue
        if len(cells) != len(header):
            message = f"line {first_line}: {len(cells)} values, the header has {len(header)} columns"
            yield RejectedRecord(first_line, RecordReason.MALFORMED_RECORD, message)
            continue
        yield first_line, dict(zip(header, cells, strict=True))


def _parquet_rows(file: IO[bytes], paths: list[tuple[str, ...]]) -> Iterator[Row]:
    """Rows of a seekable Parquet file, reading only the mapped columns, a bounded batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as error:
        yield RejectedRecord(None, RecordReason.MALFORMED_RECORD, f"not a readable Parquet file: {error}")
        return
    names = set(parquet.schema_arrow.names)
    columns = sorted({column for parts in paths if (column := _top_column(parts, names)) is not None})
    if not columns:  # no mapped column exists: every row lacks every field
        for index in range(1, parquet.metadata.num_rows + 1):
            yield index, {}
        return
    index = 0
    try:
        batches = parquet.iter_batches(
            batch_size=_parquet_batch_rows(parquet, set(columns)), columns=columns, use_threads=False
        )
        for batch in batches:
            for record in batch.to_pylist():
                index += 1
                yield index, record
    except (pa.ArrowException, OSError) as error:
        yield RejectedRecord(
            None, RecordReason.MALFORMED_RECORD, f"rows from {index + 1} on could not be read: {error}"
        )


def _top_column(parts: tuple[str, ...], names: set[str]) -> str | None:
    """The top-level column a path starts in: its longest dotted prefix that is a column name."""
    for end in range(len(parts), 0, -1):
        if (column := ".".join(parts[:end])) in names:
            return column
    return None


def _parquet_batch_rows(parquet: Any, columns: set[str]) -> int:
    """Rows per batch so a batch holds about PARQUET_BATCH_BYTES of the read columns, from the file's metadata."""
    metadata = parquet.metadata
    size = 0
    for group_index in range(metadata.num_row_groups):
        group = metadata.row_group(group_index)
        for column_index in range(group.num_columns):
            chunk = group.column(column_index)
            if chunk.path_in_schema.split(".")[0] in columns:
                size += chunk.total_uncompressed_size
    return max(1, min(8192, PARQUET_BATCH_BYTES * max(metadata.num_rows, 1) // max(size, 1)))


@dataclass(frozen=True, slots=True)
class _PathPlan:
    """One record path, split once: at each part, the keys to try (longest first, with where each ends) or the index."""

    path: str
    keys: tuple[tuple[tuple[str, int], ...], ...]
    indexes: tuple[int | None, ...]


def _path_parts(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def _plan(path: str) -> _PathPlan:
    parts = _path_parts(path)
    keys = tuple(tuple((".".join(parts[at:end]), end) for end in range(len(parts), at, -1)) for at in range(len(parts)))
    return _PathPlan(path, keys, tuple(int(part) if INDEX.fullmatch(part) else None for part in parts))


def _lookup(record: dict[str, Any], plan: _PathPlan) -> Any:
    """The value at a path, or MISSING; at each object the longest literal key (which may hold dots) wins."""
    if len(plan.indexes) == 1:
        return record.get(plan.path, MISSING)
    value: Any = record
    at = 0
    while at < len(plan.indexes):
        if isinstance(value, dict):
            for key, end in plan.keys[at]:
                if key in value:
                    value, at = value[key], end
                    break
            else:
                return MISSING
        elif isinstance(value, list):
            index = plan.indexes[at]
            if index is None or not -len(value) <= index < len(value):
                return MISSING
            value, at = value[index], at + 1
        else:
            return MISSING
    return value


class _Undecodable(ValueError):
    """A binary value that is not UTF-8."""


def _as_text(value: Any) -> str:
    """A value as task text (see the module docstring); None is handled by the caller."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise _Undecodable from None
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return str(value)


def _unencodable(text: str) -> str | None:
    """Why text cannot be stored as task text (undecodable bytes, a lone surrogate, a NUL), or None."""
    if "\x00" in text:
        return "a NUL character"  # PostgreSQL (Label Studio's database) refuses NUL in text
    if not text.isascii() and SURROGATE.search(text):
        return "undecodable bytes" if MARK in text else "an unpaired surrogate"
    return None


class _RecordMapper:
    """Turns a parsed record into a task's fields, or the first reason it cannot be one."""

    def __init__(
        self,
        spec: RecordsSpec,
        summary: RecordsSummary,
        seen: SeenDigests | None,
        optional: frozenset[str] = frozenset(),
    ) -> None:
        self.spec = spec
        self.summary = summary
        self.seen = seen
        self.optional = optional
        self.in_file = DigestTable()
        # every path of every task field in one flat list, and where each task field's values are in it
        self.paths = [(name, _plan(path), spec.limit(name)) for name in spec.fields for path in spec.paths(name)]
        self.groups: list[tuple[str, int, int, bool]] = []
        for name in spec.fields:
            start = self.groups[-1][2] if self.groups else 0
            self.groups.append((name, start, start + len(spec.paths(name)), not isinstance(spec.fields[name], str)))
        self.id_plan = _plan(spec.id) if spec.id else None

    def map(self, index: int, record: dict[str, Any]) -> RecordResult:
        """Accept the record, or quarantine it with the first reason found."""
        self.summary.parsed += 1
        record_id = None
        if self.id_plan is not None and (raw_id := _lookup(record, self.id_plan)) not in (MISSING, None):
            try:
                record_id = _as_text(raw_id) or None
                problem = _unencodable(record_id or "")
            except _Undecodable:
                problem = "bytes that are not UTF-8"
            if problem:
                message = f"the id {self.spec.id!r} holds {problem}"
                return RejectedRecord(index, RecordReason.UNDECODABLE_TEXT, message)
        # Every path is looked up before any other check, so the summary knows which paths each record lacks.
        values = [_lookup(record, plan) for _, plan, _ in self.paths]
        if self.optional:
            return self._map_with_optional(index, record_id, values)
        if MISSING in values:
            missing = [
                (name, plan.path) for (name, plan, _), value in zip(self.paths, values, strict=True) if value is MISSING
            ]
            self.summary.missing.update(missing)
            message = "; ".join(f"{name}: no field {path!r}" for name, path in missing)
            return RejectedRecord(index, RecordReason.MISSING_FIELD, message, record_id)
        texts: list[str] = []
        for (name, plan, limit), value in zip(self.paths, values, strict=True):
            # the common case, plain ASCII text that passes every check, skips the general conversion
            plain = type(value) is str and value.isascii() and 0 < len(value) <= limit
            if plain and "\x00" not in value and not value.isspace():
                texts.append(value)
                continue
            checked = self._text(name, plan.path, value, limit)
            if isinstance(checked, tuple):
                return RejectedRecord(index, *checked, record_id)
            texts.append(checked)
        fields: dict[str, str | list[str]] = {
            name: texts[start:end] if is_list else texts[start] for name, start, end, is_list in self.groups
        }
        return self._accept(index, record_id, fields)

    def _accept(self, index: int, record_id: str | None, fields: dict[str, str | list[str]]) -> RecordResult:
        """Hash the mapped fields; a record seen before in this file (or in `seen`) is a duplicate."""
        try:
            digest = hashlib.sha256(CANONICAL_JSON.encode(fields).encode("utf-8")).hexdigest()
        except UnicodeEncodeError:  # a lone surrogate: bytes the codec could not decode, or a \ud800 escape
            return RejectedRecord(index, RecordReason.UNDECODABLE_TEXT, self._unencodable_field(fields), record_id)
        if (first := self.in_file.get(digest)) is not None:
            message = f"same mapped fields as {self._position(first)} of this file"
            return RejectedRecord(index, RecordReason.DUPLICATE, message, record_id, digest)
        if self.seen is not None:
            if digest in self.seen:
                message = "same mapped fields as an existing task or a record of another file"
                return RejectedRecord(index, RecordReason.DUPLICATE, message, record_id, digest)
            self.seen.add(digest)
        self.in_file.add(digest, index)
        return ParsedRecord(index, record_id, fields, digest)

    def _map_with_optional(self, index: int, record_id: str | None, values: list[Any]) -> RecordResult:
        """`map` for a spec with optional task fields: an absent, null or blank optional value is left out."""
        missing = [
            (name, plan.path)
            for (name, plan, _), value in zip(self.paths, values, strict=True)
            if value is MISSING and name not in self.optional
        ]
        if missing:
            self.summary.missing.update(missing)
            message = "; ".join(f"{name}: no field {path!r}" for name, path in missing)
            return RejectedRecord(index, RecordReason.MISSING_FIELD, message, record_id)
        fields: dict[str, str | list[str]] = {}
        for name, start, end, is_list in self.groups:
            texts: list[str] = []
            for (_, plan, limit), value in zip(self.paths[start:end], values[start:end], strict=True):
                if name in self.optional and (
                    value is MISSING or value is None or (isinstance(value, str) and not value.strip())
                ):
                    break  # an optional field the record does not give (a list field: all or none)
                checked = self._text(name, plan.path, value, limit)
                if isinstance(checked, tuple):
                    return RejectedRecord(index, *checked, record_id)
                texts.append(checked)
            else:
                fields[name] = texts if is_list else texts[0]
        return self._accept(index, record_id, fields)

    def _position(self, index: int) -> str:
        """How this file's format names a record's index: `line 7`, `element 7`, `row 7`."""
        word = {"json": "element", "parquet": "row"}.get(self.summary.format or "", "line")
        return f"{word} {index}"

    def _unencodable_field(self, fields: dict[str, str | list[str]]) -> str:
        """The message naming the first mapped value that holds a lone surrogate."""
        for name, value in fields.items():
            texts = [value] if isinstance(value, str) else value
            for path, text in zip(self.spec.paths(name), texts, strict=False):
                if problem := _unencodable(text):
                    return f"{name}: {path!r} holds {problem}"
        return "a mapped value holds undecodable text"

    @staticmethod
    def _text(name: str, path: str, value: Any, limit: int) -> str | tuple[RecordReason, str]:
        """The value as NFC text, or why it cannot be a task field's value (lone surrogates are found at hashing)."""
        if value is None:
            return RecordReason.EMPTY, f"{name}: {path!r} is null"
        if type(value) is str:
            text = value
        else:
            try:
                text = _as_text(value)
            except _Undecodable:
                return RecordReason.UNDECODABLE_TEXT, f"{name}: {path!r} holds bytes that are not UTF-8"
        if "\x00" in text:  # PostgreSQL (Label Studio's database) refuses NUL in text
            return RecordReason.UNDECODABLE_TEXT, f"{name}: {path!r} holds a NUL character"
        if not text.isascii():
            text = unicodedata.normalize("NFC", text)
        if not text or text.isspace():
            return RecordReason.EMPTY, (f"{name}: {path!r} is empty" if not text else f"{name}: {path!r} is blank")
        if len(text) > limit:
            return RecordReason.TOO_LONG, f"{name}: {path!r} has {len(text)} characters, over the limit of {limit}"
        return text
