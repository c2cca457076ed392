"""Named SQL steps: every figure is a small SELECT with a name, so the SQL behind it can be printed and re-run.

Functions that build SQL are named `*_sql` / `*_step` and execute nothing; a case's `StepLog` records every statement
the investigation ran, in order, with its parameters written in as SQL literals, so `StepLog.script()` (the report's
`steps.sql`) re-runs as printed against the case database it was written for. A step's table is a handle (its name)
that the next step receives as an argument: no step reads another's table by a name it assumes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from textwrap import dedent

from forensics.outputs.safe import hidden

_PLAIN = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True)
class Step:
    name: str          # e.g. 'incident_requests', materialised as TEMP TABLE __f_incident_requests
    sql: str           # a SELECT

    @property
    def table(self) -> str:
        return table_name(self.name)


def table_name(step_name: str) -> str:
    """The temp table a step named `step_name` is materialised as."""
    return f"__f_{step_name}"


def literal(value) -> str:
    """`value` as a DuckDB SQL literal of the type a bound parameter would have had."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return f"CAST('{value}' AS DOUBLE)"
        return f"CAST({value!r} AS DOUBLE)"
    if isinstance(value, Decimal):
        scale = min(max(0, -int(value.as_tuple().exponent)), 37)
        return f"CAST('{format(value, 'f')}' AS DECIMAL(38,{scale}))"
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'" if value.tzinfo is None else \
            f"TIMESTAMPTZ '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, time):
        return f"TIME '{value.isoformat()}'"
    if isinstance(value, timedelta):
        return f"INTERVAL {int(value / timedelta(microseconds=1))} MICROSECONDS"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if hasattr(value, "to_pydatetime"):            # pandas / numpy timestamps
        return literal(value.to_pydatetime())
    if hasattr(value, "item"):                     # numpy scalars
        return literal(value.item())
    return string_literal(str(value))


def string_literal(text: str) -> str:
    """A VARCHAR literal; a character that could hide or reorder the script's text (controls, bidi, zero-width:
    outputs/safe.py's rule) is written as chr(N), so steps.sql shows no such character and still means the same."""
    if _PLAIN.fullmatch(text):
        return "'" + text.replace("'", "''") + "'"
    parts, run = [], []
    for ch in text:
        if hidden(ch):
            if run:
                parts.append("'" + "".join(run).replace("'", "''") + "'")
                run = []
            parts.append(f"chr({ord(ch)})")
        else:
            run.append(ch)
    if run or not parts:
        parts.append("'" + "".join(run).replace("'", "''") + "'")
    return parts[0] if len(parts) == 1 else "(" + " || ".join(parts) + ")"


def inline_params(sql: str, params) -> str:
    """`sql` with each `?` placeholder (outside quotes and comments) replaced by its parameter as a literal."""
    if not params:
        return sql
    out, values, i, n = [], iter(params), 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":                                  # a quoted string or identifier: copied whole
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:   # doubled quote inside
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i:j + 1])
            i = j + 1
        elif sql.startswith("--", i):                   # a comment, to the end of its line
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j])
            i = j
        elif c == "?":
            try:
                out.append(literal(next(values)))
            except StopIteration:
                raise ValueError("more ? placeholders than parameters") from None
            i += 1
        else:
            out.append(c)
            i += 1
    if next(values, _END) is not _END:
        raise ValueError("more parameters than ? placeholders")
    return "".join(out)


_END = object()


@dataclass
class StepLog:
    """What one case's investigation ran, in order: (step name, statement runnable as printed)."""

    entries: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)     # step name -> time its runs took, in all

    def add(self, name: str, sql: str, params=None, seconds: float = 0.0) -> str:
        statement = inline_params(dedent(sql).strip(), params)
        self.entries.append((name, statement))
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        return statement

    def sql_of(self, name: str) -> str:
        """The SQL the latest run of step `name` executed."""
        for n, sql in reversed(self.entries):
            if n == name:
                return sql
        raise KeyError(name)

    def names(self) -> list[str]:
        return list(dict.fromkeys(n for n, _ in self.entries))

    def script(self) -> str:
        """Every statement in the order it ran: re-runs top to bottom against the same case database."""
        return "".join(f"-- step: {name}\n{sql};\n\n" for name, sql in self.entries)
