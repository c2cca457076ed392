"""Test tiers, the in-process command line, and the expensive artefacts built once per test session.

Tiers: `python -m pytest` runs the default tier (every module, in a few minutes); the tests marked `slow`, `notebooks`,
`integration` or `spark` run with `python -m pytest --all` (what CI runs), or with a marker expression (`-m slow`), or when
named by node id.

Built once per session, shared read-only (a test that writes gets a copy): sample_logs/ ingested into a case
(`sample_case`, `sample_case_copy`), `report sample_logs/ --out DIR` (`sample_report`), the hostile corpus in one case
(`hostile_corpus_case`), sample_logs/ split in two cases to merge (`two_cases`), the simulator's output per
(scenario, seed) (`simulated`) and that output ingested and investigated (`scenario_case`). What the selected tests
need of these is made by a helper process on the second core while this one runs the other tests (tests/case_builder.py;
FORENSICS_TESTS_NO_PREFETCH=1 makes everything here, on first use).

The command line is tested in this process (`run_cli`); `run_process` only where a real process is the point.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from forensics import case as case_db

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_LOGS = ROOT / "sample_logs"
TIERS = ("slow", "notebooks", "integration", "spark")


# --- tiers ----------------------------------------------------------------------------------------------------------

def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", dest="all_tiers",
                     help="run every tier: the default one plus the tests marked " + ", ".join(TIERS) + " (CI)")


def _named(config) -> set[str]:
    """Node ids given on the command line (`path::test`): such a test runs whatever its tier."""
    named = set()
    for arg in config.args:
        if "::" in arg:
            path, _, rest = arg.partition("::")
            try:
                path = str(Path(path).resolve().relative_to(config.rootpath))
            except ValueError:
                pass
            named.add(f"{path}::{rest}")
    return named


class _NotebookTier:
    @pytest.hookimpl(tryfirst=True)                      # before -m selects by marker
    def pytest_collection_modifyitems(self, items):
        for item in items:                               # nbval's cells and the notebooks run on another case
            if item.path.suffix == ".ipynb" or item.path.name == "test_notebooks_other_case.py":
                item.add_marker(pytest.mark.notebooks)


def pytest_configure(config):
    config.pluginmanager.register(_NotebookTier(), "forensics-notebook-tier")
    if config.getoption("all_tiers") or config.option.markexpr:
        os.environ["FORENSICS_TESTS_ALL_TIERS"] = "1"


def examples(n: int) -> int:
    """A property test's hypothesis budget: `n` examples when every tier runs (CI), a quarter (at least 3) in the
    default tier, so the default run stays quick and still exercises every property."""
    return n if os.environ.get("FORENSICS_TESTS_ALL_TIERS") else max(3, n // 4)


@pytest.hookimpl(trylast=True)                           # after -k and -m have deselected
def pytest_collection_modifyitems(config, items):
    if not (config.getoption("all_tiers") or config.option.markexpr):
        _select_tier(config, items)
    _schedule_builds(config, items)


def _select_tier(config, items) -> None:
    named = _named(config)
    keep, drop = [], []
    for item in items:
        tiered = any(item.get_closest_marker(t) for t in TIERS)
        explicit = any(item.nodeid == n or item.nodeid.startswith(n + "[") for n in named)
        (drop if tiered and not explicit else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
        config._forensics_tiered = len(drop)


def pytest_terminal_summary(terminalreporter, config):
    n = getattr(config, "_forensics_tiered", 0)
    if n:
        terminalreporter.write_line(f"default tier: {n} tests of the {'/'.join(TIERS)} tiers not run; "
                                    "`python -m pytest --all` runs every tier")


# --- the command line, in this process ------------------------------------------------------------------------------

@dataclass
class CliRun:
    """What `subprocess.run(..., capture_output=True, text=True)` would give for `python -m forensics ARGS`."""
    args: list[str]
    returncode: int
    stdout: str = ""
    stderr: str = ""


def run_cli(*args, cwd=None) -> CliRun:
    """`python -m forensics ARGS` in this process: `forensics.cli.main(ARGS)` with stdout and stderr captured, sys.argv
    as the real process has it, argparse's own exits (--help) and uncaught errors (--debug) turned into exit codes the
    way the interpreter would. No interpreter to start, no library to import again: ~1.5 s less per call."""
    from forensics import cli

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = [str(Path(cli.__file__).with_name("__main__.py")), *argv]
    try:
        with contextlib.ExitStack() as stack:
            if cwd is not None:
                stack.enter_context(contextlib.chdir(cwd))
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(err))
            try:
                code = cli.main(argv)
            except SystemExit as e:                  # argparse's --help and --version exit by themselves
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except Exception:                        # only with --debug: the interpreter prints it and exits 1
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved
    return CliRun(argv, code, out.getvalue(), err.getvalue())


def run_process(*args, cwd=None) -> subprocess.CompletedProcess:
    """`python -m forensics ARGS` as a real process: only for what a process alone shows (the entry point, what
    reaches the terminal, tracebacks)."""
    return subprocess.run([sys.executable, "-m", "forensics", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def steps_statements(script: str) -> list[tuple[str, str]]:
    """A report's steps.sql as (step name, SQL) in order; what precedes the first step (a Parquet case's views) is
    one chunk named by its first line."""
    out = []
    for chunk in re.split(r"^-- step: ", script, flags=re.M):
        if chunk.strip():
            name, sql = chunk.split("\n", 1)
            out.append((name, sql.strip().removesuffix(";")))
    return out


# --- fixtures -------------------------------------------------------------------------------------------------------

@pytest.fixture
def con(tmp_path):
    c = case_db.connect(tmp_path / "case.duckdb")
    yield c
    c.close()


@pytest.fixture(scope="session")
def sample_truth() -> dict:
    return json.loads((SAMPLE_LOGS / "truth.json").read_text())


@dataclass
class SampleCase:
    con: object
    reports: list
    path: Path

    def copy(self, dest: Path) -> Path:
        """A writable copy of the case's DuckDB file."""
        return _copy_case(self.con, self.path, dest)


