"""API keys never leave the tool in full: LiteLLM's sha256 key hash and the 'sk-...abcd' hint stand for them.

One rule, written once here: a key (OpenAI `sk-...`/`sk-proj-...`, Anthropic `sk-ant-...`, a LiteLLM virtual key
`sk-...`), a JSON Web Token, or the token after 'Bearer' is found as written and behind the escapes logs put on text:
URL percent-encoding (`sk%2Dproj%2D...`), nginx's `\\xHH` and JSON's `\\u00HH`, on any of its characters, either case
of hex digit (one layer: `%252D` is not decoded twice). It is replaced where it stands, escapes and all, by
`[redacted key <hint> sha256:<sha256 of the decoded key>]`, so the hash is the one LiteLLM stores for that key.

The rule is one regular expression that RE2 (DuckDB) and Python's re read alike (leftmost-first alternation, greedy
repeats): `redact_text` applies it in Python, `redact_sql` in SQL (vectorised, for a batch before it is stored), and
`may_hold_secret` is the exact pre-test on raw bytes that lets a batch with no candidate skip both.
"""
from __future__ import annotations

import hashlib
import re

import duckdb
import numpy as np

# the plain shapes (as written), for reference and for tests: LiteLLM virtual keys (sk- + 22 url-safe chars),
# OpenAI (sk-proj-..., sk-svcacct-..., sk-...), Anthropic (sk-ant-...); a JSON Web Token is a bearer credential
# wherever it stands (a query string, a referer), 'Bearer' or not
KEY_PATTERN = r"sk-[A-Za-z0-9_\-]{16,}"
BEARER_PATTERN = r"(?i)(bearer\s+)([A-Za-z0-9_\-\.=]{16,})"
JWT_PATTERN = r"eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"
# what an already redacted value looks like: never redacted twice (no pattern can match inside it)
REDACTED_PREFIX = "[redacted key "

_KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_TOKEN_CHARS = _KEY_CHARS + ".="
_SPACES = "\t\n\x0c\r "
_CLASS_ESCAPES = {"-": "\\-", ".": "\\.", "\t": "\\t", "\n": "\\n", "\x0c": "\\f", "\r": "\\r"}


def _one(chars: str) -> str:
    """A regex for one character of `chars`: as itself, or as %HH, \\xHH or \\u00HH (hex digits in either case)."""
    codes: dict[int, list[int]] = {}
    for c in sorted(set(chars)):
        codes.setdefault(ord(c) >> 4, []).append(ord(c) & 15)
    hexes = "|".join(f"{hi:X}[{''.join(f'{lo:X}{lo:x}' if lo > 9 else str(lo) for lo in los)}]"
                     for hi, los in codes.items())
    raw = "".join(_CLASS_ESCAPES.get(c, c) for c in sorted(set(chars)))
    return f"(?:[{raw}]|(?:%|\\\\x|\\\\u00)(?:{hexes}))"


def _literal(text: str, any_case: bool = False) -> str:
    return "".join(_one(c + c.upper() if any_case else c) for c in text)


_KEY_CHAR, _TOKEN_CHAR = _one(_KEY_CHARS), _one(_TOKEN_CHARS)
KEY_RE = f"{_literal('sk-')}{_KEY_CHAR}{{16,}}"
JWT_RE = (f"{_literal('eyJ')}{_KEY_CHAR}{{5,}}{_literal('.')}{_literal('eyJ')}{_KEY_CHAR}{{5,}}{_literal('.')}"
          f"{_KEY_CHAR}*")
# 'Bearer', any case, and blanks (a form-encoded '+' too); its token: a key or JWT when it is one (so that it is
# hashed as that key), else any run of token characters
BEARER_PREFIX_RE = f"{_literal('bearer', any_case=True)}(?:{_one(_SPACES)}|\\+)+"
BEARER_RE = f"({BEARER_PREFIX_RE})({KEY_RE}|{JWT_RE}|{_TOKEN_CHAR}{{16,}})"
# everything that is redacted, in one expression. Group 1 is 'Bearer ' (kept), the secret is group 2 or group 3;
# no two alternatives can start at the same place, so their order does not change what is found
SECRET_PATTERN = f"{BEARER_RE}|({KEY_RE}|{JWT_RE})"
_SECRET = re.compile(SECRET_PATTERN)
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})|\\x([0-9A-Fa-f]{2})|\\u00([0-9A-Fa-f]{2})")
# the pre-test's needles (see may_hold_secret): in the bytes as they are, and in a copy with every byte OR 0x20 (ASCII
# letters lowered, '\\' become '|'): 'bearer', and an escape (%HH, \\xHH) of a character of 'sk-', 'eyJ' or
# 'bearer' (either case). re finds a literal twice as fast as bytes.find, and expressions that each start with a
# literal 8x faster than one that starts with a choice
_ESCAPED_CODES = rb"(?:73|6b|2d|65|79|4a|62|61|72|42|45|41|52)"
_RAW_NEEDLES = (re.compile(rb"sk-"), re.compile(rb"eyJ"))
_BACKSLASH_U = re.compile(rb"\\u")
_BEARER, _PERCENT_ESCAPE = re.compile(rb"bearer"), re.compile(rb"%" + _ESCAPED_CODES)
_BACKSLASH_ESCAPE = re.compile(rb"\|x" + _ESCAPED_CODES)


