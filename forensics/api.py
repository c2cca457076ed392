"""The library's front door: a `Case` is the one way to open, fill, merge and query a case database.

The CLI, the notebooks and the tests all go through it:

    with Case.from_inputs(["sample_logs/"], Path("out")) as case:
        inv = case.investigate()

A case carries its connection, the options it was loaded with, its own step log (every statement the investigation
ran, re-runnable as `steps.sql`) and the tables each step made (`case.tables[step_name]`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import dedent
from typing import TYPE_CHECKING, Iterable

import duckdb

from forensics import case as case_db
from forensics.case import NotACase  # noqa: F401  (part of the API: raised by open, from_inputs, merge)
from forensics.analysis.steps import Step, StepLog, table_name
from forensics.engine import DuckEngine, Engine
from forensics.sources.interface import LoadOptions

if TYPE_CHECKING:
    import pandas as pd

    from forensics.ingest import FileReport
    from forensics.investigate import Investigation

CASE_SUFFIX = ".duckdb"


def split_inputs(inputs: Iterable[str | Path]) -> tuple[list[str], list[str]]:
    """(cases: databases and Parquet case folders, log files and folders) among INPUT."""
    from forensics import parquet_case

    cases, logs = [], []
    for item in map(str, inputs):
        (cases if item.endswith(CASE_SUFFIX) or parquet_case.is_folder(item) else logs).append(item)
    return cases, logs


def case_exists(path: str | Path) -> bool:
    """Whether a named case is there: a database file, or a folder exported by `export-case --parquet`."""
    from forensics import parquet_case

    return Path(path).is_file() or parquet_case.is_folder(path)


@dataclass
class Case:
    con: duckdb.DuckDBPyConnection
    path: Path | None = None
    options: LoadOptions = field(default_factory=LoadOptions)
    steps: StepLog = field(default_factory=StepLog)
    tables: dict[str, str] = field(default_factory=dict)        # step name -> the temp table it made
    reports: list = field(default_factory=list)                 # FileReports of what this session loaded
    read_only: bool = False
    engine: Engine | None = None          # runs the named steps (forensics/engine.py); None: DuckDB on `con`

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = DuckEngine(self.con)

    # --- opening -------------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, options: LoadOptions | None = None) -> Case:
        """The case database at `path` (created with its schema when absent and not read-only). Read-only, the case
        is never written (the investigation needs temp tables only). A folder written by `export-case --parquet`
        is read in place, read-only (forensics.parquet_case). NotACase when `path` is not a case."""
        from forensics import parquet_case

        if parquet_case.is_folder(path):
            if not read_only:
                raise NotACase(f"{path}: a Parquet case is read in place, never written: name it alone as INPUT")
            return cls(parquet_case.open_folder(path), Path(path), options or LoadOptions(), read_only=True)
        return cls(case_db.connect(path, read_only=read_only), Path(path), options or LoadOptions(),
                   read_only=read_only)

    @classmethod
    def memory(cls, options: LoadOptions | None = None) -> Case:
        """A case that lives in memory only (tests, scratch work)."""
        return cls(case_db.connect(":memory:"), None, options or LoadOptions())

    @classmethod
    def from_inputs(cls, inputs: Iterable[str | Path], out_dir: str | Path, options: LoadOptions | None = None,
                    progress=None, case_path: str | Path | None = None, status=None) -> Case:
        """A case for INPUT. One case database and nothing else: that case, as it is, opened read-only (not one byte
        of it changes). Otherwise `case_path` (default OUT_DIR/case.duckdb) holding every named case (merged; the
        named ones are left untouched) and every log named (ingested; a file already in the case is skipped by
        content). Raises FileNotFoundError for a missing input and NotACase for a named case that is no case
        database (or a case_path that is some other DuckDB database)."""
        from forensics.ingest import expand_inputs

        cases, logs = split_inputs(inputs)
        for c in cases:
            if not case_exists(c):
                raise FileNotFoundError(f"{c}: no such case database")
        expand_inputs(logs)                    # fails early, before anything is created, on a missing input
        options = options or LoadOptions()
        if len(cases) == 1 and not logs and case_path is None:
            case = cls.open(cases[0], read_only=True, options=options)
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            return case
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        target = Path(case_path) if case_path is not None else Path(out_dir) / "case.duckdb"
        target.parent.mkdir(parents=True, exist_ok=True)
        cases = [c for c in cases if Path(c).resolve() != target.resolve()]   # the target itself: already there
        case = cls.open(target, options=options)
        try:
            case.merge(cases)
            if logs:
                case.ingest(logs, progress=progress, status=status)
        except BaseException:
            case.close()
            raise
        return case

    def steps_head(self) -> str:
        """What steps.sql needs before the steps to re-run against this case: nothing for a database file (run it
        with `duckdb CASE.duckdb`), the views over its files for a Parquet case (run it with `duckdb`)."""
        from forensics import parquet_case

        return parquet_case.views_script(self.path) if self.path is not None and parquet_case.is_folder(self.path) \
            else ""

    def __enter__(self) -> Case:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (also after an error or Ctrl-C: callers close in `with` / `finally`); DuckDB removes
        its spill then, and what a killed run left is removed by the next read-write open (case.connect)."""
        try:
            self.engine.close()
            self.con.close()
        finally:
            if self.path is not None and not self.read_only:
                case_db.remove_stale_spill(self.path)

    @property
    def schema_version(self) -> int:
        """The case's schema version (forensics.schema.SCHEMA_VERSION; 1 for a case made before case_meta)."""
        return case_db.check_case(self.con, self.path or ":memory:")

    # --- loading -------------------------------------------------------------------------------------------------

    def ingest(self, paths: Iterable[str | Path], progress=None, status=None) -> list[FileReport]:
        """Load log files and folders; then the options that apply to the whole case (prices, trusted proxies).
        `status` gets a progress line every few seconds on a long run (forensics.ingest.ingest_paths)."""
        from forensics.sources.provider import pagenotes
        from forensics.ingest import ingest_paths

        reports = ingest_paths(self.con, list(paths), self.options, progress=progress, status=status)
        pagenotes.apply(self.con, reports)
        self.apply_options()
        self.reports += reports
        return reports

    def merge(self, case_paths: Iterable[str | Path]) -> list[FileReport]:
        """Merge other case databases into this one (files by sha256; requests filled, not doubled). NotACase, and
        nothing merged, when one is no case, of a newer schema version, or its per-file counts do not add up."""
        from forensics import parquet_case
        from forensics.merge import merge_case
        from forensics.sources.provider import pagenotes

        reports = []
        for c in case_paths:
            if parquet_case.is_folder(c):
                raise NotACase(f"{c}: a Parquet case is read in place: name it alone as INPUT (it cannot be merged)")
            try:
                reports += merge_case(self.con, c)
            except NotACase:
                raise
            except (ValueError, duckdb.Error) as e:
                raise NotACase(f"{c}: cannot read it as a case database ({str(e).splitlines()[0]})") from None
        if reports:
            pagenotes.apply(self.con, reports)
            self.apply_options()
        self.reports += reports
        return reports

    def apply_options(self) -> None:
        """Options that change the whole case, files loaded earlier included: prices and trusted proxies."""
        if self.options.price_overrides is not None:
            from forensics.pricing import reprice_all

            reprice_all(self.con, self.options.price_overrides)
        if self.options.trusted_proxies:
            from forensics.netaddr import TrustedProxies, reresolve_client_ips

            reresolve_client_ips(self.con, TrustedProxies(self.options.trusted_proxies))

    # --- steps ---------------------------------------------------------------------------------------------------

    def run(self, step: Step, params: list | None = None) -> str:
        """Materialise `step` as a temp table, log it, and return the table's name (the handle later steps take)."""
        select = dedent(step.sql).strip()
        statement = f"CREATE OR REPLACE TEMP TABLE {step.table} AS\n{select}"
        started = time.perf_counter()
        self.engine.materialise(step.name, step.table, select, params or [])
        self.steps.add(step.name, statement, params, time.perf_counter() - started)
        self.tables[step.name] = step.table
        return step.table

    def query(self, step: Step, params: list | None = None) -> pd.DataFrame:
        """Run `step` and return its rows as a pandas frame (logged like `run`)."""
        sql = dedent(step.sql).strip()
        started = time.perf_counter()
        frame = self.engine.frame(step.name, sql, params or [])
        self.steps.add(step.name, sql, params, time.perf_counter() - started)
        return frame

    def statement(self, name: str, sql: str, params: list | None = None) -> None:
        """A logged statement that is not a SELECT (CREATE with columns, INSERT): part of the re-runnable script."""
        started = time.perf_counter()
        self.engine.statement(name, sql, params or [])
        self.steps.add(name, sql, params, time.perf_counter() - started)

    def load_ids(self, name: str, request_ids: Iterable) -> str:
        """An analysis's input: request ids as temp table `__f_<name>`(request_id), deduplicated; returns its name."""
        return self.run(Step(name, "SELECT DISTINCT unnest(CAST(? AS VARCHAR[])) AS request_id"),
                        [[str(i) for i in request_ids]])

    def table(self, step_name: str) -> str:
        """The temp table step `step_name` made in this session."""
        return self.tables[step_name] if step_name in self.tables else table_name(step_name)

    def execute(self, sql: str, params: list | None = None):
        """A read of the case (not logged): a DuckDB result."""
        return self.engine.read(sql, params or [])

    def has_table(self, name: str) -> bool:
        """Whether the case's own catalog holds table `name` (or a view: a case exported to Parquet is views), not a
        temp table or another attached database's (`duckdb_tables()` lists no views)."""
        return name in case_db._tables(self.con, case_db._catalog(self.con))

    # --- the investigation -----------------------------------------------------------------------------------------

    def investigate(self, controls=None) -> Investigation:
        from forensics.investigate import investigate

        return investigate(self, controls)


