"""The engine seam: the one object through which a case runs its named SQL steps (issue #19).

A `Case` never executes a step's SQL itself: it hands the step (its name, its DuckDB SQL, its parameters) to its
engine. `DuckEngine` runs everything on the case's DuckDB connection (the default, and the only engine for a case
database). `forensics.spark.engine.SparkEngine` implements the same four methods on Apache Spark over a Parquet case,
with DuckDB as the fallback for the steps that Spark SQL cannot express (forensics.spark.portable names them).

The SQL a step is logged with (steps.sql) is the DuckDB SQL whichever engine ran it, so steps.sql re-runs as printed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import duckdb

if TYPE_CHECKING:
    import pandas as pd


class Engine(Protocol):
    con: duckdb.DuckDBPyConnection            # DuckDB: the case's tables, and the reads Python makes of step tables

    def materialise(self, name: str, table: str, select: str, params: list) -> None:
        """Make step `name`'s SELECT the table `table` (replacing one of that name)."""

    def frame(self, name: str, select: str, params: list) -> pd.DataFrame:
        """Step `name`'s SELECT, its rows handed back as a pandas frame (DuckDB's types)."""

    def statement(self, name: str, sql: str, params: list) -> None:
        """A step that is not a SELECT (CREATE with columns, INSERT into a step's table)."""

    def read(self, sql: str, params: list) -> duckdb.DuckDBPyConnection:
        """An unlogged read (small results Python needs), on DuckDB: a DuckDB result."""

    def close(self) -> None:
        """Let go of what the engine made (the case's connection is the Case's to close)."""


class DuckEngine:
    """Every step on the case's DuckDB connection."""

    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def materialise(self, name: str, table: str, select: str, params: list) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS\n{select}", params)

    def frame(self, name: str, select: str, params: list) -> pd.DataFrame:
        return self.con.execute(select, params).df()

    def statement(self, name: str, sql: str, params: list) -> None:
        self.con.execute(sql, params)

    def read(self, sql: str, params: list) -> duckdb.DuckDBPyConnection:
        return self.con.execute(sql, params)

    def close(self) -> None:
        pass
