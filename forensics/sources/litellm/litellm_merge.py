"""Type the LiteLLM field text once for every format, quarantine what cannot stand, and upsert into llm_requests.

One request stays one row across files: a later file only fills columns the row still lacks (COALESCE upsert).
"""
from __future__ import annotations

import duckdb

from forensics import secrets
from forensics.netaddr import TrustedProxies, client_ip_map
from forensics.sources.plausible import TimeWindow
from forensics.sources.quarantine import insert_sql as quarantine_sql

# llm_requests columns a loader writes; cost_usd and price_status belong to the pricing step
COLUMNS = (
    "request_id", "litellm_call_id", "call_type", "start_time", "end_time", "completion_start_time",
    "start_time_raw", "key_hash", "key_hint", "key_alias", "user_id", "team_id", "team_alias", "org_id",
    "end_user", "requester_ip_raw", "client_ip", "user_agent", "model_group", "model", "model_id", "provider",
    "api_base", "status", "error_class", "error_code", "error_message", "prompt_tokens", "completion_tokens",
    "total_tokens", "cache_read_tokens", "cache_write_tokens", "max_tokens", "stream", "cache_hit", "session_id",
    "request_tags", "spend_logged", "source_format", "file_id", "record_no",
)
TEXT_COLUMNS = (
    "request_id", "litellm_call_id", "call_type", "start_time_raw", "key_hash", "key_alias", "user_id", "team_id",
    "team_alias", "org_id", "end_user", "requester_ip_raw", "user_agent", "model_group", "model", "model_id",
    "provider", "api_base", "status", "error_class", "error_code", "error_message", "session_id", "request_tags",
)
PRICE_INPUTS = (
    "start_time", "model", "provider", "prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_write_tokens",
)
CACHE_HIT_LIKE = "LIKE '%\\_cache\\_hit%' ESCAPE '\\'"


# the names each format gives its times, for the reasons: (start, end, completion start)
TIME_FIELDS = {"litellm.flat_spend": ("start_time", "end_time", "completion_start_time")}
PAYLOAD_TIME_FIELDS = ("startTime", "endTime", "completionStartTime")
# usage that cannot be below zero: a negative one is a broken or forged record (cost -$347), not usage
NON_NEGATIVE = (("spend_raw", "spend_logged", "spend"), ("prompt_tokens_raw", "prompt_tokens", "prompt_tokens"),
                ("completion_tokens_raw", "completion_tokens", "completion_tokens"),
                ("total_tokens_raw", "total_tokens", "total_tokens"),
                ("cache_read_raw", "cache_read_tokens", "cache_read_tokens"),
                ("cache_write_raw", "cache_write_tokens", "cache_write_tokens"))  # (raw, typed column, name)


def _iso_sql(text: str) -> str:
    return f"try_cast({text} AS TIMESTAMPTZ)"


def _number_sql(text: str) -> str:
    return f"try_cast({text} AS DECIMAL(38,6))"


def epoch_number_sql(text: str, iso: str | None = None, number: str | None = None) -> str:
    """The text as an epoch number (DECIMAL), NULL when it is an ISO time or no number. `iso` and `number`: the text
    read already as _iso_sql and _number_sql do (columns: each read once for all the uses)."""
    return f"CASE WHEN {iso or _iso_sql(text)} IS NULL THEN {number or _number_sql(text)} END"


def timestamp_sql(text: str, window: TimeWindow | None = None, iso: str | None = None,
                  number: str | None = None) -> str:
    """A naive UTC TIMESTAMP from ISO text (offset or Z allowed) or an epoch number, read as decimal text in the
    unit (s, ms, us, ns) that makes it a plausible time (plausible.TimeWindow; else as seconds, for the reason).
    `iso`, `number`: as for epoch_number_sql."""
    window = window or TimeWindow.at()
    return f"coalesce(try_cast({iso or _iso_sql(text)} AS TIMESTAMP), {window.epoch_sql(number or _number_sql(text))})"


def count_sql(text: str) -> str:
    return f"try_cast(trim({text}) AS BIGINT)"


def _bad_number(raw: str, typed: str, label: str) -> str:
    message = f"format('{label} \"{{}}\" is not a number', left({raw}, 80))"
    return f"CASE WHEN {raw} IS NOT NULL AND {typed} IS NULL THEN {message} END"


