"""nginx error logs into the nginx_errors table: one row per entry, classified (limit_req, upstream timed out, ...).

An entry is `YYYY/MM/DD HH:MM:SS [level] pid#tid: *connection message, client: A, server: S, request: "...",
upstream: "...", host: "..."` (the connection and the trailing pairs are optional; the message may hold commas).
A line that does not start like that continues the entry above it (FastCGI's stderr spans lines): it is part of
that record, and quarantined only when no entry stands before it. Empty lines are not records.

Times are local to the server with no offset: the offset is taken from the access-log lines of the case at the
nearest earlier local time (their `$time_local` says it), else UTC is assumed and `offset_source` says so;
`resolve_offsets` settles entries loaded before their access log once it is in the case.
"""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from forensics.duck import query_with
from forensics.secrets import redact_sql
from forensics.sources.interface import LoadContext, LoadOptions, LoadResult
from forensics.sources.lines import MAY_HOLD_SECRET, batch_flag, iter_line_batches
from forensics.sources.plausible import TimeWindow
from forensics.sources.quarantine import insert_sql as quarantine_sql

FORMAT = "nginx.error"
LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
ENTRY = re.compile(r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} \[(?:" + "|".join(LEVELS) + r")\] \d+#\d+: ")
# the same in SQL (RE2): time, level, pid, tid, connection, the rest
_ENTRY_SQL = r"^(\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) \[(" + "|".join(LEVELS) + r")\] (\d+)#(\d+): (?:\*(\d+) )?"
MAX_LINE_BYTES = 1 << 20
BATCH_BYTES = 32 << 20
ASSUMED_UTC = "assumed UTC (no access log in the case gives the server offset)"
FROM_ACCESS_LOG = "access log"

# message class: what the analyst asks of an error log (first match wins)
CLASSES: tuple[tuple[str, str], ...] = (
    ("limit_req_dry_run", "limiting requests, dry run"),
    ("limit_req", "limiting requests"),
    ("limit_req_delayed", "delaying request"),
    ("limit_conn_dry_run", "limiting connections, dry run"),
    ("limit_conn", "limiting connections"),
    ("upstream_timed_out", "upstream timed out"),
    ("connect_failed", r"connect\(\) (?:to \S+ )?failed"),
    ("upstream_prematurely_closed", "upstream prematurely closed"),
    ("no_live_upstreams", "no live upstreams"),
    ("body_too_large", "client intended to send too large"),
    ("ssl", r"\bSSL[_ ]|\bSSL: "),
    # ngx_http_auth_basic_module: a wrong user or password (the access log shows the 401; this names the user)
    ("auth_basic_failed", r'^user "[^"]*"(?: was not found in "|: password mismatch)|^no user/password was provided '
                          r"for basic authentication"),
    ("access_forbidden", r"^access forbidden by rule"),             # ngx_http_access_module's deny
    ("file_not_found", r'^open\(\) "[^"]*" failed \(2: '),           # a path that does not exist: scanners' probes
)
ORPHAN = "lines before the first error-log entry (no time, no level): not an entry of their own"
REJECTIONS = ("limit_req", "limit_conn")                      # requests nginx refused (503 or limit_*_status)
UPSTREAM_FAILURES = ("upstream_timed_out", "connect_failed", "upstream_prematurely_closed", "no_live_upstreams")

COLUMNS = ("time", "time_raw", "utc_offset", "offset_source", "level", "pid", "tid", "connection", "class", "zone",
           "client_ip", "server", "request", "method", "path", "upstream", "host", "message", "file_id", "line_no")
_TEXT = ("client_ip", "server", "request", "method", "path", "upstream", "host", "message")


def detect(sample: bytes, path: Path, options: LoadOptions | None = None) -> str | None:
    """FORMAT when at least half of the sample's lines start an error-log entry (the first may continue an entry
    the file does not hold: a log rotated by copytruncate)."""
    text = sample.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = text.split("\n")
    if len(lines) > 1 and not text.endswith("\n"):
        lines.pop()                                  # the sample may end inside a line
    lines = [ln for ln in lines if ln.strip()][:200]
    entries = sum(bool(ENTRY.match(ln)) for ln in lines)
    return FORMAT if entries and 2 * entries >= len(lines) else None


