"""Staging fields (strings as logged) -> typed http_requests columns, with the reason a row cannot be loaded.

With `redact`, keys are redacted in the same statement, so that nothing unredacted is ever stored (forensics.secrets):
the staging fields first, before anything is derived from them (client_ip, time_raw, the reason, which quotes the
value it could not read), except those still to be cut or unescaped, whose final values are redacted instead: the
request line (method, path and protocol are cut from it on spaces, which a redacted key holds) and the text fields
whose \\x22 and \\x5C are turned back into characters.
"""
from __future__ import annotations

from forensics.sources.plausible import TimeWindow
from forensics.secrets import redact_sql

INSERT_COLUMNS = ("time", "time_raw", "host", "remote_addr", "remote_user", "forwarded_for", "client_ip",
                  "request_raw", "method", "path", "protocol", "status", "body_bytes", "request_length", "referer",
                  "user_agent", "request_time", "upstream_time_raw", "upstream_time", "upstream_status",
                  "upstream_addr", "request_id", "litellm_call_id", "format", "file_id", "line_no")

# columns whose final value is redacted; every other staging field is redacted as it comes in
REDACTED_AFTER = ("host", "remote_user", "forwarded_for", "request_raw", "method", "path", "protocol", "referer",
                  "user_agent")
# a key as the peer address: the client is that, redacted, as the X-Forwarded-For walk would say (netaddr)
REDACTED_FORM = r"\[redacted key [^ \]]+ sha256:[0-9a-f]{64}\]"
_RAW_UNTIL_DERIVED = {"request", "host", "remote_user", "forwarded_for", "uri", "referer", "user_agent", "prefix",
                      "method", "protocol"}

# naive UTC from each kind of nginx time; epoch_us of a TIMESTAMPTZ does not depend on the session time zone
_TIME_SQL = {
    # most logs are written in UTC: their times skip the %z parse (twice as slow) and the epoch round trip
    "time_local": ("CASE WHEN length(time_local) = 26 AND ends_with(time_local, ' +0000') "
                   "THEN try_strptime(left(time_local, 20), '%d/%b/%Y:%H:%M:%S') "
                   "ELSE make_timestamp(epoch_us(try_strptime(time_local, '%d/%b/%Y:%H:%M:%S %z'))) END"),
    "time_iso8601": "make_timestamp(epoch_us(TRY_CAST(time_iso8601 AS TIMESTAMPTZ)))",
}
# a method token: the usual ones by one comparison, the regex only for the rest (the same answer, cheaper)
_COMMON_METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH")
_METHOD_SQL = ("CASE WHEN {m} IN (" + ", ".join(f"'{m}'" for m in _COMMON_METHODS) + ") THEN true "
               "ELSE regexp_full_match({m}, '[A-Za-z][A-Za-z0-9_.-]{{0,31}}') END")
_MSEC = "TRY_CAST(msec AS DECIMAL(24,6))"     # seconds.milliseconds ($msec), or milliseconds where a log says so


def time_sql(time_field: str, window: TimeWindow) -> str:
    """The naive UTC time of a line from its time field; $msec in the unit that makes it a plausible time."""
    return window.epoch_sql(_MSEC) if time_field == "msec" else _TIME_SQL[time_field]


def _absent(x: str) -> str:
    """NULL for nginx's '-' and for ''."""
    return f"CASE WHEN {x} IN ('-', '') THEN NULL ELSE {x} END"


def _text(x: str, nginx_escapes: bool) -> str:
    """A text value with nginx's \\x22 and \\x5C turned back into the quote and backslash the client sent."""
    v = _absent(x)
    if not nginx_escapes:
        return v
    return f"CASE WHEN contains({x}, '\\x') THEN replace(replace({v}, '\\x22', '\"'), '\\x5C', '\\') ELSE {v} END"


def _number(x: str, sql_type: str) -> str:
    return f"TRY_CAST({_absent(x)} AS {sql_type})"


def _bad_number(x: str, typed: str, label: str) -> str:
    """The reason for a value nginx wrote that is not a number: `typed` (the column cast from `x` by _number) is
    NULL though `x` is neither '-' nor '' (not cast twice)."""
    return (f"WHEN {typed} IS NULL AND {x} NOT IN ('-', '') "
            f"THEN '{label} \"' || left({x}, 100) || '\" is not a number'")


def _time_sql(time_field: str | tuple[str, ...] | None, window: TimeWindow) -> tuple[str, str, str]:
    """(time, `... AS time_raw`, the WHEN clauses of the time's reasons) for one time field, or for several (a format inferred
    with $time_iso8601 whose fallbacks, combined and CLF lines, log $time_local): each row's first one it holds. With
    several, time_raw is followed by a column <field>_held for each, which the reasons read."""
    fields = (time_field,) if isinstance(time_field, str) else tuple(time_field or ())
    if not fields:
        return "NULL::TIMESTAMP", "NULL::VARCHAR AS time_raw", ""

    def implausible(f: str) -> str:
        return window.reason_sql(f, "time_raw", "time",
                                 "TRY_CAST(time_raw AS DECIMAL(24,6)) IS NOT NULL" if f == "msec" else "false")
    if len(fields) == 1:
        time_expr, time_raw, reason = time_sql(fields[0], window), f"{fields[0]} AS time_raw", implausible(fields[0])
    else:
        time_expr = f"CASE {' '.join(f'WHEN {f} IS NOT NULL THEN {time_sql(f, window)}' for f in fields)} END"
        time_raw = f"coalesce({', '.join(fields)}) AS time_raw" + "".join(f", {f} IS NOT NULL AS {f}_held" for f in fields)
        reason = f"CASE {' '.join(f'WHEN {f}_held THEN {implausible(f)}' for f in fields)} END"
    time_check = (f"WHEN {reason} IS NOT NULL THEN {reason} "
                  "WHEN time IS NULL THEN CASE WHEN time_raw IS NULL OR time_raw IN ('-', '') THEN 'no time' "
                  "ELSE 'time \"' || left(time_raw, 100) || '\" is not a valid time' END")
    return time_expr, time_raw, time_check


