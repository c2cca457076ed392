"""Replay an incident's requests through security controls: what each control would have let the incident cost.

Each control is a frozen dataclass whose `id` is findings.json's `controls[].control`; it turns the case's traffic up
to the incident's end into a table (request_id, affected, loss_usd) over the incident's requests. Controls are
replayed one at a time, never combined. SQL steps are named `controls_*` (print them with steps.sql_of).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Iterable, Protocol

import numpy as np
import pandas as pd

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case


@dataclass(frozen=True)
class Scope:
    traffic: str              # table: every request starting up to the incident's end, see traffic_sql
    start: datetime | None    # the incident's start: the cost alert counts only fires at or after it


class Control(Protocol):
    @property
    def id(self) -> str: ...

    def loss_table(self, case: Case, scope: Scope) -> str: ...


@dataclass(frozen=True)
class ControlResult:
    control: str
    loss_usd: Decimal           # what the incident would still have cost
    saved_usd: Decimal          # incident cost - loss
    requests_affected: int      # incident requests rejected (max_tokens: re-priced)
    collateral_requests: int = 0                  # legitimate requests (in no incident) rejected or capped...
    collateral_usd: Decimal = Decimal(0)          # ...the USD of service they would have lost...
    collateral_from: datetime | None = None       # ...from this request on (up to the incident's end)

    def to_findings(self) -> dict:
        from_ = None if self.collateral_from is None else self.collateral_from.isoformat(
            timespec="milliseconds" if self.collateral_from.microsecond else "seconds") + "Z"
        return {"control": self.control, "loss_usd": float(round(self.loss_usd, 6)),
                "saved_usd": float(round(self.saved_usd, 6)),
                "collateral": {"requests": self.collateral_requests, "usd": float(round(self.collateral_usd, 6)),
                               "from": from_}}


PAID_SQL = "CAST(CASE WHEN r.status = 'success' THEN coalesce(r.cost_usd, 0) ELSE 0 END AS DECIMAL(38,12))"


def _money(usd) -> Decimal:
    return usd if isinstance(usd, Decimal) else Decimal(str(usd))


def _money_text(usd: Decimal) -> str:
    return format(usd.normalize(), "f")


def _step_name(control_id: str) -> str:
    return "controls_" + re.sub(r"[^a-z0-9_]", "_", control_id)


def _kept_sql(affected: str) -> str:
    """The (request_id, affected, loss_usd, ...) columns when `affected` requests are rejected: they cost nothing.
    Every request of the traffic gets a row: the incident's give the loss, the others the collateral."""
    return (f"{affected} AS affected, CASE WHEN affected THEN CAST(0 AS DECIMAL(38,12)) ELSE t.cost_usd END AS loss_usd, "
            f"{_CONTEXT}")


_CONTEXT = "t.in_incident, t.legitimate, t.start_time, t.cost_usd"


def traffic_sql(ids: str, claimed: str) -> str:
    """Every request up to the incident's end, its cost if successful, whether its key is valid and in the incident.

    Valid key: a key_hash with at least one successful request anywhere in the case; a key seen only in failures
    (e.g. the 401s LiteLLM logs with the presented key's hash) and a NULL key are "without a valid key".
    Legitimate: in no incident at all (`claimed` holds every incident's requests): what a control blocks of those is
    its collateral.
    """
    return f"""
        SELECT r.request_id, r.start_time, coalesce(r.end_time, r.start_time) AS end_time,
               nullif(r.key_hash, '') AS key_hash, nullif(r.client_ip, '') AS client_ip, r.status,
               r.completion_tokens, r.provider, coalesce(nullif(r.model, ''), r.model_group) AS model,
               {PAID_SQL} AS cost_usd,
               coalesce(r.key_hash IN (SELECT key_hash FROM llm_requests
                                       WHERE status = 'success' AND nullif(key_hash, '') IS NOT NULL), false)
                   AS valid_key,
               i.request_id IS NOT NULL AS in_incident,
               i.request_id IS NULL AND o.request_id IS NULL AS legitimate
        FROM llm_requests r LEFT JOIN {ids} i ON i.request_id = r.request_id
        LEFT JOIN {claimed} o ON o.request_id = r.request_id
        WHERE r.start_time IS NOT NULL AND r.start_time <= ?
    """


