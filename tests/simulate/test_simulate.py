"""The simulator writes the real formats, deterministically, with calibrated truth and no secrets."""
from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import re
import struct
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from conftest import SAMPLE_LOGS
from forensics.netaddr import TrustedProxies
from forensics.secrets import KEY_PATTERN
from forensics.simulate import SCENARIOS, secret_keys, simulate
from forensics.simulate import nginx_writer
from forensics.simulate.litellm_writer import SPEND_LOG_COLUMNS
from forensics.simulate.scenarios import build, incident_truth

SPEND_LOG_HEADER = (
    "request_id,call_type,api_key,spend,total_tokens,prompt_tokens,completion_tokens,startTime,endTime,"
    "request_duration_ms,completionStartTime,model,model_id,model_group,custom_llm_provider,api_base,user,metadata,"
    "cache_hit,cache_key,request_tags,team_id,organization_id,end_user,requester_ip_address,messages,response,"
    "session_id,status,mcp_namespaced_tool_name,agent_id,proxy_server_request"
)


def read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two independent runs with the same seed, in two processes: `sample_logs/` (written by `simulate --scenario
    open_proxy --seed 1`, as test_sample_logs_is_what_the_simulator_writes checks) and a fresh one, here."""
    b = tmp_path_factory.mktemp("b")
    return (SAMPLE_LOGS, json.loads((SAMPLE_LOGS / "truth.json").read_text())), (b, simulate("open_proxy", b, 1))


@pytest.fixture(scope="module")
def out(runs):
    return runs[0][0]


@pytest.fixture(scope="module")
def truth(runs):
    return runs[0][1]


@pytest.fixture(scope="module")
def attack(truth):
    return truth["incidents"][0]


@pytest.fixture(scope="module")
def spend_rows(out):
    text = read(out / "litellm" / "spend_logs.csv.gz").decode()
    return list(csv.DictReader(io.StringIO(text)))


def simulated_files(folder: Path) -> list[Path]:
    """The files of a simulator's output folder; sample_logs/config/ is no simulator output (the seed's deployment
    configuration, for the audit) and is left out."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).parts[0] != "config")


def test_sample_logs_is_what_the_simulator_writes(runs):
    """sample_logs/ is `simulate --scenario open_proxy --seed 1`, byte for byte (the tests take its case for that
    scenario's: conftest's scenario_case)."""
    (a, ta), (b, tb) = runs
    assert a == SAMPLE_LOGS
    files = simulated_files(b)
    assert files == simulated_files(a)
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert ta == tb


def test_same_seed_gives_identical_bytes(runs):
    (a, ta), (b, tb) = runs
    files_a, files_b = simulated_files(a), simulated_files(b)
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert ta == tb
    assert json.loads((a / "truth.json").read_text()) == json.loads(json.dumps(ta))
    for gz in a.rglob("*.gz"):
        head = gz.read_bytes()[:10]
        assert struct.unpack("<I", head[4:8])[0] == 0 and not head[3] & 0x08, gz   # mtime 0, no file name


def test_truth_figures_match_the_write_up(truth, attack):
    assert truth["scenario"] == "open_proxy" and truth["seed"] == 1
    assert set(truth["files"]) == {str(p) for p in truth["records"]}
    assert attack["kind"] == "unauthenticated_proxy" and attack["verdict"] == "attack"
    assert 1100 <= attack["requests"] <= 1300
    assert attack["requests"] == len(attack["request_ids"]) == len(set(attack["request_ids"]))
    assert attack["successful_requests"] + attack["provider_429s"] == attack["requests"]
    assert attack["provider_429s"] > 10
    start, end = pd.Timestamp(attack["start"]), pd.Timestamp(attack["end"])
    assert pd.Timestamp("2026-11-16T02:00:00Z") <= start < pd.Timestamp("2026-11-16T02:00:15Z")
    assert 43 * 60 <= (end - start).total_seconds() <= 46 * 60
    assert abs(Decimal(attack["cost_usd"]) - Decimal("347.23")) <= Decimal("347.23") * Decimal("0.05")
    assert 20 <= len(attack["attacker_ips"]) <= 40
    assert attack["compromised_key_hash"] is None and attack["model"] == "gpt-4"
    assert any(ua.startswith("curl/") for ua in attack["user_agents"])
    base = truth["baseline"]
    assert 12 <= base["cost_per_hour_usd"] <= 15
    assert 80 <= base["requests_per_hour"] <= 150
    assert {k["alias"] for k in truth["keys"]} >= {"web-backend", "support-bot", "batch-summarizer", "ci-tests"}
    assert truth["network"]["lb_ip"] == "10.0.0.2"


