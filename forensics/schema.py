"""The case database's tables: the one ordered list of them (CASE_TABLES) and each one's DDL.

Every time inside the case is a naive TIMESTAMP in UTC (the connection's TimeZone is pinned to UTC); the original
string is kept beside it for evidence. Money is DECIMAL(38,12) USD.

Who writes a table is declared once: the case itself (CASE_OWN_TABLES: ingest accounting, quarantine, prices, its
schema version in case_meta) or one log family (its package's TABLES, see forensics.sources). The tables families
load records into are FAMILY_TABLES; for every loaded file, the rows they hold under its file_id = its loaded -
merged records.
"""
from __future__ import annotations

MONEY = "DECIMAL(38,12)"

# in creation order (SCHEMA_SQL creates them in this order)
CASE_TABLES: tuple[str, ...] = (
    "ingest_files",
    "quarantine",
    "llm_requests",
    "http_requests",
    "nginx_errors",
    "provider_usage",
    "provider_costs",
    "provider_buckets",
    "litellm_log",
    "prices",
    "case_meta",
)

# written by the case itself (forensics.ingest, forensics.pricing, forensics.merge, forensics.case), not by a family
CASE_OWN_TABLES: tuple[str, ...] = ("ingest_files", "quarantine", "prices", "case_meta")

# The case's schema version, in case_meta ('schema_version'). 1: the tables before case_meta (a case without it is
# version 1 when its other tables are there); 2: case_meta added. A case of a later version is refused.
SCHEMA_VERSION = 2
META_TABLE = "case_meta"

# tables added to version 2 without a version bump: a case made before them lacks them until it is next opened for
# writing (connect() creates them); a reader of such a case finds no rows (see has_table in the readers)
ADDED_IN_VERSION_2: tuple[str, ...] = ("litellm_log", "nginx_errors", "provider_buckets")

# written by a family beside its records but holding none: what its files cover (a family package's COVERAGE)
COVERAGE_TABLES: tuple[str, ...] = ("provider_buckets",)

# the tables log families load records into (each declared by exactly one family package)
FAMILY_TABLES: tuple[str, ...] = tuple(t for t in CASE_TABLES if t not in CASE_OWN_TABLES + COVERAGE_TABLES)

SEQUENCES_SQL = "CREATE SEQUENCE IF NOT EXISTS file_id_seq START 1;"