def incident_sql(ids: str) -> str:
    """The incident's requests and their cost (only successful requests cost)."""
    return f"""
        SELECT r.request_id, r.start_time, coalesce(r.end_time, r.start_time) AS end_time,
               {PAID_SQL} AS cost_usd
        FROM llm_requests r JOIN {ids} i ON i.request_id = r.request_id
    """


@dataclass(frozen=True)
class AuthRequired:
    """The proxy demands a valid virtual key."""

    @property
    def id(self) -> str:
        return "auth_required"

    def loss_table(self, case, scope: Scope) -> str:
        sql = f"SELECT t.request_id, {_kept_sql('NOT t.valid_key')} FROM {scope.traffic} t"
        return case.run(Step(_step_name(self.id), sql))


@dataclass(frozen=True)
class KeyRpm:
    """`limit` requests per UTC calendar minute per valid key, counting all the key's requests in start order."""
    limit: int = 20

    @property
    def id(self) -> str:
        return f"key_rpm_{self.limit}"

    def loss_table(self, case, scope: Scope) -> str:
        # the (limit+1)th request of a minute is rejected and does not count, so every later one sees `limit` too:
        # rejected <=> rank in the minute > limit. Every valid key is ranked: the others' rejections are collateral.
        sql = f"""
            SELECT t.request_id, {_kept_sql('t.over_limit')}
            FROM (SELECT *, row_number() OVER (
                        PARTITION BY key_hash, date_trunc('minute', start_time) ORDER BY start_time, request_id) > ?
                        AS over_limit
                  FROM {scope.traffic} WHERE valid_key) t
        """
        return case.run(Step(_step_name(self.id), sql), [self.limit])


