"""Provider rows into the case: type the staged text fields in SQL, quarantine what does not parse, merge re-exports.

A frame (JSON records or a CSV scan) holds every field as text; `*_stage_sql` types it and names the first problem
of each record; `insert_sql` adds the good rows that are not already in the case. A row is already there when an
existing row has the same provider, bucket, dimensions and values, and the same extra key: the grouping dimensions
the canonical columns lack (result kind, Anthropic inference_geo...), read from the row's raw JSON. Buckets of
another width (1h and 1d pages of the same usage) are other views, never merged: analyses choose one width.
"""
from __future__ import annotations

from dataclasses import dataclass

import duckdb

from forensics.secrets import redact_columns
from forensics.sources.interface import LoadContext, LoadResult
from forensics.sources.plausible import TimeWindow
from forensics.sources.quarantine import insert_sql as quarantine_sql

FRAME = "_provider_frame"
STAGE = "_provider_stage"
MAX_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z in microseconds
MIN_US = -62135596800000000  # 0001-01-01T00:00:00Z

USAGE_DIMS = ("model", "api_key_id", "project_id", "user_id", "batch", "service_tier", "context_window")
USAGE_COUNTS = ("input_tokens", "uncached_input_tokens", "cache_read_tokens", "cache_write_tokens",
                "cache_write_5m_tokens", "cache_write_1h_tokens", "output_tokens", "requests", "web_search_requests")
USAGE_FIELDS = USAGE_DIMS + USAGE_COUNTS
USAGE_VALUES = tuple(c for c in USAGE_COUNTS if c != "cache_write_5m_tokens")   # 5m = cache_write - 1h
COST_DIMS = ("project_id", "api_key_id", "line_item", "cost_type", "token_type", "model", "service_tier",
             "context_window", "quantity_unit")
COST_FIELDS = COST_DIMS + ("quantity", "amount_raw", "amount_in_cents", "currency_raw")
COST_VALUES = ("quantity", "amount_usd")

TABLES = {"usage": "provider_usage", "costs": "provider_costs"}
USAGE_COLUMNS = ("provider", "bucket_start", "bucket_end", "bucket_width", *USAGE_DIMS, *USAGE_VALUES, "raw")
COST_COLUMNS = ("provider", "bucket_start", "bucket_end", *COST_DIMS, "quantity", "amount_usd", "amount_raw",
                "currency_raw", "raw")
CURSOR_NOTE = ("page cursor {}: more pages exist (has_more is true; no page continuing it was in the case when "
               "this file was loaded)")
_TEXT = {"usage": ["raw", "reason", "model", "api_key_id", "project_id", "user_id", "service_tier", "context_window"],
         "costs": ["raw", "reason", "amount_raw", "currency_raw", *COST_DIMS]}


@dataclass(frozen=True)
class ExtraKey:
    """The same key two ways: over the frame's fields (cheap, while loading) and over a stored row's raw JSON."""

    frame_sql: str = "NULL"
    raw_sql: str = "NULL"          # a template over {t}.raw


def json_keys(keys: tuple[str, ...]) -> ExtraKey:
    """An extra key made of top-level JSON keys; the frame must carry them as fields named _<key>."""
    return ExtraKey(f"to_json([{', '.join(f'_{k}' for k in keys)}])::VARCHAR",
                    f"to_json([{', '.join(f'json_extract_string({{t}}.raw, {chr(39)}$.{k}{chr(39)})' for k in keys)}])"
                    "::VARCHAR")


def _time_sql(col: str) -> str:
    return f"CASE WHEN f.{col} BETWEEN {MIN_US} AND {MAX_US} THEN make_timestamp(f.{col}) END"


def _whole_sql(col: str) -> str:
    # counts may be written 3 or 3.0 (dashboard CSV); 3.5 is not a count, and a plain BIGINT cast would round it.
    # A double holds every whole number below 2^53 exactly and casts fast; beyond that the decimal cast decides.
    d, x = f"TRY_CAST(f.{col} AS DOUBLE)", f"TRY_CAST(f.{col} AS DECIMAL(38,6))"
    return (f"CASE WHEN abs({d}) < 9007199254740992 THEN CASE WHEN {d} = trunc({d}) THEN CAST({d} AS BIGINT) END "
            f"WHEN {x} = trunc({x}) THEN TRY_CAST({x} AS BIGINT) END")


