"""A surge of the gateway's LLM calls in nginx that no incident explains: what nginx shows when it cannot say who.

Behind a load balancer whose access log keeps only the balancer's address (no X-Forwarded-For), an open proxy being
drained shows in nginx as nothing but more calls, and longer ones, than the gateway ever served at that time of day:
the surge and newcomer rules (nginx_incidents) look for addresses and find none. Without LiteLLM or provider data
the investigation would then say "nothing abnormal" about the very hour the proxy was drained. This rule finds, in
the LLM-endpoint lines LiteLLM does not cover, the SLOT_MINUTES slots whose served calls (or busy time, the sum of
$request_time, where logged) are far above anything the gateway did:

- with other days in the log: FACTOR times the busiest same slot of any other day (a nightly batch is usual at its
  hour) and ABOVE_ALL times the busiest slot of any other day at all;
- with less than that (minutes to a day of history): FACTOR times the busiest slot before the surge, once
  SHORT_MIN_SLOTS slots of it exist.

Where $request_time is logged, a slot hot by its calls must also be busy (MIN_BUSY_S). Hot slots less than
GAP_SLOTS apart are one surge; its edges take the slots around it still above twice their usual (a script's ramp);
a surge of fewer than MIN_SURGE_CALLS served calls is someone's burst, not a drain. Each surge no other incident
overlaps is a `suspicious` incident resting on nginx alone: a planned job the analyst was not told of looks the
same, and who called, with which key and at what cost, needs LiteLLM or provider data. Slots are integers
(microseconds since 1970 divided by the slot's width), so the steps run on any engine.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.incident import Incident
from forensics.analysis.nginx_incidents import NginxIncident, by_ip_step, by_user_agent_step
from forensics.analysis.steps import Step
from forensics.netaddr import internal_ip_sql

if TYPE_CHECKING:
    from forensics.api import Case

SLOT_MINUTES = 5
SLOT_US = SLOT_MINUTES * 60 * 1_000_000
SLOTS_PER_DAY = 24 * 60 // SLOT_MINUTES
FACTOR = 3.0            # times the usual (busiest same slot on other days, or busiest slot before)
ABOVE_ALL = 1.5         # and, with other days, this many times their busiest slot of all
MIN_CALLS = 20          # served LLM calls in a slot, at least (a few calls are noise)
MIN_BUSY_S = 300.0      # or seconds of $request_time in a slot (one call running all the slot long, on average);
                        # where $request_time is logged, a slot hot by its calls must also be this busy (a loop of
                        # quick calls from a developer's shell is no drain)
MIN_SURGE_CALLS = 100   # served calls in a whole surge, at least: below that, a burst of someone's script
SHORT_MIN_SLOTS = 2     # slots of history before a surge, at least, when the log holds no other day
GAP_SLOTS = 2           # hot slots this many apart or fewer are one surge


def load_slots_step(lines: str) -> Step:
    """Served LLM calls per slot (index: microseconds since 1970 // SLOT_US), their busy time and addresses."""
    return Step("nginx_load_slots", f"""
        SELECT epoch_us(start_time) // {SLOT_US} AS slot, count(*) AS calls,
               coalesce(sum(request_time), 0) AS busy_s, count(request_time) AS timed,
               count(DISTINCT client_ip) AS addresses,
               count(DISTINCT client_ip) FILTER (WHERE NOT {internal_ip_sql('client_ip')}) AS public
        FROM {lines} WHERE status < 400 AND NOT auth_failure
        GROUP BY ALL ORDER BY slot
    """)


def surges(frame: pd.DataFrame) -> list[tuple[int, int, float, str]]:
    """(first slot, last slot, times the usual at the peak, the metric) of each surge in a per-slot frame (slot,
    calls, busy_s, timed)."""
    if frame.empty:
        return []
    lo, hi = int(frame["slot"].min()), int(frame["slot"].max())
    slots = range(lo, hi + 1)
    calls = dict.fromkeys(slots, 0.0) | dict(zip(frame["slot"].astype(int), frame["calls"].astype(float)))
    metrics = {"calls": (calls, MIN_CALLS)}
    if frame["timed"].sum() >= 0.5 * frame["calls"].sum():        # $request_time logged: busy time says it too
        metrics["busy time"] = (dict.fromkeys(slots, 0.0) | dict(zip(frame["slot"].astype(int),
                                                                        frame["busy_s"].astype(float))), MIN_BUSY_S)
    usual: dict[int, float] = {}      # each slot's usual calls, for a surge's edges
    hot: dict[int, tuple[float, str]] = {}
    for metric, (values, floor) in metrics.items():
        same: dict[int, dict[int, float]] = {}          # time of day -> day -> value (every slot is in `values`)
        for s, v in values.items():
            same.setdefault(s % SLOTS_PER_DAY, {})[s // SLOTS_PER_DAY] = v
        by_day: dict[int, float] = {}
        for s, v in values.items():
            by_day[s // SLOTS_PER_DAY] = max(by_day.get(s // SLOTS_PER_DAY, 0.0), v)
        base: dict[int, float] = {}
        earlier = 0.0
        for s in slots:
            v = values[s]
            others = [x for d, x in same[s % SLOTS_PER_DAY].items() if d != s // SLOTS_PER_DAY]
            if others:         # other days in the log: their same slot, and their busiest slot of all
                base[s] = max(others)
                busiest = max(x for d, x in by_day.items() if d != s // SLOTS_PER_DAY)
                is_hot = v >= FACTOR * base[s] and v >= ABOVE_ALL * busiest and v >= floor
            else:              # no other day: the busiest slot before it (a surge's own slots not counted)
                base[s] = earlier
                is_hot = s - lo >= SHORT_MIN_SLOTS and v >= FACTOR * earlier and v >= floor
            if is_hot and metric == "calls" and "busy time" in metrics:
                is_hot = metrics["busy time"][0][s] >= MIN_BUSY_S
            if is_hot:
                ratio = v / base[s] if base[s] else float("inf")
                if ratio > hot.get(s, (0.0, ""))[0]:
                    hot[s] = (ratio, metric)
            else:
                earlier = max(earlier, v)
        if metric == "calls":
            usual = base
    out = []
    run: list[int] = []
    for s in sorted(hot) + [None]:
        if run and (s is None or s - run[-1] > GAP_SLOTS + 1):
            first, last = run[0], run[-1]
            while first - 1 >= lo and _above(calls[first - 1], usual[first - 1]):
                first -= 1
            while last + 1 <= hi and _above(calls[last + 1], usual[last + 1]):
                last += 1
            peak = max((hot[x] for x in run), key=lambda r: r[0])
            if sum(calls[x] for x in range(first, last + 1)) >= MIN_SURGE_CALLS:
                out.append((first, last, peak[0], peak[1]))
            run = []
        if s is not None:
            run.append(s)
    return out


def _above(calls: float, usual: float) -> bool:
    """A slot next to a surge still belongs to it: above twice its usual calls (and at least a few calls)."""
    return calls >= max(2 * usual, MIN_CALLS / 4) and calls > 0


def find_nginx_load(case: Case, taken: list[tuple[datetime, datetime]], first_id: int) -> list[NginxIncident]:
    """Surges of served LLM calls in the nginx lines LiteLLM does not cover that overlap none of the `taken`
    windows (the incidents found by every other rule), as `suspicious` incidents N-<first_id>, ..."""
    if "nginx_llm_lines_uncovered" not in case.tables:
        return []
    lines = case.table("nginx_llm_lines_uncovered")
    frame = case.query(load_slots_step(lines))
    found: list[NginxIncident] = []
    slack = timedelta(minutes=SLOT_MINUTES)
    for first, last, ratio, metric in surges(frame):
        k = first_id + len(found)
        mine = case.run(Step(f"nginx_load_{k}", f"""
            SELECT * FROM {lines} WHERE status < 400 AND NOT auth_failure
              AND epoch_us(start_time) // {SLOT_US} BETWEEN ? AND ?"""), [first, last])
        count, start, end, addresses, public, body, busy = case.execute(f"""
            SELECT count(*), min(start_time), max(start_time), count(DISTINCT client_ip),
                   count(DISTINCT client_ip) FILTER (WHERE NOT {internal_ip_sql('client_ip')}),
                   coalesce(sum(body_bytes), 0), sum(request_time)
            FROM {mine}""").fetchone()
        if not count or any(start - slack <= b and a - slack <= end for a, b in taken):
            continue
        inc = Incident(f"N-{k}", "other", "suspicious", "nginx_load", start, end, count, sources=["nginx"])
        times = "far more" if ratio == float("inf") else f"{ratio:.1f} times"
        who = ("every line from the balancer's or the network's own addresses: the access log keeps no client "
               "address (no X-Forwarded-For), so who called cannot be told" if not public else
               f"from {addresses} address(es), {public} public, none of them new to the gateway")
        inc.evidence.append(
            f"{count:,} served requests to the LLM endpoints, {times} the {metric} the gateway usually has at that "
            f"time" + (f" ({busy:,.0f} s of answers)" if busy else "") + f"; {body:,} response bytes; {who}")
        inc.evidence.append("a planned job nobody announced looks the same; which key called and what it cost needs "
                            "LiteLLM's logs or the provider's usage export for this time")
        found.append(NginxIncident(inc, mine, case.query(by_ip_step(mine, f"nginx_load_{k}_by_ip")),
                                   case.query(by_user_agent_step(mine, f"nginx_load_{k}_by_user_agent"))))
    return found