def _pair(name: str) -> str:
    """A quoted `, name: "..."` pair of the context nginx appends (the value may hold quotes: it ends where the next
    pair or the line does)."""
    return f"""regexp_extract(rest, ', {name}: "(.*?)"(?:, [a-z]+: |$)', 1)"""


def entries_sql(lines: str, window: TimeWindow) -> str:
    """The entries of `lines` (line_no, line): each start line with the continuation lines after it folded in,
    parsed, with their local time; `reason` says why one cannot load (continuation lines with no entry before them
    in `lines`, a time that is no time or outside the plausible window), NULL for the others."""
    classes = " ".join(f"WHEN regexp_matches(message, '{rx}') THEN '{cls}'" for cls, rx in CLASSES)
    return f"""
        WITH l AS (
            SELECT line_no, line, regexp_matches(line, '{_ENTRY_SQL}') AS start FROM {lines}
        ), g AS (
            SELECT *, sum(start::INTEGER) OVER (ORDER BY line_no ROWS UNBOUNDED PRECEDING) AS entry FROM l
        ), e AS (
            SELECT entry, min(line_no) AS line_no, bool_or(start) AS has_start,
                   string_agg(line, chr(10) ORDER BY line_no) AS text, count(*) AS lines
            FROM g GROUP BY entry
        ), p AS (
            SELECT *, regexp_extract(text, '{_ENTRY_SQL}', ['time_raw', 'level', 'pid', 'tid', 'conn']) AS h,
                   regexp_replace(text, '{_ENTRY_SQL}', '') AS rest
            FROM e WHERE has_start
        ), m AS (
            SELECT *, coalesce(nullif(regexp_extract(rest, '^(.*?), client: (?:[0-9A-Fa-f.:]+|unix:[^,]*), server: ', 1), ''),
                               rest) AS message
            FROM p
        )
        SELECT line_no, text, h.time_raw, try_strptime(h.time_raw, '%Y/%m/%d %H:%M:%S') AS local_time,
               CASE WHEN local_time IS NULL THEN 'time "' || h.time_raw || '" is not a valid time'
                    ELSE {window.reason_sql("time", "h.time_raw", "local_time", "false")} END AS reason,
               h.level, TRY_CAST(h.pid AS INTEGER) AS pid, TRY_CAST(h.tid AS BIGINT) AS tid,
               TRY_CAST(nullif(h.conn, '') AS BIGINT) AS connection,
               CASE {classes} ELSE 'other' END AS class,
               nullif(regexp_extract(message, 'by zone "([^"]*)"', 1), '') AS zone,
               nullif(regexp_extract(rest, ', client: ([^,]*)', 1), '') AS client_ip,
               nullif(regexp_extract(rest, ', server: ([^,]*)', 1), '') AS server,
               nullif({_pair('request')}, '') AS request,
               nullif({_pair('upstream')}, '') AS upstream,
               nullif({_pair('host')}, '') AS host,
               rest AS message
        FROM m
        UNION ALL
        SELECT line_no, text, NULL, NULL, '{ORPHAN}', NULL, NULL, NULL, NULL, 'orphan', NULL, NULL, NULL, NULL, NULL,
               NULL, NULL FROM e
        WHERE NOT has_start"""


def insert_sql(entries: str, file_id: int, redact: bool) -> str:
    """INSERT the parsed `entries` into nginx_errors, keys redacted in the text fields when `redact`, the time in
    UTC from the offset of the case's access log at that local time (see offsets_sql)."""
    def text(c: str) -> str:
        return redact_sql(c) if redact else c
    return f"""
        INSERT INTO nginx_errors ({', '.join(COLUMNS)})
        WITH e AS (SELECT * FROM ({entries}) WHERE reason IS NULL),
             o AS ({offsets_sql()})
        SELECT e.local_time - to_minutes(coalesce(o.minutes, 0)), e.time_raw,
               {_offset_text('o.minutes')}, CASE WHEN o.minutes IS NULL THEN '{ASSUMED_UTC}' ELSE '{FROM_ACCESS_LOG}' END,
               e.level, e.pid, e.tid, e.connection, e.class, {text('e.zone')}, {text('e.client_ip')},
               {text('e.server')}, {text('e.request')},
               {text("nullif(split_part(e.request, ' ', 1), '')")},
               {text("nullif(split_part(e.request, ' ', 2), '')")},
               {text('e.upstream')}, {text('e.host')}, {text('e.message')}, {int(file_id)}, e.line_no
        FROM e ASOF LEFT JOIN o ON e.local_time >= o.local_minute"""


