"""Case databases as INPUT: merged into the case being written, losslessly, never doubled, the source untouched."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from conftest import run_cli
from forensics.schema import CASE_TABLES

TABLES = tuple(t for t in CASE_TABLES if t not in ("ingest_files", "prices"))   # the rows files brought


def counts(path) -> dict:
    con = duckdb.connect(str(path), read_only=True)
    out = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    out["cost"] = con.execute("SELECT sum(cost_usd) FROM llm_requests").fetchone()[0]
    con.close()
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_merged_case_equals_ingesting_everything(two_cases, sample_case):
    base, a, b = two_cases
    before = _sha(a), _sha(b)
    r = run_cli("ingest", str(a), str(b), "--case", str(base / "c.duckdb"), "--json")
    assert r.returncode == 0, r.stderr
    files = json.loads(r.stdout)
    assert sum(f["skipped"] for f in files) == 7            # the OpenAI pages came with both cases
    con, _ = sample_case
    direct = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    direct["cost"] = con.execute("SELECT sum(cost_usd) FROM llm_requests").fetchone()[0]
    assert counts(base / "c.duckdb") == direct
    assert (_sha(a), _sha(b)) == before                     # the sources are evidence: untouched


def test_every_merged_file_still_adds_up(two_cases):
    base, _, _ = two_cases
    con = duckdb.connect(str(base / "c.duckdb"), read_only=True)
    rows = con.execute("""
        SELECT f.file_id, f.records, f.loaded, f.quarantined, f.merged,
               (SELECT count(*) FROM llm_requests r WHERE r.file_id = f.file_id)
             + (SELECT count(*) FROM http_requests h WHERE h.file_id = f.file_id)
             + (SELECT count(*) FROM provider_usage u WHERE u.file_id = f.file_id)
             + (SELECT count(*) FROM provider_costs c WHERE c.file_id = f.file_id) AS stored
        FROM ingest_files f WHERE f.status = 'loaded'""").fetchall()
    con.close()
    assert len(rows) == 22
    for file_id, records, loaded, quarantined, merged, stored in rows:
        assert records == loaded + quarantined
        assert stored == loaded - merged, file_id
    assert sum(r[4] for r in rows) == 1558     # each callback payload met its request from the spend-log export


def test_merging_again_doubles_nothing(two_cases):
    base, a, _ = two_cases
    before = counts(base / "c.duckdb")
    r = run_cli("ingest", str(a), "--case", str(base / "c.duckdb"), "--json")
    assert r.returncode == 0 and all(f["skipped"] for f in json.loads(r.stdout))
    assert counts(base / "c.duckdb") == before


@pytest.mark.slow
def test_report_on_two_cases_finds_the_attack(two_cases, sample_report):
    base, a, b = two_cases
    out = base / "report"
    r = run_cli("report", str(a), str(b), "--out", str(out), "--no-detector")
    assert r.returncode == 0, r.stderr
    found = json.loads((out / "findings.json").read_text())
    expected, _ = sample_report
    assert [(i["kind"], i["requests"], i["cost_usd"]) for i in found["incidents"]] == \
        [(i["kind"], i["requests"], i["cost_usd"]) for i in expected["incidents"]]


def test_a_file_that_is_no_case_is_a_usage_error(tmp_path):
    bogus = tmp_path / "notes.duckdb"
    bogus.write_text("not a database\n")
    r = run_cli("ingest", str(bogus), "--case", str(tmp_path / "c.duckdb"))
    assert r.returncode == 2 and "cannot read it as a case database" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("ingest", str(tmp_path / "c.duckdb"), "--case", str(tmp_path / "c.duckdb"))
    assert r.returncode == 2


def test_a_request_in_both_cases_keeps_every_field(two_cases, sample_case):
    """The spend-log row lacks what only the callback payload logs (user agent, max_tokens): the merge fills it."""
    base, _, _ = two_cases
    con, _ = sample_case
    cols = "count(user_agent), count(max_tokens), count(client_ip), count(key_hash)"
    direct = con.execute(f"SELECT {cols} FROM llm_requests").fetchone()
    merged = duckdb.connect(str(base / "c.duckdb"), read_only=True)
    assert merged.execute(f"SELECT {cols} FROM llm_requests").fetchone() == direct
    merged.close()