TABLE_DDL: dict[str, str] = {
    "ingest_files": """\
-- one row per input file ever offered to the case (skipped duplicates included, with status 'skipped')
CREATE TABLE IF NOT EXISTS ingest_files (
    file_id       INTEGER PRIMARY KEY,
    path          VARCHAR NOT NULL,      -- as given on the command line (relative when it was)
    sha256        VARCHAR NOT NULL,
    size_bytes    BIGINT NOT NULL,
    format        VARCHAR,               -- e.g. nginx.combined, litellm.spendlogs_csv, openai.usage_completions
    records       BIGINT,                -- records read (lines, JSON records, result rows)
    loaded        BIGINT,                -- records represented in a canonical table
    quarantined   BIGINT,                -- records in the quarantine table
    merged        BIGINT DEFAULT 0,      -- of loaded: records merged into a row another record already made
    status        VARCHAR NOT NULL,      -- loaded | skipped | failed
    message       VARCHAR,
    started_at    TIMESTAMP NOT NULL,
    seconds       DOUBLE,
    tool_version  VARCHAR NOT NULL
);""",

    "quarantine": """\
CREATE TABLE IF NOT EXISTS quarantine (
    file_id    INTEGER NOT NULL,
    record_no  BIGINT,                   -- 1-based line number, or record index for JSON
    raw        VARCHAR,                  -- the raw text (secrets redacted), cut to 64 KiB
    reason     VARCHAR NOT NULL
);""",

    "llm_requests": f"""\
-- one row per LiteLLM request, whatever the export it came from
CREATE TABLE IF NOT EXISTS llm_requests (
    request_id             VARCHAR PRIMARY KEY,   -- LiteLLM_SpendLogs.request_id (provider response id or call id)
    litellm_call_id        VARCHAR,
    call_type              VARCHAR,
    start_time             TIMESTAMP,             -- UTC
    end_time               TIMESTAMP,             -- UTC
    completion_start_time  TIMESTAMP,
    start_time_raw         VARCHAR,               -- the original value, for evidence
    key_hash               VARCHAR,               -- sha256 hex of the virtual key, as LiteLLM stores it; NULL = no key
    key_hint               VARCHAR,               -- sk-...abcd where known
    key_alias              VARCHAR,
    user_id                VARCHAR,               -- LiteLLM internal user owning the key
    team_id                VARCHAR,
    team_alias             VARCHAR,
    org_id                 VARCHAR,
    end_user               VARCHAR,               -- customer id from the request body 'user' field
    requester_ip_raw       VARCHAR,               -- requester_ip_address as logged (may be a whole XFF chain)
    client_ip              VARCHAR,               -- right-most untrusted address of that chain
    user_agent             VARCHAR,
    model_group            VARCHAR,               -- public name the client asked for
    model                  VARCHAR,               -- model sent to the provider
    model_id               VARCHAR,
    provider               VARCHAR,               -- custom_llm_provider
    api_base               VARCHAR,
    status                 VARCHAR,               -- success | failure
    error_class            VARCHAR,
    error_code             VARCHAR,
    error_message          VARCHAR,
    prompt_tokens          BIGINT,                -- inclusive of cache read/write, as LiteLLM logs it
    completion_tokens      BIGINT,
    total_tokens           BIGINT,
    cache_read_tokens      BIGINT,
    cache_write_tokens     BIGINT,
    max_tokens             BIGINT,                -- asked for, when the payload kept the request parameters
    stream                 BOOLEAN,
    cache_hit              BOOLEAN,
    session_id             VARCHAR,
    request_tags           VARCHAR,               -- JSON array text
    spend_logged           {MONEY},               -- LiteLLM's own 'spend' / 'response_cost'
    cost_usd               {MONEY},               -- re-priced from tokens with the case's price table
    price_status           VARCHAR,               -- priced | unknown_model | no_tokens | override
    source_format          VARCHAR,
    file_id                INTEGER,
    record_no              BIGINT
);""",

    "http_requests": """\
-- one row per nginx access-log line that parsed
CREATE TABLE IF NOT EXISTS http_requests (
    time               TIMESTAMP,      -- UTC
    time_raw           VARCHAR,        -- original $time_local / $time_iso8601 / $msec text
    host               VARCHAR,
    remote_addr        VARCHAR,
    remote_user        VARCHAR,
    forwarded_for      VARCHAR,        -- $http_x_forwarded_for chain, as logged
    client_ip          VARCHAR,        -- right-most address of forwarded_for + remote_addr not a trusted proxy
    request_raw        VARCHAR,        -- the request line as logged
    method             VARCHAR,
    path               VARCHAR,
    protocol           VARCHAR,
    status             INTEGER,
    body_bytes         BIGINT,
    request_length     BIGINT,
    referer            VARCHAR,
    user_agent         VARCHAR,
    request_time       DOUBLE,         -- seconds
    upstream_time_raw  VARCHAR,        -- may be a list or '-'
    upstream_time      DOUBLE,         -- sum over the list, seconds
    upstream_status    VARCHAR,
    upstream_addr      VARCHAR,
    request_id         VARCHAR,        -- $request_id / $req_id
    litellm_call_id    VARCHAR,        -- $upstream_http_x_litellm_call_id when logged
    format             VARCHAR,
    file_id            INTEGER,
    line_no            BIGINT
);""",

    "nginx_errors": """\
-- one row per nginx error-log entry (a line, with the lines that continue it)
CREATE TABLE IF NOT EXISTS nginx_errors (
    time           TIMESTAMP,      -- UTC: the local time written, less the server's offset (offset_source)
    time_raw       VARCHAR,        -- as written: YYYY/MM/DD HH:MM:SS, local, no offset
    utc_offset     VARCHAR,        -- +hh:mm applied; NULL when UTC was assumed
    offset_source  VARCHAR,        -- access log | assumed UTC (...)
    level          VARCHAR,        -- debug info notice warn error crit alert emerg
    pid            INTEGER,
    tid            BIGINT,
    connection     BIGINT,         -- the *N connection id; NULL for process-level entries
    class          VARCHAR,        -- limit_req | limit_conn | upstream_timed_out | connect_failed | ... | other
    zone           VARCHAR,        -- the limit_req / limit_conn zone named
    client_ip      VARCHAR,
    server         VARCHAR,
    request        VARCHAR,        -- the request line, as written
    method         VARCHAR,
    path           VARCHAR,
    upstream       VARCHAR,
    host           VARCHAR,
    message        VARCHAR,        -- everything after pid#tid: *N, as written (continuation lines joined by \\n)
    file_id        INTEGER,
    line_no        BIGINT          -- the entry's first line
);""",

    "provider_usage": """\
-- provider usage buckets: OpenAI /organization/usage/completions, Anthropic usage_report/messages, dashboard CSVs
CREATE TABLE IF NOT EXISTS provider_usage (
    provider              VARCHAR NOT NULL,    -- openai | anthropic
    bucket_start          TIMESTAMP NOT NULL,  -- inclusive, UTC
    bucket_end            TIMESTAMP NOT NULL,  -- exclusive, UTC
    bucket_width          VARCHAR,             -- 1m | 1h | 1d
    model                 VARCHAR,
    api_key_id            VARCHAR,
    project_id            VARCHAR,             -- OpenAI project or Anthropic workspace (NULL = default / not grouped)
    user_id               VARCHAR,
    batch                 BOOLEAN,
    service_tier          VARCHAR,
    context_window        VARCHAR,
    input_tokens          BIGINT,              -- all input, cached and cache-write included
    uncached_input_tokens BIGINT,
    cache_read_tokens     BIGINT,
    cache_write_tokens    BIGINT,              -- 5m + 1h writes
    cache_write_1h_tokens BIGINT,
    output_tokens         BIGINT,
    requests              BIGINT,              -- num_model_requests (NULL where the provider does not say)
    web_search_requests   BIGINT,
    raw                   VARCHAR,             -- the result object as JSON text
    file_id               INTEGER,
    record_no             BIGINT
);""",

    "provider_costs": f"""\
-- provider cost buckets: OpenAI /organization/costs and dashboard cost CSV, Anthropic cost_report
CREATE TABLE IF NOT EXISTS provider_costs (
    provider        VARCHAR NOT NULL,
    bucket_start    TIMESTAMP NOT NULL,
    bucket_end      TIMESTAMP NOT NULL,
    project_id      VARCHAR,             -- OpenAI project or Anthropic workspace
    api_key_id      VARCHAR,
    line_item       VARCHAR,             -- OpenAI line_item, Anthropic description
    cost_type       VARCHAR,
    token_type      VARCHAR,
    model           VARCHAR,
    service_tier    VARCHAR,
    context_window  VARCHAR,
    quantity        DOUBLE,
    quantity_unit   VARCHAR,
    amount_usd      {MONEY} NOT NULL,    -- exact USD (Anthropic cents divided by 100)
    amount_raw      VARCHAR NOT NULL,    -- the amount as the provider wrote it
    currency_raw    VARCHAR,
    raw             VARCHAR,
    file_id         INTEGER,
    record_no       BIGINT
);""",

    "provider_buckets": """\
-- every bucket a provider's API page listed, whether it held results or not: the time the export covers. An empty
-- bucket is evidence that nothing was used then (provider_usage and provider_costs hold only what was). Not records:
-- a file's rows here are not counted in its loaded / quarantined
CREATE TABLE IF NOT EXISTS provider_buckets (
    provider      VARCHAR NOT NULL,    -- openai | anthropic
    kind          VARCHAR NOT NULL,    -- usage | costs
    bucket_start  TIMESTAMP NOT NULL,  -- inclusive, UTC
    bucket_end    TIMESTAMP NOT NULL,  -- exclusive, UTC
    results       INTEGER NOT NULL,    -- the result records it held (0: an empty bucket)
    file_id       INTEGER
);""",

    "litellm_log": """\
-- one row per line of LiteLLM's own stdout (json_logs: true, or the plain-text log): startup warnings, errors, 429s
CREATE TABLE IF NOT EXISTS litellm_log (
    time            TIMESTAMP,      -- UTC (the JSON timestamp is the container's local time, no offset: read as UTC);
                                    -- NULL for plain-text lines, which carry a time of day only
    time_raw        VARCHAR,        -- as logged
    shape           VARCHAR,        -- json | litellm_text | uvicorn_text | text (banner, traceback, anything else)
    level           VARCHAR,        -- DEBUG | INFO | WARNING | ERROR | CRITICAL
    component       VARCHAR,        -- the logger's name: LiteLLM Proxy, LiteLLM Router, uvicorn.access, ...
    logger          VARCHAR,        -- file.py:line
    message_class   VARCHAR,        -- no_master_key | weak_master_key_permitted | rate_limit | auth_error |
                                    -- budget_exceeded | startup | http_access | other
    message         VARCHAR,        -- the message (keys redacted)
    litellm_call_id VARCHAR,
    client          VARCHAR,        -- uvicorn access lines: the client address (the forwarded one when trusted)
    method          VARCHAR,
    path            VARCHAR,
    status          INTEGER,
    file_id         INTEGER,
    line_no         BIGINT
);""",

    "prices": f"""\
-- price per (provider, model, day), resolved once from genai-prices or the override file; $ per million tokens
CREATE TABLE IF NOT EXISTS prices (
    provider          VARCHAR NOT NULL,
    model             VARCHAR NOT NULL,
    day               DATE NOT NULL,
    input_mtok        {MONEY},
    output_mtok       {MONEY},
    cache_read_mtok   {MONEY},
    cache_write_mtok  {MONEY},
    source            VARCHAR NOT NULL,   -- genai-prices <version> | override:<file> | unknown
    matched_model     VARCHAR,
    PRIMARY KEY (provider, model, day)
);""",

    "case_meta": f"""\
-- what the case is: its schema version (forensics.schema.SCHEMA_VERSION)
CREATE TABLE IF NOT EXISTS case_meta (
    key    VARCHAR PRIMARY KEY,      -- schema_version
    value  VARCHAR NOT NULL
);
INSERT OR IGNORE INTO case_meta VALUES ('schema_version', '{SCHEMA_VERSION}');""",
}


def tables_of_version(version: int) -> tuple[str, ...]:
    """The tables a case of schema `version` holds."""
    return tuple(t for t in CASE_TABLES if t not in ADDED_IN_VERSION_2 and (version >= 2 or t != META_TABLE))

if set(TABLE_DDL) != set(CASE_TABLES):
    raise RuntimeError(f"case tables without DDL or DDL without a case table: {set(TABLE_DDL) ^ set(CASE_TABLES)}")

SCHEMA_SQL = "\n" + "\n\n".join([SEQUENCES_SQL, *(TABLE_DDL[t] for t in CASE_TABLES)]) + "\n"
