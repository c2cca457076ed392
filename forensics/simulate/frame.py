"""The request table every writer reads: one row per client request that reached LiteLLM, and its finishing."""
from __future__ import annotations

import numpy as np
import pandas as pd

from forensics.simulate import ids
from forensics.simulate.catalog import DEFAULT_WINDOW, MODELS, US, Window

# column -> default; the generators fill what they know, finalize() derives the rest
DEFAULTS: dict[str, object] = {
    "t_start": 0, "key": -1, "model": "", "prompt": 0, "cache_read": 0, "cache_write": 0, "completion": 0,
    "prefix": 0, "max_tokens": 0, "scalable": False, "stream": False, "temperature": np.nan, "client_ip": "",
    "xff_in": "", "remote_addr": "", "ua": "", "path": "", "end_user": "", "outcome": "ok", "incident": "",
    "ttft": 0, "gen": 0, "fail_first": 0, "fail_total": 0,
}
COLUMNS = list(DEFAULTS)
HTTP_STATUS = {"ok": 200, "rate_limit": 429, "server_error": 500, "timeout": 408, "auth": 401}
TTFT_BASE_S = {"gpt-4o-mini": 0.35, "gpt-4o": 0.55, "gpt-4": 0.9, "claude-3-5-sonnet": 0.8}
REQUEST_TIMEOUT_S = 180          # litellm_settings.request_timeout of the simulated proxy
# first provider attempt (s) and the retries LiteLLM adds before giving up (s), per failure kind
RETRY_S = {"rate_limit": (0.15, 0.6, 2.5, 7.5), "server_error": (0.4, 3.0, 1.5, 6.0)}


def new_frame(n: int) -> pd.DataFrame:
    """An empty request table of n rows with every column at its default."""
    data = {}
    for col, default in DEFAULTS.items():
        if isinstance(default, str):
            data[col] = np.full(n, default, dtype=object)
        elif isinstance(default, bool):
            data[col] = np.full(n, default, dtype=bool)
        elif isinstance(default, float):
            data[col] = np.full(n, default, dtype=np.float64)
        else:
            data[col] = np.full(n, default, dtype=np.int64)
    return pd.DataFrame(data)


