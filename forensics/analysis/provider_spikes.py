"""Spend spikes the provider's own export shows, when there are no proxy logs to compare it with.

The provider's usage page is often the first thing an analyst has. Per provider key id (usage report, priced at
list prices, at the bucket width covering the longest time) or, without usage, per project (cost report), a bucket
spending SPIKE_FACTOR times its usual (the same time of day on other days) is part of a spike; consecutive spike
buckets make one incident whose cost is what they spent above their usual. A model new to its key in a spike is
searched as its own series (`new_models`); where nginx shows the proxy's own calls surging inside a spike, those
buckets count at the spike's level around them (analysis/proxy_load.py). The usage export's calls and input tokens
per bucket tell workloads apart by their calls' size: a key test opening a spike (`key_test`), a coarse bucket at
its edge holding its calls and the key's own (`mixed_edges`, `mixed_neighbours`). With provider data alone a planned
batch and abuse look alike, so a spike is `suspicious`: the evidence says what would tell them apart."""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forensics.analysis.incident import Incident
from forensics.analysis.proxy_load import LOAD_MIN_CALLS, proxy_adjusted, served_calls, surge_slots, surging
from forensics.analysis.steps import Step
from forensics.pricing import token_cost_sql

if TYPE_CHECKING:
    from forensics.api import Case

SPIKE_FACTOR = 2.0
SPIKE_FLOOR_USD = 5              # an hour: less above the usual is noise


@dataclass
class ProviderSpike:
    incident: Incident
    provider: str
    key_id: str                  # api key id, or "project <id>" when only the cost report exists
    cost_usd: Decimal            # above the series' median, over the spike's buckets
    buckets: pd.DataFrame        # bucket_start, cost_usd: the series around the spike (what the figure draws)
    bucket_minutes: int
    by_model: pd.DataFrame       # model, requests, cost_usd within the spike
    series: dict | None = None   # the whole series it was found in: {bucket_start: cost}
    rows: pd.DataFrame | None = None   # that series per bucket and model: bucket_start, model, requests, cost_usd


def usage_series_step(prices: str = "prices") -> Step:
    """Per provider, key id, model and bucket of the width covering the longest time (the longest baseline):
    requests and cost at list prices (`prices`: the reconciliation's price table, usage models included)."""
    return Step("provider_usage_series", f"""
        WITH width AS (
            SELECT provider, bucket_width FROM provider_usage WHERE bucket_width IS NOT NULL
            GROUP BY provider, bucket_width
            QUALIFY row_number() OVER (PARTITION BY provider ORDER BY max(bucket_end) - min(bucket_start) DESC,
                                                                      min(bucket_end - bucket_start)) = 1
        ), chosen AS (   -- one file per bucket: overlapping exports never double
            SELECT u.provider, u.bucket_start, max(u.file_id) AS file_id
            FROM provider_usage u JOIN width w USING (provider, bucket_width) GROUP BY ALL
        )
        SELECT u.provider, coalesce(u.api_key_id, '(no key id)') AS series, u.bucket_start, u.bucket_end,
               coalesce(p.matched_model, u.model) AS model, coalesce(u.requests, 0) AS requests,
               coalesce(u.input_tokens, 0) AS input_tokens, coalesce(u.output_tokens, 0) AS output_tokens,
               {token_cost_sql("coalesce(u.input_tokens, 0)", "coalesce(u.output_tokens, 0)",
                               "coalesce(u.cache_read_tokens, 0)", "coalesce(u.cache_write_tokens, 0)")} AS cost_usd
        FROM provider_usage u JOIN width w USING (provider, bucket_width)
        JOIN chosen c USING (provider, bucket_start, file_id)
        LEFT JOIN {prices} p ON p.provider = u.provider AND p.model = u.model AND p.day = CAST(u.bucket_start AS DATE)
    """)


def cost_series_step() -> Step:
    """Per provider, project and bucket of the cost report (one file per bucket): what the provider billed."""
    return Step("provider_cost_series", """
        WITH chosen AS (
            SELECT provider, bucket_start, bucket_end, max(file_id) AS file_id FROM provider_costs GROUP BY ALL
        )
        SELECT c.provider, 'project ' || coalesce(c.project_id, '(default)') AS series, c.bucket_start, c.bucket_end,
               coalesce(c.model, c.line_item) AS model, 0 AS requests, 0 AS input_tokens, 0 AS output_tokens,
               c.amount_usd AS cost_usd
        FROM provider_costs c JOIN chosen USING (provider, bucket_start, bucket_end, file_id)
    """)


def has_listed(case: Case) -> bool:
    """Whether the case holds provider_buckets (a case made before it was added lacks it until opened for writing)."""
    return case.has_table("provider_buckets")


def listed_step(kind: str, listed: bool = True) -> Step:
    """Per provider and bucket width, the first and last bucket start its API pages of `kind` (usage | costs)
    listed, empty buckets included: the time the export covers, which a key quiet at its start does not show in its
    usage rows (matrix seed 123 #469: an export from 21:37, the first usage at 21:53)."""
    return Step(f"provider_listed_{kind}", f"""
        SELECT provider, bucket_end - bucket_start AS width, min(bucket_start) AS first, max(bucket_start) AS last
        FROM provider_buckets WHERE kind = '{kind}' AND bucket_end > bucket_start GROUP BY ALL
    """ if listed else """
        SELECT NULL::VARCHAR AS provider, NULL::INTERVAL AS width, NULL::TIMESTAMP AS first, NULL::TIMESTAMP AS last
        WHERE false
    """)


def export_spans_step(listed: bool = True) -> Step:
    """The time each kind of evidence covers: per bucket width of the provider exports, their first bucket start and
    last bucket end (the buckets the API pages listed, empty ones too, `listed`); the proxy's and nginx's lines as
    width 0."""
    pages = "UNION ALL SELECT bucket_start, bucket_end FROM provider_buckets" if listed else ""
    return Step("provider_export_spans", f"""
        SELECT bucket_end - bucket_start AS width, min(bucket_start) AS first, max(bucket_end) AS last
        FROM (SELECT bucket_start, bucket_end FROM provider_usage
              UNION ALL SELECT bucket_start, bucket_end FROM provider_costs {pages})
        WHERE bucket_end > bucket_start GROUP BY ALL
        UNION ALL
        SELECT INTERVAL 0 SECOND, min(start_time), max(coalesce(end_time, start_time)) FROM llm_requests
        HAVING count(*) > 0
        UNION ALL
        SELECT INTERVAL 0 SECOND, min(time), max(time) FROM http_requests WHERE time IS NOT NULL HAVING count(*) > 0
    """)


def covered_share(spans: pd.DataFrame, width: pd.Timedelta, first, last):
    """For a series of `width` buckets from `first` to `last`: the share of those two buckets the evidence covers,
    where finer evidence (finer exports, the proxy's or nginx's lines) begins or ends inside them (a daily bucket of the day the evidence was collected holds only
    its first hours: its usual is that share of a whole day's); every other bucket whole. None when no finer export
    begins or ends inside them."""
    finer = spans[spans["width"] < width]
    lo, hi = finer["first"].min(), finer["last"].max()
    lo = lo if not finer.empty and first < lo < first + width else None
    hi = hi if not finer.empty and last < hi < last + width else None
    if lo is None and hi is None:
        return None

    def share(t) -> Decimal:
        seen = min(t + width, hi if hi is not None and t == last else t + width) - max(
            t, lo if lo is not None and t == first else t)
        return Decimal(str(max(min(seen / width, 1.0), 0.0)))
    return share


def _median(values: list[Decimal]) -> Decimal:
    """The exact median of Decimals (0 for none)."""
    return statistics.median(values) if values else Decimal(0)


def _filled(g: pd.DataFrame, lo=None, hi=None) -> tuple[pd.Timedelta, dict]:
    """One series' buckets at their native width, quiet buckets as zero: (width, {bucket_start: cost})."""
    per = g.groupby("bucket_start", as_index=False).agg(
        cost_usd=("cost_usd", lambda c: sum((Decimal(str(v)) for v in c.dropna()), Decimal(0))),
        bucket_end=("bucket_end", "max"))
    width = per["bucket_end"].iloc[0] - per["bucket_start"].iloc[0]
    return width, filled(per, width, lo, hi)


def filled(buckets: pd.DataFrame, width: pd.Timedelta, lo=None, hi=None) -> dict:
    """{bucket_start: cost} from its first bucket (or `lo`, the export's first) to its last (or `hi`), the buckets
    missing as zero: a key used only in a spike has the export's quiet hours as its baseline."""
    first, last = buckets["bucket_start"].min(), buckets["bucket_start"].max()
    first = min(first, lo) if lo is not None and (first - lo) % width == pd.Timedelta(0) else first
    last = max(last, hi) if hi is not None and (hi - last) % width == pd.Timedelta(0) else last
    span = pd.date_range(first, last, freq=width)
    return {t: Decimal(0) for t in span} | {t: Decimal(str(c)) for t, c in zip(buckets["bucket_start"],
                                                                                buckets["cost_usd"])}


def _usual(costs: dict, width: pd.Timedelta, hot=frozenset(), fallback=None,
           kind_days: int | None = None) -> tuple[dict, Decimal]:
    """Per bucket, its usual cost: the median of the same time of day on the other days (sub-daily buckets; on
    the other days of its kind, weekday or weekend, where `kind_days` of them hold that time: a weekday's office
    hours are not a weekend's, matrix seed 99 #156), else
    `fallback(bucket)` (a coarser series' usual, spread), else the median of the series' other busy buckets, spikes
    found so far (`hot`) left out (quiet nights are not the baseline, nor is the spike); of the same kind of day
    (weekday or weekend, UTC) when SAME_KIND_MIN_DAYS of them are busy (a Monday's usual is not a Sunday's, nor
    the median of a week that is two-sevenths weekend; a weekend day with too few, the weekdays'), and without the
    export's first and last day (part days) unless nothing else is left; and the median busy bucket. `kind_days`:
    how many busy days of its kind make that usual (SAME_KIND_MIN_DAYS unless said)."""
    busy = _median([c for c in costs.values() if c])
    by_slot: dict = {}
    if width < pd.Timedelta(days=1):
        for t, c in costs.items():
            by_slot.setdefault(t - t.normalize(), []).append((t, c))
    usual = {}
    for t in costs:
        others = [(u, x) for u, x in by_slot.get(t - t.normalize(), []) if u.normalize() != t.normalize()]
        same = [x for u, x in others if (u.day_of_week >= 5) == (t.day_of_week >= 5)]
        if others:
            usual[t] = _median(same if len(same) >= (kind_days or SAME_KIND_MIN_DAYS) else [x for _, x in others])
        elif fallback is not None:
            usual[t] = fallback(t)
        else:
            pool = [(u, c) for u, c in costs.items() if c and u != t and u not in hot]
            if width >= pd.Timedelta(days=1):    # its kind of day's; else the other days, the export's part days at
                same = _same_kind(costs, t, hot, kind_days)  # its ends only when nothing else is left
                inner = [(u, c) for u, c in pool if u not in (min(costs), max(costs))]
                # a weekend day with too few of its kind: the weekdays' (which `quiet_levels` scales), not a median of
                # a Friday and the attack's other day (matrix seed 2468 #184). A weekday is not held against weekend
                # days alone: where nothing scales them, a Thursday's own work is a spike against a Saturday (#279)
                weekdays = [(u, c) for u, c in inner if u.day_of_week < 5] if t.day_of_week >= 5 else []
                pool = [(t, c) for c in same] if same is not None else weekdays or inner or pool
            usual[t] = _median([c for _, c in pool])
    return usual, busy


SAME_KIND_MIN_DAYS = 1           # a daily bucket's usual is its kind of day's (weekday, weekend) with this many busy
SAME_KIND_FIRST_DAYS = 2         # ...in a daily series' first search: one day of its kind may be the attack's other


def _same_kind(values: dict, t, hot=frozenset(), kind_days: int | None = None) -> list | None:
    """The busy daily buckets' values of the same kind of day as `t` (weekday or weekend, UTC), `t`, `hot` and the
    series' first and last bucket left out (the day the history begins in and the day it was collected on are part
    days); None when fewer than `kind_days` (SAME_KIND_MIN_DAYS)."""
    edges = (min(values), max(values))
    same = [c for u, c in values.items()
            if c and u != t and u not in hot and u not in edges and (u.day_of_week >= 5) == (t.day_of_week >= 5)]
    return same if len(same) >= (kind_days or SAME_KIND_MIN_DAYS) else None


PRECEDING_MIN_BUCKETS = 1        # the preceding window is a usual when it holds at least this many busy buckets