@pytest.fixture(scope="session")
def sample_case_file():
    """sample_logs/ ingested into a case once per session (the library's ingest_paths)."""
    from forensics.api import Case

    path, reports = _BUILDS.sample_case()
    c = Case.open(path)
    yield SampleCase(c, reports, path)
    c.close()


@pytest.fixture(scope="session")
def sample_case(sample_case_file):
    """(Case, reports) of the sample case. Read it, don't change it: a test that writes takes
    `sample_case_copy`."""
    return sample_case_file.con, sample_case_file.reports


def _copy_case(c, path: Path, dest: Path) -> Path:
    c.execute("CHECKPOINT")                          # everything in the file itself, nothing left in its WAL
    shutil.copy(path, dest)
    return dest


@pytest.fixture(scope="session")
def hostile_corpus_case():
    """tests/hostile/cases/ ingested together into one case, once per session: (case path, reports). Read it only."""
    base, reports = _BUILDS.one("hostile_corpus")
    return base / "case.duckdb", reports


@pytest.fixture(scope="session")
def two_cases():
    """sample_logs/ split in two cases that overlap (tests/case_builder.merge_parts): (BASE, BASE/a.duckdb,
    BASE/b.duckdb). Only tests/test_merge.py uses it; it writes its merged case beside them."""
    base, _ = _BUILDS.one("merge_parts")
    return base, base / "a.duckdb", base / "b.duckdb"


@pytest.fixture
def sample_case_copy(sample_case_file, tmp_path) -> Path:
    """A writable copy of the sample case's DuckDB file: tmp_path/sample.duckdb."""
    return sample_case_file.copy(tmp_path / "sample.duckdb")


@pytest.fixture(scope="session")
def sample_report():
    """`python -m forensics report sample_logs/ --out DIR` (the README's main job) run once: (findings, DIR)."""
    out, r = _BUILDS.sample_report()
    assert r.returncode == 0, r.stderr
    return json.loads((out / "findings.json").read_text()), out


@dataclass
class Simulated:
    logs: Path
    truth: dict


