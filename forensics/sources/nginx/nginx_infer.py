"""An access log's format inferred from a sample of its lines, and why a file matches no format.

Inference: every line must start with the combined core (`$remote_addr - $remote_user [$time_local] "$request"
$status $body_bytes_sent`, a vhost or an address list allowed in front), its time as `[$time_local]` or, where the
operator swapped the variable, `[$time_iso8601]`, `$time_iso8601`, `[$msec]` or `$msec` (nginx.md: the same instant
written `17/Mar/2025:02:00:04 +0100`, `2025-03-17T02:00:04+01:00`, `1742173204.123`); what follows is cut into
tokens (quoted,
[bracketed], bare; `0.1, 0.2` and `a : b` lists are one token), each typed (number, number list, address list,
UUID, 32-hex request id, `-`, word, quoted text, quoted number, quoted address list; `name=value` and
`name="value"` pairs, as in nginx's own `upstream_time` example `rt=$request_time uct="$upstream_connect_time" ...`,
also glued to the quoted field before them where the log_format has no space there). A pair's column is named by
its key when the key is a well-known short name of a variable (`rt`, `urt`, `ua`, `us`, ...) and its values fit that
variable; any other pair is parsed and left in the line. The column types across the sample make a
log_format string, loaded like any other in one SQL pass. Columns whose type changes from line to line, or lines
that do not end in the same number of fields, are refused: guessing there would put values in the wrong columns.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from forensics.sources.nginx.nginx_formats import CLF, COMBINED, LogFormat, dequote_head

_LOCAL_TIME = "[$time_local]"
# the core's time as written in the log_format: $time_local first (the built-in formats'), then its replacements; a
# time of none of these forms (a `map`-rewritten "2025-03-17 02:00:04" with no offset) gives no core: nothing to
# infer, since no zone would make it UTC
TIMES = (_LOCAL_TIME, "[$time_iso8601]", "$time_iso8601", "[$msec]", "$msec")


def _core(time: str) -> re.Pattern:
    core = LogFormat(CLF.replace(_LOCAL_TIME, time), allow_prefix=True).regex(strict=True).pattern
    return re.compile(core[:-1] + r"(?P<rest>(?: .*)?)$")


CORES = {time: _core(time) for time in TIMES}
CORE = CORES[_LOCAL_TIME]
# a quote left open (a cut line, a raw newline in a value) is no token: that line takes no part in the inference
_TOKEN = re.compile(r' ("(?:[^"\\]|\\.)*"|\[[^\]]*\]|[^ ",\[]+(?:(?:, | : )[^ ",]+)*(?= |$)|[^ "]+)')
# name=value, name="value": a space before it, or none after a quoted field (`"$http_user_agent"rt=$request_time`)
_PAIR = re.compile(r'( ?)([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^ "]*?(?:(?:, | : )[^ ",]+)*)(?= |$)')
# a pair's key as operators abbreviate the variable (nginx's upstream_time example: rt, uct, uht, urt; others: ua,
# us, ut, ul, rid); only these name a column, and only when their values fit the variable
PAIR_KEYS = {
    "request_time": ("rt", "request_time", "req_time", "reqtime", "rtime", "time_taken", "duration"),
    "upstream_response_time": ("urt", "ut", "upstream_response_time", "upstream_time", "ups_time", "upstream_rt"),
    "upstream_addr": ("ua", "upstream_addr", "upstream", "ups_addr", "upstream_address"),
    "upstream_status": ("us", "upstream_status", "ups_status", "ustatus"),
    "request_id": ("rid", "request_id", "req_id", "reqid", "x_request_id"),
    "upstream_http_x_litellm_call_id": ("call_id", "litellm_call_id", "x_litellm_call_id"),
    "http_x_forwarded_for": ("xff", "x_forwarded_for", "http_x_forwarded_for", "forwarded_for"),
}
_KEY_VARIABLE = {key: var for var, keys in PAIR_KEYS.items() for key in keys}
# the value kinds each named variable takes (a pair's value, its quotes taken off)
_PAIR_FITS = {"request_time": {"-", "int", "float"}, "upstream_response_time": {"-", "int", "float", "numlist"},
              "upstream_addr": {"-", "addr"}, "upstream_status": {"-", "int", "numlist"},
              "request_id": {"-", "hex", "uuid"}, "upstream_http_x_litellm_call_id": {"-", "uuid"},
              "http_x_forwarded_for": {"-", "addr"}}
_ADDR = r"(?:\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?|\[?[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\]?(?::\d+)?|unix:[^ ,]*)"
_KINDS = [
    ("-", re.compile(r"-")),
    ("int", re.compile(r"\d+")),
    ("msec", re.compile(r"1\d{9}\.\d{3}")),          # $msec again (seconds since 1970, 2001-2033): no duration
    ("float", re.compile(r"\d+\.\d+")),
    ("numlist", re.compile(r"(?:\d+(?:\.\d+)?|-)(?:(?:, | : )(?:\d+(?:\.\d+)?|-))+")),
    ("uuid", re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")),
    ("hex", re.compile(r"[0-9a-f]{32}")),
    ("addr", re.compile(rf"{_ADDR}(?:(?:, | : ){_ADDR})*")),
]
_KIND = dict(_KINDS)
_STATUS = re.compile(r"(?:[1-5]\d\d|-)(?:(?:, | : )(?:[1-5]\d\d|-))*")
# a column's type from the kinds its values showed: the first rule whose allowed kinds hold them all
_COLUMN_RULES = [
    ("dash", {"-"}),
    ("msec", {"-", "msec"}),
    ("int", {"-", "int"}), ("float", {"-", "int", "float"}), ("numlist", {"-", "int", "float", "numlist"}),
    ("uuid", {"-", "uuid"}), ("hex", {"-", "hex"}), ("addr", {"-", "addr"}),
    ("word", {"-", "word", "addr", "hex", "uuid"}),
    ("bracket", {"bracket"}),
    ("quoted", {"q-", "qaddr", "qtext", "quuid", "qfloat", "qnumlist"}),
]
_SHOWN = {"-": "-", "int": "a number", "msec": "a Unix time", "float": "a number", "numlist": "a number list", "uuid": "a UUID",
          "hex": "a hex id", "addr": "an address", "word": "a word", "bracket": "a [bracketed] value",
          "q-": 'a quoted "-"', "qaddr": "a quoted address list", "qtext": "a quoted string",
          "quuid": "a quoted UUID", "qfloat": "a quoted number", "qnumlist": "a quoted number list"}


def _shown(kind: str) -> str:
    if kind.startswith("pair:"):
        head, value = kind[len("pair:"):].rsplit(":", 1)
        return f"{head.strip()} with {_SHOWN[value]}"
    return _SHOWN[kind]


def token_kind(tok: str) -> str:
    if tok.startswith("\0"):                         # a name=value pair (trailing_tokens): glue, key, quote, value
        glue, key, value = tok[1:].split("\0")
        quote = '"' if value.startswith('"') else ""
        return f"pair:{glue}{key}={quote}:{_value_kind(value)}"
    if tok.startswith('"'):
        v = tok[1:-1]
        if v in ("-", ""):
            return "q-"
        if re.fullmatch(rf"{_ADDR}(?:, ?{_ADDR})*", v):
            return "qaddr"
        if _KIND["float"].fullmatch(v):
            return "qfloat"                          # "$request_time" quoted: always with its 3 decimals
        if _KIND["numlist"].fullmatch(v):
            return "qnumlist"
        return "quuid" if _KIND["uuid"].fullmatch(v) else "qtext"
    if tok.startswith("["):
        return "bracket"
    return next((k for k, rx in _KINDS if rx.fullmatch(tok)), "word")


def _value_kind(value: str) -> str:
    """A pair's value's kind with its quotes off (`""` and `-` alike: nothing)."""
    v = value[1:-1] if value.startswith('"') else value
    return "-" if v in ("", "-") else next((k for k, rx in _KINDS if rx.fullmatch(v)), "word")


def trailing_tokens(rest: str) -> list[str] | None:
    """The fields after $body_bytes_sent. A name=value pair is "\0<glue>\0<name>\0<value>" (glue "" where it
    follows a quoted field with no space), so that its column's kind holds its key and its spacing."""
    out, pos = [], 0
    while pos < len(rest):
        p = _PAIR.match(rest, pos)
        if p and (p.group(1) or out and out[-1].endswith('"')):
            out.append(f"\0{p.group(1)}\0{p.group(2)}\0{p.group(3)}")
            pos = p.end()
            continue
        m = _TOKEN.match(rest, pos)
        if m is None:
            return None
        out.append(m.group(1))
        pos = m.end()
    return out


