"""LiteLLM's own stdout: `json_logs: true` lines (litellm/_logging.py JsonFormatter) and the plain-text log, into the
litellm_log table, each line classified (no master key, weak master key permitted, 429, auth error, budget
exceeded, startup, HTTP access line, other).

Shapes, from a real LiteLLM 1.106.12 capture and the reference (docs/…/litellm.md §2.3, §9):
- JSON: {"message", "level", "timestamp" (naive local time, read as UTC), "component" (logger name), "logger"
  (file.py:line), "stacktrace"?, "litellm_call_id"?}; older releases wrote {"message", "level", "timestamp"} with an
  asctime timestamp ("2025-05-26 09:48:01,786"), or {"message"} alone.
- plain LiteLLM lines: `HH:MM:SS - LiteLLM Proxy:LEVEL: file.py:line - message` (ANSI colour codes around the head);
  uvicorn's `INFO:     10.0.0.5:51234 - "POST /chat/completions HTTP/1.1" 200 OK`; banners and tracebacks as they
  come. Every line is a record (lossless): what is no log line of either shape loads as shape 'text'. Quarantined: a
  line that opens a JSON object and is not one (cut short), and a JSON timestamp outside the plausible window.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from forensics.duck import query_with
from forensics.secrets import redact_sql
from forensics.sources.interface import LoadContext, LoadResult
from forensics.sources.lines import MAY_HOLD_SECRET, batch_flag, iter_line_batches
from forensics.sources.plausible import TimeWindow
from forensics.sources.quarantine import insert_sql as quarantine_sql

FORMAT = "litellm.stdout"
MAX_LINE_BYTES = 4 << 20          # a stack trace in one JSON string can be long; LiteLLM cuts its own at ~10 KB
_ANSI = r"\x1b\[[0-9;]*m"
# the plain-text heads, on the line with its colour codes removed
LITELLM_TEXT = r"^(\d{2}:\d{2}:\d{2}) - (LiteLLM[\w .-]*):(DEBUG|INFO|WARNING|ERROR|CRITICAL): (\S+:\d+) - (.*)$"
UVICORN_TEXT = r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):\s+(.*)$"
ACCESS = r'^(\S+):(\d+) - "([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})'
_JSON_KEYS = {"message", "level", "timestamp", "component", "logger", "stacktrace", "color_message",
              "litellm_call_id", "trace_id", "session_id", "error", "exc_info"}
_TEXT_LINE = re.compile(LITELLM_TEXT)
_UVICORN_LINE = re.compile(UVICORN_TEXT)
_MARKER = re.compile(r"litellm", re.I)

# message classes, first match wins: (class, RE2 pattern on the message, case-insensitive)
CLASSES: tuple[tuple[str, str], ...] = (
    ("weak_master_key_permitted", r"dangerously_permit_weak_or_unset_master_key"),
    ("no_master_key", r"master[_ ]key is not set|no master key|master key is not initiali[sz]ed"),
    ("budget_exceeded", r"budget has been exceeded|budget exceeded|exceededbudget|exceeded (its |the )?budget|"
                        r"over (its |the )?budget"),
    ("rate_limit", r"ratelimiterror|rate limit (reached|exceeded)|too many requests|\b429\b|max parallel request"),
    ("auth_error", r"authentication error|user_api_key_auth|no api key passed in|invalid proxy server token|"
                   r"invalid api key|unauthorized|\b401\b"),
    ("startup", r"uvicorn running on|application startup complete|started server process|proxy initialized|"
                r"waiting for application startup|thank you for using litellm"),
)


def detect(text: str) -> str | None:
    """FORMAT when the sample's lines are LiteLLM's stdout: most lines are its JSON or plain-text log lines, and one
    at least is LiteLLM's own (a component and file:line logger, a 'LiteLLM ...:LEVEL:' head, or the word)."""
    lines = [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()][:400]
    if len(lines) > 1 and not text.endswith("\n"):
        lines.pop()                                    # the sample may end inside a line
    if not lines:
        return None
    ours = litellm = 0
    for ln in lines:
        plain = re.sub(_ANSI, "", ln)
        if ln.startswith("{"):
            try:
                d = json.loads(ln)
            except (ValueError, RecursionError):
                continue
            if isinstance(d, dict) and "message" in d and ("level" in d or set(d) <= _JSON_KEYS):
                ours += 1
                litellm += ("component" in d and "logger" in d) or bool(_MARKER.search(str(d.get("message"))))
        elif _TEXT_LINE.match(plain):
            ours += 1
            litellm += 1
        elif _UVICORN_LINE.match(plain):
            ours += 1
        else:
            litellm += bool(_MARKER.search(ln))
    return FORMAT if litellm and ours * 2 >= len(lines) else None


