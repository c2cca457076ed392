"""steps.sql re-runs as printed against the case it was written for; parameters become exact SQL literals."""
from __future__ import annotations

import re
import shutil
from datetime import datetime
from decimal import Decimal

import duckdb
import pytest

from conftest import steps_statements as statements
from forensics.analysis.steps import StepLog, inline_params, literal


def test_steps_sql_reruns_against_its_case(sample_report, tmp_path):
    findings, out = sample_report
    case = tmp_path / "case.duckdb"
    shutil.copy(out / "case.duckdb", case)
    con = duckdb.connect(str(case))
    con.execute("SET TimeZone = 'UTC'")
    steps = statements((out / "steps.sql").read_text())
    assert len(steps) > 50
    for name, sql in steps:
        # strings and comments out, left to right (a comment may hold an apostrophe: "-- no key's use")
        code = re.sub(r"'(?:[^']|'')*'|--[^\n]*", "", sql)
        assert "?" not in code, f"{name}: a parameter left as ?"
        con.execute(sql)        # fails the test with DuckDB's own message if any statement does not run
    # what the script rebuilt is what the report says
    [inc] = findings["incidents"]
    ids = sorted(r for (r,) in con.execute("SELECT request_id FROM __f_incident_1").fetchall())
    assert ids == sorted(inc["request_ids"])
    rows = dict(con.execute("SELECT control, loss_usd FROM __f_controls_summary").fetchall())
    for c in inc["controls"]:
        assert float(round(rows[c["control"]], 6)) == c["loss_usd"], c["control"]
    con.close()


def test_literals_keep_types_and_values():
    con = duckdb.connect()
    values = [None, True, 7, -2.5, Decimal("347.230000000001"), Decimal("50"), datetime(2026, 11, 16, 2, 0, 8, 621251),
              "it's; -- not a comment ?", ["a", "b'c"], [1, 2]]
    for v in values:
        (back,) = con.execute(f"SELECT {literal(v)}").fetchone()
        assert back == v, (v, literal(v), back)


def test_inline_params_skips_quotes_and_comments():
    sql = "SELECT '?' AS q, \"a?\" , ? AS x -- why?\n, ? AS y"
    assert inline_params(sql, [1, "z"]) == "SELECT '?' AS q, \"a?\" , 1 AS x -- why?\n, 'z' AS y"
    with pytest.raises(ValueError):
        inline_params("SELECT ?, ?", [1])
    with pytest.raises(ValueError):
        inline_params("SELECT 1", [1])


def test_step_log_keeps_every_run_in_order():
    log = StepLog()
    log.add("a", "SELECT ?", [1])
    log.add("b", "SELECT 2")
    log.add("a", "SELECT ?", [3])
    assert log.names() == ["a", "b"] and log.sql_of("a") == "SELECT 3"
    assert log.script() == "-- step: a\nSELECT 1;\n\n-- step: b\nSELECT 2;\n\n-- step: a\nSELECT 3;\n\n"