@dataclass(frozen=True)
class Inference:
    text: str | None            # the inferred log_format, or None
    reason: str = ""            # why not, when text is None
    lines: int = 0              # sample lines the inferred format (with its fallbacks) takes
    custom: int = 0             # of which lines with fields after the combined ones (the format's own lines)


SAMPLE_BYTES = 1 << 16       # ingest's detection sample
SAMPLE_LINES = 200           # the lines detection looks at (nginx_detect._sample_lines)


def inference_sample(lines) -> list[tuple[int, str]]:
    """The (line_no, line) a loader infers a file's format from: the first ones that are not blank, as many as
    detection saw in its sample (so that loading infers what detection did, and a batch of small files what each
    file alone would)."""
    sample, size = [], 0
    for n, ln in lines:
        size += len(ln.encode()) + 1
        if size > SAMPLE_BYTES or len(sample) == SAMPLE_LINES:
            break
        if ln.strip():
            sample.append((n, ln))
    return sample


def infer(lines: list[tuple[int, str]]) -> Inference:
    """The log_format of (line_no, line) sample lines beyond the built-in ones, or the reason there is none."""
    by_time: dict[str, list[tuple[int, list[str]]]] = {}
    core_only = 0
    for line_no, line in lines:
        head = dequote_head(line)
        time, m = next(((t, m) for t, rx in CORES.items() if (m := rx.match(head))), (None, None))
        toks = trailing_tokens(m.group("rest")) if m else None
        if toks is None:
            continue
        if time == _LOCAL_TIME and (not toks or len(toks) == 2 and all(t.startswith('"') for t in toks)):
            core_only += 1                           # Common Log Format, or plain combined: a built-in format
        else:
            by_time.setdefault(time, []).append((line_no, toks))
    if not by_time:
        return Inference(None, "no line has fields after the combined ones" if core_only else
                         "no line starts like an nginx access-log line (address, user, [time] as $time_local, "
                         "$time_iso8601 or $msec, \"request\", status, bytes)")
    # the time most lines write; lines with another one are left to the fallbacks (combined, CLF) or quarantined
    time, rows = max(by_time.items(), key=lambda kv: len(kv[1]))
    width, n = Counter(len(t) for _, t in rows).most_common(1)[0]
    if n < 0.8 * len(rows):
        counts = sorted({len(t) for _, t in rows})
        return Inference(None, f"the lines end in {counts[0]} to {counts[-1]} fields after $body_bytes_sent, "
                                   "not one format")
    rows = [(ln, t) for ln, t in rows if len(t) == width]
    columns = []
    for c in range(width):
        seen: dict[str, int] = {}
        for line_no, toks in rows:
            seen.setdefault(token_kind(toks[c]), line_no)
        kind = next((name for name, allowed in _COLUMN_RULES if set(seen) <= allowed), None) or _pair_column(seen)
        if kind is None:
            (k1, l1), (k2, l2) = sorted(seen.items(), key=lambda kv: kv[1])[:2]
            return Inference(None, f"field {c + 1} after $body_bytes_sent holds {_shown(k1)} on line {l1} and "
                                   f"{_shown(k2)} on line {l2}: not one format")
        status_like = kind in ("int", "numlist") and all(_STATUS.fullmatch(t[c]) for _, t in rows)
        columns.append((kind, set(seen), status_like))
    columns = _request_time_first(columns, rows)
    text = _log_format(columns).replace(_LOCAL_TIME, time, 1)
    return Inference(text, lines=len(rows) + core_only, custom=len(rows))


