"""Which nginx access-log format a file is in, from a sample of its lines; the parsers detection and the slow path
share; and, for a file no format fits, the closest one and the first field that did not match.

Order: a --nginx-format (always used: a file it does not fit but another format does fails with the reason), the
log_format an access_log of --nginx-conf names for a file of that name, the configuration's other log_formats, JSON,
the built-in formats, then a format inferred from the lines (nginx_infer) when it takes more lines than they do.
"""
from __future__ import annotations

import functools
import re
from collections import Counter
from pathlib import Path

from forensics.sources.interface import LoadOptions
from forensics.sources.nginx import nginx_json
from forensics.sources.nginx.nginx_formats import (BUILTIN_FORMATS, STAGING_FIELDS, LogFormat, builtin, dequote_head,
                                                   escaping_of, parse_log_format, with_fallbacks)
from forensics.sources.nginx.nginx_infer import closest, infer
from forensics.sources.nginx.nginx_logconf import ConfFormat, LogConf, load_log_conf

TIME_FIELDS = ("msec", "time_iso8601", "time_local")      # the first a format logs is used: $msec keeps milliseconds


def detect(sample: bytes, path: Path, options: LoadOptions | None = None) -> str | None:
    """A format id when most sample lines are nginx access-log records of one format. A --nginx-format is
    always used: a file it does not fit but another format does fails with the reason (ValueError)."""
    numbered = _sample_lines(sample)
    lines = [ln for _, ln in numbered]
    if not lines:
        return None
    need = max(1, (len(lines) + 1) // 2)
    custom = options.nginx_format if options else None
    conf = log_conf_of(options)
    if custom:
        if custom_parser(custom).count_matches(lines) >= need:
            return "nginx.custom"
        other = _detect_any(numbered, conf, path, need)
        if other is not None:
            raise ValueError(f"--nginx-format does not fit this nginx access log ({other} does): "
                             f"{_custom_mismatch(custom, numbered)}")
        return None
    return _detect_any(numbered, conf, path, need)


def explain(sample: bytes, path: Path, options: LoadOptions | None = None) -> str | None:
    """For a file no source recognised: the closest nginx format, where it first fails, how to pass one."""
    numbered = _sample_lines(sample)
    if not numbered:
        return None
    custom = options.nginx_format if options else None
    if custom:
        return f"--nginx-format does not fit: {_custom_mismatch(custom, numbered)}"
    conf = log_conf_of(options)
    candidates = {fmt_id: builtin(fmt_id) for fmt_id in BUILTIN_FORMATS}
    for f in conf.formats.values() if conf else ():
        if not f.text.lstrip().startswith("{") and f.name != "combined":
            candidates[f"{f.fmt_id} ({f.where})"] = [LogFormat(f.text)]
    found = closest(candidates, numbered)
    if found is None or found[1].matched < 3:
        return None                                  # nothing like an access log: no nginx hint to give
    name, miss = found
    inferred = infer(numbered)
    why = f" (no format inferred: {inferred.reason})" if inferred.text is None and inferred.reason else ""
    return (f"closest nginx format {name}: line {miss.line_no}: {miss.field} expected, found {miss.found!r}{why}; "
            "pass its log_format with --nginx-format '...' or the server's nginx.conf with --nginx-conf FILE")


def log_conf_of(options: LoadOptions | None) -> LogConf | None:
    return load_log_conf(tuple(options.nginx_conf)) if options and options.nginx_conf else None


def _detect_any(numbered: list[tuple[int, str]], conf: LogConf | None, path: Path, need: int) -> str | None:
    """The format of the sample: the log_format an access_log of the configuration names for this file, any other
    of its log_formats, the built-in formats, then a format inferred from the lines."""
    lines = [ln for _, ln in numbered]
    if conf is not None:
        named = conf.for_file(path)
        others = [f for f in conf.formats.values() if f not in named and f.name != "combined"]
        for f in [*named, *others]:
            if conf_parser(f).count_matches(lines) >= need:
                return f.fmt_id
    if sum(ln.startswith("{") for ln in lines) >= need:
        parsed = [nginx_json.loads(ln) for ln in lines if ln.startswith("{")]
        objects = [o for o, _ in parsed if o is not None]
        if len(objects) >= need and nginx_json.infer(objects, False) is not None:
            return "nginx.json_default" if any(r for _, r in parsed) else "nginx.json"
        return None
    heads = [dequote_head(ln) for ln in lines]
    shared = _strict_regexes(None)          # COMBINED and CLF: in every text format
    in_shared = [any(r.match(ln) for r in shared) for ln in heads]
    best, best_n, best_total = None, 0, 0
    for fmt_id in BUILTIN_FORMATS:             # most specific first: a tie keeps the earlier one
        regexes = _strict_regexes(fmt_id)
        own = [any(r.match(ln) for r in regexes) for ln in heads]
        if sum(own) > best_n:
            best, best_n, best_total = fmt_id, sum(own), sum(o or s for o, s in zip(own, in_shared))
    if best is not None and best_total == len(lines):
        return best
    # some lines fit no built-in format: a format inferred from the lines wins when more lines have its trailing
    # fields than fit the built-in format's own variants (a stray line with a field more defines no format)
    inferred = infer(numbered)
    if inferred.text is not None and inferred.lines >= need and inferred.custom > best_n:
        return "nginx.inferred"
    return best if best is not None and best_total >= need else None


@functools.cache
def _strict_regexes(fmt_id: str | None) -> list[re.Pattern]:
    """A built-in format's strict regexes (None: the fallbacks every text format has), built once: detection runs
    per file, and a bucket holds thousands of small ones."""
    if fmt_id is None:
        return [f.regex(strict=True) for f in with_fallbacks(())]
    return [LogFormat(f, allow_prefix=True).regex(strict=True) for f in BUILTIN_FORMATS[fmt_id]]


def _custom_mismatch(custom: str, numbered: list[tuple[int, str]]) -> str:
    template = parse_log_format(custom)
    if template.lstrip().startswith("{"):
        return "the lines are not the JSON objects of that log_format"
    found = closest({"--nginx-format": [LogFormat(template)]}, numbered)
    if found is None:
        return "its lines do not match"
    miss = found[1]
    return f"line {miss.line_no}: {miss.field} expected, found {miss.found!r}"


def _sample_lines(sample: bytes, limit: int = 200) -> list[tuple[int, str]]:
    """(line number, line) of the sample's first lines that are not blank."""
    text = sample.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = text.split("\n")
    if len(lines) > 1 and not text.endswith("\n"):
        lines.pop()                                  # the sample may end inside a line
    return [(i, ln.rstrip("\r")) for i, ln in enumerate(lines, start=1) if ln.strip()][:limit]


class TextParser:
    """A text format: ordered variants, each an SQL extractor and a Python regex for the slow path."""

    def __init__(self, formats: list[LogFormat]):
        self.formats = formats
        self.regexes = [f.regex(strict=False) for f in formats]
        self.dequotes = any(f.dequotes for f in formats)
        self.hits = Counter()
        # the time each variant logs; several when an inferred format's time is not the fallbacks' $time_local
        times = tuple(dict.fromkeys(t for f in formats if (t := _time_of(f)) is not None))
        self.time_field = times[0] if len(times) == 1 else times or None
        self.nginx_escapes = True
        # the staging fields some variant fills (a vhost or X-Forwarded-For list may stand before the address)
        self.fields = tuple(f for f in STAGING_FIELDS if f == "prefix" and any(v.allow_prefix for v in formats)
                            or any(f in v.fields.values() for v in formats))

    def variants(self) -> list[LogFormat]:
        """The variants, the one that took most lines so far first (a file rarely mixes them)."""
        return sorted(self.formats, key=lambda f: -self.hits[f.text])

    def parse(self, line: str) -> dict[str, str | None] | None:
        if self.dequotes:
            line = dequote_head(line)
        for rx in self.regexes:
            m = rx.match(line)
            if m:
                return {k: _apache_unescape(v) for k, v in m.groupdict().items()}
        return None

    def count_matches(self, lines: list[str]) -> int:
        return sum(self.parse(ln) is not None for ln in lines)


class JsonParser:
    """A JSON format: one SQL extractor over the operator's keys, json.loads for the slow path."""

    def __init__(self, fmt: nginx_json.JsonFormat, hits: Counter | None = None):
        self.fmt = fmt
        self.hits = hits if hits is not None else Counter()
        self.time_field = next((f for f in TIME_FIELDS if f in fmt.fields), None)
        self.nginx_escapes = fmt.default_escaping
        self.fields = tuple(f for f in STAGING_FIELDS if f in fmt.fields)

    def variants(self):
        return [self.fmt]

    def parse(self, line: str):
        return self.fmt.parse(line)

    def count_matches(self, lines: list[str]) -> int:
        return sum(self.parse(ln) is not None for ln in lines)


def _time_of(f: LogFormat) -> str | None:
    return next((t for t in TIME_FIELDS if t in f.fields.values()), None)


def _apache_unescape(v: str | None) -> str | None:
    # only lines in the slow path can hold \" (Apache's escaping; nginx writes \x22)
    return v.replace('\\"', '"').replace("\\\\", "\\") if v and "\\" in v and '\\"' in v else v


def custom_parser(text: str):
    template = parse_log_format(text)
    return _template_parser(template, escaping_of(text))


def conf_parser(f: ConfFormat):
    return _template_parser(f.text, f.escape)


def _template_parser(template: str, escape: str):
    if template.lstrip().startswith("{"):
        return JsonParser(nginx_json.from_template(template, default_escaping=escape != "json"))
    return TextParser([LogFormat(template)])


