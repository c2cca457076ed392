"""Fixtures of the safe-to-share tests (imported by test_safe_outputs.py): the tiny case of tinycase.py, as logs and as a
case database."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tinycase import QUIET, write_tiny_logs


@pytest.fixture(scope="session")
def tiny_logs(tmp_path_factory) -> Path:
    return write_tiny_logs(tmp_path_factory.mktemp("tiny") / "logs")


@pytest.fixture(scope="session")
def tiny_case_file(tiny_logs, tmp_path_factory) -> Path:
    """tiny_logs ingested into a case database (closed; copy it before use)."""
    from forensics.api import Case

    path = tmp_path_factory.mktemp("tiny_case") / "case.duckdb"
    with Case.open(path) as case:
        reports = case.ingest([tiny_logs])
    assert [(r.records, r.quarantined) for r in reports] == [(QUIET + 60, 0), (1, 0)], reports
    return path


@pytest.fixture
def tiny_case(tiny_case_file, tmp_path) -> Path:
    """A fresh copy of the tiny case, the test's own."""
    path = tmp_path / "tiny.duckdb"
    shutil.copyfile(tiny_case_file, path)
    return path