def _after_quiet(costs: dict, width: pd.Timedelta, usual: dict, hot: list, floor: Decimal,
                 clean: dict | None = None) -> list:
    """Buckets with no same time on another day, compared with the preceding window instead: the median of the busy
    buckets before them that were not spikes (a spike filling most of a short export is its own median, and only its
    peak stood out). `usual` is updated in place for those buckets; the spike buckets are returned. `clean`: per
    bucket a spike starts inside, what it spent before the spike (`_before_spike`): its part of the window."""
    clean = clean or {}
    days = {t.normalize() for t in costs}
    lone = {t for t in costs if len(days) < 2 or not any(t - t.normalize() + d in costs for d in days
                                                          if d != t.normalize())}
    if not lone:
        return hot
    before: list[Decimal] = []
    out = []
    after_spike = False          # a spike's sagging rate is not the usual: until spend is back at the usual
    for t in sorted(costs):
        c = costs[t]
        if t in lone and len(before) >= PRECEDING_MIN_BUCKETS:
            usual[t] = _median(before)
            spike = c > usual[t] * Decimal(SPIKE_FACTOR) and c - usual[t] > floor
        else:
            if t in lone and t in clean:     # the export's first bucket: its part before the spike is its usual
                usual[t] = clean[t]
            spike = t in hot
        after_spike = spike or after_spike and c > usual[t]
        if spike:
            out.append(t)
        elif clean.get(t, c) and not after_spike:
            before.append(clean.get(t, c))
    return out


def _runs(hot: list, step: pd.Timedelta) -> list[list]:
    """Consecutive hot buckets as runs."""
    runs: list[list] = []
    for t in hot:
        if runs and t - runs[-1][-1] <= step:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def _refine(fine: dict, usual: dict, width: pd.Timedelta, start, end, share: Decimal, after=None,
            before=None) -> tuple:
    """The spike's own buckets at the export's resolution, inside a coarse spike window widened by its length each
    side: the stretch with the largest excess over the usual (same minute on other days) counting only what exceeds
    `share` of the spike's mean excess per bucket (Kadane's maximum subarray), never across DETECTION_MINUTES
    of buckets at or under their usual. A stretch that misses the coarse spike is another's (a larger spike 30
    minutes away, matrix seed 55 #336: both refined to it and the first was never found): then the search stops at
    the coarse spikes found before and after it (ending at `after`, starting at `before`); else it may reach over
    them (a script thinning out in its last hour, a quarter hour of it not standing out: its spikes are joined).
    Returns (first, last) bucket."""
    pad = max(end - start, width)
    inside = [t for t in fine if start <= t < end]
    bar = sum((fine[t] - usual[t] for t in inside), Decimal(0)) / max(len(inside), 1) * share
    gap = max(int(pd.Timedelta(minutes=DETECTION_MINUTES) / width), 2)

    def stretch(lo, hi) -> tuple:
        best, span, run, run_start, quiet = Decimal(0), (inside[0], inside[-1]), Decimal(0), inside[0], 0
        for t in sorted(t for t in fine if lo <= t < hi):
            quiet = quiet + 1 if fine[t] <= usual[t] else 0
            if run <= 0 or quiet >= gap:      # a quiet stretch ends a spike: what follows it is something else
                run, run_start = Decimal(0), t
            run += fine[t] - usual[t] - bar
            if run > best:
                best, span = run, (run_start, t)
        return span
    span = stretch(start - pad, end + pad)
    if (span[1] < start or span[0] >= end) and (after is not None or before is not None):
        span = stretch(start - pad if after is None else max(start - pad, after),
                       end + pad if before is None else min(end + pad, before))
    lead = bar / share * RAMP_SHARE if share else Decimal(0)
    first = span[0]
    while first - width in fine and fine[first - width] - usual[first - width] > max(lead, Decimal(0)) \
            and fine[first - width] > usual[first - width] * Decimal(SPIKE_FACTOR):
        first -= width                    # its ramp: a script starting slowly, under the bar but above its usual
    return first, span[1]


def _ramped(costs: dict, usual: dict, width: pd.Timedelta, run: list) -> tuple:
    """A spike found at its series' own (sub-daily) width, with the buckets next to it that spend above SPIKE_FACTOR
    times their usual and above RAMP_SHARE of its mean excess, though under the floor: the hour a script started in
    at half past, the hour it stopped in. (A day next to a daily spike is another workday unless its calls say
    otherwise: `mixed_neighbours`.) Returns (first, last) bucket."""
    lead = sum((costs[t] - usual[t] for t in run), Decimal(0)) / len(run) * RAMP_SHARE

    def part(t) -> bool:
        return (t in costs and costs[t] - usual[t] > max(lead, Decimal(0))
                and costs[t] > usual[t] * Decimal(SPIKE_FACTOR))
    first, last = run[0], run[-1]
    while part(first - width):
        first -= width
    while part(last + width):
        last += width
    return first, last


def _joined(spans: list[tuple], apart) -> list[tuple]:
    """(first, last) spans in order, each joined to the one before unless `apart(its last, this first)`."""
    out: list[tuple] = []
    for first, last in spans:
        if out and not apart(out[-1][1], first):
            out[-1] = (out[-1][0], max(last, out[-1][1]))
        else:
            out.append((first, last))
    return out


def quiet_between(fine: dict, usual: dict, width: pd.Timedelta, after, before, floor: Decimal = Decimal(0)) -> bool:
    """Whether the buckets between two spikes hold DETECTION_MINUTES of buckets in a row at or under their usual
    (what ends a spike in `_refine`), or at most `floor` above it; if not, the spend never went back to usual: one
    spike whose rate sagged."""
    gap = max(int(pd.Timedelta(minutes=DETECTION_MINUTES) / width), 2)
    quiet = 0
    for t in sorted(t for t in fine if after < t < before):
        quiet = quiet + 1 if fine[t] - usual[t] <= floor else 0
        if quiet >= gap:
            return True
    return False


DETECTION_MINUTES = 15           # finer exports are searched at this width (noise), then refined bucket by bucket
# a refined spike's edges: buckets above this share of its mean excess. The proxy's own spend taken out (what is
# left is use outside it), a thin tail is still the attacker's; in a provider's whole series, the proxy's nightly
# batch right after an attack looks like one.
REFINE_SHARE = {"outside_proxy": Decimal("0.1"), "whole": Decimal("0.2")}
RAMP_SHARE = Decimal("0.05")     # before a refined spike, buckets above this share of its mean excess are its ramp


def series_spikes(fine: dict, width: pd.Timedelta, against_busy: bool = True,
                  longer: tuple[dict, pd.Timedelta] | None = None, share=None,
                  levels: Callable[[frozenset, int], dict] | None = None,
                  late: bool = False) -> tuple[dict, list[tuple]]:
    """One series' spikes: (usual cost per bucket, [(first, last) bucket of each spike]).

    Searched at the series' width, or at DETECTION_MINUTES when finer: a spike bucket spends SPIKE_FACTOR times its
    usual and more than SPIKE_FLOOR_USD an hour above it (and, `against_busy`, more than the median busy bucket above
    it: a nightly batch or office hours are not spikes; false for a series of use outside the proxy, where the
    proxy's own batches are already taken out); consecutive spike buckets make one spike. A spike found on a finer
    series is then narrowed to the series' own buckets (`_refine`, at REFINE_SHARE), so its window is good to one
    bucket.
    `longer`: (series, width) of the same spend over a longer time at a coarser width (an hourly export of the week
    beside a per-minute one of the night): searched instead, its longer past being the better usual. `share(bucket)`:
    the part of a bucket the evidence covers (`covered_share`): such a bucket's usual is that part of a whole one's,
    and it counts as a whole one in the others' usual.
    A spike found at the series' own width takes the part buckets at its edges (`_ramped`). A short export's
    preceding window is what it spent before the spike began, not the quarter the spike's first minutes fall in
    (`_before_spike`). `levels(hot, days)` (daily series): per bucket, the share of their usual that the key's other
    models ran at there, against the same days as the usual (the spikes found so far, `hot`, left out; `days` of a
    kind asked), when quieter or busier (`quiet_levels`): the bucket is held against its usual at that share (a
    weekend after weekday-only history: an attack on the Sunday spent 1.7 times a weekday's usual, five times the
    Sunday's; a Friday beside a weekend, its other models at 2.7 times theirs, matrix seed 99 #156).
    `late`: the series is known to have begun spending after its export began (`_spikes`' listed buckets)."""
    coarse_width = max(width, pd.Timedelta(minutes=DETECTION_MINUTES))
    coarse = _coarse(fine, width, coarse_width)
    if longer is not None and longer[1] > coarse_width and longer[0]:
        coarse, coarse_width = longer
    hours = min(coarse_width, pd.Timedelta(hours=1)) / pd.Timedelta(hours=1)
    # a series quiet for a while (a key id unused) before it spends: its own past is nothing, not its busy buckets
    first_spend = min((t for t, c in coarse.items() if c), default=None)
    new = first_spend is not None and (first_spend > min(coarse) or late) \
        or coarse_width > width and starts_late(fine, width)
    hot: list = []
    # the second time with the spikes of the first left out of the usual; days a third time when the second found
    # others (the usual of a weekend day is the median of two or three, one of them the attack's other day)
    for n in range(3 if coarse_width >= pd.Timedelta(days=1) else 2):
        if n == 2 and hot == last_hot:
            break
        last_hot = hot
        # the first search of days asks SAME_KIND_FIRST_DAYS of a kind: an attack over a weekend whose two days are
        # each other's usual is found against the weekdays first (matrix seed 99 #266); then one day of its kind
        # is the usual, the spikes left out (a Monday's is the one Friday of a short export, not its weekend: 99 #156)
        days = SAME_KIND_FIRST_DAYS if n == 0 else SAME_KIND_MIN_DAYS
        if share is not None and coarse_width == width:    # partly covered buckets count as whole ones would
            whole = {t: c / share(t) if share(t) else c for t, c in coarse.items()}
            usual, busy = _usual(whole, coarse_width, frozenset(hot), (lambda t: Decimal(0)) if new else None, days)
            usual = {t: u * share(t) for t, u in usual.items()}
        else:
            usual, busy = _usual(coarse, coarse_width, frozenset(hot), (lambda t: Decimal(0)) if new else None, days)
        floor = Decimal(SPIKE_FLOOR_USD) * Decimal(str(hours))
        bar = max(floor, busy if against_busy and not new else Decimal(0))
        level = {t: Decimal(str(round(v, 6))) for t, v in (levels(frozenset(hot), days) if levels else {}).items()
                 if t in usual and coarse_width == width}
        held = usual | {t: usual[t] * v for t, v in level.items()}
        # a quiet whole day's bar is the busy day's at its level too (the key's own work that day ran at that share);
        # not a part day at the export's ends, whose level says how much of the day the export holds
        inner = {t for t in level if min(coarse) < t < max(coarse)}
        hot = [t for t, c in sorted(coarse.items()) if c > held[t] * Decimal(SPIKE_FACTOR)
               and c - held[t] > (max(floor, bar * level[t]) if t in inner else bar)]
    from_fine = coarse_width > width and (longer is None or coarse_width != longer[1])
    lone_usual = not new and coarse_width < pd.Timedelta(days=1)
    before_after_quiet = dict(usual)
    if lone_usual:
        hot = _after_quiet(coarse, coarse_width, usual, hot, Decimal(SPIKE_FLOOR_USD) * Decimal(str(hours)),
                           _first_rise(fine, width, coarse_width) if from_fine else None)
    if coarse_width == width:
        if width >= pd.Timedelta(days=1):
            return usual, [(run[0], run[-1]) for run in _runs(hot, width)]
        # two runs with no quiet stretch between: one spike whose middle met a usual inflated by what that hour
        # spends on other days (the nightly batch at 02:00 it overlaps). Quiet: at most RAMP_SHARE of the larger
        # run's mean excess above the usual (a night hour of a few calls where other nights had none is not a
        # spike's spend: an attack at 01:00-03:00 and the office's morning ramp are two things)
        spans = [_ramped(coarse, usual, width, run) for run in _runs(hot, width)]
        level = {}
        for first, last in spans:
            inside = [c - usual[t] for t, c in coarse.items() if first <= t <= last]
            level[first] = level[last] = sum(inside, Decimal(0)) / len(inside) * RAMP_SHARE
        return usual, _joined(spans, lambda last, first: quiet_between(coarse, usual, width, last, first,
                                                                       max(level[last], level[first], Decimal(0))))
    # a series that spent nothing before its spike: all it spends next to it is the spike's, however thin
    edge = Decimal(0) if new else REFINE_SHARE["whole" if against_busy else "outside_proxy"]

    def refined(usual: dict) -> tuple[dict, list]:
        usual_fine = _spread(fine, width, usual, coarse_width)
        # two runs refined into one stretch, or spending above usual between, are one
        runs = _runs(hot, coarse_width)
        return usual_fine, _joined(sorted(_refine(fine, usual_fine, width, run[0], run[-1] + coarse_width, edge,
                                                  runs[i - 1][-1] + coarse_width if i else None,
                                                  runs[i + 1][0] if i + 1 < len(runs) else None)
                                          for i, run in enumerate(runs)),
                                   lambda last, first: first > last + coarse_width
                                   and quiet_between(fine, usual_fine, width, last, first))

    usual_fine, spans = refined(usual)
    if lone_usual and from_fine and (clean := _before_spike(fine, width, coarse_width, spans)):
        usual = dict(before_after_quiet)  # the preceding window again, without the spike's first minutes
        hot = _after_quiet(coarse, coarse_width, usual, hot, Decimal(SPIKE_FLOOR_USD) * Decimal(str(hours)), clean)
        usual_fine, spans = refined(usual)
    return usual_fine, spans


