"""Scenarios = baseline traffic + incident generators; simulate() runs one and writes every file plus truth.json."""
from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from forensics.simulate import incidents, litellm_writer, nginx_writer, noise, provider_writer, traffic
from forensics.simulate.catalog import (
    BASELINE_END, COLLECTED_AT, GENERATOR_VERSION, HOUR, MODELS, NETWORK, WINDOW_START, VirtualKey, iso_z,
    make_keys,
)
from forensics.simulate.frame import COLUMNS, fill_latency, finalize

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
    """alias -> full virtual key used by the simulation (the mistyped key under 'mistyped:<alias>')."""
    _scenario(scenario)
    out = {}
    for k in make_keys(seed):
        out[k.alias if k.valid else f"mistyped:{k.profile.alias}"] = k.secret
    return out


def build(scenario: str, seed: int) -> tuple[list[VirtualKey], pd.DataFrame, pd.DataFrame, list[incidents.Incident]]:
    """Generate the request table, the nginx-only events and the incidents of a scenario."""
    spec = _scenario(scenario)
    keys = make_keys(seed)
    base = traffic.baseline(_rng(seed, 1), keys)
    irng = _rng(seed, 3, scenario)
    found = [gen(irng, keys) for gen in spec.incidents]
    parts = [base] + [inc.frame[COLUMNS] for inc in found]
    frame = pd.concat(parts, ignore_index=True)
    fill_latency(irng, frame)
    frame = finalize(_rng(seed, 4, scenario), frame)
    events = [noise.background(_rng(seed, 2))] + [inc.noise for inc in found if inc.noise is not None]
    return keys, frame, pd.concat(events, ignore_index=True), found


def _usd(nano: int) -> str:
    return str(Decimal(int(nano)) / 10**9)


def incident_truth(inc: incidents.Incident, frame: pd.DataFrame, keys: list[VirtualKey]) -> dict:
    """Figures of one incident, computed from the final request table."""
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
    } | inc.extra


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


def totals(frame: pd.DataFrame) -> dict:
    """Whole-window sums the parsers can reconcile against."""
    ok = frame[frame["outcome"] == "ok"]
    out = {"litellm_rows": int(len(frame)), "litellm_success_rows": int(len(ok)),
           "cost_usd": _usd(frame["cost_nano"].sum()), "litellm_spend_sum": float(frame["spend"].sum())}
    for prov in ("openai", "anthropic"):
        p = ok[ok["provider"] == prov]
        out[prov] = {"requests": int(len(p)), "input_tokens": int(p["prompt"].sum()),
                     "cache_read_tokens": int(p["cache_read"].sum()), "cache_write_tokens": int(p["cache_write"].sum()),
                     "output_tokens": int(p["completion"].sum()), "cost_usd": _usd(p["cost_nano"].sum())}
    return out


def prices() -> dict:
    return {m.snapshot: {"provider": m.provider, "model_group": m.group, "input": m.input_mtok,
                         "output": m.output_mtok, "cache_read": m.cache_read_mtok, "cache_write_5m": m.cache_write_mtok}
            for m in MODELS.values()}


def simulate(scenario: str, out_dir: Path, seed: int = 1, nginx_format: str = "json") -> dict:
    """Write a synthetic incident's logs in the real formats into out_dir and return its truth (truth.json)."""
    out_dir = Path(out_dir)
    keys, frame, events, found = build(scenario, seed)
    records: dict[str, int] = {}
    records["litellm/spend_logs.csv.gz"] = litellm_writer.write_spend_logs(
        frame, keys, out_dir / "litellm" / "spend_logs.csv.gz")
    records["litellm/callback_payloads.ndjson"] = litellm_writer.write_callbacks(
        frame, keys, out_dir / "litellm" / "callback_payloads.ndjson", INCIDENT_DAY)
    records |= nginx_writer.write(frame, events, out_dir, nginx_format)
    first = int(frame.loc[frame["incident"] != "", "t_start"].min()) if found else None
    records |= provider_writer.write(frame, out_dir, first)
    truth = {
        "scenario": scenario, "seed": seed, "generator_version": GENERATOR_VERSION,
        "summary": _scenario(scenario).summary,
        "time_range": {"start": iso_z(WINDOW_START), "end": iso_z(COLLECTED_AT)},
        "files": sorted(records), "records": dict(sorted(records.items())),
        "nginx_format": nginx_format, "nginx_log_format": nginx_writer.LOG_FORMATS[nginx_format],
        "baseline": baseline_truth(frame),
        "incidents": [incident_truth(inc, frame, keys) for inc in found],
        "keys": [k.describe() for k in keys if k.valid],
        "invalid_key_hashes": [k.hash for k in keys if not k.valid],
        "prices_per_mtok": prices(),
        "network": NETWORK.describe(),
        "totals": totals(frame) | {"nginx_lines": int(len(frame) + len(events)), "nginx_noise_lines": int(len(events))},
        "conventions": CONVENTIONS,
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