def _offset_text(minutes: str) -> str:
    return (f"CASE WHEN {minutes} IS NULL THEN NULL ELSE (CASE WHEN {minutes} < 0 THEN '-' ELSE '+' END) || "
            f"lpad(CAST(abs({minutes}) // 60 AS VARCHAR), 2, '0') || ':' || "
            f"lpad(CAST(abs({minutes}) % 60 AS VARCHAR), 2, '0') END")


def offsets_sql() -> str:
    """(local_minute, minutes): the UTC offset the case's access-log lines give at each local minute they cover
    ($time_local's +hhmm, $time_iso8601's +hh:mm); the earliest one also stands for the times before it."""
    minutes = ("CASE WHEN regexp_matches(time_raw, '[+-]\\d\\d:?\\d\\d$') THEN "
               "(CASE WHEN regexp_extract(time_raw, '([+-])\\d\\d:?\\d\\d$', 1) = '-' THEN -1 ELSE 1 END) * "
               "(CAST(regexp_extract(time_raw, '[+-](\\d\\d):?\\d\\d$', 1) AS INTEGER) * 60 + "
               "CAST(regexp_extract(time_raw, '[+-]\\d\\d:?(\\d\\d)$', 1) AS INTEGER)) "
               "WHEN regexp_matches(time_raw, 'Z$') THEN 0 END")
    return f"""
        WITH a AS (SELECT time, {minutes} AS minutes FROM http_requests WHERE time IS NOT NULL),
             m AS (SELECT date_trunc('minute', time + to_minutes(minutes)) AS local_minute, mode(minutes) AS minutes
                   FROM a WHERE minutes IS NOT NULL GROUP BY ALL)
        SELECT * FROM m
        UNION ALL SELECT TIMESTAMP '0001-01-01', arg_min(minutes, local_minute) FROM m HAVING count(*) > 0"""


def resolve_offsets(con) -> int:
    """Entries stored with UTC assumed get their server's offset once an access log in the case gives it; the
    number of entries changed. (Only times change: no text value is rewritten.)"""
    (n,) = con.execute(f"SELECT count(*) FROM nginx_errors WHERE offset_source = '{ASSUMED_UTC}'").fetchone()
    if not n:
        return 0
    (have,) = con.execute("SELECT count(*) FROM http_requests WHERE time IS NOT NULL").fetchone()
    if not have:
        return 0
    con.execute(f"""
        UPDATE nginx_errors SET time = r.time, utc_offset = r.utc_offset, offset_source = '{FROM_ACCESS_LOG}'
        FROM (SELECT e.file_id, e.line_no, e.local_time - to_minutes(o.minutes) AS time,
                     {_offset_text('o.minutes')} AS utc_offset
              FROM (SELECT file_id, line_no, strptime(time_raw, '%Y/%m/%d %H:%M:%S') AS local_time FROM nginx_errors
                    WHERE offset_source = '{ASSUMED_UTC}') e
              ASOF JOIN ({offsets_sql()}) o ON e.local_time >= o.local_minute) r
        WHERE nginx_errors.file_id = r.file_id AND nginx_errors.line_no = r.line_no""")
    return int(n)


class ErrorLogSource:
    """nginx's error log (family nginx: its rows are in nginx_errors)."""

    family = "nginx"

    def detect(self, sample: bytes, path: Path, options: LoadOptions | None = None) -> str | None:
        return detect(sample, path, options)

    def load(self, ctx: LoadContext, fmt: str) -> LoadResult:
        if fmt != FORMAT:
            raise ValueError(f"unknown nginx error-log format {fmt!r}")
        return _Load(ctx).run()


