"""The key-stuffing and provider-key-outside-the-proxy scenarios: deterministic, truth consistent with the files."""
from __future__ import annotations

import csv
import gzip
import io
import json
import multiprocessing
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from forensics.netaddr import TrustedProxies
from forensics.secrets import KEY_PATTERN, key_hash
from forensics.simulate import secret_keys, simulate
from forensics.simulate.catalog import make_keys, ts
from forensics.simulate.incidents_more import SECOND_KEY_ID
from forensics.simulate.scenarios import REGISTRY, _rng, run_incidents

OUTSIDE = ("provider_key_outside_proxy", "provider_key_outside_proxy_second_key")


def read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def load_pages(out: Path, pattern: str) -> list[dict]:
    paths = sorted(out.glob(pattern), key=lambda p: int(re.search(r"page(\d+)", p.name).group(1)))
    return [json.loads(p.read_text()) for p in paths]


def results(pages: list[dict]) -> list[tuple[int, dict]]:
    """(bucket start, result) of every result in OpenAI pages."""
    return [(b["start_time"], r) for p in pages for b in p["data"] for r in b["results"]]


def spend_rows(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(read(out / "litellm" / "spend_logs.csv.gz").decode())))


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, simulated):
    """key_stuffing twice (determinism) and both outside-proxy variants, seed 1: the session's runs (conftest's
    `simulated`, shared with the scenario tests) and key_stuffing once more, in another process than the session's
    run: here when the helper process wrote that, else in a process of its own."""
    again = tmp_path_factory.mktemp("key_stuffing_again")
    if simulated.by_helper("key_stuffing", 1):
        truth_again = simulate("key_stuffing", again, 1)
    else:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            truth_again = pool.submit(simulate, "key_stuffing", again, 1).result()
    sims = {name: simulated(scenario, 1) for name, scenario in [("stuffing", "key_stuffing"),
                                                                  *((s, s) for s in OUTSIDE)]}
    return {"stuffing_again": (again, truth_again), **{name: (sim.logs, sim.truth) for name, sim in sims.items()}}


def test_key_stuffing_is_deterministic(runs):
    (a, ta), (b, tb) = runs["stuffing"], runs["stuffing_again"]
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert ta == tb


@pytest.mark.parametrize("scenario", ["key_stuffing", *OUTSIDE])
def test_incident_generators_replay_identically(scenario):
    spec = REGISTRY[scenario]
    keys_a, (a,) = run_incidents(spec, _rng(1, 3, scenario), make_keys(1))
    keys_b, (b,) = run_incidents(spec, _rng(1, 3, scenario), make_keys(1))
    pd.testing.assert_frame_equal(a.frame, b.frame)
    if a.outside is not None:
        pd.testing.assert_frame_equal(a.outside, b.outside)
    assert [k.secret for k in keys_a] == [k.secret for k in keys_b]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generators_stay_in_their_envelopes(seed):
    _, (inc,) = run_incidents(REGISTRY["key_stuffing"], _rng(seed, 3, "key_stuffing"), make_keys(seed))
    f = inc.frame.sort_values("t_start")
    auth = f[f["outcome"] == "auth"]
    assert 1000 <= len(auth) and auth["key"].nunique() == len(auth) == len(inc.new_keys)
    assert 3 <= f["client_ip"].nunique() <= 5 and set(f["ua"]) == {"python-requests/2.31.0"}
    hit = f[f["outcome"] == "ok"]["t_start"].min()
    assert 20 * 60e6 <= hit - auth["t_start"].min() <= 40.2 * 60e6 and auth["t_start"].max() < hit
    assert 25 * 60e6 <= f["t_start"].max() - hit <= 66 * 60e6
    for scenario in OUTSIDE:
        _, (out,) = run_incidents(REGISTRY[scenario], _rng(seed, 3, scenario), make_keys(seed))
        t = out.outside["t_start"]
        assert out.frame.empty and 300 <= len(t) <= 3000
        assert 2.9 * 3600e6 <= t.max() - t.min() <= 6 * 3600e6
        assert ts("2026-11-14T21:00:00") <= t.min() < ts("2026-11-14T23:30:00")


# --- key stuffing -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stuffing(runs):
    out, truth = runs["stuffing"]
    return out, truth, truth["incidents"][0], spend_rows(out)


