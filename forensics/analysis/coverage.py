"""What the case covers and which fields were missing, with what each gap does to the figures' confidence."""
from __future__ import annotations

from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case


@dataclass
class Coverage:
    start: object
    end: object
    sources: list[str]
    missing: list[str] = field(default_factory=list)     # short ids, e.g. 'nginx', 'litellm.client_ip'
    gaps: list[dict] = field(default_factory=list)       # {id, what, effect}


def coverage_step() -> Step:
    """Per source: rows, time span, and how often the fields the analysis leans on are filled."""
    return Step("coverage", """
        SELECT 'litellm' AS source, count(*) AS rows, min(start_time) AS start, max(coalesce(end_time, start_time)) AS "end",
               count(client_ip) AS with_client_ip, count(user_agent) AS with_user_agent,
               count(max_tokens) AS with_max_tokens, count(litellm_call_id) AS with_call_id,
               NULL::BIGINT AS with_request_time, NULL::BIGINT AS with_forwarded_for
        FROM llm_requests
        UNION ALL
        SELECT 'nginx', count(*), min(time), max(time), count(client_ip), count(user_agent), NULL,
               count(litellm_call_id), count(request_time), count(forwarded_for)
        FROM http_requests
        UNION ALL
        SELECT provider, count(*), min(bucket_start), max(bucket_end), NULL, NULL, NULL, NULL, NULL, NULL
        FROM (SELECT provider, bucket_start, bucket_end FROM provider_usage
              UNION ALL SELECT provider, bucket_start, bucket_end FROM provider_costs)
        GROUP BY provider
    """)


GAPS = {
    "litellm": ("no LiteLLM request logs", "no per-request attribution: keys, models and costs come only from the "
                "provider's buckets"),
    "nginx": ("no nginx access logs", "client addresses rest on LiteLLM's requester_ip_address alone; no view of "
              "requests the proxy rejected before logging"),
    "provider": ("no provider usage or cost data", "spend outside the proxy (a leaked provider key) cannot be seen, "
                 "and the refund figure cannot be quoted from the provider's own bill"),
    "litellm.client_ip": ("LiteLLM rows without a client IP", "attribution per address relies on nginx alone"),
    "litellm.user_agent": ("LiteLLM rows without a user agent", "campaigns are grouped by address and timing only"),
    "litellm.max_tokens": ("max_tokens not logged", "the max_tokens cap control is replayed on completion tokens"),
    "nginx.call_id": ("no LiteLLM call id in nginx", "nginx lines join LiteLLM rows by time, client and path, not "
                      "exactly"),
    "nginx.request_time": ("no $request_time in nginx", "retries and slow 429s cannot be timed"),
    "nginx.forwarded_for": ("no X-Forwarded-For in nginx", "behind a load balancer every request seems to come from "
                            "the balancer"),
}


def coverage(case: Case) -> Coverage:
    frame = case.query(coverage_step())
    present = {r.source: r for r in frame.itertuples() if r.rows}
    sources = sorted(present)
    missing = []
    if "litellm" not in present:
        missing.append("litellm")
    if "nginx" not in present:
        missing.append("nginx")
    if not any(s not in ("litellm", "nginx") for s in present):
        missing.append("provider")
    # A field most rows lack is a gap; a field only some clients send (max_tokens: normal clients leave it out;
    # X-Forwarded-For: only requests through a balancer carry it) is a gap only when no row has it at all.
    if "litellm" in present:
        r = present["litellm"]
        missing += [f"litellm.{c}" for c, n in (("client_ip", r.with_client_ip), ("user_agent", r.with_user_agent))
                    if n < r.rows * 0.5]
        missing += ["litellm.max_tokens"] if not r.with_max_tokens else []
    if "nginx" in present:
        r = present["nginx"]
        missing += [f"nginx.{c}" for c, n in (("call_id", r.with_call_id), ("request_time", r.with_request_time))
                    if n < r.rows * 0.5]
        missing += ["nginx.forwarded_for"] if not r.with_forwarded_for else []
    starts = [r.start for r in present.values() if r.start is not None]
    ends = [getattr(r, "end") for r in present.values() if getattr(r, "end") is not None]
    gaps = [{"id": m, "what": GAPS[m][0], "effect": GAPS[m][1]} for m in missing]
    return Coverage(min(starts) if starts else None, max(ends) if ends else None, sources, missing, gaps)
