"""Property tests (hypothesis) for every parser: for any bytes, and for a valid file of each format mutated (bytes
flipped, cut short, hostile lines inserted), ingest raises nothing, loads a plain-text file (never 'failed'), and
read = loaded + quarantined holds in the counts and in the case's tables. And for the redaction of keys: a key hidden
behind any mix of escapes is found by the pre-test and redacted, the same in Python and in SQL. A fixed,
derandomised budget for CI.
"""
from __future__ import annotations

import gzip
import tempfile
import tomllib
from pathlib import Path

import duckdb

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensics import case as case_db
from forensics.ingest import ingest_file
from forensics.schema import FAMILY_TABLES
from forensics.secrets import may_hold_secret, redact_text
from conftest import examples  # tests/conftest.py: the tier's hypothesis budget
from keyscan import decoded, middle  # tests/hostile/keyscan.py

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUDGET = settings(max_examples=examples(8), deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# one valid file per format family, cut to a few records so each example is quick
SEEDS = {
    "nginx.combined": ("nginx/combined.log", 1500), "nginx.main": ("nginx/main.log", 1500),
    "nginx.timings": ("nginx/timings.log", 1500), "nginx.ingress": ("nginx/ingress.log", 1500),
    "nginx.json": ("nginx/json.log", 1500), "nginx.json_default": ("nginx/json_default.log", 1500),
    "nginx.error": ("nginx/error.log", 2500), "litellm.spendlogs_object": ("litellm/gcs_spendlogs_row.json", 0),
    "litellm.spendlogs_csv": ("litellm/spendlogs.csv", 4000), "litellm.spendlogs_json": ("litellm/spendlogs_api.json", 0),
    "litellm.spendlogs_ndjson": ("litellm/spendlogs.ndjson", 4000), "litellm.payload_ndjson": ("litellm/payload.ndjson", 0),
    "litellm.payload_json_array": ("litellm/payload_batches.json", 0),
    "litellm.payload_object": ("litellm/time-2025-06-22T18-03-20-123456_chatcmpl-s3-object-0001.json", 0),
    "litellm.flat_spend": ("litellm/flat_spend.ndjson", 3000),
    "openai.usage_completions": ("openai/usage_completions_current.json", 0), "openai.costs": ("openai/costs.json", 0),
    "openai.usage_csv": ("openai/completions_usage_2024-11-01_2024-11-01.csv", 0),
    "openai.costs_csv": ("openai/costs_2024-11-01_2024-11-02.csv", 0),
    "anthropic.usage_report": ("anthropic/usage_report.json", 0), "anthropic.cost_report": ("anthropic/cost_report.json", 0),
}
HOSTILE_LINES = [b"", b"\x00" * 40, b"\xff\xfe\xfd", b"\xef\xbb\xbf{", b"\r", b'"', b"{}", b"[]", b"null", b"{" * 300,
                 b'{"a": 1, "a": 2}', b"Authorization: Bearer sk-proj-AAAAAAAAAAAAAAAAAAAAAAAA", b"\x16\x03\x01\x02\x00",
                 b"request_id,startTime\n1,2", b'{"id": "x", "startTime": "yesterday", "response_cost": "NaN"}']


def _seed(fmt: str) -> bytes:
    name, cut = SEEDS[fmt]
    data = (ASSETS / name).read_bytes()
    if cut and len(data) > cut:
        data = data[:data.rindex(b"\n", 0, cut) + 1]
    return data


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """`data` with a few edits: bytes flipped or replaced, a hostile line inserted, a slice deleted, the end cut."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "bytes"]))
        pos = draw(st.integers(0, len(out)))
        if op == "flip" and out:
            i = min(pos, len(out) - 1)
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            out[pos:pos] = draw(st.sampled_from(HOSTILE_LINES)) + b"\n"
        elif op == "delete":
            del out[pos:pos + draw(st.integers(1, 200))]
        elif op == "cut":
            del out[pos:]
        else:
            out[pos:pos] = draw(st.binary(max_size=64))
    return bytes(out)


def check_ingest(data: bytes, name: str) -> None:
    """The properties: nothing raised, a plain-text file never fails, and the counts add up in the case."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        con = case_db.connect(":memory:")
        try:
            r = ingest_file(con, path, name)
            if data[:2] != b"\x1f\x8b":
                assert r.status == "loaded", r.message
            else:
                assert r.status == "loaded" or "gzip" in (r.message or ""), r.message
            if r.message:
                assert "\n" not in r.message
            assert r.records == r.loaded + r.quarantined
            if r.status == "loaded":
                fid = con.execute("SELECT max(file_id) FROM ingest_files").fetchone()[0]
                (q,) = con.execute("SELECT count(*) FROM quarantine WHERE file_id = ?", [fid]).fetchone()
                stored = sum(con.execute(f"SELECT count(*) FROM {t} WHERE file_id = ?", [fid]).fetchone()[0]
                             for t in FAMILY_TABLES)
                assert q == r.quarantined and stored == r.loaded - r.merged
                assert "sk-proj-AAAAAAAAAAAAAAAAAAAAAAAA" not in str(con.execute(
                    "SELECT list(raw) FROM quarantine").fetchone()[0])
        finally:
            con.close()


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_seed_is_its_format(fmt):
    """The seeds really are the formats they stand for (else the mutations test nothing)."""
    from forensics.ingest import detect_format

    _, found = detect_format(_seed(fmt)[:65536], Path(SEEDS[fmt][0]))
    assert found == fmt


@pytest.mark.parametrize("fmt", sorted(SEEDS))
@BUDGET
@given(data=st.data())
def test_mutated_files_of_every_format(fmt, data):
    seed = _seed(fmt)
    blob = data.draw(mutated(seed))
    check_ingest(blob, Path(SEEDS[fmt][0]).name)


@pytest.mark.parametrize("fmt", ["nginx.combined", "litellm.payload_ndjson", "litellm.spendlogs_csv"])
@BUDGET
@given(data=st.data())
def test_mutated_gzip_files(fmt, data):
    blob = gzip.compress(_seed(fmt), mtime=0)
    cut = data.draw(st.integers(10, len(blob)))
    check_ingest(data.draw(mutated(blob[:cut])), Path(SEEDS[fmt][0]).name + ".gz")


@settings(max_examples=examples(40), deadline=None, derandomize=True, database=None)
@given(blob=st.binary(max_size=2048))
def test_arbitrary_bytes(blob):
    check_ingest(blob, "anything.log")


@settings(max_examples=examples(40), deadline=None, derandomize=True, database=None)
@given(prefix=st.sampled_from([b"{", b"[", b'{"data": [', b'{"object": "page", "data": [', b"request_id,startTime,spend\n",
                               b'203.0.113.7 - - [17/Mar/2025:02:00:04 +0100] "', b'{"time_local": "']),
       blob=st.binary(max_size=1024))
def test_arbitrary_bytes_after_a_format_s_opening(prefix, blob):
    check_ingest(prefix + blob, "anything.json")


# ---- keys behind escapes (issue #15) -------------------------------------------------------------------------------

KEYS = tomllib.loads((Path(__file__).resolve().parent / "cases.toml").read_text())["keys"]
_SQL = duckdb.connect()
_ESCAPES = ["{c}", "{c}", "{c}", "%{h:02X}", "%{h:02x}", "\\x{h:02X}", "\\x{h:02x}", "\\u{h:04x}", "\\u{h:04X}"]


def _sql_redacted(text: str) -> str:
    from forensics.secrets import redact_sql

    return _SQL.execute(f"SELECT {redact_sql('x')} FROM (SELECT ?::VARCHAR AS x)", [text]).fetchone()[0]


@st.composite
def escaped(draw, text: str) -> str:
    """`text` with each character written as itself or percent-, nginx- or JSON-escaped, either case of hex."""
    return "".join(draw(st.sampled_from(_ESCAPES)).format(c=c, h=ord(c)) for c in text)


@st.composite
def hidden_key(draw) -> tuple[str, str]:
    key = draw(st.sampled_from(sorted(KEYS.values())))
    text = draw(escaped(key))
    if not key.startswith(("sk-", "eyJ")):          # a token of no known shape: only 'Bearer' gives it away
        bearer = "".join(draw(st.sampled_from([c, c.upper()])) for c in "bearer")
        text = draw(escaped(bearer)) + draw(st.sampled_from([" ", "  ", "+", "%20", "\\x09", "\t"])) + text
    filler = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=12)
    return key, draw(filler) + text + draw(filler)


