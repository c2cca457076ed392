"""OpenAI Usage and Costs API pages and the Usage dashboard's CSV exports -> provider_usage / provider_costs.

Formats: openai.usage_<endpoint> (pages of GET /organization/usage/<endpoint>; completions, embeddings and
moderations results are token usage and load; images, audio, vector stores, code interpreter, file and web search
results have no token counts and are quarantined, the reason naming the result object), openai.costs (pages of
GET /organization/costs, amount.value in dollars), openai.usage_csv and openai.costs_csv (dashboard exports).
input_tokens is OpenAI's total (cached and cache writes included); breakdown fields are never summed to rebuild it;
the 2025-04 result shape (no uncached / cache-write fields) leaves those columns NULL. A row already in the case
(re-export) is merged; 1h and 1d pages of the same usage are distinct views and both kept (see provider_stage).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import duckdb

from forensics.duck import quote_ident
from forensics.sources.interface import LoadContext, LoadResult
from forensics.sources.provider import provider_stage as stage
from forensics.sources.provider.provider_pages import (PageFormat, field_sql, load_pages, rfc3339_us_sql,
                                                       unix_us_sql)
from forensics.sources.provider.provider_stage import ExtraKey
from forensics.sources.quarantine import quarantine_lines

COMPLETIONS = "organization.usage.completions.result"
COSTS = "organization.costs.result"
# result objects that are token usage, with their required count fields
TOKEN_USAGE = {
    COMPLETIONS: ("input_tokens", "output_tokens"),
    "organization.usage.embeddings.result": ("input_tokens",),
    "organization.usage.moderations.result": ("input_tokens",),
}
# (canonical field, OpenAI result field)
USAGE_FIELD_MAP = (
    ("model", "model"), ("api_key_id", "api_key_id"), ("project_id", "project_id"), ("user_id", "user_id"),
    ("batch", "batch"), ("service_tier", "service_tier"), ("input_tokens", "input_tokens"),
    ("uncached_input_tokens", "input_uncached_tokens"), ("cache_read_tokens", "input_cached_tokens"),
    ("cache_write_tokens", "input_cache_write_tokens"), ("output_tokens", "output_tokens"),
    ("requests", "num_model_requests"),
)
COST_FIELD_MAP = (
    ("project_id", "project_id"), ("api_key_id", "api_key_id"), ("line_item", "line_item"),
    ("quantity", "quantity"), ("quantity_unit", "quantity_unit"),
)
USAGE_CSV_TIMES = ("start_time", "end_time", "start_time_iso", "end_time_iso")
COST_CSV_COLUMNS = ("start_time", "end_time", "amount_value")
# OpenAI rows differ only in kind (completions vs embeddings...) beyond the canonical columns; CSV rows have no object
USAGE_EXTRA = ExtraKey(f"coalesce(_object, '{COMPLETIONS}')",
                       f"coalesce(json_extract_string({{t}}.raw, '$.object'), '{COMPLETIONS}')")

_PAGE = re.compile(r'"object"\s*:\s*"page"')
_BUCKET = re.compile(r'"object"\s*:\s*"bucket"')
_RESULT = re.compile(r'"object"\s*:\s*"organization\.(?:usage\.([a-z_]+)|(costs))\.result"')


class OpenAISource:
    family = "openai"

    def detect(self, sample: bytes, path: Path, options=None) -> str | None:
        text = sample.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
        if text[:1] in ("{", "["):
            if not _PAGE.search(text):
                return None
            m = _RESULT.search(text)
            if m:
                return "openai.costs" if m.group(2) else f"openai.usage_{m.group(1)}"
            if _BUCKET.search(text):
                # only empty buckets in the sample: the file name is the tie-breaker
                return "openai.costs" if "cost" in path.name.lower() else "openai.usage_completions"
            return None
        # a CSV loads with its header on the first line: the loaders read it there (blank lines before it: no CSV)
        header = _csv_header(sample.decode("utf-8", "replace").lstrip("\ufeff"))
        if header is None:
            return None
        if all(c in header for c in COST_CSV_COLUMNS):
            return "openai.costs_csv"
        if all(c in header for c in USAGE_CSV_TIMES):
            return "openai.usage_csv"
        return None

    def load(self, ctx: LoadContext, fmt: str) -> LoadResult:
        if fmt in ("openai.usage_csv", "openai.costs_csv"):
            return load_csv(ctx, fmt)
        if fmt == "openai.costs" or fmt.startswith("openai.usage_"):
            return load_pages(ctx, page_format(fmt))
        raise ValueError(f"unknown OpenAI format {fmt}")


def _csv_header(text: str) -> list[str] | None:
    line = text.split("\n", 1)[0].rstrip("\r")
    if "," not in line:
        return None
    return [c.strip().lower() for c in next(csv.reader([line]))]


def page_format(fmt: str) -> PageFormat:
    """The OpenAI page format; a result without `object` is taken to be what the file was detected as."""
    endpoint = fmt.removeprefix("openai.usage_")
    if fmt != "openai.costs" and not re.fullmatch(r"[a-z_]+", endpoint):
        raise ValueError(f"unknown OpenAI format {fmt}")
    default = COSTS if fmt == "openai.costs" else f"organization.usage.{endpoint}.result"
    obj = f"coalesce(_object, '{default}')"
    kinds = ", ".join(f"'{k}'" for k in TOKEN_USAGE)
    usage_reason = f"""CASE
        WHEN {obj} NOT IN ({kinds}) THEN CASE WHEN {obj} LIKE 'organization.usage.%'
            THEN {obj} || ' has no token counts: not loaded into provider_usage'
            ELSE 'result object "' || left({obj}, 60) || '" is not OpenAI usage or cost' END
        WHEN input_tokens IS NULL THEN 'result has no input_tokens'
        WHEN {obj} = '{COMPLETIONS}' AND output_tokens IS NULL THEN 'result has no output_tokens' END"""
    cost_reason = ("CASE WHEN amount_raw IS NULL AND json_type(raw, '$.amount') NOT IN ('OBJECT', 'NULL') "
                   "THEN 'amount is not an object' END")
    return PageFormat(
        provider="openai",
        default_table="costs" if fmt == "openai.costs" else "usage",
        start_key="start_time", end_key="end_time", time_us=unix_us_sql, time_kind="a unix time",
        table_sql=f"CASE WHEN coalesce({field_sql('object')}, '{default}') = '{COSTS}' THEN 'costs' ELSE 'usage' END",
        paths={"usage": {**dict(USAGE_FIELD_MAP), "_object": "object"},
               "costs": {**dict(COST_FIELD_MAP), "amount_raw": "amount.value", "currency_raw": "amount.currency"}},
        constants={"costs": {"amount_in_cents": "'false'"}},
        reason_sql={"usage": usage_reason, "costs": cost_reason},
        extra={"usage": USAGE_EXTRA},
    )


# --- dashboard CSV exports -------------------------------------------------------------------------------------

CSV_USAGE_MAP = {"model": "model", "api_key_id": "api_key_id", "project_id": "project_id", "user_id": "user_id",
                 "batch": "batch", "service_tier": "service_tier", "input_tokens": "input_tokens",
                 "uncached_input_tokens": "input_uncached_tokens", "cache_read_tokens": "input_cached_tokens",
                 "cache_write_tokens": "input_cache_write_tokens", "output_tokens": "output_tokens",
                 "requests": "num_model_requests"}
CSV_COST_MAP = {"project_id": "project_id", "api_key_id": "api_key_id", "line_item": "line_item",
                "quantity": "quantity", "quantity_unit": "quantity_unit", "amount_raw": "amount_value",
                "currency_raw": "amount_currency"}
_READ_CSV = ("read_csv($path, header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"'"
             ", store_rejects = true, rejects_table = '_openai_csv_rejects', rejects_scan = '_openai_csv_scans')")


def _csv_time_sql(columns: dict[str, str], base: str) -> tuple[str, str]:
    """(microseconds expression, raw text expression) from the unix column, else the ISO one."""
    parts, raws = [], []
    if base in columns:
        col = f"r.{quote_ident(columns[base])}"
        parts.append(unix_us_sql(col))
        raws.append(col)
    if f"{base}_iso" in columns:
        col = f"r.{quote_ident(columns[f'{base}_iso'])}"
        parts.append(rfc3339_us_sql(col))
        raws.append(col)
    if not parts:
        return "NULL::BIGINT", "NULL::VARCHAR"
    return f"coalesce({', '.join(parts)})", f"coalesce({', '.join(raws)})"


def csv_frame_sql(fmt: str, columns: dict[str, str], first_rowid: int = 0) -> str:
    """SELECT of the staging frame over the CSV (aliased r, row order kept as `rowid` of the loaded table).

    `first_rowid` is the rowid of the first row: inside a transaction DuckDB numbers new rows from a large offset."""
    usage = fmt == "openai.usage_csv"
    mapping = CSV_USAGE_MAP if usage else CSV_COST_MAP
    fields = stage.USAGE_FIELDS if usage else stage.COST_FIELDS
    exprs = []
    for name in fields:
        src = mapping.get(name)
        if name == "amount_in_cents":
            exprs.append("'false' AS amount_in_cents")
        elif src in columns:
            exprs.append(f"r.{quote_ident(columns[src])} AS {name}")
        else:
            exprs.append(f"NULL::VARCHAR AS {name}")
    start, start_raw = _csv_time_sql(columns, "start_time")
    end, end_raw = _csv_time_sql(columns, "end_time")
    reason = "NULL::VARCHAR"
    if usage and not {"input_tokens", "output_tokens"} & columns.keys():
        reason = "'this usage export has no input_tokens or output_tokens column: not token usage'"
    return f"""
