"""A case as Parquet (issue #19): the case portable to engines beyond one machine, and read back in place.

`export(con, DIR)` writes every case table to DIR/<table>/ as Parquet. The tables that carry a time are partitioned
by its UTC day in the hive layout (DIR/llm_requests/day=2026-11-16/data_0.parquet; rows without a time under
day=none), which DuckDB, Spark, Trino and ClickHouse all read as a `day` column; the others are one file,
DIR/<table>/data.parquet. Types are kept: money stays DECIMAL(38,12), times naive UTC TIMESTAMP. DIR/forensics_case.json
says what the folder is (schema, the case's schema version, each table's rows, partition column and the time it is
cut by), so that a reader can check it holds every row.

`open_folder(DIR)` is the reverse without copying: an in-memory DuckDB connection where each case table is a view
over its Parquet files (columns and types exactly as the case schema has them, the `day` column left out), checked
row for row against the manifest. The investigation reads it like any read-only case.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from forensics import case as case_db
from forensics.case import NotACase
from forensics.schema import CASE_TABLES, SCHEMA_VERSION

MANIFEST = "forensics_case.json"
FORMAT = "forensics.case-parquet/1"
PARTITION = "day"
NO_DAY = "none"
# the time each table is partitioned by (its UTC day)
DAY_OF = {"llm_requests": "start_time", "http_requests": "time", "nginx_errors": "time",
          "provider_usage": "bucket_start", "provider_costs": "bucket_start", "provider_buckets": "bucket_start",
          "litellm_log": "time"}


def is_folder(path: str | Path) -> bool:
    """Whether `path` is a case exported as Parquet (a folder holding the manifest)."""
    return (Path(path) / MANIFEST).is_file()


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def export(con: duckdb.DuckDBPyConnection, out: str | Path) -> dict:
    """Write the case behind `con` to the folder `out` (absent or empty); returns the manifest written."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: not an empty folder; a Parquet case needs a folder of its own")
    out.mkdir(parents=True, exist_ok=True)
    tables = {}
    for table in CASE_TABLES:
        (rows,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        time_col = DAY_OF.get(table)
        if rows and time_col:
            con.execute(f"""
                COPY (SELECT *, coalesce(strftime({time_col}, '%Y-%m-%d'), '{NO_DAY}') AS {PARTITION} FROM {table})
                TO '{_sql_path(out / table)}' (FORMAT parquet, PARTITION_BY ({PARTITION}), COMPRESSION zstd)""")
        elif rows:
            (out / table).mkdir()
            con.execute(f"COPY {table} TO '{_sql_path(out / table / 'data.parquet')}' "
                        "(FORMAT parquet, COMPRESSION zstd)")
        tables[table] = {"rows": int(rows), "partitioned_by": PARTITION if time_col else None,
                         "day_of": time_col}
    from forensics import __version__

    manifest = {"schema": FORMAT, "case_schema_version": SCHEMA_VERSION, "tables": tables,
                "written_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "tool_version": __version__}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def open_folder(folder: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory connection whose case tables are views over the Parquet case in `folder`, read in place.
    NotACase when the folder is no Parquet case, of a later schema, or does not hold the rows its manifest says."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise NotACase(f"{folder}: no readable {MANIFEST} ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != FORMAT:
        raise NotACase(f"{folder}/{MANIFEST}: not a {FORMAT} manifest")
    if not isinstance(manifest.get("case_schema_version"), int) or manifest["case_schema_version"] > SCHEMA_VERSION:
        raise NotACase(f"{folder}: case schema version {manifest.get('case_schema_version')!r}; this forensics reads "
                       f"up to {SCHEMA_VERSION}")
    con = case_db.connect(":memory:")                 # every case table, empty, with its exact columns and types
    try:
        for table, source, view in _views(con, folder, manifest):
            try:
                (found,) = con.execute(f"SELECT count(*) FROM {source}").fetchone()
            except duckdb.Error as e:
                raise NotACase(f"{folder / table}: cannot read its Parquet files ({str(e).splitlines()[0]})") from None
            if found != manifest["tables"][table]["rows"]:
                raise NotACase(f"{folder / table}: {found:,} rows in its Parquet files, the manifest says "
                               f"{manifest['tables'][table]['rows']:,}")
            con.execute(f"DROP TABLE {table}")
            con.execute(view)
    except BaseException:
        con.close()
        raise
    return con


def _views(con: duckdb.DuckDBPyConnection, folder: Path, manifest: dict) -> list[tuple[str, str, str]]:
    """(table, its Parquet source, the CREATE VIEW that reads it as the case schema has it) for each table with
    rows; `con` holds the case schema (empty tables) to take the columns and types from."""
    out = []
    for table, info in (manifest.get("tables") or {}).items():
        if table not in CASE_TABLES or not info.get("rows"):
            continue
        columns = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_name = ? AND table_schema = 'main' ORDER BY ordinal_position",
                              [table]).fetchall()
        select = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in columns)
        partitioned = bool(info.get("partitioned_by"))
        files = folder / table / ("**/*.parquet" if partitioned else "*.parquet")
        source = f"read_parquet('{_sql_path(files)}', hive_partitioning = {'true' if partitioned else 'false'})"
        out.append((table, source, f"CREATE OR REPLACE VIEW {table} AS SELECT {select} FROM {source}"))
    return out


def views_script(folder: str | Path) -> str:
    """The SQL that makes a DuckDB session see the Parquet case in `folder` as its tables (the head of a report's
    steps.sql on such a case, so that `duckdb < steps.sql` re-runs it from where the report ran: the folder is
    written as INPUT named it)."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    con = case_db.connect(":memory:")
    try:
        views = _views(con, folder, manifest)
    finally:
        con.close()
    return ("-- the case: the Parquet folder " + str(folder).replace("\n", " ") + ", its tables read in place\n"
            "SET TimeZone = 'UTC';\n" + "".join(f"{view};\n" for _, _, view in views) + "\n")
