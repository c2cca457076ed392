"""The case database: one DuckDB file per investigation, its canonical tables and ingest accounting.

Every time inside the case is a naive TIMESTAMP in UTC (the connection's TimeZone is pinned to UTC); the original
string is kept beside it for evidence. Money is DECIMAL(38,12) USD.

A case is recognised by its tables (forensics.schema) and its schema version (table case_meta; a case made before
case_meta is version 1). A DuckDB file that is not a case is refused, never turned into one: opening a named case
to read it (report, export, detect) changes nothing in it, not one byte.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import duckdb

from forensics import __version__
from forensics.duck import quote_ident
from forensics.schema import MONEY, SCHEMA_SQL, SCHEMA_VERSION, META_TABLE, tables_of_version  # noqa: F401


# DuckDB's buffer pool grows to its memory limit (80% of RAM by default) and keeps what it read: on a case of 10 M
# lines that was 2 GB more than on one of 1 M. Under this limit a file-backed case spills to disk instead (the
# temp_directory below), so a run's memory stays flat however large the case grows; ingest sets its own
# (ingest.INGEST_MEMORY_LIMIT). An in-memory case keeps DuckDB's default: it has nowhere to spill its tables.
# 384 MB, not 512: the detector's peak at 1 M requests, 849 MB instead of 919 (its steps spill a little more, in the
# same CPU time), so that the largest case's peak is at most 1.3x the smallest's (bench/bench_scale.py).
CASE_MEMORY_LIMIT = "384MB"


class NotACase(ValueError):
    """A file named as a case database that cannot be read as one: not DuckDB, not a forensics case, a schema
    version this forensics does not know, counts that do not add up. A usage error on the command line."""


def spill_dir(path: str | Path) -> Path | None:
    """Where DuckDB spills what does not fit in memory for the case at `path` (its default temp_directory)."""
    return None if str(path) == ":memory:" else Path(f"{path}.tmp")


def private_spill_dir() -> str:
    """Where a read-only case spills: a folder under the system's temporary folder named for this process (DuckDB
    creates it when it first spills, and removes what it wrote when the connection closes)."""
    return str(Path(tempfile.gettempdir()) / f"forensics-spill-{os.getpid()}").replace("'", "''")


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
    """Open a case database with the UTC session time zone.

    read_only: an existing case, checked (check_case) and never written: it may sit on read-only media, or be open
    read-only in another process. Otherwise: created with its schema when the file is new (or an empty DuckDB
    database); an existing database must be a case (check_case), and gains the tables a newer schema adds.
    Raises NotACase for a folder, a file DuckDB cannot open as a database, or a database that is no case."""
    memory = str(path) == ":memory:"
    if not memory and Path(path).is_dir():
        raise NotACase(f"{path}: a folder, not a case database file")
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "lock" in message.lower():         # a case in use by another program: the run fails, no usage error
            raise
        raise NotACase(f"{path}: cannot open it as a DuckDB case database ({message})") from None
    try:
        con.execute("SET TimeZone = 'UTC'")
        try:
            con.execute("SET enable_progress_bar = false")   # it would be written into the output
        except duckdb.Error:      # in Jupyter without ipywidgets DuckDB refuses to change it (and draws no bar there)
            pass
        if not memory and (read_only or _tables(con, _catalog(con))):
            check_case(con, path)
        if not memory:
            con.execute(f"SET memory_limit = '{CASE_MEMORY_LIMIT}'")
            if read_only:              # the case may sit on read-only media: spill into a folder of this process's
                con.execute(f"SET temp_directory = '{private_spill_dir()}'")
        if not read_only:
            if not memory:
                remove_stale_spill(path)       # the spill a killed run left behind
            con.execute(SCHEMA_SQL)
    except BaseException:
        con.close()
        raise
    return con


def _catalog(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("SELECT current_database()").fetchone()[0]


def _tables(con: duckdb.DuckDBPyConnection, catalog: str) -> set[str]:
    return {t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? AND table_schema = 'main'",
        [catalog]).fetchall()}


def schema_version(con: duckdb.DuckDBPyConnection, catalog: str | None = None) -> int | None:
    """The schema version case_meta holds (1 for a case without case_meta); None when case_meta holds none."""
    catalog = catalog or _catalog(con)
    if META_TABLE not in _tables(con, catalog):
        return 1
    rows = con.execute(f"SELECT value FROM {quote_ident(catalog)}.main.{META_TABLE} WHERE key = 'schema_version'"
                       ).fetchall()
    try:
        return int(rows[0][0])
    except (IndexError, TypeError, ValueError):
        return None


def check_case(con: duckdb.DuckDBPyConnection, label: str | Path, catalog: str | None = None) -> int:
    """The schema version of the case in `catalog` (default: the connection's database), or NotACase naming
    `label` when it is not a forensics case: tables missing, or a schema version this forensics cannot read."""
    catalog = catalog or _catalog(con)
    version = schema_version(con, catalog)
    if version is None or version < 1:
        raise NotACase(f"{label}: not a forensics case ({META_TABLE} holds no valid schema version)")
    if version > SCHEMA_VERSION:
        raise NotACase(f"{label}: case schema version {version} is newer than this forensics reads (up to "
                       f"{SCHEMA_VERSION}); open it with a newer forensics")
    present = _tables(con, catalog)
    missing = [t for t in tables_of_version(version) if t not in present]
    if missing:
        raise NotACase(f"{label}: not a forensics case (missing tables: {', '.join(missing)})")
    return version


def tool_version() -> str:
    return __version__
