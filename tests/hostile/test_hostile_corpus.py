"""The hostile corpus (issue #7): every file of tests/hostile/cases/ ingests to the outcome cases.toml decides for it,
nothing crashes, every record is loaded or quarantined, and no full key from the corpus or the simulator reaches the
case. Huge inputs (a 10 MB line, a file of NULs) are built here in tmp_path from a recipe instead of being committed.
"""
from __future__ import annotations

import gzip
import json
import tomllib
from pathlib import Path

import pytest

from conftest import run_cli, run_process
from forensics import case as case_db
from forensics.ingest import ingest_file, ingest_paths
from forensics.schema import FAMILY_TABLES
from forensics.secrets import key_hash
from forensics.sources.litellm import litellm_read
from keyscan import leaked_keys, leaks_in_bytes  # noqa: E402  (tests/hostile/keyscan.py)

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
MANIFEST = tomllib.loads((HERE / "cases.toml").read_text())
KEYS = MANIFEST["keys"]
BY_FILE = {c["file"]: c for c in MANIFEST["case"]}
ROOT = HERE.parent.parent


def _ingest(tmp_path: Path, path: Path, name: str | None = None):
    con = case_db.connect(tmp_path / "case.duckdb")
    return con, ingest_file(con, path, name or path.name)


def full_keys() -> list[str]:
    """Every full key the corpus plants and every key the simulator uses (its scenarios' secret_keys)."""
    from forensics.simulate import secret_keys

    keys = set(KEYS.values())
    for scenario in ("open_proxy", "key_stuffing", "leaked_virtual_key"):
        keys |= set(secret_keys(scenario, 1).values())
    return sorted(keys)


def test_the_corpus_is_big_enough_and_small_on_disk():
    files = sorted(p.name for p in CASES.iterdir())
    assert len(MANIFEST["case"]) >= 40
    assert set(BY_FILE) <= set(files), set(BY_FILE) - set(files)
    # every file has an expected outcome, except the second copy of the duplicate pair (test_same_file_twice)
    assert set(files) - set(BY_FILE) == {"nginx_dup_b.log"}
    assert sum((CASES / f).stat().st_size for f in files) < 2_000_000


@pytest.mark.slow            # the corpus in one case (below) checks every file's outcome in the default tier
@pytest.mark.parametrize("case", MANIFEST["case"], ids=lambda c: c["file"])
def test_case_has_its_expected_outcome(tmp_path, case):
    con, r = _ingest(tmp_path, CASES / case["file"])
    assert r.status == case.get("status", "loaded"), r.message
    assert r.format == case.get("format"), r.message
    assert (r.records, r.loaded, r.quarantined) == (case["records"], case["loaded"], case["quarantined"]), r.message
    if "note" in case:
        assert case["note"] in (r.message or "")
    # the case holds exactly that: conservation per file, in the tables themselves
    (q,) = con.execute("SELECT count(*) FROM quarantine").fetchone()
    assert q == r.quarantined
    rows = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in FAMILY_TABLES)
    assert rows == r.loaded - r.merged
    reasons = dict(con.execute("SELECT record_no, reason FROM quarantine").fetchall())
    for record_no, part in case.get("reasons", []):
        assert part in reasons.get(record_no, ""), (record_no, reasons)
    # quarantined raw text is bounded and every quarantine row names its record
    assert con.execute("SELECT count(*) FROM quarantine WHERE record_no IS NULL OR length(raw) > 65536 "
                       "OR reason IS NULL OR reason = ''").fetchone()[0] == 0
    for sql, expected in case.get("checks", []):
        assert _as_text(con.execute(sql).fetchall()) == _as_text(expected), sql
    assert leaked_keys(con, full_keys()) == []
    con.close()


def _as_text(rows) -> list:
    def norm(v):
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return v if isinstance(v, (bool, int)) else str(v)
    return [norm(list(r)) for r in rows]


CLI_DEFAULT_TIER = 4         # the first few in the default tier; every one with --all


