"""Arrow tables kept in the object store, read in today's schema whatever version of labelflow wrote them."""

from __future__ import annotations

import pyarrow as pa


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A table in `schema`: columns added since it was written (`answer`, `record`, `record_index`) read as nulls."""
    for name in schema.names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    return table.select(schema.names).cast(schema)


def read_parquet(data: bytes) -> pa.Table:
    """One Parquet file held in memory as a table."""
    import pyarrow.parquet as pq

    # ParquetFile on a buffer: pq.read_table(BytesIO) goes through the dataset layer, ~10x slower per small file.
    return pq.ParquetFile(pa.BufferReader(data)).read()
