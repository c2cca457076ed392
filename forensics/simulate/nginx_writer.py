"""nginx access logs in the usual formats, rotated daily like logrotate (access.log, .1, .2.gz, ...)."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from forensics.netaddr import TrustedProxies
from forensics.simulate.catalog import COLLECTED_AT, NETWORK, SERVER_TZ, US
from forensics.simulate.litellm_writer import gzip_bytes
from forensics.simulate.noise import EVENT_COLUMNS

FORMATS = ("json", "combined", "main", "timings", "ingress")
# every format a randomized deployment may write: the built-ins, JSON with nginx's default escaping, and a custom
# log_format (its directive drawn per deployment, see deployment.custom_log_format)
ALL_FORMATS = FORMATS + ("json_default", "custom")
ROTATIONS = {"daily": (1, 14), "weekly": (7, 4), "none": (None, 1)}    # days per file, files kept
LOG_FORMATS = {
    "json": "log_format json_analytics escape=json '{\"time_iso8601\":\"$time_iso8601\",\"msec\":\"$msec\","
            "\"remote_addr\":\"$remote_addr\",\"remote_user\":\"$remote_user\",\"request\":\"$request\","
            "\"status\":\"$status\",\"body_bytes_sent\":\"$body_bytes_sent\",\"request_length\":\"$request_length\","
            "\"http_referer\":\"$http_referer\",\"http_user_agent\":\"$http_user_agent\","
            "\"http_x_forwarded_for\":\"$http_x_forwarded_for\",\"request_time\":\"$request_time\","
            "\"upstream_response_time\":\"$upstream_response_time\",\"upstream_addr\":\"$upstream_addr\","
            "\"upstream_status\":\"$upstream_status\",\"request_id\":\"$request_id\","
            "\"upstream_http_x_litellm_call_id\":\"$upstream_http_x_litellm_call_id\"}';",
    "combined": "log_format combined '$remote_addr - $remote_user [$time_local] \"$request\" $status "
                "$body_bytes_sent \"$http_referer\" \"$http_user_agent\"';",
    "main": "log_format main '$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent "
            "\"$http_referer\" \"$http_user_agent\" \"$http_x_forwarded_for\"';",
    "timings": "log_format timings '$remote_addr - $remote_user [$time_local] \"$request\" $status "
               "$body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_time $upstream_response_time "
               "$upstream_addr $upstream_status $request_id';",
    "ingress": "log_format upstreaminfo '$remote_addr - $remote_user [$time_local] \"$request\" $status "
               "$body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_length $request_time "
               "[$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr "
               "$upstream_response_length $upstream_response_time $upstream_status $req_id';",
    "json_default": "log_format json_default '{\"time_local\":\"$time_local\",\"remote_addr\":\"$remote_addr\","
                    "\"request\":\"$request\",\"status\":\"$status\",\"body_bytes_sent\":\"$body_bytes_sent\","
                    "\"request_time\":\"$request_time\",\"http_referer\":\"$http_referer\","
                    "\"http_user_agent\":\"$http_user_agent\",\"http_x_forwarded_for\":\"$http_x_forwarded_for\","
                    "\"upstream_addr\":\"$upstream_addr\",\"upstream_response_time\":\"$upstream_response_time\","
                    "\"upstream_http_x_litellm_call_id\":\"$upstream_http_x_litellm_call_id\"}';",
}
INGRESS_UPSTREAM = "default-litellm-4000"
INGRESS_POD = "10.244.1.17:4000"
ROTATE_KEEP = 14
JSON_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


_JSON_SPECIAL = re.compile(r'["\\\x00-\x1f]')
_TEXT_SPECIAL = re.compile(r'[^\x20-\x7e]|["\\]')


def esc_json(text: str) -> str:
    """escape=json: quote, backslash and bytes < 0x20 escaped; bytes >= 0x80 are written raw."""
    return _JSON_SPECIAL.sub(lambda m: JSON_ESC.get(m.group(0)) or f"\\u{ord(m.group(0)):04x}", text)


def esc_text(text: str) -> str:
    """nginx default escaping: '"', '\\' and bytes outside 32..126 become \\xHH."""
    return _TEXT_SPECIAL.sub(lambda m: f"\\x{ord(m.group(0)):02X}", text)


def from_requests(frame: pd.DataFrame) -> pd.DataFrame:
    """nginx's view of every request LiteLLM handled (one line each, joined by the call id)."""
    ev = pd.DataFrame({
        "t_recv": frame["t_recv"], "t_log": frame["t_log"], "remote_addr": frame["remote_addr"], "remote_user": "",
        "request": "POST " + frame["path"] + " HTTP/1.1", "status": frame["http_status"],
        "bytes_sent": frame["bytes_sent"], "request_length": frame["request_length"], "referer": "",
        "ua": frame["ua"], "xff": frame["xff_in"], "upstream_addr": NETWORK.litellm_upstream,
        "upstream_status": frame["http_status"], "upstream_us": 0, "upstream_length": frame["bytes_sent"],
        "nginx_rid": frame["nginx_rid"], "call_id": frame["call_id"],
    })
    span = (frame["t_log"] - frame["t_recv"]).to_numpy()
    ev["upstream_us"] = span - np.minimum(span // 4, 600 + (frame["request_length"].to_numpy() % 1900))
    return ev[EVENT_COLUMNS]


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _times(ev: pd.DataFrame, tz: str = SERVER_TZ) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """$time_iso8601, $time_local, $msec, $request_time, $upstream_response_time of every event."""
    log_ms = ev["t_log"].to_numpy() // 1000
    sec = log_ms // 1000
    off = utc_offsets(sec, tz)
    stamp = np.datetime_as_string((sec + off).astype("datetime64[s]")).tolist()
    zone = [f"{'+' if o >= 0 else '-'}{abs(o) // 3600:02d}{abs(o) % 3600 // 60:02d}" for o in off.tolist()]
    iso = [f"{s}{z[:3]}:{z[3:]}" for s, z in zip(stamp, zone)]
    tlocal = [f"{s[8:10]}/{MONTHS[int(s[5:7]) - 1]}/{s[:4]}:{s[11:]} {z}" for s, z in zip(stamp, zone)]
    msec = [f"{m // 1000}.{m % 1000:03d}" for m in log_ms.tolist()]
    rt = [f"{x / 1000:.3f}" for x in (log_ms - ev["t_recv"].to_numpy() // 1000).tolist()]
    up = ev["upstream_us"].to_numpy()
    urt = [f"{u // 1000 / 1000:.3f}" if u >= 0 else "" for u in up.tolist()]
    return iso, tlocal, msec, rt, urt


def render(ev: pd.DataFrame, fmt: str, tz: str = SERVER_TZ, log_format: str | None = None) -> list[str]:
    """One log line per event, as str with raw bytes kept as chars U+0080..U+00FF.

    fmt json_default and custom are written from their log_format directive (`log_format`, default: the built-in
    json_default one) by render_template."""
    if fmt in ("json_default", "custom"):
        return render_template(ev, log_format or LOG_FORMATS[fmt], tz)
    trusted = TrustedProxies(("10.0.0.0/8",))
    iso, tlocal, msec, rts, urts = _times(ev, tz)
    cols = {c: ev[c].to_numpy(dtype=object).tolist() for c in EVENT_COLUMNS}
    out = []
    for i in range(len(ev)):
        remote, user, request, ua, xff = (cols["remote_addr"][i], cols["remote_user"][i], cols["request"][i],
                                          cols["ua"][i], cols["xff"][i])
        referer, upstream_addr, rid = cols["referer"][i], cols["upstream_addr"][i], cols["nginx_rid"][i]
        status, sent, length = cols["status"][i], cols["bytes_sent"][i], cols["request_length"][i]
        rt, urt = rts[i], urts[i]
        proxied = bool(urt) and bool(upstream_addr)
        ups = str(cols["upstream_status"][i]) if proxied else ""
        if fmt == "json":
            out.append(
                f'{{"time_iso8601":"{iso[i]}","msec":"{msec[i]}","remote_addr":"{remote}",'
                f'"remote_user":"{esc_json(user)}","request":"{esc_json(request)}","status":"{status}",'
                f'"body_bytes_sent":"{sent}","request_length":"{length}","http_referer":"{esc_json(referer)}",'
                f'"http_user_agent":"{esc_json(ua)}","http_x_forwarded_for":"{esc_json(xff)}",'
                f'"request_time":"{rt}","upstream_response_time":"{urt if proxied else ""}",'
                f'"upstream_addr":"{upstream_addr if proxied else ""}","upstream_status":"{ups}",'
                f'"request_id":"{rid}","upstream_http_x_litellm_call_id":"{cols["call_id"][i]}"}}')
            continue
        addr = remote
        if fmt == "ingress":     # use-forwarded-headers with proxy-real-ip-cidr 10.0.0.0/8: realip already ran
            addr = trusted.client(xff or None, remote)
        head = (f'{addr} - {esc_text(user) if user else "-"} [{tlocal[i]}] "{esc_text(request)}" {status} {sent} '
                f'"{esc_text(referer) if referer else "-"}" "{esc_text(ua) if ua else "-"}"')
        if fmt == "combined":
            out.append(head)
        elif fmt == "main":
            out.append(f'{head} "{esc_text(xff) if xff else "-"}"')
        elif fmt == "timings":
            out.append(f"{head} {rt} {urt if proxied else '-'} {upstream_addr if proxied else '-'} "
                       f"{ups or '-'} {rid}")
        else:
            upstream = INGRESS_UPSTREAM if proxied else ""
            ulen = str(cols["upstream_length"][i]) if proxied else "-"
            out.append(f"{head} {length} {rt} [{upstream}] [] {INGRESS_POD if proxied else '-'} "
                       f"{ulen} {urt if proxied else '-'} {ups or '-'} {rid}")
    return out


def utc_offsets(sec: np.ndarray, tz: str = SERVER_TZ) -> np.ndarray:
    """The server's UTC offset (seconds) at each epoch second; offsets only change on the quarter hour."""
    zone = ZoneInfo(tz)
    quarters = sec // 900
    table = {q: int(datetime.fromtimestamp(q * 900, tz=zone).utcoffset().total_seconds())
             for q in np.unique(quarters).tolist()}
    return np.array([table[q] for q in quarters.tolist()], dtype=np.int64)


def rotation_day(t_log: np.ndarray, tz: str = SERVER_TZ) -> np.ndarray:
    """Local calendar day of each line (logrotate runs at local midnight)."""
    sec = np.asarray(t_log) // US
    return (sec + utc_offsets(sec, tz)) // 86400


def write(frame: pd.DataFrame, noise: pd.DataFrame, out_dir: Path, fmt: str = "json", *, tz: str = SERVER_TZ,
          collected_at: int = COLLECTED_AT, rotation: str = "daily", log_format: str | None = None) -> dict[str, int]:
    """Write nginx/access.log (today), access.log.1 (the period before, not compressed: delaycompress), older
    .N.gz; rotation daily (14 kept, the default), weekly (4 kept) or none (one file)."""
    if fmt not in ALL_FORMATS:
        raise ValueError(f"nginx_format must be one of {ALL_FORMATS}")
    ev = pd.concat([from_requests(frame), noise[EVENT_COLUMNS]], ignore_index=True)
    ev = ev.sort_values(["t_log", "nginx_rid"], kind="stable").reset_index(drop=True)
    lines = np.array(render(ev, fmt, tz, log_format), dtype=object)
    days_per_file, keep = ROTATIONS[rotation]
    if days_per_file is None:
        day = np.zeros(len(ev), dtype=np.int64)
        today = 0
    else:
        day = rotation_day(ev["t_log"].to_numpy(), tz) // days_per_file
        today = rotation_day(np.array([collected_at - 1]), tz)[0] // days_per_file
    folder = out_dir / "nginx"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for d in np.unique(day):
        age = int(today - d)
        if age >= keep:
            continue
        name = "access.log" + ("" if age == 0 else f".{age}") + (".gz" if age >= 2 else "")
        data = "".join(line + "\n" for line in lines[day == d]).encode("latin-1")
        (folder / name).write_bytes(gzip_bytes(data) if age >= 2 else data)
        written[f"nginx/{name}"] = int((day == d).sum())
    return written


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def log_format_body(directive: str) -> str:
    """The format string of a `log_format name [escape=..] '...' '...';` directive (adjacent strings joined)."""
    parts = re.findall(r"'((?:[^'\\]|\\.)*)'", directive)
    return "".join(parts).replace('\\"', '"') if parts else directive


def template_values(ev: pd.DataFrame, tz: str) -> dict[str, list[str]]:
    """Each nginx variable a log_format may name, per event, escaped as nginx's default escaping writes it ('-' for
    a value that is not there: no header, no upstream)."""
    iso, tlocal, msec, rts, urts = _times(ev, tz)
    cols = {c: ev[c].to_numpy(dtype=object).tolist() for c in EVENT_COLUMNS}
    proxied = [bool(u) and bool(a) for u, a in zip(urts, cols["upstream_addr"])]
    text = lambda v: esc_text(v) if v else "-"            # noqa: E731
    n = len(ev)
    return {
        "remote_addr": cols["remote_addr"], "remote_user": [text(v) for v in cols["remote_user"]],
        "time_local": tlocal, "time_iso8601": iso, "msec": msec,
        "request": [esc_text(v) for v in cols["request"]], "status": [str(v) for v in cols["status"]],
        "body_bytes_sent": [str(v) for v in cols["bytes_sent"]],
        "bytes_sent": [str(v + 180 if v else 160) for v in cols["bytes_sent"]],
        "request_length": [str(v) for v in cols["request_length"]],
        "http_referer": [text(v) for v in cols["referer"]], "http_user_agent": [text(v) for v in cols["ua"]],
        "http_x_forwarded_for": [text(v) for v in cols["xff"]], "request_time": rts,
        "upstream_response_time": [u if p else "-" for u, p in zip(urts, proxied)],
        "upstream_addr": [a if p else "-" for a, p in zip(cols["upstream_addr"], proxied)],
        "upstream_status": [str(s) if p else "-" for s, p in zip(cols["upstream_status"], proxied)],
        "request_id": cols["nginx_rid"], "upstream_http_x_litellm_call_id": [text(v) for v in cols["call_id"]],
        "host": [NETWORK.server_name] * n, "server_name": [NETWORK.server_name] * n, "server_port": ["443"] * n,
        "scheme": ["https"] * n,
    }


def render_template(ev: pd.DataFrame, directive: str, tz: str = SERVER_TZ) -> list[str]:
    """Lines of any log_format directive with default escaping (values as nginx writes them, \\xHH escapes)."""
    body = log_format_body(directive)
    values = template_values(ev, tz)
    pieces, names, pos = [], [], 0
    for m in _VAR.finditer(body):
        pieces.append(body[pos:m.start()])
        names.append(m.group(1) or m.group(2))
        pos = m.end()
    tail = body[pos:]
    unknown = [n for n in names if n not in values]
    if unknown:
        raise ValueError(f"log_format variables the simulator cannot write: {unknown}")
    columns = [values[n] for n in names]
    out = []
    for row in zip(*columns) if columns else [()] * len(ev):
        out.append("".join(p + v for p, v in zip(pieces, row)) + tail)
    return out
