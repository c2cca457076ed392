"""The postmortem's sections on sample_logs/ (the session's `report` run), checked against the simulator's truth:
the data-side timeline (reconnaissance, first request, provider 429s, last request), the leads (every attacking
address by network, forged X-Forwarded-For values), action items with owner and due placeholders, and the rendering
rules (one time format, no empty table with its header, the appendix collapsed)."""
from __future__ import annotations

import re

import pytest

from forensics.analysis.leads import network_of

SECTIONS = ["Summary", "Impact", "Root cause and trigger", "Detection", "Response timeline", "Resolution", "Leads",
            "Action items", "Lessons", "Incidents"]


@pytest.fixture(scope="module")
def md(sample_report):
    return (sample_report[1] / "report.md").read_text()


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _second(iso: str) -> str:
    return iso[:19].replace("T", " ") + " UTC"


def test_sections_in_postmortem_order(md, sample_report):
    positions = [md.index(f"\n## {s}\n") for s in SECTIONS]
    assert positions == sorted(positions)
    html = (sample_report[1] / "report.html").read_text()
    for s in SECTIONS:
        assert f">{s}</h2>" in html
    assert '<details class="appendix" id="appendix">' in html


def test_timeline_holds_the_data_side_moments(md, sample_truth):
    inc = sample_truth["incidents"][0]
    timeline = _section(md, "Response timeline")
    first_recon = min(inc["precursors"], key=lambda p: p["time"])
    assert f"| {_second(first_recon['time'])} | first reconnaissance: GET / from {first_recon['client_ip']}" in timeline
    assert f"| {_second(inc['start'])} | first attack request" in timeline
    assert f"| {_second(inc['end'])} | last attack request" in timeline
    assert f"{inc['provider_429s']} in all until" in timeline
    assert "end of the busiest 15 minutes" in timeline
    assert timeline.count("[analyst: fill in]".replace("[", "\\[").replace("]", "\\]")) == 3
    rows = [r for r in timeline.splitlines() if r.startswith("| 20")]
    assert [r.split(" | ")[0] for r in rows] == sorted(r.split(" | ")[0] for r in rows)


def test_leads_list_every_address_by_network_and_the_forged_headers(md, sample_truth):
    inc = sample_truth["incidents"][0]
    leads = _section(md, "Leads")
    networks = {network_of(ip) for ip in inc["attacker_ips"]}
    assert f"({len(inc['attacker_ips'])} addresses in {len(networks)} networks)" in leads
    for ip in inc["attacker_ips"]:
        assert re.search(rf"[ :,]{re.escape(ip)}[ ,|]", leads), ip
    forged = re.findall(r"^\| ([\d.]+) \| \d+: ", leads.split("forged X-Forwarded-For")[1], re.M)
    assert sorted(forged) == sorted(inc["forged_xff"])
    for p in inc["precursors"]:
        assert f"| {_second(p['time'])} | {p['client_ip']} |" in leads


def test_action_items_and_rendering_rules(md):
    actions = _section(md, "Action items")
    rows = [r for r in actions.splitlines() if re.match(r"\| \d+ \|", r)]
    assert rows and all(r.endswith("| \\[owner\\] | \\[due date\\] | ") for r in rows)
    assert rows[0].split(" | ")[1] == "needed"
    # one time format: no ISO 8601 'T' time anywhere outside the SQL appendix
    body = md.split("### The SQL behind the figures")[0]
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", body)
    # no table printed with its header and no row
    lines = md.splitlines()
    for i, line in enumerate(lines[:-2]):
        if re.match(r"^\|(-+:?\|)+$", line):
            assert lines[i + 1].startswith("| "), f"empty table under {lines[i - 1]}"
    assert "No record quarantined." in md
    assert "{" not in _section(md, "Data coverage and logging gaps")      # the nginx join in words, no dict