def key_hash(key: str) -> str:
    """LiteLLM's stored form of a virtual key: sha256 hex of the full key string."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    """LiteLLM's key_name form: 'sk-...' and the last four characters."""
    return f"sk-...{key[-4:]}"


def redacted(key: str) -> str:
    hint = key_hint(key) if key.startswith("sk-") else f"...{key[-4:]}"     # no 'sk-' hint for a token that has none
    return f"{REDACTED_PREFIX}{hint} sha256:{key_hash(key)}]"


def unescape(text: str) -> str:
    """`text` with each %HH, \\xHH and \\u00HH written as its character (one layer), as a key is hashed."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2) or m.group(3), 16)), text)


def _replace(m: re.Match) -> str:
    return (m.group(1) or "") + redacted(unescape(m.group(2) or m.group(3)))      # 'Bearer ' stays as written


def redact_text(text: str | None) -> str | None:
    """Replace every full key, JWT and bearer token in `text`, as written or escaped, by its hint and hash."""
    if text is None:
        return None
    return _SECRET.sub(_replace, text)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _unescape_sql(key: str) -> str:
    """SQL for unescape() of the SQL text `key`, which is known to hold nothing but a (maybe escaped) secret."""
    return (f"CASE WHEN contains({key}, '%') OR contains({key}, '\\') "
            f"THEN url_decode(replace(replace({key}, '\\x', '%'), '\\u00', '%')) ELSE {key} END")


def unescaped_key_sql(x: str) -> str:
    """SQL for the text `x` decoded when it is nothing but an escaped key (a key field holding `sk%2D...`), so that it
    is hashed as the key it stands for; any other text as it is."""
    return (f"CASE WHEN (contains({x}, '%') OR contains({x}, '\\')) AND regexp_full_match({x}, {_sql_str(KEY_RE)}) "
            f"THEN {_unescape_sql(x)} ELSE {x} END")


def _redacted_sql(key: str) -> str:
    """SQL for redacted() of the SQL text `key` (as matched, escapes and all: decoded here, like unescape)."""
    d = _unescape_sql(key)
    return (f"'{REDACTED_PREFIX}' || CASE WHEN starts_with({d}, 'sk-') THEN 'sk-...' ELSE '...' END || right({d}, 4)"
            f" || ' sha256:' || sha256({d}) || ']'")


_SECRET_SQL = _sql_str(SECRET_PATTERN)
# the same without capture groups, to mark matches with: RE2 finds a match 4x faster when it need not say where the
# groups of it are. 'Bearer ' is told from its token afterwards, by the anchored prefix alone
_MATCH_SQL = _sql_str(f"(?:{BEARER_PREFIX_RE})(?:{KEY_RE}|{JWT_RE}|{_TOKEN_CHAR}{{16,}})|{KEY_RE}|{JWT_RE}")
_BEARER_PREFIX_SQL = _sql_str(f"^({BEARER_PREFIX_RE})")


def may_hold_secret_sql(x: str) -> str:
    """A cheap SQL pre-test, exact like may_hold_secret: false means `x` holds no key, as written or escaped ('sk-',
    'eyJ' or 'bearer' as written, or an escape of one of their characters)."""
    escaped = f"(?i)(?:%|\\\\x|\\\\u00){_ESCAPED_CODES.decode()}"
    return (f"(contains({x}, 'sk-') OR contains({x}, 'eyJ') OR {x} ILIKE '%bearer%' OR "
            f"((contains({x}, '%') OR contains({x}, '\\')) AND regexp_matches({x}, {_sql_str(escaped)})))")


def contains_secret_sql(x: str) -> str:
    """A SQL predicate, true where the text `x` holds a key, JWT or bearer token (as written or escaped)."""
    return f"({may_hold_secret_sql(x)} AND regexp_matches({x}, {_SECRET_SQL}))"


def redact_sql(x: str) -> str:
    """SQL for redact_text(`x`), NULL kept NULL; `x` should be a column (it is named several times).

    Each secret is replaced where it stands and the text around it kept: regexp_replace writes every match between
    two NUL bytes, so that the text split on NUL has a match at every even place ('Bearer ' and its token, or a key
    or JWT). A NUL (or \\x01) of the text itself is escaped as \\x01 '0' (\\x01 '1') first and restored after: no
    secret holds either byte, and no secret can start with the digit that follows. Only a text that passes the
    pre-test is taken apart (which makes a text that holds a key 1.4x slower to redact, one that does not 5x faster)."""
    src = (f"CASE WHEN contains({x}, chr(0)) OR contains({x}, chr(1)) "
           f"THEN replace(replace({x}, chr(1), chr(1) || '1'), chr(0), chr(1) || '0') ELSE {x} END")
    marked = f"string_split(regexp_replace({src}, {_MATCH_SQL}, chr(0) || '\\0' || chr(0), 'g'), chr(0))"
    text = ("CASE WHEN contains(s, chr(1)) THEN replace(replace(s, chr(1) || '0', chr(0)), chr(1) || '1', chr(1)) "
            "ELSE s END")
    prefix = f"regexp_extract(s, {_BEARER_PREFIX_SQL}, 1)"
    secret = f"list_transform([{prefix}], lambda b: b || {_redacted_sql('substr(s, length(b) + 1)')})[1]"
    return (f"CASE WHEN {may_hold_secret_sql(x)} THEN array_to_string(list_transform({marked}, "
            f"lambda s, i: CASE WHEN i % 2 = 0 THEN {secret} ELSE {text} END), '') ELSE {x} END")


def may_hold_secret(data: bytes, start: int = 0, end: int | None = None, window: int = 1 << 20) -> bool:
    """A cheap, exact pre-test of raw log bytes: False means SECRET_PATTERN cannot match in data[start:end], as
    written or once decoded (JSON's \\u escapes included).

    A match needs 'sk-', 'eyJ' or 'bearer' (any case) in the text once its escapes are decoded: either as written,
    or with one of those characters escaped (%HH, \\xHH; any '\\u' answers True). 'sk-' and 'eyJ' are case-sensitive,
    so plain searches do; 'bearer' and the escapes' hex digits are not, so they are searched in a copy with every
    byte OR 0x20 (which maps a byte to 'b', 'e', 'a' or 'r' only from that letter's own upper or lower case, to
    '%' only from '%' or 0x05, and '\\' to '|'). Bytes that are not UTF-8 become \\xHH text with HH of 80 or more,
    which decodes to no character of a key. The data is looked at a window at a time, each window searched while
    it is in the CPU's cache (a third faster on 128 MiB than whole passes).
    """
    end = len(data) if end is None else end
    view = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    lowered = np.empty(min(window + 5, len(view)), dtype=np.uint8)
    for lo in range(0, len(view), window):
        hi = min(lo + window + 5, len(view))        # 5 bytes of overlap: a needle across two windows is seen
        a, b = start + lo, start + hi
        if any(needle.search(data, a, b) for needle in _RAW_NEEDLES):
            return True
        # the needles of escapes only where their first byte is (memchr finds that at memory speed)
        backslash = data.find(b"\\", a, b) >= 0
        if backslash and _BACKSLASH_U.search(data, a, b):
            return True
        low = np.bitwise_or(view[lo:hi], 0x20, out=lowered[:hi - lo])       # searched in place, not copied
        if _BEARER.search(low) or data.find(b"%", a, b) >= 0 and _PERCENT_ESCAPE.search(low):
            return True
        if (backslash or data.find(b"|", a, b) >= 0) and _BACKSLASH_ESCAPE.search(low):
            return True
    return False


def redact_columns(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], where: str = "true") -> int:
    """Redact keys in `columns` of `table` in place, in SQL; only rows holding one are rewritten. For staging
    (temporary) tables: a row of a case table must be redacted before it is stored, never after (the old value's
    bytes would stay in the file's free blocks). Returns how many values were rewritten."""
    rewritten = 0
    for col in columns:
        (n,) = con.execute(f"UPDATE {table} SET {col} = {redact_sql(col)} "
                           f"WHERE ({where}) AND {contains_secret_sql(col)}").fetchone()
        rewritten += int(n)
    return rewritten