class _Builds:
    """The session's expensive artefacts, each made once: sample_logs/ ingested, the report on it, and for each
    simulator (scenario, seed) a folder BASE with BASE/logs (the simulator's output) and BASE/case.duckdb (ingested,
    investigated). Made by the helper process when prefetched (pytest_collection_modifyitems), else here on first
    use."""

    def __init__(self):
        self.factory = None
        self.pool = None
        self.futures: dict = {}
        self.bases: dict = {}
        self.done: dict = {}

    def base(self, key) -> Path:
        if key not in self.bases:
            self.bases[key] = self.factory.mktemp("-".join(map(str, key)))
        return self.bases[key]

    def _job(self, key):
        """(function of case_builder, its arguments) that makes `key`."""
        import case_builder

        if key == ("sample_case",):
            return case_builder.ingest_sample, (str(self.base(key) / "case.duckdb"),)
        if key == ("sample_report",):
            return case_builder.report_sample, (str(self.base(key)),)
        if key == ("hostile_corpus",):
            return case_builder.ingest_hostile_corpus, (str(self.base(key) / "case.duckdb"),)
        if key == ("merge_parts",):
            return case_builder.merge_parts, (str(self.base(key)),)
        return case_builder.build, (str(self.base(key)), *key)

    def prefetch(self, keys) -> None:
        """Make these on the second core, in this order, while this process runs the other tests."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        keys = [k for k in keys if k not in self.futures and k not in self.done]
        if not keys:
            return
        if self.pool is None:
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        for key in keys:
            function, args = self._job(key)
            self.futures[key] = self.pool.submit(function, *args)

    def _result(self, key, here=None):
        if key not in self.done:
            if key in self.futures:
                self.done[key] = self.futures[key].result()
            else:
                function, args = here or self._job(key)
                self.done[key] = function(*args)
        return self.done[key]

    def sample_case(self) -> tuple[Path, list]:
        key = ("sample_case",)
        return self.base(key) / "case.duckdb", self._result(key)

    def sample_report(self):
        key = ("sample_report",)
        return self.base(key), self._result(key)

    def one(self, name: str):
        """(its folder, what its builder returned) for one of the session's single builds (FIXTURE_BUILDS)."""
        key = (name,)
        return self.base(key), self._result(key)

    def simulated(self, key) -> Simulated:
        """The scenario's logs: the whole case when it is prefetched or built, else the simulator alone."""
        import case_builder

        if key in self.futures or key in self.done:
            truth = self._result(key)["truth"]
        else:
            truth = self._result(("simulated", *key), (case_builder.simulate_into, (self.base(key), *key)))
        return Simulated(self.base(key) / "logs", truth)

    def built(self, key) -> dict:
        """The scenario's case: {"truth", "findings", "problems"}, its logs simulated first if need be."""
        import case_builder

        if key not in self.futures and key not in self.done:
            truth = self.simulated(key).truth
            self.done[key] = {"truth": truth, **case_builder.ingest_and_investigate(self.base(key))}
        return self._result(key)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


_BUILDS = _Builds()
_USE_BUILDS = {"scenario_case", "simulated"}
# The session's single builds, in the order the helper makes them, and the fixtures that wait for each. A module that
# uses one runs after the modules that use none, and the modules run in the order of the last build they wait for.
FIXTURE_BUILDS = {"sample_case": ("sample_case", "sample_case_file", "sample_case_copy"),
                  "hostile_corpus": ("hostile_corpus_case",),
                  "merge_parts": ("two_cases",),
                  "sample_report": ("sample_report",)}
_BUILD_ORDER = {fixture: n for n, fixtures in enumerate(FIXTURE_BUILDS.values()) for fixture in fixtures}