def _coarse(fine: dict, width: pd.Timedelta, coarse_width: pd.Timedelta) -> dict:
    """A series' cost per bucket summed into buckets of `coarse_width` (the same buckets when it is no coarser)."""
    coarse: dict = {}
    for t, c in fine.items():
        k = t.floor(coarse_width) if coarse_width > width else t
        coarse[k] = coarse.get(k, Decimal(0)) + c
    return coarse


def _spread(fine: dict, width: pd.Timedelta, usual_coarse: dict, coarse_width: pd.Timedelta) -> dict:
    """Per bucket of a fine series, its usual (`_usual`): the same time on other days, else its coarse bucket's
    usual (`usual_coarse`, buckets of `coarse_width`) spread evenly over the fine buckets it holds."""
    per = Decimal(int(coarse_width / width))
    return _usual(fine, width, fallback=lambda t: usual_coarse.get(t.floor(coarse_width), Decimal(0)) / per)[0]


LATE_START_BUCKETS = 2           # a series silent this many buckets at least before its first spend...
LATE_START_FACTOR = 3            # ...and this many times longer than any pause in its first hour began there,
LATE_START_SHARE = Decimal("0.25")  # ...when its first quarter hour spent this share of its busiest one at least


def starts_late(fine: dict, width: pd.Timedelta) -> bool:
    """Whether a (fine) series began spending after its export began: silent for LATE_START_BUCKETS buckets or
    more, LATE_START_FACTOR times longer than any pause in its first hour of spending (a second key the attacker
    began using eight minutes into the export, ten calls a minute after that: its first quarter hour is not a usual
    it had before; a key calling every few minutes whose first minute was quiet is no newcomer), and spending in its
    first DETECTION_MINUTES LATE_START_SHARE of what it spent in its busiest ones at least: a key whose own calls
    came every minute or two for a quarter hour before an attack on it began (matrix seed 8086 #161: $0.8 against
    the attack's $12 a quarter hour) had those calls as its usual, not nothing (its nightly batch inside the attack
    was then the attack's, and a call of its own 6 minutes after it: +12.3 %, end +6 min)."""
    times = sorted(fine)
    spent = [t for t in times if fine[t]]
    if not spent:
        return False
    lead = (spent[0] - times[0]) / width
    hour = [t for t in spent if t < spent[0] + pd.Timedelta(hours=1)]
    pause = max(((b - a) / width - 1 for a, b in zip(hour, hour[1:])), default=0)
    if lead < LATE_START_BUCKETS or lead <= LATE_START_FACTOR * pause:
        return False
    quarter = pd.Timedelta(minutes=DETECTION_MINUTES)
    first = sum((fine[t] for t in spent if t < spent[0] + quarter), Decimal(0))
    busiest: dict = {}
    for t in spent:
        busiest[t.floor(quarter)] = busiest.get(t.floor(quarter), Decimal(0)) + fine[t]
    return first >= LATE_START_SHARE * max(busiest.values())


def _before_spike(fine: dict, width: pd.Timedelta, coarse_width: pd.Timedelta, spans: list[tuple]) -> dict:
    """Per coarse bucket a refined spike starts inside (not at its start): what its buckets before the spike spent,
    at the whole coarse bucket's length. A spike starting at 22:59 puts its first minute into the 22:45 quarter:
    with a short export that quarter is the whole preceding window, and its usual would be mostly the spike. The
    spike's minutes are its refined ones and those just before them spending half its median bucket or more (with
    the quarter as their usual they did not stand out)."""
    out = {}
    for first, last in spans:
        cut = _rise(fine, width, coarse_width, first, last)
        k = cut.floor(coarse_width)
        before = [c for t, c in fine.items() if k <= t < cut]
        if k < cut and sum(before, Decimal(0)):          # a quarter quiet before the spike: left as it was
            out[k] = sum(before, Decimal(0)) * int(coarse_width / width) / len(before)
    return out


def _rise(fine: dict, width: pd.Timedelta, coarse_width: pd.Timedelta, first, last):
    """Where a spike (`first` to `last`) began in the fine buckets: back from `first`, within a coarse bucket, while
    each spends half its median bucket or more."""
    level = _median([fine[t] for t in fine if first <= t <= last]) / 2
    cut = first
    while cut - width in fine and fine[cut - width] >= level > 0 and cut - width >= first - coarse_width:
        cut -= width
    return cut


def _first_rise(fine: dict, width: pd.Timedelta, coarse_width: pd.Timedelta) -> dict:
    """The export's first coarse bucket when a spike began inside it (`_before_spike` of its second one): the
    minutes from where it rose to the bucket's end spending SPIKE_FACTOR times a minute what those before spent
    (what the key's own calls spend steadily, noise, is no rise). A short export whose first quarter hour held five
    minutes of the key's gpt-4o-mini calls and a leak's first ten: that quarter was the preceding window of every
    other, and no spike was found at all (matrix seed 2222 #181). {} otherwise."""
    if coarse_width <= width:
        return {}
    k = min(fine).floor(coarse_width)
    nxt = k + coarse_width
    span = sorted(t for t in fine if nxt <= t < nxt + coarse_width)
    if not span:
        return {}
    cut = _rise(fine, width, coarse_width, span[0], span[-1])
    before = [c for t, c in fine.items() if k <= t < cut]
    after = [c for t, c in fine.items() if cut <= t < nxt]
    if not before or not after or not sum(before, Decimal(0)):
        return {}
    rate = sum(before, Decimal(0)) / len(before)
    if sum(after, Decimal(0)) / len(after) < Decimal(SPIKE_FACTOR) * rate:
        return {}
    return {k: rate * int(coarse_width / width)}


def new_models(g: pd.DataFrame, spans: list[tuple]) -> set:
    """The models a series spends on in one of its spikes that it never spent on before that spike (a key that only
    ever ran gpt-4o-mini and gpt-4o, then gpt-4 in volume), when it also spends on others there: the new model is its
    own workload (the spike's signature), the usual models beside it another (a nightly batch at the same hour).
    Sub-daily, "before" is before the DETECTION_MINUTES ahead of the spike: its model's first thin minutes, before it
    stood out, are its own (matrix seed 31 #316: gpt-4 from 02:00, the spike from 02:02; the nightly batch on gpt-4o
    counted with it, +16 %)."""
    spent = g[g["cost_usd"].fillna(0) > 0]
    first = spent.groupby("model")["bucket_start"].min()
    width = (g["bucket_end"] - g["bucket_start"]).min()
    ahead = _lead(width) if width < pd.Timedelta(days=1) else pd.Timedelta(0)
    out = set()
    for start, last in spans:
        span = spent[(spent["bucket_start"] >= start) & (spent["bucket_start"] <= last)]
        inside = set(span["model"])

        def ramp(m) -> bool:
            """Its buckets before the spike follow each other to it, a bucket apart at most: a script's first thin
            minutes, not the key's own calls minutes apart (matrix seed 4242 #189: the key's gpt-4o calls 9 and 5
            minutes before a leak, 17 minutes of export; taken as the leak's, start -9 min)."""
            ts = sorted(spent.loc[(spent["model"] == m) & (spent["bucket_start"] < start), "bucket_start"]) + [start]
            return all(b - a <= 2 * width for a, b in zip(ts, ts[1:]))
        new = {m for m in inside if first[m] >= start or first[m] >= start - ahead and ramp(m)}
        if inside and new == inside:
            # an export beginning minutes before the spike, every model first seen in them (the spike found from
            # the export's first minute): the spike's main model (its dearest) is new when the key spent on another
            # before it (matrix seed 777 #282, #20: 12 minutes of export, gpt-4o-mini and one gpt-4o call, then
            # gpt-4 at 40 calls a minute beside the nightly batch's gpt-4o, +17 %)
            main = span.groupby("model")["cost_usd"].sum().idxmax()
            new = {main} if first[main] > first.min() else set()
        if new and inside - new and first.min() < min(first[m] for m in new):
            out |= new
    return out


def split_new_models(frame: pd.DataFrame, provider: str, series: str, models: set) -> pd.DataFrame:
    """The series' rows of `models` as a series of their own ('<series> <model>'); the rest stays the series."""
    mine = (frame["provider"] == provider) & (frame["series"] == series) & frame["model"].isin(models)
    return frame.assign(series=frame["series"].where(~mine, frame["series"] + " " + frame["model"]))


def _spikes(frame: pd.DataFrame, exports: pd.DataFrame,
            listed: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[tuple]]:
    """(the series as searched, [(provider, series, bucket_minutes, filled series, usual cost per bucket,
    [(first, last) bucket of each spike])] per series with a spike (`series_spikes`)); `exports`: the time each
    export width covers (`export_spans_step`). A spike holding a model new to its series (`new_models`): that
    model is searched as a series of its own (its whole spend the spike's, its usual nothing) and the series'
    usual models without it, so the usual models' own surge at the same time is not counted as the new model's.
    `listed` (`listed_step`): the buckets the export's pages listed; a sub-daily series that was quiet in the
    export's first listed buckets, for longer than it paused in its first hour (`starts_late`), had nothing as its
    past (matrix seed 123 #469; five quiet minutes before a key calling every few minutes are no such start, 123
    #319). Not a daily one: its first and last day are part days, and an empty day the pages list before the history
    began is no part day of it."""
    out = []
    for (provider, series), g in frame.groupby(["provider", "series"], sort=True):
        export = frame[frame["provider"] == provider]["bucket_start"]
        width, fine = _filled(g, export.min(), export.max())
        late = False
        if listed is not None and len(listed) and width < pd.Timedelta(days=1):
            same = listed[(listed["provider"] == provider) & (listed["width"] == width)]
            first = same["first"].min() if len(same) else None
            if first is not None and first < min(fine) and (min(fine) - first) % width == pd.Timedelta(0):
                late = starts_late(dict.fromkeys(pd.date_range(first, min(fine) - width, freq=width), Decimal(0))
                                   | fine, width)
        share = covered_share(exports, width, min(fine), max(fine))
        levels = None
        if width >= pd.Timedelta(days=1):   # a quiet (busy) day of the key's other models: its own work was too
            def levels(hot: frozenset, days: int, g=g, fine=fine, share=share) -> dict:
                return {t: v for t in fine for v in [quiet_levels(g, fine, [t], width, share, hot, days).get(t)] if v}
        usual, spans = series_spikes(fine, width, share=share, levels=levels, late=late)
        if spans and (models := new_models(g, spans)):
            return _spikes(split_new_models(frame, provider, series, models), exports, listed)
        if spans:
            out.append((provider, series, int(width / timedelta(minutes=1)), fine, usual, spans))
    return frame, out


WORKLOAD_FACTOR = 2.5           # a bucket whose calls carry this many times the spike's input tokens a call...
WORKLOAD_MAX_SHARE = 0.25       # ...is another workload on the key, when such buckets are at most this share of it
WORKLOAD_ON_TOP = 1.5            # ...and each spends this many times the spike's median bucket above its usual