def convert_sql(staged: str, fmt: str, file_id: int, time_field: str | tuple[str, ...] | None, nginx_escapes: bool,
                window: TimeWindow | None = None, redact: bool = False, fields: tuple[str, ...] = ()) -> str:
    """SELECT line_no, line, _reason, <INSERT_COLUMNS> FROM `staged`; _reason is NULL for a loadable row. A time
    outside `window` (plausible.TimeWindow: before 2015, after the ingest clock + 1 day) is a reason too. `line` is
    the line as read, never redacted: only for the quarantine, whose insert redacts it. `fields`: the staging fields
    of `staged` (STAGING_FIELDS names them all) that the format can fill, the only ones worth redacting."""
    t = lambda x: _text(x, nginx_escapes)  # noqa: E731
    window = window or TimeWindow.at()
    if redact:
        early = [f for f in fields if f not in _RAW_UNTIL_DERIVED]
        if early:
            staged = f"(SELECT * REPLACE ({', '.join(f'{redact_sql(f)} AS {f}' for f in early)}) FROM {staged})"
    out = ", ".join(f"{redact_sql(c)} AS {c}" if redact and c in REDACTED_AFTER else c for c in INSERT_COLUMNS)
    time_expr, time_raw, time_check = _time_sql(time_field, window)
    upstream = _absent("upstream_time")
    # the head before $remote_addr (nginx_formats._PREFIX): a vhost, an address list, or a vhost then a list
    xff_prefix = "contains(prefix, ',')"
    vhost_first = "(contains(prefix, ' ') AND NOT ends_with(split_part(prefix, ' ', 1), ','))"
    prefix_host = f"CASE WHEN NOT {xff_prefix} THEN prefix WHEN {vhost_first} THEN split_part(prefix, ' ', 1) END"
    prefix_chain = (f"CASE WHEN {xff_prefix} THEN rtrim(CASE WHEN {vhost_first} THEN "
                    f"substr(prefix, strpos(prefix, ' ') + 1) ELSE prefix END, ',') END")
    return f"""
SELECT line_no, line, _reason, {out} FROM (
  SELECT *, CASE {time_check}
      WHEN status_raw IS NOT NULL AND status IS NULL THEN 'status "' || left(status_raw, 100) || '" is not a number'
      {_bad_number('bytes_raw', 'body_bytes', 'body_bytes_sent')}
      {_bad_number('request_length_raw', 'request_length', 'request_length')}
      {_bad_number('request_time_raw', 'request_time', 'request_time')}
    END AS _reason
  FROM (
    SELECT line_no, line, status AS status_raw, coalesce(body_bytes, bytes_sent) AS bytes_raw,
      request_length AS request_length_raw, request_time AS request_time_raw,
      {time_expr} AS time, {time_raw},
      coalesce({t('host')}, {prefix_host}) AS host,
      {_absent('remote_addr')} AS remote_addr,
      {t('remote_user')} AS remote_user,
      coalesce({t('forwarded_for')}, {prefix_chain}) AS forwarded_for,
      CASE WHEN coalesce(forwarded_for IN ('-', ''), true) AND NOT coalesce({xff_prefix}, false)
                AND remote_addr NOT IN ('', '-') AND (NOT contains(remote_addr, ':')
                AND NOT contains(remote_addr, ' ') AND NOT contains(remote_addr, '"')
                OR regexp_full_match(remote_addr, '{REDACTED_FORM}'))
           THEN CASE WHEN strlen(remote_addr) <= 100 THEN remote_addr ELSE left(remote_addr, 100) END END AS client_ip,
      request AS request_raw,
      CASE WHEN http THEN rq[1] ELSE {_absent('method')} END AS method,
      CASE WHEN http THEN {t('rq[2]')} ELSE {t('uri')} END AS path,
      CASE WHEN http THEN rq[3] ELSE {_absent('protocol')} END AS protocol,
      TRY_CAST({_absent('status')} AS INTEGER) AS status,
      {_number('coalesce(body_bytes, bytes_sent)', 'BIGINT')} AS body_bytes,
      {_number('request_length', 'BIGINT')} AS request_length,
      {t('referer')} AS referer,
      {t('user_agent')} AS user_agent,
      {_number('request_time', 'DOUBLE')} AS request_time,
      upstream_time AS upstream_time_raw,
      CASE WHEN contains({upstream}, ',') OR contains({upstream}, ':')
           THEN list_sum(list_transform(regexp_split_to_array({upstream}, ',\\s*|\\s*:\\s*'),
                                        lambda x: TRY_CAST(x AS DOUBLE)))
           ELSE TRY_CAST({upstream} AS DOUBLE) END AS upstream_time,
      {_absent('upstream_status')} AS upstream_status,
      {_absent('upstream_addr')} AS upstream_addr,
      {_absent('request_id')} AS request_id,
      {_absent('litellm_call_id')} AS litellm_call_id,
      '{fmt}' AS format, {int(file_id)} AS file_id
    FROM (
      SELECT *, coalesce((len(rq) = 3 AND starts_with(rq[3], 'HTTP/') OR len(rq) = 2 AND starts_with(rq[2], '/'))
                         AND {_METHOD_SQL.format(m='rq[1]')}, false) AS http
      FROM (SELECT *, string_split(request, ' ') AS rq FROM {staged})
    )
  )
)"""
