"""The first look (forensics/first_look.py): `report` on raw logs names the incident seconds after it starts, from
the LiteLLM logs read into a scratch case beside the full ingest, labelled preliminary; the full analysis then says
whether it confirms or corrects it. It never says all clear."""
from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import _BUILDS, SAMPLE_LOGS
from forensics import first_look
from forensics.api import Case

LINE = re.compile(r"^forensics: \[\s*(\d+\.\d)s\] (.*)$")


def _phases(stderr: str) -> list[str]:
    return [m.group(2) for m in map(LINE.match, stderr.splitlines()) if m]


def test_report_says_the_first_look_before_the_slowest_file_is_loaded_and_the_full_analysis_confirms_it(
        sample_report, sample_truth):
    findings, _ = sample_report
    phases = _phases(_BUILDS.sample_report()[1].stderr)
    look = next(i for i, p in enumerate(phases) if p.startswith("first look"))
    # the slowest file of sample_logs/ is the LiteLLM spend log: its load ends when the next file's begins
    slowest = next(i for i, p in enumerate(phases) if p == "loading spend_logs.csv.gz")
    assert look < phases.index("loading access.log", slowest), phases
    (inc,) = findings["incidents"]
    start = inc["start"].replace("T", " ")[:19]
    assert phases[look].startswith("first look (preliminary, from LiteLLM callback_payloads.ndjson.gz: ")
    assert f"{inc['verdict']} {inc['kind']} {start} .. " in phases[look]
    assert f"{inc['requests']:,} requests" in phases[look] and phases[look].endswith("full analysis running")
    assert phases[-1] == "first look confirmed by INC-1"
    assert len(sample_truth["incidents"]) == 1 and sample_truth["incidents"][0]["kind"] == inc["kind"]


@pytest.mark.slow
def test_the_first_look_speaks_before_the_ingest_of_the_slowest_file_ends():
    """The first look and the full ingest side by side on the LiteLLM logs of sample_logs/: the first look's line
    comes while the full ingest is still loading the spend log (16,007 lines, the slowest file)."""
    said, ended = [], {}

    @contextmanager
    def timed(path: Path):
        yield
        ended[path.name] = time.monotonic()

    look = first_look.FirstLook([SAMPLE_LOGS / "litellm"], None, lambda line: said.append((time.monotonic(), line)))
    look.start()
    with Case.memory() as case:
        reports = case.ingest([SAMPLE_LOGS / "litellm"], progress=timed)
    seen = look.finish()
    slowest = max(reports, key=lambda r: r.seconds).path
    assert Path(slowest).name == "spend_logs.csv.gz"
    assert seen is not None and len(said) == 1
    assert said[0][0] < ended["spend_logs.csv.gz"], (said, ended)
    assert "attack unauthenticated_proxy 2026-11-16 02:00:08" in said[0][1]


def test_nothing_found_is_nothing_yet_never_all_clear(tmp_path):
    """A LiteLLM log with no incident in it (the sample's spend log cut to the day before the attack): 'nothing yet'."""
    import gzip

    with gzip.open(SAMPLE_LOGS / "litellm" / "spend_logs.csv.gz", "rt", newline="") as f:
        lines = [line for n, line in enumerate(f) if n == 0 or "2026-11-14" in line]
    assert len(lines) > 100
    (tmp_path / "spend_logs.csv").write_text("".join(lines))
    (tmp_path / "other.txt").write_text("not a log at all\n")
    said = []
    g = first_look.glance([tmp_path], say=said.append)
    assert said == [g.line] and g.sightings == []
    assert said[0] == f"first look: nothing yet — full analysis running (1 LiteLLM file(s), {len(lines) - 1:,} " \
                      "records searched)"
    none = []
    first_look.glance([SAMPLE_LOGS / "openai"], say=none.append)
    assert none == ["first look: nothing yet — full analysis running (no LiteLLM or nginx log among INPUT searched)"]
    assert "nothing yet" in first_look.compare(g, [])


def test_stopped_it_says_nothing():
    stop = threading.Event()
    stop.set()
    said = []
    g = first_look.glance([SAMPLE_LOGS / "litellm"], say=said.append, stop=stop)
    assert said == [] and g.line is None


def test_the_full_analysis_corrects_a_first_look_that_saw_part_of_the_history(sample_report):
    """The callback log alone against the findings of the whole run: the same incident is confirmed; a first look
    that saw the attack's second half only is corrected, with both windows in the line."""
    findings, _ = sample_report
    g = first_look.glance([SAMPLE_LOGS / "litellm" / "callback_payloads.ndjson.gz"], say=lambda s: None)
    assert first_look.compare(g, findings["incidents"]) == "first look confirmed by INC-1"
    (s,) = g.sightings
    later = first_look.Sighting(s.verdict, s.kind, s.start.replace(minute=30), s.end, s.requests // 3)
    g.sightings = [later]
    line = first_look.compare(g, findings["incidents"])
    assert line.startswith("first look corrected by INC-1: attack unauthenticated_proxy 2026-11-16 02:00:08 .. ")
    assert f"(first look: {later.words()})" in line
    g.sightings = [first_look.Sighting(s.verdict, s.kind, s.start.replace(day=1), s.end.replace(day=1), 3)]
    assert first_look.compare(g, findings["incidents"]).startswith(
        "first look corrected: the full analysis has no incident at that time")


def test_logs_too_large_for_a_first_look_are_left_to_the_full_analysis(monkeypatch):
    """Past its byte budget the first look reads nothing more (it would double a long ingest's work) and says so."""
    monkeypatch.setattr(first_look, "BUDGET_BYTES", 1000)
    said = []
    g = first_look.glance([SAMPLE_LOGS / "litellm"], say=said.append)
    assert g.files == [] and said == ["first look: nothing yet — full analysis running (no LiteLLM file "
                                      "searched; 2 LiteLLM file(s) too large for a first look left to the full "
                                      "analysis)"]


def test_without_litellm_logs_it_reads_nginx(sample_report):
    """nginx alone (the sample's current access log, which holds the attack): the nginx incident search finds it, and
    the whole run's incident confirms it."""
    findings, _ = sample_report
    said = []
    g = first_look.glance([SAMPLE_LOGS / "nginx" / "access.log"], say=said.append)
    assert g.source == "nginx" and g.files == ["access.log"]
    assert said[0].startswith("first look (preliminary, from nginx access.log: ")
    assert "attack unauthenticated_proxy 2026-11-16 02:00:08 .. 2026-11-16 02:45:07 UTC, 1,241 requests" in said[0]
    assert first_look.compare(g, findings["incidents"]) == "first look confirmed by INC-1"


def test_many_files_are_read_together_then_searched_once(tmp_path, sample_report):
    """More files than MAX_STEPS (the sample's callback log cut in 10 parts, as a logger that rolls often leaves it):
    read together, one search, and the line counts the files rather than naming them."""
    import gzip

    findings, _ = sample_report
    with gzip.open(SAMPLE_LOGS / "litellm" / "callback_payloads.ndjson.gz", "rt") as f:
        lines = f.readlines()
    parts = 10
    for n in range(parts):
        (tmp_path / f"callbacks-{n:02d}.ndjson").write_text("".join(lines[n::parts]))
    said = []
    g = first_look.glance([tmp_path], say=said.append)
    assert len(g.files) == parts > first_look.MAX_STEPS and g.records == len(lines)
    assert said[0].startswith(f"first look (preliminary, from LiteLLM {parts} files: {len(lines):,} records, ")
    assert first_look.compare(g, findings["incidents"]) == "first look confirmed by INC-1"
