"""More incident generators: a provider key used outside the proxy, and key stuffing against the proxy."""
from __future__ import annotations

import base64
from decimal import Decimal
from functools import partial

import numpy as np
import pandas as pd

from forensics.simulate.catalog import HOUR, MINUTE, MODELS, NETWORK, US, Usage, VirtualKey, iso_z, ts
from forensics.simulate.frame import cost_nano, new_frame
from forensics.simulate.incidents import Incident
from forensics.simulate.provider_writer import minute_file, minute_window
from forensics.simulate.traffic import draw_tokens, poisson_starts

# --- provider key used outside the proxy ------------------------------------------------------------------------

OUTSIDE_START = ts("2026-11-14T21:00:00")     # Saturday night before the Monday collection
OUTSIDE_MODEL = "gpt-4o"
# a fixed 4k-token jailbreak/system prompt in front of every request: OpenAI's automatic caching serves it often
OUTSIDE_USAGE = Usage(OUTSIDE_MODEL, 1.0, 20000, 0.5, 2200, 0.5, 0, 4096, 0.7)
SECOND_KEY_ID = "key_Hm4cTz9WbQ2rNv7J"       # a developer's key in the proxy's project, not used by the proxy
LEAKED_KEYS = {   # same_key -> how the leaked OpenAI key is listed by /organization/projects/{id}/api_keys
    True: {"api_key_id": NETWORK.openai_api_key_id, "name": "litellm-proxy-prod", "redacted_value": "sk-proj-...R7tQ",
           "leak": "The proxy's own OpenAI project key (from its environment) was copied and used directly"},
    False: {"api_key_id": SECOND_KEY_ID, "name": "dana-notebook", "redacted_value": "sk-proj-...w2Lc",
            "leak": "A second OpenAI project key of the organisation, committed in a notebook, was used directly"},
}


