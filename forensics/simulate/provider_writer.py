"""What the providers' admin APIs return for the proxy's traffic: OpenAI usage/costs, Anthropic usage/cost report.

Only successful calls are counted: provider 429s, 500s and timeouts appear in no usage bucket and cost nothing.
"""
from __future__ import annotations

import base64
import hashlib
import json
import struct
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pandas as pd

from forensics.simulate.catalog import COLLECTED_AT, HOUR, MINUTE, MODELS, NETWORK, US, WINDOW_START, Window

DAY = 24 * HOUR
TOKEN_TYPES = (   # (usage column, OpenAI line item suffix, Anthropic token_type, Anthropic description suffix, price)
    ("uncached", "input", "uncached_input_tokens", "Input Tokens", "input"),
    ("cache_read", "cached input", "cache_read_input_tokens", "Cache Read Input Tokens", "cache_read"),
    ("cache_write", None, "cache_creation.ephemeral_5m_input_tokens", "5m Cache Write Input Tokens", "cache_write"),
    ("completion", "output", "output_tokens", "Output Tokens", "output"),
)


def rfc3339(us: int) -> str:
    return datetime.fromtimestamp(us // US, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


BILLED_COLUMNS = ["t_start", "model", "prompt", "cache_read", "cache_write", "completion", "api_key_id"]


def billed(frame: pd.DataFrame, provider: str, outside: pd.DataFrame | None = None) -> pd.DataFrame:
    """Successful calls of one provider with their token partitions (the provider's own counting).

    outside: calls made with a provider key directly, bypassing the proxy (they carry their own api_key_id).
    """
    ok = frame[(frame["outcome"] == "ok") & (frame["provider"] == provider)].copy()
    ok["api_key_id"] = NETWORK.openai_api_key_id if provider == "openai" else NETWORK.anthropic_api_key_id
    if outside is not None and (outside["provider"] == provider).any():
        ok = pd.concat([ok[BILLED_COLUMNS], outside.loc[outside["provider"] == provider, BILLED_COLUMNS]],
                       ignore_index=True)
    ok["uncached"] = ok["prompt"] - ok["cache_read"] - ok["cache_write"]
    ok["snapshot"] = ok["model"].map(lambda m: MODELS[m].snapshot)
    return ok


def bucket_sums(ok: pd.DataFrame, width: int, start: int, end: int, by: list[str]) -> dict[int, list[dict]]:
    """Token sums per bucket start and group, for buckets [start, end)."""
    sel = ok[(ok["t_start"] >= start) & (ok["t_start"] < end)].copy()
    sel["bucket"] = start + (sel["t_start"] - start) // width * width
    cols = ["prompt", "uncached", "cache_read", "cache_write", "completion"]
    agg = sel.groupby(["bucket", *by], sort=True)[cols].sum()
    agg["requests"] = sel.groupby(["bucket", *by], sort=True).size()
    out: dict[int, list[dict]] = {}
    for idx, row in agg.iterrows():
        b, *keys = idx if isinstance(idx, tuple) else (idx,)
        out.setdefault(int(b), []).append(dict(zip(by, keys)) | {k: int(v) for k, v in row.items()})
    return out


def pages(buckets: list[dict], limit: int, cursor) -> list[dict]:
    """Split buckets into API pages of `limit`, chained by next_page cursors."""
    chunks = [buckets[i:i + limit] for i in range(0, len(buckets), limit)] or [[]]
    out = []
    for i, chunk in enumerate(chunks):
        more = i + 1 < len(chunks)
        out.append({"data": chunk, "has_more": more, "next_page": cursor(chunks[i + 1][0]) if more else None})
    return out


def openai_cursor(bucket: dict) -> str:
    """A cursor shaped like OpenAI's ('page_' + base64 of two timestamps and an opaque word)."""
    opaque = hashlib.sha256(str(bucket["start_time"]).encode()).digest()[:4]
    raw = b"\0" * 4 + struct.pack(">I", bucket["start_time"]) + opaque + b"\0" * 4 + struct.pack(">I", 1794182400)
    return "page_" + base64.b64encode(raw).decode()


def anthropic_cursor(bucket: dict) -> str:
    """Anthropic's cursor: 'page_' + base64 of the next bucket's starting_at."""
    return "page_" + base64.b64encode(bucket["starting_at"].encode()).decode()


def openai_usage_result(g: dict) -> dict:
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": g["prompt"], "output_tokens": g["completion"], "input_cached_tokens": g["cache_read"],
        "input_cache_write_tokens": 0, "input_uncached_tokens": g["uncached"],
        "input_text_tokens": g["prompt"], "output_text_tokens": g["completion"],
        "input_cached_text_tokens": g["cache_read"], "input_audio_tokens": 0, "input_cached_audio_tokens": 0,
        "output_audio_tokens": 0, "input_image_tokens": 0, "input_cached_image_tokens": 0, "output_image_tokens": 0,
        "num_model_requests": g["requests"], "project_id": None, "user_id": None,
        "api_key_id": g["api_key_id"], "model": g["snapshot"], "batch": None, "service_tier": None,
    }


