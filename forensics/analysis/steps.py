"""Named SQL steps: every figure is a small SELECT with a name, so the SQL behind it can be printed and re-run.

Functions that build SQL are named `*_sql` and execute nothing; `run_step` is the one place that executes them,
and `STEP_LOG` keeps what ran (name -> SQL with parameters inlined) for the report's appendix.
"""
from __future__ import annotations

from dataclasses import dataclass
from textwrap import dedent

import duckdb


@dataclass(frozen=True)
class Step:
    name: str          # e.g. 'incident_requests', created as TEMP TABLE __f_incident_requests
    sql: str           # a SELECT

    @property
    def table(self) -> str:
        return f"__f_{self.name}"


STEP_LOG: dict[str, str] = {}


def run_step(con: duckdb.DuckDBPyConnection, step: Step, params: list | None = None) -> str:
    """Materialise `step` as a temp table and log its SQL; returns the table name."""
    sql = dedent(step.sql).strip()
    statement = f"CREATE OR REPLACE TEMP TABLE {step.table} AS\n{sql}"
    con.execute(statement, params or [])
    STEP_LOG[step.name] = statement if not params else f"-- parameters: {params!r}\n{statement}"
    return step.table


def query_step(con: duckdb.DuckDBPyConnection, step: Step, params: list | None = None):
    """Run `step` and return its rows as a pandas frame (logged like run_step)."""
    sql = dedent(step.sql).strip()
    STEP_LOG[step.name] = sql if not params else f"-- parameters: {params!r}\n{sql}"
    return con.execute(sql, params or []).df()


def sql_of(name: str) -> str:
    """The SQL a named step ran, for printing."""
    return STEP_LOG[name]


def load_request_ids(con: duckdb.DuckDBPyConnection, table: str, request_ids) -> None:
    """An analysis's input: the request ids it works on, as temp table `table`(request_id), deduplicated.

    A list parameter rather than con.register: registering fails while the caller still has a result open.
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT DISTINCT unnest(CAST(? AS VARCHAR[])) AS request_id",
                [[str(i) for i in request_ids]])