@pytest.mark.parametrize("case", [pytest.param(c, marks=() if i < CLI_DEFAULT_TIER else pytest.mark.slow)
                                  for i, c in enumerate(c for c in MANIFEST["case"] if c.get("cli"))],
                         ids=lambda c: c["file"])
def test_cli_exit_code_and_one_line_errors(tmp_path, case):
    path = CASES / case["file"]
    proc = run_cli("ingest", str(path), "--case", str(tmp_path / "c.duckdb"), "--json", cwd=ROOT)
    assert proc.returncode == case["exit"], proc.stderr
    assert "Traceback" not in proc.stderr
    # what the terminal shows is as safe as the case: no key, as written or escaped, in a reason or a note
    assert leaks_in_bytes((proc.stdout + proc.stderr).encode(), full_keys()) == []
    report = json.loads(proc.stdout)
    assert [(r["format"], r["records"], r["loaded"], r["quarantined"]) for r in report] == [
        (case.get("format"), case["records"], case["loaded"], case["quarantined"])]
    lines = proc.stderr.splitlines()
    # each problem is one line naming the file; a quarantined record also names its line
    assert all(str(path) in ln for ln in lines), lines
    for record_no, part in case.get("reasons", [])[:5] if case.get("format") != "unrecognised" else []:
        assert any(f"{path} line {record_no}: " in ln and part in ln for ln in lines), lines
    if case["exit"]:
        assert lines and len(lines) <= 6


@pytest.mark.integration
def test_debug_shows_the_traceback_of_a_failed_file(tmp_path):
    # real processes: what reaches the terminal of `python -m forensics`, with and without --debug
    path = CASES / "nginx_gzip_corrupt_start.log.gz"
    args = ["ingest", str(path), "--case", str(tmp_path / "c.duckdb")]
    quiet = run_process(*args, cwd=ROOT)
    loud = run_process(*args, "--debug", cwd=ROOT)
    assert quiet.returncode == loud.returncode == 1
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr


def test_all_of_the_corpus_in_one_case_leaks_no_key(hostile_corpus_case):
    """The whole corpus ingested together, like a responder's folder: every file has its expected outcome (status,
    format, counts, note, quarantine reasons by line), every file is accounted in the tables, no key anywhere."""
    path, reports = hostile_corpus_case
    con = case_db.connect(path, read_only=True)
    assert len(reports) == len(list(CASES.iterdir()))
    assert all(r.records == r.loaded + r.quarantined for r in reports)
    for r in reports:
        expected = BY_FILE.get(Path(r.path).name)
        if expected and not r.skipped:
            assert (r.status, r.format) == (expected.get("status", "loaded"), expected.get("format")), r.message
            assert (r.records, r.loaded, r.quarantined) == (expected["records"], expected["loaded"],
                                                            expected["quarantined"]), r.path
            assert expected.get("note", "") in (r.message or ""), r.message
            reasons = dict(con.execute("SELECT q.record_no, q.reason FROM quarantine q JOIN ingest_files f "
                                       "USING (file_id) WHERE f.path = ?", [r.path]).fetchall())
            assert len(reasons) == r.quarantined, r.path
            for record_no, part in expected.get("reasons", []):
                assert part in reasons.get(record_no, ""), (r.path, record_no, reasons)
    keys = full_keys()
    assert leaked_keys(con, keys) == []
    # the keys that were logged are still traceable: by their hash, as LiteLLM stores it
    # (a request seen in two files keeps the key of the first: only flat-2 is new when it comes)
    hashed = con.execute("SELECT list(request_id ORDER BY request_id) FROM llm_requests WHERE key_hash = ?",
                         [key_hash(KEYS["virtual"])]).fetchone()[0]
    assert hashed == ["flat-2"]
    con.close()


def test_the_simulated_incident_leaks_no_key(sample_case):
    con, _ = sample_case
    assert leaked_keys(con, full_keys()) == []


def test_same_file_twice_under_two_names(tmp_path):
    con = case_db.connect(tmp_path / "case.duckdb")
    a, b = ingest_paths(con, [CASES / "nginx_dup_a.log", CASES / "nginx_dup_b.log"])
    assert (a.skipped, b.skipped) == (False, True)
    assert b.sha256 == a.sha256 and b.format == a.format and b.message == "same content already in the case"
    assert con.execute("SELECT count(*) FROM http_requests").fetchone()[0] == 2


