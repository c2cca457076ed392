"""The burn rate at the end of an incident, and what it would have cost had nobody stopped it.

A request's cost is incurred at its end time (as a cost alert sees it). The rate is the incident's cost in the 60
minutes ending at its last request; the interval comes from a bootstrap over that window's per-minute costs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Iterable

from typing import TYPE_CHECKING

import numpy as np

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case

HORIZON_HOURS: dict[str, int] = {"1h": 1, "24h": 24, "7d": 7 * 24, "30d": 30 * 24}
RESAMPLES = 2000
SEED = 20240318
_PICO = 12                                  # DECIMAL(38,12): money as exact integers of 1e-12 USD


def linear_projection(rate_per_hour: Decimal) -> dict[str, Decimal]:
    """Cost if the rate went on unchanged: at $347.23/h, 24 h $8,333.52 (write-up: $8,334), 7 d $58,334.64
    (write-up: $58,338, its rounded daily $8,334 x 7), 30 d $250,005.60 (write-up: $249,864, "~$250k")."""
    return {h: rate_per_hour * hours for h, hours in HORIZON_HOURS.items()}


@dataclass(frozen=True)
class Projection:
    rate_usd_per_hour: Decimal          # the incident's cost in the 60 minutes ending at its last request
    peak_cost_per_hour_usd: Decimal     # the busiest 15 minutes of the incident x 4
    incident_cost_usd: Decimal
    last_request_at: datetime | None
    window_minutes: int                 # minute buckets in the rate window (<= 60): what the bootstrap resamples
    projected: dict[str, Decimal] = field(default_factory=dict)   # horizon -> rate x hours
    low: dict[str, Decimal] = field(default_factory=dict)         # horizon -> 2.5th bootstrap percentile
    high: dict[str, Decimal] = field(default_factory=dict)        # horizon -> 97.5th bootstrap percentile
    resamples: int = RESAMPLES
    seed: int = SEED

    def to_findings(self) -> dict:
        """findings.json's `projection` object (USD rounded to 6 decimals)."""
        def usd(v: Decimal) -> float:
            return float(round(v, 6))
        return {"rate_usd_per_hour": usd(self.rate_usd_per_hour), "24h": usd(self.projected["24h"]),
                "7d": usd(self.projected["7d"]), "30d": usd(self.projected["30d"]),
                "low_24h": usd(self.low["24h"]), "high_24h": usd(self.high["24h"])}


def incident_cost_sql(ids: str) -> str:
    """The incident's requests with the time their cost was incurred (end, else start); only successes cost."""
    return f"""
        SELECT r.request_id, coalesce(r.end_time, r.start_time) AS cost_time,
               CAST(CASE WHEN r.status = 'success' THEN coalesce(r.cost_usd, 0) ELSE 0 END
                    AS DECIMAL(38,12)) AS cost_usd
        FROM llm_requests r JOIN {ids} i ON i.request_id = r.request_id
        WHERE coalesce(r.end_time, r.start_time) IS NOT NULL
    """


def rate_window_minutes_sql(incident: str) -> str:
    """Per-minute cost over the 60 minutes ending at the last request, minute 0 the latest; quiet minutes are 0.

    Minutes are counted back from the last request, so the buckets cover exactly (last - 60 min, last].
    """
    return f"""
        WITH span AS (
            SELECT max(cost_time) AS last_at,
                   least(59, (epoch_us(max(cost_time)) - epoch_us(min(cost_time))) // 60000000) AS oldest
            FROM {incident}
        ), minutes AS (
            SELECT unnest(range(CAST(oldest AS BIGINT) + 1)) AS minute_back, last_at FROM span WHERE last_at IS NOT NULL
        )
        SELECT m.minute_back, coalesce(sum(i.cost_usd), CAST(0 AS DECIMAL(38,12))) AS cost_usd
        FROM minutes m
        LEFT JOIN {incident} i ON (epoch_us(m.last_at) - epoch_us(i.cost_time)) // 60000000 = m.minute_back
        GROUP BY m.minute_back
    """


def burn_rate_sql(incident: str) -> str:
    """The incident's total, last request, and busiest 15 minutes x 4 (trailing windows (t - 15 min, t])."""
    return f"""
        SELECT coalesce(sum(cost_usd), 0) AS incident_cost_usd, max(cost_time) AS last_request_at,
               coalesce(max(spend_15m), 0) * 4 AS peak_cost_per_hour_usd
        FROM (SELECT cost_usd, cost_time, sum(cost_usd) OVER (ORDER BY cost_time
                     RANGE BETWEEN INTERVAL 899999999 MICROSECONDS PRECEDING AND CURRENT ROW) AS spend_15m
              FROM {incident})
    """


