"""Incident generators: each returns the requests (and nginx-only lines) it adds on top of the baseline."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pandas as pd

from forensics.simulate import ids
from forensics.simulate.catalog import HOUR, MINUTE, MODELS, NETWORK, US, VirtualKey, iso_z, ts
from forensics.simulate.frame import failure_timing, latency, new_frame
from forensics.simulate.noise import event_frame
from forensics.simulate.traffic import requests_for


@dataclass
class Incident:
    """What an incident generator adds; the figures in truth.json are computed later from the final table."""

    id: str
    kind: str
    verdict: str                               # attack | benign
    frame: pd.DataFrame                        # its LiteLLM requests (column incident == id)
    noise: pd.DataFrame | None = None          # nginx-only lines it caused (reconnaissance, ...)
    key_idx: int | None = None                 # the virtual key involved, None = no key
    extra: dict = field(default_factory=dict)  # copied into the truth entry
    # keys only this incident presents; its frame's key indices continue the scenario's list (len(keys) + i)
    new_keys: list[VirtualKey] = field(default_factory=list)
    outside: pd.DataFrame | None = None        # provider-only calls that bypassed the proxy (see incidents_more)
    facts: Callable[[pd.DataFrame], dict] | None = None   # kind-specific truth from its final request rows


# the open proxy attack (incident write-up: ~1,200 gpt-4 requests, $347.23, 45 minutes, many IPs)
ATTACK_START = ts("2026-11-16T02:00:00")
ATTACK_MINUTES = 45
ATTACK_TARGET_USD = Decimal("347.23")
ATTACK_BLOCKS = (("203.0.113", 0.45), ("192.0.2", 0.35), ("198.19.77", 0.20))  # documentation / benchmark nets
FORGED_XFF = ("127.0.0.1", "127.0.0.1", "10.0.0.1", "192.168.1.1")
CURL_AGENTS = ("curl/8.5.0", "curl/8.5.0", "curl/8.5.0", "curl/8.5.0", "curl/7.81.0")
PROMPT_RANGE = (1000, 2500)
RAMP_MINUTES = 7
N_WORKERS = 49                            # concurrent curl loops, spread over the attacker addresses


def attacker_ips(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct addresses spread over a few /24s."""
    counts = rng.multinomial(n - 2 * len(ATTACK_BLOCKS), [s for _, s in ATTACK_BLOCKS]) + 2
    out = []
    for (net, _), c in zip(ATTACK_BLOCKS, counts):
        out += [f"{net}.{h}" for h in np.sort(rng.choice(np.arange(2, 255), c, replace=False))]
    return out


def _client_loops(rng: np.random.Generator, t0: int, stop: int, n_workers: int) -> dict[str, list]:
    """`while true; do curl ...; done` per worker: each request starts when the previous answer arrived."""
    ramp = np.sort(rng.beta(1.4, 1.0, n_workers) * RAMP_MINUTES * MINUTE).astype(np.int64)
    ramp -= ramp[0]                       # one loop starts at t0, the others join over the first minutes
    t429 = stop - int(rng.uniform(5.5, 7.5) * MINUTE)
    rows: dict[str, list] = {k: [] for k in ("worker", "t_start", "outcome", "completion", "ttft", "gen",
                                             "fail_first", "fail_total")}
    for w in range(n_workers):
        t = t0 + int(ramp[w])
        while t < stop:
            p = 0.55 * min(1.0, max(0.0, (t - t429) / (stop - t429))) ** 1.3
            if rng.random() < p:
                first, total = failure_timing(rng, "rate_limit", 1)
                row = ("rate_limit", 0, 0, 0, int(first[0]), int(total[0]))
                busy = int(total[0])
            else:
                completion = 4000 if rng.random() < 0.95 else int(rng.integers(1500, 4000))
                ttft, gen = latency(rng, np.array(["gpt-4"]), np.array([completion]))
                row = ("ok", completion, int(ttft[0]), int(gen[0]), 0, 0)
                busy = int(ttft[0] + gen[0])
            for k, v in zip(("outcome", "completion", "ttft", "gen", "fail_first", "fail_total"), row):
                rows[k].append(v)
            rows["worker"].append(w)
            rows["t_start"].append(t)
            t += busy + int(rng.uniform(0.03, 0.45) * US)
    return rows