def _str(doc: str, key: str) -> str:
    return f"json_extract_string({doc}, '$.\"{key}\"')"


def parse_sql(batch: str, window: TimeWindow) -> str:
    """SELECT every litellm_log column (message unredacted) and _reason (why the line cannot load) from `batch`
    (line_no, line): one statement, for ingest and for the audit's startup log alike."""
    head_rx, uv_rx = _q(LITELLM_TEXT), _q(UVICORN_TEXT)
    ts = ("coalesce(try_strptime(j_time, '%Y-%m-%dT%H:%M:%S.%f'), try_strptime(j_time, '%Y-%m-%dT%H:%M:%S'), "
          "try_strptime(j_time, '%Y-%m-%d %H:%M:%S,%g'), try_strptime(j_time, '%Y-%m-%d %H:%M:%S.%f'), "
          "try_strptime(j_time, '%Y-%m-%d %H:%M:%S'))")
    classes = " ".join(f"WHEN regexp_matches(message, {_q('(?i)' + rx)}) THEN '{name}'" for name, rx in CLASSES)
    return f"""
    WITH src AS (
        SELECT line_no, line, regexp_replace(line, {_q(_ANSI)}, '', 'g') AS plain,
               CASE WHEN starts_with(line, '{{') AND json_valid(line) THEN json_type(line) = 'OBJECT' ELSE false END
                   AS is_json
        FROM {batch}),
    parts AS (
        SELECT line_no, line, is_json,
               CASE WHEN is_json THEN 'json' WHEN regexp_matches(plain, {head_rx}) THEN 'litellm_text'
                    WHEN regexp_matches(plain, {uv_rx}) THEN 'uvicorn_text' ELSE 'text' END AS shape,
               CASE WHEN is_json THEN {_str('line', 'timestamp')} END AS j_time,
               plain
        FROM src),
    fields AS (
        SELECT line_no, line, shape, j_time,
               CASE shape WHEN 'json' THEN j_time WHEN 'litellm_text' THEN regexp_extract(plain, {head_rx}, 1) END
                   AS time_raw,
               CASE shape WHEN 'json' THEN upper({_str('line', 'level')})
                          WHEN 'litellm_text' THEN regexp_extract(plain, {head_rx}, 3)
                          WHEN 'uvicorn_text' THEN regexp_extract(plain, {uv_rx}, 1) END AS level,
               CASE shape WHEN 'json' THEN {_str('line', 'component')}
                          WHEN 'litellm_text' THEN regexp_extract(plain, {head_rx}, 2)
                          WHEN 'uvicorn_text' THEN 'uvicorn' END AS component,
               CASE shape WHEN 'json' THEN {_str('line', 'logger')}
                          WHEN 'litellm_text' THEN regexp_extract(plain, {head_rx}, 4) END AS logger,
               CASE shape WHEN 'json' THEN {_str('line', 'message')}
                          WHEN 'litellm_text' THEN regexp_extract(plain, {head_rx}, 5)
                          WHEN 'uvicorn_text' THEN regexp_extract(plain, {uv_rx}, 2) ELSE plain END AS message,
               CASE WHEN shape = 'json' THEN {_str('line', 'litellm_call_id')} END AS j_call_id,
               starts_with(line, '{{') AND shape <> 'json' AS broken_json
        FROM parts),
    typed AS (
        SELECT *, {ts} AS time,
               regexp_extract(message, {_q(ACCESS)}, ['client', 'port', 'method', 'path', 'status']) AS acc
        FROM fields)
    SELECT time, time_raw, shape, level, component, logger,
           CASE WHEN acc.status = '429' THEN 'rate_limit'
                WHEN acc.status IN ('401', '403') THEN 'auth_error'
                WHEN acc.status <> '' THEN 'http_access'
                {classes} ELSE 'other' END AS message_class,
           message,
           coalesce(j_call_id, nullif(regexp_extract(message, 'litellm_call_id=([0-9A-Za-z-]+)', 1), '')) AS litellm_call_id,
           nullif(acc.client, '') AS client, nullif(acc.method, '') AS method, nullif(acc.path, '') AS path,
           try_cast(nullif(acc.status, '') AS INTEGER) AS status, line_no, line,
           CASE WHEN broken_json THEN 'a line that opens a JSON object and is not one (cut short?)'
                WHEN j_time IS NOT NULL AND time IS NULL THEN 'timestamp "' || left(j_time, 80) || '" is not a time'
                WHEN {window.outside_sql('time')} THEN 'timestamp "' || left(j_time, 80) || '" is outside '
                     || '{window.text}' END AS _reason
    FROM typed"""


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


