"""Scenarios = baseline traffic + incident generators; simulate() runs one and writes every file plus truth.json.

To add a scenario: write `def my_incident(rng, keys) -> Incident` in incidents.py or incidents_more.py (its requests
in the request-table shape of frame.py, column incident set; provider-only calls in Incident.outside) and register
`Scenario(name, summary, (my_incident,))` below.
"""
from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from forensics.simulate import incidents, incidents_more, litellm_writer, nginx_writer, noise, provider_writer, traffic
from forensics.simulate.catalog import (
    BASELINE_END, COLLECTED_AT, GENERATOR_VERSION, HOUR, MODELS, NETWORK, WINDOW_START, VirtualKey, iso_z,
    make_keys,
)
from forensics.simulate.frame import COLUMNS, cost_nano, fill_latency, finalize

IncidentGenerator = Callable[[np.random.Generator, list[VirtualKey]], incidents.Incident]
INCIDENT_DAY = BASELINE_END          # the callback NDJSON covers the incident morning only


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    incidents: tuple[IncidentGenerator, ...]


REGISTRY: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("open_proxy", "Unauthenticated gpt-4 flood through the public proxy (the incident write-up).",
                 (incidents.open_proxy,)),
        Scenario("benign_batch", "A planned one-hour 10x backfill by a known key from its known server.",
                 (incidents.benign_batch,)),
        Scenario("leaked_virtual_key", "A leaked virtual key used from new public addresses for hours.",
                 (incidents.leaked_virtual_key,)),
        Scenario("provider_key_outside_proxy", "The proxy's own OpenAI key used directly against OpenAI on a "
                 "Saturday night: only provider usage and costs show it.",
                 (incidents_more.provider_key_outside_proxy,)),
        Scenario("provider_key_outside_proxy_second_key", "A second OpenAI key of the project used directly against "
                 "OpenAI on a Saturday night: its own api_key_id in provider usage.",
                 (incidents_more.provider_key_outside_proxy_second_key,)),
        Scenario("key_stuffing", "Random keys tried from a few addresses until support-bot's key works, then that "
                 "key spent on gpt-4o.", (incidents_more.key_stuffing,)),
        Scenario("baseline", "Ordinary traffic only: no incident.", ()),
    )
}
SCENARIOS: tuple[str, ...] = tuple(REGISTRY)


def _scenario(name: str) -> Scenario:
    if name not in REGISTRY:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return REGISTRY[name]


def _rng(seed: int, stream: int, scenario: str = "") -> np.random.Generator:
    """Independent streams: the baseline and noise depend on the seed only, incidents also on the scenario."""
    return np.random.default_rng([seed, stream, zlib.crc32(scenario.encode())])


def secret_keys(scenario: str, seed: int = 1) -> dict[str, str]:
    """alias -> full key used by the simulation (the mistyped key under 'mistyped:<alias>', keys an incident
    tried under 'tried:<n>'); replays the incident generators, which are cheap next to the baseline."""
    keys, _ = run_incidents(_scenario(scenario), _rng(seed, 3, scenario), make_keys(seed))
    out = {}
    tried = 0
    for k in keys:
        if k.valid:
            out[k.alias] = k.secret
        elif k.profile is not None:
            out[f"mistyped:{k.profile.alias}"] = k.secret
        else:
            out[f"tried:{tried}"] = k.secret
            tried += 1
    return out


def run_incidents(spec: Scenario, irng: np.random.Generator,
                  keys: list[VirtualKey]) -> tuple[list[VirtualKey], list[incidents.Incident]]:
    """The scenario's incidents in order; keys an incident presents extend the key list for the next."""
    found = []
    for gen in spec.incidents:
        found.append(gen(irng, keys))
        keys = keys + found[-1].new_keys
    return keys, found


def build(scenario: str, seed: int) -> tuple[list[VirtualKey], pd.DataFrame, pd.DataFrame, list[incidents.Incident]]:
    """Generate the request table, the nginx-only events and the incidents of a scenario."""
    spec = _scenario(scenario)
    keys = make_keys(seed)
    base = traffic.baseline(_rng(seed, 1), keys)
    irng = _rng(seed, 3, scenario)
    keys, found = run_incidents(spec, irng, keys)
    parts = [base] + [inc.frame[COLUMNS] for inc in found if len(inc.frame)]
    frame = pd.concat(parts, ignore_index=True)
    fill_latency(irng, frame)
    frame = finalize(_rng(seed, 4, scenario), frame)
    events = [noise.background(_rng(seed, 2))] + [inc.noise for inc in found if inc.noise is not None]
    return keys, frame, pd.concat(events, ignore_index=True), found


