"""`report` (HTML, Markdown, figures) and `export` / `verify` (the refund bundle) on sample_logs/, and on the same
logs plus requests whose user agent an attacker wrote: a formula, a script tag, ANSI escapes, a full API key."""
from __future__ import annotations

import csv
import gzip
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from chromium_cdp import Chromium, find_chromium
from conftest import run_cli as run
from forensics.outputs.report import count, money, when
from forensics.simulate import secret_keys

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_logs"
HOSTILE_IP = "198.51.100.66"


@pytest.fixture(scope="module")
def sample_bundle(tmp_path_factory, sample_case_file):
    """`export` of sample_logs/, from a copy of the session's sample case (the bundle is the same as from the logs)."""
    base = tmp_path_factory.mktemp("bundle")
    out = base / "evidence"
    r = run("export", sample_case_file.copy(base / "sample.duckdb"), "--out", out, "--zip")
    assert r.returncode == 0, r.stderr
    return out


def hostile_user_agent(key: str) -> str:
    return f'=HYPERLINK("http://evil.example/x","click") <script>alert(1)</script> \x1b[31mred\x1b[0m {key}\nX: y'


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, sample_case_file):
    """sample_logs/ plus three more unauthenticated gpt-4 calls in the attack, from a new address, whose user agent
    holds a spreadsheet formula, a script tag, ANSI escapes, a newline and a full virtual key: ingested into a copy of
    the session's sample case, then reported and exported from it."""
    tmp = tmp_path_factory.mktemp("hostile")
    key = next(iter(secret_keys("open_proxy", 1).values()))
    with gzip.open(SAMPLE / "litellm" / "callback_payloads.ndjson.gz", "rt") as fh:
        attack = next(r for r in map(json.loads, fh) if r.get("model_group") == "gpt-4"
                      and r["metadata"].get("user_api_key_hash") is None and r.get("status") == "success")
    lines = []
    for n in range(3):
        rec = json.loads(json.dumps(attack))
        rec["id"] = f"chatcmpl-hostile{n}"
        rec["litellm_call_id"] = rec["trace_id"] = f"00000000-0000-4000-8000-00000000000{n}"
        rec["startTime"] += 600 + 30 * n
        rec["endTime"] += 600 + 30 * n
        rec["completionStartTime"] = rec["endTime"]
        rec["user_agent"] = rec["metadata"]["user_agent"] = hostile_user_agent(key)
        rec["requester_ip_address"] = rec["metadata"]["requester_ip_address"] = f"10.0.0.1, {HOSTILE_IP}, 10.0.0.2"
        lines.append(json.dumps(rec))
    extra = tmp / "extra"
    extra.mkdir()
    (extra / "payloads.ndjson").write_text("\n".join(lines) + "\n")
    report_dir, bundle_dir = tmp / "report", tmp / "bundle"
    case = sample_case_file.copy(tmp / "case.duckdb")
    r = run("ingest", extra, "--case", case)
    assert r.returncode == 0, r.stderr
    r = run("report", case, "--out", report_dir)
    assert r.returncode == 0, r.stderr
    r = run("export", case, "--out", bundle_dir)
    assert r.returncode == 0, r.stderr
    return report_dir, bundle_dir, key


# --- report ------------------------------------------------------------------------------------------------------

def test_report_writes_all_four_artefacts(sample_report):
    findings, out = sample_report
    assert (out / "findings.json").is_file() and (out / "report.html").is_file() and (out / "report.md").is_file()
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.name for p in pngs} == {"inc_1_timeline.png", "inc_1_projection.png", "inc_1_controls.png"}
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    md = (out / "report.md").read_text()
    for p in pngs:                           # the Markdown points at each figure beside it
        assert f"](figures/{p.name})" in md


def test_markdown_renders_the_numbers_of_findings_json(sample_report):
    findings, out = sample_report
    md = (out / "report.md").read_text()
    expected = [money(findings["cost"]["total_usd"]), money(findings["baseline"]["cost_per_hour_usd"])]
    for inc in findings["incidents"]:
        expected += [inc["id"], when(inc["start"]), when(inc["end"]), count(inc["requests"]), money(inc["cost_usd"]),
                     money(inc["peak_cost_per_hour_usd"]), money(inc["projection"]["24h"]),
                     money(inc["projection"]["low_24h"]), money(inc["projection"]["high_24h"]),
                     money(inc["projection"]["7d"]), money(inc["projection"]["30d"])]
        for c in inc["controls"]:
            row = next(line for line in md.splitlines() if line.startswith(f"| {c['control'].replace('_', chr(92) + '_')} |"))
            assert money(c["loss_usd"]) in row and money(c["saved_usd"]) in row, row
        for ip in inc["ips"][:20]:
            expected.append(f"| {ip['ip']} | {count(ip['requests'])} | {money(ip['cost_usd'])} |")
    for m in findings["cost"]["by_model"]:
        expected.append(f"| {m['model']} | {count(m['requests'])} | {money(m['cost_usd'])} |")
    for r in findings["reconciliation"]:
        expected += [money(r["provider_cost_usd"]), money(r["proxy_cost_usd"])]
    for f in findings["inputs"]:
        expected.append(f["sha256"])
    missing = [e for e in expected if e not in md]
    assert not missing