def other_workload(rows: pd.DataFrame, costs: dict, usual: dict, run: list) -> tuple[set, tuple]:
    """The buckets of a spike (sub-daily `run`) whose calls are of another size: input tokens per call
    WORKLOAD_FACTOR times the median bucket's of the spike, spending WORKLOAD_ON_TOP times its median bucket's excess
    (a load on top of it), in at most WORKLOAD_MAX_SHARE of its busy buckets (a stretch of them at either end of the
    spike, a batch starting after the attack, however long), on a series that usually spends there (a
    nightly batch of long documents on the key the attacker also uses: the provider's usage shows each minute's calls
    and tokens, not whose they were). Returns (those buckets, (the spike's input tokens a call, theirs, every
    bucket of calls that size)); none when the export has no call counts. On a series that usually spends nothing
    there, only calls that write apart from the spike's too (`_output_ratios`): another kind of calls, not the
    spike's own larger ones (matrix seed 6007 #89: a quarter hour of history in which the key called only
    gpt-4o-mini, then a leak on gpt-4o; the key's nightly batch inside it, 83k input tokens a call at 1.8 % output
    against the leak's 27k at 9 %, counted whole: +11.8 %)."""
    if not run or "input_tokens" not in rows:
        return set(), (0, 0, set())
    inside = rows[(rows["bucket_start"] >= run[0]) & (rows["bucket_start"] <= run[-1])]
    size = _sizes(inside)
    size = size[size.index.isin([t for t in run if costs[t] > usual[t]])]
    if len(size) < 4:
        return set(), (0, 0, set())
    typical = float(size.median())
    excess = pd.Series({t: float(costs[t] - usual[t]) for t in size.index})
    # of another size, and spending on top of the spike (a few large calls where the spike is thin are its own)
    large = size >= WORKLOAD_FACTOR * typical
    other = size[large & (excess >= WORKLOAD_ON_TOP * float(excess.median()))]
    # a stretch of them at either end is a workload before or after the spike (the nightly batch starting minutes
    # after the attack stopped), however long: only those among the spike's own buckets are held to the share
    flags = large.tolist()
    lead = next((i for i, x in enumerate(flags) if not x), len(flags))
    tail = next((i for i, x in enumerate(flags[::-1]) if not x), len(flags))
    if not large.any() or large.iloc[lead:len(flags) - tail].sum() > WORKLOAD_MAX_SHARE * len(size):
        return set(), (0, 0, set())
    if not any(usual[t] for t in run):
        # ...and only inside it: at its ends, on a key with no past, they are its own first or last calls (matrix
        # seed 3 #20: a few calls of 75k input tokens in a new key's first minutes, start +2 min when cut off)
        large &= size.index.isin(size.index[lead:len(flags) - tail])
        other = other[other.index.isin(size[large].index)]
        per = inside.groupby("bucket_start")[[c for c in ("input_tokens", "output_tokens") if c in inside]].sum()
        theirs = per.index.isin(size[large].index)
        if other.empty or _output_ratios(per[~theirs], per[theirs]) is None:
            return set(), (0, 0, set())
    return set(other.index), (typical, float(size[large].median()), set(size[large].index))


def _trimmed(run: list, other: set, sizes: tuple, costs: dict, usual: dict) -> list:
    """A spike whose first or last buckets are another workload's (`other_workload`; `sizes[2]`: every bucket of
    calls that size, its thin ends included, cut off when apart from the spike by a quiet bucket) ends before them:
    those buckets, and the buckets between them and the spike that spent no more than a fifth of its mean excess (the
    refinement's bar, REFINE_SHARE), are cut off."""
    if not (other or sizes[2]):
        return run
    large = sizes[2] | other
    mine = [costs[t] - usual[t] for t in run if t not in large]
    bar = sum(mine, Decimal(0)) / max(len(mine), 1) * REFINE_SHARE["whole"]

    def edge(order: list) -> int:
        """How many buckets from this end are the other workload's (its calls' size; its thin ends too) or spend
        no more than the bar, when that stretch holds one of its buckets proper, or calls of its size apart from the
        spike by a quiet bucket nearer the spike (a batch starting after the spike went quiet); else 0."""
        n = 0
        while n < len(order) and (order[n] in large or costs[order[n]] - usual[order[n]] <= bar):
            n += 1
        stretch = order[:n]
        # apart: a thin bucket of the spike's size between calls of that size and the spike (the spike went quiet,
        # then the batch); a thin first minute outside a large one is the spike's own ramp, not apart from it
        apart = any(t in large and any(u not in large for u in stretch[i + 1:]) for i, t in enumerate(stretch))
        return n if apart or any(t in other for t in stretch) else 0

    hi = len(run) - edge(run[::-1])
    lo = edge(run[:hi])
    return run[lo:hi]


PROBE_SHARE = 0.1               # a key test's calls carry at most this share of the input tokens of the spike's calls


def _lead(width: pd.Timedelta) -> pd.Timedelta:
    """The stretch next to a spike searched for its key test, first or last calls: DETECTION_MINUTES (a quiet
    stretch that long ends a spike), a bucket at least."""
    return max(int(pd.Timedelta(minutes=DETECTION_MINUTES) / width), 1) * width


def _sizes(rows: pd.DataFrame) -> pd.Series:
    """Input tokens a call per bucket of a series' rows (buckets with calls)."""
    per = rows.groupby("bucket_start")[["requests", "input_tokens"]].sum()
    per = per[per["requests"] > 0]
    return per["input_tokens"] / per["requests"]


def _size(rows: pd.DataFrame, buckets: list) -> float:
    """The median of the input tokens a call of these buckets."""
    return float(_sizes(rows[rows["bucket_start"].isin(buckets)]).median())


def own_edges(rows: pd.DataFrame, run: list, width: pd.Timedelta) -> list:
    """A fine spike (buckets of DETECTION_MINUTES or less) without its first and last buckets whose calls of its
    main model are the key's own by their output tokens: output per token of input nearer (on a log scale) the
    key's usual than the spike's, when the two are MIXED_FACTOR apart. A slow script (three calls a minute) stands
    out from the key's own minutes by little, and the ramp took in the key's own calls of the minutes before it
    (matrix seed 77 #202, #326: the start two minutes early). A series with no calls outside the spike (a model new
    to its key): calls writing MIXED_FACTOR cubed times less a token of input than the spike's. Returns the run;
    unchanged without output tokens."""
    if len(run) < 3 or width > pd.Timedelta(minutes=DETECTION_MINUTES) or "output_tokens" not in rows:
        return run
    mine = _main_model_buckets(rows, run)
    busy = None if mine is None else mine[mine["requests"] > 0]
    if busy is None or busy.empty:
        return run
    outside = busy[~busy.index.isin(run)]
    ratios = _output_ratios(busy[busy.index.isin(run)], outside)
    if ratios is None and outside.empty and busy["input_tokens"].sum():
        # a model new to its key (its series holds the spike alone): a call at an edge writing MIXED_FACTOR cubed
        # times less (or more) a token of input than the spike is the key's own (matrix seed 11 #116: the proxy's
        # gpt-4o call three minutes after the attack, 0.7 output tokens per 100 of input against its 9; end +3 min)
        rho = float(busy["output_tokens"].sum() / busy["input_tokens"].sum())
        ratios = (rho, rho / MIXED_FACTOR ** 6) if rho else None
    if ratios is None:
        return run
    rho, r = ratios
    middle = (rho * r) ** 0.5

    def own(t) -> bool:
        if t not in busy.index:
            return True                  # none of its calls there
        x = float(busy.loc[t, "output_tokens"] / busy.loc[t, "input_tokens"]) if busy.loc[t, "input_tokens"] else 0
        return x < middle if rho > r else x > middle
    lo, hi = 0, len(run)
    while lo < hi - 1 and own(run[lo]):
        lo += 1
    while hi - 1 > lo and own(run[hi - 1]):
        hi -= 1
    return run[lo:hi]


def key_test(rows: pd.DataFrame, costs: dict, run: list, width: pd.Timedelta) -> list:
    """The buckets before a spike (sub-daily `run`) that test the key: within DETECTION_MINUTES before it (a quiet
    stretch that long ends a spike), buckets whose calls carry at most PROBE_SHARE of the input tokens a call of the
    spike's and of the smallest the key sent in any bucket outside that stretch and the spike (a stolen key is tried
    with a few tokens before a script spends it; a key whose own work sends calls that small, such as health
    checks, shows them elsewhere too, and beside them, in that stretch; a call a little smaller than the key's others
    is one of them: matrix seed 55 #365, an export beginning 16 minutes before the spike, the key's own small calls
    of 1,900 to 2,900 input tokens in them, 2,700 the bar). Returns those buckets, earliest first; none without call
    counts."""
    if not run or width >= pd.Timedelta(days=1) or "input_tokens" not in rows or not rows["requests"].any():
        return []
    lead = _lead(width)

    def tests(sizes: pd.Series, own: bool = False) -> set:
        spike = sizes[sizes.index.isin(run)]
        near = sizes[(sizes.index >= run[0] - lead) & (sizes.index < run[0])]
        if spike.empty or near.empty:
            return set()
        small = near[near <= PROBE_SHARE * float(spike.median())]
        rest = sizes[~sizes.index.isin(run) & ~sizes.index.isin(small.index)]
        if own and rest.empty:           # no calls of its own on that model to hold it against
            return set()
        floor = PROBE_SHARE * float(rest.min()) if len(rest) else float("inf")
        return {t for t, size in small.items() if t in costs and size <= floor}
    # the key's calls of every model, and of the spike's main model alone: a test on that model in a minute with the
    # key's own call of a small model (matrix seed 777 #45: a 12-token gpt-4o call beside a 2,650-token gpt-4o-mini
    # one, 1,331 a call, three minutes before the script; the key's own gpt-4o calls carry 19k to 68k; start +3 min),
    # when the key made calls of that model outside the spike
    main = _main_model(rows, run)
    on_main = tests(_sizes(rows[rows["model"] == main]), True) if main is not None else set()
    return sorted(tests(_sizes(rows)) | on_main)


LEAD_GAP_MINUTES = 5             # a spike's first calls come at most this far apart from the next ones
LEAD_BRIDGE_MINUTES = 8          # ...or this far, to one with another within LEAD_GAP_MINUTES beyond it
LEAD_MAX_MINUTES = 60            # ...in a chain reaching this far at most
LEAD_PAIR_CALLS = 1.5            # ...or to one holding this many of its calls by output (two, rounded)
ALONE_QUANTILE = 0.95            # a call alone no larger than this share of a spike's calls alone is of its size
LEAD_OWN_BEYOND = 2              # a slow leak's first call is known by the key's own calls before it, in this many
#                                  buckets


PROXY_SERIES_SHARE = 0.5         # a series with calls in this share of the buckets nginx served the proxy's calls in


def proxy_explained(rows: pd.DataFrame, run: list, width: pd.Timedelta, served: dict) -> set:
    """The buckets of a sub-daily series whose calls the proxy's, as nginx shows them served (`served`:
    proxy_load.served_calls), account for: no more calls than nginx served there, when the series carries the
    proxy's calls (outside `run` it holds calls in PROXY_SERIES_SHARE of the buckets nginx served any in; another
    key's calls are not the proxy's). Empty without call counts or nginx."""
    if not run or width > pd.Timedelta(minutes=DETECTION_MINUTES) or not carries_proxy(rows, run, served):
        return set()
    calls = rows.groupby("bucket_start")["requests"].sum()
    return {t for t, n in calls.items() if 0 < n <= served.get(t, 0)}


def carries_proxy(rows: pd.DataFrame, run: list, served: dict, surged=frozenset()) -> bool:
    """Whether a series carries the proxy's calls (`served`: nginx's served calls at its width, from
    proxy_load.served_calls): outside `run` it holds calls in PROXY_SERIES_SHARE of the buckets nginx served any in
    (another key's calls are not the proxy's); or, where nginx covers no time outside it, in the buckets of `run` in
    which nginx shows the proxy surging (`surged`) its calls rose above its median bucket by PROXY_SERIES_SHARE of
    the calls nginx served there at least. False without call counts or nginx."""
    if not served or not run or "requests" not in rows:
        return False
    calls = rows.groupby("bucket_start")["requests"].sum()
    outside = [t for t, n in served.items() if n and not run[0] <= t <= run[-1]]
    if outside:
        return sum(calls.get(t, 0) > 0 for t in outside) >= PROXY_SERIES_SHARE * len(outside)
    inside = [t for t in run if t in surged]
    typical = float(calls[calls.index.isin(run)].median()) if calls.index.isin(run).any() else 0.0
    proxy = sum(served.get(t, 0) for t in inside)
    rose = sum(max(float(calls.get(t, 0)) - typical, 0.0) for t in inside)
    return proxy >= LOAD_MIN_CALLS and rose >= PROXY_SERIES_SHARE * proxy