def _negative(raw: str, typed: str, label: str) -> str:
    return f"CASE WHEN {typed} < 0 THEN format('{label} \"{{}}\" is negative', left({raw}, 80)) END"


def typed_sql(fields: str, fmt: str, file_id: int, window: TimeWindow | None = None,
              keep: tuple[str, ...] = ()) -> str:
    """Canonical columns plus `reason` (NULL when the record loads) from a FIELDS relation; `window`: the times a
    record may carry (a start, end or completion start outside it is quarantined); `keep`: columns of `fields` kept
    as they are."""
    window = window or TimeWindow.at()
    names = TIME_FIELDS.get(fmt, PAYLOAD_TIME_FIELDS)
    raws = ("start_raw", "end_raw", "completion_start_raw")
    # each time text is read as an ISO time and as a number once (columns _iso_*, _num_*), for all the uses below
    implausible = [window.reason_sql(name, raw, typed, f"{epoch_number_sql(raw, f'_iso_{raw}', f'_num_{raw}')} "
                                                       "IS NOT NULL")
                   for name, raw, typed in zip(names, raws, ("start_time", "end_time", "completion_start_time"))]
    read_times = ", ".join(f"{_iso_sql(raw)} AS _iso_{raw}, {_number_sql(raw)} AS _num_{raw}" for raw in raws)
    times = {raw: timestamp_sql(raw, window, f"_iso_{raw}", f"_num_{raw}") for raw in raws}
    negative = [_negative(raw, typed, name) for raw, typed, name in NON_NEGATIVE]
    ua_tag = (
        "list_reduce(list_filter(try(json_extract_string(request_tags, '$[*]')), "
        "lambda t: starts_with(t, 'User-Agent: ')), lambda a, b: CASE WHEN length(b) > length(a) THEN b ELSE a END, '')"
    )
    key = "coalesce(api_key, meta_key)"
    hex64 = "'[0-9a-fA-F]{64}'"
    # a key field holding an escaped key is that key, decoded (its hash and hint are the key's)
    keys = ", ".join(f"{secrets.unescaped_key_sql(k)} AS {k}" for k in ("api_key", "meta_key"))
    return f"""
WITH f AS (SELECT * REPLACE ({keys}), {read_times} FROM ({fields})),
t AS (
  SELECT *,
    {times['start_raw']} AS start_time,
    {times['end_raw']} AS end_time,
    {times['completion_start_raw']} AS completion_start_time,
    try_cast(trim(spend_raw) AS DECIMAL(38,12)) AS spend_logged,
    {count_sql('prompt_tokens_raw')} AS prompt_tokens,
    {count_sql('completion_tokens_raw')} AS completion_tokens,
    {count_sql('total_tokens_raw')} AS total_tokens,
    try_cast(cache_read_raw AS BIGINT) AS cache_read_tokens,
    try_cast(cache_write_raw AS BIGINT) AS cache_write_tokens,
    {key} AS key_text
  FROM f)
SELECT record_no,
  coalesce(bad,
    CASE WHEN request_id IS NULL THEN 'no request_id, id or litellm_call_id' END,
    CASE WHEN start_raw IS NULL THEN 'no start time' END,
    {implausible[0]},
    CASE WHEN start_time IS NULL THEN format('start time "{{}}" is not a timestamp', left(start_raw, 80)) END,
    {implausible[1]},
    {implausible[2]},
    {_bad_number('spend_raw', 'spend_logged', 'spend')},
    {_bad_number('prompt_tokens_raw', 'prompt_tokens', 'prompt_tokens')},
    {_bad_number('completion_tokens_raw', 'completion_tokens', 'completion_tokens')},
    {_bad_number('total_tokens_raw', 'total_tokens', 'total_tokens')},
    {", ".join(negative)}) AS reason,
  request_id, litellm_call_id, call_type, start_time, end_time, completion_start_time,
  start_raw AS start_time_raw,
  CASE WHEN key_text IS NULL THEN NULL
       WHEN regexp_full_match(key_text, {hex64}) THEN lower(key_text)
       WHEN starts_with(key_text, 'sk-') THEN sha256(key_text)
       ELSE key_text END AS key_hash,
  CASE WHEN starts_with(key_text, 'sk-') THEN 'sk-...' || right(key_text, 4)
       WHEN starts_with(meta_key, 'sk-') AND (api_key IS NULL OR api_key = sha256(meta_key))
       THEN 'sk-...' || right(meta_key, 4) END AS key_hint,
  key_alias, user_id, team_id, team_alias, org_id, end_user, requester_ip_raw,
  NULL::VARCHAR AS client_ip,
  coalesce(user_agent, nullif(substr({ua_tag}, 13), '')) AS user_agent,
  model_group, model, model_id, provider, api_base,
  CASE WHEN lower(status_raw) IN ('success', 'failure') THEN lower(status_raw)
       WHEN lower(meta_status) IN ('success', 'failure') THEN lower(meta_status)
       WHEN status_raw IS NOT NULL THEN lower(status_raw)
       WHEN coalesce(error_class, error_code, error_message) IS NOT NULL THEN 'failure'
       ELSE 'success' END AS status,
  error_class, error_code, error_message,
  prompt_tokens, completion_tokens, total_tokens,
  cache_read_tokens, cache_write_tokens,
  {count_sql('max_tokens_raw')} AS max_tokens,
  try_cast(stream_raw AS BOOLEAN) AS stream,
  coalesce(try_cast(cache_hit_raw AS BOOLEAN), CASE WHEN request_id {CACHE_HIT_LIKE} THEN true END) AS cache_hit,
  session_id,
  CASE WHEN json_valid(request_tags) THEN CAST(json(request_tags) AS VARCHAR) ELSE request_tags END AS request_tags,
  spend_logged,
  '{fmt}' AS source_format, {int(file_id)} AS file_id, record_no{"".join(f", {k}" for k in keep)}
FROM t"""


