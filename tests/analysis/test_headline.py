"""One definition each for the figures every document repeats (analysis/headline.py): requests served and failed,
requests without a virtual key, cost, peak and its multiple of the baseline; the same numbers in findings.json, the
report, the evidence bundle (CSV and letter) and the notebooks' helpers."""
from __future__ import annotations

import csv
import re
from decimal import Decimal

import pytest

from forensics import notebook as nb
from forensics.outputs.report import count, money


def _incident(findings):
    return next(i for i in findings["incidents"] if i["verdict"] == "attack")


def test_findings_and_report_print_the_same_figures(sample_report):
    findings, out = sample_report
    inc = _incident(findings)
    assert inc["served"] + inc["failed"] == inc["requests"] == len(inc["request_ids"])
    assert inc["failed"] > 0 and inc["served_without_key"] == inc["served"]       # the open proxy: keyless
    base = findings["baseline"]["cost_per_hour_usd"]
    assert inc["times_baseline"] == round(inc["peak_cost_per_hour_usd"] / base, 1)
    text = (out / "report.md").read_text()
    served = f"{count(inc['requests'])} requests ({count(inc['served'])} served, {count(inc['failed'])} failed)"
    times = f"{inc['times_baseline']:.1f}x the baseline of {money(base)}/h"
    assert text.count(served) >= 3            # summary, incident section, the evidence line
    assert text.count(times) >= 2 and f"peak {money(inc['peak_cost_per_hour_usd'])}/h" in text
    # no other multiple of the baseline and no other keyless count anywhere in the report
    assert set(re.findall(r"(\d+\.\d)x the baseline", text)) == {f"{inc['times_baseline']:.1f}"}
    served_claims = {int(n.replace(",", "")) for n in re.findall(r"([\d,]+) (?:incident )?requests were served with "
                                                                   r"no virtual key", text)}
    assert served_claims <= {inc["served_without_key"]}
    html = (out / "report.html").read_text()
    assert served in html and times in html


@pytest.fixture(scope="module")
def documents(sample_case_file, tmp_path_factory):
    """The sample case investigated once, then findings, the report's Markdown, the bundle, the notebook frames."""
    from forensics.analysis import postmortem
    from forensics.analysis.evidence import evidence
    from forensics.outputs import bundle, report
    from forensics.outputs import findings as findings_out

    case = sample_case_file.con
    inv = case.investigate()
    findings = findings_out.build(inv)
    model = report.build_model(inv, findings, postmortem.prepare(case, inv, findings, run_detector=False), case.steps)
    out = tmp_path_factory.mktemp("headline") / "bundle"
    bundle.build(evidence(case, inv), inv, findings, out)
    return inv, findings, report.render_md(model), out


@pytest.mark.slow
def test_bundle_and_notebooks_print_the_report_s_figures(documents):
    inv, findings, md, out = documents
    inc = _incident(findings)
    f = next(x for x in inv.incidents if x.incident.id == inc["id"])
    h = f.headline
    # the notebook helpers
    spend = nb.spend_check(inv).set_index("what")
    row = spend.loc[f"{inc['id']} {inc['kind']} ({inc['verdict']})"]
    assert (row["requests"], row["served"], row["failed"]) == (inc["requests"], inc["served"], inc["failed"])
    assert row["peak_times_baseline"] == inc["times_baseline"] == float(round(h.times_baseline, 1))
    assert row["cost_usd"] == round(inc["cost_usd"], 2)
    frame = nb.incidents_frame(inv).set_index("incident").loc[inc["id"]]
    assert (frame["requests"], frame["served"], frame["failed"]) == (inc["requests"], inc["served"], inc["failed"])
    # the bundle: baseline_vs_incident.csv and requests.csv
    with open(out / "baseline_vs_incident.csv", newline="") as fh:
        bvi = {r["period"].split()[0]: r for r in csv.DictReader(fh)}
    assert bvi[inc["id"]]["peak_times_baseline"] == f"{inc['times_baseline']:.1f}"
    assert Decimal(bvi[inc["id"]]["peak_cost_usd_per_hour"]) == h.peak_cost_per_hour_usd
    assert f"{inc['times_baseline']:.1f}x the baseline" in md
    with open(out / "requests.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["incident"] == inc["id"]]
    assert len(rows) == inc["requests"]
    assert sum(r["status"] == "success" for r in rows) == inc["served"]
    letter = (out / "request.md").read_text()
    assert f"{count(inc['served'])} served" in letter and f"{count(inc['failed'])} failed" in letter
