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


# nginx error-log classes (forensics.sources.nginx.error_log.CLASSES) the timeline counts
REJECTED = ("limit_req", "limit_conn")
UPSTREAM_FAILED = ("upstream_timed_out", "connect_failed", "upstream_prematurely_closed", "no_live_upstreams")


@dataclass
class Timeline:
    minutes: pd.DataFrame      # minute, requests, successful, throttled, cost_usd, addresses
    phases: pd.DataFrame       # phase, start, end, requests, cost_usd
    campaigns: pd.DataFrame    # campaign, addresses, user_agent, model, max_tokens, prompt_size, requests, ...
    first_last_by_key: pd.DataFrame
    # nginx's error log over the incident's minutes (empty without one): per minute, and per class as events
    nginx_minutes: pd.DataFrame | None = None   # minute, rejected, rejected_addresses, upstream_failures
    nginx_events: pd.DataFrame | None = None    # class, entries, first, last, addresses, zones


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def nginx_minutes_step(name: str) -> Step:
    """nginx's own word on each minute of [?, ?): requests it rejected (limit_req, limit_conn) and upstream failures
    (timeouts, refused connections, upstreams that closed early or were all down), from its error log."""
    return Step(name, f"""
        SELECT date_trunc('minute', time) AS minute,
               count(*) FILTER (WHERE class IN {_in(REJECTED)}) AS rejected,
               count(DISTINCT client_ip) FILTER (WHERE class IN {_in(REJECTED)}) AS rejected_addresses,
               count(*) FILTER (WHERE class IN {_in(UPSTREAM_FAILED)}) AS upstream_failures
        FROM nginx_errors
        WHERE time >= ? AND time < ? AND class IN {_in(REJECTED + UPSTREAM_FAILED)}
        GROUP BY ALL ORDER BY minute
    """)


def nginx_events_step(name: str) -> Step:
    """The error log's entries over [?, ?) per class, as events: how many, first and last, addresses, zones."""
    return Step(name, f"""
        SELECT class, count(*) AS entries, min(time) AS first, max(time) AS last,
               count(DISTINCT client_ip) AS addresses, list(DISTINCT zone ORDER BY zone) FILTER (WHERE zone IS NOT NULL)
               AS zones
        FROM nginx_errors
        WHERE time >= ? AND time < ? AND class <> 'other'
        GROUP BY class ORDER BY first, class
    """)


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


def has_error_log(case: Case) -> bool:
    """Whether the case holds nginx error-log entries (a case of schema version 2 has no such table)."""
    return case.has_table("nginx_errors") and bool(case.execute("SELECT count(*) > 0 FROM nginx_errors").fetchone()[0])


def timeline(case: Case, incident_table: str, prefix: str) -> Timeline:
    minutes = case.query(minutes_step(incident_table, f"{prefix}_minutes"))
    result = Timeline(
        minutes=minutes, phases=phases(minutes),
        campaigns=case.query(campaigns_step(incident_table, f"{prefix}_campaigns")),
        first_last_by_key=case.query(first_last_by_key_step(incident_table, f"{prefix}_keys_first_last")),
    )
    if has_error_log(case):
        [(start, end)] = case.execute(
            f"SELECT date_trunc('minute', min(start_time)), date_trunc('minute', max(coalesce(end_time, start_time))) "
            f"+ INTERVAL 1 MINUTE FROM llm_requests JOIN {incident_table} USING (request_id)").fetchall()
        if start is not None:
            result.nginx_minutes = case.query(nginx_minutes_step(f"{prefix}_nginx_minutes"), [start, end])
            result.nginx_events = case.query(nginx_events_step(f"{prefix}_nginx_events"), [start, end])
    return result
