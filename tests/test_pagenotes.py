"""'more pages exist' notes name only pages still missing once every file of the run (or an earlier run) is in."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli

SAMPLE = Path(__file__).resolve().parent.parent / "sample_logs"


def ingest(case, *paths):
    r = run_cli("ingest", *paths, "--case", case)
    assert r.returncode == 0, r.stderr
    return r.stderr


def notes(case):
    import duckdb

    con = duckdb.connect(str(case), read_only=True)
    rows = con.execute("SELECT path, message FROM ingest_files WHERE message LIKE '%more pages exist%'").fetchall()
    con.close()
    return {Path(p).name for p, _ in rows}


def test_pages_loaded_together_leave_no_note(tmp_path):
    stderr = ingest(tmp_path / "c.duckdb", SAMPLE / "openai")
    assert "more pages exist" not in stderr and notes(tmp_path / "c.duckdb") == set()


def test_a_missing_page_is_named_until_it_arrives(tmp_path):
    case = tmp_path / "c.duckdb"
    page1 = SAMPLE / "openai" / "costs_page1.json"
    assert json.loads(page1.read_text())["has_more"] is True
    stderr = ingest(case, page1)
    assert "costs_page1.json: note: page cursor" in stderr and notes(case) == {"costs_page1.json"}
    ingest(case, SAMPLE / "openai" / "costs_page2.json")          # a later run brings the next page
    assert notes(case) == set()
