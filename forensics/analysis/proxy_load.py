"""The proxy's own load as nginx shows it, beside a provider spend spike seen without LiteLLM's logs.

A provider key used outside the proxy for hours spends on the same key and model as the proxy's nightly batch; with
a day or less of export there is no earlier night to call the batch usual, and its hour looks like part of the
spike. nginx sees the batch (the proxy's clients calling it) and never the outside use: in a slot where nginx's
served LLM calls surge far above their usual, the provider's spend holds the proxy's surge as well as the spike,
so there the spike is taken at its own level in the buckets where the proxy was quiet (`proxy_adjusted`). A spike
nginx shows itself (an open proxy, a stolen key used through it) surges in nginx in most of its buckets: it is
left as it is."""
from __future__ import annotations

import statistics
from decimal import Decimal
from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.nginx_incidents import LLM_ENDPOINT_SQL
from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case

SLOT_MINUTES = 15                # nginx's served LLM calls are counted per slot of this width
LOAD_FACTOR = 2.0                # a slot with this many times the median slot's calls is a surge of the proxy's own
LOAD_MIN_CALLS = 10              # ... and at least this many calls above it (a few calls are noise)


def surge_slots(case: Case) -> set:
    """Starts of the SLOT_MINUTES slots in which nginx served LOAD_FACTOR times the usual LLM calls (and
    LOAD_MIN_CALLS more): the median of the same slot on other days, else of every slot from nginx's first line to
    its last, quiet ones as zero."""
    frame = case.query(Step("nginx_llm_load", f"""
        SELECT time_bucket(INTERVAL {SLOT_MINUTES} MINUTE, time) AS slot, count(*) AS calls FROM http_requests
        WHERE time IS NOT NULL AND status < 400 AND {LLM_ENDPOINT_SQL} GROUP BY ALL ORDER BY slot
    """))
    if frame.empty:
        return set()
    span = pd.date_range(frame["slot"].min(), frame["slot"].max(), freq=f"{SLOT_MINUTES}min")
    calls = dict.fromkeys(span, 0) | dict(zip(frame["slot"], frame["calls"]))
    overall = statistics.median(calls.values())
    by_time: dict = {}
    for t, n in calls.items():
        by_time.setdefault(t - t.normalize(), []).append((t, n))

    def usual(t) -> float:   # the same slot on other days (a nightly batch is usual there), else the median slot
        others = [n for u, n in by_time[t - t.normalize()] if u.normalize() != t.normalize()]
        return statistics.median(others) if others else overall
    usuals = {t: usual(t) for t in calls}
    return {t for t, n in calls.items() if n > usuals[t] * LOAD_FACTOR and n - usuals[t] >= LOAD_MIN_CALLS}


def proxy_adjusted(costs: dict, usual: dict, run: list, width: pd.Timedelta, slots: set,
                   also: set = frozenset(), settled: set = frozenset(),
                   unsplit: dict | None = None, proxys: bool = False) -> tuple[list, Decimal, int]:
    """A spike's buckets `run` (sub-daily) and its excess over `usual` (none below it), with the buckets in which
    nginx shows the proxy's own surge (`slots`) taken at the spike's level around them (`_around`; never above their
    own excess):
    (the run, a surge stretch at either edge cut off when the buckets are no finer than a slot, the excess, how
    many buckets were adjusted). Unchanged when no bucket surges, or when half or more do (nginx shows the spike
    itself). `also`: buckets taken the same way for another reason (provider_spikes.other_workload). `settled`:
    buckets whose spike part is already set apart from the rest (split by output tokens, `costs` holding their usual
    and the spike's part alone): the proxy's surge there is the part taken out, not a reason to cut or level them.
    `unsplit`: such a bucket's whole spend, before the split: where the proxy surges or the other workload runs
    there inside the run (not at its edges), the spike's part is at least its level around it (no more than the
    bucket's excess): a spike does not stop for the minutes another workload runs beside it, and a split by output
    of a bucket the other workload fills is mostly that workload's noise (matrix seed 123 #218: six minutes of the
    nightly batch beside a slow leak's two calls a minute, split to none of them). A series that usually spends
    nothing in the run is not the proxy's, unless `proxys` (nginx shows it carrying the proxy's calls)."""
    # a bucket spending less than its usual holds none of the spike's spend, not a negative part: the usual is
    # what the key spent there on other days (a nightly batch that started five minutes later tonight)
    excess = {t: max(costs[t] - usual[t], Decimal(0)) for t in run}
    total = sum(excess.values(), Decimal(0))
    # a series that usually spends nothing there is not the proxy's: its load is not in it
    proxy = proxys or any(usual[t] for t in run)
    if width >= pd.Timedelta(days=1) or not (slots and proxy or also):
        return run, total, 0
    slot = pd.Timedelta(minutes=SLOT_MINUTES)
    surged = surging(run, width, slots) if proxy else set()
    loaded = [t in also or t in surged for t in run]
    hot = [h and t not in settled for t, h in zip(run, loaded)]
    if not any(hot) and not (unsplit and any(loaded)) or sum(hot) * 2 >= len(run):
        return run, total, 0
    lo, hi = 0, len(run)
    if width >= slot:
        while lo < hi and hot[lo]:
            lo += 1
        while hi > lo and hot[hi - 1]:
            hi -= 1
    values = [excess[t] for t in run]
    level = _around(values, hot)
    # (none when every bucket of the run is loaded: no level around them to hold them to; matrix seed 9001 #187)
    around = _around(values, loaded) if unsplit and not all(loaded) else {}
    floor = {i: min(max(unsplit[t] - usual[t], Decimal(0)), around[i]) for i, t in enumerate(run)
             if i in around and t in unsplit and 0 < i < len(run) - 1}
    adjusted = sum((min(v, level[i]) if hot[i] else max(v, floor.get(i, v))
                    for i, v in enumerate(values[lo:hi], start=lo)), Decimal(0))
    return run[lo:hi], adjusted, sum(hot[lo:hi]) + len(run) - (hi - lo)


