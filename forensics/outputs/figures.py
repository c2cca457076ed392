"""The figures of the report, the evidence bundle and the notebooks: matplotlib, labelled with units and UTC.

Every number drawn comes from a named SQL step (so the report's appendix can print the SQL behind each figure) or
from the investigation's own results. PNGs are written without a timestamp or software tag, so the same case gives
the same bytes.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import timedelta

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from forensics.analysis.steps import Step, load_request_ids, query_step  # noqa: E402

CONTEXT_BEFORE = timedelta(minutes=60)     # the timeline shows the hour before the incident...
CONTEXT_AFTER = timedelta(minutes=30)      # ... and half an hour after it
MAX_LANES = 30                             # swimlanes: the busiest addresses, readable at a glance
BAND = (0.05, 0.95)                        # the baseline band: 5th to 95th percentile of quiet minutes
DPI = 100
STYLE = {"axes.grid": True, "grid.alpha": 0.3, "font.size": 9, "axes.titlesize": 10}


@dataclass
class Figure:
    name: str                      # file stem, e.g. inc-1_timeline
    title: str
    caption: str                   # what the reader should see, in words
    png: bytes
    steps: list[str] = field(default_factory=list)   # the SQL steps behind it (names in STEP_LOG)


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


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


def baseline_band(con: duckdb.DuckDBPyConnection, inv) -> pd.Series:
    """The band of normal minutes, every incident of the investigation left out."""
    tables = []
    for f in inv.incidents:
        if f.request_ids:
            t = f"__f_figure_{f.incident.id.lower().replace('-', '_')}_ids"
            load_request_ids(con, t, f.request_ids)
            tables.append(t)
    return query_step(con, baseline_band_step(tables)).iloc[0]


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


def _shade(ax, start, end):
    ax.axvspan(start, end, color="tab:red", alpha=0.08, lw=0, label="incident")


def timeline_figure(con: duckdb.DuckDBPyConnection, finding, band: pd.Series) -> Figure | None:
    """Requests and cost per minute around the incident with the baseline band, the incident shaded, and a swimlane
    per client address. None for an incident without proxy requests (see provider_figure)."""
    if not finding.request_ids:
        return None
    inc = finding.incident
    prefix = inc.id.lower().replace("-", "_")
    table = f"__f_figure_{prefix}_ids"
    load_request_ids(con, table, finding.request_ids)
    minutes = query_step(con, window_minutes_step(prefix, table))
    lanes = query_step(con, swimlanes_step(prefix, table))
    n_lanes = lanes["lane"].nunique()
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(3, 1, figsize=(11, 7.5 + 0.16 * n_lanes), sharex=True,
                                 gridspec_kw={"height_ratios": [2, 2, max(2, 0.16 * n_lanes)]})
        ax_req, ax_cost, ax_lane = axes
        t = minutes["minute"]
        ok = minutes["incident_requests"] - minutes["incident_failed"]
        width = 1 / 1440
        ax_req.bar(t, minutes["other_requests"], width=width, align="edge", color="tab:gray", label="other traffic")
        ax_req.bar(t, ok, width=width, align="edge", bottom=minutes["other_requests"], color="tab:blue",
                   label="incident, served")
        ax_req.bar(t, minutes["incident_failed"], width=width, align="edge",
                   bottom=minutes["other_requests"] + ok, color="tab:orange", label="incident, failed (e.g. 429)")
        ax_req.axhspan(band["requests_low"], band["requests_high"], color="tab:green", alpha=0.2,
                       label="baseline 5th-95th pct")
        ax_req.set_ylabel("requests per minute")
        cost = minutes["incident_cost_usd"] + minutes["other_cost_usd"]
        ax_cost.step(t, cost, where="post", color="black", lw=1, label="all proxy spend")
        ax_cost.step(t, minutes["incident_cost_usd"], where="post", color="tab:red", lw=1, label="incident spend")
        ax_cost.axhspan(band["cost_low"], band["cost_high"], color="tab:green", alpha=0.2,
                        label="baseline 5th-95th pct")
        ax_cost.set_ylabel("cost per minute (USD)")
        order = lanes.drop_duplicates("lane")["lane"].tolist()
        pos = {ip: i for i, ip in enumerate(order)}
        for status, colour in (("success", "tab:blue"), ("failure", "tab:orange")):
            s = lanes[(lanes["status"] == "success") == (status == "success")]
            ax_lane.scatter(s["start_time"], s["lane"].map(pos), s=14, marker="|", color=colour,
                            label="served" if status == "success" else "failed")
        ax_lane.set_yticks(range(len(order)), order, fontsize=7)
        ax_lane.set_ylim(len(order) - 0.5, -0.5)
        ax_lane.set_ylabel("client address")
        ax_lane.set_xlabel("time (UTC)")
        n_ips = len(finding.by_ip) if finding.by_ip is not None else n_lanes
        ax_lane.set_title(f"requests per address: {n_lanes} busiest of {n_ips} addresses", loc="left")
        for ax in axes:
            _shade(ax, inc.start, inc.end)
        ax_req.legend(loc="upper left", fontsize=7, ncol=3)
        ax_cost.legend(loc="upper left", fontsize=7, ncol=4)
        ax_lane.legend(loc="upper right", fontsize=7)
        ax_req.set_title(f"{inc.id} {inc.kind}: requests and cost per minute, "
                         f"{inc.start:%Y-%m-%d %H:%M} .. {inc.end:%H:%M} UTC", loc="left")
        fig.autofmt_xdate()
        png = png_bytes(fig)
    return Figure(f"{prefix}_timeline", f"{inc.id}: timeline",
                  "Requests and cost per minute from an hour before the incident (shaded) to half an hour after, "
                  "against the band of normal minutes; below, one lane per client address.",
                  png, ["figure_baseline_band", f"figure_{prefix}_minutes", f"figure_{prefix}_swimlanes"])


def provider_figure(finding) -> Figure | None:
    """Usage outside the proxy: the provider's cost per bucket for the key (no proxy request to draw)."""
    buckets = getattr(finding, "provider_buckets", None)
    if buckets is None or not len(buckets):
        return None
    inc = finding.incident
    prefix = inc.id.lower().replace("-", "_")
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(11, 3.5))
        ax.step(buckets["bucket_start"], buckets["cost_usd"].astype(float), where="post", color="tab:red")
        _shade(ax, inc.start, inc.end)
        ax.set_ylabel("cost per bucket (USD, list prices)")
        ax.set_xlabel("time (UTC)")
        ax.set_title(f"{inc.id} {inc.kind}: the provider's usage no proxy request accounts for", loc="left")
        fig.autofmt_xdate()
        png = png_bytes(fig)
    return Figure(f"{prefix}_provider_usage", f"{inc.id}: usage seen only by the provider",
                  "Cost per usage bucket of the provider key that the proxy never logged, priced at list prices.",
                  png, ["outside_usage_fine", "outside_usage_wide"])