def calibrate_prompts(prompt: np.ndarray, ok: np.ndarray, completion: np.ndarray, target: Decimal) -> np.ndarray:
    """Shift prompt sizes (within PROMPT_RANGE) until the successful requests cost `target` at gpt-4 prices."""
    m = MODELS["gpt-4"]
    pin, pout = m.nano("input"), m.nano("output")
    want = int(round(target * 10**9 / pin)) * pin
    prompt = prompt.copy()
    idx = np.flatnonzero(ok)
    for _ in range(50):
        have = int((prompt[idx] * pin + completion[idx] * pout).sum())
        delta = (want - have) // pin
        if delta == 0 or idx.size == 0:
            break
        q, r = divmod(abs(delta), idx.size)
        step = np.full(idx.size, q)
        step[:r] += 1
        prompt[idx] = np.clip(prompt[idx] + np.sign(delta) * step, *PROMPT_RANGE)
    return prompt


def open_proxy(rng: np.random.Generator, keys: list[VirtualKey]) -> Incident:
    """Unauthenticated gpt-4 flood through the public proxy from ~30 addresses, ending in provider 429s."""
    t0 = ATTACK_START + int(rng.integers(1 * US, 9 * US))
    stop = t0 + ATTACK_MINUTES * MINUTE
    n_ips = int(rng.integers(26, 35))
    ips = attacker_ips(rng, n_ips)
    forged = np.where(rng.random(n_ips) < 0.3, np.array(FORGED_XFF)[rng.integers(0, len(FORGED_XFF), n_ips)], "")
    agents = np.array(CURL_AGENTS)[rng.integers(0, len(CURL_AGENTS), n_ips)]
    n_workers = N_WORKERS
    worker_ip = np.concatenate([np.arange(n_ips), rng.integers(0, n_ips, n_workers - n_ips)])
    loops = _client_loops(rng, t0, stop, n_workers)
    n = len(loops["t_start"])
    frame = new_frame(n)
    for k, v in loops.items():
        if k != "worker":
            frame[k] = np.array(v, dtype=object if k == "outcome" else np.int64)
    ip_idx = worker_ip[np.array(loops["worker"])]
    ok = frame["outcome"].to_numpy() == "ok"
    prompt = rng.integers(1600, PROMPT_RANGE[1] + 1, n)
    frame["prompt"] = calibrate_prompts(prompt, ok, frame["completion"].to_numpy(), ATTACK_TARGET_USD)
    frame["model"] = "gpt-4"
    frame["max_tokens"] = 4000
    frame["client_ip"] = np.array(ips)[ip_idx]
    xff = [f"{f}, {ip}" if f else ip for f, ip in zip(forged[ip_idx], frame["client_ip"])]
    frame["xff_in"] = xff
    frame["remote_addr"] = NETWORK.lb_ip
    frame["ua"] = agents[ip_idx]
    frame["path"] = "/chat/completions"
    frame["incident"] = "INC-1"
    noise = recon(rng, ips, agents, t0)
    extra = {
        "description": "LiteLLM proxy reachable from the internet without authentication; curl loops sent "
                       "gpt-4 requests with random text and max_tokens 4000 until OpenAI rate-limited them.",
        "forged_xff": sorted({str(f) for f in forged if f}),
        "precursors": [{"time": t, "client_ip": ip, "request": r} for t, ip, r in noise.attrs["precursors"]],
    }
    return Incident("INC-1", "unauthenticated_proxy", "attack", frame, noise, None, extra)