def _pair_column(seen: dict[str, int]) -> str | None:
    """A column of name=value pairs with one key and one spacing: "pair:<glue><key>" ("pair: rt", "pair:rt")."""
    heads = {k.rsplit(":", 1)[0] for k in seen}
    return heads.pop() if len(heads) == 1 and all(k.startswith("pair:") for k in seen) else None


def _request_time_first(columns, rows):
    """Two columns of single times: $request_time is the larger (it includes the upstream's time); it is named
    first, so the column holding it is marked "float" and the other "numlist" (the upstream time)."""
    times = [c for c, (kind, _, status) in enumerate(columns) if kind == "float" and not status]
    if len(times) < 2:
        return columns
    a, b = times[:2]
    larger = sum(float(t[b]) > float(t[a]) for _, t in rows if "-" not in (t[a], t[b]))
    smaller = sum(float(t[b]) < float(t[a]) for _, t in rows if "-" not in (t[a], t[b]))
    upstream = a if larger > smaller else b
    out = list(columns)
    out[upstream] = ("numlist", columns[upstream][1], False)
    return out


def _log_format(columns) -> str:
    parts: list[str] = []                            # each with the space before it ("" for a glued pair)
    named: set[str] = set()

    def name(preferred: str, otherwise: str) -> str:
        if preferred in named:
            return otherwise
        named.add(preferred)
        return preferred

    # pairs first: their keys say what they hold, where the other columns' names are guessed from their values
    pairs = {c: _pair_variable(kind, seen) for c, (kind, seen, _) in enumerate(columns) if kind.startswith("pair:")}
    for c, var in pairs.items():
        if var and var not in named:
            named.add(var)
        else:
            pairs[c] = None
    start = 0
    if len(columns) >= 2 and columns[0][0] == columns[1][0] == "quoted":
        start = 2                                    # "$http_referer" "$http_user_agent"
    has_xff_list = any(kind == "quoted" and "qaddr" in seen for kind, seen, _ in columns[start:])
    for c, (kind, seen, status_like) in enumerate(columns[start:], start=start):
        if kind.startswith("pair:"):
            glue_key = kind[len("pair:"):]
            quoted = glue_key.endswith('"')
            values = {k.rsplit(":", 1)[1] for k in seen}
            var = pairs[c] or ("inferred_text" if quoted else
                               "inferred_list" if values & {"numlist", "addr"} else "inferred_token")
            parts.append(f"{glue_key}${var}" + ('"' if quoted else ""))
            continue
        if kind == "quoted" and seen <= {"q-", "quuid"} and "quuid" in seen:
            part = '"$' + name("upstream_http_x_litellm_call_id", "inferred_text") + '"'
        elif kind == "quoted" and seen <= {"q-", "qfloat"} and "qfloat" in seen:
            first = "request_time" if "request_time" not in named else "upstream_response_time"
            part = '"$' + name(first, "inferred_text") + '"'
        elif kind == "quoted" and seen <= {"q-", "qfloat", "qnumlist"} and "qnumlist" in seen:
            part = '"$' + name("upstream_response_time", "inferred_text") + '"'
        elif kind == "quoted":
            xff = "qaddr" in seen or not has_xff_list and seen == {"q-"}
            part = '"$' + (name("http_x_forwarded_for", "inferred_text") if xff else "inferred_text") + '"'
        elif kind == "bracket":
            part = "[$inferred_token]"
        elif kind in ("int", "numlist") and status_like:
            part = "$" + name("upstream_status", "inferred_list")
        elif kind == "float":
            first = "request_time" if "request_time" not in named else "upstream_response_time"
            part = "$" + name(first, "inferred_list")
        elif kind == "numlist":
            part = "$" + name("upstream_response_time", "inferred_list")
        elif kind == "int":
            part = "$inferred_number"
        elif kind == "uuid":
            part = "$" + name("upstream_http_x_litellm_call_id", "inferred_token")
        elif kind == "hex":
            part = "$" + name("request_id", "inferred_token")
        elif kind == "addr":
            part = "$" + name("upstream_addr", "inferred_list")
        else:                                        # dash, word: kept in the line, not in a column
            part = "$inferred_token"
        parts.append(" " + part)
    return (COMBINED if start else CLF) + "".join(parts)


