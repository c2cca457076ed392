"""The analyst's first minutes: `report` says on stderr what it is doing, a line per phase and at least one every
5 s, and prints each incident's line as soon as the search finds it (before the costly postmortem)."""
from __future__ import annotations

import re

import pytest

from conftest import _BUILDS, run_cli

LINE = re.compile(r"^forensics: \[\s*(\d+\.\d)s\] (.*)$")


def _progress(stderr: str) -> list[tuple[float, str]]:
    return [(float(m.group(1)), m.group(2)) for m in map(LINE.match, stderr.splitlines()) if m]


def test_report_on_sample_logs_shows_progress_every_5_seconds(sample_report):
    _, run = _BUILDS.sample_report()
    lines = _progress(run.stderr)
    assert lines, run.stderr
    times = [t for t, _ in lines]
    assert times == sorted(times)
    assert max(b - a for a, b in zip(times, times[1:])) <= 5.0, lines
    phases = [text for _, text in lines]
    assert sum(p.startswith("loading ") for p in phases) == 22            # a line per file of sample_logs/
    incident = next(i for i, p in enumerate(phases) if p.startswith("incident: attack unauthenticated_proxy"))
    postmortem = next(i for i, p in enumerate(phases) if p.startswith("the postmortem"))
    assert incident < postmortem
    # from the end of loading to the incident line: well within 5 s (the rest of the run comes after it)
    loaded = max(t for t, p in lines if p.startswith("loading ") or p.startswith("... still loading"))
    assert lines[incident][0] - loaded <= 5.0


@pytest.mark.slow
def test_report_on_a_case_prints_the_incident_line_within_5_seconds(sample_case_file, tmp_path):
    case = sample_case_file.copy(tmp_path / "sample.duckdb")
    r = run_cli("report", case, "--out", tmp_path / "out", "--no-detector")
    assert r.returncode == 0, r.stderr
    incident = next(t for t, p in _progress(r.stderr) if p.startswith("incident: "))
    assert incident <= 5.0, r.stderr
