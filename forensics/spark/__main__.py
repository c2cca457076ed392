"""`python -m forensics.spark CASE_DIR --out OUT`: `report` on Spark. CASE_DIR is a case exported with
`forensics export-case CASE --parquet CASE_DIR`; OUT gets the same files as `report` (findings.json, report.html,
report.md, figures/, steps.sql: the DuckDB SQL of every step, whichever engine ran it). Under `spark-submit` the
session is the one spark-submit configured (master, memory); run alone, a small local one (local[2], 1 GB)."""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forensics.spark", description=__doc__.split("\n")[0])
    parser.add_argument("case_dir", metavar="CASE_DIR", help="a Parquet case (export-case --parquet)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--master", default=None,
                        help="Spark master when not run by spark-submit (default local[2])")
    parser.add_argument("--no-detector", action="store_true", help="skip the anomaly detector")
    args = parser.parse_args(argv)

    from forensics import parquet_case

    if not parquet_case.is_folder(args.case_dir):       # before a JVM is started for nothing
        print(f"forensics.spark: {args.case_dir}: not a Parquet case (no {parquet_case.MANIFEST}; write one with "
              "`forensics export-case CASE --parquet DIR`)", file=sys.stderr)
        return 2
    from forensics.analysis.controls import DEFAULT_CONTROLS
    from forensics.api import write_report
    from forensics.case import NotACase
    from forensics.spark import open_case
    from forensics.spark.engine import local_session

    # pyspark's notice that it is not yet tested with pandas 3: the engine hands results over as Arrow, not pandas
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    started = time.perf_counter()
    if "PYSPARK_GATEWAY_PORT" in os.environ:          # spark-submit started the JVM and configured the session
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.appName("forensics").getOrCreate()
    else:
        spark = local_session(master=args.master or "local[2]")
    try:
        try:
            case = open_case(args.case_dir, spark)
        except NotACase as e:
            print(f"forensics.spark: {e}", file=sys.stderr)
            return 2
        with case:
            result, _ = write_report(case, Path(args.out), list(DEFAULT_CONTROLS), run_detector=not args.no_detector)
            ran = case.engine.ran
    finally:
        spark.stop()
    on_duck = sorted(n for n, e in ran.items() if e == "duckdb")
    print(f"{len(ran) - len(on_duck)} of {len(ran)} named steps ran on Spark; on DuckDB: {', '.join(on_duck)}")
    print(f"status: {result['status']}, {len(result['incidents'])} incidents; wrote {Path(args.out) / 'findings.json'} "
          f"in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
