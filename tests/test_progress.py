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


def test_timings_name_each_phase_and_the_slowest_steps(sample_report):
    """`report --timings` (the session's sample report is run with it): every phase announced on stderr with the
    seconds it took, their sum within the run, then the slowest named SQL steps, each a step of steps.sql."""
    _, out = sample_report
    _, run = _BUILDS.sample_report()
    lines = run.stderr.splitlines()
    start = lines.index("timings: seconds per phase")
    steps_at = next(i for i, line in enumerate(lines) if line.startswith("timings: the 15 slowest of "))
    phases = [line.split(None, 1) for line in lines[start + 1:steps_at]]
    announced = {text for _, text in _progress(run.stderr)}
    assert phases[-1][1] == "all phases"
    assert all(name in announced for _, name in phases[:-1]), phases
    assert sum(name.startswith("loading ") for _, name in phases) == 22
    assert {"searching the proxy's requests for incidents", "writing the report and its figures"} <= \
        {name for _, name in phases}
    seconds = [float(s) for s, _ in phases]
    # each printed to the hundredth: their sum is off the total by half a hundredth a phase at most
    assert seconds[-1] == pytest.approx(sum(seconds[:-1]), abs=0.005 * len(phases))
    assert seconds[-1] <= _progress(run.stderr)[-1][0] + 1
    named = set(re.findall(r"^-- step: (\S+)$", (out / "steps.sql").read_text(), re.M))
    slowest = [line.split(None, 1) for line in lines[steps_at + 1:steps_at + 16]]
    assert len(slowest) == 15 and {name for _, name in slowest} <= named
    assert [float(s) for s, _ in slowest] == sorted((float(s) for s, _ in slowest), reverse=True)


@pytest.mark.slow
def test_report_on_a_case_prints_the_incident_line_within_5_seconds(sample_case_file, tmp_path):
    case = sample_case_file.copy(tmp_path / "sample.duckdb")
    r = run_cli("report", case, "--out", tmp_path / "out", "--no-detector")
    assert r.returncode == 0, r.stderr
    incident = next(t for t, p in _progress(r.stderr) if p.startswith("incident: "))
    assert incident <= 5.0, r.stderr