def _usd(nano: int) -> str:
    return str(Decimal(int(nano)) / 10**9)


def incident_truth(inc: incidents.Incident, frame: pd.DataFrame, keys: list[VirtualKey]) -> dict:
    """Figures of one incident, computed from the final request table (or from its provider-only calls)."""
    if inc.outside is not None:
        return incidents_more.outside_truth(inc)
    rows = frame[frame["incident"] == inc.id]
    ok = rows["outcome"] == "ok"
    key = keys[inc.key_idx] if inc.key_idx is not None else None
    ips = sorted(rows["client_ip"].unique())
    models = rows["model"].value_counts()
    return {
        "id": inc.id, "kind": inc.kind, "verdict": inc.verdict,
        "start": iso_z(int(rows["t_start"].min())), "end": iso_z(int(rows["t_start"].max())),
        "requests": int(len(rows)), "successful_requests": int(ok.sum()),
        "provider_429s": int((rows["outcome"] == "rate_limit").sum()),
        "failed_requests": int((~ok).sum()),
        "cost_usd": _usd(rows["cost_nano"].sum()),
        "attacker_ips": ips if inc.verdict == "attack" else [],
        "client_ips": ips,
        "compromised_key_hash": key.hash if key is not None and inc.verdict == "attack" else None,
        "key_hash": key.hash if key is not None else None,
        "key_alias": key.alias if key is not None else None,
        "model": str(models.index[0]),
        "models": sorted(models.index.tolist()),
        "user_agents": sorted(rows["ua"].unique()),
        "paths": sorted(rows["path"].unique()),
        "request_ids": rows["request_id"].tolist(),
        "litellm_call_ids": rows["call_id"].tolist(),
        "prompt_tokens": int(rows.loc[ok, "prompt"].sum()),
        "completion_tokens": int(rows.loc[ok, "completion"].sum()),
    } | (inc.facts(rows) if inc.facts else {}) | inc.extra


def baseline_truth(frame: pd.DataFrame) -> dict:
    week = frame[(frame["incident"] == "") & (frame["t_start"] < BASELINE_END)]
    hours = (BASELINE_END - WINDOW_START) // HOUR
    cost = Decimal(int(week["cost_nano"].sum())) / 10**9
    return {
        "start": iso_z(WINDOW_START), "end": iso_z(BASELINE_END), "hours": hours,
        "cost_usd": str(cost), "cost_per_hour_usd": float(cost / hours),
        "cost_per_hour_usd_exact": str((cost / hours).quantize(Decimal("1e-12"))),
        "requests": int(len(week)), "requests_per_hour": round(len(week) / hours, 3),
        "failures": {k: int(v) for k, v in week["outcome"].value_counts().items() if k != "ok"},
    }


def _provider_sums(ok: pd.DataFrame, provider: str) -> dict:
    p = ok[ok["provider"] == provider]
    return {"requests": int(len(p)), "input_tokens": int(p["prompt"].sum()),
            "cache_read_tokens": int(p["cache_read"].sum()), "cache_write_tokens": int(p["cache_write"].sum()),
            "output_tokens": int(p["completion"].sum()), "cost_usd": _usd(p["cost_nano"].sum())}


def totals(frame: pd.DataFrame, outside: pd.DataFrame | None = None) -> dict:
    """Whole-window sums the parsers can reconcile against; provider-only calls (no LiteLLM row) apart."""
    ok = frame[frame["outcome"] == "ok"]
    out = {"litellm_rows": int(len(frame)), "litellm_success_rows": int(len(ok)),
           "cost_usd": _usd(frame["cost_nano"].sum()), "litellm_spend_sum": float(frame["spend"].sum())}
    for prov in ("openai", "anthropic"):
        out[prov] = _provider_sums(ok, prov)
    if outside is not None:
        calls = outside.assign(cost_nano=cost_nano(outside))
        out["outside_proxy"] = {prov: _provider_sums(calls, prov) for prov in sorted(calls["provider"].unique())}
    return out


