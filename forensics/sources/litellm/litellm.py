"""LiteLLM proxy logs: SpendLogs exports (CSV, JSON, NDJSON, /spend/logs/ui pages), StandardLoggingPayload
callbacks, flat spend rows. /spend/logs?summarize=true per-day totals are recognised and refused (no requests).

Every format loads into llm_requests keyed by request_id, so one request stays one row across files.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from pathlib import Path

from forensics.netaddr import TrustedProxies
from forensics.sources.interface import LoadContext, LoadResult
from forensics.sources.litellm import litellm_fields as fields
from forensics.sources.litellm import litellm_merge as merge
from forensics.sources.litellm import litellm_read as read
from forensics.sources.litellm import stdout

SPENDLOGS_CSV = "litellm.spendlogs_csv"
SPENDLOGS_JSON = "litellm.spendlogs_json"
SPENDLOGS_NDJSON = "litellm.spendlogs_ndjson"
# one SpendLogs row as a JSON object per file, pretty-printed or not (GCS/S3 bucket and pub/sub loggers: metadata
# double-encoded as a string, cache_hit "None")
SPENDLOGS_OBJECT = "litellm.spendlogs_object"
PAYLOAD_NDJSON = "litellm.payload_ndjson"
PAYLOAD_ARRAY = "litellm.payload_json_array"
PAYLOAD_OBJECT = "litellm.payload_object"
FLAT = "litellm.flat_spend"
SPENDLOGS_UI_PAGE = "litellm.spendlogs_ui_page"      # GET /spend/logs/ui: {"data": [rows], "total", "page", ...}
SPENDLOGS_DAILY = "litellm.spendlogs_daily_totals"  # GET /spend/logs?summarize=true: recognised, refused

FORMATS = {
    SPENDLOGS_CSV: "spendlogs", SPENDLOGS_JSON: "spendlogs", SPENDLOGS_NDJSON: "spendlogs",
    SPENDLOGS_UI_PAGE: "spendlogs", SPENDLOGS_OBJECT: "spendlogs",
    PAYLOAD_NDJSON: "payload", PAYLOAD_ARRAY: "payload", PAYLOAD_OBJECT: "payload", FLAT: "flat",
    SPENDLOGS_DAILY: "daily",
}
KEPT = ("_ks", "_kn")        # the columns of the records that line_batches looks at for a key twice, after staging
PAGE_KEYS = ("total", "page", "page_size", "total_pages")
DAILY_REFUSED = ("LiteLLM /spend/logs per-day totals (summarize=true), not requests: "
                 "export with summarize=false or use /spend/logs/ui")
_BY_SHAPE = {  # (record kind, file shape) -> format id
    ("spendlogs", "array"): SPENDLOGS_JSON, ("spendlogs", "lines"): SPENDLOGS_NDJSON,
    ("spendlogs", "object"): SPENDLOGS_OBJECT,
    ("payload", "array"): PAYLOAD_ARRAY, ("payload", "lines"): PAYLOAD_NDJSON, ("payload", "object"): PAYLOAD_OBJECT,
    ("flat", "array"): FLAT, ("flat", "lines"): FLAT, ("flat", "object"): FLAT,
}


# ---- detection ----------------------------------------------------------------------------------------------

def record_kind(d: object) -> str | None:
    """Which LiteLLM record a JSON object is: payload, spendlogs or flat (a Datadog wrapper is looked through)."""
    if not isinstance(d, dict):
        return None
    if "ddsource" in d and isinstance(d.get("message"), str):
        try:
            d = json.loads(d["message"])
        except (ValueError, RecursionError):
            return _kind_from_text(d["message"])
        if not isinstance(d, dict):
            return None
    if ("id" in d or "litellm_call_id" in d) and "startTime" in d and (
        "response_cost" in d or "litellm_call_id" in d or "standard_built_in_tools_params" in d
    ):
        return "payload"
    if "request_id" in d and "startTime" in d:
        return "spendlogs"
    if "request_id" in d and "start_time" in d and ("spend" in d or "api_key" in d or "total_tokens" in d):
        return "flat"
    return None


def _ui_page(d: object) -> bool:
    """A /spend/logs/ui page: its data list holds SpendLogs rows (an empty one: the page keys say it is a page)."""
    if not isinstance(d, dict) or not isinstance(d.get("data"), list):
        return False
    first = next((v for v in d["data"] if isinstance(v, dict)), None)
    if first is None:
        return not d["data"] and all(k in d for k in PAGE_KEYS)
    return record_kind(first) == "spendlogs" and all(k in d for k in PAGE_KEYS)


def _daily_totals(d: object) -> bool:
    """A day of /spend/logs?summarize=true: {startTime: day, spend, users: {..}, models: {..}, <key hash>: spend}."""
    return (isinstance(d, dict) and "startTime" in d and "spend" in d and "request_id" not in d
            and isinstance(d.get("users"), dict) and isinstance(d.get("models"), dict))


def _kind_from_text(text: str) -> str | None:
    """Key-name evidence when the first record does not fit in the sample."""
    has = lambda key: re.search(rf'"{key}"\s*:', text) is not None  # noqa: E731
    if has("startTime") and (has("response_cost") or has("litellm_call_id")) and has("id"):
        return "payload"
    if has("request_id") and has("startTime") and (has("spend") or has("api_key")):
        return "spendlogs"
    if has("request_id") and re.search(r'"start_time"\s*:\s*"?\d{12,}', text) and has("spend"):
        return "flat"
    return None


def _detect_json(text: str) -> str | None:
    try:
        whole = json.loads(text)
    except (ValueError, RecursionError):
        whole = None
    if isinstance(whole, dict):
        kind = record_kind(whole)
        return _BY_SHAPE[(kind, "object")] if kind else SPENDLOGS_UI_PAGE if _ui_page(whole) else None
    if text[0] == "[":
        if isinstance(whole, list):
            first = next((v for v in whole if isinstance(v, dict)), None)
            kind = record_kind(first)
        else:
            body = text[1:].lstrip()
            if read.PAGE_DATA.match(body) and _page_start(body):   # an array of pages, the first over the sample
                return SPENDLOGS_UI_PAGE
            try:
                first = json.JSONDecoder().raw_decode(body)[0]
                kind = record_kind(first)
            except (ValueError, RecursionError):
                first, kind = None, _kind_from_text(body)
        if kind:
            return _BY_SHAPE[(kind, "array")]
        # an array of /spend/logs/ui pages, or of per-day totals
        return SPENDLOGS_UI_PAGE if _ui_page(first) else SPENDLOGS_DAILY if _daily_totals(first) else None
    if read.PAGE_DATA.match(text) and _page_start(text):
        return SPENDLOGS_UI_PAGE
    first_line, newline, _ = text.partition("\n")
    try:
        kind = record_kind(json.loads(first_line))
        return _BY_SHAPE[(kind, "lines")] if kind else None
    except (ValueError, RecursionError):
        pass
    if not newline:  # one line longer than the sample: NDJSON and a compact object file load the same way
        kind = _kind_from_text(text)
        return _BY_SHAPE[(kind, "lines")] if kind else None
    kind = _kind_from_text(text)  # a pretty-printed object larger than the sample
    return PAYLOAD_OBJECT if kind == "payload" else SPENDLOGS_OBJECT if kind == "spendlogs" else None


def _page_start(text: str) -> bool:
    """Pages seen from their start only: a page larger than the sample (its page keys come last), or pages in a
    row. The first record of the data list must be a SpendLogs row; an empty list, the page's keys must be there."""
    rest = text[read.PAGE_DATA.match(text).end():].lstrip()
    decode = json.JSONDecoder().raw_decode
    try:
        if rest.startswith("]"):
            return _ui_page(decode(text.lstrip())[0])
        kind = record_kind(decode(rest)[0])
    except (ValueError, RecursionError):
        kind = None if rest.startswith("]") else _kind_from_text(rest)
    return kind == "spendlogs"