def write_json(path: Path, obj, indent: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=indent, separators=None if indent else (",", ":"))
    path.write_text(text + "\n")


def openai_usage(ok: pd.DataFrame, width: int, start: int, end: int, limit: int) -> list[dict]:
    """GET /v1/organization/usage/completions?bucket_width=..&group_by=api_key_id,model pages."""
    sums = bucket_sums(ok, width, start, end, ["api_key_id", "snapshot"])
    buckets = [{"object": "bucket", "start_time": b // US, "end_time": (b + width) // US,
                "results": [openai_usage_result(g) for g in sums.get(b, [])]} for b in range(start, end, width)]
    return [{"object": "page"} | p for p in pages(buckets, limit, openai_cursor)]


def openai_costs(ok: pd.DataFrame, start: int, end: int, limit: int = 7) -> list[dict]:
    """GET /v1/organization/costs?bucket_width=1d&group_by=line_item,project_id pages (amounts in dollars)."""
    sums = bucket_sums(ok, DAY, start, end, ["model", "snapshot"])
    buckets = []
    for b in range(start, end, DAY):
        results = []
        for g in sums.get(b, []):
            for col, item, _, _, price in TOKEN_TYPES:
                if item is None or g[col] == 0:
                    continue
                amount = Decimal(g[col] * MODELS[g["model"]].nano(price)) / 10**9
                results.append({"object": "organization.costs.result",
                                "amount": {"value": float(amount), "currency": "usd"},
                                "line_item": f"{g['snapshot']}, {item}", "project_id": NETWORK.openai_project_id,
                                "api_key_id": None, "quantity": g[col], "quantity_unit": "tokens"})
        buckets.append({"object": "bucket", "start_time": b // US, "end_time": (b + DAY) // US, "results": results})
    return [{"object": "page"} | p for p in pages(buckets, limit, openai_cursor)]


def anthropic_usage(ok: pd.DataFrame, start: int, end: int, limit: int = 72, width: int = HOUR) -> list[dict]:
    """GET /v1/organizations/usage_report/messages?bucket_width=1h&group_by[]=api_key_id,model,service_tier."""
    sums = bucket_sums(ok, width, start, end, ["snapshot"])
    buckets = []
    for b in range(start, end, width):
        results = [{"uncached_input_tokens": g["uncached"],
                    "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": g["cache_write"]},
                    "cache_read_input_tokens": g["cache_read"], "output_tokens": g["completion"],
                    "server_tool_use": {"web_search_requests": 0}, "api_key_id": NETWORK.anthropic_api_key_id,
                    "workspace_id": None, "model": g["snapshot"], "service_tier": "standard",
                    "context_window": None} for g in sums.get(b, [])]
        buckets.append({"starting_at": rfc3339(b), "ending_at": rfc3339(b + width), "results": results})
    return pages(buckets, limit, anthropic_cursor)


def cents(amount_nano: int) -> str:
    """USD in 1e-9 as Anthropic's decimal string of cents ('123.78912' = $1.2378912)."""
    text = format(Decimal(amount_nano) / 10**7, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def anthropic_costs(ok: pd.DataFrame, start: int, end: int, limit: int = 7) -> list[dict]:
    """GET /v1/organizations/cost_report?group_by[]=description pages (amounts: cents, decimal strings)."""
    sums = bucket_sums(ok, DAY, start, end, ["model", "snapshot"])
    buckets = []
    for b in range(start, end, DAY):
        results = []
        for g in sums.get(b, []):
            m = MODELS[g["model"]]
            for col, _, token_type, label, price in TOKEN_TYPES:
                if g[col] == 0:
                    continue
                results.append({"currency": "USD", "amount": cents(g[col] * m.nano(price)), "workspace_id": None,
                                "description": f"{m.display} Usage - {label}", "cost_type": "tokens",
                                "context_window": "0-200k", "model": g["snapshot"], "service_tier": "standard",
                                "token_type": token_type})
        buckets.append({"starting_at": rfc3339(b), "ending_at": rfc3339(b + DAY), "results": results})
    return pages(buckets, limit, anthropic_cursor)


def minute_window(start: int, end: int) -> tuple[int, int]:
    """The 1m usage export a responder pulls around an incident: from half an hour before its first hour, two
    hours long, or to half an hour past the incident's last hour when it lasts longer."""
    lo = start // HOUR * HOUR - 30 * MINUTE
    hi = lo + 2 * HOUR
    if end >= hi:
        hi = (end // HOUR + 1) * HOUR + 30 * MINUTE
    return lo, hi


def minute_file(lo: int) -> str:
    day = datetime.fromtimestamp(lo // US, tz=timezone.utc).strftime("%Y-%m-%d")
    return f"openai/usage_completions_{day}_1m_page{{n}}.json"


def write(frame: pd.DataFrame, out_dir: Path, incident: tuple[int, int] | None,
          outside: pd.DataFrame | None = None) -> dict[str, int]:
    """All provider exports; returns {relative path: buckets in the file}.

    incident: (first, last) request start of the incidents, for the 1m usage export; outside: provider-only calls.
    """
    written: dict[str, int] = {}
    day_end = (COLLECTED_AT + DAY - 1) // DAY * DAY

    def emit(rel: str, page_list: list[dict], indent: int | None) -> None:
        for i, page in enumerate(page_list, 1):
            name = rel.format(n=i)
            write_json(out_dir / name, page, indent)
            written[name] = len(page["data"])

    oa = billed(frame, "openai", outside)
    emit("openai/usage_completions_2026-11-09_page{n}.json", openai_usage(oa, HOUR, WINDOW_START, COLLECTED_AT, 72), 2)
    if incident is not None:
        lo, hi = minute_window(*incident)
        emit(minute_file(lo), openai_usage(oa, MINUTE, lo, hi, 60), 2)
    emit("openai/costs_page{n}.json", openai_costs(oa, WINDOW_START, day_end), 2)
    an = billed(frame, "anthropic", outside)
    emit("anthropic/usage_report_messages_page{n}.json", anthropic_usage(an, WINDOW_START, COLLECTED_AT), None)
    emit("anthropic/cost_report_page{n}.json", anthropic_costs(an, WINDOW_START, day_end), None)
    return written


# --- randomized deployments ---------------------------------------------------------------------------------------

BUCKET_US = {"1m": MINUTE, "1h": HOUR, "1d": DAY}
BUCKET_PAGE_LIMIT = {"1m": 1440, "1h": 168, "1d": 31}      # the APIs' maximum buckets a page
MINUTE_EXPORT_BEFORE = DAY      # 1m buckets: the responder pulls from a day before the incident, not a month


def bucket_span(window: Window, bucket: str, focus: int) -> tuple[int, int]:
    """Buckets [start, end) covering the window at this width (1m: from a day before `focus` at most)."""
    width = BUCKET_US[bucket]
    start = window.start if bucket != "1m" else max(window.start, focus - MINUTE_EXPORT_BEFORE)
    return start // width * width, -(-window.collected_at // width) * width


def write_deployment(frame: pd.DataFrame, out_dir: Path, window: Window, focus: int, providers: tuple[str, ...],
                     buckets: dict[str, str], outside: pd.DataFrame | None = None) -> dict[str, int]:
    """Each present provider's usage at its bucket width and its daily costs over the window.

    focus: the incident's first request (or the window's end without one), where a 1m export is centred."""
    written: dict[str, int] = {}

    def emit(rel: str, page_list: list[dict], indent: int | None) -> None:
        for i, page in enumerate(page_list, 1):
            name = rel.format(n=i)
            write_json(out_dir / name, page, indent)
            written[name] = len(page["data"])

    day_lo, day_hi = bucket_span(window, "1d", focus)
    if "openai" in providers:
        oa, b = billed(frame, "openai", outside), buckets["openai"]
        lo, hi = bucket_span(window, b, focus)
        emit(f"openai/usage_completions_{b}_page{{n}}.json", openai_usage(oa, BUCKET_US[b], lo, hi,
                                                                            BUCKET_PAGE_LIMIT[b]), 2)
        emit("openai/costs_page{n}.json", openai_costs(oa, day_lo, day_hi, limit=31), 2)
    if "anthropic" in providers:
        an, b = billed(frame, "anthropic", outside), buckets["anthropic"]
        lo, hi = bucket_span(window, b, focus)
        emit(f"anthropic/usage_report_messages_{b}_page{{n}}.json",
             anthropic_usage(an, lo, hi, BUCKET_PAGE_LIMIT[b], BUCKET_US[b]), None)
        emit("anthropic/cost_report_page{n}.json", anthropic_costs(an, day_lo, day_hi, limit=31), None)
    return written