def projection_figure(finding) -> Figure | None:
    """What the incident would have cost had nobody stopped it: 24 h, 7 d, 30 d with the bootstrap interval."""
    proj = finding.projection
    if proj is None or not proj.projected:
        return None
    inc = finding.incident
    prefix = inc.id.lower().replace("-", "_")
    horizons = list(proj.projected)
    mid = np.array([float(proj.projected[h]) for h in horizons])
    low = np.array([float(proj.low.get(h, proj.projected[h])) for h in horizons])
    high = np.array([float(proj.high.get(h, proj.projected[h])) for h in horizons])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 3.8))
        x = np.arange(len(horizons))
        ax.bar(x, mid, yerr=[mid - low, high - mid], capsize=5, color="tab:red", alpha=0.8,
               label=f"burn rate ${float(proj.rate_usd_per_hour):,.2f}/h x hours (95% bootstrap interval)")
        for xi, v in zip(x, mid):
            ax.annotate(f"${v:,.0f}", (xi, v), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
        ax.axhline(float(finding.cost_usd), color="black", lw=1, ls="--",
                   label=f"actual incident cost ${float(finding.cost_usd):,.2f}")
        ax.set_xticks(x, horizons)
        ax.set_yscale("log")
        ax.set_xlabel("horizon had the incident gone on unchecked")
        ax.set_ylabel("projected cost (USD, log scale)")
        ax.set_title(f"{inc.id}: runaway-cost projection", loc="left")
        ax.legend(loc="upper left", fontsize=7)
        png = png_bytes(fig)
    return Figure(f"{prefix}_projection", f"{inc.id}: projection",
                  "The incident's cost in its last 60 minutes, run on for a day, a week and a month; the whiskers "
                  "are the 2.5th and 97.5th percentiles of a bootstrap over its minutes.",
                  png, ["projection_incident", "projection_rate_window", "projection_burn_rate"])


def controls_figure(finding) -> Figure | None:
    """Saved vs still lost, per control replayed alone on the incident's own requests."""
    if not finding.controls:
        return None
    inc = finding.incident
    prefix = inc.id.lower().replace("-", "_")
    ctl = list(reversed(finding.controls))
    names = [c.control for c in ctl]
    saved = [float(c.saved_usd) for c in ctl]
    loss = [float(c.loss_usd) for c in ctl]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(9, 0.4 * len(ctl) + 1.4))
        ax.barh(names, saved, color="tab:green", label="saved")
        ax.barh(names, loss, left=saved, color="tab:red", label="still lost")
        for i, (s, lo) in enumerate(zip(saved, loss)):
            ax.annotate(f"${lo:,.2f} lost", (s + lo, i), textcoords="offset points", xytext=(4, -3), fontsize=7)
        ax.set_xlabel(f"incident cost (USD), {inc.id}")
        ax.set_ylabel("control, replayed alone")
        ax.set_title(f"{inc.id}: what each control would have saved", loc="left")
        ax.set_xlim(0, max(s + lo for s, lo in zip(saved, loss)) * 1.25 or 1)
        ax.legend(loc="lower right", fontsize=7)
        png = png_bytes(fig)
    return Figure(f"{prefix}_controls", f"{inc.id}: controls replay",
                  "Each control replayed alone on the incident's requests (and the traffic before it where a budget "
                  "or rate needs it): green is what it would have saved, red what the incident would still have "
                  "cost.", png, ["controls_incident", "controls_traffic", *[f"controls_{c.control}" for c in finding.controls],
                         "controls_summary"])


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
