"""A scenario simulated under a drawn `Deployment`: the same incidents, other logs around them.

The incidents happen when the default simulation has them; the window is cut around them (the deployment's history
before the first request, its tail after the last), the baseline is thinned so a month stays a few thousand requests,
the network path is rebuilt (balancer or not, nginx or not) and only the deployment's sources are written, each in
its drawn shape. truth.json says what each present source can see of each incident (`seen_by`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from forensics.netaddr import TrustedProxies, is_internal
from forensics.simulate import litellm_writer, nginx_writer, noise, provider_writer, traffic
from forensics.simulate.catalog import (
    GENERATOR_VERSION, HOUR, NETWORK, US, VirtualKey, Window, iso_z, make_keys, ts,
)
from forensics.simulate.deployment import PROXY_VISIBLE_ONLY, Deployment
from forensics.simulate.frame import COLUMNS, fill_latency, finalize
from forensics.simulate.incidents import Incident
from forensics.simulate.noise import EVENT_COLUMNS
from forensics.simulate.scenarios import (
    CONVENTIONS, OUTSIDE_CONVENTIONS, _rng, _scenario, _usd, incident_truth, prices, run_incidents, totals,
)

NOMINAL_INCIDENT = ts("2026-11-16T02:00:00")   # where a scenario without incident ends its history
BASELINE_REQUESTS_PER_HOUR = 81.0              # the default baseline's mean (16k requests in 198 hours)
MAX_BASELINE_REQUESTS = 2500                   # a month of history is thinned to about this many requests
MAX_BASELINE_OBJECTS = 300                     # fewer when each request is a file of its own (object_per_file)
SPEND_LOG_SINKS = ("spend_logs_csv", "spend_logs_json")   # the 401s are in these, not in callback payloads
DEFAULT_TRUSTED = TrustedProxies()
INGRESS_REALIP = TrustedProxies(("10.0.0.0/8",))


@dataclass
class Built:
    """Everything the writers and the truth need."""

    keys: list[VirtualKey]
    frame: pd.DataFrame             # LiteLLM's requests (finalised)
    events: pd.DataFrame            # nginx-only lines
    incidents: list[Incident]
    outside: pd.DataFrame | None    # provider-only calls
    window: Window
    rate_scale: float               # how much the baseline was thinned


def incident_span(found: list[Incident]) -> tuple[int, int] | None:
    """First and last request start of the incidents, through the proxy or around it."""
    starts = [inc.frame["t_start"] for inc in found if len(inc.frame)]
    starts += [inc.outside["t_start"] for inc in found if inc.outside is not None]
    if not starts:
        return None
    s = pd.concat(starts)
    return int(s.min()), int(s.max())


def thinned(keys: list[VirtualKey], scale: float) -> list[VirtualKey]:
    """The keys with their owners' request rates scaled (the baseline only: incidents keep their own size)."""
    if scale >= 1:
        return keys
    out = []
    for k in keys:
        if k.valid and k.profile is not None:
            k = dataclasses.replace(k, profile=dataclasses.replace(k.profile,
                                                                   rate_per_hour=k.profile.rate_per_hour * scale))
        out.append(k)
    return out


def reroute(frame: pd.DataFrame, dep: Deployment) -> None:
    """Without a load balancer, clients reach nginx (or LiteLLM) themselves: the peer is the client and the only
    X-Forwarded-For is what the client forged."""
    if dep.behind_lb:
        return
    via_lb = (frame["remote_addr"] == NETWORK.lb_ip).to_numpy()
    xff = frame["xff_in"].to_numpy(dtype=object)
    forged = [", ".join(x.split(", ")[:-1]) if lb else x for x, lb in zip(xff, via_lb)]
    frame["xff_in"] = np.where(via_lb, forged, xff)
    frame["remote_addr"] = np.where(via_lb, frame["client_ip"].to_numpy(dtype=object),
                                    frame["remote_addr"].to_numpy(dtype=object))


def reroute_events(rng: np.random.Generator, events: pd.DataFrame, dep: Deployment) -> pd.DataFrame:
    """nginx-only lines without a balancer: no health checks from it; scanners connect from their own address."""
    if dep.behind_lb:
        return events
    events = events[events["ua"] != "ELB-HealthChecker/2.0"].reset_index(drop=True)
    via_lb = (events["remote_addr"] == NETWORK.lb_ip).to_numpy()
    xff = events["xff"].to_numpy(dtype=object)
    hops = [x.split(", ") if x else [] for x in xff]
    own = noise.scanner_ips(rng, len(events))
    events["remote_addr"] = [h[-1] if lb and h else (o if lb else r)
                             for h, lb, o, r in zip(hops, via_lb, own, events["remote_addr"])]
    events["xff"] = [", ".join(h[:-1]) if lb else x for h, lb, x in zip(hops, via_lb, xff)]
    return events


