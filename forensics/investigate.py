"""The whole investigation over one case: incidents, attribution, reconciliation, projection, controls, coverage.

A library first: the report, the notebooks and the evidence bundle all call `investigate`.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis import (attribution, controls, coverage, joins, limits, projection, reconcile, series,
                                timeline)
from forensics.analysis.headline import Headline, headline
from forensics.analysis.incident import Incident
from forensics.analysis.incidents import SLOW_GAP_MINUTES, find_incidents
from forensics.analysis.steps import Step
from forensics.netaddr import is_internal
from forensics.progress import note, phase

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
    headline: Headline | None = None                 # the figures every document repeats (analysis/headline.py)
    limits: pd.DataFrame | None = None               # nginx limits in force during it (error log; limits.limits_seen)
    provider_series: dict | None = None              # a provider spike: its key's whole series {bucket_start: cost}
    provider_rows: pd.DataFrame | None = None        # ...per bucket and model: bucket_start, model, requests, cost_usd
    nginx_lines: str | None = None                   # an nginx incident: temp table of its lines (start_time, status)


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


def _split_spikes(buckets: pd.DataFrame, minutes: int, net: pd.DataFrame | None = None,
                  net_span: tuple[pd.DataFrame, int] | None = None, ranges: dict | None = None,
                  foreign: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """A key's outside-proxy buckets as ('spike', buckets) parts and at most one ('trickle', buckets): the spikes of
    its series against its own usual (provider_spikes.series_spikes: the same time on other days, refined to the
    export's buckets), the rest a trickle. Without such a spike: cut into sessions at quiet gaps (an hour, or three
    buckets), sessions spending OUTSIDE_SPIKE_FACTOR times the median session's rate each a spike, the rest a
    trickle; one session, or none standing out, all of it one spike. A first spike the export's first buckets run
    into without a quiet stretch (DETECTION_MINUTES of buckets, two at least) starts with them; a last spike that
    runs on so into the export's last buckets ends with them. `net`: the signed
    difference in every bucket the logs cover (zero where the proxy explains it all), the series searched when
    given: its quiet buckets are the baseline a key used only by the attacker lacks; `net_span`: (the same,
    minutes) from the export covering the longest time, searched when coarser. `foreign`: a key the proxy does not
    use; when it spent nothing before its first spike (the attacker's own key), what it spends after its last one is
    that spike thinning out, not a trickle beside it (matrix seed 4242 #145: a second key's calls one every few
    minutes for 1.7 hours after the script slowed, reported as a trickle: end 1.7 hours early, -11 %)."""
    from forensics.analysis.provider_spikes import quiet_between, filled, series_spikes

    b = buckets.sort_values("bucket_start").reset_index(drop=True)
    width = pd.Timedelta(minutes=minutes)
    ranges = ranges or {}
    series = filled(b, width)
    if net is not None and len(net):
        series = {t: max(c, Decimal(0)) for t, c in filled(net.sort_values("bucket_start"), width,
                                                            *ranges.get("net", (None, None))).items()}
    longer = None
    if net_span is not None and len(net_span[0]):
        span_width = pd.Timedelta(minutes=net_span[1])
        longer = ({t: max(c, Decimal(0)) for t, c in filled(net_span[0].sort_values("bucket_start"), span_width,
                                                             *ranges.get("span", (None, None))).items()}, span_width)
    _, spans = series_spikes(series, width, against_busy=False, longer=longer)
    if spans and series:
        # spend from the export's first bucket into the first spike without a quiet stretch between (what ends a
        # spike): the export began while the spike ramped up (nothing before it says what the key usually
        # spends), not a trickle; the same from the last spike to the export's last bucket (it ended while the
        # spike ran down)
        nothing = dict.fromkeys(series, Decimal(0))      # a quiet bucket: one that spent nothing
        first, last = min(series), max(series)
        if first < spans[0][0] and not quiet_between(series, nothing, width, first - width, spans[0][0]):
            spans[0] = (first, spans[0][1])
        if spans[-1][1] < last and not quiet_between(series, nothing, width, spans[-1][1], last + width):
            spans[-1] = (spans[-1][0], last)
        after = [t for t, c in series.items() if c and t > spans[-1][1]] if foreign else []
        if after and not any(c for t, c in series.items() if t < spans[0][0]):
            spans[-1] = (spans[-1][0], max(after))
    if spans:
        inside = pd.Series(False, index=b.index)
        parts = []
        for first, last in spans:
            mine = (b["bucket_start"] >= first) & (b["bucket_start"] <= last)
            inside |= mine
            parts.append(("spike", b[mine].reset_index(drop=True)))
        rest = b[~inside].reset_index(drop=True)
        return parts + ([("trickle", rest)] if len(rest) else [])
    return _sessions(b, minutes)


def _sessions(b: pd.DataFrame, minutes: int) -> list[tuple[str, pd.DataFrame]]:
    """Outside-proxy buckets cut at quiet gaps; sessions far above the median session's rate are spikes."""
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


def _trickle_rate(net: pd.DataFrame, spikes: list[tuple], buckets: pd.DataFrame, span=(None, None)) -> Decimal:
    """The key's usual outside-proxy spend per hour: the signed difference outside its spikes, over the time the
    export covers (`span`: its first and last bucket; else the key's own) less the spikes' time. Under
    OUTSIDE_MIN_USD outside the spikes is no trickle (the edges of a spike, or noise): nothing to take off."""
    outside = pd.Series(True, index=net.index)
    for start, end in spikes:
        outside &= ~((net["bucket_start"] >= start) & (net["bucket_start"] < end))
    rest = max(sum(net.loc[outside, "cost_usd"], Decimal(0)), Decimal(0))
    if rest < OUTSIDE_MIN_USD:
        return Decimal(0)
    lo = span[0] if span[0] is not None else buckets["bucket_start"].min()
    hi = span[1] if span[1] is not None else buckets["bucket_start"].max()
    covered = hi - lo - sum((e - s for s, e in spikes), pd.Timedelta(0))
    hours = Decimal(str(covered / pd.Timedelta(hours=1)))
    return rest / hours if hours >= 1 else Decimal(0)


def _beyond_logs(rec: reconcile.Reconciliation, buckets: pd.DataFrame, step: pd.Timedelta) -> list[str]:
    """Where a key's outside-proxy use runs past the proxy's logs (they begin later or end earlier), one line saying
    where the proxy's coverage ends: the provider's data alone shows that part."""
    if rec.logs_start is None or rec.logs_end is None or not len(buckets):
        return []
    first, last = buckets["bucket_start"].min(), buckets["bucket_start"].max() + step
    lo, hi = pd.Timestamp(rec.logs_start), pd.Timestamp(rec.logs_end)
    parts = []
    if first < lo:
        parts.append(f"begins at {first:%Y-%m-%d %H:%M} UTC, before the proxy's logs begin ({lo:%Y-%m-%d %H:%M:%S})")
    if last > hi:
        parts.append(f"runs to {last:%Y-%m-%d %H:%M} UTC, after the proxy's logs end (its last request, "
                     f"{hi:%Y-%m-%d %H:%M:%S})")
    if not parts:
        return []
    return [f"the provider's data {' and '.join(parts)}: a key the proxy did not use while it logged, so that part "
            "is counted from the provider's export alone"]


LOGS_END_RATE_MINUTES = 60       # the proxy's own rate past its logs' end: from their last hour...
LOGS_END_RATE_CHUNK_MINUTES = 10  # ...the median of its 10-minute means (a batch in a third of it sets no rate)


def _past_logs_end(spike: pd.DataFrame, k: dict, step: pd.Timedelta) -> tuple[pd.DataFrame, Decimal]:
    """A spike of use outside the proxy of its own key that runs to the last bucket its logs cover runs on past
    their end while the export shows the key spending above the proxy's own rate (over the logs' last
    LOGS_END_RATE_MINUTES, the median of its LOGS_END_RATE_CHUNK_MINUTES means: a batch of $3 a minute for eight of
    those minutes is no rate the proxy kept up after its logs ended, matrix seed 123 #5, end 8 minutes early) by a
    tenth of the spike's mean bucket (its refinement's edge, REFINE_SHARE), until
    DETECTION_MINUTES of buckets (two at least) do not (the spend logs were exported at 02:51, the provider's usage
    at 03:10: the script ran to 03:06). Returns (those buckets with what they spent above the proxy's rate, that
    rate a bucket); none when the spike ended before the logs did, or the export's buckets there are of another
    width."""
    from forensics.analysis.provider_spikes import DETECTION_MINUTES, REFINE_SHARE

    none = (spike.iloc[0:0], Decimal(0))
    own, net = k.get("after_logs"), k.get("net_buckets")
    if own is None or own.empty or net is None or net.empty or not own["after_logs"].any() \
            or int(own["bucket_minutes"].iloc[0]) != int(step / pd.Timedelta(minutes=1)):
        return none
    covered = net["bucket_start"].max()
    if spike["bucket_start"].max() < covered - step:
        return none
    inside = own[~own["after_logs"] & (own["bucket_start"] > covered - pd.Timedelta(minutes=LOGS_END_RATE_MINUTES))]
    chunk = max(pd.Timedelta(minutes=LOGS_END_RATE_CHUNK_MINUTES), step)
    means = [sum((Decimal(str(c)) for c in g if pd.notna(c)), Decimal(0)) / len(g)
             for _, g in inside.groupby((covered - inside["bucket_start"]) // chunk)["proxy_cost_usd"]]
    rate = statistics.median(means) if means else Decimal(0)
    span = (spike["bucket_start"].max() - spike["bucket_start"].min()) / step + 1
    bar = sum((Decimal(str(c)) for c in spike["cost_usd"]), Decimal(0)) / Decimal(int(span)) \
        * REFINE_SHARE["outside_proxy"]
    after = {t: Decimal(str(c)) for t, c, past in zip(own["bucket_start"], own["cost_usd"], own["after_logs"])
             if past and t > covered and pd.notna(c)}                     # an unpriced bucket: nothing known
    gap = max(int(pd.Timedelta(minutes=DETECTION_MINUTES) / step), 2)
    taken, quiet, t = [], 0, covered + step
    while after and t <= max(after) and quiet < gap:
        if after.get(t, Decimal(0)) - rate > bar:
            taken += [(u, max(after.get(u, Decimal(0)) - rate, Decimal(0)))
                      for u in pd.date_range(taken[-1][0] + step if taken else covered + step, t, freq=step)]
            quiet = 0
        else:
            quiet += 1
        t += step
    return pd.DataFrame(taken, columns=["bucket_start", "cost_usd"]), rate


def _outside_incidents(recs: list[reconcile.Reconciliation], first_number: int, control_set) -> list[IncidentFindings]:
    """Provider key usage the proxy never saw, per key id: each spike an incident (attack), a steady trickle beside
    it another (suspicious); windows and cost from the provider's data."""
    out = []
    for rec in recs:
        for k in rec.outside_proxy:
            if k["cost_usd"] < OUTSIDE_MIN_USD:
                continue
            net = k.get("net_buckets")
            er = k.get("export_range", {})
            ranges = {"net": er.get("finest" if k.get("finest") else "span", (None, None)),
                      "span": er.get("span", (None, None))}
            parts = _split_spikes(k["buckets"], k["bucket_minutes"], net, k.get("net_span"), ranges,
                                  foreign=k.get("after_logs") is None)
            step = pd.Timedelta(minutes=k["bucket_minutes"])
            spans = [(b["bucket_start"].min(), b["bucket_start"].max() + step) for p, b in parts if p == "spike"]
            rate = _trickle_rate(net, spans, k["buckets"], ranges["net"]) if net is not None and len(parts) > 1 \
                else Decimal(0)
            last_spike = max((b["bucket_start"].max() for p, b in parts if p == "spike"), default=None)
            for part, buckets in parts:
                ran_on = rate_then = None
                if part == "spike" and buckets["bucket_start"].max() == last_spike:
                    ran_on, rate_then = _past_logs_end(buckets, k, step)
                    if len(ran_on):
                        buckets = pd.concat([buckets, ran_on.assign(
                            **{c: None for c in buckets.columns if c not in ran_on.columns})[buckets.columns]],
                            ignore_index=True)
                cost = sum((Decimal(str(c)) for c in buckets["cost_usd"]), Decimal(0))
                if rate and part == "spike":       # what the spike spent above the key's usual outside-proxy use
                    start, end = buckets["bucket_start"].min(), buckets["bucket_start"].max() + step
                    within = net[(net["bucket_start"] >= start) & (net["bucket_start"] < end)]
                    hours = Decimal(str((end - start) / pd.Timedelta(hours=1)))
                    past = sum(ran_on["cost_usd"], Decimal(0)) if ran_on is not None else Decimal(0)
                    cost = max(sum(within["cost_usd"], Decimal(0)) + past - rate * hours, Decimal(0))
                if cost < OUTSIDE_MIN_USD or (part == "trickle" and not cost):
                    continue
                share = cost / k["cost_usd"] if k["cost_usd"] else Decimal(1)
                requests = int(round(k["requests"] * share)) if len(parts) > 1 else k["requests"]
                n = first_number + len(out)
                inc = Incident(f"INC-{n}", "provider_key_outside_proxy",
                               "attack" if part == "spike" else "suspicious", "reconciliation",
                               buckets["bucket_start"].min().to_pydatetime(),
                               (buckets["bucket_start"].max() + step).to_pydatetime(), requests,
                               sources=[rec.provider, "litellm"])
                what = ("" if len(parts) == 1 else " in a spike far above its usual outside-proxy use"
                        + (f" (${float(rate):,.2f} an hour, not counted here)" if rate else "")
                        if part == "spike" else " as a steady trickle beside the spike (a script or a colleague "
                                                "using the key directly?)")
                inc.evidence.append(
                    f"{rec.provider} key {k['api_key_id']}: usage ({', '.join(k['models'])}) that no proxy request "
                    f"accounts for{what}, ${float(cost):,.2f} at list prices; only the provider saw it")
                if k.get("after_logs") is None:       # a key the proxy never used: all its use is outside
                    inc.evidence += _beyond_logs(rec, buckets, step)
                if ran_on is not None and len(ran_on):
                    inc.evidence.append(
                        f"it was still running when the proxy's logs end ({pd.Timestamp(rec.logs_end):%H:%M:%S}); "
                        f"the provider's export shows the key spending on to "
                        f"{ran_on['bucket_start'].max() + step:%Y-%m-%d %H:%M} UTC, "
                        f"${float(sum(ran_on['cost_usd'], Decimal(0))):,.2f} above the proxy's own rate in the logs' "
                        f"last hour (${float(rate_then):,.4f} a bucket, the median of its {LOGS_END_RATE_CHUNK_MINUTES}"
                        f"-minute means), counted as the spike's: an estimate, the "
                        "proxy's own calls there not being logged")
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
    return [IncidentFindings(n.incident, Decimal(0), [], n.by_ip, empty, empty, n.by_user_agent, None, [], None,
                             limits=limits.limits_seen(case, n.incident.start, n.incident.end), nginx_lines=n.lines)
            for n in find_nginx_incidents(case)]


def _nginx_load_findings(case: Case, found: list[IncidentFindings]) -> list[IncidentFindings]:
    """Surges of the gateway's LLM calls in nginx that none of the incidents `found` explains (nginx_load)."""
    from forensics.analysis.nginx_load import find_nginx_load

    empty = pd.DataFrame()
    taken = [(f.incident.start, f.incident.end) for f in found]
    return [IncidentFindings(n.incident, Decimal(0), [], n.by_ip, empty, empty, n.by_user_agent, None, [], None,
                             limits=limits.limits_seen(case, n.incident.start, n.incident.end))
            for n in find_nginx_load(case, taken, len(found) + 1)]


def _provider_spike_findings(case: Case) -> list[IncidentFindings]:
    from forensics.analysis.provider_spikes import find_provider_spikes

    empty = pd.DataFrame()
    out = []
    for s in find_provider_spikes(case):
        costs = {b.to_pydatetime(): c for b, c in zip(s.buckets["bucket_start"], s.buckets["cost_usd"])}
        out.append(IncidentFindings(s.incident, s.cost_usd, [], empty, empty, s.by_model, empty,
                                    projection.project_buckets(costs, s.bucket_minutes), [], None,
                                    provider_buckets=s.buckets, provider=s.provider, provider_key_id=s.key_id,
                                    provider_series=s.series, provider_rows=s.rows))
    return out


def _ips(f: IncidentFindings) -> set:
    frame = f.by_ip
    column = "ip" if "ip" in frame.columns else "client_ip" if "client_ip" in frame.columns else None
    return set(frame[column].dropna()) if column else set()


def _near(a: Incident, b: Incident, slack: timedelta) -> bool:
    return a.start - slack <= b.end and b.start - slack <= a.end


PRORATE_MAX_WIDTH = timedelta(hours=1)
CALL_SLACK = timedelta(minutes=5)   # nginx logs a call when it ends: its first line may come this long after LiteLLM's


def _counts_calls(spike: IncidentFindings) -> bool:
    """Whether a provider spike's rows count calls (OpenAI's usage does; Anthropic's usage report and cost exports
    do not)."""
    rows = spike.provider_rows
    return rows is not None and not rows.empty and bool(rows["requests"].any())


def _coincidence(a: Incident, spike: Incident) -> float:
    """How far an incident's window and a spike's coincide: their overlap over their union. Of two keys' spikes
    beside an nginx incident, the one spiking only the day it happens is its spend, not one spiking over the days
    around it as well; of two series' spikes in its hour, the one spanning it, not a batch inside it."""
    overlap = (min(a.end, spike.end) - max(a.start, spike.start)).total_seconds()
    union = (max(a.end, spike.end) - min(a.start, spike.start)).total_seconds()
    return max(overlap, 0) / max(union, 1)


def _prorated(spike: IncidentFindings, inc: Incident, width: timedelta) -> Decimal:
    """A provider spike's cost above its usual, shared out over its buckets as they spent, each bucket's share
    cut to the part of it the incident's own (finer) window covers: an hourly bucket that also holds a nightly
    batch after the attack counts only the attack's minutes. A bucket wider than PRORATE_MAX_WIDTH the window
    touches counts whole: its usual already holds a whole day's work, so what is above it is the attack's (an
    85-minute attack is not 85/1440 of its day's excess). A spike whose series usually spends nothing there (a
    model new to its key) is all unusual: nothing else shares its buckets, it counts whole."""
    b = spike.provider_buckets
    if b is None or not len(b):
        return spike.cost_usd
    raw = [Decimal(str(c)) for c in b["cost_usd"]]
    total = sum(raw, Decimal(0))
    if not total or total == spike.cost_usd:
        return spike.cost_usd
    covered = Decimal(0)
    for start, c in zip(b["bucket_start"], raw):
        lo, hi = max(start.to_pydatetime(), inc.start), min(start.to_pydatetime() + width, inc.end)
        share = max((hi - lo).total_seconds(), 0) / width.total_seconds()
        covered += c * Decimal(str(min(share, 1.0) if width <= PRORATE_MAX_WIDTH or share <= 0 else 1.0))
    return spike.cost_usd * covered / total


CALLS_MIN_REFERENCE = 50        # served proxy calls in the whole buckets that price a call (fewer: too few to say)


PURE_SHARE = 0.95               # a bucket whose calls of the spike's model are this share the incident's prices them


def _model_calls_priced(case: Case, n: IncidentFindings, s: IncidentFindings, width: timedelta) -> tuple | None:
    """The attack's part of a provider spike from the calls themselves: the provider's usage counts each bucket's
    calls per model on the key, nginx the incident's own served calls per bucket. In each bucket the incident
    touches, the incident's calls are the spike's main model's (the one spending most in it); that model's other
    calls and every other model's are the key's own, at each model's spend per call in the buckets the incident
    does not touch; the rest of the bucket is the attack's. Neither the time the incident covers in a bucket nor
    another day's spend is its usual: a bucket the attack left after 18 minutes still holds all its calls, a
    Monday's office calls are counted, not taken from a Sunday. None without call counts, without the incident's
    served calls in nginx, with addresses that are the balancer's (but for keys being guessed: the guessers' lines
    are then told by their client software, `nginx_auth_burst_step`, and counted as its calls; matrix seed 31337
    #435, -33.5 % prorated by time), or when a model's calls have no reference.
    Where a bucket's calls of that model are nearly all the incident's (PURE_SHARE), its calls are priced at their
    own cost a call there instead, in every bucket: a nightly batch's large calls beside the attack's last minutes
    are then not priced at the key's average call (matrix seed 0 #9: +26.7 % that way, -0.1 % this); the few other
    calls of that model there at the key's usual cost a call left out of it."""
    rows, ips = s.provider_rows, _ips(n)
    behind = any(is_internal(ip) for ip in ips)
    guessed = n.nginx_lines is not None and n.incident.detector == "nginx_auth_burst"
    if rows is None or rows.empty or not rows["requests"].any() or not ips or behind and not guessed:
        return None
    from forensics.analysis.proxy_load import incident_calls

    step = pd.Timedelta(width)
    mine = incident_calls(case, step, ips, n.incident.start, n.incident.end, n.nginx_lines if behind else None)
    if not sum(mine.values()):
        return None
    per = rows.assign(cost_usd=rows["cost_usd"].map(lambda v: Decimal(str(v)) if pd.notna(v) else Decimal(0)))
    touched = sorted(t for t in set(per["bucket_start"]) if t < n.incident.end and n.incident.start < t + step)
    if not touched:
        return None
    ref = per[~per["bucket_start"].isin(touched)].groupby("model").agg(
        requests=("requests", "sum"), cost=("cost_usd", lambda c: sum(c, Decimal(0))))
    ref = ref[ref["requests"] > 0]
    inside = per[per["bucket_start"].isin(touched)]
    main = inside.groupby("model")["cost_usd"].apply(lambda c: sum(c, Decimal(0))).idxmax()
    by_main = inside[inside["model"] == main].groupby("bucket_start")[["requests", "cost_usd"]].agg(
        {"requests": "sum", "cost_usd": lambda c: sum(c, Decimal(0))})
    served = sum(mine.get(t, 0) for t in touched)
    pure = [t for t in touched if t in by_main.index and by_main.loc[t, "requests"]
            and mine.get(t, 0) >= PURE_SHARE * int(by_main.loc[t, "requests"])]
    if pure:
        calls = sum(int(by_main.loc[t, "requests"]) for t in pure)
        # in all, not bucket by bucket: a call near a minute's edge may fall on either side of it in the two counts
        theirs = min(sum(mine.get(t, 0) for t in pure), calls)
        # the few other calls of that model there (up to 1 - PURE_SHARE of them) at the median bucket's spend per
        # call of that model elsewhere (a nightly batch of long documents is a few buckets' calls, not the key's
        # usual one): a day's 80 calls of the key's own beside an attack's 2,209 cost three times as much a call
        # (matrix seed 4242 #162: +10.6 % with them)
        elsewhere = per[~per["bucket_start"].isin(touched) & (per["model"] == main) & (per["requests"] > 0)]
        usual_call = statistics.median([c / int(k) for c, k in zip(elsewhere["cost_usd"], elsewhere["requests"])]) \
            if len(elsewhere) else None
        spent = sum((by_main.loc[t, "cost_usd"] for t in pure), Decimal(0))
        own = usual_call * (calls - theirs) if usual_call is not None else Decimal(0)
        per_call = (spent - min(own, spent)) / (theirs if own else calls)
        # capped in all, not bucket by bucket: nginx logs a call when it ends and the provider counts it when it
        # started, so per-minute counts of the two differ by the calls that straddle a minute, both ways
        cost = min(per_call * served, sum(inside["cost_usd"], Decimal(0)))
        return cost, (f"is counted as the attack's: its {served:,} served call(s) "
                      f"nginx shows, at ${float(per_call):,.4f} a call, what {main}'s calls cost where they were "
                      f"nearly all the incident's ({len(pure)} bucket(s), {calls:,} calls"
                      + (f"; the other {calls - theirs:,} at ${float(usual_call):,.4f} a call, the key's usual"
                         if own else "") + ")")
    cost, others = Decimal(0), 0
    for t in touched:
        bucket = inside[inside["bucket_start"] == t]
        own = Decimal(0)
        for model, calls in bucket.groupby("model")["requests"].sum().items():
            other = max(int(calls) - (mine.get(t, 0) if model == main else 0), 0)
            if other and model not in ref.index:
                return None
            if other:
                own += ref.loc[model, "cost"] * other / int(ref.loc[model, "requests"])
                others += other
        cost += max(sum(bucket["cost_usd"], Decimal(0)) - own, Decimal(0))
    return cost, (f"is counted as the attack's: its {served:,} served call(s) nginx shows "
                  f"are taken as {main}'s, the key's other {others:,} call(s) in those bucket(s) (the provider's "
                  "count per model) at each model's spend per call in the buckets the incident does not touch")


def _calls_priced(case: Case, n: IncidentFindings, s: IncidentFindings, width: timedelta) -> tuple | None:
    """The attack's part of a coarse provider spike (daily buckets) from what nginx shows of the proxy's own work:
    in the buckets the nginx incident touches, the provider's spend less the proxy's other served calls (nginx, the
    incident's addresses left out) at the spend per call of the buckets nginx covers whole and no incident touches.
    The usual of a day is then what its own calls cost, not another day's spend (a Monday's office traffic against
    a Sunday's). None when nginx does not cover those buckets whole, the incident's addresses are the balancer's,
    or the reference days hold fewer than CALLS_MIN_REFERENCE calls: (cost, the evidence's words) otherwise."""
    series = s.provider_series
    ips = _ips(n)
    if not series or not ips or any(is_internal(ip) for ip in ips):
        return None
    from forensics.analysis.proxy_load import served_calls

    step = pd.Timedelta(width)
    calls, (first, last) = served_calls(case, step, ips)
    if first is None:
        return None
    whole = [t for t in series if first <= t and t + step <= last]
    touched = [t for t in series if t < n.incident.end and n.incident.start < t + step]
    if not touched or any(t not in whole for t in touched):
        return None
    reference = [t for t in whole if t not in touched and calls.get(t, 0) > 0]
    ref_calls = sum(calls.get(t, 0) for t in reference)
    if ref_calls < CALLS_MIN_REFERENCE:
        return None
    per_call = sum((Decimal(str(series[t])) for t in reference), Decimal(0)) / ref_calls
    cost = sum((max(Decimal(str(series[t])) - per_call * calls.get(t, 0), Decimal(0)) for t in touched), Decimal(0))
    return cost, (f"is counted as the attack's: the rest of its bucket(s) is the proxy's other {sum(calls.get(t, 0) for t in touched):,} "
                  f"served call(s) nginx shows at ${float(per_call):,.4f} a call, the spend per call of "
                  f"{len(reference)} other whole bucket(s)")


def _one_campaign(found: list[IncidentFindings], nginx: list[IncidentFindings],
                  spikes: list[IncidentFindings], case: Case | None = None) -> list[IncidentFindings]:
    """One incident per campaign across sources. An nginx incident beside a LiteLLM one by the same addresses (less
    than an hour apart) is that incident's first phase, typically the 401s LiteLLM never logged: its window opens
    there and it rests on nginx too (behind a balancer whose log keeps only its own address: by time alone, the
    nginx incident first). An nginx incident with no cost and a provider spike at the same time (a bucket
    either side): the provider's figure is its cost, and it rests on the provider too; of several such spikes, the
    one whose window the incident covers most (`_coincidence`). Behind a balancer "first" allows CALL_SLACK: with
    no $request_time nginx's first line is the first call's end, milliseconds to minutes after LiteLLM's start (matrix
    seed 123 #92: a stuffing campaign both logged from its first call, nginx's 2 ms later, reported twice)."""
    slack = timedelta(minutes=SLOW_GAP_MINUTES)
    kept_nginx = []
    for n in nginx:
        behind = bool(_ips(n)) and all(is_internal(ip) for ip in _ips(n))   # nginx saw only the balancer
        proxy = next((f for f in found if f.incident.table and _near(f.incident, n.incident, slack)
                      and (_ips(f) & _ips(n) or behind and f.incident.start >= n.incident.start - CALL_SLACK)), None)
        if proxy is None:
            kept_nginx.append(n)
            continue
        p = proxy.incident
        if n.incident.start < p.start:
            p.evidence.append(f"nginx shows the same addresses from {n.incident.start:%Y-%m-%d %H:%M:%S} UTC, before "
                              f"LiteLLM logged them: {n.incident.evidence[0]}")
        p.start = min(p.start, n.incident.start)   # its end stays LiteLLM's: nginx logs a line when a call ends
        if n.incident.kind == "credential_stuffing":       # how the key the proxy then served was found
            p.kind, p.verdict = "credential_stuffing", "attack"
        if "nginx" not in p.sources:
            p.sources.append("nginx")
    kept_spikes = list(spikes)
    for n in kept_nginx:
        # as close in time, the spike whose export counts calls (it can be matched to nginx's served calls): a
        # Monday's office traffic on a key without call counts spikes over the same days after weekend history
        for s in sorted(kept_spikes, key=lambda s: (-_coincidence(n.incident, s.incident), not _counts_calls(s))):
            b = s.provider_buckets
            width = b["bucket_start"].diff().min().to_pytimedelta() if b is not None and len(b) > 1 \
                else s.incident.end - s.incident.start
            if n.cost_usd == 0 and _near(n.incident, s.incident, width):
                priced = _model_calls_priced(case, n, s, width) if case is not None else None
                if priced is None and case is not None and width > PRORATE_MAX_WIDTH:
                    priced = _calls_priced(case, n, s, width)
                n.cost_usd = priced[0] if priced else _prorated(s, n.incident, width)
                n.provider, n.provider_key_id, n.provider_buckets = s.provider, s.provider_key_id, s.provider_buckets
                n.incident.sources += [x for x in s.incident.sources if x not in n.incident.sources]
                share = (priced[1] if priced else
                         "falls in the part of each bucket nginx shows the attack in (prorated by time)"
                         if width <= PRORATE_MAX_WIDTH else
                         "is counted as the attack's: the rest of each bucket is taken to have spent as usual")
                n.incident.evidence.append(f"the provider's export shows the spend at the same time: "
                                           f"{s.incident.evidence[0]}; ${float(n.cost_usd):,.2f} of it {share}")
                kept_spikes.remove(s)
                break
    return found + kept_nginx + kept_spikes


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
    with phase("coverage of the sources"):
        cov = coverage.coverage(case)
    with phase("searching the proxy's requests for incidents"):
        search = find_incidents(case)
    for inc in search.incidents:
        note(f"incident: {inc.verdict} {inc.kind} {inc.start:%Y-%m-%d %H:%M:%S} .. {inc.end:%Y-%m-%d %H:%M:%S} UTC, "
             f"{int(inc.requests or 0):,} requests (cost, projection and controls follow)")
    found = []
    for inc in search.incidents:
        with phase(f"attribution, projection and controls replay of the {inc.kind} incident"):
            found.append(_incident_findings(case, inc, control_set, search.claimed))
    with phase("baseline and reconciliation with the provider's bill"):
        base = case.query(baseline_step(search.claimed)).iloc[0].to_dict()
        recs = reconcile.reconcile(case)
        found += _outside_incidents(recs, len(found) + 1, control_set)
    with phase("nginx-only incidents, provider spikes and the nginx join"):
        found = _one_campaign(found, _nginx_findings(case), _provider_spike_findings(case), case)
        found += _nginx_load_findings(case, found)
        nginx_match = joins.join_nginx(case)
        _sources_of(case, found, case.table("nginx_to_litellm"))
    found.sort(key=lambda f: f.incident.start)
    for i, f in enumerate(found, start=1):
        f.incident.id = f"INC-{i}"
    with phase("time series for the figures"):
        band, per_incident = series.series(case, found)
    for f in found:
        f.series = per_incident.get(f.incident.id)
        f.headline = headline(case, f, base.get("cost_per_hour_usd"))
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