def test_spend_logs_csv_is_a_copy_export(out, spend_rows, truth, attack):
    header = read(out / "litellm" / "spend_logs.csv.gz").decode().split("\n", 1)[0]
    assert header == SPEND_LOG_HEADER == ",".join(SPEND_LOG_COLUMNS)
    assert len(spend_rows) == truth["records"]["litellm/spend_logs.csv.gz"] == truth["totals"]["litellm_rows"]
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,3})?$")
    by_id = {r["request_id"]: r for r in spend_rows}
    assert len(by_id) == len(spend_rows)
    cost = Decimal(0)
    for rid in attack["request_ids"]:
        r = by_id[rid]
        assert r["api_key"] == "" and r["user"] == "" and r["model"] == "gpt-4"
        meta = json.loads(r["metadata"])
        assert meta["user_api_key_alias"] is None
        assert r["requester_ip_address"].split(", ")[-1] == truth["network"]["lb_ip"]
        if r["status"] == "failure":
            assert r["startTime"] == r["endTime"] and float(r["spend"]) == 0
            assert meta["error_information"]["error_class"] == "RateLimitError"
            assert meta["error_information"]["error_code"] == "429"
        else:
            assert rid.startswith("chatcmpl-") and len(rid) == len("chatcmpl-") + 29
            cost += Decimal(r["prompt_tokens"]) * 30 / 10**6 + Decimal(r["completion_tokens"]) * 60 / 10**6
    assert cost == Decimal(attack["cost_usd"])
    for r in spend_rows[:2000]:
        assert stamp.match(r["startTime"]) and stamp.match(r["endTime"])
        assert r["cache_hit"] == "False" and r["cache_key"] == "Cache OFF"
        assert isinstance(json.loads(r["request_tags"]), list)
        assert r["status"] in ("success", "failure")
    keyed = [r for r in spend_rows if r["api_key"]]
    assert all(re.fullmatch(r"[0-9a-f]{64}", r["api_key"]) for r in keyed)
    hashes = {k["key_hash"] for k in truth["keys"]} | set(truth["invalid_key_hashes"])
    assert {r["api_key"] for r in keyed} <= hashes
    assert any(json.loads(r["metadata"])["error_information"]["error_code"] == "401"
               for r in spend_rows if r["status"] == "failure" and r["api_key"] in truth["invalid_key_hashes"])


def test_callback_payloads_are_the_same_requests(out, spend_rows, attack):
    lines = gzip.decompress((out / "litellm" / "callback_payloads.ndjson.gz").read_bytes()).decode().splitlines()
    payloads = [json.loads(line) for line in lines]
    by_id = {r["request_id"]: r for r in spend_rows}
    assert set(attack["request_ids"]) <= {p["id"] for p in payloads}
    for p in payloads:
        assert p["id"] in by_id
        assert isinstance(p["startTime"], float) and p["startTime"] >= 1794787200.0
        assert p["litellm_call_id"] and p["metadata"]["requester_ip_address"] == p["requester_ip_address"]
        if p["status"] == "failure":
            assert p["id"] == p["litellm_call_id"] and p["error_information"]["error_class"]
    gpt4 = [p for p in payloads if p["model_group"] == "gpt-4"]
    assert all(p["metadata"]["user_api_key_hash"] is None and p["model_parameters"]["max_tokens"] == 4000
               for p in gpt4)


def nginx_lines(out: Path) -> list[dict]:
    rows = []
    for path in sorted((out / "nginx").iterdir()):
        for line in read(path).splitlines():
            rows.append(json.loads(line.decode("utf-8", "surrogateescape")))
    return rows