def requester_ip(frame: pd.DataFrame, dep: Deployment) -> list[str]:
    """LiteLLM's requester_ip_address: the raw X-Forwarded-For it received when use_x_forwarded_for is on (nginx
    appends its peer: $proxy_add_x_forwarded_for), else the TCP peer."""
    xff, peer, client = (frame[c].to_numpy(dtype=object) for c in ("xff_in", "remote_addr", "client_ip"))
    if dep.nginx_in_path:
        return [f"{x}, {p}" if x else p for x, p in zip(xff, peer)]
    if dep.behind_lb:
        return [x if x else c for x, c in zip(xff, client)]
    return list(client)


def build(scenario: str, seed: int, dep: Deployment) -> Built:
    """Incidents first (their times fix the window), then the thinned baseline around them, then the network path."""
    spec = _scenario(scenario)
    keys = make_keys(seed)
    irng = _rng(seed, 3, scenario)
    all_keys, found = run_incidents(spec, irng, keys)
    first, last = incident_span(found) or (NOMINAL_INCIDENT, NOMINAL_INCIDENT)
    window = Window(first - dep.history_s * US, first, last + dep.tail_s * US)
    cap = MAX_BASELINE_OBJECTS if dep.litellm_sink == "object_per_file" else MAX_BASELINE_REQUESTS
    scale = min(1.0, cap / (BASELINE_REQUESTS_PER_HOUR * window.hours))
    base = traffic.baseline(_rng(seed, 1), thinned(keys, scale), window, typos=dep.keys)
    frame = pd.concat([base] + [inc.frame[COLUMNS] for inc in found if len(inc.frame)], ignore_index=True)
    if not dep.keys:
        frame["key"] = -1                  # no master key: nobody presents a key, nothing is refused
    reroute(frame, dep)
    fill_latency(irng, frame)
    frame = finalize(_rng(seed, 4, scenario), frame, window)
    frame["requester_ip"] = requester_ip(frame, dep)
    events = [noise.background(_rng(seed, 2), window, min(1.0, scale))]
    events += [inc.noise for inc in found if inc.noise is not None]
    ev = noise.typed(pd.concat(events, ignore_index=True)[EVENT_COLUMNS])
    ev = ev[(ev["t_recv"] >= window.start) & (ev["t_log"] < window.collected_at)].reset_index(drop=True)
    ev = reroute_events(_rng(seed, 5, scenario), ev, dep)
    calls = [inc.outside for inc in found if inc.outside is not None]
    outside = pd.concat(calls, ignore_index=True) if calls else None
    if outside is not None:
        outside = outside[outside["t_start"] < window.collected_at].reset_index(drop=True)
    return Built(all_keys, frame, ev, found, outside=outside, window=window, rate_scale=scale)


# --- what each source sees --------------------------------------------------------------------------------------

def litellm_records(frame: pd.DataFrame, dep: Deployment) -> pd.Series:
    """Which requests the deployment's LiteLLM sink holds: spend logs all of them, callbacks no 401s."""
    if "litellm" not in dep.sources:
        return pd.Series(False, index=frame.index)
    if dep.litellm_sink in SPEND_LOG_SINKS:
        return pd.Series(True, index=frame.index)
    return frame["outcome"] != "auth"


def litellm_client(chain: str) -> str | None:
    hops = chain.split(", ")
    return DEFAULT_TRUSTED.client(", ".join(hops[:-1]) or None, hops[-1])


def nginx_logs_xff(dep: Deployment) -> bool:
    if dep.nginx_format in ("main", "json", "json_default"):
        return True
    return dep.nginx_format == "custom" and "$http_x_forwarded_for" in (dep.nginx_log_format or "")


def nginx_client(xff: str, remote: str, dep: Deployment) -> str | None:
    """The client an analyst can get from the line: the X-Forwarded-For walk when the format logs the header
    (ingress: the realip module already walked it), else the peer (the balancer, behind one)."""
    if dep.nginx_format == "ingress":
        return DEFAULT_TRUSTED.client(None, INGRESS_REALIP.client(xff or None, remote))
    return DEFAULT_TRUSTED.client(xff or None if nginx_logs_xff(dep) else None, remote)