def test_stuffing_truth_shape(stuffing):
    _, truth, inc, _ = stuffing
    assert inc["kind"] == "credential_stuffing" and inc["verdict"] == "attack" and inc["id"] == "INC-1"
    support = next(k for k in truth["keys"] if k["alias"] == "support-bot")
    assert inc["compromised_key_hash"] == support["key_hash"] and inc["compromised_key_hint"] == support["key_hint"]
    assert inc["requests"] == len(inc["request_ids"]) == len(set(inc["request_ids"]))
    assert inc["requests"] == inc["failed_auth"] + inc["successful_requests"]
    assert inc["failed_auth"] == inc["distinct_keys_tried"] == inc["stuffing"]["requests"]
    assert inc["start"] == inc["stuffing"]["start"] and inc["end"] == inc["exploitation"]["end"]
    assert inc["stuffing"]["end"] < inc["first_success"]["time"] < inc["exploitation"]["start"]
    assert inc["first_success"]["client_ip"] in inc["attacker_ips"] and 3 <= len(inc["attacker_ips"]) <= 5
    assert inc["first_success"]["request_id"] in inc["request_ids"]
    assert Decimal(inc["cost_usd"]) > 20 and inc["model"] == "gpt-4o"
    assert truth["invalid_key_hashes"] and len(truth["invalid_key_hashes"]) == 1   # the baseline's typo only


def test_stuffing_spend_logs_match_truth(stuffing):
    _, truth, inc, rows = stuffing
    by_id = {r["request_id"]: r for r in rows}
    mine = [by_id[rid] for rid in inc["request_ids"]]
    auth = [r for r in mine if r["status"] == "failure"]
    assert len(auth) == inc["failed_auth"]
    for r in auth:
        meta = json.loads(r["metadata"])
        err = meta["error_information"]
        assert (err["error_code"], err["error_class"]) == ("401", "ProxyException")
        assert re.fullmatch(r"[0-9a-f]{64}", r["api_key"]) and meta["user_api_key"] == r["api_key"]
        assert float(r["spend"]) == 0 and r["prompt_tokens"] == "0" and r["user"] == ""
        assert r["api_key"] in err["error_message"]
    known = {k["key_hash"] for k in truth["keys"]} | set(truth["invalid_key_hashes"])
    assert len({r["api_key"] for r in auth}) == len(auth) and not {r["api_key"] for r in auth} & known
    # every 401 of the files is the attack's or one of the baseline's mistyped-key bursts
    all_401 = sum(json.loads(r["metadata"])["error_information"]["error_code"] == "401"
                  for r in rows if r["status"] == "failure")
    assert all_401 == inc["failed_auth"] + truth["baseline"]["failures"]["auth"]
    ok = [r for r in mine if r["status"] == "success"]
    assert {r["api_key"] for r in ok} == {inc["compromised_key_hash"]}
    trusted = TrustedProxies(tuple(truth["network"]["trusted_proxies"]))
    assert {trusted.client(r["requester_ip_address"], None) for r in mine} == set(inc["attacker_ips"])
    cost = sum(Decimal(r["prompt_tokens"]) * Decimal("2.5") / 10**6 + Decimal(r["completion_tokens"]) * 10 / 10**6
               for r in ok)
    assert cost == Decimal(inc["cost_usd"])


def test_stuffing_callbacks_and_nginx(stuffing):
    out, truth, inc, _ = stuffing
    lines = gzip.decompress((out / "litellm" / "callback_payloads.ndjson.gz").read_bytes()).decode().splitlines()
    ids = {json.loads(line)["id"] for line in lines}
    assert len(set(inc["request_ids"]) & ids) == inc["successful_requests"]      # 401s never reach callbacks
    calls = set(inc["litellm_call_ids"])
    hits = []
    for path in sorted((out / "nginx").iterdir()):
        hits += [row for row in map(json.loads, read(path).decode("latin-1").splitlines())
                 if row["upstream_http_x_litellm_call_id"] in calls]
    assert len(hits) == inc["requests"]
    assert Counter(r["status"] for r in hits) == {"401": inc["failed_auth"], "200": inc["successful_requests"]}
    assert {r["request"] for r in hits} == {"POST /chat/completions HTTP/1.1"}
    trusted = TrustedProxies(tuple(truth["network"]["trusted_proxies"]))
    assert {trusted.client(r["http_x_forwarded_for"], r["remote_addr"]) for r in hits} == set(inc["attacker_ips"])


def test_stuffing_writes_no_tried_key(stuffing):
    out, _, inc, rows = stuffing
    secrets = secret_keys("key_stuffing", 1)
    tried = [s for name, s in secrets.items() if name.startswith("tried:")]
    assert len(tried) == inc["distinct_keys_tried"]
    attempted = {r["api_key"] for r in rows if r["request_id"] in set(inc["request_ids"]) and r["status"] == "failure"}
    assert {key_hash(s) for s in tried} == attempted
    pattern = re.compile(KEY_PATTERN.encode())
    for path in out.rglob("*"):      # any full key (tried or real) would match the pattern
        if path.is_file():
            assert not pattern.search(read(path)), path


# --- provider key used outside the proxy -------------------------------------------------------------------------

def _minute(text: str) -> int:
    """SpendLogs startTime (naive UTC) -> unix second of its minute."""
    return int(pd.Timestamp(text, tz="UTC").timestamp()) // 60 * 60