COLUMNS = ("time", "time_raw", "shape", "level", "component", "logger", "message_class", "message",
           "litellm_call_id", "client", "method", "path", "status", "file_id", "line_no")


def load(ctx: LoadContext) -> LoadResult:
    """Every line of the file into litellm_log, or the quarantine with its reason; keys redacted as stored."""
    con, fid = ctx.con, int(ctx.file_id)
    reader = iter_line_batches(ctx.path, max_line_bytes=MAX_LINE_BYTES, flag_secrets=True, skip_empty=True,
                               spec=ctx.read)
    loaded = quarantined = 0
    for batch in reader:
        lo, hi = batch.column("line_no")[0].as_py(), batch.column("line_no")[-1].as_py()
        cut = set(reader.oversized_in(lo, hi))
        redact = batch_flag(batch, MAY_HOLD_SECRET)
        msg = redact_sql("message") if redact else "message"
        cut_sql = f"line_no IN ({', '.join(map(str, cut))})" if cut else "false"
        why = " || ".join(f"CASE WHEN line_no = {n} THEN {_q(reader.oversized_reason(n))} ELSE '' END" for n in cut)
        parsed = f"(SELECT * REPLACE (CASE WHEN {cut_sql} THEN {why or 'NULL'} ELSE _reason END AS _reason) " \
                 f"FROM ({parse_sql('_ll_stdout', ctx.window)}))"
        # the parse runs once per statement: loaded and quarantined rows come from two statements over the batch
        cols = [c if c != "message" else f"{msg} AS message" for c in COLUMNS if c != "file_id"]
        loaded += query_with(con, "_ll_stdout", batch, f"""
            INSERT INTO litellm_log ({', '.join(c for c in COLUMNS if c != 'file_id')}, file_id)
            SELECT {', '.join(cols)}, {fid} FROM {parsed} WHERE _reason IS NULL""")[0][0]
        rows = query_with(con, "_ll_stdout", batch, quarantine_sql(
            fid, f"(SELECT line_no AS record_no, line AS raw, _reason AS reason FROM {parsed} WHERE _reason IS NOT NULL)"))
        quarantined += rows[0][0] if rows else 0
    records = reader.lines_read - reader.empty_lines
    notes = []
    if reader.error:                                   # the unreadable rest of a cut gzip file is one record
        con.execute("INSERT INTO quarantine VALUES (?, ?, '', ?)", [fid, reader.lines + 1, reader.error])
        records += 1
        quarantined += 1
        notes.append(reader.error)
    (text_times,) = con.execute("SELECT count(*) FROM litellm_log WHERE file_id = ? AND time IS NULL AND "
                                "time_raw IS NOT NULL", [fid]).fetchone()
    if text_times:
        notes.append(f"{text_times:,} plain-text lines carry a time of day only: their time is left empty "
                     "(time_raw kept)")
    if reader.empty_lines:
        notes.append(f"{reader.empty_lines:,} blank lines skipped (not records)")
    return LoadResult(records, loaded, quarantined, 0, tuple(notes))


def read_log(path: Path) -> list[dict]:
    """The classified lines of a LiteLLM stdout file, in memory (the audit's startup log): the same parse as ingest,
    messages redacted, lines that cannot load left out."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        out: list[dict] = []
        names = [c for c in COLUMNS if c != "file_id"]
        for batch in iter_line_batches(path, max_line_bytes=MAX_LINE_BYTES, skip_empty=True):
            sql = (f"SELECT {', '.join(c if c != 'message' else redact_sql('message') for c in names)} "
                   f"FROM ({parse_sql('_ll_stdout', TimeWindow.at())}) WHERE _reason IS NULL ORDER BY line_no")
            out += [dict(zip(names, r)) for r in query_with(con, "_ll_stdout", batch, sql)]
        return out
    finally:
        con.close()