def slow_start_usual(rows: pd.DataFrame, costs: dict, usual: dict, run: list, width: pd.Timedelta,
                     served: dict) -> dict:
    """`usual` for a spike (`run`, sub-daily) whose first calls (`lead_in`) began in a quarter hour before the one it
    stood out in, in an export of less than a day (its usual the quarter hours of the rest): those quarter hours are
    the spike's, not the key's usual, and the usual is the median of the others. A slow leak for 37 minutes before it
    stood out was half the quarter hours of a 50-minute history, and its usual $0.07 a minute against the key's own
    $0.017 (matrix seed 2718 #215: -21 %); a leak's first three minutes in the export's first quarter hour, the
    preceding window of a spike that stood out at 23:32, made it $1.55 against cents (6007 #319: -15.8 %). Unchanged
    otherwise (the quarter hour it stood out in is `_before_spike`'s), and for a series whose usual in the run is
    nothing (new)."""
    quarter = pd.Timedelta(minutes=DETECTION_MINUTES)
    if not run or width >= quarter or max(costs) - min(costs) >= pd.Timedelta(days=1) \
            or not any(usual.get(t) for t in run):
        return usual
    first = lead_in(rows, costs, run, width, explained=proxy_explained(rows, run, width, served))
    if not first or first[0].floor(quarter) == run[0].floor(quarter):
        return usual
    coarse = _coarse(costs, width, quarter)
    hot = frozenset(k for k in coarse if first[0] < k + quarter and k <= run[-1])
    return _spread(costs, width, _usual(coarse, quarter, hot)[0], quarter)


def lead_in(rows: pd.DataFrame, costs: dict, run: list, width: pd.Timedelta, after: bool = False,
            explained: set = frozenset()) -> list:
    """The buckets before a spike (sub-daily `run`) that hold its first calls: within LEAD_MAX_MINUTES before it,
    buckets whose calls of its main model are of its size (within MIXED_FACTOR of its median bucket's) when the key's
    own calls of that model are not (their median bucket MIXED_FACTOR times off, calls of the spike's size in at most
    PROBE_SHARE of their buckets); and, where the export has output tokens and the spike's calls write MIXED_FACTOR
    times more (or less) a token of input than the key's others, the buckets that hold half a call of the spike's or
    more by their output (`_output_split`), their calls no MIXED_FACTOR times larger than its (the key's own calls:
    those outside the spike and the DETECTION_MINUTES next to it), and buckets of one call of its size that writes
    nearer its way than the key's, in logs, where the key's own calls alone seldom do both. A stolen key's first
    calls after it was found (a stuffing script's hit, a test with a real prompt) come minutes before the script spends
    it, too thin to stand out as a spike. Only those each within LEAD_GAP_MINUTES of the next (the spike's first bucket
    for the last). Returns those buckets, earliest first; none for buckets wider than DETECTION_MINUTES (an hour before
    a spike is not its first minutes). `after`: the same after the spike, its last calls (a slow script's last call
    after a quiet minute that ended the refined spike). `explained`: buckets whose calls nginx shows the proxy
    serving (`proxy_explained`): none of them is the spike's (matrix seed 123 #218: the proxy's own call three
    minutes before a slow leak, of its size and output, was taken as its first, start -3 min)."""
    if not run or width > pd.Timedelta(minutes=DETECTION_MINUTES) or "input_tokens" not in rows:
        return []
    mine = _main_model_buckets(rows, run)
    if mine is None:
        return []
    busy = mine[mine["requests"] > 0]
    size = busy["input_tokens"] / busy["requests"]
    lead = _lead(width)
    spike = float(size[size.index.isin(run)].median())
    near = size[(size.index > run[-1]) & (size.index <= run[-1] + lead)] if after else \
        size[(size.index >= run[0] - lead) & (size.index < run[0])]
    others = busy[~busy.index.isin(run) & ~busy.index.isin(near.index)]     # the key's own calls
    own = size[others.index]
    if near.empty or own.empty or not spike:
        return []
    # the chain may go on further, through buckets like the spike's: a script starting slowly (matrix seed 31 #20:
    # one to four calls a minute for 25 minutes before it stood out, start +11 min)
    reach = pd.Timedelta(minutes=LEAD_MAX_MINUTES)
    near = size[(size.index > run[-1]) & (size.index <= run[-1] + reach)] if after else \
        size[(size.index >= run[0] - reach) & (size.index < run[0])]

    core = busy[busy.index.isin(run)]
    a = float(core["input_tokens"].sum() / core["requests"].sum())

    def like(x) -> bool:
        return spike / MIXED_FACTOR < x < spike * MIXED_FACTOR
    # the key's own calls for the split by output: those outside the spike and the stretch next to it; when they do
    # not write apart from the spike's as a whole, those of them that do (`_own_cluster`). A slow leak, one or two
    # calls a minute among the key's own for 37 minutes before it stood out, was half the key's "own" calls, so
    # output told nothing (matrix seed 2718 #215, start +37 min)
    own_calls = _own_cluster(core, others) if _output_ratios(core, others) is None and "output_tokens" in busy \
        else None
    slow = own_calls is not None
    reference = others.loc[own_calls] if slow else others
    # ...calls no larger than the spike's (a batch of long documents right after it writes more than the key's
    # usual too); a call alone no larger than the ALONE_QUANTILE of the spike's calls alone, when it has 1 /
    # PROBE_SHARE of them at least: a script's prompts vary more than its minutes' means do (its last call but two,
    # 39.6k writing 6.3 %, against its median minute's 24.8k, its calls alone 12.9k to 73.6k: matrix seed 1234 #115,
    # end -10 min)
    ones = size[size.index.isin(run) & (busy["requests"] == 1)]
    cap = {1: max(spike * MIXED_FACTOR, float(ones.quantile(ALONE_QUANTILE)))} if len(ones) >= 1 / PROBE_SHARE else {}
    told = {t: _output_split(busy.loc[t], core, reference, a) for t in near.index
            if t in costs and t not in explained and near[t] < cap.get(busy.loc[t, "requests"], spike * MIXED_FACTOR)}
    by_output = {t for t, n_a in told.items() if n_a is not None and n_a >= 0.5}
    # ...and only where the key's own calls are enough to say so: one in 1 / PROBE_SHARE buckets of the spike's size
    # is no rare call among two (matrix seed 31 #438: an export of half an hour before the spike, the key's own
    # gpt-4o calls in two of its minutes, 49k to 127k input tokens, then one of 25k two minutes before a script's
    # 27k calls, writing as little as the key's own: start -2 min). After the spike, only where output does not
    # tell: a script's last calls write as its others did (a call of its size five minutes after it, writing 1.2 %
    # as the key's own calls do against the script's 19 %, is the key's: matrix seed 7777 #61, end +5 min), where
    # its first may not (a stuffing script's hit, a test of the key with a prompt of its own: 77 #97)
    by_size = set() if len(own) < 1 / PROBE_SHARE or like(float(own.median())) or own.map(like).mean() > PROBE_SHARE \
        else {t for t, x in near.items() if t in told and like(x) and not (after and told[t] is not None)}
    # a call alone is one kind or the other, not a mix of the two that the split by output weighs: of the spike's
    # size and writing nearer its way than the key's (in logs: output a token of input spreads by factors), where the
    # key's own calls seldom do both (in at most PROBE_SHARE of their buckets of one call). A leak's last call, 26k
    # writing 3.9 % against its 9 % and the key's 0.8 % (0.36 of a call by the split), eight minutes after its
    # others and a minute before another; the key's calls, 9k to 128k, of the spike's size in a fifth of their
    # minutes, doing both in 2 % (matrix seed 1234 #115: end -10 min)
    alone = sorted(t for t, n_a in told.items() if n_a is not None and busy.loc[t, "requests"] == 1 and like(near[t]))
    single = others[others["requests"] == 1]
    by_call = set()
    if alone and not slow and len(single) >= 1 / PROBE_SHARE:
        both = (_nearer(single, core, others) & single["input_tokens"].map(like)).sum()
        if both <= PROBE_SHARE * len(single):
            by_call = {t for t, nearer in zip(alone, _nearer(busy.loc[alone], core, others)) if nearer}
    # a chain back from the spike: each within LEAD_GAP_MINUTES of the next, or LEAD_BRIDGE_MINUTES when the chain
    # goes on beyond it, or the bucket holds two of its calls by output (a call of the key's own that wrote 6 %
    # before a slow script is no link, alone; matrix seed 77 #425, start -10 min; a leak of one or two calls a
    # minute, three of its minutes on end writing like the key's own, left a gap of six: seed 5151 #335, start
    # +26 min; a slow leak's pause of seven, 2718 #215);
    # through another workload's minutes (calls WORKLOAD_FACTOR times the spike's, more of them than its median
    # bucket holds: the nightly batch for four minutes, the slow script's calls going on beside and after it, matrix
    # seed 8 #355, end -16 min), which are no link of it; not the key's own odd large call (matrix seed 21 #202)
    many = float(core["requests"].median())
    through = {t for t, x in near.items() if x >= spike * WORKLOAD_FACTOR and busy.loc[t, "requests"] > many}
    shared = _shared(busy, through, busy[~busy.index.isin(run) & ~busy.index.isin(near.index)
                                         & (size >= spike * WORKLOAD_FACTOR)], core, a)
    out, nxt = [], run[-1] if after else run[0]
    gap, bridge = (max(pd.Timedelta(minutes=m), width) for m in (LEAD_GAP_MINUTES, LEAD_BRIDGE_MINUTES))
    links = (by_output | by_size | by_call) - (through - shared)
    # ...or a bucket that holds two of the spike's calls by their output (LEAD_PAIR_CALLS, rounded): two links a
    # minute apart and two calls in one minute are alike (a leak thinning out, two calls writing 11.7 % six minutes
    # after its last, two writing 8.8 % six minutes later, against the key's 1 %: matrix seed 8642 #113, end -12 min)
    pairs = {t for t, n_a in told.items() if n_a is not None and n_a >= LEAD_PAIR_CALLS}
    chain = sorted(links | through, reverse=not after)
    for t, beyond in zip(chain, chain[1:] + [None]):
        step = abs(nxt - t)
        bridged = t in links and (t in pairs or beyond in links and abs(t - beyond) <= gap)
        if step > bridge or step > gap and not bridged:
            break
        if t not in through or t in shared:
            out.append(t)
        nxt = t
    # a slow leak's chain, found against the key's own calls picked out of the rest, stops where those go on
    # without it: in the hour further out than its last link the key made calls (in LEAD_OWN_BEYOND buckets at
    # least: one is no way of calling), all of them writing nearer its own way than the spike's (a chain that runs
    # to the export's end, or past calls like the spike's, is the key's own way of calling: one kind of calls,
    # their output spread)
    if slow and out:
        edge = max(out) if after else min(out)
        beyond = busy[(busy.index > edge) & (busy.index <= edge + reach)] if after else \
            busy[(busy.index < edge) & (busy.index >= edge - reach)]
        if len(beyond) < LEAD_OWN_BEYOND or _nearer(beyond, core, reference).any():
            return []
    return sorted(out)


SHARED_AGREE = 2                # two splits of a bucket agree when their counts are at most this many times apart
SHARED_NOISE = 2                # ...and the count by size is this many times what the workload's own spread makes


def _shared(busy: pd.DataFrame, through: set, work: pd.DataFrame, core: pd.DataFrame, a: float) -> set:
    """The buckets of another workload next to a spike (`through`: its calls WORKLOAD_FACTOR times the spike's) that
    hold one of the spike's calls or more by both measures, where that workload runs elsewhere too (`work`: the key's
    buckets of such calls away from the spike, their size and output a token of input its own): split by its calls'
    size (`_spike_calls`) and by output tokens (`_spike_input`), the two counts within SHARED_AGREE of each other.
    A slow leak's last call in the first minute of the nightly batch (matrix seed 11 #19: 7 calls, 537k input tokens,
    2.4 % output; the batch's 115k calls at 1.1 % on other nights, the leak's 27k at 9 %: 3.0 calls by size, 3.3 by
    output; the end 2 minutes early). The count by size is more than SHARED_NOISE standard errors that the
    workload's own calls, their size varying as it does elsewhere, would give a bucket of that many calls without
    any of the spike's, the spread of its calls seen in its buckets of one call (matrix seed 6161 #347: five of the
    nightly batch's calls five minutes after a leak's last, 86k a call against 101k elsewhere, its single calls of 75k
    to 128k: 1.02 calls by size, 0.69 the standard error; the end 5 minutes late). None without output tokens or
    such a workload elsewhere."""
    if not through or work.empty or (ratios := _output_ratios(core, work)) is None:
        return set()
    b = float(work["input_tokens"].sum() / work["requests"].sum())
    if b <= a:
        return set()
    # the spread of the workload's call sizes, seen in its buckets of one call
    single = work.loc[work["requests"] == 1, "input_tokens"].astype(float)
    spread = float(single.std()) if len(single) > 1 else 0.0
    rho, r = ratios
    out = set()
    for t in through:
        n = int(busy.loc[t, "requests"])
        by_size = _spike_calls(n, float(busy.loc[t, "input_tokens"]), a, b)
        by_output = min(_spike_input(busy.loc[t], rho, r) / a, float(n))
        noise = SHARED_NOISE * math.sqrt(n) * spread / (b - a)
        if min(by_size, by_output) >= 1 and by_size > noise \
                and max(by_size, by_output) <= SHARED_AGREE * min(by_size, by_output):
            out.add(t)
    return out


