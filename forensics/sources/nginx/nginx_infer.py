"""An access log's format inferred from a sample of its lines, and why a file matches no format.

Inference: every line must start with the combined core (`$remote_addr - $remote_user [$time_local] "$request"
$status $body_bytes_sent`, a vhost or an address list allowed in front), its time as `[$time_local]` or, where the
operator swapped the variable, `[$time_iso8601]`, `$time_iso8601`, `[$msec]` or `$msec` (nginx.md: the same instant
written `17/Mar/2025:02:00:04 +0100`, `2025-03-17T02:00:04+01:00`, `1742173204.123`); what follows is cut into
tokens (quoted,
[bracketed], bare; `0.1, 0.2` and `a : b` lists are one token), each typed (number, number list, address list,
UUID, 32-hex request id, `-`, word, quoted text, quoted address list). The column types across the sample make a
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
_ADDR = r"(?:\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?|\[?[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\]?(?::\d+)?|unix:[^ ,]*)"
_KINDS = [
    ("-", re.compile(r"-")),
    ("int", re.compile(r"\d+")),
    ("float", re.compile(r"\d+\.\d+")),
    ("numlist", re.compile(r"(?:\d+(?:\.\d+)?|-)(?:(?:, | : )(?:\d+(?:\.\d+)?|-))+")),
    ("uuid", re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")),
    ("hex", re.compile(r"[0-9a-f]{32}")),
    ("addr", re.compile(rf"{_ADDR}(?:(?:, | : ){_ADDR})*")),
]
_STATUS = re.compile(r"(?:[1-5]\d\d|-)(?:(?:, | : )(?:[1-5]\d\d|-))*")
# a column's type from the kinds its values showed: the first rule whose allowed kinds hold them all
_COLUMN_RULES = [
    ("dash", {"-"}),
    ("int", {"-", "int"}), ("float", {"-", "int", "float"}), ("numlist", {"-", "int", "float", "numlist"}),
    ("uuid", {"-", "uuid"}), ("hex", {"-", "hex"}), ("addr", {"-", "addr"}),
    ("word", {"-", "word", "addr", "hex", "uuid"}),
    ("bracket", {"bracket"}),
    ("quoted", {"q-", "qaddr", "qtext", "quuid"}),
]
_SHOWN = {"-": "-", "int": "a number", "float": "a number", "numlist": "a number list", "uuid": "a UUID",
          "hex": "a hex id", "addr": "an address", "word": "a word", "bracket": "a [bracketed] value",
          "q-": 'a quoted "-"', "qaddr": "a quoted address list", "qtext": "a quoted string",
          "quuid": "a quoted UUID"}


def token_kind(tok: str) -> str:
    if tok.startswith('"'):
        v = tok[1:-1]
        if v in ("-", ""):
            return "q-"
        if re.fullmatch(rf"{_ADDR}(?:, ?{_ADDR})*", v):
            return "qaddr"
        return "quuid" if _KINDS[4][1].fullmatch(v) else "qtext"
    if tok.startswith("["):
        return "bracket"
    return next((k for k, rx in _KINDS if rx.fullmatch(tok)), "word")


def trailing_tokens(rest: str) -> list[str] | None:
    out, pos = [], 0
    while pos < len(rest):
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
        kind = next((name for name, allowed in _COLUMN_RULES if set(seen) <= allowed), None)
        if kind is None:
            (k1, l1), (k2, l2) = sorted(seen.items(), key=lambda kv: kv[1])[:2]
            return Inference(None, f"field {c + 1} after $body_bytes_sent holds {_SHOWN[k1]} on line {l1} and "
                                   f"{_SHOWN[k2]} on line {l2}: not one format")
        status_like = kind in ("int", "numlist") and all(_STATUS.fullmatch(t[c]) for _, t in rows)
        columns.append((kind, set(seen), status_like))
    columns = _request_time_first(columns, rows)
    text = _log_format(columns).replace(_LOCAL_TIME, time, 1)
    return Inference(text, lines=len(rows) + core_only, custom=len(rows))


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
    parts: list[str] = []
    named: set[str] = set()

    def name(preferred: str, otherwise: str) -> str:
        if preferred in named:
            return otherwise
        named.add(preferred)
        return preferred

    start = 0
    if len(columns) >= 2 and columns[0][0] == columns[1][0] == "quoted":
        start = 2                                    # "$http_referer" "$http_user_agent"
    has_xff_list = any(kind == "quoted" and "qaddr" in seen for kind, seen, _ in columns[start:])
    for kind, seen, status_like in columns[start:]:
        if kind == "quoted" and seen <= {"q-", "quuid"} and "quuid" in seen:
            parts.append('"$' + name("upstream_http_x_litellm_call_id", "inferred_text") + '"')
        elif kind == "quoted":
            xff = "qaddr" in seen or not has_xff_list and seen == {"q-"}
            parts.append('"$' + (name("http_x_forwarded_for", "inferred_text") if xff else "inferred_text") + '"')
        elif kind == "bracket":
            parts.append("[$inferred_token]")
        elif kind in ("int", "numlist") and status_like:
            parts.append("$" + name("upstream_status", "inferred_list"))
        elif kind == "float":
            first = "request_time" if "request_time" not in named else "upstream_response_time"
            parts.append("$" + name(first, "inferred_list"))
        elif kind == "numlist":
            parts.append("$" + name("upstream_response_time", "inferred_list"))
        elif kind == "int":
            parts.append("$inferred_number")
        elif kind == "uuid":
            parts.append("$" + name("upstream_http_x_litellm_call_id", "inferred_token"))
        elif kind == "hex":
            parts.append("$" + name("request_id", "inferred_token"))
        elif kind == "addr":
            parts.append("$" + name("upstream_addr", "inferred_list"))
        else:                                        # dash, word: kept in the line, not in a column
            parts.append("$inferred_token")
    return (COMBINED if start else CLF) + "".join(" " + p for p in parts)


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