SELECT r.rowid - {int(first_rowid)} + 2 AS record_no, 'openai' AS provider, {start} AS start_us, {end} AS end_us,
    {start_raw} AS start_raw, {end_raw} AS end_raw, {", ".join(exprs)},
    to_json(r)::VARCHAR AS raw, {f"'{COMPLETIONS}'" if usage else "NULL"}::VARCHAR AS extra_key, {reason} AS reason
FROM _openai_csv r"""


def load_csv(ctx: LoadContext, fmt: str) -> LoadResult:
    """A dashboard export: one record per data line; malformed lines are quarantined from DuckDB's reject table."""
    con, usage = ctx.con, fmt == "openai.usage_csv"
    con.execute("DROP TABLE IF EXISTS _openai_csv_rejects; DROP TABLE IF EXISTS _openai_csv_scans")
    try:
        # a table keeps the file's row order in rowid (a window over a scan does not promise it)
        # a failed statement would abort the case's transaction: the CSV reader tries the file on a side connection
        side = duckdb.connect()
        try:
            side.execute(f"SELECT count(*) FROM {_READ_CSV.replace('_openai_csv_', '_side_')}",
                         {"path": str(ctx.path)}).fetchall()
        except duckdb.Error as e:          # not readable as CSV at all: every line kept, with the reader's reason
            return quarantine_lines(ctx, f"cannot read as CSV: {str(e).splitlines()[0]}"[:300])
        finally:
            side.close()
        con.execute(f"CREATE OR REPLACE TEMP TABLE _openai_csv AS SELECT * FROM {_READ_CSV}", {"path": str(ctx.path)})
        cur = con.execute("SELECT * FROM _openai_csv LIMIT 0")
        columns = {d[0].strip().lower(): d[0] for d in cur.description}
        cur.fetchall()
        rejects = con.execute("SELECT count(DISTINCT line) FROM _openai_csv_rejects").fetchall()[0][0]
        (first_rowid,) = con.execute("SELECT coalesce(min(rowid), 0) FROM _openai_csv").fetchone()
        frame = csv_frame_sql(fmt, columns, first_rowid)
        if rejects:
            frame = _with_rejects(frame, fmt)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {stage.FRAME} AS {frame}")
        tally = stage.commit_frame(ctx, "usage" if usage else "costs", USAGE_EXTRA if usage else ExtraKey())
    finally:
        con.execute(f"DROP TABLE IF EXISTS {stage.FRAME}; DROP TABLE IF EXISTS _openai_csv; "
                    "DROP TABLE IF EXISTS _openai_csv_rejects; DROP TABLE IF EXISTS _openai_csv_scans")
    notes = stage.conflict_notes(con, ctx.file_id, "openai", ["usage" if usage else "costs"], {"usage": USAGE_EXTRA})
    return tally.result(notes)


