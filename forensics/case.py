"""The case database: one DuckDB file per investigation, its canonical tables and ingest accounting.

Every time inside the case is a naive TIMESTAMP in UTC (the connection's TimeZone is pinned to UTC); the original
string is kept beside it for evidence. Money is DECIMAL(38,12) USD.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb

from forensics import __version__
from forensics.schema import MONEY, SCHEMA_SQL  # noqa: F401  (MONEY: re-exported)


def spill_dir(path: str | Path) -> Path | None:
    """Where DuckDB spills what does not fit in memory for the case at `path` (its default temp_directory)."""
    return None if str(path) == ":memory:" else Path(f"{path}.tmp")


def remove_stale_spill(path: str | Path) -> None:
    """Remove what other processes left in the case's spill folder (a run killed while DuckDB spilled left 7.6 GB
    there), and the folder when nothing is left. Called with the case open read-write: DuckDB's write lock says no
    other process uses the case. DuckDB names its spill files duckdb_temp_<pid>_...: this process's own are kept
    (another connection of this process may share the database and be spilling)."""
    spill = spill_dir(path)
    if spill is None or not spill.is_dir():
        return
    mine = f"duckdb_temp_{os.getpid()}_"
    for entry in spill.iterdir():
        if entry.name.startswith(mine):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    try:
        spill.rmdir()                 # only when empty
    except OSError:
        pass


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) a case database with its schema, UTC session time zone, no progress bar (it would
    be written into the output). Opened read-write, the spill a killed run left behind is removed."""
    con = duckdb.connect(str(path), read_only=read_only)
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.Error:      # in Jupyter without ipywidgets DuckDB refuses to change it (and draws no bar there)
        pass
    if not read_only:
        remove_stale_spill(path)
        con.execute(SCHEMA_SQL)
    return con


def tool_version() -> str:
    return __version__