def test_report_sections_and_summary(sample_report):
    _, out = sample_report
    md = (out / "report.md").read_text()
    for section in ("## Summary", "## Incidents", "## Cost over the whole case", "## Reconciliation with the provider",
                    "## Anomaly detector", "## Data coverage and logging gaps", "## Recommendations", "## Appendix"):
        assert section in md
    summary = md.split("## Summary")[1].split("\n## ")[0]
    assert [line.split(":**")[0] for line in summary.strip().splitlines()] == \
        ["- **What", "- **When", "- **How much", "- **Who", "- **Status"]
    assert "unauthenticated proxy" in summary and "$347.23" in summary and "34 client addresses" in summary
    recs = md.split("## Recommendations")[1].split("## Appendix")[0]
    for item in ("authentication", "rate limits", "budgets", "network exposure", "request validation", "monitoring",
                 "alerts", "secret handling"):
        assert f"| {item} |" in recs
    assert "| authentication | needed |" in recs      # the open proxy served keyless calls
    # the SQL behind every figure is in the appendix
    for step in ("figure_baseline_band", "figure_inc_1_minutes", "figure_inc_1_swimlanes", "controls_summary"):
        assert f"#### {step}" in md


@pytest.mark.integration
def test_html_in_headless_chromium_loads_every_figure_and_nothing_else(sample_report):
    _, out = sample_report
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs the Debian package")
        pytest.skip("chromium not installed (apt-get install chromium)")
    html = out / "report.html"
    with Chromium(chromium) as page:                # Debian's chromium over the DevTools protocol, on a pipe
        page.goto(html.as_uri())
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.src.slice(0, 21)])")
        scripts = page.evaluate("document.scripts.length")
        text = page.evaluate("document.body.innerText")
        requests, console = page.requests(), page.console()
    assert len(images) == len(list((out / "figures").glob("*.png"))) == 3
    assert all(ok and width > 0 and src == "data:image/png;base64" for ok, width, src in images), images
    assert requests == [html.as_uri()], requests        # no request left the page
    assert not console and scripts == 0
    assert "$347.23" in text and "INC-1" in text


@pytest.mark.integration
def test_the_browser_harness_sees_requests_scripts_and_console(tmp_path):
    """The checks above can fail: a page that loads a file, runs a script that logs, and has an inline script its
    Content-Security-Policy refuses is seen doing all of it."""
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs the Debian package")
        pytest.skip("chromium not installed (apt-get install chromium)")
    (tmp_path / "open.html").write_text('<body><p>open</p><img src="missing.png"><script>console.log("hi", 3)</script>')
    (tmp_path / "csp.html").write_text('<head><meta http-equiv="Content-Security-Policy" content="default-src \'none\'">'
                                       '</head><body><script>console.log("blocked")</script></body>')
    with Chromium(chromium) as page:
        page.goto((tmp_path / "open.html").as_uri())
        assert page.requests() == [(tmp_path / "open.html").as_uri(), (tmp_path / "missing.png").as_uri()]
        assert "hi 3" in page.console() and page.evaluate("document.scripts.length") == 1
        assert page.evaluate("document.body.innerText") == "open"
        page.goto((tmp_path / "csp.html").as_uri())
        [refused] = page.console()
        assert "Content Security Policy" in refused


# --- export / verify -------------------------------------------------------------------------------------------

