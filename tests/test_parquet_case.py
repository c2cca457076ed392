"""`export-case --parquet DIR` (issue #19): the case as Parquet partitioned by day, readable by any engine, and the
folder read in place as a case with the same results as the case it came from."""
from __future__ import annotations

import json
import shutil

import duckdb
import pytest

from conftest import SAMPLE_SCENARIO, run_cli, steps_statements
from forensics import parquet_case
from forensics.api import Case
from forensics.case import NotACase
from forensics.outputs import findings as findings_out
from forensics.schema import CASE_TABLES


@pytest.fixture(scope="module")
def parquet_folder(sample_case, tmp_path_factory):
    con, _ = sample_case
    out = tmp_path_factory.mktemp("parquet") / "case"
    manifest = parquet_case.export(con.con, out)
    return out, manifest


def test_every_row_of_every_table_is_in_the_folder(parquet_folder, sample_case):
    out, manifest = parquet_folder
    con, _ = sample_case
    assert set(manifest["tables"]) == set(CASE_TABLES)
    with Case.open(out, read_only=True) as pq:
        for table in CASE_TABLES:
            rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert manifest["tables"][table]["rows"] == rows, table
            # the same rows, column for column (a multiset: EXCEPT ALL both ways is empty)
            columns = [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE "
                                                 "table_name = ? AND table_schema = 'main'", [table]).fetchall()]
            mine = con.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL").fetchall()
            assert pq.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL").fetchall() == mine, table
            types = pq.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
                               [table]).fetchall()
            assert types == con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                        "WHERE table_name = ? AND table_schema = 'main'", [table]).fetchall()


def test_the_layout_is_hive_by_day_and_keeps_the_types(parquet_folder):
    """What another engine sees: a `day` partition column, money as DECIMAL(38,12), times as timestamps."""
    out, manifest = parquet_folder
    days = sorted(p.name for p in (out / "llm_requests").iterdir())
    assert days[0] == "day=2026-11-09" and "day=2026-11-16" in days
    raw = duckdb.connect()
    by_day = dict(raw.execute(f"""
        SELECT day::VARCHAR, count(*) FROM read_parquet('{out}/llm_requests/**/*.parquet', hive_partitioning = true)
        GROUP BY ALL""").fetchall())
    assert sum(by_day.values()) == manifest["tables"]["llm_requests"]["rows"]
    schema = dict(raw.execute(f"SELECT name, type FROM parquet_schema('{out}/llm_requests/day=2026-11-16/*.parquet')"
                              ).fetchall())
    assert schema["start_time"] == "INT64" and schema["cost_usd"] == "FIXED_LEN_BYTE_ARRAY"
    (scale, precision) = raw.execute(f"""SELECT scale, precision FROM parquet_schema(
        '{out}/llm_requests/day=2026-11-16/*.parquet') WHERE name = 'cost_usd'""").fetchone()
    assert (precision, scale) == (38, 12)
    assert not (out / "quarantine").exists() and manifest["tables"]["quarantine"]["rows"] == 0


def test_the_investigation_finds_the_same_on_the_folder(parquet_folder, scenario_case):
    out, _ = parquet_folder
    expected = scenario_case(*SAMPLE_SCENARIO).findings
    with Case.open(out, read_only=True) as pq:
        found = findings_out.build(pq.investigate())
    found.pop("generated_at", None)
    assert found == {k: v for k, v in expected.items() if k != "generated_at"}


def test_a_folder_missing_rows_is_refused_by_name(parquet_folder, tmp_path):
    out, manifest = parquet_folder
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    shutil.rmtree(broken / "llm_requests" / "day=2026-11-16")
    with pytest.raises(NotACase, match=r"llm_requests: [\d,]+ rows in its Parquet files, the manifest says 16,006"):
        Case.open(broken, read_only=True)
    r = run_cli("report", broken, "--out", tmp_path / "out")
    assert r.returncode == 2 and "the manifest says 16,006" in r.stderr and "Traceback" not in r.stderr
    (broken / parquet_case.MANIFEST).write_text(json.dumps({"schema": "forensics.case-parquet/1",
                                                            "case_schema_version": 99, "tables": {}}))
    with pytest.raises(NotACase, match="case schema version 99"):
        Case.open(broken, read_only=True)


def test_a_parquet_case_is_named_alone_and_never_written(parquet_folder, tmp_path):
    out, _ = parquet_folder
    log = tmp_path / "access.log"
    log.write_text('198.51.100.4 - - [16/Nov/2026:03:00:04 +0100] "GET / HTTP/1.1" 200 5 "-" "x"\n')
    r = run_cli("report", out, log, "--out", tmp_path / "out")
    assert r.returncode == 2 and "a Parquet case is read in place" in r.stderr
    r = run_cli("ingest", out, "--case", tmp_path / "c.duckdb")
    assert r.returncode == 2 and "cannot be merged" in r.stderr
    with pytest.raises(NotACase, match="never written"):
        Case.open(out)


def test_export_case_refuses_a_folder_that_holds_something(tmp_path, parquet_folder):
    out, _ = parquet_folder
    r = run_cli("export-case", out, "--parquet", out)
    assert r.returncode == 2 and "not an empty folder" in r.stderr


@pytest.mark.slow
def test_report_and_detect_on_the_folder_equal_those_on_the_case(parquet_folder, sample_report, sample_case_copy,
                                                                  tmp_path):
    """The whole command line on the Parquet folder: findings.json equal to the sample report's but for the time
    it was generated, and the detector's scores equal to those on the case database."""
    out, _ = parquet_folder
    r = run_cli("report", out, "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr
    found = json.loads((tmp_path / "report" / "findings.json").read_text())
    expected, _ = sample_report
    assert {k: v for k, v in found.items() if k != "generated_at"} == \
        {k: v for k, v in expected.items() if k != "generated_at"}
    # steps.sql re-runs in a plain DuckDB session: its head makes the folder's files the case's tables
    con = duckdb.connect()
    steps = steps_statements((tmp_path / "report" / "steps.sql").read_text())
    assert len(steps) > 50
    for name, sql in steps:
        con.execute(sql)
    [inc] = found["incidents"]
    assert sorted(r for (r,) in con.execute("SELECT request_id FROM __f_incident_1").fetchall()) == \
        sorted(inc["request_ids"])
    assert run_cli("detect", out, "--out", tmp_path / "a.csv").returncode == 0
    assert run_cli("detect", sample_case_copy, "--out", tmp_path / "b.csv").returncode == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_the_folders_tables_are_the_cases_own(parquet_folder):
    """A case exported to Parquet is views: the analyses that ask whether the case holds a table (the provider's
    listed buckets, nginx's error log, LiteLLM's stdout log) see them (`duckdb_tables()` lists no views: the
    listed buckets were read as missing and a key quiet at its export's start began where it first spent)."""
    from forensics.analysis.provider_spikes import has_listed

    out, _ = parquet_folder
    with Case.open(out, read_only=True) as pq:
        assert all(pq.has_table(t) for t in CASE_TABLES)
        assert not pq.has_table("no_such_table") and has_listed(pq)
