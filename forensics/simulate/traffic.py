"""Baseline traffic of the proxy's own virtual keys: arrivals with daily seasonality, token draws, failures."""
from __future__ import annotations

import functools
from decimal import Decimal

import numpy as np
import pandas as pd

from forensics.simulate.catalog import (
    BASELINE_END, DEFAULT_WINDOW, HOUR, MINUTE, MODELS, NETWORK, US, WINDOW_START, Profile, Usage, VirtualKey,
    Window,
)
from forensics.simulate.frame import COLUMNS, cost_nano, fill_latency, latency, new_frame

# relative load per UTC hour (0..23) on weekdays; the weekend factor scales the whole day
CURVES = {
    "always_on": ([.35, .30, .26, .24, .24, .28, .38, .55, .80, .95, 1, 1, .95, 1, 1, .95, .90, .85, .80, .75,
                   .70, .60, .50, .42], 0.6),
    "business": ([.03, .02, .02, .02, .03, .08, .30, .70, .95, 1, 1, .95, .85, .95, 1, 1, .95, .80, .55, .30,
                  .15, .08, .05, .04], 0.25),
    "office": ([.01, .01, .01, .01, .01, .01, .03, .35, .85, 1, 1, .70, .60, .95, 1, .95, .70, .35, .12, .06,
                .04, .03, .02, .01], 0.04),
}
TARGET_BASELINE_PER_HOUR = Decimal("13.50")
# what calibrate() multiplies scalable prompts by for the default week (1.23-1.25 over seeds 1-4): a randomized
# window, which need not hold a whole week, takes this fixed factor instead of calibrating on itself
TYPICAL_CALIBRATION = 1.24
TYPO_EVENTS_PER_WEEK = 4
BATCH_START_UTC = 2 * HOUR + 15 * MINUTE     # nightly cron, 03:15 Europe/Berlin
BATCH_WORKERS = 4


def minute_grid(window: Window = DEFAULT_WINDOW) -> np.ndarray:
    """Start of every minute of the log window, epoch microseconds."""
    return np.arange(window.start, window.collected_at, MINUTE, dtype=np.int64)