def nginx_logs_request_time(dep: Deployment) -> bool:
    """Whether a line tells when its request started ($msec or $time_* minus $request_time), or only when nginx
    wrote it (the response's end: minutes later for a long generation)."""
    return dep.nginx_format in ("timings", "ingress", "json", "json_default") or (
        dep.nginx_format == "custom" and "$request_time" in (dep.nginx_log_format or ""))


def _span(times: pd.Series) -> dict:
    return {"start": iso_z(int(times.min())), "end": iso_z(int(times.max())), "requests": int(len(times))}


BUCKET_US = {"1m": 60 * US, "1h": 3600 * US, "1d": 86400 * US}
SLOW_IN_NGINX = ("leaked_virtual_key", "open_proxy")   # set apart in nginx only by who calls
def provider_baseline(window, bucket: str, first_us: int, last_us: int) -> bool:
    """Whether the provider's export, at `bucket` width over the logs' span, holds at least one bucket's worth of time
    outside the buckets the incident touches: without it the export has no baseline to set the incident apart (two
    daily buckets, the attack in both)."""
    w = BUCKET_US[bucket]
    first_bucket, after_last = first_us // w * w, -(-(last_us + 1) // w) * w
    clean = max(0, first_bucket - window.start) + max(0, window.collected_at - after_last)
    return clean >= w


DAY_US = 86400 * US


