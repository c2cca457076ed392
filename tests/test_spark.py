"""The Spark tier (issue #19): the investigation on Apache Spark (local mode) over a case exported as Parquet gives
the findings.json DuckDB gives over the same folder: every field, money exact, windows and addresses identical. One
SparkSession for the whole test session (conftest.spark_session). The anomaly detector is left out: findings.json
holds none of its output (under the Spark engine its feature step runs on DuckDB)."""
from __future__ import annotations

import json
import time

import pytest

from forensics import parquet_case
from forensics.analysis.controls import DEFAULT_CONTROLS
from forensics.api import Case, write_report
from forensics.spark import open_case
from forensics.spark.portable import duckdb_only
from tests.conftest import SAMPLE_SCENARIO, steps_statements

pytestmark = pytest.mark.spark

# sample_logs/ (an open proxy: keyless traffic, nginx and provider exports) and a leaked virtual key (a valid key
# used from new addresses): different detectors, incidents and controls
SCENARIOS = [SAMPLE_SCENARIO, ("leaked_virtual_key", 1)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s[0]}-{s[1]}")
def test_findings_on_spark_equal_duckdb(scenario, scenario_case, spark_session, tmp_path):
    folder = tmp_path / "case"
    parquet_case.export(scenario_case(*scenario).con.con, folder)
    started = time.perf_counter()
    with Case.open(folder, read_only=True) as duck:
        expected, _ = write_report(duck, tmp_path / "duckdb", list(DEFAULT_CONTROLS), run_detector=False)
    on_duckdb = time.perf_counter() - started
    with open_case(folder, spark_session) as case:
        got, _ = write_report(case, tmp_path / "spark", list(DEFAULT_CONTROLS), run_detector=False)
        ran = dict(case.engine.ran)
    print(f"{scenario}: DuckDB {on_duckdb:.1f}s, Spark {time.perf_counter() - started - on_duckdb:.1f}s")

    assert expected["incidents"]                                     # a case with something to find
    for findings in (expected, got):
        findings.pop("generated_at")
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    # most steps ran on Spark; exactly the named ones, and the statements that are no SELECT, on DuckDB
    on_spark = [n for n, e in ran.items() if e == "spark"]
    print(f"{scenario}: {len(on_spark)} of {len(ran)} named steps on Spark; on DuckDB: "
          f"{sorted(set(ran) - set(on_spark))}")
    assert len(on_spark) >= 0.75 * len(ran)
    assert all(duckdb_only(n) is None for n in on_spark)
    # steps.sql is the DuckDB SQL whichever engine ran each step: the same script
    assert steps_statements((tmp_path / "spark" / "steps.sql").read_text()) == \
        steps_statements((tmp_path / "duckdb" / "steps.sql").read_text())

