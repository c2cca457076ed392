"""LiteLLM's records of the requests: a LiteLLM_SpendLogs CSV export and StandardLoggingPayload NDJSON."""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from forensics.simulate.catalog import MODELS, US, VirtualKey
import functools

from forensics.simulate.pgfmt import csv_field, csv_line, float8, jsonb, jsonb_top, prepared, timestamps3

SPEND_LOG_COLUMNS = (
    "request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens",
    "startTime", "endTime", "request_duration_ms", "completionStartTime", "model", "model_id", "model_group",
    "custom_llm_provider", "api_base", "user", "metadata", "cache_hit", "cache_key", "request_tags", "team_id",
    "organization_id", "end_user", "requester_ip_address", "messages", "response", "session_id", "status",
    "mcp_namespaced_tool_name", "agent_id", "proxy_server_request",
)
OPENAI_ORG = "org-Qk2hFvR8xN3mLp7TzW5yBc1d"
TPM_LIMIT = {"gpt-4": 300_000, "gpt-4o": 2_000_000, "gpt-4o-mini": 10_000_000, "claude-3-5-sonnet": 400_000}
TRACEBACK = ('Traceback (most recent call last):\n  File "/usr/lib/python3.13/site-packages/litellm/main.py", '
             'line 552, in acompletion\n    response = await init_response\n  File "/usr/lib/python3.13/'
             'site-packages/litellm/llms/{mod}", line {line}, in {fn}\n    raise {exc}(\n{cls}: {msg}\n')


def gzip_bytes(data: bytes) -> bytes:
    """gzip without a file name and with mtime 0, so the same input gives the same bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def error_information(r: dict, key: VirtualKey | None) -> dict:
    """LiteLLM's error_information for a failed call."""
    out, m = r["outcome"], MODELS[r["model"]]
    group = f"Received Model Group={m.group}\nAvailable Model Group Fallbacks=None"
    prov = "OpenAIException" if m.provider == "openai" else "AnthropicException"
    if out == "auth":
        msg = (f"Authentication Error, Invalid proxy server token passed. Received API Key = {key.hint}, Key Hash "
               f"(Token) ={key.hash}. Unable to find token in cache or `LiteLLM_VerificationTokenTable`")
        return {"traceback": "", "error_code": "401", "error_class": "ProxyException", "llm_provider": "",
                "error_message": msg}
    if out == "rate_limit":
        used = 300_000 - int(r["request_length"]) % 4000
        msg = (f"litellm.RateLimitError: RateLimitError: {prov} - Rate limit reached for {m.provider_model} in "
               f"organization {OPENAI_ORG} on tokens per min (TPM): Limit 300000, Used {used}, Requested "
               f"{r['prompt'] + r['max_tokens']}. Please try again in {1 + r['prompt'] % 900}ms. Visit "
               f"https://platform.openai.com/account/rate-limits to learn more. {group} LiteLLM Retried: 2 times, "
               f"LiteLLM Max Retries: 2")
        code, cls, mod = "429", "RateLimitError", "openai/openai.py"
    elif out == "server_error":
        detail = ("The server had an error while processing your request. Sorry about that!"
                  if m.provider == "openai" else '{"type":"error","error":{"type":"api_error","message":'
                  '"Internal server error"}}')
        msg = f"litellm.InternalServerError: InternalServerError: {prov} - {detail} {group}"
        code, cls, mod = "500", "InternalServerError", "openai/openai.py"
    else:
        msg = f"litellm.Timeout: APITimeoutError - Request timed out. Error_str: Request timed out. {group}"
        code, cls, mod = "408", "Timeout", "openai/openai.py"
    tb = TRACEBACK.format(mod=mod if m.provider == "openai" else "anthropic/chat/handler.py", line=812,
                          fn="acompletion", exc=cls, cls=f"litellm.exceptions.{cls}", msg=msg.split(" - ", 1)[-1])
    return {"traceback": tb, "error_code": code, "error_class": cls, "llm_provider": m.provider, "error_message": msg}


