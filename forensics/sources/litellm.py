"""LiteLLM proxy logs: SpendLogs exports (CSV, JSON, NDJSON), StandardLoggingPayload callbacks, flat spend rows.

Every format loads into llm_requests keyed by request_id, so one request stays one row across files.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from forensics.netaddr import TrustedProxies
from forensics.sources import litellm_fields as fields
from forensics.sources import litellm_merge as merge
from forensics.sources import litellm_read as read
from forensics.sources.interface import LoadContext, LoadResult

SPENDLOGS_CSV = "litellm.spendlogs_csv"
SPENDLOGS_JSON = "litellm.spendlogs_json"
SPENDLOGS_NDJSON = "litellm.spendlogs_ndjson"
PAYLOAD_NDJSON = "litellm.payload_ndjson"
PAYLOAD_ARRAY = "litellm.payload_json_array"
PAYLOAD_OBJECT = "litellm.payload_object"
FLAT = "litellm.flat_spend"

FORMATS = {
    SPENDLOGS_CSV: "spendlogs", SPENDLOGS_JSON: "spendlogs", SPENDLOGS_NDJSON: "spendlogs",
    PAYLOAD_NDJSON: "payload", PAYLOAD_ARRAY: "payload", PAYLOAD_OBJECT: "payload", FLAT: "flat",
}
_BY_SHAPE = {  # (record kind, file shape) -> format id
    ("spendlogs", "array"): SPENDLOGS_JSON, ("spendlogs", "lines"): SPENDLOGS_NDJSON,
    ("spendlogs", "object"): SPENDLOGS_NDJSON,
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
        return _BY_SHAPE[(kind, "object")] if kind else None
    if text[0] == "[":
        if isinstance(whole, list):
            first = next((v for v in whole if isinstance(v, dict)), None)
            kind = record_kind(first) if first is not None else None
        else:
            body = text[1:].lstrip()
            try:
                kind = record_kind(json.JSONDecoder().raw_decode(body)[0])
            except (ValueError, RecursionError):
                kind = _kind_from_text(body)
        return _BY_SHAPE[(kind, "array")] if kind else None
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
    return PAYLOAD_OBJECT if kind == "payload" else None


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
    formats = tuple(FORMATS)

    def detect(self, sample: bytes, path: Path, options=None) -> str | None:
        text = sample.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
        if not text:
            return None
        if text[0] in "[{":
            return _detect_json(text)
        # a CSV loads with its header on the first line: the loader reads it there (blank lines before it: no CSV)
        return _detect_csv(sample.decode("utf-8", "replace").lstrip("\ufeff"))

    def load(self, ctx: LoadContext, fmt: str) -> LoadResult:
        if fmt not in FORMATS:
            raise ValueError(f"unknown LiteLLM format {fmt!r}")
        con, kind = ctx.con, FORMATS[fmt]
        trusted = TrustedProxies(ctx.options.trusted_proxies)
        records = quarantined = 0
        notes: list[str] = []

        def run(relation_fields: str, raw_sql: str, n: int) -> None:
            nonlocal records, quarantined
            records += n
            merge.stage(con, relation_fields, fmt, ctx.file_id)
            quarantined += merge.finish(con, ctx.file_id, fmt, raw_sql, trusted)

        if fmt == SPENDLOGS_CSV:
            n, rejected, columns = read.stage_csv(con, ctx.path, fields.SPENDLOGS_COLUMNS, ctx.file_id, notes)
            records += rejected
            quarantined += rejected
            run(fields.spendlogs_sql("_ll_src", columns), read.CSV_RAW_SQL, n - rejected)
        else:
            for n in self._json_batches(ctx, fmt, notes):
                # looking through Datadog items costs a slower statement: only when some record may be one
                (datadog,) = con.execute(
                    "SELECT count(*) FROM _ll_rec WHERE bad IS NULL AND contains(raw, '\"ddsource\"')"
                ).fetchone() if kind == "payload" else (0,)
                run(_fields_for(kind, bool(datadog)), read.JSON_RAW_SQL, n)
        (own,) = con.execute("SELECT count(*) FROM llm_requests WHERE file_id = ?", [ctx.file_id]).fetchone()
        # after a failure the driver rolls back, which drops these too
        for table in ("_ll_rec", "_ll_src", "_ll_csv", "_ll_norm", "_ll_ip"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        loaded = records - quarantined
        return LoadResult(records, loaded, quarantined, merged=loaded - int(own), notes=tuple(notes))

    @staticmethod
    def _json_batches(ctx: LoadContext, fmt: str, notes: list[str]):
        """Stage the file's JSON records into _ll_rec, one batch at a time; yields each batch's record count."""
        if fmt == PAYLOAD_OBJECT:
            n = read.stage_object(ctx.con, ctx.path, notes)
            if n is not None:
                yield n
                return
        if read.first_char(ctx.path) == "[":
            yield read.stage_json_values(ctx.con, ctx.path, notes)
        else:
            yield from read.line_batches(ctx.con, ctx.path, notes)


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