# --- documents -------------------------------------------------------------------------------------------------------

def write_report(case: Case, out: Path, controls=None, run_detector: bool = True,
                 absolute_paths: bool = False, configs=()) -> tuple[dict, dict]:
    """The investigation written out: OUT/findings.json, report.html, report.md, figures/*.png and steps.sql (the
    case's step log, re-runnable against the case). Returns (findings, the report's model).

    All or nothing (outputs/atomic.py): every file is written into a staging folder inside OUT, then renamed into
    OUT in this order: figures/*.png, report.md, report.html, steps.sql, findings.json LAST. A new findings.json
    means every file beside it is new; a failure before the renames leaves OUT as it was."""
    from forensics.analysis import postmortem
    from forensics.audit.run import for_report
    from forensics.outputs import findings as findings_out
    from forensics.outputs import report
    from forensics.outputs.atomic import staged

    from forensics.progress import phase

    inv = case.investigate(controls)
    result = findings_out.build(inv, absolute_paths=absolute_paths)
    configuration = for_report(case, inv, configs)       # configs audited, and the case's LiteLLM startup warnings
    if configuration is not None:
        result["configuration"] = configuration.to_json()
    with phase("the postmortem: detector, timeline, leads, response actions" if run_detector else
               "the postmortem: timeline, leads, response actions"):
        pm = postmortem.prepare(case, inv, result, run_detector)
    with phase("writing the report and its figures"):
        model = report.build_model(inv, result, pm, case.steps)
    with staged(out, last=REPORT_LAST) as tmp:
        report.write(tmp, model)
        findings_out.write_steps_sql(tmp / "steps.sql", case.steps, case.steps_head())
        findings_out.write(tmp / "findings.json", result)
    return result, model


# the report's files renamed into place last, in this order (figures before them): findings.json is the commit mark
REPORT_LAST = ("report.md", "report.html", "steps.sql", "findings.json")


def write_bundle(case: Case, out: Path, provider: str | None = None, command_line: list[str] | None = None,
                 absolute_paths: bool = False, started=None) -> list[Path]:
    """The evidence bundle for a refund request on one provider's bill (analysis/evidence.py), written into OUT."""
    from forensics.analysis.evidence import evidence
    from forensics.outputs import bundle
    from forensics.outputs import findings as findings_out

    inv = case.investigate()
    result = findings_out.build(inv, absolute_paths=absolute_paths)
    ev = evidence(case, inv, provider)
    if not ev.chosen:
        raise NothingToDispute(f"no incident with an attack verdict{' on the ' + provider + ' bill' if provider else ''}"
                               f" (status: {result['status']}): nothing to dispute, no bundle written")
    return bundle.build(ev, inv, result, out, command_line=command_line, absolute_paths=absolute_paths,
                        started=started)


class NothingToDispute(Exception):
    """`export` on a case without an attack: there is no refund to ask for, and no bundle is written."""