def recon(rng: np.random.Generator, ips: list[str], agents: np.ndarray, t0: int) -> pd.DataFrame:
    """The evening before and minutes before the flood: an attacker address looks at the proxy's models."""
    plan = [(t0 - 4 * HOUR - 17 * MINUTE, 0, "GET / HTTP/1.1", 200, 1243),
            (t0 - 4 * HOUR - 16 * MINUTE, 0, "GET /v1/models HTTP/1.1", 200, 431),
            (t0 - 3 * MINUTE, 1, "GET /models HTTP/1.1", 200, 431)]
    ev = event_frame(len(plan))
    ev["t_recv"] = [t + int(rng.integers(0, 50 * US)) for t, *_ in plan]
    up = rng.integers(2500, 9000, len(plan))
    ev["t_log"] = ev["t_recv"] + up + 600
    ev["remote_addr"] = NETWORK.lb_ip
    ev["xff"] = [ips[i] for _, i, *_ in plan]
    ev["ua"] = [agents[i] for _, i, *_ in plan]
    ev["request"] = [r for *_, r, _, _ in plan]
    ev["status"] = [s for *_, s, _ in plan]
    ev["bytes_sent"] = [b for *_, b in plan]
    ev["request_length"] = 96 + ev["xff"].str.len()
    ev["upstream_addr"] = NETWORK.litellm_upstream
    ev["upstream_status"] = ev["status"]
    ev["upstream_length"] = ev["bytes_sent"]
    ev["upstream_us"] = up
    ev["nginx_rid"] = ids.hex_ids(rng, len(plan))
    ev.attrs["precursors"] = [(iso_z(int(t)), x, r) for t, x, r in zip(ev["t_recv"], ev["xff"], ev["request"])]
    return ev


def benign_batch(rng: np.random.Generator, keys: list[VirtualKey]) -> Incident:
    """A planned backfill: batch-summarizer at ~10x its usual rate for an hour, from its usual server."""
    idx = next(i for i, k in enumerate(keys) if k.alias == "batch-summarizer")
    t0 = ts("2026-11-11T14:00:00") + int(rng.integers(0, 5 * MINUTE))
    n = int(rng.poisson(10 * 60 * 1.0))
    starts = np.sort(t0 + rng.integers(0, HOUR, n))
    frame = requests_for(rng, idx, keys[idx], starts)
    frame["incident"] = "INC-1"
    extra = {"description": "Planned backfill announced by the data team: the batch-summarizer key re-summarised "
                            "the archive for an hour from its usual server."}
    return Incident("INC-1", "volume_spike", "benign", frame, None, idx, extra)


def leaked_virtual_key(rng: np.random.Generator, keys: list[VirtualKey]) -> Incident:
    """The ci-tests key leaks (public repo) and is used from new public addresses for hours, with gpt-4o."""
    idx = next(i for i, k in enumerate(keys) if k.alias == "ci-tests")
    key = keys[idx]
    t0 = ts("2026-11-15T19:00:00") + int(rng.integers(0, 10 * MINUTE))
    hours = 7
    ips = attacker_ips(rng, 9)
    n = int(rng.poisson(4 * key.profile.rate_per_hour * hours))
    starts = np.sort(t0 + rng.integers(0, hours * HOUR, n))
    frame = requests_for(rng, idx, key, starts)
    frame["client_ip"] = np.array(ips)[rng.integers(0, len(ips), n)]
    frame["xff_in"] = frame["client_ip"]
    frame["remote_addr"] = NETWORK.lb_ip
    frame["model"] = np.where(rng.random(n) < 0.8, "gpt-4o", "gpt-4o-mini")
    frame["prompt"] = rng.integers(3000, 12000, n)
    frame["completion"] = rng.integers(800, 4000, n)
    frame["max_tokens"] = 4096
    frame["ua"] = "python-requests/2.32.3"
    frame["incident"] = "INC-1"
    extra = {"description": "The ci-tests virtual key was committed to a public repository and used from "
                            "unknown addresses with gpt-4o at several times its normal rate."}
    return Incident("INC-1", "leaked_virtual_key", "attack", frame, None, idx, extra)