def _log_writes(buckets: pd.DataFrame) -> pd.Series:
    """Per bucket, the log of its output tokens a token of input (an output of 0 counted as 1)."""
    return np.log((buckets["output_tokens"].clip(lower=1) / buckets["input_tokens"]).astype(float))


def _log_write(buckets: pd.DataFrame) -> float:
    """The log of the output tokens a token of input of all `buckets`' calls."""
    return float(np.log(buckets["output_tokens"].sum() / buckets["input_tokens"].sum()))


def _nearer(buckets: pd.DataFrame, spike: pd.DataFrame, own: pd.DataFrame) -> pd.Series:
    """Per bucket, whether its calls write (output tokens a token of input, in logs) nearer the spike's than the
    key's own calls (`own`)."""
    ratio = _log_writes(buckets)
    return (ratio - _log_write(spike)).abs() < (ratio - _log_write(own)).abs()


MIXED_FACTOR = 1.5              # an edge bucket whose calls are this far from the spike's size holds another workload
OWN_APART = 3                   # the key's own calls and a spike's are two kinds when this many times fewer of the
#                                 spike's buckets than of the key's others write the key's own way


def _own_cluster(core: pd.DataFrame, others: pd.DataFrame) -> list | None:
    """The buckets of `others` (a key's calls of the spike's main model outside it) that write their own way, apart
    from the spike's calls (`core`), when the two do not tell apart as wholes (`_output_ratios`): others hold some of
    the spike's calls. Output tokens a token of input, per bucket, in logs: the key's own (r) start at the bucket that
    writes farthest from the spike's (rho), and are those nearer r than rho, r their mean, until that settles (two
    means, the spike's fixed). None when r ends within MIXED_FACTOR twice over of rho (calls of one kind whose output
    varies have a tail that far out), or the spike's own buckets write nearer r in more than 1 / OWN_APART the share
    the others do (such a tail inside the spike as outside it)."""
    busy = others[(others["input_tokens"] > 0) & (others["output_tokens"] > 0)]
    inside = core[core["input_tokens"] > 0]
    if busy.empty or inside.empty or not core["output_tokens"].sum():
        return None
    spike = _log_write(core)
    ratio = _log_writes(busy)
    centre, own = float(ratio[(ratio - spike).abs().idxmax()]), None
    for _ in range(len(busy)):
        mine = ratio[(ratio - centre).abs() < (ratio - spike).abs()].index
        if own is not None and mine.equals(own):
            break
        own = mine
        centre = _log_write(busy.loc[own])
    theirs = _log_writes(inside)
    tail = float(((theirs - centre).abs() < (theirs - spike).abs()).mean())
    apart = abs(centre - spike) >= 2 * np.log(MIXED_FACTOR) and tail * OWN_APART <= len(own) / len(busy)
    return list(own) if apart else None


@dataclass
class MixedEdge:
    bucket: object
    calls: int                   # the spike's main model's calls in the bucket
    size: float                  # their input tokens a call
    spike_size: float            # the spike's calls' elsewhere in it
    usual_size: float            # the key's calls' of that model outside the spike
    spike_calls: float           # how many of the bucket's calls are the spike's
    cost: Decimal                # what they cost at the spike's cost a call
    by: str = "calls"            # what split them: "calls" (call size) or "output" (output tokens to input)


def mixed_edges(rows: pd.DataFrame, costs: dict, usual: dict, run: list, width: pd.Timedelta) -> list[MixedEdge]:
    """A coarse spike's first and last bucket (widths above DETECTION_MINUTES, runs of two buckets or more) when its
    calls of the spike's main model are MIXED_FACTOR times larger or smaller than in the spike's other buckets: the
    bucket holds the spike's calls and the key's usual ones (a nightly batch in the hour the attack ended). The
    provider's usage gives each bucket's calls and input tokens per model: with the spike's size a call (its other
    buckets) and the key's usual size (its buckets outside the spike) the two counts follow (calls = n_a + n_b,
    tokens = n_a a + n_b b), and the spike's part is n_a calls at its cost a call elsewhere. None when the export
    has no call counts, the key has no calls of that model outside the spike, or the two sizes are alike."""
    if len(run) < 2 or not pd.Timedelta(minutes=DETECTION_MINUTES) < width or "input_tokens" not in rows:
        return []
    mine = _main_model_buckets(rows, run)
    outside = None if mine is None else mine[~mine.index.isin(run) & (mine["requests"] > 0)]
    if outside is None or outside.empty:
        return []
    b = float(outside["input_tokens"].sum() / outside["requests"].sum())
    out = []
    edges = (run[0], run[-1])
    if len(run) == 2:    # each the other's core: only the one whose calls drifted towards the key's own size can
        # hold another workload (the thinner, 21 #109; by calls the two may tie: 55 #25, 1,083 attack calls at 01:00
        # and 1,109 at 02:00 beside the nightly batch, the pure hour split and the mixed one counted whole, +43 %)
        def drift(t) -> float:
            n = mine["requests"].get(t, 0)
            return abs(float(mine.loc[t, "input_tokens"]) / n - b) if n else float("inf")
        edges = (min(run, key=drift),)
    for edge in edges:
        core = mine[mine.index.isin([t for t in run if t != edge]) & (mine["requests"] > 0)]
        if edge not in mine.index or core.empty or not mine.loc[edge, "requests"]:
            continue
        n, tokens = int(mine.loc[edge, "requests"]), float(mine.loc[edge, "input_tokens"])
        a = float(core["input_tokens"].sum() / core["requests"].sum())
        size = tokens / n
        if a / MIXED_FACTOR < size < a * MIXED_FACTOR or abs(b - a) < a * (MIXED_FACTOR - 1):
            continue
        n_a, by = _split(mine.loc[edge], core, outside, a, b)
        cost = min(_per_call(core) * Decimal(str(round(n_a, 6))), max(costs[edge] - usual[edge], Decimal(0)))
        out.append(MixedEdge(edge, n, size, a, b, n_a, cost, by))
    return out


def mixed_neighbours(rows: pd.DataFrame, costs: dict, run: list, width: pd.Timedelta) -> list[MixedEdge]:
    """The buckets just before and after a coarse spike (widths above DETECTION_MINUTES) whose calls of its main model
    are MIXED_FACTOR times off the key's usual size, towards the spike's: the spike began late in the bucket before
    (an attack from 22:00 on a day whose spend stayed near a day's usual) or ended early in the one after. Its calls
    are split as in `mixed_edges`, the spike's size a call from its own buckets, the usual from the key's other
    buckets; the spike's part is n_a calls at its cost a call. Split by output tokens (`_output_split`), the calls'
    size may lie anywhere: the other workload beside the spike's last calls may be of any size (the nightly batch).
    Only when the bucket holds more calls of that model than the key's usual bucket (the spike's add to them) and the
    split gives the spike half of them or more: a few calls' mean size is noise."""
    if not run or not pd.Timedelta(minutes=DETECTION_MINUTES) < width or "input_tokens" not in rows:
        return []
    mine = _main_model_buckets(rows, run)
    core = None if mine is None else mine[mine.index.isin(run) & (mine["requests"] > 0)]
    if core is None or core.empty:
        return []
    a = float(core["input_tokens"].sum() / core["requests"].sum())
    per_call = _per_call(core)
    out = []
    for t in (run[0] - width, run[-1] + width):
        outside = mine[~mine.index.isin([*run, t]) & (mine["requests"] > 0)]
        if t not in costs or t not in mine.index or not mine.loc[t, "requests"] or outside.empty:
            continue
        b = float(outside["input_tokens"].sum() / outside["requests"].sum())
        n, tokens = int(mine.loc[t, "requests"]), float(mine.loc[t, "input_tokens"])
        size = tokens / n
        # split by output tokens, the calls' size may lie anywhere (matrix seed 8086 #490: the attack's last
        # quarter hour beside the nightly batch, 160 calls of 57k tokens against its 27k and the key's usual 69k);
        # else by call size (`_split`'s fallback), when their size is off the key's usual towards the spike's
        n_a, by = _output_split(mine.loc[t], core, outside, a), "output"
        if n_a is None:
            towards = size * MIXED_FACTOR <= b if a < b else size >= b * MIXED_FACTOR
            if not towards or abs(b - a) < a * (MIXED_FACTOR - 1):
                continue
            n_a, by = _spike_calls(n, tokens, a, b), "calls"
        if n_a >= max(n / 2, 1) and n > outside["requests"].median():
            cost = min(per_call * Decimal(str(round(n_a, 6))), costs[t])
            out.append(MixedEdge(t, n, size, a, b, n_a, cost, by))
    return out


USUAL_SHARE = 0.25               # a spike's bucket whose usual is this share of its spend at least...


def mixed_usual(rows: pd.DataFrame, costs: dict, usual: dict, run: list, width: pd.Timedelta,
                skip=frozenset()) -> list[MixedEdge]:
    """A sub-daily spike's buckets whose usual is another workload of its own size: USUAL_SHARE of the bucket's
    spend or more, most of it the spike's main model, whose calls at that time on the other days are WORKLOAD_FACTOR
    times larger or smaller than the spike's (its buckets with a small usual). The usual is the median of the other
    days; the bucket's own calls and tokens say how much of that workload ran this day (matrix seed 55 #4: the
    nightly batch beside the attack's 02:00 on a Sunday ran 21 calls, the usual was a weekday's 68, -15 %). Split as
    in `mixed_edges`, the other calls at their size at that time on the other days; the spike's part is its calls at
    its cost a call, the rest of the bucket the key's. Buckets of DETECTION_MINUTES or less only when they hold
    MIXED_MIN_CALLS calls or more: a minute of five calls beside a usual of two is noise either way. `skip`: buckets
    split or adjusted otherwise."""
    if width >= pd.Timedelta(days=1) or "input_tokens" not in rows:
        return []
    mine = _main_model_buckets(rows, run)
    if mine is None:
        return []
    busy = mine[mine.index.isin(run) & (mine["requests"] > 0) & ~mine.index.isin(skip)]
    fine = width <= pd.Timedelta(minutes=DETECTION_MINUTES)
    loaded = [t for t in busy.index if usual[t] and usual[t] >= Decimal(str(USUAL_SHARE)) * costs[t]
              and (busy.loc[t, "requests"] >= MIXED_MIN_CALLS or not fine)]
    core = busy[~busy.index.isin(loaded)]
    if core.empty or not loaded:
        return []
    a = float(core["input_tokens"].sum() / core["requests"].sum())
    per_call = _per_call(core)
    slot_of = mine.index - mine.index.normalize()
    out = []
    for t in loaded:
        slot = mine[(slot_of == t - t.normalize()) & ~mine.index.isin(run) & (mine["requests"] > 0)]
        if slot.empty or _median([Decimal(str(c)) for c in slot["cost_usd"]]) * 2 < usual[t]:
            continue                      # the usual there is not that model's calls
        b = float(slot["input_tokens"].sum() / slot["requests"].sum())
        if max(a / b, b / a) < WORKLOAD_FACTOR:
            continue
        n, tokens = int(mine.loc[t, "requests"]), float(mine.loc[t, "input_tokens"])
        n_a, by = _split(mine.loc[t], core, slot, a, b)
        out.append(MixedEdge(t, n, tokens / n, a, b, n_a, min(per_call * Decimal(str(round(n_a, 6))), costs[t]), by))
    return out


QUIET_LEVEL = 0.75               # a bucket where the key's other models ran under this share of their usual...
QUIET_MIN_CALLS = 50             # ...counting at least this many calls in their usual bucket (fewer are noise)