def _pair_variable(kind: str, seen) -> str | None:
    """The variable a column of pairs holds: its key's (PAIR_KEYS), when every value fits that variable."""
    key = kind[len("pair:"):].strip().rstrip('"').rstrip("=").lower()
    var = _KEY_VARIABLE.get(key)
    return var if var and {k.rsplit(":", 1)[1] for k in seen} <= _PAIR_FITS[var] else None


# -- why a file matches no format ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mismatch:
    line_no: int
    field: str                  # "$status", or the literal text expected
    found: str                  # what the line holds there (cut short)
    matched: int                # how many of the format's tokens (literals and variables) the line matched


def mismatch(fmt: LogFormat, line_no: int, line: str) -> Mismatch | None:
    """The first field of `fmt` that `line` does not match; None when the whole line matches."""
    if fmt.dequotes:
        line = dequote_head(line)
    if fmt.regex(strict=True).match(line):
        return None
    tokens, end = fmt.tokens, 0
    for k in range(1, len(tokens) + 1):
        m = fmt.regex(strict=True, upto=k).match(line)
        if m is None:
            kind, value = tokens[k - 1]
            field = f"${value}" if kind == "var" else repr(value.strip() or value)
            if kind == "lit" and k < len(tokens):
                field += f" before ${tokens[k][1]}"      # a literal is followed by a variable: name the field
            return Mismatch(line_no, field, _cut(line[end:]), k - 1)
        end = m.end()
    return Mismatch(line_no, "end of line", _cut(line[end:]), len(tokens))


def closest(candidates: dict[str, list[LogFormat]], lines: list[tuple[int, str]]) -> tuple[str, Mismatch] | None:
    """(name, first mismatch) of the candidate whose variants matched the most fields of the first sample lines."""
    best = None
    for fmt_name, variants in candidates.items():
        score, first = 0, None
        for line_no, line in lines[:20]:
            found = [mismatch(v, line_no, line) for v in variants]
            if any(f is None for f in found):
                score += max(len(v.tokens) for v in variants) + 1
                continue
            f = max(found, key=lambda x: x.matched)
            score += f.matched
            first = first or f
        if first is not None and (best is None or score > best[0]):
            best = (score, fmt_name, first)
    return (best[1], best[2]) if best else None


def _cut(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[:width] + "..."
