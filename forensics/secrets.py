"""API keys never leave the tool in full: LiteLLM's sha256 key hash and the 'sk-...abcd' hint stand for them."""
from __future__ import annotations

import hashlib
import re

import duckdb
import numpy as np
import pandas as pd

from forensics.duck import query_with

# LiteLLM virtual keys (sk- + 22 url-safe chars), OpenAI (sk-proj-..., sk-svcacct-..., sk-...), Anthropic (sk-ant-...)
KEY_PATTERN = r"sk-[A-Za-z0-9_\-]{16,}"
BEARER_PATTERN = r"(?i)(bearer\s+)([A-Za-z0-9_\-\.=]{16,})"
# a JSON Web Token is a bearer credential wherever it stands (a query string, a referer), 'Bearer' or not
JWT_PATTERN = r"eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"
_KEY_RE = re.compile(KEY_PATTERN)
_JWT_RE = re.compile(JWT_PATTERN)
_BEARER_RE = re.compile(BEARER_PATTERN)
# what an already redacted value looks like: never redacted twice
REDACTED_PREFIX = "[redacted key "


def key_hash(key: str) -> str:
    """LiteLLM's stored form of a virtual key: sha256 hex of the full key string."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    """LiteLLM's key_name form: 'sk-...' and the last four characters."""
    return f"sk-...{key[-4:]}"


def redacted(key: str) -> str:
    hint = key_hint(key) if key.startswith("sk-") else f"...{key[-4:]}"     # no 'sk-' hint for a token that has none
    return f"{REDACTED_PREFIX}{hint} sha256:{key_hash(key)}]"


def may_hold_secret(data: bytes, start: int = 0, end: int | None = None, window: int = 1 << 20) -> bool:
    """A cheap, exact pre-test of raw log bytes: False means none of the patterns above can match in data[start:end].

    'sk-' and 'eyJ' are case-sensitive in the patterns, so plain searches do; 'bearer' is not, so it is searched in
    a copy with every ASCII letter lowered (OR 0x20 maps a byte to 'b', 'e', 'a' or 'r' only from that letter's own
    upper or lower case). Bytes that are not UTF-8 become \\xHH text, which cannot form any of the three; a JSON
    \\u escape could (a JSON log's values are decoded), so any '\\u' answers True. The data is looked at a window
    at a time, each window searched while it is in the CPU's cache (a third faster on 128 MiB than whole passes).
    """
    end = len(data) if end is None else end
    view = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    lowered = np.empty(min(window + 5, len(view)), dtype=np.uint8)
    for lo in range(0, len(view), window):
        hi = min(lo + window + 5, len(view))        # 5 bytes of overlap: a needle across two windows is seen
        a, b = start + lo, start + hi
        if data.find(b"sk-", a, b) >= 0 or data.find(b"eyJ", a, b) >= 0 or data.find(b"\\u", a, b) >= 0:
            return True
        if b"bearer" in np.bitwise_or(view[lo:hi], 0x20, out=lowered[:hi - lo]).tobytes():
            return True
    return False


def redact_text(text: str | None) -> str | None:
    """Replace every full key (and bearer token) in `text` by its hint and hash."""
    if text is None:
        return None
    out = _KEY_RE.sub(lambda m: redacted(m.group(0)), text)
    out = _JWT_RE.sub(lambda m: redacted(m.group(0)), out)
    return _BEARER_RE.sub(lambda m: m.group(1) + (m.group(2) if m.group(2).startswith("[") else redacted(m.group(2))), out)


def contains_key_sql(column: str) -> str:
    """A SQL predicate, true where `column` holds something that looks like a full key or bearer token."""
    return (f"(regexp_matches({column}, '{KEY_PATTERN}') OR regexp_matches({column}, '{BEARER_PATTERN}') "
            f"OR regexp_matches({column}, '{JWT_PATTERN}'))")


def redact_columns(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], where: str = "true") -> int:
    """Redact full keys in `columns` of `table` in place; the scan is SQL, the rewrite touches matching values only.

    Returns how many distinct values were rewritten.
    """
    rewritten = 0
    for col in columns:
        values = [
            v for (v,) in con.execute(
                f"SELECT DISTINCT {col} FROM {table} WHERE ({where}) AND {col} IS NOT NULL AND {contains_key_sql(col)}"
            ).fetchall()
        ]
        if not values:
            continue
        frame = pd.DataFrame({"old": values, "new": [redact_text(v) for v in values]}, dtype="object")
        query_with(con, "_redact_frame", frame,
                   f"UPDATE {table} SET {col} = r.new FROM _redact_frame r WHERE ({where}) AND {table}.{col} = r.old")
        rewritten += len(values)
    return rewritten
