"""Read LiteLLM files into staging relations: numbered records with their raw text.

JSON records land in temp table _ll_rec(record_no, raw, bad); a CSV export lands in _ll_src with its own
columns as text. `bad` is the reason a record cannot be read (not JSON, not an object, a broken CSV line).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from forensics import secrets
from forensics.sources.lines import iter_line_batches
from forensics.sources.litellm_fields import quote_ident

LINE_BATCH_BYTES = 32 << 20
MAX_JSON_BYTES = 1 << 30
MAX_CSV_LINE = 256 << 20
RAW_LIMIT = 65536


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_binary(path: Path):
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def first_char(path: Path) -> str:
    """The first non-blank character of the file (BOM skipped), '' for an empty file."""
    with open_binary(path) as f:
        head = f.read(4096).decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    return head[:1]


# ---- JSON records -------------------------------------------------------------------------------------------

_CHECK = """
  CASE WHEN {text} IS NULL THEN 'not valid UTF-8'
       WHEN NOT json_valid({text}) THEN 'not valid JSON'
       WHEN NOT starts_with(ltrim({text}, chr(32) || chr(9)), '{{') THEN 'not a JSON object' END"""


def _records_from_text_sql(relation: str) -> str:
    """(record_no, raw, bad) from a relation of (record_no, text, line) rows; `line` holds the bytes of a line
    that is not UTF-8 (text NULL), shown escaped."""
    check = _CHECK.format(text="text")
    return f"SELECT record_no, coalesce(text, CAST(line AS VARCHAR)) AS raw, {check} AS bad FROM {relation}"


def records_relation() -> str:
    """_ll_rec with `doc`, the JSON text of each record that could be read."""
    return "(SELECT *, CASE WHEN bad IS NULL THEN raw END AS doc FROM _ll_rec)"


def line_batches(con: duckdb.DuckDBPyConnection, path: Path, notes: list[str]) -> Iterator[int]:
    """Stage NDJSON lines batch by batch into _ll_rec (blank lines are not records); yields each batch's size.

    Lines come from the shared reader (plain or gzip, bounded memory); why it stopped early, if it did, goes to notes.
    """
    reader = iter_line_batches(path, LINE_BATCH_BYTES)
    seen_invalid = 0
    for batch in reader:
        invalid = reader.invalid_utf8_lines[seen_invalid:]
        seen_invalid = len(reader.invalid_utf8_lines)
        con.register("_ll_lines", batch)
        check = _CHECK.format(text="line")
        if invalid:
            bad_lines = ", ".join(str(int(i)) for i in invalid)
            check = f"CASE WHEN line_no IN ({bad_lines}) THEN 'not valid UTF-8 (bytes shown as \\xHH)' ELSE {check} END"
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _ll_rec AS
            SELECT line_no AS record_no, line AS raw, {check} AS bad FROM _ll_lines
            WHERE strlen(line) > 0 AND NOT (strlen(line) < 64 AND trim(line) = '')""")
        con.unregister("_ll_lines")
        (n,) = con.execute("SELECT count(*) FROM _ll_rec").fetchone()
        yield int(n)
    if reader.error:
        notes.append(reader.error)


def stage_json_values(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Stage the elements of a JSON array file into _ll_rec (several top-level arrays allowed). Returns records."""
    comp = "gzip" if is_gzip(path) else "none"
    p = str(path).replace("'", "''")
    opts = f"compression='{comp}', maximum_object_size={MAX_JSON_BYTES}"
    # rowid keeps file order; a failed statement would abort the case's transaction, so this runs on the side
    attempts = [
        f"CREATE TABLE v AS SELECT json AS doc, 1 AS top FROM read_json_objects('{p}', format='array', {opts})",
        # concatenated batches ([...][...]): each top-level value, arrays unnested in place
        f"CREATE TABLE t AS SELECT json FROM read_json_objects('{p}', format='unstructured', {opts});"
        """CREATE TABLE v AS SELECT u.doc, top FROM (
              SELECT rowid AS top, CASE WHEN json_type(json) = 'ARRAY'
                THEN CAST(json_extract(json, '$[*]') AS JSON[]) ELSE [json] END AS l FROM t),
            unnest(l) WITH ORDINALITY AS u(doc, idx) ORDER BY top, idx""",
    ]
    side = duckdb.connect()
    try:
        for sql in attempts:
            try:
                side.execute("DROP TABLE IF EXISTS t; DROP TABLE IF EXISTS v")
                side.execute(sql)
                values = side.sql(
                    "SELECT rowid + 1 AS record_no, CAST(doc AS VARCHAR) AS text FROM v ORDER BY rowid"
                ).to_arrow_table()
                break
            except duckdb.Error:
                continue
        else:
            values = _broken_json_values(path)
    finally:
        side.close()
    con.register("_ll_vals", values)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _ll_rec AS {_records_from_text_sql(
            '(SELECT record_no, text, NULL::BLOB AS line FROM _ll_vals)')}""")
    con.unregister("_ll_vals")
    (n,) = con.execute("SELECT count(*) FROM _ll_rec").fetchone()
    return int(n)


