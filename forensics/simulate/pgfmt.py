"""Text as PostgreSQL writes it in `COPY ... (FORMAT csv, HEADER)`: jsonb, float8, timestamp(3), CSV quoting."""
from __future__ import annotations

import json
import re
from decimal import Decimal

import numpy as np


_ORDER: dict[tuple, list] = {}
_MARK = "\ue000"            # wraps numbers already rendered as numeric text (json.dumps would write 2.5e-06)
_PREPARED: set[int] = set()  # ids of constant objects already in jsonb order


def _leaf(x):
    t = type(x)
    if t is dict or t is list or t is tuple:
        return _jsonb_order(x)
    if t is float and x and not 1e-4 <= abs(x) < 1e16:
        return _MARK + format(Decimal(repr(x)), "f") + _MARK
    return x


_PLAIN = (str, int, bool, type(None))


def _jsonb_order(value):
    """The same value with every object's keys in jsonb order (byte length, then bytes), numbers as numeric."""
    if id(value) in _PREPARED:
        return value
    if type(value) is dict:
        names = tuple(value)
        order = _ORDER.get(names)
        if order is None:
            order = _ORDER[names] = sorted(names, key=lambda k: (len(k.encode()), k.encode()))
        out = {}
        for k in order:
            v = value[k]
            out[k] = v if type(v) in _PLAIN else _leaf(v)
        return out
    return [v if type(v) in _PLAIN else _leaf(v) for v in value]


def prepared(value):
    """A constant object converted once for jsonb(); keep the returned object alive and reuse it."""
    out = _leaf(value)
    _PREPARED.add(id(out))
    return out


def jsonb_top(value: dict) -> dict:
    """Only the top-level keys put in jsonb order (for objects whose nested parts are built in order)."""
    names = tuple(value)
    order = _ORDER.get(names)
    if order is None:
        order = _ORDER[names] = sorted(names, key=lambda k: (len(k.encode()), k.encode()))
    return {k: value[k] for k in order}


def jsonb(value, presorted: bool = False) -> str:
    """jsonb output: object keys ordered by (byte length, bytes), ', ' and ': ' separators, numbers as numeric.

    presorted: the caller built every object in jsonb order and has no float below 1e-4 outside prepared()
    objects; the text is then only serialised.
    """
    text = json.dumps(value if presorted else _leaf(value), ensure_ascii=False)
    if _MARK in text:
        text = text.replace('"' + _MARK, "").replace(_MARK + '"', "")
    return text


def float8(value: float) -> str:
    """double precision output (shortest round-trip, like Python's repr, but 0 and 1 without '.0')."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def timestamp3(us: int) -> str:
    """timestamp(3) output: rounded to the millisecond, trailing zeros of the fraction dropped."""
    return timestamps3(np.array([us], dtype=np.int64))[0]


def timestamps3(us: np.ndarray) -> list[str]:
    """timestamp3() of a whole column at once."""
    ms = (np.asarray(us, dtype=np.int64) + 500) // 1000
    text = np.datetime_as_string(ms.astype("datetime64[ms]")).tolist()
    return [t[:10] + " " + t[11:19] + (t[19:].rstrip("0") if t[20:] != "000" else "") for t in text]


_CSV_SPECIAL = re.compile(r'[,"\n\r]')


def csv_field(value) -> str:
    """CSV quoting of COPY: NULL is an empty field, an empty string is \"\", specials are quoted."""
    if value is None:
        return ""
    text = value if type(value) is str else str(value)
    if text == "":
        return '""'
    if _CSV_SPECIAL.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_line(values) -> str:
    return ",".join([csv_field(v) for v in values]) + "\n"