def provider_cost_determined(window, bucket: str, first_us: int, last_us: int) -> bool:
    """Whether daily buckets can set the incident's cost apart from the key's own spend those days: the export holds,
    outside the days the incident touches, a whole day (inside the logs' span) of each kind it touches, weekday or
    weekend (UTC). A Monday's own spend is not in an export whose history is a part Friday and a weekend: the key
    ran at two or three times the weekend's level, by nothing those totals hold. Finer buckets: always (the same
    time on other days, the minutes before)."""
    if bucket != "1d":
        return True
    days = range(first_us // DAY_US, last_us // DAY_US + 1)
    whole = [d for d in range(-(-window.start // DAY_US), window.collected_at // DAY_US) if d not in days]

    def weekend(day: int) -> bool:   # 1970-01-01 was a Thursday: day 2 a Saturday
        return (day + 3) % 7 >= 5
    return all(any(weekend(w) == weekend(d) for w in whole) for d in days)


PROBE_MAX_TOKENS = 64             # a call this small (a script testing a key)...
HIDDEN_FACTOR = 100               # ...beside calls of the same model carrying this many times its tokens


def provider_hidden(billed: pd.DataFrame, others: pd.DataFrame, bucket: str) -> pd.Series:
    """Per billed incident call: whether the provider's usage totals may not show it. A probe (a few tokens, the
    stuffing script's test of the key it found) in a bucket where the key's own calls of the same model carry a
    hundred times its tokens is one call more in a count that varies by more, its tokens lost in theirs (matrix seed
    21 #233, 42 #451: the hit at 01:23:01 beside a 62,503-token call of the key's own in the same minute): the
    attack's start is then its first call or the first they show (the checker takes either). Other calls are always
    shown."""
    w = BUCKET_US[bucket]
    own = others[(others["outcome"] == "ok") & others["provider"].isin(billed["provider"].unique())]
    carried = own.assign(b=own["t_start"] // w).groupby(["provider", "model", "b"])["prompt"].sum()
    keys = pd.MultiIndex.from_arrays([billed["provider"], billed["model"], billed["t_start"] // w])
    beside = pd.Series(carried.reindex(keys).fillna(0).to_numpy(), index=billed.index)
    return (billed["prompt"] <= PROBE_MAX_TOKENS) & (beside >= HIDDEN_FACTOR * billed["prompt"])


def seen_by(rows: pd.DataFrame, dep: Deployment, visible: pd.Series, scenario: str, window=None,
            others: pd.DataFrame | None = None) -> dict:
    """Per present source: the first and last start of the incident's requests it records, the client addresses it
    shows, and (provider) the cost billed for it. nginx also gives `logged` (first and last line time: all a format
    without $request_time tells; a 4000-token answer is logged ~2 minutes after it started). `separable` false:
    the provider's totals hold the incident's calls, but nothing there sets them apart from the baseline (a leaked
    key spending a few dollars an hour on the proxy's usual models). `shown_start`: the provider's first call its
    totals can show (`provider_hidden`; `others`: the rest of the traffic)."""
    out = {}
    lite = rows[visible.loc[rows.index]]
    if len(lite):
        out["litellm"] = _span(lite["t_start"]) | {
            "client_ips": sorted({c for c in map(litellm_client, lite["requester_ip"]) if c})}
    if "nginx" in dep.sources and len(rows):
        clients = {nginx_client(x, r, dep) for x, r in zip(rows["xff_in"], rows["remote_addr"])}
        logged = _span(rows["t_log"])
        shown = sorted(c for c in clients if c)
        out["nginx"] = _span(rows["t_start"]) | {
            "logged": {"start": logged["start"], "end": logged["end"]},
            "logs_request_time": nginx_logs_request_time(dep), "client_ips": shown,
            # a leaked key or an open proxy shows in nginx by who calls (a batch job calls as fast): behind a
            # balancer whose log keeps no client address, nothing there sets it apart from a planned job
            "separable": any(not is_internal(c) for c in shown) or scenario not in SLOW_IN_NGINX}
    billed = rows[(rows["outcome"] == "ok") & rows["provider"].isin(dep.providers)]
    if "provider" in dep.sources and len(billed):
        bucket = dep.usage_bucket(billed["provider"].iloc[0])
        first, last = int(billed["t_start"].min()), int(billed["t_start"].max())
        baseline = window is None or provider_baseline(window, bucket, first, last)
        shown = billed if others is None else billed[~provider_hidden(billed, others, bucket)]
        out["provider"] = _span(billed["t_start"]) | {
            "shown_start": iso_z(int((shown if len(shown) else billed)["t_start"].min())),
            "cost_usd": _usd(billed["cost_nano"].sum()), "bucket": bucket,
            "separable": scenario not in PROXY_VISIBLE_ONLY and baseline,
            "cost_determined": window is None or provider_cost_determined(window, bucket, first, last)}
    return out


def deployment_incident_truth(inc: Incident, built: Built, dep: Deployment, visible: pd.Series,
                              scenario: str) -> dict:
    """The default incident truth, plus what each source sees; request ids only those LiteLLM's sink holds."""
    t = incident_truth(inc, built.frame, built.keys)
    t["window"] = {"start": t["start"], "end": t["end"]}
    if not dep.keys:                       # the key an incident's requests would have used was never presented
        t |= {"key_hash": None, "key_alias": None, "compromised_key_hash": None}
    if inc.outside is not None:
        calls = built.outside
        t.pop("granularity", None)
        t["seen_by"] = {}
        if "provider" in dep.sources and "openai" in dep.providers and len(calls):
            span = (built.window, dep.openai_usage_bucket, int(calls["t_start"].min()), int(calls["t_start"].max()))
            t["seen_by"]["provider"] = {"start": t["first_request_at"], "end": t["last_request_at"],
                                        "requests": t["requests"], "cost_usd": t["cost_usd"],
                                        "bucket": dep.openai_usage_bucket,
                                        "separable": provider_baseline(*span),
                                        "cost_determined": provider_cost_determined(*span)}
    else:
        rows = built.frame[built.frame["incident"] == inc.id]
        t["seen_by"] = seen_by(rows, dep, visible, scenario, built.window,
                               built.frame[built.frame["incident"] != inc.id])
        held = rows[visible.loc[rows.index]]
        t["request_ids"] = held["request_id"].tolist()
        t["litellm_call_ids"] = held["call_id"].tolist()
        if "precursors" in t:
            start = iso_z(built.window.start)
            t["precursors"] = [p for p in t["precursors"] if p["time"] >= start] if "nginx" in dep.sources else []
    shown = set().union(*(set(s.get("client_ips", ())) for s in t["seen_by"].values()))
    t["observable_attacker_ips"] = sorted(set(t["attacker_ips"]) & shown)
    return t


def baseline_truth(frame: pd.DataFrame, window: Window) -> dict:
    quiet = frame[(frame["incident"] == "") & (frame["t_start"] < window.baseline_end)]
    hours = (window.baseline_end - window.start) / HOUR
    cost = Decimal(int(quiet["cost_nano"].sum())) / 10**9
    return {"start": iso_z(window.start), "end": iso_z(window.baseline_end), "hours": round(hours, 4),
            "cost_usd": str(cost), "cost_per_hour_usd": float(cost) / hours if hours else 0.0,
            "requests": int(len(quiet)), "requests_per_hour": round(len(quiet) / hours, 3) if hours else 0.0,
            "failures": {k: int(v) for k, v in quiet["outcome"].value_counts().items() if k != "ok"}}


# --- writing ------------------------------------------------------------------------------------------------------

def write_sources(built: Built, dep: Deployment, out_dir: Path) -> dict[str, int]:
    """The deployment's sources, each in its drawn shape; {relative path: records}."""
    frame, keys, window = built.frame, built.keys, built.window
    records: dict[str, int] = {}
    if "litellm" in dep.sources:
        lite = out_dir / "litellm"
        if dep.litellm_sink == "spend_logs_csv":
            records["litellm/spend_logs.csv.gz"] = litellm_writer.write_spend_logs(frame, keys, lite / "spend_logs.csv.gz")
        elif dep.litellm_sink == "spend_logs_json":
            records["litellm/spend_logs.json"] = litellm_writer.write_spend_logs_json(frame, keys, lite / "spend_logs.json")
        elif dep.litellm_sink == "callback_ndjson":
            records["litellm/callback_payloads.ndjson.gz"] = litellm_writer.write_callbacks(
                frame, keys, lite / "callback_payloads.ndjson.gz", window.start)
        else:
            records |= litellm_writer.write_objects(frame, keys, out_dir, f"litellm/{dep.object_store}",
                                                    dep.object_store)
    if "nginx" in dep.sources:
        records |= nginx_writer.write(frame, built.events, out_dir, dep.nginx_format, tz=dep.nginx_timezone,
                                      collected_at=window.collected_at, rotation=dep.nginx_rotation,
                                      log_format=dep.nginx_log_format)
    if "provider" in dep.sources:
        span = incident_span(built.incidents)
        buckets = {p: dep.usage_bucket(p) for p in dep.providers}
        records |= provider_writer.write_deployment(frame, out_dir, window, span[0] if span else window.baseline_end,
                                                    dep.providers, buckets, built.outside)
    return records


DEPLOYMENT_CONVENTIONS = {
    "window": "the incidents happen when the default simulation has them; the window starts history_s before the "
              "first incident request and ends tail_s after the last (deployment)",
    "baseline_thinning": f"the baseline's request rates are scaled by rate_scale so a window holds about "
                         f"{MAX_BASELINE_REQUESTS} baseline requests at most ({MAX_BASELINE_OBJECTS} with one "
                         "object per request); incidents keep their size",
    "keyless": "keys false: no master key, no virtual key; every LiteLLM row has api_key '' and no key metadata, "
               "and no request is refused for its key",
    "seen_by": "per incident, per present source: the first/last start of the incident's requests it records (nginx "
               "also the first/last line time: logged), the client addresses a correct reading of it gives, and "
               "(provider) the cost billed for it and whether the provider data sets it apart (separable)",
    "request_ids": "only the incident requests the deployment's LiteLLM sink holds (none without LiteLLM)",
    "nginx_time": "nginx logs when the response was sent: a format without $request_time shows request ends only",
}


def simulate_deployment(scenario: str, out_dir: Path, seed: int, dep: Deployment) -> dict:
    """Write the scenario's logs as the deployment has them into out_dir; return the truth (also truth.json)."""
    out_dir = Path(out_dir)
    built = build(scenario, seed, dep)
    records = write_sources(built, dep, out_dir)
    visible = litellm_records(built.frame, dep)
    window = built.window
    nginx_lines = sum(v for k, v in records.items() if k.startswith("nginx/"))
    truth = {
        "scenario": scenario, "seed": seed, "generator_version": GENERATOR_VERSION,
        "summary": _scenario(scenario).summary,
        "deployment": dep.describe() | {"rate_scale": round(built.rate_scale, 6)},
        "sources": list(dep.sources),
        "time_range": {"start": iso_z(window.start), "end": iso_z(window.collected_at)},
        "files": sorted(records), "records": dict(sorted(records.items())),
        "nginx_format": dep.nginx_format, "nginx_log_format": dep.nginx_log_format,
        "baseline": baseline_truth(built.frame, window),
        "incidents": [deployment_incident_truth(inc, built, dep, visible, scenario) for inc in built.incidents],
        "keys": [k.describe() for k in built.keys if k.valid] if dep.keys else [],
        "invalid_key_hashes": [k.hash for k in built.keys if not k.valid and k.profile is not None] if dep.keys
        else [],
        "prices_per_mtok": prices(),
        "network": NETWORK.describe() | {"behind_lb": dep.behind_lb, "nginx_in_path": dep.nginx_in_path,
                                         "litellm_use_x_forwarded_for": dep.use_x_forwarded_for,
                                         "server_timezone": dep.nginx_timezone},
        "totals": totals(built.frame, built.outside) | {"nginx_lines": nginx_lines,
                                                        "litellm_records": int(visible.sum())},
        "conventions": CONVENTIONS | DEPLOYMENT_CONVENTIONS | (OUTSIDE_CONVENTIONS if built.outside is not None
                                                              else {}),
    }
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    return truth