def outside_calls(rng: np.random.Generator, t0: int, stop: int, n_target: int, api_key_id: str) -> pd.DataFrame:
    """Calls of a script looping over the OpenAI API with a stolen key; its throughput drifts minute to minute."""
    minutes = np.arange(t0 // MINUTE * MINUTE, stop, MINUTE, dtype=np.int64)
    drift = np.exp(np.cumsum(rng.normal(0.0, 0.06, minutes.size)))
    starts = poisson_starts(rng, minutes, n_target / minutes.size * drift / drift.mean())
    starts = starts[(starts >= t0) & (starts < stop)]
    tokens = draw_tokens(rng, OUTSIDE_USAGE, starts.size)
    return pd.DataFrame({
        "t_start": starts, "model": OUTSIDE_MODEL, "prompt": tokens["prompt"], "cache_read": tokens["cache_read"],
        "cache_write": np.zeros(starts.size, dtype=np.int64), "completion": tokens["completion"],
        "outcome": "ok", "provider": "openai", "api_key_id": api_key_id, "project_id": NETWORK.openai_project_id,
    })


def provider_key_outside_proxy(rng: np.random.Generator, keys: list[VirtualKey], same_key: bool = True) -> Incident:
    """An OpenAI project key is used straight against OpenAI for hours: only the provider's usage and costs see it.

    same_key: the proxy's own key (its usage is added to the proxy's rows), else a second key of the same project.
    """
    leaked = LEAKED_KEYS[same_key]
    t0 = OUTSIDE_START + int(rng.integers(0, 150 * MINUTE))
    stop = t0 + int(rng.uniform(3.0, 6.0) * HOUR)
    calls = outside_calls(rng, t0, stop, int(rng.integers(800, 2600)), leaked["api_key_id"])
    frame = new_frame(0)
    extra = {"description": f"{leaked['leak']}, bypassing the proxy: {OUTSIDE_MODEL} calls from unknown "
                            "addresses that only OpenAI's usage and costs record (no LiteLLM row, no nginx line).",
             "compromised_provider_key": {"provider": "openai", "project_id": NETWORK.openai_project_id,
                                          "same_key_as_proxy": same_key} | leaked}
    return Incident("INC-1", "provider_key_outside_proxy", "attack", frame, extra=extra, outside=calls)


provider_key_outside_proxy_second_key = partial(provider_key_outside_proxy, same_key=False)


def _usd(nano: int) -> str:
    return str(Decimal(int(nano)) / 10**9)


def outside_truth(inc: Incident) -> dict:
    """Truth of an incident seen only in provider data: window to the minute bucket, figures per provider key."""
    calls = inc.outside
    first, last = int(calls["t_start"].min()), int(calls["t_start"].max())
    lo, hi = minute_window(first, last)
    per_key = []
    for (provider, key_id), g in calls.groupby(["provider", "api_key_id"]):
        per_key.append({
            "provider": provider, "api_key_id": key_id, "project_id": str(g["project_id"].iloc[0]),
            "same_key_as_proxy": key_id in (NETWORK.openai_api_key_id, NETWORK.anthropic_api_key_id),
            "models": sorted(g["model"].map(lambda m: MODELS[m].snapshot).unique()),
            "start": iso_z(int(g["t_start"].min()) // MINUTE * MINUTE),
            "end": iso_z(int(g["t_start"].max()) // MINUTE * MINUTE),
            "cost_usd": _usd(cost_nano(g).sum()), "requests": int(len(g)),
            "input_tokens": int(g["prompt"].sum()), "cached_input_tokens": int(g["cache_read"].sum()),
            "output_tokens": int(g["completion"].sum()),
        })
    models = calls["model"].value_counts()
    return {
        "id": inc.id, "kind": inc.kind, "verdict": inc.verdict,
        "start": iso_z(first // MINUTE * MINUTE), "end": iso_z(last // MINUTE * MINUTE),
        "requests": int(len(calls)), "successful_requests": int(len(calls)), "provider_429s": 0,
        "failed_requests": 0, "cost_usd": _usd(cost_nano(calls).sum()),
        "attacker_ips": [], "client_ips": [], "compromised_key_hash": None, "key_hash": None, "key_alias": None,
        "model": str(models.index[0]), "models": sorted(models.index.tolist()), "user_agents": [], "paths": [],
        "request_ids": [], "litellm_call_ids": [],
        "prompt_tokens": int(calls["prompt"].sum()), "completion_tokens": int(calls["completion"].sum()),
        "outside_proxy": per_key,
        "first_request_at": iso_z(first), "last_request_at": iso_z(last),
        "granularity": {
            "window": "start/end are the first/last 1-minute usage bucket holding outside calls (bucketed by "
                      "request start); the true first/last request lies within 60 s after them",
            "usage_1h": "openai/usage_completions_2026-11-09_page*.json: 1h buckets over the whole log window, "
                        "group_by api_key_id,model",
            "usage_1m": {"files": minute_file(lo).replace("{n}", "*"), "start": iso_z(lo), "end": iso_z(hi)},
            "costs": "1d buckets, group_by line_item,project_id: outside cost is inside the day's line items",
        },
    } | inc.extra


# --- key stuffing against the proxy -------------------------------------------------------------------------------

STUFFING_START = ts("2026-11-16T00:40:00")
STUFFING_AGENT = "python-requests/2.31.0"
STUFFING_NETS = ("203.0.113", "192.0.2")      # documentation ranges
STUFFED_ALIAS = "support-bot"                  # the key the attackers eventually hit


def stuffing_ips(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct public addresses in the documentation ranges."""
    hosts = rng.choice(np.arange(2 * 253), n, replace=False)
    return [f"{STUFFING_NETS[h // 253]}.{h % 253 + 2}" for h in hosts.tolist()]


def random_keys(rng: np.random.Generator, n: int) -> list[str]:
    """Keys in LiteLLM's shape (sk- + token_urlsafe(16)), as a guessing script makes them."""
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    return ["sk-" + base64.urlsafe_b64encode(row.tobytes()).rstrip(b"=").decode() for row in raw]


def _attempts(rng: np.random.Generator, t0: int, stop: int, rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poisson requests of each address from its join time to `stop`: (start times, address index), sorted."""
    join = np.sort(rng.integers(0, 3 * MINUTE, rates.size))
    join[0] = 0
    span = stop - t0 - join
    counts = rng.poisson(rates * span / US)
    who = np.repeat(np.arange(rates.size), counts)
    starts = t0 + np.repeat(join, counts) + (rng.random(counts.sum()) * np.repeat(span, counts)).astype(np.int64)
    order = np.argsort(starts, kind="stable")
    return starts[order], who[order]


def key_stuffing(rng: np.random.Generator, keys: list[VirtualKey]) -> Incident:
    """Thousands of random keys tried from a few addresses until one works; the found key is then spent hard."""
    idx = next(i for i, k in enumerate(keys) if k.alias == STUFFED_ALIAS)
    key = keys[idx]
    t0 = STUFFING_START + int(rng.integers(0, 20 * MINUTE))
    t_hit = t0 + int(rng.uniform(20, 40) * MINUTE)
    ips = stuffing_ips(rng, int(rng.integers(3, 6)))
    tried, tried_ip = _attempts(rng, t0, t_hit, rng.uniform(0.15, 0.3, len(ips)))
    t1 = t_hit + int(rng.uniform(1, 6) * MINUTE)
    t2 = t1 + int(rng.uniform(30, 60) * MINUTE)
    spent, spent_ip = _attempts(rng, t1, t2, np.full(len(ips), rng.uniform(0.45, 0.75) / len(ips)))
    n_try, n_spend = tried.size, spent.size + 1
    frame = new_frame(n_try + n_spend)
    frame["t_start"] = np.concatenate([tried, [t_hit], spent])
    who = np.concatenate([tried_ip, [int(rng.integers(0, len(ips)))], spent_ip])
    frame["client_ip"] = np.array(ips)[who]
    frame["xff_in"] = frame["client_ip"]
    frame["remote_addr"] = NETWORK.lb_ip
    frame["ua"] = STUFFING_AGENT
    frame["path"] = "/chat/completions"
    frame["model"] = "gpt-4o"
    frame["incident"] = "INC-1"
    # probes: a tiny prompt with max_tokens 8 under a fresh random key each; the hit is the same probe
    n = n_try + n_spend
    probe = np.arange(n) <= n_try
    prompt = np.clip(np.round(12000 * np.exp(0.45 * rng.standard_normal(n))), 500, 100000)
    completion = np.clip(np.round(2500 * np.exp(0.5 * rng.standard_normal(n))), 1, 4096)
    frame["prompt"] = np.where(probe, rng.integers(9, 15, n), prompt).astype(np.int64)
    frame["completion"] = np.where(probe, rng.integers(2, 9, n), completion).astype(np.int64)
    frame["max_tokens"] = np.where(probe, 8, 4096)
    frame["key"] = np.concatenate([len(keys) + np.arange(n_try), np.full(n_spend, idx)])
    frame["outcome"] = np.where(np.arange(n) < n_try, "auth", "ok").astype(object)
    new_keys = [VirtualKey(s, None, None, None, None, False) for s in random_keys(rng, n_try)]
    extra = {"description": f"Credential stuffing: a script tried random sk- keys from {len(ips)} addresses "
                            f"until the {STUFFED_ALIAS} key answered, then spent it on gpt-4o from the same "
                            "addresses.",
             "compromised_key_hint": key.hint}
    return Incident("INC-1", "credential_stuffing", "attack", frame, None, idx, extra, new_keys,
                    facts=partial(stuffing_facts, key_idx=idx))


def stuffing_facts(rows: pd.DataFrame, key_idx: int) -> dict:
    """Phases of a stuffing incident from its final rows: the 401s, the first success, the spending."""
    auth = rows[rows["outcome"] == "auth"]
    used = rows[rows["key"] == key_idx].sort_values("t_start")
    hit = used.iloc[0]
    spend = used.iloc[1:]
    return {
        "failed_auth": int(len(auth)), "distinct_keys_tried": int(auth["key"].nunique()),
        "stuffing": {"start": iso_z(int(auth["t_start"].min())), "end": iso_z(int(auth["t_start"].max())),
                     "requests": int(len(auth))},
        "first_success": {"time": iso_z(int(hit["t_start"])), "request_id": str(hit["request_id"]),
                          "client_ip": str(hit["client_ip"])},
        "exploitation": {"start": iso_z(int(spend["t_start"].min())), "end": iso_z(int(spend["t_start"].max())),
                         "requests": int(len(spend))},
    }