def test_nginx_json_log(out, truth, attack):
    assert (out / "nginx" / "access.log").exists() and (out / "nginx" / "access.log.1").exists()
    assert (out / "nginx" / "access.log.2.gz").exists()
    rows = nginx_lines(out)
    assert len(rows) == truth["totals"]["nginx_lines"]
    assert all(isinstance(v, str) for r in rows for v in r.values())
    assert all(r["time_iso8601"].endswith("+01:00") for r in rows)
    call_ids = [r["upstream_http_x_litellm_call_id"] for r in rows if r["upstream_http_x_litellm_call_id"]]
    assert len(call_ids) == len(set(call_ids)) == truth["totals"]["litellm_rows"]
    requests = {r["request"] for r in rows}
    assert {"GET /health HTTP/1.1", "GET /.env HTTP/1.1", "GET /wp-login.php HTTP/1.1", ""} <= requests
    assert any(r["request"].startswith("\x16\x03\x01") and r["status"] == "400" for r in rows)
    trusted = TrustedProxies(tuple(truth["network"]["trusted_proxies"]))
    attack_calls = set(attack["litellm_call_ids"])
    hits = [r for r in rows if r["upstream_http_x_litellm_call_id"] in attack_calls]
    assert len(hits) == attack["requests"]
    assert {trusted.client(r["http_x_forwarded_for"], r["remote_addr"]) for r in hits} == set(attack["attacker_ips"])
    assert any(r["http_x_forwarded_for"].startswith("127.0.0.1, ") for r in hits)
    assert sum(r["status"] == "429" for r in hits) == attack["provider_429s"]


@pytest.fixture(scope="module")
def events():
    keys, frame, noise, _ = build("open_proxy", 1)
    ev = pd.concat([nginx_writer.from_requests(frame), noise[nginx_writer.EVENT_COLUMNS]], ignore_index=True)
    special = [ev[ev["xff"].str.startswith("127.")].head(20), ev[ev["ua"].str.contains('"')].head(10),
               ev[ev["request"].str.startswith("\x16")].head(5), ev[ev["request"] == ""].head(5)]
    return pd.concat([ev.head(300), *special], ignore_index=True)


@pytest.mark.parametrize("fmt", ["combined", "main", "timings", "ingress"])
def test_nginx_text_formats(events, fmt):
    head = r'(\S+) - - \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "((?:[^"\\]|\\x[0-9A-F]{2})*)" ' \
           r'(\d{3}) (\d+) "([^"]*)" "([^"]*)"'
    tail = {"combined": "", "main": r' "([^"]*)"', "timings": r" [\d.]+ (\S+) (\S+) (\S+) [0-9a-f]{32}",
            "ingress": r" \d+ [\d.]+ \[\S*\] \[\] (\S+) (\S+) (\S+) (\S+) [0-9a-f]{32}"}[fmt]
    pattern = re.compile(head + tail + "$")
    lines = nginx_writer.render(events, fmt)
    assert all(pattern.match(line) for line in lines), next(x for x in lines if not pattern.match(x))
    assert any("\\x22" in line for line in lines) and any("\\x16\\x03\\x01" in line for line in lines)
    if fmt == "main":
        assert any(line.endswith('"127.0.0.1, 203.0.113.21"') or '"127.0.0.1, ' in line for line in lines)
    if fmt == "ingress":   # realip ran: the forged 127.0.0.1 never becomes the client
        assert not any(line.startswith("127.") for line in lines)


def chained(pages: list[dict], start_key: str) -> None:
    for page, nxt in zip(pages, pages[1:]):
        assert page["has_more"] is True and page["next_page"].startswith("page_")
        assert nxt["data"][0][start_key]
    assert pages[-1]["has_more"] is False and pages[-1]["next_page"] is None


def load_pages(out: Path, pattern: str) -> list[dict]:
    paths = sorted(out.glob(pattern), key=lambda p: int(re.search(r"page(\d+)", p.name).group(1)))
    return [json.loads(p.read_text()) for p in paths]