def _detect_csv(text: str) -> str | None:
    first_line = text.split("\n", 1)[0]
    try:
        names = {n.strip().lower() for n in next(csv.reader(io.StringIO(first_line)), [])}
    except csv.Error:
        return None
    if {"request_id", "starttime"} <= names and names & {"api_key", "spend", "call_type"}:
        return SPENDLOGS_CSV
    return None


class LiteLLMSource:
    """The LiteLLM family (see forensics/sources/interface.py)."""

    family = "litellm"
    formats = (*FORMATS, stdout.FORMAT)

    def detect(self, sample: bytes, path: Path, options=None) -> str | None:
        text = sample.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
        if not text:
            return None
        if text[0] in "[{":
            fmt = _detect_json(text)
        else:
            # a CSV loads with its header on the first line: the loader reads it there (blank lines before it: no CSV)
            fmt = _detect_csv(sample.decode("utf-8", "replace").lstrip("\ufeff"))
        return fmt or stdout.detect(text)           # the proxy's own log (json_logs or plain text)

    def load(self, ctx: LoadContext, fmt: str) -> LoadResult:
        if fmt == stdout.FORMAT:
            return stdout.load(ctx)
        if fmt not in FORMATS:
            raise ValueError(f"unknown LiteLLM format {fmt!r}")
        if fmt == SPENDLOGS_DAILY:     # no request in it: failing says so, where a quarantine would hide it
            raise ValueError(DAILY_REFUSED)
        con, kind = ctx.con, FORMATS[fmt]
        trusted = TrustedProxies(ctx.options.trusted_proxies)
        records = quarantined = 0
        notes: list[str] = []

        def run(relation_fields: str | None, raw_sql: str, n: int, secret: bool = True) -> None:
            nonlocal records, quarantined
            records += n
            if relation_fields is not None:      # None: _ll_norm is staged already
                merge.stage(con, relation_fields, fmt, ctx.file_id, ctx.window)
            quarantined += merge.finish(con, ctx.file_id, fmt, raw_sql, trusted, secret)

        if fmt == SPENDLOGS_CSV:
            n, rejected, columns = read.stage_csv(con, ctx.path, fields.SPENDLOGS_COLUMNS, ctx.file_id, notes)
            records += rejected
            quarantined += rejected
            run(fields.spendlogs_sql("_ll_src", columns), read.CSV_RAW_SQL, n - rejected)
        else:
            # batch by batch: each is converted and inserted before the next is staged (closing() ends the reader,
            # and its side database, at once when a batch fails)
            # each batch with its hint: what a batch of lines cannot hold, from its bytes
            with contextlib.closing(self._json_batches(ctx, fmt, notes)) as batches:
                for n, hint in batches:
                    if hint.staged:
                        run(None, read.JSON_RAW_SQL, n, hint.secret)
                        continue
                    # looking through Datadog items costs a slower statement: only when some record may be one
                    (datadog,) = con.execute(
                        "SELECT count(*) FROM _ll_rec WHERE bad IS NULL AND contains(raw, '\"ddsource\"')"
                    ).fetchone() if kind == "payload" and hint.datadog else (0,)
                    run(_fields_for(kind, bool(datadog)), read.JSON_RAW_SQL, n, hint.secret)
        (own,) = con.execute("SELECT count(*) FROM llm_requests WHERE file_id = ?", [ctx.file_id]).fetchone()
        # after a failure the driver rolls back, which drops these too
        for table in ("_ll_rec", "_ll_src", "_ll_csv", "_ll_norm", "_ll_ip"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        loaded = records - quarantined
        return LoadResult(records, loaded, quarantined, merged=loaded - int(own), notes=tuple(notes))

    @staticmethod
    def _json_batches(ctx: LoadContext, fmt: str, notes: list[str]):
        """Stage the file's JSON records into _ll_rec, one batch at a time; yields each batch's record count and
        its read.BatchHint (a batch of lines has its own; any other batch may hold anything)."""
        unknown = read.BatchHint()
        if ctx.texts is not None:               # many one-object files at once (forensics.ingest_batch)
            yield read.stage_records(ctx.con, ctx.texts), unknown
            return
        if fmt in (PAYLOAD_OBJECT, SPENDLOGS_OBJECT):
            n = read.stage_object(ctx.con, ctx.path, notes)
            if n is not None:
                yield n, unknown
                return
        if fmt == SPENDLOGS_UI_PAGE:
            pages: list[tuple] = []
            yield from ((n, unknown) for n in read.json_value_batches(ctx.con, ctx.path, notes, pages))
            notes.extend(_page_notes(pages))
            return
        if read.first_char(ctx.path) == "[":
            yield from ((n, unknown) for n in read.json_value_batches(ctx.con, ctx.path, notes))
        else:
            # payload lines are checked, converted and typed in one statement (no Datadog item in the batch)
            stage_sql = (lambda relation: merge.stage_sql(fields.payload_sql(relation, KEPT), fmt, ctx.file_id,
                                                          ctx.window, KEPT)) if FORMATS[fmt] == "payload" else None
            yield from read.line_batches(ctx.con, ctx.path, notes, ctx.read, stage_sql)


def _page_notes(pages: list[tuple]) -> list[str]:
    """What the pages of a /spend/logs/ui file say is missing: the other pages of the same query."""
    numbered = [(p, t, n) for p, t, n, _ in pages if p is not None and t is not None]
    if not numbered:
        return []
    here = sorted({p for p, _, _ in numbered})
    of = max(t for _, t, _ in numbered)
    total = max((n for _, _, n in numbered if n is not None), default=None)
    rows = f" ({total:,} rows in all)" if total is not None else ""
    notes = []
    missing, last = [], 0           # the runs of pages 1..of not here (total_pages may be anything: no range())
    for p in [x for x in here if 1 <= x <= of] + [of + 1]:
        if p > last + 1:
            missing.append((last + 1, p - 1))
        last = p
    if missing:
        many = len(missing) > 1 or missing[0][0] != missing[0][1]
        notes.append(f"{_pages_text(_runs(here))} of {of} of /spend/logs/ui{rows}: {_pages_text(missing)} "
                     f"{'are' if many else 'is'} not in this file")
    if not any(n for *_, n in pages):
        notes.append(f"{_pages_text(_runs(here))} of /spend/logs/ui {'hold' if len(here) > 1 else 'holds'} "
                     f"no rows{rows}")
    return notes


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 5] -> [(1, 3), (5, 5)] (numbers sorted)."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return [(a, b) for a, b in runs]