def stage_sql(fields: str, fmt: str, file_id: int, window: TimeWindow | None = None,
              keep: tuple[str, ...] = ()) -> str:
    """The statement that creates temp table _ll_norm: one typed row per record, with its quarantine reason."""
    return f"CREATE OR REPLACE TEMP TABLE _ll_norm AS {typed_sql(fields, fmt, file_id, window, keep)}"


def stage(con: duckdb.DuckDBPyConnection, fields: str, fmt: str, file_id: int,
          window: TimeWindow | None = None) -> None:
    """Create temp table _ll_norm: one typed row per record, with its quarantine reason."""
    con.execute(stage_sql(fields, fmt, file_id, window))


def finish(con: duckdb.DuckDBPyConnection, file_id: int, fmt: str, raw_sql: str, trusted: TrustedProxies,
           may_hold_secret: bool = True) -> int:
    """Quarantine the records of _ll_norm with a reason and upsert the others; returns how many were quarantined.

    One query sizes up the batch first, so that a small file (one S3 object) only pays for the steps it needs.
    may_hold_secret=False: the batch's bytes hold no key, escaped or not (secrets.may_hold_secret, done by the line
    reader), so neither do the fields taken from them: the per-row pre-test is skipped.
    """
    text = "concat_ws(chr(1), " + ", ".join(TEXT_COLUMNS) + ")"
    suspect_sql = secrets.may_hold_secret_sql(text) if may_hold_secret else "false"
    bad, dups, hits, suspect = con.execute(f"""
        SELECT count(*) FILTER (WHERE reason IS NOT NULL),
          count(request_id) FILTER (WHERE reason IS NULL) - count(DISTINCT request_id) FILTER (WHERE reason IS NULL),
          count(*) FILTER (WHERE reason IS NULL AND request_id {CACHE_HIT_LIKE}),
          count(*) FILTER (WHERE reason IS NULL AND {suspect_sql})
        FROM _ll_norm""").fetchone()
    if bad:
        _quarantine(con, file_id, raw_sql)
    if suspect:          # in the staging table (in memory), before anything is stored
        secrets.redact_columns(con, "_ll_norm", list(TEXT_COLUMNS), where="reason IS NULL")
    if hits:
        _match_cache_hits(con, fmt)
    _upsert(con, trusted, collapse=bool(dups) or bool(hits))
    return int(bad)


def _quarantine(con: duckdb.DuckDBPyConnection, file_id: int, raw_sql: str) -> None:
    """Records with a reason go to quarantine, with their raw text from `raw_sql` (record_no, raw)."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _ll_q AS
        SELECT n.record_no, r.raw, n.reason
        FROM (SELECT record_no, reason FROM _ll_norm WHERE reason IS NOT NULL) n
        LEFT JOIN ({raw_sql}) r USING (record_no)""")
    store_quarantine(con, file_id, "_ll_q")


