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

from forensics.sources import provider_stage as stage
from forensics.sources.interface import LoadContext, LoadResult

PAGES, PAGE_LIST = "_provider_pages", "_provider_page_list"
BUCKETS, RECORDS = "_provider_buckets", "_provider_records"
MAX_EPOCH_SECONDS = 253402300799  # 9999-12-31T23:59:59Z


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
    usage_extra_dims: tuple[str, ...] = ()
    cost_extra_dims: tuple[str, ...] = ()
    flags: dict[str, tuple[str, str]] = field(default_factory=dict)   # name -> (SQL over a cost record, note)


def unix_us_sql(text: str) -> str:
    """Unix seconds (3 or 3.0) as microseconds, NULL unless a time between 1970 and 9999."""
    d = f"TRY_CAST({text} AS DECIMAL(20,6))"
    return f"CASE WHEN {d} BETWEEN 0 AND {MAX_EPOCH_SECONDS} THEN CAST({d} * 1000000 AS BIGINT) END"


def rfc3339_us_sql(text: str) -> str:
    """An RFC 3339 time (any offset; none = UTC, the session zone) as microseconds since the epoch."""
    us = f"epoch_us(TRY_CAST({text} AS TIMESTAMPTZ))"
    return f"CASE WHEN {us} >= 0 THEN {us} END"


# --- reading the file into one row per JSON document --------------------------------------------------------------

def open_text(path: Path) -> io.TextIOWrapper:
    """The file as text, gunzipped when it starts with the gzip magic bytes, a UTF-8 BOM dropped."""
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", errors="replace")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