def latency(rng: np.random.Generator, models: np.ndarray, completion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Time to first token and generation time (microseconds) of successful calls."""
    n = len(models)
    base = np.array([TTFT_BASE_S[m] for m in models]) if n else np.zeros(0)
    tps = np.array([MODELS[m].tokens_per_s for m in models]) if n else np.ones(0)
    ttft = base * np.exp(0.35 * rng.standard_normal(n)) * US
    gen = completion / (tps * np.exp(0.12 * rng.standard_normal(n))) * US
    return ttft.astype(np.int64), gen.astype(np.int64)


def _price(frame: pd.DataFrame, kind: str, nano: bool) -> np.ndarray:
    codes, groups = pd.factorize(frame["model"])
    table = np.array([MODELS[m].nano(kind) if nano else MODELS[m].per_token(kind) for m in groups],
                     dtype=np.int64 if nano else np.float64)
    return table[codes] if len(groups) else np.zeros(len(frame), dtype=table.dtype)


def cost_nano(frame: pd.DataFrame) -> np.ndarray:
    """Exact cost of every successful request in 1e-9 USD (integers; failures cost 0)."""
    unc = (frame["prompt"] - frame["cache_read"] - frame["cache_write"]).to_numpy()
    cost = (unc * _price(frame, "input", True) + frame["cache_read"].to_numpy() * _price(frame, "cache_read", True)
            + frame["cache_write"].to_numpy() * _price(frame, "cache_write", True)
            + frame["completion"].to_numpy() * _price(frame, "output", True))
    return np.where((frame["outcome"] == "ok").to_numpy(), cost, 0).astype(np.int64)


def litellm_spend(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and completion cost as LiteLLM computes them: token counts times float per-token prices."""
    unc = (frame["prompt"] - frame["cache_read"] - frame["cache_write"]).to_numpy().astype(np.float64)
    prompt_cost = (unc * _price(frame, "input", False)
                   + frame["cache_read"].to_numpy() * _price(frame, "cache_read", False)
                   + frame["cache_write"].to_numpy() * _price(frame, "cache_write", False))
    completion_cost = frame["completion"].to_numpy() * _price(frame, "output", False)
    ok = (frame["outcome"] == "ok").to_numpy()
    return np.where(ok, prompt_cost, 0.0), np.where(ok, completion_cost, 0.0)


def fill_latency(rng: np.random.Generator, frame: pd.DataFrame) -> None:
    """Draw generation timing for the rows a generator left without one."""
    missing = (frame["ttft"] == 0).to_numpy()
    ttft, gen = latency(rng, frame.loc[missing, "model"].to_numpy(), frame.loc[missing, "completion"].to_numpy())
    frame.loc[missing, "ttft"], frame.loc[missing, "gen"] = ttft, gen


def _uniform_us(rng: np.random.Generator, lo_s: float, hi_s: float, n: int) -> np.ndarray:
    return (rng.uniform(lo_s, hi_s, n) * US).astype(np.int64)


def failure_timing(rng: np.random.Generator, kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """First-attempt duration and client-visible duration (after retries) of n failed calls, microseconds."""
    lo1, hi1, lo2, hi2 = RETRY_S[kind]
    first = _uniform_us(rng, lo1, hi1, n)
    return first, first + _uniform_us(rng, lo2, hi2, n)


def timeline(rng: np.random.Generator, frame: pd.DataFrame) -> None:
    """LiteLLM and nginx times of every request.

    t_end: LiteLLM endTime (failures: end of the first attempt, as the callback payload has it);
    t_fail: when the client got its answer (failure rows in SpendLogs have start == end == this);
    t_recv / t_log: nginx read the request / wrote the log line.
    """
    n = len(frame)
    out = frame["outcome"].to_numpy()
    start = frame["t_start"].to_numpy()
    ok_end = start + frame["ttft"].to_numpy() + frame["gen"].to_numpy()
    rl, se = RETRY_S["rate_limit"], RETRY_S["server_error"]
    first = np.select(
        [out == "rate_limit", out == "server_error", out == "timeout", out == "auth"],
        [_uniform_us(rng, rl[0], rl[1], n), _uniform_us(rng, se[0], se[1], n),
         _uniform_us(rng, REQUEST_TIMEOUT_S, REQUEST_TIMEOUT_S + 0.05, n), _uniform_us(rng, 0.003, 0.012, n)],
        ok_end - start)
    retries = np.select([out == "rate_limit", out == "server_error"],
                        [_uniform_us(rng, rl[2], rl[3], n), _uniform_us(rng, se[2], se[3], n)], 0)
    preset = frame["fail_total"].to_numpy() > 0          # an incident fixed its failure timing (client loops)
    first = np.where(preset, frame["fail_first"].to_numpy(), first)
    retries = np.where(preset, frame["fail_total"].to_numpy() - first, retries)
    frame["t_end"] = start + first
    frame["t_fail"] = start + first + retries
    stream_first = start + frame["ttft"].to_numpy()
    frame["t_ttft"] = np.where(frame["stream"].to_numpy() & (out == "ok"), stream_first, frame["t_end"])
    frame["t_recv"] = start - _uniform_us(rng, 0.002, 0.018, n)
    frame["t_log"] = frame["t_fail"] + _uniform_us(rng, 0.0005, 0.004, n)
    frame["overhead_ms"] = np.round(rng.uniform(1.5, 14.0, n), 3)


def http_fields(rng: np.random.Generator, frame: pd.DataFrame) -> None:
    """What nginx sees of each request: status, bytes each way, its own request id."""
    n = len(frame)
    out = frame["outcome"].to_numpy()
    completion = frame["completion"].to_numpy()
    frame["http_status"] = frame["outcome"].map(HTTP_STATUS).to_numpy()
    body_ok = np.where(frame["stream"].to_numpy(), completion * 214 + 420, completion * 4 + 610)
    err = {"rate_limit": 436, "server_error": 318, "timeout": 271, "auth": 289}
    body_err = frame["outcome"].map(lambda o: err.get(o, 0)).to_numpy()
    frame["bytes_sent"] = np.where(out == "ok", body_ok + rng.integers(0, 60, n), body_err + rng.integers(0, 12, n))
    head = np.where(frame["remote_addr"].to_numpy() == frame["client_ip"].to_numpy(), 290, 430)
    head = head + frame["ua"].str.len().to_numpy() + frame["xff_in"].str.len().to_numpy()
    frame["request_length"] = head + frame["prompt"].to_numpy() * 4 + 140 + rng.integers(0, 90, n)
    frame["nginx_rid"] = ids.hex_ids(rng, n)


def assign_ids(rng: np.random.Generator, frame: pd.DataFrame) -> None:
    """litellm_call_id, trace id and the SpendLogs request_id (provider response id, else the call id)."""
    n = len(frame)
    frame["call_id"] = ids.uuid4s(rng, n)
    frame["trace_id"] = ids.uuid4s(rng, n)
    provider = frame["model"].map(lambda m: MODELS[m].provider).to_numpy()
    resp = np.where(provider == "anthropic", ids.anthropic_ids(rng, n), ids.openai_ids(rng, n))
    frame["provider"] = provider
    frame["request_id"] = np.where(frame["outcome"].to_numpy() == "ok", resp, frame["call_id"].to_numpy())


def finalize(rng: np.random.Generator, frame: pd.DataFrame, window: Window = DEFAULT_WINDOW) -> pd.DataFrame:
    """Order by start, derive times, ids, costs and HTTP fields; drop what was not logged by collection time."""
    frame = frame[COLUMNS].sort_values(["t_start", "key", "client_ip"], kind="stable").reset_index(drop=True)
    timeline(rng, frame)
    keep = (frame["t_log"] < window.collected_at) & (frame["t_start"] >= window.start)
    frame = frame[keep].reset_index(drop=True)
    assign_ids(rng, frame)
    http_fields(rng, frame)
    frame["cost_nano"] = cost_nano(frame)
    frame["spend_in"], frame["spend_out"] = litellm_spend(frame)
    frame["spend"] = frame["spend_in"] + frame["spend_out"]
    xff = frame["xff_in"].to_numpy()
    peer = frame["remote_addr"].to_numpy()
    frame["requester_ip"] = [f"{x}, {p}" if x else p for x, p in zip(xff, peer)]   # $proxy_add_x_forwarded_for
    return frame