def usage_object(r: dict) -> dict:
    """The provider usage block LiteLLM keeps (OpenAI or Anthropic flavour); keys already in jsonb order."""
    p, c, cr, cw = int(r["prompt"]), int(r["completion"]), int(r["cache_read"]), int(r["cache_write"])
    if MODELS[r["model"]].provider == "anthropic":
        return {"total_tokens": p + c, "prompt_tokens": p, "completion_tokens": c,
                "prompt_tokens_details": {"text_tokens": None, "audio_tokens": None, "cached_tokens": cr,
                                          "cache_creation_tokens": cw},
                "cache_read_input_tokens": cr, "completion_tokens_details": None, "cache_creation_input_tokens": cw}
    return {"total_tokens": p + c, "prompt_tokens": p, "completion_tokens": c,
            "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": cr},
            "completion_tokens_details": {"audio_tokens": 0, "reasoning_tokens": 0, "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def user_agent_tags(ua: str) -> list[str]:
    return [f"User-Agent: {ua.split('/')[0]}", f"User-Agent: {ua}"] if ua else []


ROW_COLUMNS = ("request_id", "call_id", "trace_id", "key", "model", "prompt", "completion", "cache_read",
               "cache_write", "max_tokens", "stream", "temperature", "outcome", "t_start", "t_end", "t_fail",
               "t_ttft", "spend", "spend_in", "spend_out", "end_user", "requester_ip", "ua", "path", "overhead_ms",
               "request_length")


def rows(frame: pd.DataFrame) -> list[dict]:
    """The request table as plain Python dicts (fast to format)."""
    lists = [frame[c].to_numpy(dtype=object).tolist() for c in ROW_COLUMNS]
    return [dict(zip(ROW_COLUMNS, values)) for values in zip(*lists)]


@functools.cache
def _map_information(group: str) -> dict:
    model = MODELS[group]
    return prepared({"model_map_key": model.provider_model, "model_map_value": model.map_entry()})


def _key(keys: list[VirtualKey], idx: int) -> VirtualKey | None:
    return keys[idx] if idx >= 0 else None


def spend_log_metadata(r: dict, key: VirtualKey | None) -> dict:
    """SpendLogsMetadata of one row; every nested object is built in jsonb key order."""
    return jsonb_top(_spend_log_metadata(r, key))


def _spend_log_metadata(r: dict, key: VirtualKey | None) -> dict:
    ok, model = r["outcome"] == "ok", MODELS[r["model"]]
    usage = usage_object(r) if ok else None
    named = key is not None and key.valid
    return {
        "user_api_key": key.hash if key else None,
        "user_api_key_alias": key.alias if named else None,
        "user_api_key_team_id": key.team_id if named else None,
        "user_api_key_org_id": None,
        "user_api_key_user_id": key.user_id if named else None,
        "user_api_key_team_alias": key.team_alias if named else None,
        "spend_logs_metadata": None,
        "requester_ip_address": r["requester_ip"],
        "applied_guardrails": [],
        "batch_models": None,
        "mcp_tool_call_metadata": None,
        "vector_store_request_metadata": None,
        "guardrail_information": None,
        "usage_object": usage,
        "model_map_information": _map_information(model.group) if ok else None,
        "additional_usage_values": {k: v for k, v in usage.items()
                                    if k not in ("prompt_tokens", "completion_tokens", "total_tokens")}
        if ok else None,
        "status": "success" if ok else "failure",
        "proxy_server_request": None,
        "error_information": None if ok else error_information(r, key),
        "cold_storage_object_key": None,
        "litellm_overhead_time_ms": r["overhead_ms"],
        "attempted_retries": 2 if r["outcome"] in ("rate_limit", "server_error") else 0,
        "max_retries": 2,
        "user_agent": r["ua"],
    }


def spend_log_line(r: dict, keys: list[VirtualKey]) -> str:
    """One LiteLLM_SpendLogs row as COPY CSV writes it; failure rows have start == end (the failure time)."""
    key = _key(keys, r["key"])
    ok, auth, model = r["outcome"] == "ok", r["outcome"] == "auth", MODELS[r["model"]]
    named = key is not None and key.valid
    p, c = (int(r["prompt"]), int(r["completion"])) if ok else (0, 0)
    start_s, end_s, first_s = (r["ts_start"], r["ts_end"], r["ts_ttft"]) if ok else (r["ts_fail"],) * 3
    meta = jsonb(spend_log_metadata(r, key), presorted=True)
    q = csv_field
    head = (f'{r["request_id"]},acompletion,{q(key.hash if key else "")},{float8(r["spend"])},{p + c},{p},{c},'
            f'{start_s},{end_s},{(r["t_end"] - r["t_start"]) // 1000 if ok else 0},{first_s},')
    if auth:
        deployment = f'{model.group},"","","","",'
    else:
        deployment = f"{model.provider_model},{model.model_id},{model.group},{model.provider},{model.api_base},"
    tags = "[]" if auth else _tags_csv(r["ua"])
    tail = (f'{q(key.user_id if named else "")},"{meta.replace(chr(34), chr(34) * 2)}",False,Cache OFF,{tags},'
            f'{q(key.team_id if named else None)},,{q(r["end_user"])},{q(r["requester_ip"])},{{}},{{}},'
            f'{r["trace_id"]},{"success" if ok else "failure"},,,{{}}\n')
    return head + deployment + tail


@functools.cache
def _tags_csv(ua: str) -> str:
    return csv_field(jsonb(user_agent_tags(ua)))


def write_spend_logs(frame: pd.DataFrame, keys: list[VirtualKey], path: Path) -> int:
    """litellm/spend_logs.csv.gz: rows in insertion order (when LiteLLM wrote them), not sorted by start."""
    recs = rows(frame)
    for col in ("start", "end", "fail", "ttft"):
        for r, text in zip(recs, timestamps3(frame[f"t_{col}"].to_numpy())):
            r[f"ts_{col}"] = text
    recs.sort(key=lambda r: (r["t_fail"], r["request_id"]))
    text = csv_line(SPEND_LOG_COLUMNS) + "".join(spend_log_line(r, keys) for r in recs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip_bytes(text.encode()))
    return len(recs)


def rate_limit_headers(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Remaining requests/tokens per minute per model, as the provider's x-ratelimit headers would say."""
    rem_req = np.zeros(len(frame), dtype=np.int64)
    rem_tok = np.zeros(len(frame), dtype=np.int64)
    for model, g in frame.groupby("model"):
        t = g["t_start"].to_numpy()
        order = np.argsort(t, kind="stable")
        ts_sorted = t[order]
        tokens = (g["prompt"].to_numpy() + np.maximum(g["max_tokens"].to_numpy(), g["completion"].to_numpy()))[order]
        csum = np.cumsum(tokens)
        lo = np.searchsorted(ts_sorted, ts_sorted - 60 * US)
        used = csum - np.where(lo > 0, csum[lo - 1], 0)
        count = np.arange(1, len(t) + 1) - lo
        pos = g.index.to_numpy()[order]
        rem_tok[frame.index.get_indexer(pos)] = np.maximum(0, TPM_LIMIT[model] - used)
        rem_req[frame.index.get_indexer(pos)] = np.maximum(0, 10_000 - count)
    return rem_req, rem_tok


def callback_payload(r: dict, key: VirtualKey | None, rem: tuple[int, int]) -> dict:
    """StandardLoggingPayload of one call (turn_off_message_logging: messages and response are redacted)."""
    ok, model = r["outcome"] == "ok", MODELS[r["model"]]
    named = key is not None and key.valid
    start, end = r["t_start"] / US, r["t_end"] / US
    first = r["t_ttft"] / US if ok else end
    usage = usage_object(r) if ok else None
    p, c = (int(r["prompt"]), int(r["completion"])) if ok else (0, 0)
    params = {"max_tokens": int(r["max_tokens"])} if r["max_tokens"] else {}
    if r["temperature"] == r["temperature"]:
        params["temperature"] = r["temperature"]
    if r["stream"]:
        params |= {"stream": True, "stream_options": {"include_usage": True}}
    if r["end_user"]:
        params["user"] = r["end_user"]
    sdk = r["ua"].split("/")[0] in ("AsyncOpenAI", "OpenAI")
    headers = {}
    if sdk:
        version = r["ua"].split(" ")[-1]
        headers = {"x-stainless-arch": "x64", "x-stainless-async": "async:asyncio" if "Async" in r["ua"] else "false",
                   "x-stainless-lang": "python", "x-stainless-os": "Linux", "x-stainless-package-version": version,
                   "x-stainless-retry-count": "0", "x-stainless-runtime": "CPython",
                   "x-stainless-runtime-version": "3.11.10"}
    err = None if ok else error_information(r, key)
    map_info = {"model_map_key": model.provider_model, "model_map_value": model.map_entry()}
    return {
        "id": r["request_id"], "trace_id": r["trace_id"], "litellm_call_id": r["call_id"],
        "call_type": "acompletion", "stream": bool(r["stream"]), "response_cost": r["spend"],
        "response_cost_failure_debug_info": None, "status": "success" if ok else "failure",
        "status_fields": {"llm_api_status": "success" if ok else "failure", "guardrail_status": "not_run"},
        "custom_llm_provider": model.provider, "total_tokens": p + c, "prompt_tokens": p, "completion_tokens": c,
        "startTime": start, "endTime": end, "completionStartTime": first,
        "response_time": (first if r["stream"] else end) - start, "model_map_information": map_info,
        "model": model.provider_model, "model_id": model.model_id, "model_group": model.group,
        "api_base": model.api_base,
        "metadata": {
            "user_api_key_hash": key.hash if key else None, "user_api_key_alias": key.alias if named else None,
            "user_api_key_team_id": key.team_id if named else None, "user_api_key_org_id": None,
            "user_api_key_user_id": key.user_id if named else None,
            "user_api_key_team_alias": key.team_alias if named else None, "user_api_key_user_email": None,
            "user_api_key_end_user_id": r["end_user"] or None, "user_api_key_request_route": r["path"],
            "spend_logs_metadata": None, "requester_ip_address": r["requester_ip"], "requester_metadata": {},
            "requester_custom_headers": headers, "applied_guardrails": [], "usage_object": usage,
            "user_agent": r["ua"],
        },
        "cache_hit": None, "cache_key": None, "saved_cache_cost": 0.0, "request_tags": user_agent_tags(r["ua"]),
        "end_user": r["end_user"], "requester_ip_address": r["requester_ip"], "user_agent": r["ua"],
        "messages": "redacted-by-litellm", "response": "redacted-by-litellm" if ok else {},
        "error_str": None if ok else err["error_message"],
        "error_information": err or {"error_code": "", "error_class": "", "llm_provider": "", "traceback": "",
                                     "error_message": ""},
        "model_parameters": params,
        "hidden_params": {
            "model_id": model.model_id, "cache_key": None, "api_base": model.api_base,
            "response_cost": r["spend"], "litellm_overhead_time_ms": r["overhead_ms"],
            "additional_headers": {"x_ratelimit_limit_requests": 10000, "x_ratelimit_remaining_requests": rem[0],
                                   "x_ratelimit_limit_tokens": TPM_LIMIT[model.group],
                                   "x_ratelimit_remaining_tokens": rem[1]} if ok else {},
            "batch_models": None, "litellm_model_name": f"{model.provider}/{model.provider_model}",
            "usage_object": None,
        },
        "guardrail_information": None,
        "standard_built_in_tools_params": {"web_search_options": None, "file_search": None},
        "session_id": r["trace_id"],
    }


def write_callbacks(frame: pd.DataFrame, keys: list[VirtualKey], path: Path, since: int) -> int:
    """litellm/callback_payloads.ndjson.gz: one payload a line, in the order the callback fired.

    Only calls that reached the LLM layer: auth failures (401) never produce a StandardLoggingPayload.
    """
    sel = frame[(frame["t_start"] >= since) & (frame["outcome"] != "auth")]
    rem_req, rem_tok = rate_limit_headers(sel)
    recs = rows(sel)
    for r, a, b in zip(recs, rem_req, rem_tok):
        r["rem"] = (int(a), int(b))
    recs.sort(key=lambda r: (r["t_fail"], r["request_id"]))
    lines = [json.dumps(callback_payload(r, _key(keys, r["key"]), r["rem"]), separators=(",", ":")) for r in recs]
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip_bytes(data) if path.suffix == ".gz" else data)
    return len(lines)


# --- randomized deployments: the other sinks ------------------------------------------------------------------------

def iso_ms(us: int) -> str:
    """Prisma's DateTime in JSON: ISO 8601 UTC with milliseconds and Z."""
    ms = (int(us) + 500) // 1000
    text = np.datetime_as_string(np.array([ms], dtype="datetime64[ms]"))[0]
    return text + "Z"


def spend_log_record(r: dict, keys: list[VirtualKey]) -> dict:
    """One LiteLLM_SpendLogs row as GET /spend/logs returns it (JSON columns as objects, times as ISO strings)."""
    key = _key(keys, r["key"])
    ok, auth, model = r["outcome"] == "ok", r["outcome"] == "auth", MODELS[r["model"]]
    named = key is not None and key.valid
    p, c = (int(r["prompt"]), int(r["completion"])) if ok else (0, 0)
    start, end, first = (r["t_start"], r["t_end"], r["t_ttft"]) if ok else (r["t_fail"],) * 3
    meta = _spend_log_metadata(r, key)
    meta["model_map_information"] = ({"model_map_key": model.provider_model, "model_map_value": model.map_entry()}
                                     if ok else None)
    return {
        "request_id": r["request_id"], "call_type": "acompletion", "api_key": key.hash if key else "",
        "spend": r["spend"], "total_tokens": p + c, "prompt_tokens": p, "completion_tokens": c,
        "startTime": iso_ms(start), "endTime": iso_ms(end),
        "request_duration_ms": (r["t_end"] - r["t_start"]) // 1000 if ok else 0, "completionStartTime": iso_ms(first),
        "model": model.group if auth else model.provider_model, "model_id": "" if auth else model.model_id,
        "model_group": "" if auth else model.group, "custom_llm_provider": "" if auth else model.provider,
        "api_base": "" if auth else model.api_base, "user": key.user_id if named else "", "metadata": meta,
        "cache_hit": "False", "cache_key": "Cache OFF", "request_tags": [] if auth else user_agent_tags(r["ua"]),
        "team_id": key.team_id if named else None, "organization_id": None, "end_user": r["end_user"],
        "requester_ip_address": r["requester_ip"], "messages": {}, "response": {}, "session_id": r["trace_id"],
        "status": "success" if ok else "failure", "mcp_namespaced_tool_name": None, "agent_id": None,
        "proxy_server_request": {},
    }


def write_spend_logs_json(frame: pd.DataFrame, keys: list[VirtualKey], path: Path) -> int:
    """GET /spend/logs?start_date=..&end_date=..&summarize=false saved as is: a JSON array, newest first."""
    out = [spend_log_record(r, keys) for r in rows(frame)]
    out.sort(key=lambda d: (d["startTime"], d["request_id"]), reverse=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, separators=(",", ":")))
    return len(out)


