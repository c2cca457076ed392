"""Per-request features for the anomaly detectors, built in one SQL statement over the case.

Each feature is something an analyst would look at: how big the request was and what it asked for, when it came,
how new its key, address and client were, how fast that address and key were going, and how often they failed.
Rates and novelty are computed from the request's own past only (window frames end at the request), so scoring a
request never peeks at the future; requests starting at the same instant are ordered by id, so features repeat exactly.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case

FEATURES = (
    "prompt_tokens", "completion_tokens", "max_tokens", "output_price_mtok", "completion_per_prompt",
    "hour_of_day", "weekday", "keyless", "key_age_hours", "key_requests_before", "ip_age_hours",
    "ip_requests_before", "agent_age_hours", "ip_rate_1m", "ip_rate_15m", "key_rate_1m", "key_rate_15m",
    "ip_error_rate_15m", "ip_auth_failures_15m", "keys_per_ip", "ips_per_key", "pair_requests_before",
    "key_agent_requests_before", "public_address", "key_price_rise", "key_prompt_rise", "key_public_shift",
)


def features_step() -> Step:
    from forensics.analysis.incident import private_ip_sql

    private = private_ip_sql("ip")
    return Step("detector_features", f"""
        WITH r AS (
            SELECT r.request_id, r.start_time, r.key_hash, coalesce(r.client_ip, '?') AS ip,
                   coalesce(r.user_agent, '?') AS agent, r.status,
                   (r.status = 'failure' AND r.error_code IN ('401', '403')) AS auth_failure,
                   coalesce(r.prompt_tokens, 0) AS prompt_tokens, coalesce(r.completion_tokens, 0) AS completion_tokens,
                   coalesce(r.max_tokens, 0) AS max_tokens, coalesce(CAST(p.output_mtok AS DOUBLE), 0) AS output_price_mtok,
                   epoch(r.start_time) AS t
            FROM llm_requests r
            LEFT JOIN prices p ON p.provider = coalesce(r.provider, '')
                 AND p.model = coalesce(nullif(r.model, ''), r.model_group) AND p.day = CAST(r.start_time AS DATE)
            WHERE r.start_time IS NOT NULL
        ), firsts AS (
            SELECT *,
                   min(t) OVER (PARTITION BY key_hash) AS key_first, min(t) OVER (PARTITION BY ip) AS ip_first,
                   min(t) OVER (PARTITION BY agent) AS agent_first,
                   min(t) OVER (PARTITION BY ip, key_hash) AS pair_first
            FROM r
        )
        SELECT request_id, start_time,
               prompt_tokens, completion_tokens, max_tokens, output_price_mtok,
               completion_tokens / (prompt_tokens + 1.0) AS completion_per_prompt,
               hour(start_time) AS hour_of_day, isodow(start_time) AS weekday,
               CAST(key_hash IS NULL AS INTEGER) AS keyless,
               CASE WHEN key_hash IS NULL THEN 0 ELSE (t - key_first) / 3600 END AS key_age_hours,
               CASE WHEN key_hash IS NULL THEN 0 ELSE count(*) OVER (PARTITION BY key_hash ORDER BY t, request_id
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) END AS key_requests_before,
               (t - ip_first) / 3600 AS ip_age_hours,
               count(*) OVER (PARTITION BY ip ORDER BY t, request_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                   AS ip_requests_before,
               (t - agent_first) / 3600 AS agent_age_hours,
               count(*) OVER (PARTITION BY ip ORDER BY t RANGE BETWEEN 60 PRECEDING AND CURRENT ROW) AS ip_rate_1m,
               count(*) OVER (PARTITION BY ip ORDER BY t RANGE BETWEEN 900 PRECEDING AND CURRENT ROW) AS ip_rate_15m,
               CASE WHEN key_hash IS NULL THEN 0 ELSE count(*) OVER (PARTITION BY key_hash ORDER BY t
                    RANGE BETWEEN 60 PRECEDING AND CURRENT ROW) END AS key_rate_1m,
               CASE WHEN key_hash IS NULL THEN 0 ELSE count(*) OVER (PARTITION BY key_hash ORDER BY t
                    RANGE BETWEEN 900 PRECEDING AND CURRENT ROW) END AS key_rate_15m,
               avg(CAST(status = 'failure' AS INTEGER)) OVER (PARTITION BY ip ORDER BY t
                    RANGE BETWEEN 900 PRECEDING AND CURRENT ROW) AS ip_error_rate_15m,
               sum(CAST(auth_failure AS INTEGER)) OVER (PARTITION BY ip ORDER BY t
                    RANGE BETWEEN 900 PRECEDING AND CURRENT ROW) AS ip_auth_failures_15m,
               -- distinct keys an address has used so far, and addresses a key has come from: count first sightings
               sum(CAST(t = pair_first AND key_hash IS NOT NULL AS INTEGER)) OVER (PARTITION BY ip ORDER BY t, request_id
                    ROWS UNBOUNDED PRECEDING) AS keys_per_ip,
               CASE WHEN key_hash IS NULL THEN 0 ELSE sum(CAST(t = pair_first AS INTEGER)) OVER (
                    PARTITION BY key_hash ORDER BY t, request_id ROWS UNBOUNDED PRECEDING) END AS ips_per_key,
               CASE WHEN key_hash IS NULL THEN 0 ELSE count(*) OVER (PARTITION BY key_hash, ip ORDER BY t, request_id
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) END AS pair_requests_before,
               CASE WHEN key_hash IS NULL THEN 0 ELSE count(*) OVER (PARTITION BY key_hash, agent ORDER BY t, request_id
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) END AS key_agent_requests_before,
               CAST(NOT {private} AS INTEGER) AS public_address,
               -- the key against its own past, one-sided: what makes it cost more than it used to. A dearer model,
               -- bigger prompts, a public address where it used private ones (a keyless request, or a key's first,
               -- has no past: 0)
               CASE WHEN key_hash IS NULL THEN 0 ELSE coalesce(greatest(0, log2((output_price_mtok + 0.01) / (
                    avg(output_price_mtok) OVER (PARTITION BY key_hash ORDER BY t, request_id
                                                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + 0.01))), 0) END
                   AS key_price_rise,
               CASE WHEN key_hash IS NULL THEN 0 ELSE coalesce(greatest(0, log2((prompt_tokens + 1.0) / (
                    avg(prompt_tokens) OVER (PARTITION BY key_hash ORDER BY t, request_id
                                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + 1.0))), 0) END
                   AS key_prompt_rise,
               CASE WHEN key_hash IS NULL THEN 0 ELSE coalesce(greatest(0, CAST(NOT {private} AS INTEGER) -
                    avg(CAST(NOT {private} AS INTEGER)) OVER (PARTITION BY key_hash ORDER BY t, request_id
                                                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)), 0) END
                   AS key_public_shift
        FROM firsts
        ORDER BY start_time, request_id
    """)


def build_features(case: Case) -> pd.DataFrame:
    """Features of every request in the case, ordered by start time (request_id, start_time, then FEATURES)."""
    frame = case.query(features_step())
    return frame