def surging(buckets, width: pd.Timedelta, slots: set) -> set:
    """The buckets (of `width`) holding a slot in which nginx shows the proxy's own surge (`surge_slots`)."""
    slot = pd.Timedelta(minutes=SLOT_MINUTES)
    return {t for t in buckets
            if any(s in slots for s in pd.date_range(t.floor(slot), t + width - pd.Timedelta(1), freq=slot))}


def _around(values: list[Decimal], hot: list[bool]) -> dict[int, Decimal]:
    """Per hot bucket: the mean of the buckets that are not hot next to its stretch of hot buckets, as many each
    side as the stretch is long (the spike's level around it: a script's rate drifts over hours)."""
    out: dict[int, Decimal] = {}
    clean = [v for v, h in zip(values, hot) if not h]
    i = 0
    while i < len(values):
        if not hot[i]:
            i += 1
            continue
        j = i
        while j < len(values) and hot[j]:
            j += 1
        n = j - i
        near = [v for v, h in zip(values[max(i - n, 0):i], hot[max(i - n, 0):i]) if not h]
        near += [v for v, h in zip(values[j:j + n], hot[j:j + n]) if not h]
        level = sum(near, Decimal(0)) / len(near) if near else statistics.median(clean)
        out |= dict.fromkeys(range(i, j), level)
        i = j
    return out


# when a call nginx logged began: nginx writes its line when the call ends ($time_local, $time_iso8601, $msec), a
# provider counts the call in the bucket it began in; $request_time or $upstream_response_time where logged
BEGAN_SQL = "time - to_microseconds(CAST(round(coalesce(request_time, upstream_time, 0) * 1e6) AS BIGINT))"


def served_calls(case: Case, width: pd.Timedelta, leave_out: set) -> tuple[dict, tuple]:
    """nginx's served calls to the LLM endpoints per bucket of `width` (aligned to UTC midnight), each in the bucket
    it began in (`BEGAN_SQL`: the nightly batch's last call, logged at 02:21:03 after 19.6 s, is the provider's
    02:20; counted at 02:21 it "explained" a leak's last call there, matrix seed 1357 #42, end -7 min), the addresses
    in `leave_out` (an incident's) not counted, and the time nginx's lines span: ({bucket_start: calls}, (first,
    last))."""
    minutes = int(width / pd.Timedelta(minutes=1))
    frame = case.query(Step("nginx_llm_calls_per_bucket", f"""
        WITH served AS (
            SELECT time_bucket(INTERVAL {minutes} MINUTE, {BEGAN_SQL}, TIMESTAMP '2000-01-01') AS bucket,
                   count(*) AS calls
            FROM http_requests
            WHERE time IS NOT NULL AND status < 400 AND {LLM_ENDPOINT_SQL}
              AND coalesce(client_ip, '') NOT IN (SELECT unnest(CAST(? AS VARCHAR[])))
            GROUP BY ALL
        ), lines AS (
            SELECT time_bucket(INTERVAL {minutes} MINUTE, time, TIMESTAMP '2000-01-01') AS bucket,
                   min(time) AS first, max(time) AS last
            FROM http_requests WHERE time IS NOT NULL GROUP BY ALL
        )
        SELECT bucket, coalesce(served.calls, 0) AS calls, lines.first, lines.last
        FROM lines FULL JOIN served USING (bucket) ORDER BY bucket
    """), [sorted(leave_out)])
    if frame.empty:
        return {}, (None, None)
    return dict(zip(frame["bucket"], frame["calls"])), (frame["first"].min(), frame["last"].max())


def incident_calls(case: Case, width: pd.Timedelta, ips: set, start, end, lines: str | None = None) -> dict:
    """An incident's served calls to the LLM endpoints per bucket of `width` (aligned to UTC midnight): the lines of
    its addresses from its start to its end, each in the bucket its call began in where nginx logs $request_time
    or $upstream_response_time (nginx writes a line when the call ends, a provider counts the call when it began:
    calls of 38 s on average put a twentieth of an hour's calls in the next hour, matrix seed 4242 #297).
    `lines`: the incident's own lines (a temp table with start_time and status, nginx_incidents.llm_lines_step's
    columns) are counted instead, whoever they came from (behind a balancer whose log keeps only its own address,
    the guessers' lines are told by their client software). {bucket_start: calls}."""
    minutes = int(width / pd.Timedelta(minutes=1))
    params: list = []
    if lines is None:
        lines = f"""(SELECT {BEGAN_SQL} AS start_time, status
                     FROM http_requests
                     WHERE time IS NOT NULL AND {LLM_ENDPOINT_SQL} AND time BETWEEN ? AND ?
                       AND client_ip IN (SELECT unnest(CAST(? AS VARCHAR[]))))"""
        params = [start, end, sorted(ips)]
    frame = case.query(Step("nginx_incident_calls_per_bucket", f"""
        SELECT time_bucket(INTERVAL {minutes} MINUTE, start_time, TIMESTAMP '2000-01-01') AS bucket, count(*) AS calls
        FROM {lines} WHERE start_time IS NOT NULL AND status < 400 GROUP BY ALL ORDER BY bucket
    """), params)
    return {b: int(c) for b, c in zip(frame["bucket"], frame["calls"])}
