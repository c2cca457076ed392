"""Looking for full keys the way an attacker (or a careless reader) would: as written, and percent-encoded
(`sk%2Dproj%2D...`), nginx-escaped (`sk\\x2Dproj...`) or JSON-escaped (`sk\\u002dproj...`), in case tables and in
the bytes of any file. Independent of forensics.secrets on purpose: the tests check that module, not with it.
"""
from __future__ import annotations

import re
from pathlib import Path

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})|\\x([0-9A-Fa-f]{2})|\\u00([0-9A-Fa-f]{2})")


def decoded(text: str) -> str:
    """`text` with every %HH, \\xHH and \\u00HH written as the character it stands for (one layer)."""
    return _ESCAPE.sub(lambda m: chr(int(next(g for g in m.groups() if g), 16)), text)


def pct(text: str, chars: str | None = None, lower: bool = False) -> str:
    """`text` with `chars` (default: every character) percent-encoded."""
    fmt = "%{:02x}" if lower else "%{:02X}"
    return "".join(fmt.format(ord(c)) if chars is None or c in chars else c for c in text)


def xesc(text: str, chars: str | None = None, lower: bool = False) -> str:
    """`text` with `chars` (default: every character) written as nginx's \\xHH."""
    fmt = "\\x{:02x}" if lower else "\\x{:02X}"
    return "".join(fmt.format(ord(c)) if chars is None or c in chars else c for c in text)


def uesc(text: str, chars: str | None = None) -> str:
    """`text` with `chars` (default: every character) written as JSON's \\u00HH."""
    return "".join(f"\\u{ord(c):04x}" if chars is None or c in chars else c for c in text)


def middle(key: str) -> str:
    """16 characters from the middle of a key: never part of its hint (the last four), always part of the secret."""
    at = max(3, len(key) // 2 - 8)
    return key[at:at + 16]


def forms(key: str) -> set[bytes]:
    """The byte strings that would give a key away: the key as written and escaped in every way above, and a
    chunk of its middle (a key cut short, or the rest of it after an escaped character)."""
    seps = "-._="
    texts = {key, middle(key), pct(key), pct(key, lower=True), xesc(key), xesc(key, lower=True), uesc(key),
             pct(key, seps), pct(key, seps, lower=True), xesc(key, seps), xesc(key, seps, lower=True), uesc(key, seps)}
    return {t.encode() for t in texts}


def leaks_in_bytes(data: bytes, keys: list[str]) -> list[str]:
    """The keys any form of which occurs in `data` (shown by their first 8 characters)."""
    return [k[:8] + "..." for k in keys if any(f in data for f in forms(k))]


def leaks_in_files(folder: Path, keys: list[str]) -> list[tuple[str, str]]:
    """(file, key) for every file under `folder` whose bytes hold a form of a key."""
    found = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            found += [(str(p.relative_to(folder)), k) for k in leaks_in_bytes(data, keys)]
    return found


def _holding(values: list[str], keys: list[str]) -> list[str]:
    """The keys (first 8 characters) a chunk of whose middle stands in any value, as written or decoded; every
    16-character window of a value is looked up in a set, so thousands of keys cost no more than a few."""
    chunks = {middle(k): k for k in keys}
    found = set()
    for v in values:
        for text in {v, decoded(v)}:
            found |= {chunks[text[i:i + 16]] for i in range(len(text) - 15) if text[i:i + 16] in chunks}
    return [k[:8] + "..." for k in keys if k in found]


def leaked_keys(con, keys: list[str]) -> list[tuple[str, str, str]]:
    """(table, column, key) for every key found, as written or escaped, whole or a chunk of its middle, in any text
    column of the case. SQL picks the values that could hold one (a key's start, an escape, 'bearer', or a key of
    another shape); Python then looks for the keys in those few values."""
    found = []
    others = [k for k in keys if not k.startswith(("sk-", "eyJ"))]
    columns = con.execute("SELECT table_name, column_name FROM information_schema.columns "
                          "WHERE data_type = 'VARCHAR' AND table_schema = 'main'").fetchall()
    for table, column in columns:
        col = f'"{column}"'
        cond = " OR ".join([f"regexp_matches({col}, '(?i)sk-[a-z0-9]|eyJ|%[0-9a-f]{{2}}|\\\\[xu]|bearer')"]
                           + [f"contains({col}, ?)" for _ in others])
        values = [v for (v,) in con.execute(f'SELECT DISTINCT {col} FROM "{table}" WHERE {cond}', others).fetchall()]
        found += [(table, column, k) for k in _holding(values, keys)]
    return found