def _schedule_builds(config, items) -> None:
    """Run the tests that need the sample case after those that need nothing built, and the test modules that use
    simulated scenarios last, and make what they need in the helper process meanwhile: the sample case and report,
    then the cases the parametrised tests name (scenario, seed), ~8 s of simulating and ingesting each, on the other
    core. Nothing waits for a build that the tests before it gave time to finish."""
    _BUILDS.factory = config._tmp_path_factory
    late = {item.path for item in items if _USE_BUILDS & set(getattr(item, "fixturenames", ()))}
    waits: dict = {}                   # module -> the last single build it waits for (whole modules: module fixtures)
    for item in items:
        for fixture in _BUILD_ORDER.keys() & set(getattr(item, "fixturenames", ())):
            waits[item.path] = max(waits.get(item.path, -1), _BUILD_ORDER[fixture])
    middle = sorted((i for i in items if i.path in waits and i.path not in late), key=lambda i: waits[i.path])
    items[:] = ([i for i in items if i.path not in late and i.path not in waits] + middle
                + [i for i in items if i.path in late])
    if config.option.collectonly or os.environ.get("FORENSICS_TESTS_NO_PREFETCH"):
        return
    used = {fixture for item in items for fixture in getattr(item, "fixturenames", ())}
    keys = [(name,) for name, fixtures in FIXTURE_BUILDS.items() if used & set(fixtures)]
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        key = (params.get("scenario"), params.get("seed"))
        uses = "scenario_case" in getattr(item, "fixturenames", ())
        if uses and None not in key and key != SAMPLE_SCENARIO and key not in keys:
            keys.append(key)
    _BUILDS.prefetch(keys)


def pytest_sessionfinish(session):
    _BUILDS.close()


class _Simulated:
    def __call__(self, scenario: str, seed: int) -> Simulated:
        return _BUILDS.simulated((scenario, seed))

    def by_helper(self, scenario: str, seed: int) -> bool:
        """Whether that output is (or will be) written by the helper process, not by this one."""
        return (scenario, seed) in _BUILDS.futures


@pytest.fixture(scope="session")
def simulated():
    """simulated(scenario, seed): the simulator's output for it (logs, truth), written once per session (read it
    only)."""
    return _Simulated()


@dataclass
class ScenarioCase:
    scenario: str
    seed: int
    logs: Path
    truth: dict
    path: Path
    con: object
    findings: dict
    _detections: dict = field(default_factory=dict, repr=False)

    def copy(self, dest: Path) -> Path:
        """A writable copy of the case's DuckDB file."""
        return _copy_case(self.con, self.path, dest)

    def detect(self, window=None):
        """`forensics.detect.run.detect(con, window=window)` on the case, once per window: (scores, detector, frame).
        Shared: read them, don't change them."""
        if window not in self._detections:
            from forensics.detect.run import detect

            self._detections[window] = detect(self.con, window=window)
        return self._detections[window]


SAMPLE_SCENARIO = ("open_proxy", 1)       # sample_logs/ is this run of the simulator, byte for byte (test_simulate)


@pytest.fixture(scope="session")
def scenario_case(request):
    """scenario_case(scenario, seed): its simulated logs ingested and investigated, once per session (read it only:
    a test that writes takes a .copy()). open_proxy seed 1 is sample_logs/: its case is the session's sample case."""
    cache: dict = {}

    def get(scenario: str, seed: int) -> ScenarioCase:
        key = (scenario, seed)
        if key not in cache:
            if key == SAMPLE_SCENARIO:
                from forensics.outputs import findings as findings_out

                sample = request.getfixturevalue("sample_case_file")
                assert all(r.status == "loaded" and r.quarantined == 0 for r in sample.reports)
                cache[key] = ScenarioCase(scenario, seed, SAMPLE_LOGS, request.getfixturevalue("sample_truth"),
                                          sample.path, sample.con, findings_out.build(sample.con.investigate()))
            else:
                built = _BUILDS.built(key)
                assert built["problems"] == []             # every file loaded, nothing quarantined
                logs = _BUILDS.simulated(key).logs
                path = logs.parent / "case.duckdb"
                from forensics.api import Case

                cache[key] = ScenarioCase(scenario, seed, logs, built["truth"], path, Case.open(path),
                                          built["findings"])
        return cache[key]

    yield get
    for key, case in cache.items():
        if key != SAMPLE_SCENARIO:
            case.con.close()


@pytest.fixture(scope="session")
def spark_session():
    """One local SparkSession for the whole test session (its JVM takes 10-20 s to start): local[2], 1 GB, no UI,
    bound to 127.0.0.1 (forensics.spark.engine.local_session); stopped at the end."""
    from forensics.spark.engine import local_session

    spark = local_session("forensics-tests")
    yield spark
    spark.stop()


@pytest.fixture(scope="session")
def sample_detection(scenario_case):
    """The anomaly detector trained and run on the sample case: (scores, detector, frame), once per session."""
    return scenario_case(*SAMPLE_SCENARIO).detect()