def _broken_json_values(path: Path) -> pa.Table:
    """Recover the elements before the damage of a truncated or corrupt JSON array; the rest is one bad record."""
    with open_binary(path) as f:
        text = f.read().decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    values: list[str] = []
    pos, end = 0, len(text)

    def skip(i: int, chars: str) -> int:
        while i < end and text[i] in chars:
            i += 1
        return i

    # a Python walk, but only for a file DuckDB could not parse: the good prefix is worth keeping
    pos = skip(pos, "\ufeff \t\r\n")
    while pos < end:
        if text[pos] in "[,]":
            pos = skip(pos + 1, " \t\r\n")
            continue
        try:
            _, nxt = decoder.raw_decode(text, pos)
        except ValueError:
            values.append(text[pos:])
            break
        values.append(text[pos:nxt])
        pos = skip(nxt, " \t\r\n")
    return pa.table({
        "record_no": np.arange(1, len(values) + 1, dtype=np.int64),
        "text": pa.array(values, pa.string()),
    })


def stage_object(con: duckdb.DuckDBPyConnection, path: Path) -> int | None:
    """Stage a one-object file (S3/GCS logger) as one record; None when the file is not a single JSON value."""
    with open_binary(path) as f:
        data = f.read()
    text = data.decode("utf-8", "replace").lstrip("\ufeff")
    try:
        json.loads(text)
    except ValueError:
        return None
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _ll_rec AS {_records_from_text_sql('(SELECT 1::BIGINT AS record_no, ?::VARCHAR AS text, NULL::BLOB AS line)')}",
        [text],
    )
    return 1


# ---- CSV ----------------------------------------------------------------------------------------------------

def csv_header(path: Path) -> list[str]:
    with open_binary(path) as f:
        first = f.readline().decode("utf-8", "replace").lstrip("\ufeff")
    names = next(csv.reader(io.StringIO(first)), [])
    seen: dict[str, int] = {}
    out = []
    for name in names:
        name = name.strip()
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def stage_csv(con: duckdb.DuckDBPyConnection, path: Path, wanted: tuple[str, ...], file_id: int) -> tuple[int, int, set[str]]:
    """Stage a SpendLogs CSV export: rows in _ll_csv as read, _ll_src with the wanted columns under their schema
    names (matched case-insensitively). Lines the CSV reader rejects go straight to quarantine.

    Returns (records, quarantined, wanted columns present). CSV_RAW_SQL gives each staged row's raw text.
    """
    header = csv_header(path)
    if not header:
        raise ValueError("the CSV file has no header line")
    by_lower = {h.lower(): h for h in header}
    present = {w: by_lower[w.lower()] for w in wanted if w.lower() in by_lower}
    columns = "{" + ", ".join(f"'{h.replace(chr(39), chr(39) * 2)}': 'VARCHAR'" for h in header) + "}"
    comp = "gzip" if is_gzip(path) else "none"
    p = str(path).replace("'", "''")
    for t in ("_ll_rej", "_ll_rej_scan"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _ll_csv AS SELECT * FROM read_csv('{p}', header=true, auto_detect=false,
          columns={columns}, delim=',', quote='"', escape='"', comment='', compression='{comp}',
          max_line_size={MAX_CSV_LINE}, store_rejects=true, rejects_table='_ll_rej', rejects_scan='_ll_rej_scan')""")
    selected = ", ".join(f"{quote_ident(h)} AS {quote_ident(w)}" for w, h in present.items())
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _ll_src AS
        SELECT rowid - (SELECT min(rowid) FROM _ll_csv) + 1 AS record_no, NULL::VARCHAR AS bad, {selected}
        FROM _ll_csv""")
    # a broken line has no row number of its own: it keeps its line number, in the file as a whole
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _ll_q AS
        SELECT line AS record_no, first(csv_line) AS raw,
          format('CSV line {{}}: {{}}', line, string_agg(DISTINCT error_message, '; ')) AS reason
        FROM _ll_rej GROUP BY line""")
    (rejected,) = con.execute("SELECT count(*) FROM _ll_q").fetchone()
    if rejected:
        secrets.redact_columns(con, "_ll_q", ["raw"])
        con.execute(
            f"INSERT INTO quarantine (file_id, record_no, raw, reason) "
            f"SELECT {int(file_id)}, record_no, left(raw, {RAW_LIMIT}), reason FROM _ll_q"
        )
    for t in ("_ll_q", "_ll_rej", "_ll_rej_scan"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    (n,) = con.execute("SELECT count(*) FROM _ll_src").fetchone()
    return int(n) + int(rejected), int(rejected), set(present)


CSV_RAW_SQL = "SELECT rowid - (SELECT min(rowid) FROM _ll_csv) + 1 AS record_no, CAST(to_json(_ll_csv) AS VARCHAR) AS raw FROM _ll_csv"
JSON_RAW_SQL = "SELECT record_no, raw FROM _ll_rec"