def _quoted(col: str, width: int = 40) -> str:
    return f"""'"' || left(coalesce({col}, ''), {width}) || '"'"""


# the bucket time keys of each provider, for the reasons
_TIME_KEYS = {"anthropic": ("starting_at", "ending_at")}
_DEFAULT_TIME_KEYS = ("start_time", "end_time")


def _time_checks(window: TimeWindow) -> tuple[str, ...]:
    """Why a row's bucket times cannot load: no time, outside `window` (plausible.TimeWindow), ends before it starts."""
    def outside(i: int, raw: str, ts: str) -> str:
        named = [(p, window.reason_sql(keys[i], raw, ts, "false")) for p, keys in _TIME_KEYS.items()]
        other = window.reason_sql(_DEFAULT_TIME_KEYS[i], raw, ts, "false")
        return "CASE " + " ".join(f"WHEN provider = '{p}' THEN {r}" for p, r in named) + f" ELSE {other} END"

    return (
        f"CASE WHEN t_start IS NULL THEN 'bucket start ' || {_quoted('start_raw')} || ' is not a time' END",
        f"CASE WHEN t_end IS NULL THEN 'bucket end ' || {_quoted('end_raw')} || ' is not a time' END",
        outside(0, "start_raw", "t_start"),
        outside(1, "end_raw", "t_end"),
        "CASE WHEN t_end <= t_start THEN 'bucket ends before it starts' END",
    )


def usage_stage_sql(window: TimeWindow | None = None) -> str:
    """Type a usage frame; Anthropic's input total (uncached + cache read + 5m + 1h writes) is derived here."""
    typed = ",\n        ".join(f"{_whole_sql(c)} AS t_{c}" for c in USAGE_COUNTS)
    checks = ",\n        ".join([
        *_time_checks(window or TimeWindow.at()),
        f"CASE WHEN batch IS NOT NULL AND t_batch IS NULL "
        f"THEN 'batch ' || {_quoted('batch')} || ' is not true/false' END",
        *(f"CASE WHEN {c} IS NOT NULL AND t_{c} IS NULL THEN '{c} ' || {_quoted(c)} || ' is not a whole number' END"
          for c in USAGE_COUNTS),
        *(f"CASE WHEN t_{c} < 0 THEN '{c} ' || {_quoted(c)} || ' is negative' END" for c in USAGE_COUNTS),
    ])
    return f"""
CREATE OR REPLACE TEMP TABLE {STAGE} AS
WITH t AS (
    SELECT f.*, {_time_sql('start_us')} AS t_start, {_time_sql('end_us')} AS t_end,
        TRY_CAST(f.batch AS BOOLEAN) AS t_batch,
        {typed}
    FROM {FRAME} f
), w AS (
    SELECT *, coalesce(t_cache_write_tokens,
        CASE WHEN t_cache_write_5m_tokens IS NOT NULL OR t_cache_write_1h_tokens IS NOT NULL
             THEN coalesce(t_cache_write_5m_tokens, 0) + coalesce(t_cache_write_1h_tokens, 0) END) AS t_cache_write
    FROM t
)
SELECT record_no, provider, t_start AS bucket_start, t_end AS bucket_end,
    CASE date_diff('second', t_start, t_end) WHEN 60 THEN '1m' WHEN 3600 THEN '1h' WHEN 86400 THEN '1d' END
        AS bucket_width,
    model, api_key_id, project_id, user_id, t_batch AS batch, service_tier, context_window,
    coalesce(t_input_tokens,
        t_uncached_input_tokens + coalesce(t_cache_read_tokens, 0) + coalesce(t_cache_write, 0)) AS input_tokens,
    t_uncached_input_tokens AS uncached_input_tokens, t_cache_read_tokens AS cache_read_tokens,
    t_cache_write AS cache_write_tokens, t_cache_write_1h_tokens AS cache_write_1h_tokens,
    t_output_tokens AS output_tokens, t_requests AS requests, t_web_search_requests AS web_search_requests,
    raw, extra_key,
    coalesce(reason,
        {checks}) AS reason
FROM w
"""