def _percentile(ordered: list[Decimal], q: Decimal) -> Decimal:
    """numpy's default (linear) percentile of sorted integers, exactly, as Decimal."""
    h = (len(ordered) - 1) * q
    lo = int(h)
    hi = min(lo + 1, len(ordered) - 1)
    return (ordered[lo] + (ordered[hi] - ordered[lo]) * (h - lo)).quantize(Decimal(1).scaleb(-_PICO))


def bootstrap_hourly_rates(minute_costs: list[Decimal], resamples: int = RESAMPLES, seed: int = SEED) -> list[Decimal]:
    """Rates rebuilt by drawing the window's minutes with replacement (same estimator as the point rate), sorted."""
    if not minute_costs:
        return []
    # exact integer arithmetic on Python ints (object arrays): no float, no int64 overflow
    units = np.array([int(c.scaleb(_PICO)) for c in minute_costs], dtype=object)
    draws = np.random.default_rng(seed).integers(0, len(units), size=(resamples, len(units)))
    return [Decimal(int(s)).scaleb(-_PICO) for s in sorted(units[draws].sum(axis=1))]


def project(
    case: Case, incident_request_ids: Iterable[str], *, resamples: int = RESAMPLES, seed: int = SEED
) -> Projection:
    """The incident's burn rate, peak, linear projections and bootstrap interval (deterministic for a seed)."""
    ids = case.load_ids("projection_incident_ids", incident_request_ids)
    incident = case.run(Step("projection_incident", incident_cost_sql(ids)))
    burn = case.run(Step("projection_burn_rate", burn_rate_sql(incident)))
    [(total, last_at, peak)] = case.execute(f"SELECT * FROM {burn}").fetchall()
    minutes = case.run(Step("projection_rate_window", rate_window_minutes_sql(incident)))
    minute_costs = [c for (c,) in case.execute(f"SELECT cost_usd FROM {minutes} ORDER BY minute_back").fetchall()]
    rate = sum(minute_costs, Decimal(0))
    rates = bootstrap_hourly_rates(minute_costs, resamples, seed)
    low_rate = _percentile(rates, Decimal("0.025")) if rates else rate
    high_rate = _percentile(rates, Decimal("0.975")) if rates else rate
    return Projection(
        rate_usd_per_hour=rate, peak_cost_per_hour_usd=Decimal(peak), incident_cost_usd=Decimal(total),
        last_request_at=last_at, window_minutes=len(minute_costs), projected=linear_projection(rate),
        low=linear_projection(low_rate), high=linear_projection(high_rate), resamples=resamples, seed=seed,
    )


def project_buckets(bucket_costs: dict[datetime, Decimal], bucket_minutes: int,
                    resamples: int = RESAMPLES, seed: int = SEED) -> Projection:
    """The same figures from provider usage buckets (spend the proxy never saw): cost per bucket start.

    With 1-minute buckets this is the estimator `project` uses (the last 60 minutes, bootstrapped); coarser buckets
    give the point rate of the last bucket only.
    """
    zero = Decimal(0)
    if not bucket_costs:
        flat = linear_projection(zero)
        return Projection(zero, zero, zero, None, 0, flat, flat, flat, resamples, seed)
    last = max(bucket_costs)
    step = timedelta(minutes=bucket_minutes)
    if bucket_minutes <= 60:
        window = [bucket_costs.get(last - i * step, zero) for i in range(60 // bucket_minutes)]
        rate = sum(window, zero)
    else:
        window = [bucket_costs[last]]
        rate = bucket_costs[last] * 60 / bucket_minutes
    span = max(1, 15 // bucket_minutes)
    busiest = max(sum((bucket_costs.get(s + j * step, zero) for j in range(span)), zero) for s in bucket_costs)
    peak = busiest * 60 / (span * bucket_minutes)
    rates = bootstrap_hourly_rates(window, resamples, seed) if bucket_minutes == 1 else []
    low = _percentile(rates, Decimal("0.025")) if rates else rate
    high = _percentile(rates, Decimal("0.975")) if rates else rate
    return Projection(rate, peak, sum(bucket_costs.values(), zero), last, len(window),
                      linear_projection(rate), linear_projection(low), linear_projection(high), resamples, seed)