def store_quarantine(con: duckdb.DuckDBPyConnection, file_id: int, table: str) -> None:
    """Insert `table`(record_no, raw, reason) into quarantine (keys redacted, raw cut to 64 KiB) and drop it."""
    con.execute(quarantine_sql(file_id, table))
    con.execute(f"DROP TABLE {table}")


def _match_cache_hits(con: duckdb.DuckDBPyConnection, fmt: str) -> None:
    """A SpendLogs cache-hit id carries its logging time, which a payload cannot reproduce: match on start time.

    The SpendLogs id wins whichever file comes first: a payload row adopts it, or a SpendLogs row renames the
    payload row that was loaded before it.
    """
    prefix = "regexp_extract({}, '^(.*)_cache_hit', 1)"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _ll_hits AS
        SELECT n.request_id AS staged, m.request_id AS existing, m.source_format LIKE 'litellm.payload%' AS synthetic
        FROM _ll_norm n JOIN (SELECT request_id, start_time, source_format FROM llm_requests
                              WHERE request_id {CACHE_HIT_LIKE}) m
          ON {prefix.format('n.request_id')} = {prefix.format('m.request_id')}
         AND abs(epoch_us(n.start_time) - epoch_us(m.start_time)) <= 1000 AND n.request_id <> m.request_id
        WHERE n.reason IS NULL AND n.request_id {CACHE_HIT_LIKE}
        QUALIFY row_number() OVER (PARTITION BY n.request_id ORDER BY m.request_id) = 1
            AND row_number() OVER (PARTITION BY m.request_id ORDER BY n.request_id) = 1""")
    if fmt.startswith("litellm.payload"):
        con.execute("UPDATE _ll_norm SET request_id = h.existing FROM _ll_hits h WHERE _ll_norm.request_id = h.staged")
    else:
        con.execute("""
            UPDATE llm_requests SET request_id = h.staged FROM _ll_hits h
            WHERE llm_requests.request_id = h.existing AND h.synthetic
              AND NOT EXISTS (SELECT 1 FROM llm_requests x WHERE x.request_id = h.staged)""")
    con.execute("DROP TABLE _ll_hits")


def _upsert(con: duckdb.DuckDBPyConnection, trusted: TrustedProxies, collapse: bool) -> None:
    """Insert the good records of _ll_norm. Duplicates within the batch collapse first, in record order (only
    when there are some: that aggregate is slow to start); the COALESCE update runs only when a row exists."""
    client_ip_map(
        con,
        "SELECT requester_ip_raw AS chain, NULL::VARCHAR AS peer FROM _ll_norm "
        "WHERE reason IS NULL AND requester_ip_raw IS NOT NULL",
        trusted,
        "_ll_ip",
    )
    rest = [c for c in COLUMNS if c != "request_id"]
    rows = """(SELECT n.* REPLACE (ip.client_ip AS client_ip)
               FROM _ll_norm n LEFT JOIN _ll_ip ip ON ip.chain = n.requester_ip_raw WHERE n.reason IS NULL)"""
    if collapse:
        firsts = ", ".join(f"first({c} ORDER BY record_no) FILTER (WHERE {c} IS NOT NULL) AS {c}" for c in rest)
        rows = f"(SELECT request_id, {firsts} FROM {rows} GROUP BY request_id)"
    select = f"SELECT {', '.join(COLUMNS)} FROM {rows}"
    (existing,) = con.execute(
        f"SELECT count(*) FROM _ll_norm WHERE reason IS NULL AND request_id IN (SELECT request_id FROM llm_requests)"
    ).fetchone()
    if not existing:
        con.execute(f"INSERT INTO llm_requests ({', '.join(COLUMNS)}) {select}")
        return
    updates = ", ".join(f"{c} = COALESCE(llm_requests.{c}, excluded.{c})" for c in rest)
    # a merge that brings a price input the row lacked sends the row back to the pricing step
    filled = " OR ".join(f"(llm_requests.{c} IS NULL AND excluded.{c} IS NOT NULL)" for c in PRICE_INPUTS)
    updates += f", price_status = CASE WHEN {filled} THEN NULL ELSE llm_requests.price_status END"
    updates += f", cost_usd = CASE WHEN {filled} THEN NULL ELSE llm_requests.cost_usd END"
    con.execute(
        f"INSERT INTO llm_requests ({', '.join(COLUMNS)}) {select} ON CONFLICT (request_id) DO UPDATE SET {updates}"
    )
