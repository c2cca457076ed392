"""Merge one case database into another: the contract's INPUT may name case databases beside log files.

Each loaded file of the source case comes across with every row it brought (quarantine included) under a new file
id, unless a file with the same sha256 is already in the target (then it is skipped, as re-ingesting it would be).
A LiteLLM request already in the target stays the target's row, filling only the columns it lacks (as a later file
does at ingest); the file it came with counts it as merged, so for
every file records = loaded + quarantined and the rows stored under its id = loaded - merged still hold. Everything
is SQL over an ATTACHed read-only source, in one transaction, after checking the source: a forensics case
(its tables, a schema version this forensics reads) whose per-file counts add up (NotACase otherwise).
Every text value comes across redacted
(forensics.secrets): a case written by an older version may hold keys this one finds (escaped ones, in a path).
"""
from __future__ import annotations

import time
from pathlib import Path

import duckdb

from forensics.case import NotACase, check_case
from forensics.accounting import FileReport
from forensics.outputs.safe import printable
from forensics.schema import CASE_TABLES, FAMILY_TABLES
from forensics.secrets import redact_sql, redact_text

# the tables whose rows come across as they are, under their file's new id; ingest_files, llm_requests and prices
# are merged by merge_case itself, case_meta is the target's own
DATA_TABLES = tuple(t for t in CASE_TABLES if t not in ("ingest_files", "llm_requests", "prices", "case_meta"))
_ALIAS = "__merge_src"


def _columns(con: duckdb.DuckDBPyConnection, catalog: str, table: str) -> list[str]:
    return [c for (c,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = ? AND table_name = ? "
        "AND table_schema = 'main' ORDER BY ordinal_position", [catalog, table]).fetchall()]


def _text_columns(con: duckdb.DuckDBPyConnection, catalog: str, table: str) -> set[str]:
    return {c for (c,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = ? AND table_name = ? "
        "AND table_schema = 'main' AND data_type = 'VARCHAR'", [catalog, table]).fetchall()}


def _value(column: str, text: set[str]) -> str:
    """The source's value of `column`, keys redacted when it is one of the `text` columns."""
    value = f's."{column}"'
    return redact_sql(value) if column in text else value


def _select_list(target: list[str], source: list[str], replace: dict[str, str], text: set[str] = frozenset()) -> str:
    """The target's columns from the source: renamed where `replace` says, NULL where the source lacks them, keys
    redacted in the `text` columns."""
    out = []
    for c in target:
        if c in replace:
            out.append(f"{replace[c]} AS \"{c}\"")
        elif c in source:
            out.append(f"{_value(c, text)} AS \"{c}\"")
        else:
            out.append(f"NULL AS \"{c}\"")
    return ", ".join(out)


def check_counts(con: duckdb.DuckDBPyConnection, label: str | Path, catalog: str) -> None:
    """NotACase naming `label` unless, for every loaded file of the case in `catalog`, records = loaded +
    quarantined, its quarantine rows = quarantined, and the rows the family tables hold under its id = loaded -
    merged (what ingest checks for every file it loads)."""
    db = f'"{catalog}".main'
    merged = "coalesce(f.merged, 0)" if "merged" in _columns(con, catalog, "ingest_files") else "0"
    # a case made before a table was added lacks it (schema.ADDED_IN_VERSION_2): it holds no rows there
    rows = " UNION ALL ".join(f"SELECT file_id FROM {db}.{t}" for t in FAMILY_TABLES if _columns(con, catalog, t))
    bad = con.execute(f"""
        WITH q AS (SELECT file_id, count(*) AS n FROM {db}.quarantine GROUP BY ALL),
             r AS (SELECT file_id, count(*) AS n FROM ({rows}) GROUP BY ALL)
        SELECT f.path, f.records, f.loaded, f.quarantined, {merged}, coalesce(r.n, 0), coalesce(q.n, 0)
        FROM {db}.ingest_files f LEFT JOIN q USING (file_id) LEFT JOIN r USING (file_id)
        WHERE f.status = 'loaded' AND (f.records IS NULL OR f.loaded IS NULL OR f.quarantined IS NULL
              OR f.records <> f.loaded + f.quarantined OR coalesce(q.n, 0) <> f.quarantined
              OR coalesce(r.n, 0) <> f.loaded - {merged})
        ORDER BY f.file_id
    """).fetchall()
    if bad:
        path, records, loaded, quarantined, n_merged, n_rows, n_quarantine = bad[0]
        more = f"; and {len(bad) - 1} more file(s)" if len(bad) > 1 else ""
        raise NotACase(f"{label}: its per-file counts do not add up, refused: {printable(path)} has records "
                       f"{records}, loaded {loaded}, quarantined {quarantined}, merged {n_merged}, but "
                       f"{n_rows} rows (expected loaded - merged) and {n_quarantine} quarantine rows{more}")