def quiet_levels(rows: pd.DataFrame, costs: dict, run: list, width: pd.Timedelta, share=None,
                 hot=frozenset(), kind_days: int | None = None) -> dict:
    """Per bucket of a spike: the share of their usual calls that the key's other models (not the spike's main one) made
    there, when under QUIET_LEVEL (or busier, below); their usual as the spend's (`_usual`: the same time on other days,
    else their other buckets), the spike's buckets left out. The key's own work was quieter there (an attack over a
    weekend after weekday-only history: a weekday's usual taken for a Saturday is two or three times what the key spends
    then, and the attack's cost comes out a quarter short); the spike's model's usual is taken at that share. A busier
    bucket (over 1 / QUIET_LEVEL times their usual: a Monday after history that was mostly a weekend) raises it the same
    way, but only where those models' calls stay within 1 / QUIET_LEVEL times the most they made in another bucket: an
    attacker calling them too would lift their level beyond anything the key's own work reached, and the attack's cost
    would sink into a usual it made. None without call counts or when the other models' usual bucket holds fewer than
    QUIET_MIN_CALLS calls. `share(bucket)`: the part of a bucket the evidence covers (`covered_share`): its calls
    count as a whole bucket's would (the export's last day, collected at 02:00, is not a day of five calls). `hot`:
    buckets left out of the usual besides the run's (the spikes a search found so far); `kind_days`: the days of a
    kind `_usual` asks."""
    main = _main_model(rows, run)
    if main is None:
        return {}
    per = rows[rows["model"] != main].groupby("bucket_start")["requests"].sum()
    calls = {t: Decimal(int(per.get(t, 0))) / (share(t) if share is not None and share(t) else 1) for t in costs}
    usual = _usual(calls, width, frozenset(run) | hot, kind_days=kind_days)[0]
    seen = max((c for t, c in calls.items() if t not in run), default=Decimal(0))
    level = Decimal(str(QUIET_LEVEL))
    # a day whose usual is its own kind of day's (`_same_kind`) needs no level: the other models' noise is not news
    return {t: float(calls[t] / usual[t]) for t in run
            if usual[t] >= QUIET_MIN_CALLS and (calls[t] < usual[t] * level or usual[t] < calls[t] * level <= seen)
            and (width < pd.Timedelta(days=1) or _same_kind(costs, t, frozenset(run) | hot, kind_days) is None)}


def _main_model(rows: pd.DataFrame, run: list) -> str | None:
    """The spike's main model: its dearest in the run's buckets; None when the export shows no calls in the run."""
    inside = rows[rows["bucket_start"].isin(run)]
    if inside.empty or not inside["requests"].any():
        return None
    return inside.groupby("model")["cost_usd"].sum().idxmax()


def _main_model_buckets(rows: pd.DataFrame, run: list) -> pd.DataFrame | None:
    """The spike's main model's (`_main_model`) calls, input and output tokens and cost per bucket, over the whole
    series; None when the export shows no calls in the run."""
    model = _main_model(rows, run)
    if model is None:
        return None
    return rows[rows["model"] == model].groupby("bucket_start")[
        ["requests", "input_tokens", "cost_usd", *(["output_tokens"] if "output_tokens" in rows else [])]].sum()


def _split(bucket: pd.Series, core: pd.DataFrame, outside: pd.DataFrame, a: float, b: float) -> tuple[float, str]:
    """How many of a bucket's calls of the spike's main model are the spike's: (calls, what split them).

    By output tokens when the export has them and the spike's calls carry MIXED_FACTOR times more (or less) output a
    token of input than the key's calls outside it: with the other calls at the key's usual output to input (ratio
    r) and the spike's at its own (rho, its other buckets), input = I_a + I_b and output = rho I_a + r I_b give its
    input tokens I_a, its calls I_a / a. The key's other calls may be of any size then (a nightly batch of long
    documents beside the attack's last hour: its calls twice the key's usual size, its output as thin as the key's).
    Else by call size (`_spike_calls`), the other calls at the key's usual size b."""
    by_output = _output_split(bucket, core, outside, a)
    if by_output is not None:
        return by_output, "output"
    return _spike_calls(float(bucket["requests"]), float(bucket["input_tokens"]), a, b), "calls"


def _output_ratios(spike: pd.DataFrame, others: pd.DataFrame) -> tuple[float, float] | None:
    """(rho, r): output tokens a token of input of the spike's calls and of the key's others, when both are known
    and MIXED_FACTOR apart (else None: output does not tell them apart)."""
    if "output_tokens" not in spike or not spike["input_tokens"].sum() or not others["input_tokens"].sum():
        return None
    rho = float(spike["output_tokens"].sum() / spike["input_tokens"].sum())
    r = float(others["output_tokens"].sum() / others["input_tokens"].sum())
    return (rho, r) if rho and r and max(rho / r, r / rho) >= MIXED_FACTOR else None


def _output_split(bucket: pd.Series, core: pd.DataFrame, outside: pd.DataFrame, a: float) -> float | None:
    """`_split` by output tokens: the spike's calls in the bucket, or None when the export has no output tokens or
    the spike's output to input is within MIXED_FACTOR of the key's other calls'."""
    ratios = _output_ratios(core, outside) if "output_tokens" in bucket else None
    if ratios is None:
        return None
    tokens = float(bucket["input_tokens"])
    spike_input = _spike_input(bucket, *ratios)
    if spike_input >= tokens:            # writing as much as the spike's calls or more: all of them its
        return float(bucket["requests"])
    return min(spike_input / a, float(bucket["requests"]))


def _spike_input(bucket: pd.Series, rho: float, r: float) -> float:
    """A bucket's input tokens that are the spike's by its output: input = I_a + I_b, output = rho I_a + r I_b
    (at least 0; may exceed the bucket's input when it writes more than the spike's calls would)."""
    return max((float(bucket["output_tokens"]) - r * float(bucket["input_tokens"])) / (rho - r), 0.0)


def split_by_output(rows: pd.DataFrame, costs: dict, usual: dict, found: list, run: list,
                    surged: set = frozenset()) -> list[MixedEdge]:
    """A spike's buckets that hold another workload's calls beside its own, split by output tokens (`_output_split`):
    those of `run` whose calls of its main model are MIXED_FACTOR times larger or smaller than its own (the median
    bucket's) and come on top of it (more calls than its median bucket, WORKLOAD_ON_TOP times its median excess), and
    those it lost at its ends to that workload (`found` against `run`: `_trimmed` cut a nightly batch of long documents
    that started while the attack still ran), outward from each end while each bucket holds calls and one of the spike's
    at least, by its output tokens and by its calls' size beside the other workload's (its largest calls a bucket: a
    bucket of those alone holds none of the spike's). Each is the spike's for its calls at its cost a call. None without
    output tokens, or when the spike's calls write about as much a token of input as the key's others (`mixed_edges` and
    the spike's level around such buckets then). `surged`: buckets in which nginx shows the proxy's own surge: another
    workload on top of the spike is known to be there (matrix seed 123 #482: the attack's peak hour, 906 calls, beside
    the proxy's nightly batch of 88, its calls 1.24 times the spike's size: cut whole at the spike's end, -41 %)."""
    mine = _main_model_buckets(rows, run) if run else None
    if mine is None or "output_tokens" not in mine:
        return []
    busy = mine[mine.index.isin(run) & (mine["requests"] > 0)]
    size = busy["input_tokens"] / busy["requests"]
    typical = float(size.median())
    # a load on top of the spike: more calls than its median bucket, spending WORKLOAD_ON_TOP times its median excess
    # (a few calls' mean size is noise: an attacker's prompts vary too)
    excess = pd.Series({t: float(costs[t] - usual[t]) for t in busy.index})
    on_top = (busy["requests"] > busy["requests"].median()) & (excess >= WORKLOAD_ON_TOP * float(excess.median()))
    off = set(size[((size >= typical * MIXED_FACTOR) | (size <= typical / MIXED_FACTOR)) & on_top].index)
    off |= {t for t in busy.index if t in surged}
    outside = _without_tail(mine[~mine.index.isin(found) & (mine["requests"] > 0)], busy[~busy.index.isin(off)], found)
    if outside.empty:
        return []
    b = float(outside["input_tokens"].sum() / outside["requests"].sum())
    # by both measures, a bucket need not be on top: the attack slowing as the nightly batch starts (matrix seed
    # 8086 #217: 343 calls at 02:00 against the spike's median 386, 1.73 times its size, half its output a token)
    off |= _mixed_on_top(busy[~busy.index.isin(off)], busy[~on_top], outside, typical, b)
    core = busy[~busy.index.isin(off)]
    if core.empty:
        return []
    a = float(core["input_tokens"].sum() / core["requests"].sum())
    per_call = _per_call(core)

    def edge(t, other: float = 0.0) -> MixedEdge | None:
        """The bucket split by output tokens; `other`: the other workload's size a call (a bucket of its calls
        alone holds none of the spike's, whatever their output says)."""
        n_a = _output_split(mine.loc[t], core, outside, a)
        if n_a is None:
            return None
        n = int(mine.loc[t, "requests"])
        if other >= a * MIXED_FACTOR:
            n_a = min(n_a, _spike_calls(n, float(mine.loc[t, "input_tokens"]), a, other))
        return MixedEdge(t, n, float(mine.loc[t, "input_tokens"]) / n, a, b, n_a,
                         min(per_call * Decimal(str(round(n_a, 6))), max(costs[t] - usual[t], Decimal(0))), "output")
    out = [m for t in sorted(off) if (m := edge(t)) is not None]
    lost = [t for t in found if t not in run]
    found_busy = mine[mine.index.isin(found) & (mine["requests"] > 0)]
    other = float((found_busy["input_tokens"] / found_busy["requests"]).max())   # the other workload's calls alone
    # the spike going on beside the other workload holds a share of its usual calls there at least: two of a
    # minute's thirteen long documents, by their output, when it ran 60 a minute, is noise (matrix seed 2026 #464:
    # three minutes of the nightly batch after the stuffing script stopped, end +3 min)
    least = max(1.0, MIXED_SHARE * float(core["requests"].median()))
    for side in ([t for t in lost if t > run[-1]], [t for t in lost if t < run[0]][::-1]):
        for t in side:
            if t not in mine.index or not mine.loc[t, "requests"]:
                break                 # a quiet bucket: the spike had stopped (a batch after it is not its)
            m = edge(t, other)
            if m is None or m.spike_calls < least:
                break
            out.append(m)
    return sorted(out, key=lambda m: m.bucket)


def _without_tail(outside: pd.DataFrame, core: pd.DataFrame, found: list) -> pd.DataFrame:
    """The key's calls outside a spike (`found`) as the reference of its own calls' output, less the bucket next to
    either end of the spike whose calls write about as much a token of input as the spike's (`_output_ratios` of
    `core`, its buckets of its own calls' size, against that bucket): the spike's tail or ramp, which the export's
    spike missed, not the key's own calls. Kept when it is all there is. An attack's last minutes in the hour after
    its spike (matrix seed 31337 #305: 15 calls at 0.092 output a token of input, the spike's 0.085, the key's own
    0.011 in the one hour before) made the key's calls look like the spike's, and the nightly batch beside the
    attack at 02:00 was not split by output: +17.7 %."""
    if len(outside) < 2 or core.empty or "output_tokens" not in outside:
        return outside
    times = sorted(set(outside.index) | set(core.index))
    step = min((b - a for a, b in zip(times, times[1:])), default=None)
    if step is None:
        return outside
    tail = {t for t in (min(found) - step, max(found) + step) if t in outside.index
            and _output_ratios(core, outside.loc[[t]]) is None}
    return outside.drop(list(tail)) if tail and len(tail) < len(outside) else outside


MIXED_SHARE = 0.25                # an on-top bucket whose input tokens are this share another workload's by output...
MIXED_DRIFT = 0.2                 # ...its calls' size this far from the spike's towards the key's own
MIXED_MIN_CALLS = 50              # ...holding this many calls at least (a minute of five calls is noise)


def _mixed_on_top(top: pd.DataFrame, core: pd.DataFrame, outside: pd.DataFrame, typical: float, b: float) -> set:
    """Buckets of a spike (`top`: on top of it or not; more calls and spend than its median bucket, or the attack
    slowing as another workload began) whose calls drifted towards the key's own by both measures, though less than
    MIXED_FACTOR by either: a MIXED_SHARE of their input tokens or more another workload's by their output tokens
    (`_output_ratios` of the spike's other buckets and the key's calls outside it), their calls' mean size
    MIXED_DRIFT or more from the spike's towards the key's (`b`). An attack's
    02:00 beside the proxy's nightly batch (matrix seed 8 #15, hourly): calls 1.37 times the spike's size, output
    1.49 times thinner, a third of its input the batch's by output and $24 of the attack's cost. A bucket of the
    spike's own calls varies by a tenth either way, when it holds MIXED_MIN_CALLS calls or more."""
    top = top[top["requests"] >= MIXED_MIN_CALLS]
    ratios = _output_ratios(core, outside) if len(top) and len(core) else None
    if ratios is None:
        return set()
    out = set()
    for t, x in top.iterrows():
        tokens, size = float(x["input_tokens"]), float(x["input_tokens"] / x["requests"])
        spike_input = min(_spike_input(x, *ratios), tokens)
        drift = (size - typical) / typical * (1 if b > typical else -1)
        if spike_input <= (1 - MIXED_SHARE) * tokens and drift >= MIXED_DRIFT:
            out.add(t)
    return out