def cost_stage_sql(window: TimeWindow | None = None) -> str:
    """Type a cost frame; amounts go text -> DECIMAL, cents (Anthropic) divided by 100 exactly. (An amount may be
    negative: a credit or refund line.)"""
    time_checks = ",\n        ".join(_time_checks(window or TimeWindow.at()))
    return f"""
CREATE OR REPLACE TEMP TABLE {STAGE} AS
WITH t AS (
    SELECT f.*, {_time_sql('start_us')} AS t_start, {_time_sql('end_us')} AS t_end,
        TRY_CAST(f.amount_raw AS DECIMAL(36,14)) AS t_amount, TRY_CAST(f.quantity AS DOUBLE) AS t_quantity
    FROM {FRAME} f
)
SELECT record_no, provider, t_start AS bucket_start, t_end AS bucket_end,
    {", ".join(COST_DIMS)}, t_quantity AS quantity,
    CAST(CASE WHEN amount_in_cents = 'true' THEN t_amount * 0.01 ELSE t_amount END AS DECIMAL(38,12)) AS amount_usd,
    amount_raw, currency_raw, raw, extra_key,
    coalesce(reason,
        {time_checks},
        CASE WHEN amount_raw IS NULL THEN 'result has no amount'
             WHEN t_amount IS NULL THEN 'amount ' || {_quoted('amount_raw')} || ' is not a number' END,
        CASE WHEN upper(trim(currency_raw)) <> 'USD'
             THEN 'currency ' || {_quoted('currency_raw', 20)} || ' is not USD' END,
        CASE WHEN quantity IS NOT NULL AND t_quantity IS NULL
             THEN 'quantity ' || {_quoted('quantity')} || ' is not a number' END) AS reason
FROM t
"""


def _key(table: str, values: bool = True) -> tuple[str, ...]:
    dims = USAGE_DIMS if table == "usage" else COST_DIMS
    vals = (USAGE_VALUES if table == "usage" else COST_VALUES) if values else ()
    return ("provider", "bucket_start", "bucket_end", *dims, *vals)


def _same(table: str, a: str, b: str, values: bool = True) -> str:
    return " AND ".join(f"{a}.{k} IS NOT DISTINCT FROM {b}.{k}" for k in _key(table, values))


def insert_sql(table: str, extra: ExtraKey, file_id: int) -> str:
    """Insert the staged good rows; a row identical to one already in the case (or earlier in the file) is merged.

    The extra key of stored rows is read from their raw JSON only for the few rows that match on every column.
    """
    target = TABLES[table]
    cols = USAGE_COLUMNS if table == "usage" else COST_COLUMNS
    return f"""
INSERT INTO {target} ({", ".join(cols)}, file_id, record_no)
WITH s AS MATERIALIZED (
    SELECT * FROM {STAGE} s WHERE reason IS NULL
    QUALIFY row_number() OVER (PARTITION BY {", ".join(_key(table))}, extra_key ORDER BY record_no) = 1
), pairs AS MATERIALIZED (
    SELECT s.record_no, s.extra_key, p.raw FROM s JOIN {target} p ON {_same(table, "p", "s")}
), already AS (
    SELECT DISTINCT record_no FROM pairs WHERE ({extra.raw_sql.format(t="pairs")}) IS NOT DISTINCT FROM extra_key
)
SELECT {", ".join(cols)}, {int(file_id)}, record_no
FROM s WHERE record_no NOT IN (SELECT record_no FROM already)
"""


@dataclass
class Tally:
    """Running accounting over a file's frames."""

    records: int = 0
    loaded: int = 0
    quarantined: int = 0
    merged: int = 0

    def add(self, other: Tally) -> None:
        self.records += other.records
        self.loaded += other.loaded
        self.quarantined += other.quarantined
        self.merged += other.merged

    def result(self, notes: list[str] | tuple[str, ...] = ()) -> LoadResult:
        return LoadResult(self.records, self.loaded, self.quarantined, self.merged, tuple(notes))