def _open_binary(path: Path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def read_pages(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Fill PAGES (page JSON | bad_raw + bad_reason), one row per document in file order (rowid).

    DuckDB reads a page, an array of pages, NDJSON or pretty-printed pages one after another; when some text is
    not JSON, a tolerant Python splitter takes over so the good documents still load.
    """
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {PAGES} AS SELECT json AS page, NULL::VARCHAR AS bad_raw, "
            "NULL::VARCHAR AS bad_reason FROM read_json_objects($path, format = 'auto', compression = $c, "
            "maximum_object_size = 1073741824)", {"path": str(path), "c": "gzip" if _is_gzip(path) else "none"})
    except duckdb.Error:
        docs, raws, reasons = [], [], []
        for text, reason in split_documents(path):
            docs.append(None if reason else text)
            raws.append(text if reason else None)
            reasons.append(reason)
        con.register("_provider_docs", pa.table({"page": docs, "bad_raw": raws, "bad_reason": reasons}))
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {PAGES} AS "
                        "SELECT page::JSON AS page, bad_raw, bad_reason FROM _provider_docs")
        finally:
            con.unregister("_provider_docs")


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
    if text.lstrip().startswith("["):
        if not _valid(text):
            raise ValueError(f"not valid JSON: {_why(text)}")
        yield text, None
        return
    yield from _concatenated(text)


def _valid(text: str) -> bool:
    try:
        return bool(text.strip()) and json.loads(text) is not None
    except json.JSONDecodeError:
        return False


def _why(text: str) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg})"
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
            _, end = decoder.raw_decode(text, pos)
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
    if not parsed and first_error is not None:
        raise ValueError(f"not valid JSON: {first_error}")
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


def pages_sql(pf: PageFormat) -> str:
    """One row per page (arrays of pages flattened), parsed once, numbered in file order."""
    bucket = {pf.start_key: "VARCHAR", pf.end_key: "VARCHAR", "results": "JSON[]"}
    spec = json.dumps({"data": [bucket], "has_more": "VARCHAR", "next_page": "VARCHAR", **bucket})
    pages_of = "CASE WHEN json_type(doc) = 'ARRAY' THEN json_extract(doc, '$[*]') ELSE [doc] END"
    return f"""
CREATE OR REPLACE TEMP TABLE {PAGE_LIST} AS
WITH docs AS (
    SELECT rowid AS doc_no, page AS doc, bad_raw, bad_reason FROM {PAGES}
), pages AS (
    SELECT doc_no, bad_raw, bad_reason, unnest({pages_of}) AS page, generate_subscripts({pages_of}, 1) AS page_idx
    FROM docs
)
SELECT row_number() OVER (ORDER BY doc_no, page_idx) AS page_no, page, bad_raw, bad_reason,
    json_transform(page, '{spec}') AS p
FROM pages
"""


def buckets_sql(pf: PageFormat) -> str:
    """One row per bucket (or bad page), with its times, the first problem found, and its first record number."""
    s, e = pf.start_key, pf.end_key
    bare = f"[struct_pack({s} := p.{s}, {e} := p.{e}, results := p.results)]"   # a bucket saved without its page

    def time_reason(key: str, raw: str, us: str) -> str:
        return (f"CASE WHEN {raw} IS NULL THEN 'bucket has no {key}' WHEN {us} IS NULL "
                f"""THEN 'bucket {key} "' || left({raw}, 40) || '" is not {pf.time_kind}' END""")

    return f"""
CREATE OR REPLACE TEMP TABLE {BUCKETS} AS
WITH k AS (
    SELECT page_no, p, bad_raw, p.data IS NOT NULL AS is_page,
        CASE WHEN p.data IS NOT NULL THEN p.has_more = 'true' END AS has_more,
        CASE WHEN p.data IS NOT NULL THEN p.next_page END AS next_page,
        CASE WHEN bad_reason IS NOT NULL THEN bad_reason
             WHEN p.data IS NULL AND p.results IS NULL THEN 'page has no data list' END AS page_reason
    FROM {PAGE_LIST}
), b AS (
    SELECT page_no, is_page, has_more, next_page, page_reason, bad_raw,
        unnest(CASE WHEN is_page THEN p.data ELSE {bare} END) AS bk,
        generate_subscripts(CASE WHEN is_page THEN p.data ELSE {bare} END, 1) AS bucket_idx
    FROM k
), t AS (
    SELECT page_no, bucket_idx, is_page, has_more, next_page, page_reason, bad_raw, bk.results AS results,
        bk.{s} AS start_raw, bk.{e} AS end_raw, {pf.time_us(f"bk.{s}")} AS start_us, {pf.time_us(f"bk.{e}")} AS end_us
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
), n AS (
    SELECT *, CASE WHEN reason IS NULL THEN len(results) ELSE 1 END AS n_records FROM r
)
SELECT *, coalesce(sum(n_records) OVER (ORDER BY page_no, bucket_idx
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS records_before
FROM n
"""


def records_sql(pf: PageFormat) -> str:
    """One row per record: results parsed once into `v`; bad pages and buckets with their own text as raw."""
    paths = sorted({p for table in pf.paths.values() for p in table.values()})
    spec = json.dumps(_spec(paths))
    bad_bucket = (f"CASE WHEN b.is_page THEN json_extract(l.page, '$.data[' || (b.bucket_idx - 1) || ']') "
                  "ELSE l.page END::VARCHAR")
    return f"""
CREATE OR REPLACE TEMP TABLE {RECORDS} AS
WITH results AS (
    SELECT records_before, start_us, end_us, start_raw, end_raw,
        unnest(results) AS result, generate_subscripts(results, 1) AS result_idx
    FROM {BUCKETS} WHERE reason IS NULL
), parsed AS (
    SELECT records_before + result_idx AS record_no, start_us, end_us, start_raw, end_raw, result::VARCHAR AS raw,
        NULL::VARCHAR AS reason, left(result::VARCHAR, 1) = '{{' AS is_object, json_transform(result, '{spec}') AS v
    FROM results
)
SELECT *, CASE WHEN v IS NULL THEN '{pf.default_table}' ELSE {pf.table_sql} END AS tbl FROM parsed
UNION ALL BY NAME
SELECT b.records_before + 1 AS record_no, coalesce(b.bad_raw, {bad_bucket}) AS raw, b.reason,
    '{pf.default_table}' AS tbl
FROM {BUCKETS} b JOIN {PAGE_LIST} l USING (page_no) WHERE b.reason IS NOT NULL
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
    coalesce(reason, CASE WHEN NOT is_object THEN 'result is not an object' END, {pf.reason_sql[table]}) AS reason
FROM f
"""


def load_pages(ctx: LoadContext, pf: PageFormat) -> LoadResult:
    """Load a file of pages: records staged per table, then notes on flags, dangling cursors and conflicts."""
    con = ctx.con
    tally = stage.Tally()
    try:
        read_pages(con, ctx.path)
        for sql in (pages_sql(pf), buckets_sql(pf), records_sql(pf)):
            con.execute(sql)
        tables = [t for (t,) in con.execute(f"SELECT DISTINCT tbl FROM {RECORDS}").fetchall()]
        for table in sorted(tables):
            con.execute(frame_sql(pf, table))
            tally.add(stage.commit_frame(ctx, table, pf.usage_extra_dims if table == "usage" else pf.cost_extra_dims))
        notes = _flag_notes(con, pf)
        notes += stage.cursor_notes(con, pf.provider, pf.default_table, BUCKETS)
    finally:
        for t in (stage.FRAME, RECORDS, BUCKETS, PAGE_LIST, PAGES):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    notes += stage.conflict_notes(con, ctx.file_id, pf.provider, pf.usage_extra_dims, pf.cost_extra_dims)
    return tally.result(notes)


def _flag_notes(con: duckdb.DuckDBPyConnection, pf: PageFormat) -> list[str]:
    if not pf.flags:
        return []
    counts = ", ".join(f"count(*) FILTER ({sql})" for sql, _ in pf.flags.values())
    values = con.execute(f"SELECT {counts} FROM {RECORDS} WHERE tbl = 'costs' AND v IS NOT NULL").fetchall()[0]
    return [note.format(n=n) for (_, note), n in zip(pf.flags.values(), values) if n]
