"""The time series the figures and the evidence bundle draw: per-minute traffic around each incident, the band of
normal minutes, the busiest addresses' requests, and cost per hour over the incident's days.

Computed here, in named SQL steps, so the documents only render them and steps.sql shows the SQL behind each figure.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case

CONTEXT_BEFORE = timedelta(minutes=60)     # the timeline shows the hour before the incident...
CONTEXT_AFTER = timedelta(minutes=30)      # ... and half an hour after it
MAX_LANES = 30                             # swimlanes: the busiest addresses, readable at a glance
BAND = (0.05, 0.95)                        # the baseline band: 5th to 95th percentile of quiet minutes


@dataclass
class IncidentSeries:
    """An incident's figures' data: `prefix` names its steps (figure_<prefix>_minutes, ...)."""

    prefix: str
    minutes: pd.DataFrame       # minute, incident_requests, other_requests, incident_failed, incident/other_cost_usd
    lanes: pd.DataFrame         # lane, first_seen, start_time, status
    hourly: pd.DataFrame        # hour, incident_requests, other_requests, incident_cost_usd, other_cost_usd


def incident_prefix(incident_id: str) -> str:
    return incident_id.lower().replace("-", "_")


def baseline_band_step(incident_tables: list[str]) -> Step:
    """Requests and cost per minute over every minute the LiteLLM logs cover outside all incidents (quiet minutes
    count as zero): the 5th and 95th percentiles draw the band of normal."""
    claimed = " UNION ALL ".join(f"SELECT request_id FROM {t}" for t in incident_tables) or \
        "SELECT NULL::VARCHAR AS request_id WHERE false"
    return Step("figure_baseline_band", f"""
        WITH minutes AS (
            SELECT unnest(generate_series(date_trunc('minute', min(start_time)), date_trunc('minute', max(start_time)),
                                          INTERVAL 1 MINUTE)) AS minute
            FROM llm_requests
        ), incident_minutes AS (
            SELECT DISTINCT date_trunc('minute', r.start_time) AS minute
            FROM llm_requests r JOIN ({claimed}) c USING (request_id)
        ), per_minute AS (
            SELECT date_trunc('minute', start_time) AS minute, count(*) AS requests,
                   CAST(coalesce(sum(cost_usd), 0) AS DOUBLE) AS cost_usd
            FROM llm_requests GROUP BY ALL
        ), quiet AS (
            SELECT coalesce(p.requests, 0) AS requests, coalesce(p.cost_usd, 0) AS cost_usd
            FROM minutes m LEFT JOIN per_minute p USING (minute)
            WHERE m.minute NOT IN (SELECT minute FROM incident_minutes)
        )
        SELECT quantile_cont(requests, {BAND[0]}) AS requests_low, quantile_cont(requests, {BAND[1]}) AS requests_high,
               quantile_cont(cost_usd, {BAND[0]}) AS cost_low, quantile_cont(cost_usd, {BAND[1]}) AS cost_high,
               count(*) AS minutes
        FROM quiet
    """)


def baseline_band(case: Case, id_tables: list[str]) -> pd.Series:
    """The band of normal minutes, every incident (by its request-id tables) left out."""
    return case.query(baseline_band_step(id_tables)).iloc[0]


def window_minutes_step(prefix: str, incident_table: str) -> Step:
    """All proxy traffic per minute from an hour before the incident to half an hour after, split into the
    incident's own requests and the rest."""
    return Step(f"figure_{prefix}_minutes", f"""
        WITH bounds AS (
            SELECT date_trunc('minute', min(r.start_time)) - INTERVAL {int(CONTEXT_BEFORE.total_seconds() // 60)} MINUTE AS lo,
                   date_trunc('minute', max(r.start_time)) + INTERVAL {int(CONTEXT_AFTER.total_seconds() // 60)} MINUTE AS hi
            FROM llm_requests r JOIN {incident_table} USING (request_id)
        ), minutes AS (
            SELECT unnest(generate_series(lo, hi, INTERVAL 1 MINUTE)) AS minute FROM bounds
        ), tagged AS (
            SELECT date_trunc('minute', r.start_time) AS minute, i.request_id IS NOT NULL AS in_incident,
                   r.status, coalesce(r.cost_usd, 0) AS cost_usd
            FROM llm_requests r LEFT JOIN {incident_table} i USING (request_id), bounds
            WHERE r.start_time >= bounds.lo AND r.start_time < bounds.hi + INTERVAL 1 MINUTE
        )
        SELECT m.minute,
               count(t.minute) FILTER (WHERE t.in_incident) AS incident_requests,
               count(t.minute) FILTER (WHERE NOT t.in_incident) AS other_requests,
               count(t.minute) FILTER (WHERE t.in_incident AND t.status <> 'success') AS incident_failed,
               CAST(coalesce(sum(t.cost_usd) FILTER (WHERE t.in_incident), 0) AS DOUBLE) AS incident_cost_usd,
               CAST(coalesce(sum(t.cost_usd) FILTER (WHERE NOT t.in_incident), 0) AS DOUBLE) AS other_cost_usd
        FROM minutes m LEFT JOIN tagged t USING (minute)
        GROUP BY m.minute ORDER BY m.minute
    """)


