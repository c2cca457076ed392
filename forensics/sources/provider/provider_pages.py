"""Provider usage and cost pages (OpenAI, Anthropic): pages -> buckets -> result records, all in DuckDB SQL.

A record is one bucket result, or one page, bucket or piece of text that could not be read as such. The provider
modules describe their bucket times and result fields as SQL (PageFormat); typing, quarantine and merging of the
records live in provider_stage.
"""
from __future__ import annotations

import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import pyarrow as pa

from forensics.duck import query_with
from forensics.sources.interface import LoadContext, LoadResult
from forensics.sources.plausible import TimeWindow
from forensics.sources.provider import provider_stage as stage

PAGES, BUCKETS, OFFSETS = "_provider_pages", "_provider_buckets", "_provider_offsets"
BAD, RECORDS = "_provider_bad", "_provider_records"
MAX_EPOCH_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
MIN_EPOCH_SECONDS = -62135596800  # 0001-01-01T00:00:00Z (times outside plausible.TimeWindow are quarantined)


@dataclass(frozen=True)
class PageFormat:
    """What differs between providers, as SQL: bucket time keys and parsing, result fields, why a result fails."""

    provider: str
    default_table: str                          # where records of unknown kind (and bad pages) are counted
    start_key: str                              # bucket time keys: start_time / starting_at
    end_key: str
    time_us: Callable[[str], str]               # SQL: text -> microseconds since the epoch, NULL if not a time
    time_kind: str                              # for messages: 'a unix time', 'an RFC 3339 time'
    table_sql: str                              # SQL over the parsed result `v` (field_sql): 'usage' | 'costs'
    paths: dict[str, dict[str, str]]            # table -> field -> dotted path ('_name' fields only feed reasons)
    constants: dict[str, dict[str, str]]        # table -> field -> SQL constant
    reason_sql: dict[str, str]                  # table -> SQL over the fields and `raw`: why a result cannot load
    extra: dict[str, stage.ExtraKey] = field(default_factory=dict)   # table -> dimensions beyond the columns
    flags: dict[str, tuple[str, str]] = field(default_factory=dict)   # name -> (SQL over a cost record, note)


def unix_us_sql(text: str) -> str:
    """Unix seconds (3 or 3.0) as microseconds, NULL unless a time between year 1 and 9999.

    A double is exact to the microsecond over that range (< 2^53 microseconds).
    """
    d = f"TRY_CAST({text} AS DOUBLE)"
    return (f"CASE WHEN {d} BETWEEN {MIN_EPOCH_SECONDS} AND {MAX_EPOCH_SECONDS} "
            f"THEN CAST(round({d} * 1000000) AS BIGINT) END")


def rfc3339_us_sql(text: str) -> str:
    """An RFC 3339 time (any offset; none = UTC, the session zone) as microseconds since the epoch."""
    return f"epoch_us(TRY_CAST({text} AS TIMESTAMPTZ))"


# --- reading the file into one row per JSON document --------------------------------------------------------------

def open_text(path: Path) -> io.TextIOWrapper:
    """The file as text, gunzipped when it starts with the gzip magic bytes, a UTF-8 BOM dropped."""
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", errors="replace")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


