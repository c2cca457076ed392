"""Shared fixtures: a fresh case database, and the sample incident loaded once per test session.

Tests marked `slow` run in CI (CI=1) or with --runslow; a plain `python -m pytest` leaves them out.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from forensics import case as case_db

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_LOGS = ROOT / "sample_logs"


@pytest.fixture
def con(tmp_path):
    c = case_db.connect(tmp_path / "case.duckdb")
    yield c
    c.close()


@pytest.fixture(scope="session")
def sample_truth() -> dict:
    return json.loads((SAMPLE_LOGS / "truth.json").read_text())


@pytest.fixture(scope="session")
def sample_case(tmp_path_factory):
    """sample_logs/ ingested into a case; returns (Case, reports)."""
    from forensics.api import Case

    c = Case.open(tmp_path_factory.mktemp("sample") / "case.duckdb")
    reports = c.ingest([SAMPLE_LOGS])
    yield c, reports
    c.close()


@pytest.fixture(scope="session")
def sample_report(tmp_path_factory):
    """`python -m forensics report sample_logs/ --out DIR` run once: (findings, DIR)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("report")
    r = subprocess.run([sys.executable, "-m", "forensics", "report", str(SAMPLE_LOGS), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads((out / "findings.json").read_text()), out


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run the tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long runs (randomized matrix, many draws); CI runs them")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="slow: runs in CI (CI=1) or with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