def swimlanes_step(prefix: str, incident_table: str) -> Step:
    """Each request of the busiest addresses of the incident (by requests, then address): time and outcome."""
    return Step(f"figure_{prefix}_swimlanes", f"""
        WITH reqs AS (
            SELECT r.client_ip, r.start_time, r.status FROM llm_requests r JOIN {incident_table} USING (request_id)
        ), top AS (
            SELECT coalesce(client_ip, '(unknown)') AS lane, count(*) AS n, min(start_time) AS first_seen
            FROM reqs GROUP BY ALL ORDER BY n DESC, lane LIMIT {MAX_LANES}
        )
        SELECT t.lane, t.first_seen, r.start_time, r.status
        FROM reqs r JOIN top t ON coalesce(r.client_ip, '(unknown)') = t.lane
        ORDER BY t.first_seen, t.lane, r.start_time
    """)


def hourly_cost_step(prefix: str, incident_table: str) -> Step:
    """Proxy cost per UTC hour over the incident's day(s), the incident's share apart."""
    return Step(f"figure_{prefix}_hourly", f"""
        WITH span AS (
            SELECT date_trunc('day', min(r.start_time)) AS lo,
                   date_trunc('day', max(r.start_time)) + INTERVAL 1 DAY AS hi
            FROM llm_requests r JOIN {incident_table} USING (request_id)
        ), hours AS (
            SELECT unnest(generate_series(lo, hi - INTERVAL 1 HOUR, INTERVAL 1 HOUR)) AS hour FROM span
        ), per_hour AS (
            SELECT date_trunc('hour', r.start_time) AS hour,
                   coalesce(sum(r.cost_usd) FILTER (WHERE i.request_id IS NOT NULL), 0) AS incident_cost_usd,
                   coalesce(sum(r.cost_usd) FILTER (WHERE i.request_id IS NULL), 0) AS other_cost_usd,
                   count(*) FILTER (WHERE i.request_id IS NOT NULL) AS incident_requests,
                   count(*) FILTER (WHERE i.request_id IS NULL) AS other_requests
            FROM llm_requests r LEFT JOIN {incident_table} i USING (request_id), span
            WHERE r.start_time >= span.lo AND r.start_time < span.hi
            GROUP BY ALL
        )
        SELECT h.hour, coalesce(p.incident_requests, 0) AS incident_requests,
               coalesce(p.other_requests, 0) AS other_requests,
               coalesce(p.incident_cost_usd, 0) AS incident_cost_usd, coalesce(p.other_cost_usd, 0) AS other_cost_usd
        FROM hours h LEFT JOIN per_hour p USING (hour) ORDER BY h.hour
    """)


def incident_series(case: Case, incident_id: str, ids_table: str) -> IncidentSeries:
    prefix = incident_prefix(incident_id)
    return IncidentSeries(prefix, case.query(window_minutes_step(prefix, ids_table)),
                          case.query(swimlanes_step(prefix, ids_table)),
                          case.query(hourly_cost_step(prefix, ids_table)))


def series(case: Case, incidents) -> tuple[pd.Series | None, dict[str, IncidentSeries]]:
    """The baseline band and each proxy incident's series (by incident id); no band when no incident has requests."""
    tables = {f.incident.id: case.load_ids(f"figure_{incident_prefix(f.incident.id)}_ids", f.request_ids)
              for f in incidents if f.request_ids}
    if not tables:
        return None, {}
    band = baseline_band(case, list(tables.values()))
    return band, {i: incident_series(case, i, t) for i, t in tables.items()}
