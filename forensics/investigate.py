"""The whole investigation over one case: incidents, attribution, reconciliation, projection, controls, coverage.

A library first: the report, the notebooks and the evidence bundle all call `investigate`.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from decimal import Decimal

from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis import (attribution, controls, coverage, joins, limits, projection, reconcile, series,
                                timeline)
from forensics.analysis.incident import Incident
from forensics.analysis.incidents import find_incidents
from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case


@dataclass
class IncidentFindings:
    incident: Incident
    cost_usd: Decimal
    request_ids: list[str]
    by_ip: pd.DataFrame
    by_key: pd.DataFrame
    by_model: pd.DataFrame
    by_user_agent: pd.DataFrame
    projection: projection.Projection | None
    controls: list
    controls_frame: pd.DataFrame | None
    timeline: timeline.Timeline | None = None
    provider_buckets: pd.DataFrame | None = None   # usage outside the proxy: bucket_start, cost_usd
    provider: str | None = None                      # usage outside the proxy: whose bill, and which key id
    provider_key_id: str | None = None
    series: series.IncidentSeries | None = None      # what its timeline figure and hourly table draw
    limits: pd.DataFrame | None = None               # nginx limits in force during it (error log; limits.limits_seen)


@dataclass
class Investigation:
    coverage: coverage.Coverage
    baseline: dict
    incidents: list[IncidentFindings]
    cost_total: Decimal
    by_model: pd.DataFrame
    by_key: pd.DataFrame
    by_ip: pd.DataFrame
    by_user_agent: pd.DataFrame
    reconciliation: list[reconcile.Reconciliation]
    nginx_match: pd.DataFrame | None = None
    repricing: pd.DataFrame | None = None
    band: pd.Series | None = None                    # the band of normal minutes (figures)
    files: list[dict] = field(default_factory=list)  # ingest_files rows loaded, in file order
    logs_end: object = None                          # the last LiteLLM request's end (or start)
    quarantine: list[tuple] = field(default_factory=list)   # (sha256, reason, records, first line, path)
    extra: dict = field(default_factory=dict)


def baseline_step(claimed: str) -> Step:
    """Proxy spend and requests per clock hour, averaged over the hours the LiteLLM logs cover that hold no
    incident request (quiet hours count as zero)."""
    return Step("baseline", f"""
        WITH hours AS (
            SELECT unnest(generate_series(date_trunc('hour', min(start_time)), date_trunc('hour', max(start_time)),
                                          INTERVAL 1 HOUR)) AS hour
            FROM llm_requests
        ), incident_hours AS (
            SELECT DISTINCT date_trunc('hour', r.start_time) AS hour FROM llm_requests r JOIN {claimed} USING (request_id)
        ), per_hour AS (
            SELECT date_trunc('hour', start_time) AS hour, coalesce(sum(cost_usd), 0) AS cost, count(*) AS n
            FROM llm_requests GROUP BY ALL
        )
        SELECT avg(coalesce(p.cost, 0)) AS cost_per_hour_usd, avg(coalesce(p.n, 0)) AS requests_per_hour,
               count(*) AS hours, min(h.hour) AS start, max(h.hour) + INTERVAL 1 HOUR AS "end"
        FROM hours h LEFT JOIN per_hour p USING (hour)
        WHERE h.hour NOT IN (SELECT hour FROM incident_hours)
    """)


def _incident_findings(case: Case, inc: Incident, control_set, claimed: str) -> IncidentFindings:
    ids = [r for (r,) in case.execute(f"SELECT request_id FROM {inc.table} ORDER BY request_id").fetchall()]
    (cost,) = case.execute(
        f"SELECT coalesce(sum(cost_usd), 0) FROM llm_requests JOIN {inc.table} USING (request_id)").fetchone()
    n = inc.id.split("-")[1]
    frames = {d: attribution.cost_by(case, d, inc.table, f"incident_{n}_cost_by_{d}")
              for d in ("ip", "key", "model", "user_agent")}
    proj = projection.project(case, ids)
    results, frame = controls.replay(case, ids, control_set, claimed=claimed)
    return IncidentFindings(inc, Decimal(cost), ids, frames["ip"], frames["key"], frames["model"],
                            frames["user_agent"], proj, results, frame,
                            timeline.timeline(case, inc.table, f"incident_{n}"),
                            limits=limits.limits_seen(case, inc.start, inc.end))


OUTSIDE_MIN_USD = Decimal(1)     # less spend outside the proxy is reported in the reconciliation, not as an incident
OUTSIDE_SPIKE_FACTOR = 4         # a session of outside-proxy use at this many times the median session's rate


def _split_spikes(buckets: pd.DataFrame, minutes: int) -> list[tuple[str, pd.DataFrame]]:
    """A key's outside-proxy buckets cut into sessions at quiet gaps (an hour, or three buckets); sessions spending
    OUTSIDE_SPIKE_FACTOR times the median session's rate are each a ('spike', buckets), the rest together one
    ('trickle', buckets). One session, or none standing out: all of it one spike (today's single incident)."""
    b = buckets.sort_values("bucket_start").reset_index(drop=True)
    width = pd.Timedelta(minutes=minutes)
    gap = max(pd.Timedelta(hours=1), 3 * width)
    session = (b["bucket_start"].diff() > gap).cumsum()
    groups = [g.reset_index(drop=True) for _, g in b.groupby(session, sort=True)]
    if len(groups) < 2:
        return [("spike", b)]

    def rate(g: pd.DataFrame) -> Decimal:
        hours = Decimal(str(((g["bucket_start"].max() - g["bucket_start"].min() + width) / pd.Timedelta(hours=1))))
        return sum((Decimal(str(c)) for c in g["cost_usd"]), Decimal(0)) / hours

    rates = [rate(g) for g in groups]
    bar = statistics.median(rates) * OUTSIDE_SPIKE_FACTOR
    spikes = [g for g, r in zip(groups, rates) if r >= bar]
    if not spikes:
        return [("spike", b)]
    rest = [g for g, r in zip(groups, rates) if r < bar]
    return [("spike", g) for g in spikes] + [("trickle", pd.concat(rest, ignore_index=True))]


def _outside_incidents(recs: list[reconcile.Reconciliation], first_number: int, control_set) -> list[IncidentFindings]:
    """Provider key usage the proxy never saw, per key id: each spike an incident (attack), a steady trickle beside
    it another (suspicious); windows and cost from the provider's data."""
    out = []
    for rec in recs:
        for k in rec.outside_proxy:
            if k["cost_usd"] < OUTSIDE_MIN_USD:
                continue
            parts = _split_spikes(k["buckets"], k["bucket_minutes"])
            for part, buckets in parts:
                cost = sum((Decimal(str(c)) for c in buckets["cost_usd"]), Decimal(0))
                if cost < OUTSIDE_MIN_USD or (part == "trickle" and not cost):
                    continue
                share = cost / k["cost_usd"] if k["cost_usd"] else Decimal(1)
                requests = int(round(k["requests"] * share)) if len(parts) > 1 else k["requests"]
                n = first_number + len(out)
                inc = Incident(f"INC-{n}", "provider_key_outside_proxy",
                               "attack" if part == "spike" else "suspicious", "reconciliation",
                               buckets["bucket_start"].min().to_pydatetime(),
                               buckets["bucket_start"].max().to_pydatetime(), requests,
                               sources=[rec.provider, "litellm"])
                what = ("" if len(parts) == 1 else " in a spike far above its usual outside-proxy use"
                        if part == "spike" else " as a steady trickle beside the spike (a script or a colleague "
                                                "using the key directly?)")
                inc.evidence.append(
                    f"{rec.provider} key {k['api_key_id']}: usage ({', '.join(k['models'])}) that no proxy request "
                    f"accounts for{what}, ${float(cost):,.2f} at list prices; only the provider saw it")
                costs = {b.to_pydatetime(): c for b, c in zip(buckets["bucket_start"], buckets["cost_usd"])}
                proj = projection.project_buckets(costs, k["bucket_minutes"])
                empty = pd.DataFrame()
                unseen = [controls.ControlResult(c.id, cost, Decimal(0), 0)
                          for c in control_set]   # the proxy's controls never see this traffic
                by_model = k["by_model"] if len(parts) == 1 else pd.DataFrame()
                out.append(IncidentFindings(inc, cost, [], empty, empty, by_model, empty, proj, unseen, None,
                                            provider_buckets=buckets, provider=rec.provider,
                                            provider_key_id=k["api_key_id"]))
    return out


def _nginx_findings(case: Case) -> list[IncidentFindings]:
    from forensics.analysis.nginx_incidents import find_nginx_incidents

    empty = pd.DataFrame()
    return [IncidentFindings(n.incident, Decimal(0), [], n.by_ip, empty, empty, n.by_user_agent, None, [], None)
            for n in find_nginx_incidents(case)]


def _provider_spike_findings(case: Case) -> list[IncidentFindings]:
    from forensics.analysis.provider_spikes import find_provider_spikes

    empty = pd.DataFrame()
    out = []
    for s in find_provider_spikes(case):
        costs = {b.to_pydatetime(): c for b, c in zip(s.buckets["bucket_start"], s.buckets["cost_usd"])}
        out.append(IncidentFindings(s.incident, s.cost_usd, [], empty, empty, s.by_model, empty,
                                    projection.project_buckets(costs, s.bucket_minutes), [], None,
                                    provider_buckets=s.buckets, provider=s.provider, provider_key_id=s.key_id))
    return out


def _sources_of(case: Case, found: list[IncidentFindings], join: str) -> None:
    """A proxy incident whose requests nginx also logged rests on nginx too."""
    for f in found:
        if f.incident.table and "nginx" not in f.incident.sources:
            (matched,) = case.execute(f"SELECT count(*) FROM {join} j SEMI JOIN {f.incident.table} USING (request_id) "
                                      "WHERE j.matched_by <> 'none'").fetchone()
            if matched:
                f.incident.sources.append("nginx")


def investigate(case: Case, control_set=None) -> Investigation:
    """Run every analysis on `case`; temp tables only: the case itself is never written (it may be read-only)."""
    control_set = list(control_set) if control_set is not None else list(controls.DEFAULT_CONTROLS)
    cov = coverage.coverage(case)
    search = find_incidents(case)
    found = [_incident_findings(case, inc, control_set, search.claimed) for inc in search.incidents]
    base = case.query(baseline_step(search.claimed)).iloc[0].to_dict()
    recs = reconcile.reconcile(case)
    found += _outside_incidents(recs, len(found) + 1, control_set)
    found += _nginx_findings(case) + _provider_spike_findings(case)
    nginx_match = joins.join_nginx(case)
    _sources_of(case, found, case.table("nginx_to_litellm"))
    found.sort(key=lambda f: f.incident.start)
    for i, f in enumerate(found, start=1):
        f.incident.id = f"INC-{i}"
    band, per_incident = series.series(case, found)
    for f in found:
        f.series = per_incident.get(f.incident.id)
    (total, logs_end) = case.execute(
        "SELECT coalesce(sum(cost_usd), 0), max(coalesce(end_time, start_time)) FROM llm_requests").fetchone()
    result = case.execute("""
        SELECT file_id, path, sha256, size_bytes, format, records, loaded, quarantined, started_at, message
        FROM ingest_files WHERE status = 'loaded' ORDER BY file_id""")
    columns = [d[0] for d in result.description]
    files = [dict(zip(columns, row)) for row in result.fetchall()]
    quarantine = case.execute("""
        SELECT f.sha256, q.reason, count(*) AS n, min(q.record_no) AS first_line, f.path
        FROM quarantine q JOIN ingest_files f USING (file_id) GROUP BY ALL ORDER BY f.path, n DESC, q.reason
    """).fetchall()
    return Investigation(
        coverage=cov, baseline=base, incidents=found, cost_total=Decimal(total),
        by_model=attribution.cost_by(case, "model"), by_key=attribution.cost_by(case, "key"),
        by_ip=attribution.cost_by(case, "ip"), by_user_agent=attribution.cost_by(case, "user_agent"),
        reconciliation=recs,
        nginx_match=nginx_match,
        repricing=case.query(attribution.repricing_difference_step(None)),
        band=band, files=files, quarantine=quarantine, logs_end=logs_end,
    )
