"""A tiny case for the safe-to-share tests (issue #15): a few hundred requests, built in a second.

Two and a half quiet days of keyed `gpt-4o-mini` calls, then an open-proxy burst of keyless `gpt-4` calls whose
request ids and user agent an attacker wrote (spreadsheet formulas, bidi and zero-width characters), and one OpenAI
usage page with a dated model the case has no price for yet (the reconciliation prices it while investigating).
"""
from __future__ import annotations

import json
from pathlib import Path

T0 = 1794787200.0                  # 2026-11-16T00:00:00Z
QUIET = 240                        # keyed requests, one every 15 minutes
ATTACK_START = T0 + QUIET * 900 + 3600
BIDI = "\u202e\u200b\u2028\u2029\u2066\u2067\u2068\u2069\u061c\ufeff"
HOSTILE_UA = f'=HYPERLINK("http://evil.example/x","click") gnp.{BIDI[0]}exe{BIDI[1:]}'
FORMULA_IDS = ['=HYPERLINK("http://evil.example/x","id")', "+1+1", "-2-2", "@SUM(1,1)", "\tTAB", "\rCR",
               f"id{BIDI}"]


def _payload(i: int, t: float, *, request_id: str, key: str | None, ip: str, ua: str, model: str, prompt: int,
             completion: int, max_tokens: int) -> dict:
    meta = {"user_api_key_hash": key, "requester_ip_address": ip, "user_agent": ua}
    return {"id": request_id, "litellm_call_id": f"00000000-0000-4000-8000-{i:012d}", "call_type": "acompletion",
            "status": "success", "custom_llm_provider": "openai", "model": model, "model_group": model,
            "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "response_cost": 0.001, "startTime": t, "endTime": t + 20, "metadata": meta,
            "requester_ip_address": ip, "user_agent": ua, "model_parameters": {"max_tokens": max_tokens}}


def write_tiny_logs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(QUIET):
        t = T0 + i * 900 + (i * 37) % 60
        rows.append(_payload(i, t, request_id=f"chatcmpl-quiet{i:04d}", key="abc"[i % 3] * 64,
                             ip=f"10.0.0.{i % 3 + 1}", ua="OpenAI/Python 1.51.2", model="gpt-4o-mini",
                             prompt=500 + i, completion=100, max_tokens=200))
    for n in range(60):
        request_id = FORMULA_IDS[n] if n < len(FORMULA_IDS) else f"chatcmpl-attack{n:04d}"
        rows.append(_payload(QUIET + n, ATTACK_START + n * 15, request_id=request_id, key=None,
                             ip=f"203.0.113.{n % 5 + 1}", ua=HOSTILE_UA, model="gpt-4", prompt=40,
                             completion=3000, max_tokens=4000))
    (folder / "payloads.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    hour = int(ATTACK_START // 3600 * 3600)
    usage = {"object": "page", "has_more": False, "next_page": None, "data": [{
        "object": "bucket", "start_time": hour, "end_time": hour + 3600, "results": [{
            "object": "organization.usage.completions.result", "input_tokens": 2400, "output_tokens": 180000,
            "input_cached_tokens": 0, "num_model_requests": 60, "project_id": None, "user_id": None,
            "api_key_id": "key_tinyProxyKey01", "model": "gpt-4-0613", "batch": None, "service_tier": None}]}]}
    (folder / "usage_completions_1h.json").write_text(json.dumps(usage, indent=1))
    return folder