def commit_frame(ctx: LoadContext, table: str, extra: ExtraKey) -> Tally:
    """Stage FRAME, redact keys, quarantine bad records, insert the rest at once."""
    con = ctx.con
    con.execute(usage_stage_sql(ctx.window) if table == "usage" else cost_stage_sql(ctx.window))
    con.execute(f"DROP TABLE IF EXISTS {FRAME}")
    try:
        redact_columns(con, STAGE, _TEXT[table])
        good, bad = con.execute(
            f"SELECT count(*) FILTER (reason IS NULL), count(*) FILTER (reason IS NOT NULL) FROM {STAGE}").fetchall()[0]
        con.execute(quarantine_sql(ctx.file_id, f"(SELECT * FROM {STAGE} WHERE reason IS NOT NULL)"))
        inserted = con.execute(insert_sql(table, extra, ctx.file_id)).fetchall()[0][0] if good else 0
    finally:
        con.execute(f"DROP TABLE IF EXISTS {STAGE}")
    return Tally(good + bad, good, bad, good - inserted)


def cursor_notes(con: duckdb.DuckDBPyConnection, provider: str, table: str, buckets: str) -> list[str]:
    """'more pages exist' for each page with has_more whose next page (the bucket after its last) is nowhere."""
    ok = "FILTER (WHERE start_us IS NOT NULL AND end_us > start_us)"
    missing = [c for (c,) in con.execute(f"""
        WITH p AS (
            SELECT doc_no, page_idx, bool_or(has_more) AS has_more, any_value(next_page) AS cursor,
                arg_min(start_us, bucket_idx) {ok} AS first_start,
                arg_min(end_us - start_us, bucket_idx) {ok} AS first_width,
                arg_max(end_us, bucket_idx) {ok} AS last_end,
                arg_max(end_us - start_us, bucket_idx) {ok} AS last_width
            FROM {buckets} WHERE is_page GROUP BY doc_no, page_idx
        )
        SELECT a.cursor FROM p a
        WHERE a.has_more
          AND NOT EXISTS (SELECT 1 FROM p b WHERE b.first_start = a.last_end AND b.first_width = a.last_width)
          AND NOT EXISTS (SELECT 1 FROM {TABLES[table]} t WHERE t.provider = $p
                          AND t.bucket_start = make_timestamp(a.last_end)
                          AND date_diff('microseconds', t.bucket_start, t.bucket_end) = a.last_width)
        ORDER BY a.doc_no, a.page_idx""", {"p": provider}).fetchall()]
    notes = [CURSOR_NOTE.format(c) for c in missing[:3]]
    if len(missing) > 3:
        notes.append(f"{len(missing) - 3} more pages say more pages exist that are not in the case")
    return notes


def conflict_notes(con: duckdb.DuckDBPyConnection, file_id: int, provider: str, tables: list[str],
                   extras: dict[str, ExtraKey]) -> list[str]:
    """Rows of this file whose bucket and dimensions recur in the case with other values (a later re-export?)."""
    notes = []
    for table, what in (("usage", "token counts"), ("costs", "amounts")):
        if table not in tables:
            continue
        target, key = TABLES[table], ", ".join(_key(table, values=False))
        extra = extras.get(table, ExtraKey()).raw_sql.format(t="r")
        # groups on the columns first; the raw JSON is read only for rows in a group this file is part of
        n = con.execute(f"""
            WITH g AS MATERIALIZED (
                SELECT {key} FROM {target} WHERE provider = $p
                GROUP BY ALL HAVING count(*) > 1 AND bool_or(file_id = $f)
            ), r AS (
                SELECT t.* FROM {target} t SEMI JOIN g ON {_same(table, "t", "g", values=False)}
            )
            SELECT count(*) FROM (
                SELECT bool_or(file_id = $f) AS mine FROM r GROUP BY {key}, {extra} HAVING count(*) > 1
            ) WHERE mine""", {"f": file_id, "p": provider}).fetchall()[0][0]
        if n:
            notes.append(f"{n} {target} buckets of this file appear in the case with other {what} "
                         "(a re-export with updated numbers?): all rows kept; choose one export before summing")
    return notes
