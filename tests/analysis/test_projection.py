"""Burn rate, peak, linear projections and the bootstrap interval, against the write-up and direct computations."""
from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from forensics.api import Case
from forensics.analysis.projection import RESAMPLES, SEED, linear_projection, project

T0 = datetime(2025, 3, 17, 1, 0)


def make_case(rows: list[tuple[str, datetime, Decimal, str]]):
    """rows: (request_id, end_time, cost, status); each request starts a second before it ends."""
    c = Case.memory()
    con = c.con
    frame = pd.DataFrame({"request_id": [r[0] for r in rows], "end_time": [r[1] for r in rows],
                          "cost": [str(r[2]) for r in rows], "status": [r[3] for r in rows]}).astype({"cost": object})
    con.register("rows_in", frame)
    con.execute("""INSERT INTO llm_requests (request_id, start_time, end_time, status, cost_usd)
                   SELECT request_id, end_time - INTERVAL 1 SECOND, end_time, status, CAST(cost AS DECIMAL(38,12))
                   FROM rows_in""")
    con.unregister("rows_in")
    return c


def writeup_incident() -> list[tuple[str, datetime, Decimal, str]]:
    """~1,200 requests over 45 minutes costing $347.23 in all, as in the write-up."""
    each = Decimal("0.289")
    rows = [(f"r{i:04d}", T0 + timedelta(seconds=i * 45 * 60 / 1199), each, "success") for i in range(1199)]
    rows.append(("r1199", T0 + timedelta(minutes=45), Decimal("347.23") - each * 1199, "success"))
    return rows


def random_incident(seed: int):
    rnd = random.Random(seed)
    minutes = rnd.randint(5, 150)
    return [(f"s{seed}-{i}", T0 + timedelta(seconds=rnd.uniform(0, minutes * 60)),
             Decimal(rnd.randint(0, 5_000_000)) / 1_000_000, rnd.choice(["success", "success", "failure"]))
            for i in range(rnd.randint(20, 400))]


def test_linear_projection_reproduces_the_writeup():
    p = linear_projection(Decimal("347.23"))
    assert p == {"1h": Decimal("347.23"), "24h": Decimal("8333.52"), "7d": Decimal("58334.64"),
                 "30d": Decimal("250005.60")}
    assert round(p["24h"]) == 8334                          # write-up: 24 hours $8,334
    assert round(p["24h"]) * 7 == 58338                     # write-up: 1 week $58,338 (its rounded day x 7)
    assert round(p["30d"], -4) == 250000                    # write-up: 1 month $249,864, "~$250k"


def test_45_minute_incident_rate_is_its_whole_cost():
    rows = writeup_incident()
    con = make_case(rows)
    p = project(con, [r[0] for r in rows])
    assert p.rate_usd_per_hour == Decimal("347.23") == p.incident_cost_usd
    assert p.projected["24h"] == Decimal("8333.52") and p.projected["30d"] == Decimal("250005.60")
    assert p.window_minutes == 46                             # minutes 0..45 back from the last request
    findings = p.to_findings()
    assert findings.keys() == {"rate_usd_per_hour", "24h", "7d", "30d", "low_24h", "high_24h"}
    assert findings["rate_usd_per_hour"] == 347.23 and findings["24h"] == 8333.52
    assert findings["low_24h"] <= findings["24h"] <= findings["high_24h"]
    assert "epoch_us" in con.steps.sql_of("projection_rate_window")


def direct_rate(rows) -> Decimal:
    last = max(r[1] for r in rows)
    return sum((r[2] for r in rows if r[3] == "success" and last - timedelta(hours=1) < r[1] <= last), Decimal(0))


def direct_peak(rows) -> Decimal:
    paid = [(r[1], r[2]) for r in rows if r[3] == "success"]
    return 4 * max((sum((c for e, c in paid if t - timedelta(minutes=15) < e <= t), Decimal(0)) for t, _ in paid),
                   default=Decimal(0))


def test_rate_counts_only_the_last_60_minutes():
    rows = [(f"m{m}", T0 + timedelta(minutes=m), Decimal(1 if m < 60 else 2), "success") for m in range(120)]
    rows.append(("failed", T0 + timedelta(minutes=119), Decimal(99), "failure"))
    con = make_case(rows)
    p = project(con, [r[0] for r in rows])
    assert p.rate_usd_per_hour == 120 == direct_rate(rows)   # minute 59 is exactly an hour old: out
    assert p.incident_cost_usd == 60 + 120 and p.window_minutes == 60


def test_peak_is_the_busiest_15_minutes_times_4():
    rows = [(f"m{m}", T0 + timedelta(minutes=m), Decimal(1), "success") for m in range(46)]
    rows += [(f"b{m}", T0 + timedelta(minutes=m, seconds=30), Decimal(10), "success") for m in range(20, 25)]
    con = make_case(rows)
    p = project(con, [r[0] for r in rows])
    assert p.peak_cost_per_hour_usd == (50 + 15) * 4 == direct_peak(rows)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6, 7, 8])
def test_random_incidents_match_direct_computation_and_the_interval_holds_the_estimate(seed):
    rows = random_incident(seed)
    con = make_case(rows)
    ids = [r[0] for r in rows]
    p = project(con, ids)
    assert p.rate_usd_per_hour == direct_rate(rows)
    assert p.peak_cost_per_hour_usd == direct_peak(rows)
    assert p.projected == linear_projection(p.rate_usd_per_hour)
    for horizon in ("1h", "24h", "7d", "30d"):
        assert p.low[horizon] <= p.projected[horizon] <= p.high[horizon]
    assert project(con, ids) == p                              # same seed, same interval


def test_bootstrap_resamples_the_window_minutes_with_replacement():
    rows = random_incident(3)
    con = make_case(rows)
    p = project(con, [r[0] for r in rows])
    last = max(r[1] for r in rows)
    minute_costs = [0.0] * p.window_minutes
    for _, end, cost, status in rows:
        back = int((last - end) / timedelta(minutes=1))
        if status == "success" and back < p.window_minutes:
            minute_costs[back] += float(cost)
    draws = np.random.default_rng(SEED).integers(0, p.window_minutes, size=(RESAMPLES, p.window_minutes))
    rates = np.array(minute_costs)[draws].sum(axis=1)
    assert float(p.low["1h"]) == pytest.approx(np.percentile(rates, 2.5), abs=1e-6)
    assert float(p.high["24h"]) == pytest.approx(np.percentile(rates, 97.5) * 24, abs=1e-6)
    other = project(con, [r[0] for r in rows], seed=SEED + 1)
    assert (other.low, other.high) != (p.low, p.high) and other.projected == p.projected


def test_a_steady_burn_has_no_spread_and_an_empty_incident_projects_nothing():
    rows = [(f"m{m}", T0 + timedelta(minutes=m), Decimal("2.5"), "success") for m in range(30)]
    con = make_case(rows)
    p = project(con, [r[0] for r in rows])
    assert p.low == p.projected == p.high and p.rate_usd_per_hour == 75
    empty = project(con, [])
    assert empty.rate_usd_per_hour == 0 and empty.to_findings()["high_24h"] == 0.0 and empty.last_request_at is None