def merge_case(con: duckdb.DuckDBPyConnection, source: str | Path) -> list[FileReport]:
    """Copy the loaded files of case `source` into the case `con`; one report per source file."""
    source = Path(source)
    started = time.perf_counter()
    target_catalog = con.execute("SELECT current_database()").fetchone()[0]
    quoted = str(source).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS {_ALIAS} (READ_ONLY)")
    try:
        check_case(con, source, _ALIAS)
        check_counts(con, source, _ALIAS)
        src_files = _columns(con, _ALIAS, "ingest_files")
        con.execute("BEGIN")
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE __merge_map AS
            SELECT s.file_id AS old_id, s.sha256,
                   s.sha256 IN (SELECT sha256 FROM main.ingest_files WHERE status = 'loaded') AS skipped
            FROM {_ALIAS}.main.ingest_files s WHERE s.status = 'loaded' ORDER BY s.file_id
        """)
        con.execute("ALTER TABLE __merge_map ADD COLUMN new_id INTEGER")
        con.execute("UPDATE __merge_map SET new_id = nextval('file_id_seq') WHERE NOT skipped")
        cols = _columns(con, target_catalog, "ingest_files")
        text = _text_columns(con, _ALIAS, "ingest_files")
        con.execute(f"""
            INSERT INTO main.ingest_files ({", ".join(f'"{c}"' for c in cols)})
            SELECT {_select_list(cols, src_files, {"file_id": "m.new_id"}, text)}
            FROM {_ALIAS}.main.ingest_files s JOIN __merge_map m ON m.old_id = s.file_id AND NOT m.skipped
        """)
        for table in DATA_TABLES:
            tcols, scols = _columns(con, target_catalog, table), _columns(con, _ALIAS, table)
            if not scols:
                continue
            con.execute(f"""
                INSERT INTO main.{table} ({", ".join(f'"{c}"' for c in tcols)})
                SELECT {_select_list(tcols, scols, {"file_id": "m.new_id"}, _text_columns(con, _ALIAS, table))}
                FROM {_ALIAS}.main.{table} s JOIN __merge_map m ON m.old_id = s.file_id AND NOT m.skipped
            """)
        tcols, scols = _columns(con, target_catalog, "llm_requests"), _columns(con, _ALIAS, "llm_requests")
        text = _text_columns(con, _ALIAS, "llm_requests")
        # requests the target already holds stay its rows: their files count them as merged
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE __merge_dupes AS
            SELECT m.new_id, count(*) AS n
            FROM {_ALIAS}.main.llm_requests s JOIN __merge_map m ON m.old_id = s.file_id AND NOT m.skipped
            SEMI JOIN main.llm_requests t ON t.request_id = s.request_id
            GROUP BY m.new_id
        """)
        # as a later file does at ingest: the target's row keeps its values and takes only what it lacks
        fill = [c for c in tcols if c in scols and c not in ("request_id", "file_id", "record_no")]
        if fill:
            con.execute(f"""
                UPDATE main.llm_requests t
                SET {", ".join(f'"{c}" = coalesce(t."{c}", {_value(c, text)})' for c in fill)}
                FROM {_ALIAS}.main.llm_requests s JOIN __merge_map m ON m.old_id = s.file_id AND NOT m.skipped
                WHERE t.request_id = s.request_id
            """)
        con.execute(f"""
            INSERT INTO main.llm_requests ({", ".join(f'"{c}"' for c in tcols)})
            SELECT {_select_list(tcols, scols, {"file_id": "m.new_id"}, text)}
            FROM {_ALIAS}.main.llm_requests s JOIN __merge_map m ON m.old_id = s.file_id AND NOT m.skipped
            ANTI JOIN main.llm_requests t ON t.request_id = s.request_id
        """)
        con.execute("""
            UPDATE main.ingest_files f SET merged = coalesce(f.merged, 0) + d.n
            FROM __merge_dupes d WHERE f.file_id = d.new_id
        """)
        if _columns(con, _ALIAS, "prices"):
            pcols = _columns(con, target_catalog, "prices")
            con.execute(f"""
                INSERT OR IGNORE INTO main.prices ({", ".join(f'"{c}"' for c in pcols)})
                SELECT {_select_list(pcols, _columns(con, _ALIAS, "prices"), {})} FROM {_ALIAS}.main.prices s
            """)
        rows = con.execute(f"""
            SELECT s.path, s.sha256, s.format, s.records, s.loaded, s.quarantined, m.skipped,
                   coalesce(t.merged, 0) AS merged
            FROM __merge_map m JOIN {_ALIAS}.main.ingest_files s ON s.file_id = m.old_id
            LEFT JOIN main.ingest_files t ON t.file_id = m.new_id
            ORDER BY m.old_id
        """).fetchall()
        con.execute("COMMIT")
    except Exception:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:      # the failure came before the transaction began
            pass
        raise
    finally:
        con.execute(f"DETACH {_ALIAS}")
    seconds = time.perf_counter() - started
    return [FileReport(redact_text(f"{source}:{path}"), sha, fmt, rec or 0, lo or 0, q or 0, bool(skipped),
                       int(merged or 0), status="skipped" if skipped else "loaded",
                       seconds=seconds / max(len(rows), 1))
            for path, sha, fmt, rec, lo, q, skipped, merged in rows]