@settings(max_examples=examples(150), deadline=None, derandomize=True, database=None)
@given(case=hidden_key())
def test_a_key_behind_any_mix_of_escapes_is_found_and_redacted(case):
    key, text = case
    assert may_hold_secret(text.encode())
    # looked at in windows of 8 bytes, the key's clue at any place, across windows too
    assert all(may_hold_secret(b"." * shift + text.encode(), window=8) for shift in range(9))
    out = redact_text(text)
    assert middle(key) not in decoded(out) and key not in decoded(out), out
    assert "[redacted key " in out
    assert _sql_redacted(text) == out


_FRAGMENTS = ["sk-", "sk", "s", "k", "-", "%2D", "%2d", "%73", "%6B", "%6b", "\\x2D", "\\x73", "\\u002d", "eyJ",
              "ey", "%4A", "\\x4a", ".", "%2E", "Bearer", "bEaReR", "%42earer", "be%61rer", " ", "%20", "+", "\\x20",
              "AAAAAAAA", "aZ09_-aZ09", "==", "\\", "%", "\xff", "\x00", "\x01", "\r", "[redacted key "]


@settings(max_examples=examples(300), deadline=None, derandomize=True, database=None)
@given(parts=st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=4)), max_size=40))
def test_the_prescan_misses_nothing_and_sql_redacts_as_python_does(parts):
    """may_hold_secret is exact (False: the redaction finds nothing), and SQL and Python redact alike."""
    text = "".join(parts)
    out = redact_text(text)
    if out != text:
        assert may_hold_secret(text.encode())
    assert redact_text(out) == out                  # a redacted text is left as it is
    assert _sql_redacted(text) == out
