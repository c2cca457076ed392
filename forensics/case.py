"""The case database: one DuckDB file per investigation, its canonical tables and ingest accounting.

Every time inside the case is a naive TIMESTAMP in UTC (the connection's TimeZone is pinned to UTC); the original
string is kept beside it for evidence. Money is DECIMAL(38,12) USD.
"""
from __future__ import annotations

from pathlib import Path

import duckdb

from forensics import __version__
from forensics.schema import MONEY, SCHEMA_SQL  # noqa: F401  (MONEY: re-exported)


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) a case database with its schema, UTC session time zone."""
    con = duckdb.connect(str(path), read_only=read_only)
    con.execute("SET TimeZone = 'UTC'")
    if not read_only:
        con.execute(SCHEMA_SQL)
    return con


def tool_version() -> str:
    return __version__
