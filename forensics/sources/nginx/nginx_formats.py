"""nginx `log_format` strings: the built-in formats, and any format compiled into a Python regex and DuckDB SQL.

The SQL exploits nginx's escaping: a raw '"' never occurs inside a logged value (nginx writes \\x22), so splitting a
line on '"' lines it up with the format's own quote-separated parts; each part is then cut on spaces or, when a
value may hold spaces (upstream lists), matched by a short regex. No per-line Python.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

CLF = '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent'
COMBINED = CLF + ' "$http_referer" "$http_user_agent"'
_XFF = ' "$http_x_forwarded_for"'
_TIMES = " $request_time $upstream_response_time"
_UPSTREAM = " $upstream_addr $upstream_status $request_id"
INGRESS = (COMBINED + " $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name]"
           " $upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id")

# format id -> the log_format variants it covers, most specific first
BUILTIN_FORMATS: dict[str, tuple[str, ...]] = {
    "nginx.ingress": (INGRESS,),
    "nginx.timings": (COMBINED + _TIMES + _UPSTREAM, COMBINED + _TIMES,
                      COMBINED + _XFF + _TIMES + _UPSTREAM, COMBINED + _XFF + _TIMES),
    "nginx.main": (COMBINED + _XFF,),
    "nginx.combined": (COMBINED, CLF),
}

# nginx variable -> staging field (a column of the http_requests row it feeds); other variables are parsed, not kept
FIELD_OF_VARIABLE = {
    "remote_addr": "remote_addr", "remote_user": "remote_user",
    "host": "host", "http_host": "host", "server_name": "host",
    "http_x_forwarded_for": "forwarded_for", "proxy_add_x_forwarded_for": "forwarded_for",
    "time_local": "time_local", "time_iso8601": "time_iso8601", "msec": "msec",
    "request": "request", "request_method": "method", "request_uri": "uri", "uri": "uri",
    "server_protocol": "protocol", "status": "status",
    "body_bytes_sent": "body_bytes", "bytes_sent": "bytes_sent", "request_length": "request_length",
    "http_referer": "referer", "http_user_agent": "user_agent",
    "request_time": "request_time", "upstream_response_time": "upstream_time",
    "upstream_status": "upstream_status", "upstream_addr": "upstream_addr",
    "request_id": "request_id", "req_id": "request_id",
    "upstream_http_x_litellm_call_id": "litellm_call_id", "sent_http_x_litellm_call_id": "litellm_call_id",
}
STAGING_FIELDS = ("host", "remote_addr", "remote_user", "forwarded_for", "time_local", "time_iso8601", "msec",
                  "request", "method", "uri", "protocol", "status", "body_bytes", "bytes_sent", "request_length",
                  "referer", "user_agent", "request_time", "upstream_time", "upstream_status", "upstream_addr",
                  "request_id", "litellm_call_id", "prefix")

# how a value looks outside quotes: loose for loading (the SQL conversion names the bad field), strict for detection
_UPLIST = r"[^ ,]+(?:(?:, | : )[^ ,]+)*"
_TOKEN = r"[^ ]*"
_LOOSE = {"time_local": r"[^\]]*", "time_iso8601": _TOKEN, "upstream_response_time": _UPLIST,
          "upstream_status": _UPLIST, "upstream_addr": _UPLIST, "upstream_response_length": _UPLIST,
          "upstream_connect_time": _UPLIST, "upstream_header_time": _UPLIST, "upstream_bytes_received": _UPLIST,
          "http_x_forwarded_for": r"[^ ,]+(?:, ?[^ ,]+)*", "proxy_add_x_forwarded_for": r"[^ ,]+(?:, ?[^ ,]+)*",
          "inferred_list": _UPLIST}
_NUMLIST = r"(?:[\d.]+|-)(?:(?:, | : )(?:[\d.]+|-))*"
_STRICT = {**_LOOSE, "time_local": r"\d{1,2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}",
           "time_iso8601": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:?\d{2}|Z)",
           "msec": r"\d+(?:\.\d+)?", "status": r"\d{3}", "body_bytes_sent": r"\d+|-", "bytes_sent": r"\d+|-",
           "request_length": r"\d+|-", "request_time": r"\d+(?:\.\d+)?|-", "upstream_response_time": _NUMLIST,
           "inferred_number": r"\d+|-",
           "upstream_status": _NUMLIST, "upstream_response_length": _NUMLIST,
           "remote_addr": r"[0-9A-Fa-f.:]+|unix:[^ ]*|-"}
# variables whose value never holds a space (time_local holds exactly one), so a part can be cut on spaces
_ONE_TOKEN = {"remote_addr", "remote_user", "status", "body_bytes_sent", "bytes_sent", "request_length",
              "request_time", "msec", "time_iso8601", "request_id", "req_id", "host", "http_host", "server_name",
              "upstream_http_x_litellm_call_id", "sent_http_x_litellm_call_id", "server_port", "scheme",
              "request_method", "server_protocol", "connection", "connection_requests", "pipe", "https",
              "proxy_upstream_name", "proxy_alternative_upstream_name", "ssl_protocol", "ssl_cipher", "gzip_ratio",
              "inferred_token", "inferred_number"}     # the fields an inferred format parses but does not keep
# what may stand before $remote_addr (the shapes of filebeat's nginx test logs): a vhost ($host, $host:$port), an
# X-Forwarded-For list logged in front of it or $remote_addr itself written as a list ("a, b, c" or "a, b," with c
# the address), or both: `example.com 10.0.0.2, 10.0.0.1, 81.2.69.143 - - [...]`
_ADDR_LIST = r"(?:[^ ,\"]+, )*[^ ,\"]+,|(?:[^ ,\"]+, )+[^ ,\"]+"
_PREFIX = rf"(?:[^ ,\"]+ )?(?:{_ADDR_LIST})|[^ ,\"]+"
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def re2_escape(text: str) -> str:
    """Escape a literal for RE2 (which, unlike Python's re, rejects some escapes Python's re.escape writes)."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)


def sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class LogFormat:
    """One nginx log_format string, tokenised into literals and variables."""

    text: str
    allow_prefix: bool = False      # a vhost or an X-Forwarded-For list may precede $remote_addr

    @cached_property
    def tokens(self) -> list[tuple[str, str]]:
        """('lit', text) and ('var', name) in order."""
        out, pos = [], 0
        for m in _VAR.finditer(self.text):
            if m.start() > pos:
                out.append(("lit", self.text[pos:m.start()]))
            out.append(("var", m.group(1) or m.group(2)))
            pos = m.end()
        if pos < len(self.text):
            out.append(("lit", self.text[pos:]))
        return out

    @cached_property
    def fields(self) -> dict[str, str]:
        """Variable -> staging field, for the variables of this format that feed a column (first one wins)."""
        out: dict[str, str] = {}
        for kind, name in self.tokens:
            field = FIELD_OF_VARIABLE.get(name) if kind == "var" else None
            if field and field not in out.values():
                out[name] = field
        return out

    def regex(self, strict: bool = False, upto: int | None = None) -> re.Pattern:
        """A Python regex for one whole line; quoted values may hold Apache-style \\" escapes. With `upto`, for
        the start of a line up to that many tokens (to find the first field a line does not match)."""
        parts, quoted, seen = ["^"], False, set()
        if self.allow_prefix and self.tokens[0] == ("var", "remote_addr"):
            parts.append(f"(?:(?P<prefix>{_PREFIX}) )?")
        for kind, value in self.tokens[:upto]:
            if kind == "lit":
                parts.append(re.escape(value))
                quoted ^= value.count('"') % 2 == 1
                continue
            pattern = r'(?:[^"\\]|\\.)*' if quoted else (_STRICT if strict else _LOOSE).get(value, _loose_default(value))
            field = self.fields.get(value)
            if field and field not in seen:
                seen.add(field)
                parts.append(f"(?P<{field}>{pattern})")
            else:
                parts.append(f"(?:{pattern})")
        if upto is None or upto >= len(self.tokens):
            parts.append("$")
        elif self.tokens[upto - 1][0] == "var" and self.tokens[upto][0] == "lit":
            parts.append(f"(?={re.escape(self.tokens[upto][1][0])})")    # the value ends where the format says
        return re.compile("".join(parts))

    # -- SQL ------------------------------------------------------------------------------------------------
    @cached_property
    def quote_parts(self) -> list[list[tuple[str, str]]]:
        """The tokens cut at each literal '"', as a line is cut by string_split(line, '"')."""
        parts: list[list[tuple[str, str]]] = [[]]
        for kind, value in self.tokens:
            if kind == "var":
                parts[-1].append((kind, value))
                continue
            pieces = value.split('"')
            for i, piece in enumerate(pieces):
                if i:
                    parts.append([])
                if piece:
                    parts[-1].append(("lit", piece))
        return parts

    def extract_sql(self, source: str) -> str:
        """SELECT line_no, line, ok, <staging fields> FROM `source` (line_no, line); ok = the line has this shape."""
        part_cols, field_exprs, checks = [], {}, [f"len(p) = {len(self.quote_parts)}"]
        for i, part in enumerate(self.quote_parts, start=1):
            cell = f"p[{i}]"
            if not part:
                checks.append(f"{cell} = ''")
            elif len(part) == 1 and part[0][0] == "var":
                self._bind(field_exprs, part[0][1], cell)
            elif all(k == "lit" for k, _ in part):
                checks.append(f"{cell} = {sql_str(''.join(v for _, v in part))}")
            elif self._splits_on_spaces(part):
                part_cols.append(f"string_split({cell}, ' ') AS s{i}")
                self._space_cut(i, part, field_exprs, checks)
            else:
                pattern, names = self._part_regex(part)
                part_cols.append(f"regexp_extract({cell}, {sql_str(pattern)}, {names!r}) AS r{i}")
                checks.append(f"r{i}._all <> ''")
                for field in names[1:]:
                    field_exprs.setdefault(field, f"r{i}.{field}")
        fields = ",\n       ".join(f"{field_exprs.get(f, 'NULL::VARCHAR')} AS {f}" for f in STAGING_FIELDS)
        extra = "".join(f", {c}" for c in part_cols)
        split = f"(SELECT line_no, line, string_split(line, '\"') AS p FROM {source})"
        if self.dequotes:                    # a quoted address list before the time: its quotes are not the format's
            split = (f"(SELECT line_no, line, CASE WHEN len(p) > 3 AND NOT ends_with(p[1], '] ') THEN "
                     f"list_prepend(p[1] || p[2] || p[3], p[4:]) ELSE p END AS p FROM {split})")
        return (f"SELECT line_no, line, coalesce({' AND '.join(checks)}, false) AS ok,\n       {fields}\n"
                f"FROM (SELECT line_no, line, p{extra} FROM {split})")

    @property
    def dequotes(self) -> bool:
        """Lines may carry a quoted address list in the head (see dequote_head): only formats whose first quote
        follows the time, as the combined core's does."""
        head = self.quote_parts[0]
        return self.allow_prefix and head[0] == ("var", "remote_addr") and head[-1][0] == "lit" \
            and head[-1][1].endswith("] ")

    def _bind(self, exprs: dict[str, str], var: str, expr: str) -> None:
        field = self.fields.get(var)
        if field and field not in exprs:
            exprs[field] = expr

    @staticmethod
    def _splits_on_spaces(part: list[tuple[str, str]]) -> bool:
        """True when every variable of the part is space-free (time_local: one space) and stands alone."""
        prev = None
        for kind, value in part:
            if kind == "var" and (value not in _ONE_TOKEN and value != "time_local" or prev == "var"):
                return False
            prev = kind
        return True

    def _space_cut(self, i: int, part, exprs: dict[str, str], checks: list[str]) -> None:
        """Bind the variables of a space-cut part; slots are counted from the right when a prefix may come first."""
        template = "".join("\x00 \x00" if v == "time_local" else "\x00" if k == "var" else v for k, v in part)
        slots = template.split(" ")
        variables = iter(v for k, v in part if k == "var")
        n, s = len(slots), f"s{i}"
        prefixed = i == 1 and self.allow_prefix and part[0] == ("var", "remote_addr")
        at = (lambda k: f"{s}[len({s}) - {n - 1 - k}]") if prefixed else (lambda k: f"{s}[{k + 1}]")
        checks.append(f"len({s}) >= {n}" if prefixed else f"len({s}) = {n}")
        if prefixed:
            prefix = f"array_to_string({s}[1:len({s}) - {n}], ' ')"
            exprs["prefix"] = f"CASE WHEN len({s}) > {n} THEN {prefix} END"
            # one vhost token, or an X-Forwarded-For list whose last hop is $remote_addr
            checks.append(f"CASE WHEN len({s}) = {n} THEN true ELSE regexp_full_match({prefix}, {sql_str(_PREFIX)}) END")
        k = 0
        while k < n:
            slot = slots[k]
            if "\x00" not in slot:
                checks.append(f"{at(k)} = {sql_str(slot)}")
                k += 1
                continue
            var = next(variables)
            head, _, tail = slot.partition("\x00")
            first = last = at(k)
            if var == "time_local":                  # the value spans this slot and the next
                k += 1
                tail = slots[k].partition("\x00")[2]
                last = at(k)
            if head:
                checks.append(f"starts_with({first}, {sql_str(head)})")
            if tail:
                checks.append(f"ends_with({last}, {sql_str(tail)})")
            if var == "time_local":
                self._bind(exprs, var, self._time_local_sql(i, part, first, last, head, tail))
            else:
                self._bind(exprs, var, f"{first}[{len(head) + 1}:{-len(tail) - 1}]" if head or tail else first)
            k += 1

    @staticmethod
    def _time_local_sql(i: int, part, first: str, last: str, head: str, tail: str) -> str:
        """$time_local is 26 characters wide: cut it from the end of the part when only literals follow it."""
        after = part[[t for _, t in part].index("time_local") + 1:]
        if all(kind == "lit" for kind, _ in after):
            width = len("".join(v for _, v in after))
            return f"p[{i}][{-width - 26}:{-width - 1}]"
        return f"({first} || ' ' || {last})[{len(head) + 1}:{-len(tail) - 1}]"

    def walk_filter_sql(self) -> str | None:
        """A cheap test on the raw line for rows whose client_ip needs the X-Forwarded-For walk; None = any may."""
        if "forwarded_for" in self.fields.values() or self.tokens[0] != ("var", "remote_addr"):
            return None
        kind, lit = self.tokens[1] if len(self.tokens) > 1 else ("var", "")
        if kind != "lit" or not lit.startswith(" "):
            return None
        # an IPv6 or unix: peer, or an X-Forwarded-For list logged in its place: ':' or ',' before that literal
        head = f"left(line, strpos(line, {sql_str(lit)}))"       # not split_part: that splits the whole line
        return f"(contains({head}, ':') OR contains({head}, ','))"

    def _part_regex(self, part) -> tuple[str, list[str]]:
        """An RE2 pattern for one unquoted part; group _all is '' exactly when the part does not match."""
        out, names = [], ["_all"]
        for kind, value in part:
            if kind == "lit":
                out.append(re2_escape(value))
                continue
            field = self.fields.get(value)
            pattern = _LOOSE.get(value, _loose_default(value))
            if field and field not in names:
                names.append(field)
                out.append(f"({pattern})")
            else:
                out.append(f"(?:{pattern})")
        return "^(" + "".join(out) + ")$", names


