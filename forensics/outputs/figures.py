"""The figures of the report, the evidence bundle and the notebooks: matplotlib, labelled with units and UTC.

Rendering only: every number drawn comes from the investigation's results (analysis/series.py computes the time
series in named SQL steps, so the report's appendix can print the SQL behind each figure). PNGs are written without
a timestamp or software tag, so the same case gives the same bytes.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 100
STYLE = {"axes.grid": True, "grid.alpha": 0.3, "font.size": 9, "axes.titlesize": 10}


@dataclass
class Figure:
    name: str                      # file stem, e.g. inc-1_timeline
    title: str
    caption: str                   # what the reader should see, in words
    png: bytes
    steps: list[str] = field(default_factory=list)   # the SQL steps behind it (names in the case's step log)


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _shade(ax, start, end):
    ax.axvspan(start, end, color="tab:red", alpha=0.08, lw=0, label="incident")


def timeline_figure(finding, band: pd.Series) -> Figure | None:
    """Requests and cost per minute around the incident with the baseline band, the incident shaded, and a swimlane
    per client address. None for an incident without proxy requests (see provider_figure)."""
    if not finding.request_ids or finding.series is None:
        return None
    inc = finding.incident
    prefix = finding.series.prefix
    minutes, lanes = finding.series.minutes, finding.series.lanes
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
