"""Read LiteLLM files into staging tables: numbered records with their raw text.

JSON records land in temp table _ll_rec(record_no, raw, bad, _ks, _kn); a CSV export lands in _ll_src with its own
columns as text. `bad` is why a record cannot be read (not UTF-8, not JSON, not an object, a key twice at the top
level); _ks and _kn are the record's keys, for the test of a key twice. Payload lines may go from the lines straight
to the loader's _ll_norm (line_batches). A gzip stream cut short gives the records it holds, with a note. DuckDB
statements that may fail run on a side connection: a failed statement would abort the case's transaction.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from forensics.duck import query_with, quote_ident
from forensics.sources.lines import MAY_HOLD_SECRET, ReadSpec, batch_flag, iter_line_batches
from forensics.sources.litellm.litellm_merge import store_quarantine

LINE_BATCH_BYTES = 32 << 20
MAX_LINE_BYTES = 64 << 20      # one record over this (a prompt of many megabytes) is quarantined, cut
MAX_JSON_BYTES = 1 << 30
# a JSON array file is parsed into a side DuckDB that spills to disk, then staged in batches (json_value_batches)
JSON_BATCH_BYTES = 64 << 20       # text per batch (32 MiB: the same peak memory, 10% slower; measured at 1 GB)
JSON_BATCH_RECORDS = 100_000      # records per batch (a file of tiny records)
READ_OBJECT_BYTES = 64 << 20      # DuckDB's maximum_object_size on the first reading
PARSE_MEMORY_LIMIT = "512MB"      # the side database while DuckDB parses the file: the rest goes to disk
READ_MEMORY_LIMIT = "128MB"       # and while the batches are read back from it
MAX_CSV_LINE = 256 << 20
JSON_RAW_SQL = "SELECT record_no, raw FROM _ll_rec"
CSV_RAW_SQL = "SELECT s.record_no, CAST(to_json(c) AS VARCHAR) AS raw FROM _ll_csv c JOIN _ll_src s ON s._row = c.rowid"


# ---- bytes --------------------------------------------------------------------------------------------------

def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _blocks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(size):
            yield block


def _inflate(blocks: Iterator[bytes], notes: list[str]) -> Iterator[bytes]:
    """Decompress a gzip stream (several members allowed); a stream cut short ends early, with a note."""
    inflater, out, started = zlib.decompressobj(16 + zlib.MAX_WBITS), 0, False
    for block in blocks:
        while block:
            started = True
            try:
                data = inflater.decompress(block)
            except zlib.error as e:
                raise ValueError(f"gzip data is corrupt after {out:,} decompressed bytes ({e})") from None
            out += len(data)
            if data:
                yield data
            block = b""
            if inflater.eof:
                block, started = inflater.unused_data, False
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                if block and not block.startswith(b"\x1f\x8b"):
                    if block.strip(b"\x00"):
                        notes.append("data after the end of the gzip stream is not gzip: it was not read")
                    return
    if started and not inflater.eof:
        notes.append(f"gzip stream cut short after {out:,} decompressed bytes: the rest cannot be read")


def read_text(path: Path, notes: list[str]) -> str:
    """The whole file as text (a one-object file, or a broken one being salvaged)."""
    data = b"".join(_inflate(_blocks(path), notes)) if is_gzip(path) else path.read_bytes()
    return data.decode("utf-8", "replace").lstrip("\ufeff")


def head_text(path: Path, size: int = 1 << 20) -> str:
    """The start of the file as text, decompressed when gzip."""
    with open(path, "rb") as f:
        head = f.read(size)
    if head[:2] == b"\x1f\x8b":
        head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, size)
    return head.decode("utf-8", "replace").lstrip("\ufeff")


def first_char(path: Path) -> str:
    """The first non-blank character of the file, '' for an empty one."""
    return head_text(path, 4096).lstrip(" \t\r\n")[:1]


# ---- JSON records -------------------------------------------------------------------------------------------

# {keys} is the record's top-level keys, parsed once (KEYS_SQL): the record is parsed one time for all the checks
# (measured: json_valid and json_keys each on their own made this statement 3.7x slower). A key twice at the top level
# is looked for afterwards, once per distinct list of keys (duplicate_key_groups): list_unique on every record was
# half of this statement's time, and a file's records share a few lists of keys.
_CHECK = """
  CASE WHEN {text} IS NULL THEN 'not valid UTF-8'
       WHEN {keys} IS NULL AND NOT json_valid({text}) THEN 'not valid JSON'
       WHEN NOT starts_with(ltrim({text}, chr(32) || chr(9)), '{{') THEN 'not a JSON object'
  END"""
KEYS_SQL = "try(json_keys({text})) AS _keys"
# the record's keys joined with NUL between them, and how many: what records are grouped by to look for a key twice
KEY_STRING_SQL = "array_to_string(_keys, chr(0)) AS _ks, len(_keys) AS _kn"
_DUPLICATE_REASON = """format(
  'key "{}" appears twice in the object: which value counts is ambiguous (readers differ), not loaded',
  list_filter(_k, lambda k: len(list_filter(_k, lambda j: j = k)) > 1)[1])"""


def duplicate_key_groups(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """How many groups of the records of `table` with the same keys (_ks, _kn; _ks NULL: a record not looked at)
    must be looked at record by record: those whose keys hold a key twice, or a NUL.

    Exact: _ks split at NUL has _kn elements plus one for each NUL inside a key. Where it has _kn, no key of any record
    of the group holds a NUL, and the split is every such record's keys, in order: a key twice there is a key twice
    in each of them, and none there is none in any. A group of `{}` (no keys: '' splits into one) is looked at too.
    """
    # `records = 0` (never true) makes the test name the group's count: a test of the keys alone would be pushed
    # below the grouping, to every record (measured 10x slower)
    (n,) = con.execute(f"""
        SELECT count(*) FROM (SELECT _ks, _kn, count(*) AS records FROM {table} WHERE _ks IS NOT NULL GROUP BY ALL)
        WHERE len(string_split(_ks, chr(0))) <> _kn OR list_unique(string_split(_ks, chr(0))) <> _kn
              OR records = 0""").fetchone()
    return int(n)


def mark_duplicate_keys(con: duckdb.DuckDBPyConnection) -> None:
    """Quarantine the records of _ll_rec with a key twice at the top level (one value would count, readers differ);
    record by record only when duplicate_key_groups finds a group that needs it (rare)."""
    if duplicate_key_groups(con, "(SELECT _ks, _kn FROM _ll_rec WHERE bad IS NULL)"):
        con.execute(f"""
            UPDATE _ll_rec SET bad = d.reason
            FROM (SELECT record_no, {_DUPLICATE_REASON} AS reason
                  FROM (SELECT record_no, json_keys(raw) AS _k FROM _ll_rec WHERE bad IS NULL)
                  WHERE list_unique(_k) <> len(_k)) d
            WHERE _ll_rec.record_no = d.record_no""")


def records_relation() -> str:
    """_ll_rec with `doc`, the JSON text of each record that could be read."""
    return "(SELECT *, CASE WHEN bad IS NULL THEN raw END AS doc FROM _ll_rec)"


def _stage_texts(con: duckdb.DuckDBPyConnection, texts: pa.Table) -> int:
    """_ll_rec from an arrow table of (record_no, text), with `why` when the reader already knows it is bad."""
    check = _CHECK.format(text="text", keys="_keys")
    if "why" in texts.column_names:
        check = f"coalesce(why, {check})"
    query_with(con, "_ll_texts", texts,
               f"CREATE OR REPLACE TEMP TABLE _ll_rec AS SELECT record_no, text AS raw, {check} AS bad, "
               f"{KEY_STRING_SQL} FROM (SELECT *, {KEYS_SQL.format(text='text')} FROM _ll_texts)")
    mark_duplicate_keys(con)
    (n,) = con.execute("SELECT count(*) FROM _ll_rec").fetchone()
    return int(n)


@dataclass(frozen=True)
class BatchHint:
    """What a batch of lines may hold, from a search of its bytes (False is certain: the loader skips a step), and
    whether line_batches has created _ll_norm itself (`staged`, see line_batches)."""

    secret: bool = True          # a key, JWT or bearer token (secrets.may_hold_secret)
    datadog: bool = True         # a Datadog log item ('"ddsource"')
    staged: bool = False


DATADOG = re.compile(re.escape(b'"ddsource"'))


def _may_hold(column: pa.ChunkedArray, needle: re.Pattern) -> bool:
    """Whether `needle` may match in the text of `column`: searched in the chunks' data buffers, which hold the
    lines' bytes (a sliced chunk's buffer may hold more lines: then the answer may be True for them, never a wrong
    False)."""
    return any(data is not None and needle.search(data) is not None
               for data in (chunk.buffers()[2] for chunk in column.chunks))


def line_batches(con: duckdb.DuckDBPyConnection, path: Path, notes: list[str],
                 spec: ReadSpec | None = None,
                 stage_sql: Callable[[str], str] | None = None) -> Iterator[tuple[int, BatchHint]]:
    """Stage NDJSON lines batch by batch into _ll_rec (blank lines are not records); yields each batch's size and
    its BatchHint.

    Lines come from the shared line reader (plain or gzip, bounded memory; `spec`: what ingest hashed, where a grown
    file's new lines start); why it stopped early goes to notes, and how many blank lines there were.

    With `stage_sql` (the loader's statement that creates _ll_norm from a relation like records_relation(), keeping
    its columns _ks and _kn), a batch is checked, converted and typed in one statement read from the lines as they
    came (hint.staged): the lines are not copied into _ll_rec first, and each is parsed in that one statement. _ll_rec
    then holds only the raw text of the records _ll_norm quarantines. A batch where a record may have a key twice, or
    that may hold a Datadog item, is staged into _ll_rec as without `stage_sql` (and _ll_norm left to the loader).
    """
    reader = iter_line_batches(path, LINE_BATCH_BYTES, MAX_LINE_BYTES, flag_secrets=True, skip_empty=True, spec=spec)
    seen_invalid = blank = 0
    for batch in reader:
        invalid = reader.invalid_utf8_lines[seen_invalid:]
        seen_invalid = len(reader.invalid_utf8_lines)
        check = _CHECK.format(text="line", keys="_keys")
        if invalid:   # the reader shows the bad bytes as \xHH; the line is evidence, not a record
            listed = ", ".join(str(int(i)) for i in invalid)
            check = f"CASE WHEN line_no IN ({listed}) THEN 'not valid UTF-8 (bytes shown as \\\\xHH)' ELSE {check} END"
        lo, hi = batch.column("line_no")[0].as_py(), batch.column("line_no")[-1].as_py()
        for n in reader.oversized_in(lo, hi):   # only a prefix was read: quarantined as cut, never parsed
            check = f"CASE WHEN line_no = {n} THEN '{reader.oversized_reason(n)}' ELSE {check} END"
        if reader.unterminated_last_line:
            last = batch.column("line_no")[-1].as_py()
            check = (f"CASE WHEN line_no = {last} AND ({check}) = 'not valid JSON' THEN 'last line cut short "
                     f"(not valid JSON, no newline at the end of the file)' ELSE {check} END")
        records = f"""SELECT line_no AS record_no, line AS raw, {check} AS bad, {KEY_STRING_SQL}
            FROM (SELECT *, {KEYS_SQL.format(text='line')} FROM _ll_lines
                  WHERE strlen(line) > 0 AND NOT (strlen(line) < 64 AND trim(line) = ''))"""
        secret, datadog = batch_flag(batch, MAY_HOLD_SECRET), _may_hold(batch.column("line"), DATADOG)
        staged = False
        if stage_sql is not None and not datadog:
            query_with(con, "_ll_lines", batch, stage_sql(
                "(SELECT record_no, raw, bad, CASE WHEN bad IS NULL THEN raw END AS doc, "
                f"CASE WHEN bad IS NULL THEN _ks END AS _ks, _kn FROM ({records}))"))
            staged = not duplicate_key_groups(con, "_ll_norm")
            if staged:
                n, bad = con.execute("SELECT count(*), count(reason) FROM _ll_norm").fetchone()
                con.execute("DROP TABLE IF EXISTS _ll_rec")
                if bad:      # the raw text of the records that go to quarantine, for the loader's finish()
                    query_with(con, "_ll_lines", batch, """
                        CREATE TEMP TABLE _ll_rec AS SELECT line_no AS record_no, line AS raw FROM _ll_lines
                        WHERE line_no IN (SELECT record_no FROM _ll_norm WHERE reason IS NOT NULL)""")
        if not staged:
            query_with(con, "_ll_lines", batch, f"CREATE OR REPLACE TEMP TABLE _ll_rec AS {records}")
            mark_duplicate_keys(con)
            (n,) = con.execute("SELECT count(*) FROM _ll_rec").fetchone()
        blank += batch.num_rows - int(n)
        yield int(n), BatchHint(secret, datadog, staged)
    if blank + reader.empty_lines:
        notes.append(f"{blank + reader.empty_lines:,} blank lines skipped")
    if reader.error:
        notes.append(reader.error)
        # the unreadable rest of the file is one record, so that the loss shows in the quarantine table
        con.execute("CREATE OR REPLACE TEMP TABLE _ll_rec AS SELECT ?::BIGINT AS record_no, '' AS raw, ? AS bad",
                    [reader.lines + 1, reader.error])
        yield 1, BatchHint()


NOT_A_PAGE = 'not a page: no "data" list'


def json_value_batches(
    con: duckdb.DuckDBPyConnection, path: Path, notes: list[str], pages: list[tuple] | None = None
) -> Iterator[int]:
    """Stage the elements of a JSON array file into _ll_rec batch by batch (several top-level arrays allowed);
    yields each batch's record count. Records are numbered on across the batches, in file order.

    With `pages` (a list to fill), the file holds pages `{"data": [records...], "page": ...}` (one, several one
    after another, or an array of them): the elements of each page's data are the records, numbered on across the
    pages, and each page's (page, total_pages, total, rows) is appended to `pages` before the first batch. A value
    that is no page is one bad record.

    DuckDB parses the file into table v of a side in-memory database with a memory limit, whose temp_directory (a
    temporary directory) takes what does not fit: a 3 GB array needs neither 3 GB of memory there nor a copy of it
    in _ll_rec (a database file instead of the spilling was 4x slower to write, for the same memory). v is then
    staged JSON_BATCH_BYTES / JSON_BATCH_RECORDS at a time, by rowid range; each batch is converted and inserted by
    the loader before the next one is read.
    """
    with tempfile.TemporaryDirectory(prefix="forensics-json-") as tmp:
        side = duckdb.connect(config={"temp_directory": tmp})
        try:
            (default_limit,) = side.execute("SELECT current_setting('memory_limit')").fetchone()
            n = _parse_json_values(side, path, pages, str(default_limit))
            if n is None:
                # DuckDB cannot parse the file: the elements before the damage, salvaged in Python. This reads the
                # whole file into memory, but only a damaged file gets here, and its good prefix is worth keeping.
                text = read_text(path, notes)
                start = PAGE_DATA.match(text) if pages is not None else None
                if start:                # the records of the first page, up to the damage
                    text = text[start.end() - 1:]
                yield _stage_texts(con, _salvage_json_values(text, one_array=start is not None))
                return
            side.execute(f"SET memory_limit = '{READ_MEMORY_LIMIT}'")
            for lo, hi in _batch_ranges(side, n, str(default_limit)):
                values = _read_side(side, f"SELECT rowid + 1 AS record_no, CAST(doc AS VARCHAR) AS text, why FROM v "
                                          f"WHERE rowid >= {lo} AND rowid < {hi} ORDER BY rowid", str(default_limit))
                staged = _stage_texts(con, values)
                del values               # this batch's text goes before the loader converts it
                yield staged
        finally:
            side.close()


def _parse_json_values(
    side: duckdb.DuckDBPyConnection, path: Path, pages: list[tuple] | None, default_limit: str
) -> int | None:
    """Table v(doc, why) of the file's records in file order (rowid) on the side connection; how many, or None
    when DuckDB cannot parse the file. Fills `pages` in pages mode."""
    comp = "gzip" if is_gzip(path) else "none"
    p = str(path).replace("'", "''")

    def attempts(size: int) -> list[str]:
        opts = f"compression='{comp}', maximum_object_size={size}"
        # each top-level value (concatenated batches [...][...], pages one after another), arrays unnested in place
        unstructured = (
            f"CREATE TABLE t AS SELECT json AS doc FROM read_json_objects('{p}', format='unstructured', {opts});"
            + _spread("t", "v" if pages is None else "pg", "json_type(doc) = 'ARRAY'", "$"))
        if pages is None:
            return [   # rowid keeps file order
                f"CREATE TABLE v AS SELECT json AS doc, NULL::VARCHAR AS why "
                f"FROM read_json_objects('{p}', format='array', {opts})",
                unstructured,
            ]
        return [unstructured + ";" + _spread("pg", "v", "json_type(doc, '$.data') = 'ARRAY'", "$.data", NOT_A_PAGE)]

    for attempt in range(len(attempts(0))):
        # DuckDB reads in buffers of twice maximum_object_size, counted against the memory limit: first a size
        # that fits PARSE_MEMORY_LIMIT. When a value is over that size (in the concatenated-arrays and pages modes a
        # whole top-level array or page is one value) or memory runs out, as before: MAX_JSON_BYTES under DuckDB's
        # default limit. A parse error is the same at any size: on to the next attempt.
        for size, limit in ((READ_OBJECT_BYTES, PARSE_MEMORY_LIMIT), (MAX_JSON_BYTES, default_limit)):
            try:
                side.execute(f"SET memory_limit = '{limit}'")
                side.execute("DROP TABLE IF EXISTS t; DROP TABLE IF EXISTS pg; DROP TABLE IF EXISTS v")
                side.execute(attempts(size)[attempt])
                (n,) = side.execute("SELECT count(*) FROM v").fetchone()
                found = [] if pages is None else side.execute("""
                    SELECT try_cast(json_extract_string(doc, '$.page') AS BIGINT),
                           try_cast(json_extract_string(doc, '$.total_pages') AS BIGINT),
                           try_cast(json_extract_string(doc, '$.total') AS BIGINT),
                           json_array_length(doc, '$.data')
                    FROM pg WHERE json_type(doc, '$.data') = 'ARRAY' ORDER BY rowid""").fetchall()
                side.execute("DROP TABLE IF EXISTS t; DROP TABLE IF EXISTS pg")     # only v is read from here on
            except duckdb.Error as e:
                if isinstance(e, duckdb.InvalidInputException) and "maximum_object_size" not in str(e):
                    break
                continue
            if pages is not None:
                pages.extend(found)
            return int(n)
    return None


def _read_side(side: duckdb.DuckDBPyConnection, sql: str, default_limit: str) -> pa.Table:
    """A read of v under READ_MEMORY_LIMIT; when a record is too large for that, again under DuckDB's default.

    In arrow record batches of 2,048 rows: the case's connection then checks a batch on all its threads (one
    arrow chunk is one thread's work; measured 1.6x faster on 2 cores)."""
    try:
        return side.sql(sql).to_arrow_table(2048)
    except duckdb.OutOfMemoryException:
        side.execute(f"SET memory_limit = '{default_limit}'")
        return side.sql(sql).to_arrow_table(2048)


def _batch_ranges(side: duckdb.DuckDBPyConnection, n: int, default_limit: str) -> Iterator[tuple[int, int]]:
    """[lo, hi) rowid ranges of v that make the batches: at most JSON_BATCH_RECORDS records and JSON_BATCH_BYTES
    of text each (a record larger than that is a batch alone). One empty batch when v is empty.

    The sizes are read JSON_BATCH_RECORDS at a time, so that a file of many tiny records needs no list of them all.
    """
    if n == 0:
        yield 0, 0
        return
    for first in range(0, n, JSON_BATCH_RECORDS):
        stop = min(first + JSON_BATCH_RECORDS, n)
        sizes = _read_side(side, f"SELECT coalesce(strlen(CAST(doc AS VARCHAR)), 0) AS size FROM v "
                                 f"WHERE rowid >= {first} AND rowid < {stop} ORDER BY rowid", default_limit)["size"]
        ends = np.cumsum(sizes.to_numpy().astype(np.int64))
        lo = 0
        while lo < len(ends):
            before = int(ends[lo - 1]) if lo else 0
            hi = max(int(np.searchsorted(ends, before + JSON_BATCH_BYTES, side="right")), lo + 1)
            yield first + lo, first + hi
            lo = hi


def _spread(source: str, target: str, test: str, items: str, otherwise: str | None = None) -> str:
    """CREATE TABLE target(doc, why): the docs of `source` in order, each one `test` holds for replaced by the
    elements of its `items` list; a doc kept as it is gets `otherwise` as the reason it is bad."""
    why = "NULL::VARCHAR" if otherwise is None else f"CASE WHEN NOT spread THEN '{otherwise}' END"
    return f"""CREATE TABLE {target} AS SELECT u.doc, {why} AS why FROM (
          SELECT top, spread, CASE WHEN spread THEN CAST(json_extract(doc, '{items}[*]') AS JSON[]) ELSE [doc] END AS l
          FROM (SELECT rowid AS top, doc, coalesce({test}, false) AS spread FROM {source})),
        unnest(l) WITH ORDINALITY AS u(doc, idx) ORDER BY top, idx"""


# the start of a page, up to its data list (the page numbers may come first)
PAGE_DATA = re.compile(r'\s*\{(?:\s*"(?:total|page|page_size|total_pages)"\s*:\s*-?\d+\s*,)*\s*"data"\s*:\s*\[')


def _salvage_json_values(text: str, one_array: bool = False) -> pa.Table:
    """The elements before the damage of a truncated or corrupt JSON array; the rest is one bad record.

    one_array: the text starts with one array and what follows its end is not records (the rest of a page)."""
    decoder = json.JSONDecoder()
    values: list[str] = []
    pos, end = 0, len(text)

    def skip(i: int, chars: str) -> int:
        while i < end and text[i] in chars:
            i += 1
        return i

    # a walk in Python, but only over a file DuckDB could not parse: the good prefix is worth keeping
    pos = skip(pos, " \t\r\n")
    while pos < end:
        if text[pos] == "]" and one_array:
            break
        if text[pos] in "[,]":
            pos = skip(pos + 1, " \t\r\n")
            continue
        try:
            _, nxt = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            values.append(text[pos:])
            break
        values.append(text[pos:nxt])
        pos = skip(nxt, " \t\r\n")
    return pa.table({
        "record_no": np.arange(1, len(values) + 1, dtype=np.int64),
        "text": pa.array(values, pa.string()),
    })


def stage_records(con: duckdb.DuckDBPyConnection, texts: list[str]) -> int:
    """Stage `texts` (one JSON record each, read by ingest from many one-object files) as records 1..n."""
    return _stage_texts(con, pa.table({"record_no": np.arange(1, len(texts) + 1, dtype=np.int64),
                                       "text": pa.array(texts, pa.string())}))


def stage_object(con: duckdb.DuckDBPyConnection, path: Path, notes: list[str]) -> int | None:
    """Stage a one-object file (S3/GCS logger) as one record, even a broken one; None when it is NDJSON after all."""
    text = read_text(path, notes)
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        try:
            json.loads(text.lstrip().split("\n", 1)[0])
            notes.clear()              # read again, line by line
            return None
        except (ValueError, RecursionError):
            pass
    return _stage_texts(con, pa.table({"record_no": pa.array([1], pa.int64()), "text": pa.array([text])}))


# ---- CSV ----------------------------------------------------------------------------------------------------

def csv_header(path: Path) -> list[str]:
    """Column names of the header line, made unique."""
    names = next(csv.reader(io.StringIO(head_text(path).split("\n", 1)[0])), [])
    seen: dict[str, int] = {}
    out = []
    for i, name in enumerate(names, start=1):
        name = name.strip() or f"column{i}"      # an empty name (a trailing comma) cannot be a column
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _plain_copy(path: Path, notes: list[str]) -> str:
    """A gzip export decompressed to a temporary file, so that a cut stream still gives its rows to read_csv."""
    fd, name = tempfile.mkstemp(prefix="forensics-litellm-", suffix=".csv")
    with os.fdopen(fd, "wb") as out:
        for data in _inflate(_blocks(path), notes):
            out.write(data)
    return name


def stage_csv(
    con: duckdb.DuckDBPyConnection, path: Path, wanted: tuple[str, ...], file_id: int, notes: list[str]
) -> tuple[int, int, set[str]]:
    """Stage a SpendLogs CSV export: rows in _ll_csv as read, _ll_src with the wanted columns under their schema
    names (matched case-insensitively). Lines the CSV reader rejects go straight to quarantine.

    Records are numbered in file order, broken lines included (record n is on line n + 1 when no value spans
    lines, as in psql's exports). Returns (records, quarantined, wanted columns present).
    """
    header = csv_header(path)
    if not header:
        raise ValueError("the CSV file has no header line")
    by_lower = {h.lower(): h for h in header}
    present = {w: by_lower[w.lower()] for w in wanted if w.lower() in by_lower}
    columns = "{" + ", ".join(f"'{h.replace(chr(39), chr(39) * 2)}': 'VARCHAR'" for h in header) + "}"
    plain = _plain_copy(path, notes) if is_gzip(path) else str(path)
    try:
        for t in ("_ll_rej", "_ll_rej_scan"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _ll_csv AS SELECT * FROM read_csv('{plain.replace("'", "''")}',
              header=true, auto_detect=false, columns={columns}, delim=',', quote='"', escape='"', comment='',
              max_line_size={MAX_CSV_LINE}, store_rejects=true,
              rejects_table='_ll_rej', rejects_scan='_ll_rej_scan')""")
    finally:
        if plain != str(path):
            os.unlink(plain)
    # a broken line keeps its line number in its reason; as a record it takes the place its line number implies
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _ll_q AS
        SELECT line - 1 AS record_no, ltrim(first(csv_line ORDER BY byte_position), chr(13) || chr(10)) AS raw,
          format('CSV line {}: {}', line, first(error_message ORDER BY byte_position)) AS reason
        FROM _ll_rej GROUP BY line""")
    (rejected,) = con.execute("SELECT count(*) FROM _ll_q").fetchone()
    good, first_row = con.execute("SELECT count(*), coalesce(min(rowid), 0) FROM _ll_csv").fetchone()
    # the good rows fill the other places, in file order
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _ll_slots AS
        SELECT row_number() OVER (ORDER BY range) AS k, range AS record_no
        FROM range(1, {int(good) + int(rejected) + 1}) WHERE range NOT IN (SELECT record_no FROM _ll_q)""")
    selected = ", ".join(f"{quote_ident(h)} AS {quote_ident(w)}" for w, h in present.items())
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _ll_src AS
        SELECT s.record_no, c.rowid AS _row, NULL::VARCHAR AS bad, {selected}
        FROM _ll_csv c JOIN _ll_slots s ON s.k = c.rowid - {int(first_row)} + 1""")
    store_quarantine(con, file_id, "_ll_q")
    for t in ("_ll_slots", "_ll_rej", "_ll_rej_scan"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return int(good) + int(rejected), int(rejected), set(present)