def limit_req_rejections(addr: np.ndarray, ms: np.ndarray, rps: int, burst: int) -> np.ndarray:
    """Which arrivals nginx `limit_req rate=<rps>r/s burst=<burst>` rejects; arrays sorted by (address, ms)."""
    n = len(ms)
    rejected = np.zeros(n, dtype=bool)
    if n == 0:
        return rejected
    rate = rps * 1000                 # nginx keeps the rate in 0.001 r/s units
    limit = burst * 1000
    # A bucket left alone long enough to drain (burst+1)*1000 is back to the state of a brand-new node (excess 0,
    # last = now), whatever happened before; so only runs of arrivals closer than that need the sequential walk.
    drain_ms = -(-(burst + 1) * 1_000_000 // rate)
    gap = np.diff(ms)
    fresh = np.concatenate(([True], (addr[1:] != addr[:-1]) | (gap >= drain_ms)))
    starts = np.flatnonzero(fresh)
    ends = np.append(starts[1:], n)
    for s, e in zip(starts[ends - starts > 1].tolist(), ends[ends - starts > 1].tolist()):
        excess, last = 0, int(ms[s])
        for i, now in enumerate(ms[s + 1:e].tolist(), start=s + 1):
            x = max(0, excess - rate * (now - last) // 1000 + 1000)
            if x > limit:
                # ngx_http_limit_req_lookup returns NGX_BUSY before storing lr->excess and lr->last: a rejected
                # request leaves the bucket exactly as it was
                rejected[i] = True
            else:
                excess, last = x, now
    return rejected


@dataclass(frozen=True)
class IpRate:
    """nginx limit_req keyed on the real client address (leaky bucket, millisecond timestamps)."""
    rps: int = 10
    burst: int = 0

    @property
    def id(self) -> str:
        return f"ip_rate_{self.rps}rps" + (f"_burst{self.burst}" if self.burst else "")

    def loss_table(self, case, scope: Scope) -> str:
        name = _step_name(self.id)
        # nginx does not account requests with an empty key: no address, no limit; ms truncated like ngx_current_msec.
        # Buckets are per address; every address is walked (what the others lose is collateral).
        arrivals = case.run(Step(f"{name}_arrivals", f"""
            SELECT request_id, dense_rank() OVER (ORDER BY client_ip) AS addr, epoch_us(start_time) // 1000 AS ms,
                   row_number() OVER (ORDER BY client_ip, start_time, request_id) AS seq
            FROM {scope.traffic}
            WHERE client_ip IS NOT NULL
        """))
        cols = case.execute(f"SELECT addr, ms FROM {arrivals} ORDER BY seq").fetchnumpy()
        rejected = limit_req_rejections(np.asarray(cols["addr"]), np.asarray(cols["ms"]), self.rps, self.burst)
        # the leaky bucket is sequential: limit_req_rejections found these arrivals (by seq) in Python
        rejected_ids = case.run(Step(f"{name}_rejected", f"""
            -- the arrivals (by seq) limit_req_rejections() rejects, walked in Python from {arrivals}
            SELECT a.request_id FROM {arrivals} a WHERE a.seq IN (SELECT unnest(CAST(? AS BIGINT[])))
        """), [(np.flatnonzero(rejected) + 1).tolist()])
        sql = f"""
            SELECT t.request_id, {_kept_sql('j.request_id IS NOT NULL')}
            FROM {scope.traffic} t LEFT JOIN {rejected_ids} j ON j.request_id = t.request_id
        """
        return case.run(Step(name, sql))


@dataclass(frozen=True)
class MaxTokensCap:
    """The proxy caps max_tokens: each successful request re-priced with completion tokens = min(actual, cap)."""
    tokens: int = 1000

    @property
    def id(self) -> str:
        return f"max_tokens_{self.tokens}"

    def loss_table(self, case, scope: Scope) -> str:
        # Take the cut output tokens off the logged cost at the price the request was priced with (pricing.py's
        # prices table); a request the table cannot price keeps its cost.
        sql = f"""
            SELECT t.request_id,
                   t.cost_usd > 0 AND t.completion_tokens > ? AND p.output_mtok IS NOT NULL AS affected,
                   CASE WHEN affected THEN greatest(t.cost_usd - CAST((t.completion_tokens - ?) * p.output_mtok
                        * 0.000001 AS DECIMAL(38,12)), 0) ELSE t.cost_usd END AS loss_usd, {_CONTEXT}
            FROM {scope.traffic} t
            LEFT JOIN prices p ON p.provider = coalesce(t.provider, '') AND p.model = t.model
                              AND p.day = CAST(t.start_time AS DATE)
        """
        return case.run(Step(_step_name(self.id), sql), [self.tokens, self.tokens])


def _budget_loss_table(case, scope: Scope, name: str, usd: Decimal, part: str, subject: str) -> str:
    """Reject requests starting when month-to-date spend (successful accepted requests, at their end) >= usd.

    Proof of the cutoff: spend only grows within a month, so with c = the first end_time at which the cumulative
    spend of the month's eligible requests (ordered by end_time) reaches the budget, every request starting before
    c sees less than the budget and is accepted (so the eligible spend before c is the accepted spend), and every
    one starting at or after c sees at least it and is rejected. (Assumes costly requests last > 0 s.)
    Eligible: requests ending in the month (spend counts when recorded) that started in it, or started in an earlier
    month before that month's cutoff; months are walked in order so those cutoffs are already known.
    """
    spend = case.run(Step(f"{name}_spend", f"""
        SELECT t.request_id, {part} AS part, t.start_time, t.end_time, t.cost_usd,
               date_trunc('month', t.start_time) AS start_month, date_trunc('month', t.end_time) AS end_month
        FROM {scope.traffic} t WHERE {subject} AND t.cost_usd > 0
    """))
    cutoffs = case.run(Step(f"{name}_cutoffs",
                                 f"SELECT part, end_month AS month, end_time AS cutoff FROM {spend} WHERE false"))
    month_step = Step(f"{name}_month_cutoff", f"""
        -- run for each UTC month in order, its rows appended to {cutoffs}; parameters: month, month, budget
        WITH eligible AS (
            SELECT s.part, s.end_time, s.cost_usd
            FROM {spend} s LEFT JOIN {cutoffs} c ON c.part = s.part AND c.month = s.start_month
            WHERE s.end_month = ? AND (c.cutoff IS NULL OR s.start_time < c.cutoff)
        ), running AS (
            SELECT part, end_time,
                   sum(cost_usd) OVER (PARTITION BY part ORDER BY end_time RANGE UNBOUNDED PRECEDING) AS spent
            FROM eligible
        )
        SELECT part, CAST(? AS TIMESTAMP) AS month, min(end_time) AS cutoff FROM running WHERE spent >= ? GROUP BY part
    """)
    for (month,) in case.execute(f"SELECT DISTINCT end_month FROM {spend} ORDER BY 1").fetchall():
        found = case.run(month_step, [month, month, usd])
        case.statement(f"{name}_cutoffs", f"INSERT INTO {cutoffs} SELECT * FROM {found}")
    sql = f"""
        SELECT t.request_id, {_kept_sql('c.cutoff IS NOT NULL AND t.start_time >= c.cutoff')}
        FROM {scope.traffic} t
        LEFT JOIN {cutoffs} c ON c.part = {part} AND c.month = date_trunc('month', t.start_time)
    """
    return case.run(Step(name, sql))


@dataclass(frozen=True)
class KeyBudget:
    """A USD budget per valid key per UTC calendar month."""
    usd: Decimal = Decimal(100)

    def __post_init__(self):
        object.__setattr__(self, "usd", _money(self.usd))

    @property
    def id(self) -> str:
        return f"key_budget_{_money_text(self.usd)}"

    def loss_table(self, case, scope: Scope) -> str:
        # every valid key's cutoff: the incident's give its loss, the others' the collateral
        subject = "t.valid_key"
        return _budget_loss_table(case, scope, _step_name(self.id), self.usd, "t.key_hash", subject)


@dataclass(frozen=True)
class GlobalBudget:
    """A USD budget per UTC calendar month over all proxy traffic."""
    usd: Decimal = Decimal(1000)

    def __post_init__(self):
        object.__setattr__(self, "usd", _money(self.usd))

    @property
    def id(self) -> str:
        return f"global_budget_{_money_text(self.usd)}"

    def loss_table(self, case, scope: Scope) -> str:
        return _budget_loss_table(case, scope, _step_name(self.id), self.usd, "'all'", "true")


@dataclass(frozen=True)
class CostAlert:
    """An alert on trailing proxy spend; the incident's requests starting `response_minutes` after it cost nothing."""
    threshold_usd: Decimal = Decimal(50)
    window_minutes: int = 60
    response_minutes: int = 15

    def __post_init__(self):
        object.__setattr__(self, "threshold_usd", _money(self.threshold_usd))

    @property
    def id(self) -> str:
        window = "h" if self.window_minutes == 60 else f"per{self.window_minutes}m"
        return f"cost_alert_{_money_text(self.threshold_usd)}{window}_{self.response_minutes}m"

    def loss_table(self, case, scope: Scope) -> str:
        # the window is (t - window, t]: RANGE frames include their start, so stop 1 us short of it
        window_us = self.window_minutes * 60_000_000 - 1
        stopped = f"coalesce(t.start_time > a.fired_at + INTERVAL {int(self.response_minutes)} MINUTES, false)"
        sql = f"""
            WITH window_spend AS (
                SELECT end_time, sum(cost_usd) OVER (ORDER BY end_time
                           RANGE BETWEEN INTERVAL {window_us} MICROSECONDS PRECEDING AND CURRENT ROW) AS spend
                FROM {scope.traffic}
                -- older spend lies outside every window ending at or after the incident's start
                WHERE end_time > CAST(? AS TIMESTAMP) - INTERVAL {int(self.window_minutes)} MINUTES
            ), alert AS (
                SELECT min(end_time) AS fired_at FROM window_spend WHERE end_time >= ? AND spend > ?
            )
            SELECT t.request_id,
                   {_kept_sql(f"t.in_incident AND {stopped}")}
            FROM {scope.traffic} t CROSS JOIN alert a
        """
        return case.run(Step(_step_name(self.id), sql), [scope.start, scope.start, self.threshold_usd])


DEFAULT_CONTROLS: tuple[Control, ...] = (
    AuthRequired(), KeyRpm(20), IpRate(10, 0), MaxTokensCap(1000), KeyBudget(Decimal(100)),
    GlobalBudget(Decimal(1000)), CostAlert(Decimal(50), 60, 15),
)

_USD = r"(\d+(?:\.\d+)?)"
_PARSERS = (
    (re.compile(r"auth_required"), lambda m: AuthRequired()),
    (re.compile(r"key_rpm_(\d+)"), lambda m: KeyRpm(int(m[1]))),
    (re.compile(r"ip_rate_(\d+)rps(?:_burst(\d+))?"), lambda m: IpRate(int(m[1]), int(m[2] or 0))),
    (re.compile(r"max_tokens_(\d+)"), lambda m: MaxTokensCap(int(m[1]))),
    (re.compile(rf"key_budget_{_USD}"), lambda m: KeyBudget(Decimal(m[1]))),
    (re.compile(rf"global_budget_{_USD}"), lambda m: GlobalBudget(Decimal(m[1]))),
    (re.compile(rf"cost_alert_{_USD}(?:h|per(\d+)m)_(\d+)m"),
     lambda m: CostAlert(Decimal(m[1]), int(m[2] or 60), int(m[3]))),
)


def parse_control(control_id: str) -> Control:
    """A control from its id, e.g. 'key_rpm_35', 'ip_rate_5rps_burst10', 'cost_alert_20per30m_5m'."""
    for pattern, build in _PARSERS:
        m = pattern.fullmatch(control_id.strip())
        if m:
            return build(m)
    raise ValueError(f"unknown control {control_id!r}: expected auth_required, key_rpm_<n>, ip_rate_<n>rps[_burst<n>], "
                     "max_tokens_<n>, key_budget_<usd>, global_budget_<usd> or cost_alert_<usd>h_<n>m")


def summary_sql(ord_: int, control_id: str, incident: str, loss_table: str) -> str:
    """One control's loss over the incident (a request the replay did not cover keeps its full cost), and its
    collateral: the legitimate requests it rejects or caps, the USD they lose, and from when."""
    return f"""
        SELECT {ord_} AS ord, '{control_id}' AS control, count(*) FILTER (WHERE l.affected) AS requests_affected,
               coalesce(sum(coalesce(l.loss_usd, i.cost_usd)), 0) AS loss_usd, coalesce(sum(i.cost_usd), 0) AS cost_usd,
               coalesce(any_value(c.n), 0) AS collateral_requests, coalesce(any_value(c.usd), 0) AS collateral_usd,
               any_value(c.since) AS collateral_from
        FROM {incident} i LEFT JOIN {loss_table} l ON l.request_id = i.request_id,
             (SELECT count(*) AS n, coalesce(sum(cost_usd - loss_usd), 0) AS usd, min(start_time) AS since
              FROM {loss_table} WHERE affected AND legitimate) c"""


def replay(
    case: Case,
    incident_request_ids: Iterable[str],
    controls: Iterable[Control] = DEFAULT_CONTROLS,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    claimed: str | None = None,
) -> tuple[list[ControlResult], pd.DataFrame]:
    """Each control's loss and saving for the incident, and its collateral, as results and a frame (money as
    Decimal).

    start/end default to the incident's first request start and last request end; an incident request without a
    start time cannot be replayed and counts as loss under every control. `claimed`: a table of every incident's
    request ids (what is not legitimate); default: only this incident's requests.
    """
    controls = list(controls)
    ids = case.load_ids("controls_incident_ids", incident_request_ids)
    claimed = claimed or ids
    incident = case.run(Step("controls_incident", incident_sql(ids)))
    [(first, last)] = case.execute(f"SELECT min(start_time), max(end_time) FROM {incident}").fetchall()
    horizon = max((t for t in (last, end) if t is not None), default=None)
    scope = Scope(case.run(Step("controls_traffic", traffic_sql(ids, claimed)), [horizon]), start or first)
    tables = [(c.id, c.loss_table(case, scope)) for c in controls]
    if not tables:
        return [], pd.DataFrame(columns=["control", "loss_usd", "saved_usd", "requests_affected"])
    summary = case.run(Step("controls_summary", "\nUNION ALL\n".join(summary_sql(n, cid, incident, table)
                                                                            for n, (cid, table) in enumerate(tables))))
    results = [
        ControlResult(cid, loss, cost - loss, int(affected), int(n), Decimal(usd), since)
        for cid, affected, loss, cost, n, usd, since in case.execute(
            f"SELECT control, requests_affected, loss_usd, cost_usd, collateral_requests, collateral_usd, "
            f"collateral_from FROM {summary} ORDER BY ord").fetchall()
    ]
    frame = pd.DataFrame(
        {"control": [r.control for r in results],
         "loss_usd": pd.Series([r.loss_usd for r in results], dtype=object),
         "saved_usd": pd.Series([r.saved_usd for r in results], dtype=object),
         "requests_affected": [r.requests_affected for r in results],
         "collateral_requests": [r.collateral_requests for r in results],
         "collateral_usd": pd.Series([r.collateral_usd for r in results], dtype=object),
         "collateral_from": [r.collateral_from for r in results]})
    return results, frame

