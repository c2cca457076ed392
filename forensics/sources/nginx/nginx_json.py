"""nginx JSON access logs: one object a line, field names chosen by the operator, mapped onto the staging fields.

`escape=json` lines are valid JSON. With default escaping nginx writes \\xHH, which JSON does not allow: such a line
is repaired by escaping the backslash, so each \\xHH survives as text and is then decoded like in the text formats.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from forensics.sources.nginx.nginx_formats import FIELD_OF_VARIABLE, STAGING_FIELDS, sql_str

# normalised key -> staging field; exact nginx variable names first, then the usual names operators pick
_KEY_FIELDS = {
    **FIELD_OF_VARIABLE,
    "timestamp": "time", "time": "time", "ts": "time", "datetime": "time", "date": "time",
    "remote_ip": "remote_addr", "client": "remote_addr", "client_addr": "remote_addr", "ip": "remote_addr",
    "user": "remote_user", "method": "method", "path": "uri", "url": "uri", "protocol": "protocol",
    "status_code": "status", "response_status": "status", "bytes": "body_bytes", "body_bytes": "body_bytes",
    "request_size": "request_length", "referrer": "referer", "http_referrer": "referer", "referer": "referer",
    "user_agent": "user_agent", "agent": "user_agent", "x_forwarded_for": "forwarded_for",
    "forwarded_for": "forwarded_for", "xff": "forwarded_for", "vhost": "host", "upstream_time": "upstream_time",
    "urt": "upstream_time", "rt": "request_time", "x_request_id": "request_id",
    "http_x_request_id": "request_id", "litellm_call_id": "litellm_call_id", "x_litellm_call_id": "litellm_call_id",
}
_TIME_LOCAL = re.compile(r"^\d{1,2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}$")
_NUMBER = re.compile(r"^\d{9,}(?:\.\d+)?$")
_HEX_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")
# with default escaping every backslash nginx wrote starts a \\xHH escape (it writes '\\' itself as \\x5C)
REPAIR_SQL = "replace({0}, '\\x', '\\\\x')"


def repair(line: str) -> str:
    """Default-escaped nginx JSON made valid JSON: each \\xHH becomes the JSON string text \\xHH."""
    return line.replace("\\x", "\\\\x")


def loads(line: str) -> tuple[dict | None, bool]:
    """(object, repaired) for one line; (None, False) when it is not a JSON object even after repair."""
    for text, repaired in ((line, False), (repair(line), True)):
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):     # RecursionError: nested deeper than Python parses
            continue
        return (obj, repaired) if isinstance(obj, dict) else (None, False)
    return None, False


def _flatten(obj: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    out: dict[tuple[str, ...], object] = {}
    for k, v in obj.items():
        if isinstance(v, dict) and len(prefix) < 16:     # an access log's fields sit near the top
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _normalise(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", key.lower().lstrip("@$")).strip("_")


def _time_field(values: list[str]) -> str:
    if any(_TIME_LOCAL.match(v) for v in values):
        return "time_local"
    if any(_NUMBER.match(v) for v in values):
        return "msec"
    return "time_iso8601"


@dataclass(frozen=True)
class JsonFormat:
    """The JSON paths of one file's objects mapped onto staging fields."""

    paths: tuple[tuple[str, tuple[str, ...]], ...]     # (staging field, key path)
    default_escaping: bool                              # values hold nginx \xHH escapes

    @property
    def fields(self) -> set[str]:
        return {f for f, _ in self.paths}

    def extract_sql(self, source: str) -> str:
        """SELECT line_no, line, ok, <staging fields> FROM `source`; lines that are not JSON objects are not ok."""
        json_paths = [sql_str("$." + ".".join(json.dumps(k) for k in path)) for _, path in self.paths]
        index = {field: i for i, (field, _) in enumerate(self.paths, start=1)}
        cols = ",\n       ".join(
            f"j[{index[f]}] AS {f}" if f in index else f"NULL::VARCHAR AS {f}" for f in STAGING_FIELDS
        )
        text = REPAIR_SQL.format("line")
        return (f"SELECT line_no, line, j IS NOT NULL AS ok,\n       {cols}\n"
                f"FROM (SELECT line_no, line, CASE WHEN starts_with(src, '{{') AND json_valid(src) "
                f"THEN json_extract_string(src, [{', '.join(json_paths)}]) END AS j "
                f"FROM (SELECT line_no, line, CASE WHEN json_valid(line) THEN line ELSE {text} END AS src "
                f"FROM {source}))")

    def parse(self, line: str) -> dict[str, str | None] | None:
        """The staging fields of one line, or None when it is not a JSON object (the slow path)."""
        obj, _ = loads(line)
        if obj is None:
            return None
        flat = _flatten(obj)
        out = {}
        for field, path in self.paths:
            v = flat.get(path)
            out[field] = None if v is None else v if isinstance(v, str) else json.dumps(v)
        return out


def infer(objects: list[dict], default_escaping: bool) -> JsonFormat | None:
    """Map the keys seen in sample objects onto staging fields; None when they do not look like an access log."""
    keys: dict[tuple[str, ...], list[str]] = {}
    for obj in objects:
        for path, v in _flatten(obj).items():
            if v is not None:
                keys.setdefault(path, []).append(v if isinstance(v, str) else json.dumps(v))
    chosen: dict[str, tuple[tuple[str, ...], int]] = {}
    for path, values in keys.items():
        norm = _normalise(path[-1])
        field = _KEY_FIELDS.get(norm)
        if field is None:
            continue
        if field == "time" or field in ("time_local", "time_iso8601", "msec"):
            field = _time_field(values)
        rank = 0 if norm in FIELD_OF_VARIABLE else 1
        if field not in chosen or rank < chosen[field][1]:
            chosen[field] = (path, rank)
    for weaker, stronger in (("time_local", "msec"), ("time_iso8601", "msec"), ("time_local", "time_iso8601")):
        if weaker in chosen and stronger in chosen:    # $msec keeps the milliseconds the others drop
            del chosen[weaker]
    has_request = "request" in chosen or "uri" in chosen
    has_time = any(t in chosen for t in ("time_local", "time_iso8601", "msec"))
    if "status" not in chosen or not has_request or not (has_time or "remote_addr" in chosen):
        return None
    return JsonFormat(tuple((f, p) for f, (p, _) in chosen.items()), default_escaping)


def from_template(template: str, default_escaping: bool = False) -> JsonFormat:
    """A JSON log_format template ('{"ts":"$time_iso8601",...}') read as the key -> variable map it defines."""
    paths = []
    for key, var in re.findall(r'"([^"]+)"\s*:\s*"?\$\{?(\w+)', template):
        field = FIELD_OF_VARIABLE.get(var)
        if field and field not in {f for f, _ in paths}:
            paths.append((field, (key,)))
    return JsonFormat(tuple(paths), default_escaping)
