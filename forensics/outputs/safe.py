"""Log values as text that is safe to share: the one implementation of each rule every document uses.

- `printable`: control characters (ANSI escapes, CR/LF, NUL, tab), bidi controls and zero-width / invisible format
  characters (U+202A..U+202E, U+2066..U+2069, U+200B..U+200F, U+061C, U+FEFF, ...), line and paragraph separators
  (U+2028, U+2029) and lone surrogates are shown as visible escapes: `\\xHH` up to U+00FF, `\\uHHHH`, `\\UHHHHHHHH`.
  Nothing a reader sees can then differ from what the text holds (no text reversed, hidden or cut into lines).
- `md`: printable, and every character Markdown or HTML would act on escaped (HTML gets jinja2's autoescape).
- `neutralise` / `write_csv`: CSV cells; text printable, and a cell a spreadsheet would evaluate (starting with
  `=`, `+`, `-`, `@`, tab or CR: OWASP CSV injection) prefixed with `'`. Numbers stay numbers.
- `json_text`: JSON with those same characters written as `\\u` escapes: the value read back is exact.
"""
from __future__ import annotations

import csv
import json
import re
import unicodedata
from decimal import Decimal
from pathlib import Path

# categories never shown as themselves: control, format (bidi, zero-width, BOM...), line / paragraph separator,
# surrogate (a lone one cannot even be written as UTF-8)
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_CANDIDATE = re.compile(r"[^\x20-\x7e]")           # printable ASCII is always itself; anything else is checked
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~])")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")     # OWASP CSV injection: a spreadsheet would evaluate these


def hidden(ch: str) -> bool:
    """True for a character that must not reach a document as itself."""
    return unicodedata.category(ch) in _HIDDEN_CATEGORIES


def escape_char(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n <= 0xFF else f"\\u{n:04x}" if n <= 0xFFFF else f"\\U{n:08x}"


def _escape(m: re.Match) -> str:
    ch = m.group()
    return escape_char(ch) if hidden(ch) else ch


def printable(value) -> str:
    """A log value as inert text: control, bidi and invisible characters become visible escapes."""
    if value is None:
        return ""
    return _CANDIDATE.sub(_escape, str(value))


def visible(text: str) -> str:
    """Like printable, but keeps line breaks and tabs: for multi-line text of our own (SQL) that may quote log
    values. Every value a template prints goes through it (outputs/report.py), whatever filter it had."""
    return _CANDIDATE.sub(lambda m: m.group() if m.group() in "\n\t" else _escape(m), text)


def md(value) -> str:
    """Text for a Markdown table cell: printable, and every character Markdown or HTML would act on escaped."""
    return _MD_SPECIAL.sub(r"\\\1", printable(value)).replace("&", "&amp;")


def neutralise(value):
    """A CSV cell: text a spreadsheet would run as a formula prefixed with ' (OWASP), hidden characters made
    visible. Numbers stay numbers; None and NaN are empty."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):       # numpy scalars as Python values
        value = value.item()
    if value is None or (isinstance(value, float) and value != value) or _is_missing(value):
        return ""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return value
    text = printable(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _is_missing(value) -> bool:
    """pandas' NA and NaT (an empty cell, not the text '<NA>')."""
    return type(value).__name__ in ("NAType", "NaTType")


def write_csv_to(fh, columns: list[str], rows) -> int:
    """Write a header and rows, every cell neutralised, to an open text file; returns the number of rows."""
    w = csv.writer(fh, lineterminator="\n")
    w.writerow([neutralise(c) for c in columns])
    n = 0
    for row in rows:
        w.writerow([neutralise(v) for v in row])
        n += 1
    return n


def write_csv(path: Path, columns: list[str], rows) -> int:
    """A CSV file of neutralised cells, written atomically (a temp name in the same folder, then renamed)."""
    from forensics.outputs.atomic import atomic_write

    with atomic_write(path, newline="") as fh:
        return write_csv_to(fh, columns, rows)


def json_text(obj, **kwargs) -> str:
    """json.dumps(obj, ensure_ascii=False, ...) with every hidden character written as a \\u escape (inside JSON
    strings, the only place they can be): the value read back is exactly `obj`, the text shows no bidi trick."""
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    # json.dumps escapes every control character inside strings: a raw line break is the layout's (indent)
    return _CANDIDATE.sub(lambda m: _json_escape(m.group()) if m.group() != "\n" and hidden(m.group())
                          else m.group(), text)


def _json_escape(ch: str) -> str:
    n = ord(ch)
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"
