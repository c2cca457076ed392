"""forensics.spark.portable without Spark: which named steps run on Spark as sqlglot transpiles them, which stay on
DuckDB (named, with the reason), and the rewrites that make Spark compute what DuckDB does (issue #19)."""
from __future__ import annotations

import re

import duckdb
import pytest
import sqlglot

from forensics.spark import portable
from tests.conftest import steps_statements


def _selects(script: str) -> dict[str, str]:
    """step name -> the SELECT of its first run, from a report's steps.sql (CREATE ... AS stripped)."""
    out = {}
    for name, sql in steps_statements(script):
        m = re.match(r"CREATE OR REPLACE TEMP TABLE \w+ AS\s", sql)
        if name.startswith("--") or sql.startswith("INSERT"):
            continue
        out.setdefault(name, sql[m.end():] if m else sql)
    return out


def test_every_step_of_the_sample_report_transpiles_or_is_named(sample_report):
    """Each named step of the sample report is either on the DuckDB-only list or transpiles to one Spark statement."""
    _, out = sample_report
    selects = _selects((out / "steps.sql").read_text())
    on_spark = [n for n in selects if not portable.duckdb_only(n)]
    assert len(selects) >= 70 and len(on_spark) >= 60           # most of the analysis runs on Spark
    long_seen = False
    for name in on_spark:
        if len(selects[name]) > 20_000:          # the id lists (case.load_ids): one shape, long literals; one will do
            if long_seen:
                continue
            long_seen = True
        spark_sql = portable.to_spark(selects[name])
        # the same step tables, and no DuckDB-only construct left for Spark to choke on
        assert portable.step_tables(spark_sql) == portable.step_tables(selects[name]), name
        assert not re.search(r"\b(epoch_us|date_bin|to_microseconds|BY NAME)\b", spark_sql, re.I), name


def test_the_duckdb_only_list_names_real_steps_with_reasons(sample_report):
    """Every pattern on the list matches a step the sample report runs (no stale entry), and says why."""
    _, out = sample_report
    names = {n for n, _ in steps_statements((out / "steps.sql").read_text())}
    for pattern, reason in portable.DUCKDB_ONLY.items():
        assert any(re.fullmatch(pattern, n) for n in names), pattern
        assert len(reason) > 30
    assert portable.duckdb_only("incident_7_forged_forwarded_for")          # per-incident names match by pattern
    assert portable.duckdb_only("controls_key_budget_250_cutoffs")
    assert portable.duckdb_only("incident_1_cost_by_ip") is None


def test_division_is_double_as_in_duckdb():
    """DuckDB divides DECIMALs as DOUBLE; Spark would keep a rounded DECIMAL: the rewrite casts both sides."""
    spark_sql = portable.to_spark("SELECT sum(cost_usd) / count(*) AS mean FROM t")
    assert spark_sql == "SELECT CAST(SUM(cost_usd) AS DOUBLE) / CAST(COUNT(*) AS DOUBLE) AS mean FROM t"
    # a span of time divided stays an INTERVAL
    assert "DOUBLE" not in portable.to_spark("SELECT (max(t) - min(t)) / 4 AS g FROM x")


def test_money_literals_compare_at_full_scale():
    """A DECIMAL(38,0) money literal would make Spark compare DECIMAL(38,12) money rounded to whole dollars."""
    spark_sql = portable.to_spark("SELECT spent >= CAST('100' AS DECIMAL(38,0)) AS over FROM r")
    assert "DECIMAL(3, 0)" in spark_sql
    assert "DECIMAL(7, 6)" in portable.to_spark("SELECT CAST('0.000001' AS DECIMAL(38,6)) AS x")
    # what the literal means is unchanged (DuckDB reads the rewritten SQL back to the same value)
    back = sqlglot.transpile(portable.to_spark("SELECT CAST('-12.5' AS DECIMAL(38,1)) AS x"), read="spark",
                             write="duckdb")[0]
    assert duckdb.sql(back).fetchall() == duckdb.sql("SELECT CAST('-12.5' AS DECIMAL(38,1))").fetchall()


def test_nested_ctes_stay_nested():
    """The session template puts a WITH inside a subquery, twice in one step: hoisting both would clash."""
    sql = ("WITH a AS (SELECT * FROM (WITH ordered AS (SELECT 1 AS x) SELECT * FROM ordered)), "
           "b AS (SELECT * FROM (WITH ordered AS (SELECT 2 AS x) SELECT * FROM ordered)) SELECT * FROM a, b")
    spark_sql = portable.to_spark(sql)
    assert spark_sql.count("WITH ordered AS") == 2


def test_one_select_only():
    with pytest.raises(sqlglot.ParseError):
        portable.to_spark("SELECT 1; SELECT 2")


def test_step_tables():
    assert portable.step_tables("SELECT * FROM __f_a JOIN __F_b USING (x) WHERE y IN (SELECT y FROM __f_a)") == \
        ["__f_a", "__f_b"]


def test_entry_point_refuses_what_is_no_parquet_case(tmp_path, capsys):
    """`python -m forensics.spark` on a folder without the manifest: one line, exit 2, before any JVM starts."""
    from forensics.spark.__main__ import main

    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "not a Parquet case" in err and "export-case" in err
    assert not (tmp_path / "out").exists()


def test_duckdb_functions_spark_lacks_are_rewritten():
    """epoch_us, to_microseconds, range(a, b) t(d) and a row-value IN subquery: as Spark writes the same."""
    assert portable.to_spark("SELECT epoch_us(t) // 1000 AS ms FROM x") == \
        "SELECT UNIX_MICROS(CAST(t AS TIMESTAMP_LTZ)) DIV 1000 AS ms FROM x"
    assert "* INTERVAL '0.000001' SECOND" in portable.to_spark("SELECT t - to_microseconds(n) AS s FROM x")
    assert portable.to_spark("SELECT d FROM range(-2, 2 + 1) t(d)") == "SELECT d FROM RANGE(-2, 2 + 1) AS t(d)"
    assert portable.to_spark("SELECT * FROM c WHERE (a, b) IN (SELECT (a, b) FROM c)") == \
        "SELECT * FROM c WHERE (a, b) IN (SELECT a, b FROM c)"