def _loose_default(var: str) -> str:
    return _TOKEN if var in _ONE_TOKEN else r".*?"


def parse_log_format(text: str) -> str:
    """The format string from what an analyst pasted: a bare string, or nginx.conf text with quotes and a name."""
    t = text.strip().rstrip(";").strip()
    t = re.sub(r"^log_format\s+\S+\s+", "", t)
    t = re.sub(r"^escape=\w+\s+", "", t)
    quoted = re.findall(r"'((?:[^'\\]|\\.)*)'", t)
    if t.startswith("'") and quoted:
        t = "".join(quoted)                          # nginx joins adjacent quoted strings
    return t.replace('\\"', '"')


def escaping_of(text: str) -> str:
    m = re.search(r"escape=(\w+)", text)
    return m.group(1) if m else "default"


def builtin(fmt_id: str) -> list[LogFormat]:
    """The variants of a built-in format, then Common Log Format lines another virtual host mixed into the file."""
    return with_fallbacks(BUILTIN_FORMATS[fmt_id])


def with_fallbacks(texts) -> list[LogFormat]:
    """Variants sharing the combined core (vhost and address-list heads allowed), then COMBINED and CLF."""
    texts = list(dict.fromkeys([*texts, COMBINED, CLF]))
    return [LogFormat(t, allow_prefix=True) for t in texts]


def dequote_head(line: str) -> str:
    """A line whose address part holds one quoted list (`"a, b" 10.2.1.185 - - [`), without those two quotes."""
    q = line.find('"')
    if q < 0 or q > line.find("["):
        return line
    end = line.find('"', q + 1)
    return line[:q] + line[q + 1:end] + line[end + 1:] if end > 0 else line