MIXED_LINES = 3                  # more buckets of two sizes than this are told in one line


def _mixed_evidence(mixed: list[MixedEdge], added: list[MixedEdge], step: timedelta) -> list[str]:
    """The evidence lines of a spike's buckets holding calls of two sizes: one a bucket, or one for them all when
    more than MIXED_LINES (a per-minute spike beside the nightly batch splits a dozen minutes)."""
    def how(by: str) -> str:
        return ("their output tokens, the spike's calls writing far more or less a token of input than the key's"
                if by == "output" else "call size, the key's other calls at their usual size")
    if len(mixed) > MIXED_LINES:
        first, last = min(m.bucket for m in mixed), max(m.bucket for m in mixed)
        by = sorted({m.by for m in mixed})
        sizes = f"{min(m.size for m in mixed):,.0f} to {max(m.size for m in mixed):,.0f}"
        return [f"{len(mixed)} of its buckets from {first:%Y-%m-%d %H:%M} to {last + step:%H:%M} UTC hold calls of "
                f"two sizes: {sum(m.calls for m in mixed):,} call(s) of its main model at {sizes} input tokens a "
                f"call, against the spike's {mixed[0].spike_size:,.0f} in its other buckets and the key's usual "
                f"{mixed[0].usual_size:,.0f}: about {sum(m.spike_calls for m in mixed):,.0f} of them are taken as the "
                "spike's "
                f"(${float(sum((m.cost for m in mixed), Decimal(0))):,.2f} at its cost a call; split by "
                + " or ".join(how(b) for b in by) + ")"
                + (f"; {n} bucket(s) left out" if (n := sum(m.spike_calls < 1 for m in mixed)) else "")
                + (f"; {n} bucket(s) beside it are the spike's too" if (n := sum(m in added for m in mixed)) else "")]
    return [f"its bucket at {m.bucket:%Y-%m-%d %H:%M} holds calls of two sizes: {m.calls:,} call(s) of its main model "
            f"at {m.size:,.0f} input tokens a call, against the spike's {m.spike_size:,.0f} in its other buckets and "
            f"the key's usual {m.usual_size:,.0f}: about {m.spike_calls:,.0f} of them are taken as the spike's "
            f"(${float(m.cost):,.2f} at its cost a call; split by {how(m.by)})"
            + ("; the bucket is left out" if m.spike_calls < 1 else
               "; the bucket is the spike's too" if m in added else "")
            for m in mixed]


def _spike_calls(n: int, tokens: float, a: float, b: float) -> float:
    """Of a bucket's n calls and their input tokens, the calls of size a (the spike's) beside those of size b:
    calls = n_a + n_b, tokens = n_a a + n_b b, bounded to 0..n."""
    return min(max(n - (tokens - n * a) / (b - a), 0.0), float(n))


def _per_call(buckets: pd.DataFrame) -> Decimal:
    return sum((Decimal(str(c)) for c in buckets["cost_usd"]), Decimal(0)) / int(buckets["requests"].sum())


def find_provider_spikes(case: Case) -> list[ProviderSpike]:
    """Spikes per provider key id (or project) when the case holds no proxy requests to reconcile with."""
    (proxy,) = case.execute("SELECT count(*) FROM llm_requests").fetchone()
    if proxy:
        return []
    frame, kind = case.query(usage_series_step(case.tables.get("usage_prices", "prices"))), "usage"
    if frame.empty:
        frame, kind = case.query(cost_series_step()), "costs"
    if frame.empty:
        return []
    found = []
    pages = has_listed(case)
    exports = case.query(export_spans_step(pages))
    frame, spikes = _spikes(frame, exports, case.query(listed_step(kind, pages)))
    slots = surge_slots(case)
    per_width: dict = {}

    def served(width: timedelta) -> dict:
        """nginx's served LLM calls per bucket of `width` (none without nginx)."""
        if width not in per_width:
            per_width[width] = served_calls(case, pd.Timedelta(width), set())[0]
        return per_width[width]
    for provider, series, minutes, costs, series_usual, spans in spikes:
        step = timedelta(minutes=minutes)
        mine_all = frame[(frame["provider"] == provider) & (frame["series"] == series)]
        for first, last in spans:
            found_run = [t for t in costs if first <= t <= last]
            usual = slow_start_usual(mine_all, costs, series_usual, found_run, step, served(step))
            other, sizes = other_workload(mine_all, costs, usual, found_run)
            run = own_edges(mine_all, _trimmed(found_run, other, sizes, costs, usual), step)
            surged = surging(run, step, slots)
            # half of it or more: nginx shows the spike itself, not the proxy's own work beside it (as proxy_adjusted
            # reads it; matrix seed 0 #148: behind a balancer the attack's calls were all "the proxy's surge", and
            # the nightly batch's minutes beside its end were left unsplit, +10.1 %)
            surged = surged if 2 * len(surged) < len(run) else set()
            by_output = split_by_output(mine_all, costs, usual, found_run, run, surged)
            by_output_buckets = {m.bucket for m in by_output}
            tails = [m for m in by_output if m.bucket not in run]
            mixed = [m for m in mixed_edges(mine_all, costs, usual, run, step)
                     if m.bucket not in by_output_buckets] + [m for m in by_output if m.bucket in run]
            mixed += mixed_usual(mine_all, costs, usual, run, step, {m.bucket for m in mixed} | other | surged)
            # a bucket split to none of the spike's calls is left out, unless another workload is known to fill
            # it inside the spike (its level around it then: proxy_adjusted's `unsplit`)
            loaded = other | surged
            run = [t for i, t in enumerate(run) if not any(m.bucket == t and m.spike_calls < 1 for m in mixed)
                   or t in loaded and 0 < i < len(run) - 1]
            mixed += (beside := mixed_neighbours(mine_all, costs, run, step)) + tails
            run = sorted(run + [m.bucket for m in beside + tails])
            split = {m.bucket for m in mixed}
            share = covered_share(exports, step, min(costs), max(costs))
            levels = {t: v for t, v in quiet_levels(mine_all, costs, run, step, share).items() if t not in split}
            usual_here = usual | {t: usual[t] * Decimal(str(round(v, 6))) for t, v in levels.items()}
            # a split bucket: the spike's calls alone
            spent = costs | {m.bucket: usual_here[m.bucket] + m.cost for m in mixed}
            settled = {m.bucket for m in mixed if m.by == "output"}
            # a series nginx shows carrying the proxy's calls is the proxy's, though it usually spends nothing (an
            # export of minutes before the spike: matrix seed 2026 #427, the nightly batch inside it, +10.5 %)
            proxys = bool(surged) and step <= timedelta(minutes=DETECTION_MINUTES) \
                and carries_proxy(mine_all, run, served(step), surged)
            adjusted = proxy_adjusted(spent, usual_here, run, step, slots, settled=settled, proxys=proxys)[2] \
                if slots else 0
            run, excess, _ = proxy_adjusted(spent, usual_here, run, step, slots, other - split, settled,
                                            {t: costs[t] for t in settled}, proxys=proxys)
            if not run:
                continue
            probes = key_test(mine_all, costs, run, step)
            explained = proxy_explained(mine_all, run, step, served(step))
            first_calls = [t for t in lead_in(mine_all, costs, run, step, explained=explained) if t not in probes]
            probes = sorted(probes + first_calls)
            last_calls = lead_in(mine_all, costs, run, step, after=True, explained=explained)
            excess += sum((max(costs[t] - usual[t], Decimal(0)) for t in probes + last_calls), Decimal(0))
            first, last = (probes or run)[0], (last_calls or run)[-1]
            start, end = first, last + step
            mine = frame[(frame["provider"] == provider) & (frame["series"] == series)
                         & (frame["bucket_start"] >= start) & (frame["bucket_start"] < end)]
            requests = int(mine["requests"].sum())
            by_model = pd.DataFrame([{"model": m, "requests": int(x["requests"].sum()),
                                      "cost_usd": sum((Decimal(str(v)) for v in x["cost_usd"].dropna()), Decimal(0))}
                                     for m, x in mine.groupby("model", sort=True)])
            inc = Incident(f"P-{len(found) + 1}", "other", "suspicious", "provider_spike", start.to_pydatetime(),
                           end.to_pydatetime(), requests, sources=[provider])
            inc.evidence.append(
                f"{provider} {series}: {len(run)} bucket(s) of {minutes} min, {start:%Y-%m-%d %H:%M} to "
                f"{end:%H:%M} UTC, spending more than {SPIKE_FACTOR:g}x the usual for that time "
                f"(${float(sum((usual_here[t] for t in run), Decimal(0))):,.2f} in all); ${float(excess):,.2f} "
                "above it at list prices")
            if other_in := sorted(other | (set(sizes[2]) - set(run))):
                inc.evidence.append(
                    f"{len(other_in)} bucket(s) in or next to it ({other_in[0]:%H:%M} to {other_in[-1] + step:%H:%M} "
                    f"UTC) hold calls of another size, {sizes[1]:,.0f} input tokens a call against the spike's "
                    f"{sizes[0]:,.0f}: another workload on the same key (a batch?); where it starts or ends the spike "
                    "it is left out, inside it those buckets are taken at the spike's level around them")
            inc.evidence += _mixed_evidence(mixed, beside + tails, step)
            if levels:
                inc.evidence.append(
                    f"the key's other models ran at {min(levels.values()):.0%}"
                    + (f" to {max(levels.values()):.0%}" if len(levels) > 1 else "")
                    + f" of their usual calls in {len(levels)} of its bucket(s) (a weekend, or a weekday after "
                    "history that was mostly one?): the key's own spend there is taken at that share of its usual")
            if unlike := [t for t in run if step >= pd.Timedelta(days=1) and _same_kind(costs, t, frozenset(run))
                          is None]:
                inc.evidence.append(
                    "the export holds too few other whole days of the same kind (weekday, weekend) to compare "
                    + ", ".join(f"{t:%A %Y-%m-%d}" for t in unlike) + " with: the usual there is the other days' (at "
                    "the other models' level where they show one), and a key's own work on a weekday can be several "
                    "times a weekend day's: the cost above it is an estimate, not a measurement (finer buckets, or an "
                    "export reaching further back, settle it)")
            if tests := [t for t in probes if t not in first_calls]:
                inc.evidence.append(
                    f"it opens with {len(tests)} bucket(s) of tiny calls on the same key from {tests[0]:%H:%M} UTC "
                    f"({_size(mine_all, tests):,.0f} input tokens a call against the spike's "
                    f"{_size(mine_all, run):,.0f}; the key's other calls are ten times larger at least): a test that "
                    "the key works, as a script checks a key before it spends it")
            if last_calls:
                inc.evidence.append(
                    f"its last calls come in {len(last_calls)} bucket(s) to {last_calls[-1] + step:%H:%M} UTC, after "
                    "its spend thinned out: calls of its size or its output, which the key's own work seldom sends")
            if first_calls:
                inc.evidence.append(
                    f"its first calls come in {len(first_calls)} bucket(s) from {first_calls[0]:%H:%M} UTC, before "
                    f"it stands out: calls of its size ({_size(mine_all, first_calls):,.0f} input tokens a call "
                    f"against its {_size(mine_all, run):,.0f}) or its output, which the key's own work seldom sends")
            if adjusted:
                inc.evidence.append(
                    f"nginx shows the proxy's own calls surging in {adjusted} of these bucket(s) (a batch through the "
                    "proxy): there the spike is taken at its level in the buckets where the proxy was quiet")
            inc.evidence.append("provider data only: no proxy logs say who made these calls; a planned batch and "
                                "abuse look alike here (compare with the proxy's spend logs and nginx)")
            around = pd.DataFrame({"bucket_start": list(costs), "cost_usd": list(costs.values())})
            found.append(ProviderSpike(inc, provider, series, excess,
                                       around[(around["bucket_start"] >= start) & (around["bucket_start"] < end)]
                                       .reset_index(drop=True), minutes, by_model, costs,
                                       mine_all[["bucket_start", "model", "requests", "cost_usd"]]
                                       .reset_index(drop=True)))
    found.sort(key=lambda s: (s.incident.start, -s.cost_usd))     # at the same time, the larger first
    for i, s in enumerate(found, start=1):
        s.incident.id = f"P-{i}"
    return found