@pytest.mark.parametrize("scenario", OUTSIDE)
def test_outside_truth_shape(runs, scenario):
    out, truth = runs[scenario]
    inc = truth["incidents"][0]
    [key] = inc["outside_proxy"]
    assert inc["kind"] == "provider_key_outside_proxy" and inc["verdict"] == "attack"
    assert inc["request_ids"] == [] and inc["attacker_ips"] == [] and inc["compromised_key_hash"] is None
    same = scenario == "provider_key_outside_proxy"
    assert key["same_key_as_proxy"] is same and inc["compromised_provider_key"]["same_key_as_proxy"] is same
    assert key["api_key_id"] == (truth["network"]["openai_api_key_id"] if same else SECOND_KEY_ID)
    assert key["cost_usd"] == inc["cost_usd"] == truth["totals"]["outside_proxy"]["openai"]["cost_usd"]
    assert key["requests"] == inc["requests"] == truth["totals"]["outside_proxy"]["openai"]["requests"]
    assert (key["start"], key["end"]) == (inc["start"], inc["end"])
    assert utc(inc["start"]) <= utc(inc["first_request_at"]) < utc(inc["start"]) + pd.Timedelta(seconds=60)
    assert utc(inc["end"]) <= utc(inc["last_request_at"]) < utc(inc["end"]) + pd.Timedelta(seconds=60)
    assert utc(inc["start"]).weekday() == 5 and 3 <= (utc(inc["end"]) - utc(inc["start"])).total_seconds() / 3600 <= 6
    minute = inc["granularity"]["usage_1m"]
    assert load_pages(out, minute["files"]) and minute["start"] <= inc["start"] and inc["end"] < minute["end"]
    # LiteLLM logged only the proxy's own calls: the outside calls are in the provider data alone
    logged = [r for r in spend_rows(out) if r["status"] == "success" and r["custom_llm_provider"] == "openai"]
    assert sum(int(r["prompt_tokens"]) for r in logged) == truth["totals"]["openai"]["input_tokens"]
    assert truth["totals"]["nginx_lines"] == truth["totals"]["litellm_rows"] + truth["totals"]["nginx_noise_lines"]
    assert "outside_proxy_calls" in truth["conventions"]


@pytest.mark.parametrize("scenario", OUTSIDE)
def test_outside_usage_and_costs_add_up(runs, scenario):
    out, truth = runs[scenario]
    inc = truth["incidents"][0]
    [key] = inc["outside_proxy"]
    proxy = truth["totals"]["openai"]
    hourly = results(load_pages(out, "openai/usage_completions_2026-11-09_page*.json"))
    assert sum(r["input_tokens"] for _, r in hourly) == proxy["input_tokens"] + key["input_tokens"]
    assert sum(r["output_tokens"] for _, r in hourly) == proxy["output_tokens"] + key["output_tokens"]
    assert sum(r["input_cached_tokens"] for _, r in hourly) == proxy["cache_read_tokens"] + key["cached_input_tokens"]
    assert sum(r["num_model_requests"] for _, r in hourly) == proxy["requests"] + key["requests"]
    if scenario.endswith("second_key"):      # its own api_key_id: its rows are exactly the outside calls
        mine = [r for _, r in hourly if r["api_key_id"] == SECOND_KEY_ID]
        assert sum(r["input_tokens"] for r in mine) == key["input_tokens"]
        assert sum(r["num_model_requests"] for r in mine) == key["requests"]
        assert {r["model"] for r in mine} == set(key["models"])
    else:
        assert {r["api_key_id"] for _, r in hourly} == {truth["network"]["openai_api_key_id"]}
    costs = [r for p in load_pages(out, "openai/costs_page*.json") for b in p["data"] for r in b["results"]]
    total = sum(Decimal(repr(r["amount"]["value"])) for r in costs)
    assert abs(total - Decimal(proxy["cost_usd"]) - Decimal(key["cost_usd"])) < Decimal("1e-6")


@pytest.mark.parametrize("scenario", OUTSIDE)
def test_outside_window_found_in_the_minute_export(runs, scenario):
    """Minute usage minus what LiteLLM logged (by startTime minute) is the outside use: its first/last minute."""
    out, truth = runs[scenario]
    inc = truth["incidents"][0]
    logged = Counter()
    for r in spend_rows(out):
        if r["status"] == "success" and r["custom_llm_provider"] == "openai":
            logged[_minute(r["startTime"])] += int(r["prompt_tokens"])
    billed = Counter()
    for start, r in results(load_pages(out, inc["granularity"]["usage_1m"]["files"])):
        billed[start] += r["input_tokens"]
    excess = {m: billed[m] - logged[m] for m in billed if billed[m] != logged[m]}
    assert all(v > 0 for v in excess.values())
    assert sum(excess.values()) == inc["outside_proxy"][0]["input_tokens"]
    first, last = min(excess), max(excess)
    assert (first, last) == (int(utc(inc["start"]).timestamp()), int(utc(inc["end"]).timestamp()))