def weekday(us: np.ndarray) -> np.ndarray:
    """ISO weekday index 0=Monday for epoch microseconds (1970-01-01 was a Thursday)."""
    return ((us // (24 * HOUR)) + 3) % 7


def _curve(pattern: str, minutes: np.ndarray) -> np.ndarray:
    hourly, weekend = CURVES[pattern]
    hour = (minutes % (24 * HOUR)) / HOUR
    w = np.interp(hour, np.arange(25), hourly + hourly[:1])
    return np.where(weekday(minutes) >= 5, w * weekend, w)


@functools.cache
def _week_mean(pattern: str) -> float:
    """Mean weight over one whole reference week (Monday to Monday), whatever window is simulated."""
    return float(_curve(pattern, np.arange(WINDOW_START, BASELINE_END, MINUTE, dtype=np.int64)).mean())


def seasonality(pattern: str, minutes: np.ndarray) -> np.ndarray:
    """Per-minute weight, normalised to mean 1 over a whole week."""
    return _curve(pattern, minutes) / _week_mean(pattern)


def poisson_starts(rng: np.random.Generator, minutes: np.ndarray, per_minute: np.ndarray) -> np.ndarray:
    """Non-homogeneous Poisson arrivals: a count per minute, times uniform inside it."""
    counts = rng.poisson(per_minute)
    base = np.repeat(minutes, counts)
    return np.sort(base + rng.integers(0, MINUTE, base.size))


def draw_usage(rng: np.random.Generator, profile: Profile, n: int) -> np.ndarray:
    """Index into profile.usages for n requests."""
    shares = np.array([u.share for u in profile.usages])
    return rng.choice(len(shares), size=n, p=shares / shares.sum())


def draw_tokens(rng: np.random.Generator, usage: Usage, n: int) -> dict[str, np.ndarray]:
    """Uncached prompt, cached prefix (OpenAI automatic caching) and completion tokens for n requests."""
    model = MODELS[usage.model]
    prompt = np.round(usage.prompt * np.exp(usage.prompt_sigma * rng.standard_normal(n))).astype(np.int64)
    cap_out = usage.max_tokens or model.max_output
    completion = np.round(usage.completion * np.exp(usage.completion_sigma * rng.standard_normal(n)))
    completion = np.clip(completion, 1, cap_out).astype(np.int64)
    prefix = np.zeros(n, dtype=np.int64)
    if usage.cache_prefix:
        prefix[:] = usage.cache_prefix
    prompt = np.clip(prompt, 8, model.max_input - prefix - cap_out)
    cache_read = np.zeros(n, dtype=np.int64)
    if usage.cache_hit > 0:            # OpenAI: cached tokens come in 128-token steps once the prompt is >= 1024
        hit = rng.random(n) < usage.cache_hit
        cache_read = np.where(hit & (prefix >= 1024), prefix // 128 * 128, 0)
    return {"prompt": prompt + prefix, "cache_read": cache_read, "completion": completion,
            "prefix": prefix, "max_tokens": np.full(n, usage.max_tokens, dtype=np.int64),
            "scalable": np.full(n, usage.scalable)}


def requests_for(rng: np.random.Generator, key_idx: int, key: VirtualKey, starts: np.ndarray,
                 source: np.ndarray | None = None) -> pd.DataFrame:
    """Requests of one key at the given start times; token draws per model usage."""
    p = key.profile
    n = starts.size
    which = draw_usage(rng, p, n)
    frame = new_frame(n)
    frame["t_start"] = starts
    frame["key"] = key_idx
    for i, usage in enumerate(p.usages):
        sel = np.flatnonzero(which == i)
        frame.loc[sel, "model"] = usage.model
        for col, values in draw_tokens(rng, usage, sel.size).items():
            frame.loc[sel, col] = values
    src = rng.integers(0, len(p.sources), n) if source is None else source
    frame["client_ip"] = np.array(p.sources)[src]
    if p.via_lb:
        frame["xff_in"] = frame["client_ip"]
        frame["remote_addr"] = NETWORK.lb_ip
    else:
        frame["xff_in"] = ""
        frame["remote_addr"] = frame["client_ip"]
    frame["ua"] = np.array(p.user_agents)[rng.integers(0, len(p.user_agents), n)]
    frame["path"] = "/v1/chat/completions"
    frame["stream"] = p.stream
    frame["temperature"] = np.nan if p.temperature is None else p.temperature
    if p.end_users:
        pool = np.array([f"cust_{x:06d}" for x in rng.choice(1_000_000, p.end_users, replace=False)])
        frame["end_user"] = pool[np.minimum(rng.zipf(1.6, n), p.end_users) - 1]
    return frame


def seasonal_key(rng: np.random.Generator, key_idx: int, key: VirtualKey,
                 window: Window = DEFAULT_WINDOW) -> pd.DataFrame:
    """Poisson traffic following the key's daily curve."""
    minutes = minute_grid(window)
    lam = key.profile.rate_per_hour / 60 * seasonality(key.profile.pattern, minutes)
    return requests_for(rng, key_idx, key, poisson_starts(rng, minutes, lam))


def nightly_batch(rng: np.random.Generator, key_idx: int, key: VirtualKey,
                  window: Window = DEFAULT_WINDOW) -> pd.DataFrame:
    """A cron job every night: a queue of documents worked off by a few sequential workers."""
    parts = []
    for day in range(window.start // (24 * HOUR) * (24 * HOUR), window.collected_at, 24 * HOUR):
        t0 = day + BATCH_START_UTC + int(rng.integers(0, 90 * US))
        weekend = weekday(np.array([day]))[0] >= 5
        docs = int(rng.poisson(key.profile.rate_per_hour * 168 / (5 * 1.0 + 2 * 0.4) * (0.4 if weekend else 1.0)))
        frame = requests_for(rng, key_idx, key, np.zeros(docs, dtype=np.int64))
        worker = np.arange(docs) % BATCH_WORKERS
        ttft, gen = latency(rng, frame["model"].to_numpy(), frame["completion"].to_numpy())
        cycle = ttft + gen + rng.integers(30_000, 300_000, docs)
        starts = np.empty(docs, dtype=np.int64)
        for w in range(BATCH_WORKERS):
            sel = np.flatnonzero(worker == w)
            offsets = np.concatenate([[w * 400_000], cycle[sel][:-1]]).cumsum()
            starts[sel] = t0 + offsets
        frame["t_start"] = starts
        frame["ttft"], frame["gen"] = ttft, gen
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def ci_bursts(rng: np.random.Generator, key_idx: int, key: VirtualKey,
              window: Window = DEFAULT_WINDOW) -> pd.DataFrame:
    """CI pipelines on weekdays 07-19 UTC: each run fires a burst of small requests within a minute or two."""
    minutes = minute_grid(window)
    hour = (minutes % (24 * HOUR)) // HOUR
    open_ = (weekday(minutes) < 5) & (hour >= 7) & (hour < 19)
    per_run = 27.5
    lam = np.where(open_, key.profile.rate_per_hour * 168 / (5 * 12) / per_run / 60, 0.0)
    runs = poisson_starts(rng, minutes, lam)
    sizes = rng.integers(15, 41, runs.size)
    spans = rng.integers(40 * US, 150 * US, runs.size)
    starts = np.repeat(runs, sizes) + (rng.random(sizes.sum()) * np.repeat(spans, sizes)).astype(np.int64)
    runner = np.repeat(rng.integers(0, len(key.profile.sources), runs.size), sizes)
    order = np.argsort(starts, kind="stable")
    return requests_for(rng, key_idx, key, starts[order], runner[order])


def typo_bursts(rng: np.random.Generator, key_idx: int, key: VirtualKey, window: Window = DEFAULT_WINDOW,
                count: int = TYPO_EVENTS_PER_WEEK) -> pd.DataFrame:
    """A human pastes a mistyped key a few times in the week: short runs of 401s from the office."""
    minutes = minute_grid(window)
    office = seasonality("office", minutes) * (minutes < window.baseline_end)
    count = min(count, int((office > 0).sum()))
    events = np.sort(rng.choice(minutes, size=count, replace=False, p=office / office.sum()))
    sizes = rng.integers(1, 4, events.size)
    starts = np.repeat(events + rng.integers(0, MINUTE, events.size), sizes)
    starts = starts + np.concatenate([np.arange(s) for s in sizes]) * rng.integers(4 * US, 20 * US, sizes.sum())
    frame = requests_for(rng, key_idx, key, starts)
    frame["outcome"] = "auth"
    return frame


GENERATORS = {"always_on": seasonal_key, "business": seasonal_key, "office": seasonal_key,
              "nightly_batch": nightly_batch, "ci_bursts": ci_bursts}


def anthropic_cache(frame: pd.DataFrame) -> None:
    """Prompt caching with Anthropic's 5-minute TTL: the prefix is written when the cache went cold, else read."""
    anth = frame["model"].map(lambda m: MODELS[m].provider == "anthropic").to_numpy() & (frame["prefix"] > 0)
    for _, group in frame[anth].groupby("key"):
        t = group["t_start"].to_numpy()
        order = np.argsort(t, kind="stable")
        gap = np.diff(t[order], prepend=t[order][0] - 10 * MINUTE)
        cold = gap > 5 * MINUTE
        idx = group.index.to_numpy()[order]
        prefix = frame.loc[idx, "prefix"].to_numpy()
        frame.loc[idx, "cache_write"] = np.where(cold, prefix, 0)
        frame.loc[idx, "cache_read"] = np.where(cold, 0, prefix)


def baseline(rng: np.random.Generator, keys: list[VirtualKey], window: Window = DEFAULT_WINDOW,
             typos: bool = True) -> pd.DataFrame:
    """Ordinary traffic of every valid key over the window (by default a week plus the incident morning),
    failures included. typos: the mistyped key's 401s (a keyless proxy has no authentication to fail)."""
    parts = []
    default = window == DEFAULT_WINDOW
    for idx, key in enumerate(keys):
        if key.valid:
            parts.append(GENERATORS[key.profile.pattern](rng, idx, key, window))
        elif typos:
            weeks = (window.baseline_end - window.start) / (7 * 24 * HOUR)
            events = TYPO_EVENTS_PER_WEEK if default else int(rng.poisson(TYPO_EVENTS_PER_WEEK * weeks))
            if events:
                parts.append(typo_bursts(rng, idx, key, window, events))
    frame = pd.concat(parts, ignore_index=True)[COLUMNS]
    frame = frame.sort_values(["t_start", "key"], kind="stable").reset_index(drop=True)
    anthropic_cache(frame)
    inject_failures(rng, frame)
    if default:
        calibrate(frame)
    else:
        scale_prompts(frame, TYPICAL_CALIBRATION)
    fill_latency(rng, frame)
    return frame


def uncached_prompt(frame: pd.DataFrame) -> np.ndarray:
    return (frame["prompt"] - frame["cache_read"] - frame["cache_write"]).to_numpy()


def scale_prompts(frame: pd.DataFrame, factor: float) -> None:
    """Scale scalable uncached prompt tokens by a fixed factor (within the model's context)."""
    unc = uncached_prompt(frame)
    cap = frame["model"].map(lambda m: MODELS[m].max_input).to_numpy() - frame["completion"].to_numpy()
    fixed = frame["prompt"].to_numpy() - unc
    new_unc = np.clip(np.round(unc * factor), 8, cap - fixed).astype(np.int64)
    frame["prompt"] = np.where(frame["scalable"].to_numpy().astype(bool), fixed + new_unc, frame["prompt"].to_numpy())


def calibrate(frame: pd.DataFrame, target: Decimal = TARGET_BASELINE_PER_HOUR) -> float:
    """Scale scalable uncached prompt tokens so the baseline week costs `target` USD per hour on average."""
    week = (frame["t_start"] < BASELINE_END).to_numpy() & (frame["outcome"] == "ok").to_numpy()
    hours = (BASELINE_END - WINDOW_START) // HOUR
    want = int(target * hours * 10**9)
    scal = frame["scalable"].to_numpy().astype(bool)
    in_price = frame["model"].map(lambda m: MODELS[m].nano("input")).to_numpy()
    cap = frame["model"].map(lambda m: MODELS[m].max_input).to_numpy() - frame["completion"].to_numpy()
    factor = 1.0
    for _ in range(6):
        unc = uncached_prompt(frame)
        have = int(cost_nano(frame)[week].sum())
        movable = int((unc * in_price)[week & scal].sum())
        if movable == 0 or have == want:
            break
        step = 1 + (want - have) / movable
        factor *= step
        fixed = frame["prompt"].to_numpy() - unc
        new_unc = np.clip(np.round(unc * step), 8, cap - fixed).astype(np.int64)
        frame["prompt"] = np.where(scal, fixed + new_unc, frame["prompt"].to_numpy())
    return factor


def inject_failures(rng: np.random.Generator, frame: pd.DataFrame) -> None:
    """Provider 500s (retried, then given up) and timeouts on long prompts, as any week of real traffic has."""
    ok = (frame["outcome"] == "ok").to_numpy()
    r = rng.random(len(frame))
    server = ok & (r < 0.0025)
    timeout = ok & ~server & (frame["prompt"].to_numpy() > 30000) & (r > 0.9988)
    frame.loc[server, "outcome"] = "server_error"
    frame.loc[timeout, "outcome"] = "timeout"