def _pages_text(runs: list[tuple[int, int]]) -> str:
    """[(1, 3), (5, 5)] -> 'pages 1-3, 5'; [(2, 2)] -> 'page 2'."""
    one = len(runs) == 1 and runs[0][0] == runs[0][1]
    return ("page " if one else "pages ") + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _datadog_unwrapped(relation: str) -> str:
    """Datadog log items carry the payload as a JSON string in `message`; look through them."""
    msg = "json_extract_string(doc, '$.message')"
    return f"""(SELECT record_no, raw,
        CASE WHEN NOT dd THEN doc WHEN ok THEN {msg} END AS doc,
        CASE WHEN dd AND NOT ok THEN 'Datadog message is not a JSON object' ELSE bad END AS bad
      FROM (SELECT *, dd AND coalesce(json_valid({msg}) AND starts_with(ltrim({msg}), '{{'), false) AS ok
        FROM (SELECT *, coalesce(raw LIKE '%"ddsource"%' AND json_exists(doc, '$.ddsource')
                                 AND json_type(doc, '$.message') = 'VARCHAR', false) AS dd FROM {relation})))"""


def _fields_for(kind: str, datadog: bool = False) -> str:
    if kind == "payload":
        records = read.records_relation()
        return fields.payload_sql(_datadog_unwrapped(records) if datadog else records)
    if kind == "flat":
        return fields.flat_sql(read.records_relation())
    columns = set(fields.SPENDLOGS_COLUMNS)
    return fields.spendlogs_sql(f"({fields.spendlogs_columns_sql(read.records_relation())})", columns)


SOURCE = LiteLLMSource()
