"""Loading a ledger part by columns gives the same index as accounting for its rows one by one."""

from __future__ import annotations

import pyarrow as pa

from labelflow.tasks.ledger import FILE_READ, LEDGER_SCHEMA, LedgerIndex, LedgerRow


def ledger_rows() -> list[LedgerRow]:
    """Objects re-read under a new etag, a duplicate content hash, quarantines, and a file of records."""
    return [
        LedgerRow("raw", "a.txt", "e1", 3, "aa" * 32, "ingested", task_id=1),
        LedgerRow("raw", "b.txt", "e1", 3, "aa" * 32, "ingested", task_id=2),  # same content: the first task wins
        LedgerRow("raw", "a.txt", "e2", 4, "bb" * 32, "ingested", task_id=3),  # a new version: its etag wins
        LedgerRow("raw", "c.bin", "e1", 9, "cc" * 32, "quarantined", reason="unsupported_type"),
        LedgerRow("raw", "d.txt", "e1", 0, "", "quarantined", reason="empty"),
        LedgerRow("raw", "r.jsonl", "e1", 50, "dd" * 32, "ingested", task_id=4, record_index=1, record_id="x"),
        LedgerRow("raw", "r.jsonl", "e1", 50, "ee" * 32, "ingested", task_id=5, record_index=2),
        LedgerRow("raw", "r.jsonl", "e1", 50, "", "quarantined", reason="malformed_record", record_index=3),
        LedgerRow("raw", "r.jsonl", "e1", 50, "", FILE_READ),
        LedgerRow("raw", "e.txt", "e1", 3, "ff" * 32, "ingested", task_id=None),
    ]


def as_table(rows: list[LedgerRow]) -> pa.Table:
    return pa.Table.from_pylist(
        [{name: getattr(row, name, None) for name in LEDGER_SCHEMA.names} for row in rows], schema=LEDGER_SCHEMA
    )


def test_a_part_loaded_by_columns_equals_its_rows_added_one_by_one() -> None:
    rows = ledger_rows()
    by_row, by_table = LedgerIndex(), LedgerIndex()
    by_row.add_rows(rows)
    by_table.add_table(as_table(rows))
    assert by_table == by_row
    assert by_table.seen[("raw", "a.txt")] == "e2"
    assert by_table.task_by_hash["aa" * 32] == 1
    assert (by_table.ingested, by_table.quarantined) == (6, 3)
    assert by_table.record_hash("raw", "r.jsonl", 1, "x") is not None
    assert by_table.is_known("raw", "r.jsonl", "e1")


def test_parts_loaded_in_order_keep_the_first_task_of_a_hash_and_the_last_etag_of_a_key() -> None:
    rows = ledger_rows()
    by_row, by_table = LedgerIndex(), LedgerIndex()
    by_row.add_rows(rows)
    for part in (rows[:2], rows[2:6], rows[6:]):
        by_table.add_table(as_table(part))
    assert by_table == by_row