def prices() -> dict:
    return {m.snapshot: {"provider": m.provider, "model_group": m.group, "input": m.input_mtok,
                         "output": m.output_mtok, "cache_read": m.cache_read_mtok, "cache_write_5m": m.cache_write_mtok}
            for m in MODELS.values()}


def incident_span(frame: pd.DataFrame, outside: pd.DataFrame | None) -> tuple[int, int] | None:
    """First and last request start of all incidents, through the proxy or around it."""
    starts = frame.loc[frame["incident"] != "", "t_start"]
    if outside is not None:
        starts = pd.concat([starts, outside["t_start"]])
    return (int(starts.min()), int(starts.max())) if len(starts) else None


def simulate(scenario: str, out_dir: Path, seed: int = 1, nginx_format: str = "json") -> dict:
    """Write a synthetic incident's logs in the real formats into out_dir and return its truth (truth.json)."""
    out_dir = Path(out_dir)
    keys, frame, events, found = build(scenario, seed)
    records: dict[str, int] = {}
    records["litellm/spend_logs.csv.gz"] = litellm_writer.write_spend_logs(
        frame, keys, out_dir / "litellm" / "spend_logs.csv.gz")
    records["litellm/callback_payloads.ndjson.gz"] = litellm_writer.write_callbacks(
        frame, keys, out_dir / "litellm" / "callback_payloads.ndjson.gz", INCIDENT_DAY)
    records |= nginx_writer.write(frame, events, out_dir, nginx_format)
    calls = [inc.outside for inc in found if inc.outside is not None]
    outside = pd.concat(calls, ignore_index=True) if calls else None
    records |= provider_writer.write(frame, out_dir, incident_span(frame, outside), outside)
    truth = {
        "scenario": scenario, "seed": seed, "generator_version": GENERATOR_VERSION,
        "summary": _scenario(scenario).summary,
        "time_range": {"start": iso_z(WINDOW_START), "end": iso_z(COLLECTED_AT)},
        "files": sorted(records), "records": dict(sorted(records.items())),
        "nginx_format": nginx_format, "nginx_log_format": nginx_writer.LOG_FORMATS[nginx_format],
        "baseline": baseline_truth(frame),
        "incidents": [incident_truth(inc, frame, keys) for inc in found],
        "keys": [k.describe() for k in keys if k.valid],
        # the baseline's mistyped key; keys only an attacker tried are counted in its incident entry
        "invalid_key_hashes": [k.hash for k in keys if not k.valid and k.profile is not None],
        "prices_per_mtok": prices(),
        "network": NETWORK.describe(),
        "totals": totals(frame, outside) | {"nginx_lines": int(len(frame) + len(events)),
                                            "nginx_noise_lines": int(len(events))},
        "conventions": CONVENTIONS | (OUTSIDE_CONVENTIONS if outside is not None else {}),
    }
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    return truth


CONVENTIONS = {
    "provider_usage": "only successful calls are counted: 429s/500s/timeouts are in no usage bucket and cost 0",
    "usage_bucket_time": "a call is bucketed by its LiteLLM startTime",
    "spend_logs_failure_rows": "startTime == endTime == the moment the client got the error (after retries)",
    "callback_failure_payloads": "startTime/endTime of the first provider attempt; id == litellm_call_id",
    "callback_auth_failures": "401s (unknown key) are in spend_logs only, never in the callback payloads",
    "nginx_time": "nginx logs when the response was sent: $msec/$time_* = request end; start = msec - request_time",
    "requester_ip_address": "nginx sets X-Forwarded-For $proxy_add_x_forwarded_for: '<client XFF>, <nginx peer>'",
    "ingress_remote_addr": "ingress format: realip already applied (proxy-real-ip-cidr 10.0.0.0/8)",
    "addresses": "public addresses are documentation/benchmark ranges (RFC 5737, RFC 2544, RFC 3849)",
    "cost_usd": "exact Decimal sums of per-request token x price; LiteLLM's float spend may differ by ~1e-12",
}
OUTSIDE_CONVENTIONS = {
    "outside_proxy_calls": "calls made with a provider key directly (not through the proxy) are only in the provider "
                           "usage and costs, bucketed by request start; no LiteLLM row or nginx line stands for them",
}
