"""The figures every document repeats, each defined once: how many requests an incident made and how many were
served, how many had no virtual key, what it cost, its peak and how many times the baseline that peak was.

The report, the evidence bundle, findings.json and the notebooks read these and never recompute them, so the same
case says the same thing everywhere:

- requests: every proxy request of the incident; served = status success, failed = the rest (e.g. provider 429s)
- without_key / served_without_key: requests with no virtual key at all (rejected-key attempts excluded)
- peak_cost_per_hour_usd: the incident's busiest 15 minutes x 4 (analysis/projection.py)
- mean_cost_per_hour_usd: its cost over its duration (at least one minute)
- times_baseline: peak / the baseline's cost per hour (hours without incident requests), None when the baseline is 0
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case

ONE_MINUTE_HOURS = Decimal(1) / Decimal(60)


@dataclass(frozen=True)
class Headline:
    requests: int
    served: int
    failed: int
    without_key: int
    served_without_key: int
    cost_usd: Decimal
    hours: Decimal                               # the incident's duration, at least a minute
    mean_cost_per_hour_usd: Decimal
    peak_cost_per_hour_usd: Decimal | None
    baseline_cost_per_hour_usd: Decimal
    times_baseline: Decimal | None               # peak / baseline

    def times_baseline_text(self) -> str:
        """'38.7x' (one decimal), '-' when there is no baseline or peak: the one way the multiple is written."""
        return "-" if self.times_baseline is None else f"{self.times_baseline:.1f}x"

    def to_findings(self) -> dict:
        def usd(v):
            return None if v is None else float(round(v, 6))
        return {"served": self.served, "failed": self.failed, "without_key": self.without_key,
                "served_without_key": self.served_without_key,
                "mean_cost_per_hour_usd": usd(self.mean_cost_per_hour_usd),
                "times_baseline": None if self.times_baseline is None else float(round(self.times_baseline, 1))}


def counts_step(incident_table: str, name: str) -> Step:
    """An incident's requests by outcome and by whether they carried a virtual key."""
    return Step(name, f"""
        SELECT count(*) AS requests, count(*) FILTER (WHERE r.status = 'success') AS served,
               count(*) FILTER (WHERE nullif(r.key_hash, '') IS NULL) AS without_key,
               count(*) FILTER (WHERE nullif(r.key_hash, '') IS NULL AND r.status = 'success') AS served_without_key
        FROM llm_requests r JOIN {incident_table} USING (request_id)
    """)


def headline(case: Case | None, finding, baseline_cost_per_hour) -> Headline:
    """The incident's headline figures; `case` may be None for an incident without proxy requests (its count is the
    provider's or nginx's, all of it counted as served)."""
    inc = finding.incident
    if finding.request_ids and inc.table and case is not None:
        n = inc.id.split("-")[1]
        row = case.query(counts_step(inc.table, f"incident_{n}_headline")).iloc[0]
        requests, served = int(row["requests"]), int(row["served"])
        without, served_without = int(row["without_key"]), int(row["served_without_key"])
    else:
        requests = served = int(inc.requests or 0)
        without = served_without = 0
    hours = max(Decimal(str((inc.end - inc.start).total_seconds())) / Decimal(3600), ONE_MINUTE_HOURS)
    cost = Decimal(finding.cost_usd)
    peak = finding.projection.peak_cost_per_hour_usd if finding.projection is not None else None
    known = baseline_cost_per_hour is not None and baseline_cost_per_hour == baseline_cost_per_hour   # not NaN
    base = Decimal(str(baseline_cost_per_hour)) if known else Decimal(0)     # no proxy logs: no proxy baseline
    times = (peak / base) if peak is not None and base > 0 else None
    return Headline(requests, served, requests - served, without, served_without, cost, hours, cost / hours, peak,
                    base, times)
