"""An incident's course: per-minute activity, phases (ramp-up, plateau, provider 429s, stop) and campaigns.

A campaign is a set of addresses that act together: the same user agent, model, max_tokens and prompt size, active
in the same minutes. Everything here reads one incident's request-id table.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case

RAMP_SHARE = 0.8          # the ramp-up ends at the first minute reaching this share of the plateau rate
THROTTLED_SHARE = 0.1     # a minute with this share of provider 429s is in the throttled phase


@dataclass
class Timeline:
    minutes: pd.DataFrame      # minute, requests, successful, throttled, cost_usd, addresses
    phases: pd.DataFrame       # phase, start, end, requests, cost_usd
    campaigns: pd.DataFrame    # campaign, addresses, user_agent, model, max_tokens, prompt_size, requests, ...
    first_last_by_key: pd.DataFrame


def minutes_step(incident_table: str, name: str) -> Step:
    """Requests, successes, provider 429s, cost and active addresses per minute of the incident."""
    return Step(name, f"""
        SELECT date_trunc('minute', r.start_time) AS minute, count(*) AS requests,
               count(*) FILTER (WHERE r.status = 'success') AS successful,
               count(*) FILTER (WHERE r.error_code = '429' OR r.error_class ILIKE '%ratelimit%') AS throttled,
               coalesce(sum(r.cost_usd), 0) AS cost_usd, count(DISTINCT r.client_ip) AS addresses
        FROM llm_requests r JOIN {incident_table} USING (request_id)
        GROUP BY ALL ORDER BY minute
    """)


def campaigns_step(incident_table: str, name: str) -> Step:
    """Addresses grouped by what their requests look like; synchrony = share of the group's minutes each is in."""
    return Step(name, f"""
        WITH reqs AS (
            SELECT r.* FROM llm_requests r JOIN {incident_table} USING (request_id)
        ), per_ip AS (
            SELECT client_ip, mode(user_agent) AS user_agent, mode(coalesce(nullif(model_group, ''), model)) AS model,
                   mode(max_tokens) AS max_tokens,
                   CAST(round(log2(greatest(median(prompt_tokens), 1))) AS INTEGER) AS prompt_size_log2,
                   count(*) AS requests, coalesce(sum(cost_usd), 0) AS cost_usd,
                   min(start_time) AS first_seen, max(start_time) AS last_seen,
                   count(DISTINCT date_trunc('minute', start_time)) AS active_minutes
            FROM reqs GROUP BY client_ip
        ), grouped AS (
            SELECT dense_rank() OVER (ORDER BY user_agent, model, max_tokens, prompt_size_log2) AS campaign, *
            FROM per_ip
        ), span AS (
            SELECT g.campaign, count(DISTINCT date_trunc('minute', r.start_time)) AS campaign_minutes
            FROM grouped g JOIN reqs r USING (client_ip) GROUP BY ALL
        )
        SELECT campaign, count(*) AS addresses, any_value(user_agent) AS user_agent, any_value(model) AS model,
               any_value(max_tokens) AS max_tokens, any_value(prompt_size_log2) AS prompt_size_log2,
               sum(requests) AS requests, sum(cost_usd) AS cost_usd, min(first_seen) AS first_seen,
               max(last_seen) AS last_seen, avg(active_minutes / s.campaign_minutes) AS synchrony,
               list(client_ip ORDER BY client_ip) AS ips
        FROM grouped JOIN span s USING (campaign)
        GROUP BY campaign ORDER BY cost_usd DESC, campaign
    """)


def first_last_by_key_step(incident_table: str, name: str) -> Step:
    return Step(name, f"""
        SELECT key_hash, any_value(key_hint) AS key_hint, any_value(key_alias) AS key_alias, count(*) AS requests,
               min(start_time) AS first_seen, max(start_time) AS last_seen, count(DISTINCT client_ip) AS addresses
        FROM llm_requests JOIN {incident_table} USING (request_id)
        GROUP BY key_hash ORDER BY first_seen
    """)


def phases(minutes: pd.DataFrame) -> pd.DataFrame:
    """Cut the per-minute series into ramp-up, plateau, provider-429 and stop phases (rules in the module doc)."""
    cols = ["phase", "start", "end", "requests", "cost_usd"]
    if minutes.empty:
        return pd.DataFrame(columns=cols)
    m = minutes.reset_index(drop=True)
    plateau_rate = m["requests"].iloc[len(m) // 4: max(len(m) * 3 // 4, 1)].median()
    ramp_end = int(m.index[m["requests"] >= RAMP_SHARE * plateau_rate][0])
    throttled = m.index[(m["throttled"] >= THROTTLED_SHARE * m["requests"]) & (m["throttled"] > 0)]
    throttle_start = int(throttled[0]) if len(throttled) else len(m)
    cuts = [("ramp-up", 0, ramp_end), ("plateau", ramp_end, throttle_start), ("provider 429s", throttle_start, len(m))]
    rows = []
    for name, a, b in cuts:
        if b > a:
            part = m.iloc[a:b]
            rows.append((name, part["minute"].iloc[0], part["minute"].iloc[-1] + pd.Timedelta(minutes=1),
                         int(part["requests"].sum()), part["cost_usd"].sum()))
    last = m["minute"].iloc[-1] + pd.Timedelta(minutes=1)
    rows.append(("stop", last, last, 0, 0))
    return pd.DataFrame(rows, columns=cols)


def timeline(case: Case, incident_table: str, prefix: str) -> Timeline:
    minutes = case.query(minutes_step(incident_table, f"{prefix}_minutes"))
    return Timeline(
        minutes=minutes, phases=phases(minutes),
        campaigns=case.query(campaigns_step(incident_table, f"{prefix}_campaigns")),
        first_last_by_key=case.query(first_last_by_key_step(incident_table, f"{prefix}_keys_first_last")),
    )