def write_objects(frame: pd.DataFrame, keys: list[VirtualKey], out_dir: Path, rel_folder: str,
                  store: str) -> dict[str, int]:
    """One StandardLoggingPayload per object, as the S3 logger (`{date}/time-{HH-MM-SS-ffffff}_{id}.json`) or the
    GCS bucket logger (`{date}/{response id}`, failures `{date}/failure-{uuid hex}`) names them; no 401s (they never
    reach the callbacks). Returns {relative path: 1}."""
    sel = frame[frame["outcome"] != "auth"]
    rem_req, rem_tok = rate_limit_headers(sel)
    written = {}
    for r, a, b in zip(rows(sel), rem_req, rem_tok):
        payload = callback_payload(r, _key(keys, r["key"]), (int(a), int(b)))
        stamp = np.datetime_as_string(np.array([r["t_start"]], dtype="datetime64[us]"))[0]
        day, clock = stamp[:10], stamp[11:].replace(":", "-").replace(".", "-")
        if store == "s3":
            rel = f"{day}/time-{clock}_{r['request_id']}.json"
        else:
            rel = f"{day}/{r['request_id'] if r['outcome'] == 'ok' else 'failure-' + r['call_id'].replace('-', '')}"
        path = out_dir / rel_folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload))
        written[f"{rel_folder}/{rel}"] = 1
    return written