def test_bundle_manifest_passes_sha256sum(sample_bundle):
    names = sorted(p.name for p in sample_bundle.iterdir())
    assert names == sorted(["MANIFEST.sha256", "request.md", "requests.csv", "cost_per_minute.csv",
                            "cost_per_hour.csv", "baseline_vs_incident.csv", "reconciliation.csv",
                            "inc_1_timeline.png", "chain_of_custody.json", "reconciliation_per_minute.csv"])
    listed = [line.split("  ", 1)[1] for line in (sample_bundle / "MANIFEST.sha256").read_text().splitlines()]
    assert sorted(listed) == sorted(n for n in names if n != "MANIFEST.sha256")
    if shutil.which("sha256sum"):
        r = subprocess.run(["sha256sum", "-c", "MANIFEST.sha256"], cwd=sample_bundle, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    assert run("verify", sample_bundle).returncode == 0
    assert sample_bundle.with_name("evidence.zip").is_file()


def test_bundle_content_matches_findings(sample_bundle, sample_truth):
    rows = list(csv.DictReader((sample_bundle / "requests.csv").open()))
    assert {r["request_id"] for r in rows} == set(sample_truth["incidents"][0]["request_ids"])
    # the provider's response id for what it served; a failed call (429) has only LiteLLM's call id
    assert all(r["request_id"].startswith("chatcmpl-") for r in rows if r["status"] == "success")
    assert all(r["start_time_utc"].endswith("Z") and r["start_time_as_logged"] for r in rows)
    from decimal import Decimal
    total = sum(Decimal(r["cost_usd"]) for r in rows if r["status"] == "success")
    assert abs(total - Decimal(sample_truth["incidents"][0]["cost_usd"])) < Decimal("0.01")
    minutes = list(csv.DictReader((sample_bundle / "cost_per_minute.csv").open()))
    assert sum(Decimal(m["cost_usd"]) for m in minutes) == total
    assert sum(int(m["requests"]) for m in minutes) == len(rows)
    letter = (sample_bundle / "request.md").read_text()
    assert "**$347.23**" in letter and "2026-11-16T02:00:08.621Z" in letter and "OpenAI" in letter
    assert "matching the amount above to the cent" in letter     # the provider's own bill agrees
    custody = json.loads((sample_bundle / "chain_of_custody.json").read_text())
    assert custody["provider"] == "openai" and custody["incidents"] == ["INC-1"]
    assert len(custody["inputs"]) == 22 and all(len(i["sha256"]) == 64 and i["size_bytes"] > 0
                                                for i in custody["inputs"])
    assert not any(os.path.isabs(i["path"]) for i in custody["inputs"])
    rec = list(csv.DictReader((sample_bundle / "reconciliation.csv").open()))
    assert rec and all(r["price_table"].startswith("genai-prices") for r in rec)


def test_refund_letter_counts_key_cause_and_minutes(sample_bundle, sample_truth):
    """The letter's counts are requests.csv's, served and failed labelled; it names the provider key id the provider
    billed, states the cause, and reconciles minute by minute with the provider's 1-minute buckets."""
    truth = sample_truth["incidents"][0]
    rows = list(csv.DictReader((sample_bundle / "requests.csv").open()))
    served = sum(r["status"] == "success" for r in rows)
    assert (len(rows), served) == (truth["requests"], truth["successful_requests"])
    letter = (sample_bundle / "request.md").read_text()
    assert f"{len(rows):,} requests ({served:,} served, {len(rows) - served:,} failed)" in letter
    assert f"{served:,} served requests (status success) of the {len(rows):,} ({len(rows) - served:,} failed" in letter
    assert "successful requests only" not in letter
    billed = "key_Xp3RmW8tQz5vLk2N"              # sample_logs/openai/usage_*: the api_key_id OpenAI billed
    assert f"Billed to (the usage in dispute): API key id {billed}" in letter
    assert "## Cause" in letter and "reachable from the internet without authentication" in letter
    minutes = list(csv.DictReader((sample_bundle / "reconciliation_per_minute.csv").open()))
    assert sum(int(m["disputed_requests"]) for m in minutes) == served
    assert all(m["difference"] == "0" for m in minutes)          # the provider's buckets agree with our logs
    assert f"over {len(minutes)} minutes" in letter and "every minute matches" in letter


@pytest.mark.slow
def test_export_without_an_attack_writes_nothing_and_exits_1(scenario_case, tmp_path):
    sc = scenario_case("benign_batch", 1)
    assert "attack" not in {i["verdict"] for i in sc.findings["incidents"]}
    out = tmp_path / "bundle"
    r = run("export", sc.copy(tmp_path / "case.duckdb"), "--out", out)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "nothing to dispute" in r.stderr, r.stderr
    assert not out.exists() and "Traceback" not in r.stderr


@pytest.mark.parametrize("tamper", ["change_byte", "add_file", "delete_file"])
def test_verify_fails_naming_the_file(sample_bundle, tmp_path, tamper):
    bundle = tmp_path / "copy"
    shutil.copytree(sample_bundle, bundle)
    assert run("verify", bundle).returncode == 0
    if tamper == "change_byte":
        p = bundle / "requests.csv"
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0x01
        p.write_bytes(bytes(data))
        name, why = "requests.csv", "content changed"
    elif tamper == "add_file":
        (bundle / "notes.txt").write_text("added later\n")
        name, why = "notes.txt", "extra file"
    else:
        (bundle / "cost_per_hour.csv").unlink()
        name, why = "cost_per_hour.csv", "missing"
    r = run("verify", bundle)
    assert r.returncode == 1
    [line] = r.stderr.strip().splitlines()
    assert f"{name}: {why}" in line and "Traceback" not in r.stderr


def test_export_refuses_a_folder_in_use(sample_bundle):
    r = run("export", SAMPLE, "--out", sample_bundle)
    assert r.returncode == 2 and "not an empty folder" in r.stderr


# --- safe to share -----------------------------------------------------------------------------------------------

def _artefacts(*folders):
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.suffix != ".duckdb":
                yield p


def test_no_full_key_in_any_artefact(sample_report, sample_bundle, hostile):
    report_dir, bundle_dir, _ = hostile
    keys = [k.encode() for k in secret_keys("open_proxy", 1).values()]
    assert keys
    scanned = 0
    for p in _artefacts(sample_report[1], sample_bundle, report_dir, bundle_dir):
        data = p.read_bytes()
        assert not any(k in data for k in keys), p
        scanned += 1
    assert scanned >= 2 * (9 + 6)


def test_hostile_user_agent_is_inert_in_csv_and_html(hostile):
    report_dir, bundle_dir, key = hostile
    rows = [r for r in csv.DictReader((bundle_dir / "requests.csv").open()) if r["client_ip"] == HOSTILE_IP]
    assert len(rows) == 3                                   # the three requests joined the incident
    for r in rows:
        ua = r["user_agent"]
        assert ua.startswith("'=HYPERLINK(")                 # a spreadsheet shows it as text
        assert "\x1b" not in ua and "\n" not in ua and "\\x1b[31m" in ua
        assert key not in ua and "sk-...".replace("...", "") in ua
    for line in (bundle_dir / "requests.csv").read_text().splitlines()[1:]:
        cells = next(csv.reader([line]))
        assert not any(c[:1] in "=+-@" for c in cells if c and not re.fullmatch(r"-?[0-9.]+", c)), cells
    html = (report_dir / "report.html").read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\x1b" not in html
    md = (report_dir / "report.md").read_text()
    assert "<script>" not in md and "\\<script\\>" in md and "\x1b" not in md


def test_no_full_key_in_any_notebook():
    """The committed notebooks (outputs included) hold no full key the simulator used, in any scenario or seed."""
    from forensics.simulate import SCENARIOS

    keys = {k for s in SCENARIOS for seed in (1, 2, 3) for k in secret_keys(s, seed).values()}
    assert len(keys) > 10
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 6
    for nb in notebooks:
        text = nb.read_text()
        assert not [k for k in keys if k in text], nb.name


@pytest.mark.parametrize("given", ["case", pytest.param("logs", marks=pytest.mark.slow)])
def test_bundle_for_usage_outside_the_proxy(tmp_path, scenario_case, given):
    """A provider key used directly: no proxy request to list; the disputed amount is the provider-side usage, and
    the provider's own cost report, less the proxy's legitimate traffic, must come to the same figure. From a copy
    of the session's case of that scenario (default tier), and from its log files (slow: one more ingest)."""
    from decimal import Decimal

    case = scenario_case("provider_key_outside_proxy", 1)
    truth = case.truth
    out = tmp_path / "bundle"
    source = case.copy(tmp_path / "case.duckdb") if given == "case" else case.logs
    r = run("export", source, "--out", out, "--provider", "openai")
    assert r.returncode == 0, r.stderr
    usage = list(csv.DictReader((out / "usage_outside_proxy.csv").open()))
    total = sum(Decimal(u["cost_usd_at_list_prices"]) for u in usage)
    [t] = truth["incidents"]
    assert abs(total - Decimal(t["cost_usd"])) <= Decimal(t["cost_usd"]) * Decimal("0.01")
    letter = (out / "request.md").read_text()
    assert f"**{money(total)}**" in letter and "our proxy never made" in letter
    assert "matching the amount above to the cent" in letter and "0 client addresses" not in letter
    assert "client addresses blocked" not in letter       # nothing reached the proxy: no address to block
    assert list(csv.DictReader((out / "requests.csv").open())) == []      # nothing the proxy served is disputed
    assert run("verify", out).returncode == 0
