"""DuckDB helpers shared by the loaders and analyses."""
from __future__ import annotations

import duckdb
import pyarrow as pa


def quote_ident(name: str) -> str:
    """`name` as a quoted SQL identifier (a column or catalog name that may hold anything)."""
    return '"' + name.replace('"', '""') + '"'


def query_with(con: duckdb.DuckDBPyConnection, name: str, data, sql: str) -> list[tuple]:
    """Run one statement `sql` that reads `data` (a pyarrow Table or a pandas DataFrame) as the table `name`, and
    return its rows.

    Not `con.register`: inside a transaction a registered view, and the Python data it pins, lives until COMMIT, so
    a file loaded batch by batch in one transaction would keep every batch in memory (measured: 0.5 GB of arrow data
    held for a 0.5 GB log). A relation's query puts nothing in the catalog and lets each batch go.
    """
    con.complete()          # a result execute() left unread would keep the relation from running
    rel = con.from_arrow(data) if isinstance(data, (pa.Table, pa.RecordBatch)) else con.from_df(data)
    result = rel.query(name, sql)
    return result.fetchall() if result is not None else []