# ---- huge inputs, built from a recipe ------------------------------------------------------------------------

def _combined(ip: str, ua: str = "curl/8") -> str:
    return f'{ip} - - [17/Mar/2025:02:00:04 +0100] "GET / HTTP/1.1" 200 5 "-" "{ua}"\n'


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_a_10_mb_nginx_line_is_quarantined_cut_and_the_rest_loads(tmp_path, compress):
    data = (_combined("203.0.113.1") + _combined("203.0.113.2", "A" * (10 << 20) + OPENAI_IN_UA)
            + _combined("203.0.113.3")).encode()
    path = tmp_path / ("huge.log.gz" if compress else "huge.log")
    path.write_bytes(gzip.compress(data, 1) if compress else data)
    con, r = _ingest(tmp_path, path)
    assert (r.format, r.records, r.loaded, r.quarantined) == ("nginx.combined", 3, 2, 1)
    record_no, raw_len, reason = con.execute("SELECT record_no, length(raw), reason FROM quarantine").fetchone()
    assert record_no == 2 and raw_len <= 65536
    assert reason == (f"line of {len(_combined('203.0.113.2', 'A' * (10 << 20) + OPENAI_IN_UA)) - 1:,} bytes is "
                      "longer than the 1 MiB limit for one record: cut, only its first 64 KiB kept")
    assert leaked_keys(con, full_keys()) == []


OPENAI_IN_UA = f" key={KEYS['openai']}"


def test_a_file_of_nuls_is_unrecognised_and_kept_bounded(tmp_path):
    path = tmp_path / "nuls.log"
    path.write_bytes(b"\x00" * (3 << 20))                       # no newline at all: one 3 MiB "line"
    con, r = _ingest(tmp_path, path)
    assert (r.format, r.records, r.loaded, r.quarantined) == ("unrecognised", 1, 0, 1)
    raw_len, reason = con.execute("SELECT length(raw), reason FROM quarantine").fetchone()
    assert raw_len <= 65536 and "line of 3,145,728 bytes is longer than the 1 MiB limit" in reason


def test_a_payload_with_a_10_mb_prompt_still_loads(tmp_path):
    """A LiteLLM record may be big (a long prompt): 10 MB is under its limit, so it is a record, not a problem."""
    line = json.dumps({"id": "chatcmpl-big", "litellm_call_id": "c1", "startTime": 1742173204.5,
                       "endTime": 1742173205.5, "response_cost": 0.5, "model": "gpt-4o",
                       "messages": [{"role": "user", "content": "x" * (10 << 20)}]})
    path = tmp_path / "big.ndjson"
    path.write_text(line + "\n")
    con, r = _ingest(tmp_path, path)
    assert (r.format, r.records, r.loaded, r.quarantined) == ("litellm.payload_ndjson", 1, 1, 0)


def test_a_payload_line_over_the_limit_is_quarantined_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(litellm_read, "MAX_LINE_BYTES", 1 << 20)
    ok = json.dumps({"id": "chatcmpl-1", "litellm_call_id": "c1", "startTime": 1742173204.5, "response_cost": 0.5})
    big = json.dumps({"id": "chatcmpl-2", "litellm_call_id": "c2", "startTime": 1742173204.5,
                      "messages": [{"content": KEYS["anthropic"] + "y" * (2 << 20)}]})
    path = tmp_path / "big.ndjson"
    path.write_text(ok + "\n" + big + "\n" + ok.replace("chatcmpl-1", "chatcmpl-3") + "\n")
    con, r = _ingest(tmp_path, path)
    assert (r.records, r.loaded, r.quarantined) == (3, 2, 1)
    record_no, raw_len, reason = con.execute("SELECT record_no, length(raw), reason FROM quarantine").fetchone()
    assert record_no == 2 and raw_len <= 65536 and "limit for one record: cut" in reason
    assert leaked_keys(con, full_keys()) == []