class _Load:
    def __init__(self, ctx: LoadContext):
        self.ctx, self.con, self.fid = ctx, ctx.con, int(ctx.file_id)
        self.records = self.loaded = self.quarantined = 0

    def run(self) -> LoadResult:
        reader = iter_line_batches(self.ctx.path, BATCH_BYTES, MAX_LINE_BYTES, flag_secrets=True, skip_empty=True,
                                   spec=self.ctx.read)
        held: pa.Table | None = None      # the last entry of the batch before: its continuation may follow
        redact = False
        for batch in reader:
            redact = batch_flag(batch, MAY_HOLD_SECRET)
            cut = reader.oversized_in(batch.column("line_no")[0].as_py(), batch.column("line_no")[-1].as_py())
            if cut:
                batch = self._quarantine_cut(reader, cut, batch)
            batch = batch.replace_schema_metadata(None)
            if held is not None:
                batch = pa.concat_tables([held, batch])
                redact = True     # the held lines' own flag is not kept: redact both
            starts = [i for i, ln in enumerate(batch.column("line").to_pylist()) if ENTRY.match(ln)]
            last = starts[-1] if starts else batch.num_rows
            self._store(batch.slice(0, last), redact)
            held = batch.slice(last) if last < batch.num_rows else None
        if held is not None:
            self._store(held, True)
        notes = []
        if reader.error:                     # the unreadable rest of a cut gzip file is one record
            self.con.execute("INSERT INTO quarantine VALUES (?, ?, '', ?)", [self.fid, reader.lines + 1, reader.error])
            self.records += 1
            self.quarantined += 1
            notes.append(reader.error)
        if reader.empty_lines:
            notes.append(f"{reader.empty_lines:,} blank lines skipped (not records)")
        if reader.invalid_utf8_lines:
            notes.append(f"{len(reader.invalid_utf8_lines)} lines held bytes that are not UTF-8 (kept as \\xHH), "
                         f"first at line {reader.invalid_utf8_lines[0]}")
        (assumed,) = self.con.execute(f"SELECT count(*) FROM nginx_errors WHERE file_id = {self.fid} AND "
                                      f"offset_source = '{ASSUMED_UTC}'").fetchone()
        if assumed:
            notes.append(f"{assumed:,} entries: times are local with no offset, and no access log in the case gives "
                         "the server's: read as UTC until one is ingested")
        return LoadResult(self.records, self.loaded, self.quarantined, 0, tuple(notes))

    def _store(self, lines: pa.Table, redact: bool) -> None:
        if not lines.num_rows:
            return
        lines = lines.select(["line_no", "line"])
        entries = entries_sql("_ngx_err_lines", self.ctx.window)
        (n,) = query_with(self.con, "_ngx_err_lines", lines, insert_sql(entries, self.fid, redact))[0]
        (bad,) = query_with(self.con, "_ngx_err_lines", lines, quarantine_sql(
            self.fid, f"(SELECT line_no AS record_no, text AS raw, reason FROM ({entries}) WHERE reason IS NOT NULL)"))[0]
        self.loaded += n
        self.quarantined += bad
        self.records += n + bad

    def _quarantine_cut(self, reader, cut: list[int], batch: pa.Table) -> pa.Table:
        """Lines over the limit: their kept prefix goes to quarantine; the rest of the batch is returned."""
        in_cut = pc.is_in(batch.column("line_no"), pa.array(cut, pa.int64()))
        rows = batch.filter(in_cut)
        table = pa.table({"record_no": rows.column("line_no"), "raw": rows.column("line"),
                          "reason": pa.array([reader.oversized_reason(n) for n in rows.column("line_no").to_pylist()],
                                             pa.string())})
        query_with(self.con, "_ngx_err_q", table, quarantine_sql(self.fid, "_ngx_err_q"))
        self.records += rows.num_rows
        self.quarantined += rows.num_rows
        return batch.filter(pc.invert(in_cut))


SOURCE = ErrorLogSource()
