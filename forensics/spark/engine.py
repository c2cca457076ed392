"""The Spark engine: a case's named steps on Apache Spark over a Parquet case, DuckDB finishing what Spark cannot.

Same interface as forensics.engine.DuckEngine. Each case table is a Spark temp view over its Parquet folder (the
`day` partition column left out). A step runs on Spark as sqlglot transpiled it (forensics.spark.portable.to_spark)
and its result is checkpointed as the temp view `__f_<step>`; a step named in portable.DUCKDB_ONLY, and every
statement that is not a SELECT, runs on DuckDB instead. A step table moves between the two only when the other side
reads it, as Arrow (types kept: DECIMAL(38,12) stays DECIMAL(38,12), TIMESTAMP stays a naive UTC TIMESTAMP): Spark's
tables go to DuckDB for the DuckDB-only steps and the small reads Python makes; DuckDB's go to Spark when a later
Spark step reads them. `ran` says which engine ran each step.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from forensics import parquet_case
from forensics.duck import quote_ident
from forensics.analysis.steps import inline_params
from forensics.spark import portable

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

SPARK = "spark"
DUCKDB = "duckdb"
# a small local session: two cores, 1 GB, no UI, loopback only; times as naive UTC TIMESTAMP like the case's
LOCAL_CONF = {
    "spark.driver.memory": "1g",
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "2",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    # DECIMAL products keep their scale as DuckDB's do (Spark's default rounds them to fit 38 digits)
    "spark.sql.decimalOperations.allowPrecisionLoss": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}
# what every session the engine runs in needs, local or on a cluster (the case's time semantics)
SESSION_CONF = {k: LOCAL_CONF[k] for k in (
    "spark.sql.session.timeZone", "spark.sql.timestampType", "spark.sql.decimalOperations.allowPrecisionLoss",
    "spark.sql.execution.arrow.pyspark.enabled")}


def local_session(app: str = "forensics", master: str = "local[2]") -> SparkSession:
    """A local SparkSession kept small (LOCAL_CONF); the caller stops it."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName(app).config(
        "spark.sql.warehouse.dir", str(Path(tempfile.gettempdir()) / "forensics-spark-warehouse"))  # not in the cwd
    for key, value in LOCAL_CONF.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class SparkEngine:
    name = SPARK

    def __init__(self, spark: SparkSession, folder: str | Path, con: duckdb.DuckDBPyConnection | None = None):
        """The Parquet case in `folder` on `spark`; `con` the DuckDB side (default: the folder opened in place)."""
        self.spark = spark
        for key, value in SESSION_CONF.items():
            spark.conf.set(key, value)
        self.folder = Path(folder)
        self.con = con if con is not None else parquet_case.open_folder(folder)
        self.ran: dict[str, str] = {}                  # step name -> the engine that ran (its latest run)
        self._where: dict[str, set[str]] = {}          # step table -> the sides holding its current rows
        self._views: list[str] = []
        self._columns: dict[str, list[tuple[str, str]]] = {}   # Spark-made step table -> DuckDB's (column, type)
        self._register_case()

    # --- the case's tables ---------------------------------------------------------------------------------------

    def _register_case(self) -> None:
        manifest = json.loads((self.folder / parquet_case.MANIFEST).read_text())
        for table, info in manifest["tables"].items():
            columns = [c for (c,) in self.con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [table]).fetchall()]
            if info.get("rows"):
                frame = self.spark.read.parquet(str(self.folder / table)).select(*[f"`{c}`" for c in columns])
            else:                                      # no rows, no files: the case schema's columns, empty
                frame = self.spark.createDataFrame(self.con.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table())
            frame.createOrReplaceTempView(table)
            self._views.append(table)

    # --- moving a step table to the side that reads it ------------------------------------------------------------

    def _on(self, side: str, sql: str, writes: str | None = None) -> None:
        """Make every step table `sql` reads current on `side` (`writes`, the table it makes, excepted)."""
        for table in portable.step_tables(sql):
            held = self._where.get(table)
            if table == writes or not held or side in held:
                continue
            if side == DUCKDB:
                self.con.complete()                    # a read Python left unfinished would block the handover
                self.con.register(f"__arrow_{table}", self.spark.table(table).toArrow())
                self.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS "
                                 f"SELECT {_as_duckdb(self._columns[table])} FROM __arrow_{table}")
                self.con.unregister(f"__arrow_{table}")
            else:
                self.con.complete()
                frame = self.spark.createDataFrame(self.con.sql(f"SELECT * FROM {table}").to_arrow_table())
                frame.localCheckpoint().createOrReplaceTempView(table)
                self._views.append(table)
            held.add(side)

    def _made(self, table: str, side: str) -> None:
        self._where[table.lower()] = {side}

    def _spark_step(self, table: str | None, select: str):
        """Step `select` on Spark, as the DataFrame DuckDB's run would have made: its columns in DuckDB's order
        with DuckDB's names, DECIMAL and TIMESTAMP columns of DuckDB's types (Spark puts a USING join's columns
        first, and date_trunc gives a zoned TIMESTAMP). DuckDB learns the columns by binding `select` alone (never
        run) over empty tables standing in for Spark's (made here, under the step's own name, for the next step)."""
        spark_sql = portable.to_spark(select)
        self._on(SPARK, select, writes=table)
        self.con.complete()
        columns = [(c, t) for c, t, *_ in self.con.execute(f"DESCRIBE {select}").fetchall()]
        frame = self.spark.sql(spark_sql)
        names = [c for c, _ in columns]
        if len(set(names)) == len(names) and set(names) == set(frame.columns):
            frame = frame.select(*[_as_spark(c, t) for c, t in columns])
        elif len(frame.columns) == len(columns):            # names repeat: by position
            frame = frame.toDF(*[f"_c{i}" for i in range(len(columns))]).select(
                *[_as_spark(f"_c{i}", t, c) for i, (c, t) in enumerate(columns)])
        else:
            raise ValueError(f"{table or 'a step'}: Spark's result has the columns {frame.columns}, DuckDB's {names}")
        if table is not None:
            self._columns[table.lower()] = columns
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} ({_column_defs(columns)})")   # bind-only
        return frame, columns

    # --- the Engine interface ---------------------------------------------------------------------------------------

    def materialise(self, name: str, table: str, select: str, params: list) -> None:
        select = inline_params(select, params)
        if portable.duckdb_only(name):
            self._on(DUCKDB, select, writes=table)
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS\n{select}")
            self._made(table, DUCKDB)
            self.ran[name] = DUCKDB
            return
        frame, _ = self._spark_step(table, select)
        frame.localCheckpoint().createOrReplaceTempView(table)
        self._views.append(table)
        self._made(table, SPARK)
        self.ran[name] = SPARK

    def frame(self, name: str, select: str, params: list) -> pd.DataFrame:
        select = inline_params(select, params)
        if portable.duckdb_only(name):
            self._on(DUCKDB, select)
            self.ran[name] = DUCKDB
            return self.con.execute(select).df()
        frame, columns = self._spark_step(None, select)
        result = frame.toArrow()
        self.ran[name] = SPARK
        self.con.complete()
        return self.con.from_arrow(result).query("r", f"SELECT {_as_duckdb(columns)} FROM r").df()  # DuckDB's types

    def statement(self, name: str, sql: str, params: list) -> None:
        """Not a SELECT (CREATE with columns, INSERT): DuckDB's, the tables it names brought over first."""
        self._on(DUCKDB, sql)
        self.con.execute(sql, params)
        for table in portable.step_tables(sql):
            self._made(table, DUCKDB)                  # created or written: DuckDB holds the current rows now
        self.ran[name] = DUCKDB

    def read(self, sql: str, params: list) -> duckdb.DuckDBPyConnection:
        self._on(DUCKDB, sql)
        return self.con.execute(sql, params)

    def close(self) -> None:
        """Drop the temp views this engine made (the session is the caller's to stop)."""
        catalog = self.spark.catalog
        for view in dict.fromkeys(self._views):
            catalog.dropTempView(view)
        self._views.clear()


def _column_defs(columns: list[tuple[str, str]]) -> str:
    return ", ".join(f"{quote_ident(c)} {t}" for c, t in columns)


def _as_duckdb(columns: list[tuple[str, str]]) -> str:
    """A select list casting Spark's columns (same names, same order) to DuckDB's types."""
    return ", ".join(f"CAST({quote_ident(c)} AS {t}) AS {quote_ident(c)}" for c, t in columns)


def _as_spark(column: str, duck_type: str, alias: str | None = None):
    """Spark column `column` as `alias`, cast where Spark's type for it would differ in meaning from DuckDB's
    `duck_type`: DECIMAL scales (money) and TIMESTAMP (naive UTC) kinds."""
    from pyspark.sql import functions as F

    col = F.col(f"`{column}`")
    if duck_type.startswith("DECIMAL"):
        col = col.cast(duck_type.lower())
    elif duck_type == "TIMESTAMP":
        col = col.cast("timestamp_ntz")
    elif duck_type == "TIMESTAMP WITH TIME ZONE":
        col = col.cast("timestamp")
    return col.alias(alias or column)