def _with_rejects(frame: str, fmt: str) -> str:
    """Good rows renumbered to their line (rows are assumed one line each) plus one quarantine row per bad line."""
    fields = stage.USAGE_FIELDS if fmt == "openai.usage_csv" else stage.COST_FIELDS
    nulls = ", ".join(f"NULL::VARCHAR AS {f}" for f in fields)
    return f"""
WITH good AS ({frame}),
bad AS (SELECT line, first(csv_line ORDER BY column_idx) AS csv_line, first(error_message ORDER BY column_idx) AS msg
        FROM _openai_csv_rejects GROUP BY line),
lines AS (SELECT l, row_number() OVER (ORDER BY l) + 1 AS good_no
          FROM range(2, (SELECT count(*) FROM good) + (SELECT count(*) FROM bad) + 2) t(l)
          WHERE l NOT IN (SELECT line FROM bad))
SELECT lines.l AS record_no, good.* EXCLUDE (record_no) FROM good JOIN lines ON lines.good_no = good.record_no
UNION ALL BY NAME
SELECT line AS record_no, 'openai' AS provider, NULL::BIGINT AS start_us, NULL::BIGINT AS end_us,
    NULL::VARCHAR AS start_raw, NULL::VARCHAR AS end_raw, {nulls},
    csv_line AS raw, 'CSV line is malformed: ' || msg AS reason
FROM bad"""


SOURCE = OpenAISource()
