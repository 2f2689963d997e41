"""Arrow tables kept in the object store, read in today's schema whatever version of labelflow wrote them."""

from __future__ import annotations

import pyarrow as pa


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A table in `schema`: columns added since it was written (`answer`, `record`, `record_index`) read as nulls."""
    for name in schema.names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    return table.select(schema.names).cast(schema)
