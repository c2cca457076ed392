"""Which named steps run on Spark, and their SQL as Spark SQL (issue #19). Pure: no Spark needed to import this.

Each step is written once, in DuckDB SQL (forensics/analysis). `to_spark` transpiles it with sqlglot (DuckDB → Spark
SQL); there is no second copy of any step. The steps that Spark SQL cannot express as written are named in
`DUCKDB_ONLY`, each with the reason: the Spark engine runs them on DuckDB, over the step tables Spark made before them
(handed over as Arrow) and the case's Parquet files. Everything else runs on Spark as transpiled.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

import sqlglot
from sqlglot import exp
from sqlglot.dialects.spark import Spark
from sqlglot.errors import ErrorLevel

# step name (a regular expression, matched whole) -> why it cannot run on Spark as transpiled
DUCKDB_ONLY: dict[str, str] = {
    r"claimed|nginx_claimed|controls_.+_cutoffs":
        "the step's table is INSERTed into afterwards (one incident or month at a time); a Spark temp view cannot be "
        "inserted into",
    r"surge_candidates|nginx_surge_candidates|nginx_newcomer_candidates":
        "epoch() of an INTERVAL (a span's seconds): sqlglot writes unix_timestamp(), which takes a timestamp",
    r"rate_candidates|cost_spike_candidates":
        "date_bin() (fixed-width buckets from an origin): Spark SQL has no such function",
    r"outside_usage_(span|finest)(_net)?":
        "UNION ALL BY NAME and a row-value NOT IN subquery: neither exists in Spark SQL",
    r"figure_baseline_band":
        "quantile_cont(x, p) of DECIMAL money interpolates in DECIMAL; Spark's percentile() works in DOUBLE (and "
        "sqlglot writes percentile_cont(x, p), which Spark rejects)",
    r"detector_features":
        "count(DISTINCT ...) over a RANGE window frame: Spark has no DISTINCT window aggregates",
    r"incident_\d+_forged_forwarded_for":
        "unnest(string_split(...)) inside an expression: Spark's explode() is a generator, not allowed nested",
}
_DUCKDB_ONLY = [(re.compile(pattern), reason) for pattern, reason in DUCKDB_ONLY.items()]


class SparkSQL(Spark):
    """Spark SQL as sqlglot writes it, except that a WITH inside a subquery stays there: Spark 3+ reads nested
    CTEs, and hoisting them (sqlglot's default for Spark) makes two CTEs of one name when a step uses the session
    template (forensics.analysis.incident) twice."""

    class Generator(Spark.Generator):
        EXPRESSIONS_WITHOUT_NESTED_CTES: set = set()
STEP_TABLE = re.compile(r"\b__f_\w+", re.I)          # a step's table, as steps.table_name writes it


def duckdb_only(step_name: str) -> str | None:
    """Why step `step_name` runs on DuckDB under the Spark engine, or None when it runs on Spark."""
    for pattern, reason in _DUCKDB_ONLY:
        if pattern.fullmatch(step_name):
            return reason
    return None


def to_spark(select: str) -> str:
    """A step's DuckDB SELECT (parameters written in as literals) as Spark SQL. sqlglot.ParseError or
    sqlglot.errors.UnsupportedError when sqlglot cannot read it or knows Spark has no equivalent."""
    trees = sqlglot.parse(select, read="duckdb")
    if len(trees) != 1 or trees[0] is None:
        raise sqlglot.ParseError(f"{len(trees)} statements where one SELECT was expected")
    tree = trees[0]
    for rewrite in REWRITES:
        tree = tree.transform(rewrite)
    return tree.sql(dialect=SparkSQL, unsupported_level=ErrorLevel.RAISE)


def _row_value_in(node: exp.Expr) -> exp.Expr:
    """(a, b) IN (SELECT (a, b) ...): DuckDB compares a row with a one-column subquery of rows; sqlglot writes a
    struct against it, which Spark rejects. Spark compares a row with a subquery of as many columns: unpack it."""
    if isinstance(node, exp.In) and isinstance(node.this, exp.Tuple) and node.args.get("query") is not None:
        select = node.args["query"].this if isinstance(node.args["query"], exp.Subquery) else node.args["query"]
        if isinstance(select, exp.Select) and len(select.expressions) == 1 \
                and isinstance(select.expressions[0], exp.Tuple):
            select.set("expressions", list(select.expressions[0].expressions))
    return node


def _range_table(node: exp.Expr) -> exp.Expr:
    """range(a, b) t(d) (a table of the integers a..b-1 as column d): sqlglot writes an EXPLODE Spark cannot
    alias; Spark's own range(a, b) table function is the same table (its column renamed by the alias)."""
    if isinstance(node, exp.Table) and isinstance(node.this, exp.GenerateSeries) and node.args.get("alias") \
            and node.this.args.get("step") is None:
        series = node.this
        end = series.args["end"] if series.args.get("is_end_exclusive") else \
            exp.Add(this=exp.Paren(this=series.args["end"]), expression=exp.Literal.number(1))
        return exp.Table(this=exp.Anonymous(this="RANGE", expressions=[series.args["start"], end]),
                         alias=node.args["alias"])
    return node


def _microseconds(node: exp.Expr) -> exp.Expr:
    """DuckDB's epoch_us(t) (microseconds since 1970 of a naive UTC TIMESTAMP) as Spark's unix_micros of t read in
    UTC (the session's time zone), and to_microseconds(n) (an INTERVAL of n microseconds) as n times one
    microsecond: sqlglot passes both through unchanged, and Spark has neither."""
    if not isinstance(node, exp.Anonymous) or len(node.expressions) != 1:
        return node
    name, (arg,) = str(node.this).lower(), node.expressions
    if name == "epoch_us":
        return exp.Anonymous(this="UNIX_MICROS", expressions=[exp.cast(arg, "TIMESTAMPLTZ")])
    if name == "to_microseconds":
        return exp.Mul(this=exp.Paren(this=arg), expression=sqlglot.parse_one("INTERVAL '0.000001' SECOND",
                                                                               read="spark"))
    return node


def _narrow_decimal_literal(node: exp.Expr) -> exp.Expr:
    """CAST('100' AS DECIMAL(38,0)) (steps.literal's money parameter) as DECIMAL(3,0): Spark compares two
    DECIMALs in a common type of at most 38 digits, so DECIMAL(38,12) >= DECIMAL(38,0) would round the money to
    whole dollars first; with the literal's own precision the common type is DECIMAL(38,12), exact as DuckDB's."""
    if not (isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string
            and node.to.this == exp.DataType.Type.DECIMAL and len(node.to.expressions) == 2):
        return node
    try:
        value = Decimal(node.this.this)
        scale = int(node.to.expressions[1].this.this)
    except (InvalidOperation, ValueError, AttributeError):
        return node
    whole = len(str(abs(int(value)))) if int(value) else 1
    return exp.cast(node.this, exp.DataType.build(f"DECIMAL({min(38, whole + scale)}, {scale})"))


def _double_division(node: exp.Expr) -> exp.Expr:
    """DuckDB's `/` divides as DOUBLE (DECIMAL and integers alike); Spark's keeps DECIMAL, rounded to its own
    scale. Both sides cast to DOUBLE, Spark computes the very double DuckDB does. Not where a side holds a
    subtraction or an INTERVAL: that may be a span of time divided (an INTERVAL / n stays an INTERVAL)."""
    if isinstance(node, exp.Div) and not any(n.find(exp.Sub, exp.Interval) for n in (node.this, node.expression)):
        return exp.Div(this=exp.cast(node.this, "DOUBLE"), expression=exp.cast(node.expression, "DOUBLE"))
    return node


# applied in this order by to_spark, each over the whole tree
REWRITES = (_double_division, _narrow_decimal_literal, _microseconds, _row_value_in, _range_table)


def step_tables(sql: str) -> list[str]:
    """The step tables `sql` reads or writes (__f_<step>), in order of first mention."""
    return list(dict.fromkeys(t.lower() for t in STEP_TABLE.findall(sql)))
