"""The investigation on Apache Spark over a Parquet case (issue #19): `python -m forensics.spark CASE_DIR --out OUT`,
or the same file under `spark-submit`. portable.py says which named steps run on Spark and why the others do not;
engine.py runs them."""
from __future__ import annotations

from pathlib import Path


def open_case(folder: str | Path, spark, options=None):
    """A read-only `forensics.api.Case` over the Parquet case in `folder` whose named steps run on `spark`."""
    from forensics.api import Case
    from forensics.case import NotACase
    from forensics import parquet_case
    from forensics.spark.engine import SparkEngine
    from forensics.sources.interface import LoadOptions

    if not parquet_case.is_folder(folder):
        raise NotACase(f"{folder}: not a Parquet case (no {parquet_case.MANIFEST}; write one with "
                       "`forensics export-case CASE --parquet DIR`)")
    engine = SparkEngine(spark, folder)
    return Case(engine.con, Path(folder), options or LoadOptions(), read_only=True, engine=engine)