def test_openai_usage_and_costs(out, attack, truth):
    hourly = load_pages(out, "openai/usage_completions_2026-11-09_page*.json")
    assert len(hourly) >= 2 and all(p["object"] == "page" and len(p["data"]) <= 168 for p in hourly)
    chained(hourly, "start_time")
    for page, nxt in zip(hourly, hourly[1:]):     # the cursor names the next page's first bucket
        raw = base64.b64decode(page["next_page"][5:])
        assert struct.unpack(">I", raw[4:8])[0] == nxt["data"][0]["start_time"]
    buckets = [b for p in hourly for b in p["data"]]
    assert all(b["end_time"] - b["start_time"] == 3600 for b in buckets)
    results = [r for b in buckets for r in b["results"]]
    gpt4 = [r for r in results if r["model"] == "gpt-4-0613"]
    assert sum(r["num_model_requests"] for r in gpt4) == attack["successful_requests"]
    assert sum(r["input_tokens"] for r in gpt4) == attack["prompt_tokens"]
    assert sum(r["output_tokens"] for r in gpt4) == attack["completion_tokens"]
    assert {r["model"] for r in results} == {"gpt-4-0613", "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18"}
    minute = load_pages(out, "openai/usage_completions_2026-11-16_1m_page*.json")
    chained(minute, "start_time")
    assert all(b["end_time"] - b["start_time"] == 60 for p in minute for b in p["data"])
    assert any(b["results"] == [] for p in minute for b in p["data"])
    costs = load_pages(out, "openai/costs_page*.json")
    chained(costs, "start_time")
    items = [r for p in costs for b in p["data"] for r in b["results"]]
    assert all(r["amount"]["currency"] == "usd" and isinstance(r["amount"]["value"], float) for r in items)
    gpt4_cost = sum(r["amount"]["value"] for r in items if r["line_item"].startswith("gpt-4-0613, "))
    assert gpt4_cost == pytest.approx(float(attack["cost_usd"]), abs=1e-6)
    total = sum(r["amount"]["value"] for r in items)
    assert total == pytest.approx(float(truth["totals"]["openai"]["cost_usd"]), abs=1e-6)


def test_anthropic_usage_and_cost_report(out, truth):
    usage = load_pages(out, "anthropic/usage_report_messages_page*.json")
    chained(usage, "starting_at")
    rows = [r for p in usage for b in p["data"] for r in b["results"]]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", b["starting_at"]) for p in usage for b in p["data"])
    assert sum(r["cache_read_input_tokens"] for r in rows) > 0
    assert sum(r["cache_creation"]["ephemeral_5m_input_tokens"] for r in rows) > 0
    total_in = sum(r["uncached_input_tokens"] + r["cache_read_input_tokens"]
                   + r["cache_creation"]["ephemeral_5m_input_tokens"] + r["cache_creation"]["ephemeral_1h_input_tokens"]
                   for r in rows)
    assert total_in == truth["totals"]["anthropic"]["input_tokens"]
    cost = load_pages(out, "anthropic/cost_report_page*.json")
    chained(cost, "starting_at")
    items = [r for p in cost for b in p["data"] for r in b["results"]]
    assert all(isinstance(r["amount"], str) and re.fullmatch(r"\d+(\.\d+)?", r["amount"]) for r in items)
    assert all(r["currency"] == "USD" and r["cost_type"] == "tokens" for r in items)
    dollars = sum(Decimal(r["amount"]) for r in items) / 100
    assert dollars == Decimal(truth["totals"]["anthropic"]["cost_usd"])


def test_no_full_key_in_any_file(out):
    secrets = secret_keys("open_proxy", 1)
    assert len(secrets) >= 6 and all(s.startswith("sk-") for s in secrets.values())
    pattern = re.compile(KEY_PATTERN.encode())
    for path in out.rglob("*"):
        if path.is_file():
            data = read(path)
            assert not any(s.encode() in data for s in secrets.values()), path
            assert not pattern.search(data), path


def test_scenarios_are_registered():
    assert {"open_proxy", "benign_batch", "leaked_virtual_key", "key_stuffing", "provider_key_outside_proxy",
            "provider_key_outside_proxy_second_key"} <= set(SCENARIOS)
    with pytest.raises(ValueError):
        simulate("no_such_scenario", Path("/nonexistent"))
    with pytest.raises(ValueError):
        secret_keys("no_such_scenario", 1)


@pytest.mark.parametrize("scenario, verdict, alias", [("benign_batch", "benign", "batch-summarizer"),
                                                      ("leaked_virtual_key", "attack", "ci-tests")])
def test_other_scenarios_compose_baseline_and_incident(scenario, verdict, alias):
    keys, frame, _, found = build(scenario, 3)
    facts = incident_truth(found[0], frame, keys)
    assert facts["verdict"] == verdict and facts["key_alias"] == alias and facts["requests"] > 100
    assert (facts["compromised_key_hash"] is not None) == (verdict == "attack")
    assert (frame["incident"] == "").sum() > 10_000