def _open_binary(path: Path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def page_spec(pf: PageFormat) -> str:
    """json_transform spec of a page (or of a bare bucket saved without its page): every scalar as text."""
    bucket = {pf.start_key: "VARCHAR", pf.end_key: "VARCHAR", "results": "JSON[]"}
    return json.dumps({"data": [bucket], "has_more": "VARCHAR", "next_page": "VARCHAR", **bucket})


def _pages_select(pf: PageFormat, source: str, page: str, keep_text: bool) -> str:
    # the text of a good page is not kept (it would double the memory): a bad bucket's text is read again
    is_array = f"coalesce(regexp_matches({page}::VARCHAR, '^\\s*\\['), false)"   # not json_type: no second parse
    keep = "true" if keep_text else f"{is_array} OR p.data IS NULL"
    return (f"SELECT CASE WHEN {keep} THEN {page} END AS page, p, {is_array} AS is_array, bad_raw, bad_reason "
            f"FROM (SELECT *, json_transform({page}, '{page_spec(pf)}') AS p FROM {source})")


def _read_json_sql(max_object: int) -> str:
    return ("(SELECT json, NULL::VARCHAR AS bad_raw, NULL::VARCHAR AS bad_reason FROM read_json_objects($path, "
            f"format = 'auto', compression = $c, maximum_object_size = {max_object}))")


def read_pages(con: duckdb.DuckDBPyConnection, path: Path, pf: PageFormat) -> int | None:
    """Fill PAGES: one row per document in file order (rowid), parsed once into the struct `p`.

    DuckDB reads a page, an array of pages, NDJSON or pretty-printed pages one after another; when some text is
    not JSON, a tolerant Python splitter takes over so the good documents still load (bad_raw, bad_reason).
    Returns the object size limit DuckDB read with, None after the Python splitter.
    """
    # DuckDB reserves buffers of twice the largest object it allows: grow only for files with huge pages
    params = {"path": str(path), "c": "gzip" if _is_gzip(path) else "none"}
    for max_object in (16 << 20, 256 << 20, 2 << 30):
        try:
            # a failed statement would abort the case's transaction: DuckDB tries the file on a side connection first
            side = duckdb.connect()
            try:
                side.execute(f"SELECT count(*) FROM {_read_json_sql(max_object)}", params).fetchall()
            finally:
                side.close()
            con.execute(f"CREATE OR REPLACE TEMP TABLE {PAGES} AS "
                        f"{_pages_select(pf, _read_json_sql(max_object), 'json', keep_text=False)}", params)
            return max_object
        except duckdb.InvalidInputException as e:
            if "maximum_object_size" not in str(e):
                break
    docs, raws, reasons = [], [], []
    for text, reason in split_documents(path):
        docs.append(None if reason else text)
        raws.append(text if reason else None)
        reasons.append(reason)
    source = "(SELECT page::JSON AS page, bad_raw, bad_reason FROM _provider_docs)"
    query_with(con, "_provider_docs", pa.table({"page": docs, "bad_raw": raws, "bad_reason": reasons}),
               f"CREATE OR REPLACE TEMP TABLE {PAGES} AS {_pages_select(pf, source, 'page', keep_text=True)}")
    return None


def reread_bad_pages(con: duckdb.DuckDBPyConnection, path: Path, max_object: int) -> None:
    """Put back the text of the pages holding a bad bucket (rare), so it is quarantined as written."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _provider_reread AS SELECT json FROM {_read_json_sql(max_object)}",
                {"path": str(path), "c": "gzip" if _is_gzip(path) else "none"})
    try:
        con.execute(f"UPDATE {PAGES} SET page = r.json FROM _provider_reread r WHERE {PAGES}.rowid = r.rowid "
                    f"AND r.rowid IN (SELECT doc_no FROM {BUCKETS} WHERE reason IS NOT NULL AND bad_raw IS NULL)")
    finally:
        con.execute("DROP TABLE _provider_reread")


def split_documents(path: Path) -> Iterator[tuple[str, str | None]]:
    """Yield (text, None) per JSON document, or (text, reason) for text that is not JSON (the tolerant path)."""
    with open_text(path) as f:
        first = f.readline()
        if _valid(first):
            # NDJSON: one document a line, streamed
            yield first, None
            for line in f:
                if line.strip():
                    yield (line, None) if _valid(line) else (line.rstrip("\n"), _why(line))
            return
        text = first + f.read()
    if text.lstrip().startswith("["):      # an array of pages: whole, or one record kept in quarantine
        yield (text, None) if _valid(text) else (text, f"{_why(text)}: cut short or corrupt")
        return
    yield from _concatenated(text)


def _valid(text: str) -> bool:
    try:
        return bool(text.strip()) and json.loads(text) is not None
    except (json.JSONDecodeError, RecursionError):
        return False


def _why(text: str) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg})"
    except RecursionError:
        return "not readable: JSON nested too deeply"
    return "not a JSON object"


_WS = re.compile(r"\s*")
_TOP_LEVEL = re.compile(r"^[\[{]", re.M)   # a document starts at column 0; pretty-printed insides are indented


def _concatenated(text: str) -> Iterator[tuple[str, str | None]]:
    decoder = json.JSONDecoder()
    pos, parsed, first_error = 0, 0, None
    pending: list[tuple[str, str]] = []
    while True:
        pos = _WS.match(text, pos).end()
        if pos >= len(text):
            break
        try:
            if text[pos] not in "{[":
                raise json.JSONDecodeError("Expecting a page object", text, pos)
            try:
                _, end = decoder.raw_decode(text, pos)
            except RecursionError:
                raise json.JSONDecodeError("nested too deeply", text, pos) from None
        except json.JSONDecodeError as e:
            # skip to the next document: in NDJSON the next line, in pretty-printed pages the next '{' at column 0
            nxt = _TOP_LEVEL.search(text, pos + 1)
            end = nxt.start() if nxt else len(text)
            first_error = first_error or e
            pending.append((text[pos:end].rstrip("\n"), f"not valid JSON ({e.msg})"))
            pos = end
            continue
        parsed += 1
        yield from pending
        pending.clear()
        yield text[pos:end], None
        pos = end
    if not parsed and first_error is not None:   # nothing readable (a single page cut short): one record, kept
        yield text.strip("\n"), f"not valid JSON ({first_error.msg}): cut short or corrupt"
        return
    yield from pending


# --- pages -> buckets -> records ---------------------------------------------------------------------------------
# Each page is parsed once (json_transform into a struct: data[], has_more, next_page), each result once (into a
# struct of its fields as text); carrying a whole page along each of its buckets would copy it per row, so never do.

def _spec(paths: list[str]) -> dict:
    spec: dict = {}
    for path in paths:
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = "VARCHAR"
    return spec


def field_sql(path: str) -> str:
    """The text of a result field, by dotted path, from the parsed result struct `v`."""
    out = "v"
    for part in path.split("."):
        out = f"struct_extract({out}, '{part}')"
    return out


def buckets_sql(pf: PageFormat, window: TimeWindow | None = None) -> str:
    """One row per bucket (or bad page) with its times and the first problem found; pages keyed (doc_no, page_idx).
    A bucket starting or ending outside `window` (plausible.TimeWindow) is quarantined whole, with its text."""
    s, e = pf.start_key, pf.end_key
    bare = f"[struct_pack({s} := p.{s}, {e} := p.{e}, results := p.results)]"   # a bucket saved without its page
    window = window or TimeWindow.at()

    def time_reason(key: str, raw: str, us: str) -> str:
        return (f"CASE WHEN {raw} IS NULL THEN 'bucket has no {key}' WHEN {us} IS NULL "
                f"""THEN 'bucket {key} "' || left({raw}, 40) || '" is not {pf.time_kind}' """
                f"ELSE {window.reason_sql(f'bucket {key}', raw, f'make_timestamp({us})', 'false')} END")

    return f"""
CREATE OR REPLACE TEMP TABLE {BUCKETS} AS
WITH pages AS (
    SELECT rowid AS doc_no, 0 AS page_idx, p, bad_raw, bad_reason FROM {PAGES} WHERE NOT is_array
    UNION ALL
    -- an NDJSON line holding an array of pages (rare): its pages parsed here
    SELECT doc_no, page_idx, json_transform(page, '{page_spec(pf)}'), NULL, NULL FROM (
        SELECT rowid AS doc_no, unnest(json_extract(page, '$[*]')) AS page,
            generate_subscripts(json_extract(page, '$[*]'), 1) AS page_idx
        FROM {PAGES} WHERE is_array)
), k AS (
    SELECT doc_no, page_idx, p, bad_raw, p.data IS NOT NULL AS is_page,
        CASE WHEN p.data IS NOT NULL THEN p.has_more = 'true' END AS has_more,
        CASE WHEN p.data IS NOT NULL THEN p.next_page END AS next_page,
        CASE WHEN bad_reason IS NOT NULL THEN bad_reason
             WHEN p.data IS NULL AND p.results IS NULL THEN 'page has no data list' END AS page_reason
    FROM pages
), b AS (
    SELECT doc_no, page_idx, is_page, has_more, next_page, page_reason, bad_raw,
        unnest(CASE WHEN is_page THEN p.data ELSE {bare} END) AS bk,
        generate_subscripts(CASE WHEN is_page THEN p.data ELSE {bare} END, 1) AS bucket_idx
    FROM k
), t AS (
    SELECT doc_no, page_idx, bucket_idx, is_page, has_more, next_page, page_reason, bad_raw,
        bk.results AS results, bk.{s} AS start_raw, bk.{e} AS end_raw,
        {pf.time_us(f"bk.{s}")} AS start_us, {pf.time_us(f"bk.{e}")} AS end_us
    FROM b
), r AS (
    SELECT *, coalesce(page_reason,
        CASE WHEN start_raw IS NULL AND end_raw IS NULL AND results IS NULL
             THEN 'bucket is not an object with {s}, {e} and results' END,
        {time_reason(s, 'start_raw', 'start_us')},
        {time_reason(e, 'end_raw', 'end_us')},
        CASE WHEN end_us <= start_us THEN 'bucket ends before it starts' END,
        CASE WHEN results IS NULL THEN 'bucket has no results list' END) AS reason
    FROM t
)
SELECT *, CASE WHEN reason IS NULL THEN len(results) ELSE 1 END AS n_records FROM r
"""


def listed_sql(pf: PageFormat) -> str:
    """Every good bucket of the file into provider_buckets, empty ones too (the API lists every bucket of the range
    asked for: one without results says nothing was used then). Parameter: the file's id."""
    return f"""
INSERT INTO provider_buckets
SELECT '{pf.provider}', '{pf.default_table}', make_timestamp(start_us), make_timestamp(end_us), len(results), ?
FROM {BUCKETS} WHERE reason IS NULL
"""


# record numbers: a running count over the (narrow) bucket index, joined back; the window never sees the results
OFFSETS_SQL = f"""
CREATE OR REPLACE TEMP TABLE {OFFSETS} AS
SELECT doc_no, page_idx, bucket_idx,
    coalesce(sum(n_records) OVER (ORDER BY doc_no, page_idx, bucket_idx
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS records_before
FROM {BUCKETS}
"""

# a bad page or bucket is quarantined with its own text, found again in the document it came from
BAD_SQL = f"""
CREATE OR REPLACE TEMP TABLE {BAD} AS
SELECT o.records_before + 1 AS record_no, b.reason,
    coalesce(b.bad_raw, json_extract(d.page,
        CASE WHEN d.is_array THEN '$[' || (b.page_idx - 1) || ']' ELSE '$' END
        || CASE WHEN b.is_page THEN '.data[' || (b.bucket_idx - 1) || ']' ELSE '' END)::VARCHAR) AS raw
FROM {BUCKETS} b JOIN {OFFSETS} o USING (doc_no, page_idx, bucket_idx) JOIN {PAGES} d ON d.rowid = b.doc_no
WHERE b.reason IS NOT NULL
"""


def records_sql(pf: PageFormat) -> str:
    """One row per record: results parsed once into `v`; bad pages and buckets with their own text as raw."""
    paths = sorted({p for table in pf.paths.values() for p in table.values()})
    spec = json.dumps(_spec(paths))
    return f"""
CREATE OR REPLACE TEMP TABLE {RECORDS} AS
WITH results AS (
    SELECT o.records_before, b.start_us, b.end_us, b.start_raw, b.end_raw,
        unnest(b.results) AS result, generate_subscripts(b.results, 1) AS result_idx
    FROM {BUCKETS} b JOIN {OFFSETS} o USING (doc_no, page_idx, bucket_idx) WHERE b.reason IS NULL
), parsed AS (
    SELECT records_before + result_idx AS record_no, start_us, end_us, start_raw, end_raw, result::VARCHAR AS raw,
        NULL::VARCHAR AS reason, left(result::VARCHAR, 1) = '{{' AS is_object, json_transform(result, '{spec}') AS v
    FROM results
)
SELECT *, CASE WHEN v IS NULL THEN '{pf.default_table}' ELSE {pf.table_sql} END AS tbl FROM parsed
UNION ALL BY NAME
SELECT record_no, raw, reason, '{pf.default_table}' AS tbl FROM {BAD}
"""


def frame_sql(pf: PageFormat, table: str) -> str:
    """The staging frame of one table: every field as text, plus the first problem of each record."""
    paths = pf.paths[table]
    fields = stage.USAGE_FIELDS if table == "usage" else stage.COST_FIELDS
    picked = ",\n        ".join(f"{field_sql(path)} AS {name}" for name, path in paths.items())
    consts = pf.constants.get(table, {})
    out = ", ".join(n if n in paths else f"{consts.get(n, 'NULL')}::VARCHAR AS {n}" for n in fields)
    return f"""
CREATE OR REPLACE TEMP TABLE {stage.FRAME} AS
WITH f AS (
    SELECT record_no, start_us, end_us, start_raw, end_raw, raw, reason, is_object,
        {picked}
    FROM {RECORDS} WHERE tbl = '{table}'
)
SELECT record_no, '{pf.provider}' AS provider, start_us, end_us, start_raw, end_raw, {out}, raw,
    {pf.extra.get(table, stage.ExtraKey()).frame_sql} AS extra_key,
    coalesce(reason, CASE WHEN NOT is_object THEN 'result is not an object' END, {pf.reason_sql[table]}) AS reason
FROM f
"""


def load_pages(ctx: LoadContext, pf: PageFormat) -> LoadResult:
    """Load a file of pages: records staged per table, then notes on flags, dangling cursors and conflicts.

    Each intermediate table is dropped as soon as the next one is built, so only two stages are held at once.
    """
    con = ctx.con
    tally, tables = stage.Tally(), []

    def step(sql: str, *done: str) -> None:
        con.execute(sql)
        for table in done:
            con.execute(f"DROP TABLE {table}")

    try:
        max_object = read_pages(con, ctx.path, pf)
        step(buckets_sql(pf, ctx.window))
        con.execute(listed_sql(pf), [ctx.file_id])
        step(OFFSETS_SQL)
        if max_object and con.execute(f"SELECT count(*) FROM {BUCKETS} b JOIN {PAGES} d ON d.rowid = b.doc_no "
                                      "WHERE b.reason IS NOT NULL AND d.page IS NULL").fetchall()[0][0]:
            reread_bad_pages(con, ctx.path, max_object)
        step(BAD_SQL, PAGES)
        notes = stage.cursor_notes(con, pf.provider, pf.default_table, BUCKETS)
        step(records_sql(pf), BUCKETS, BAD, OFFSETS)
        notes = _flag_notes(con, pf) + notes
        tables = sorted(t for (t,) in con.execute(f"SELECT DISTINCT tbl FROM {RECORDS}").fetchall())
        for i, table in enumerate(tables):
            step(frame_sql(pf, table), *([RECORDS] if i == len(tables) - 1 else []))
            tally.add(stage.commit_frame(ctx, table, pf.extra.get(table, stage.ExtraKey())))
    finally:
        for t in (stage.FRAME, RECORDS, BAD, OFFSETS, BUCKETS, PAGES):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    notes += stage.conflict_notes(con, ctx.file_id, pf.provider, tables, pf.extra)
    return tally.result(notes)


def _flag_notes(con: duckdb.DuckDBPyConnection, pf: PageFormat) -> list[str]:
    if not pf.flags:
        return []
    counts = ", ".join(f"count(*) FILTER ({sql})" for sql, _ in pf.flags.values())
    values = con.execute(f"SELECT {counts} FROM {RECORDS} WHERE tbl = 'costs' AND v IS NOT NULL").fetchall()[0]
    return [note.format(n=n) for (_, note), n in zip(pf.flags.values(), values) if n]
