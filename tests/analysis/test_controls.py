"""Control replays against direct sequential re-enactments of each control, on random and hand-made traffic."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest

from forensics.api import Case
from forensics.analysis.controls import (
    DEFAULT_CONTROLS, AuthRequired, CostAlert, GlobalBudget, IpRate, KeyBudget, KeyRpm, MaxTokensCap, parse_control,
    replay,
)

EPOCH = datetime(1970, 1, 1)
OUTPUT_MTOK = Decimal("60")
T0 = datetime(2025, 1, 31, 22, 0)      # random traffic runs across the January/February boundary


@dataclass
class Req:
    id: str
    start: datetime
    end: datetime
    key: str | None = "k1"
    ip: str | None = "10.0.0.1"
    status: str = "success"
    cost: Decimal | None = Decimal("1")
    completion_tokens: int = 100
    model: str = "gpt-4"


def make_case(rows: list[Req]):
    c = Case.memory()
    con = c.con
    frame = pd.DataFrame({
        "request_id": [r.id for r in rows], "start_time": [r.start for r in rows], "end_time": [r.end for r in rows],
        "key_hash": [r.key for r in rows], "client_ip": [r.ip for r in rows], "status": [r.status for r in rows],
        "cost": [None if r.cost is None else str(r.cost) for r in rows],
        "completion_tokens": [r.completion_tokens for r in rows], "model": [r.model for r in rows],
    }).astype({"cost": object, "key_hash": object, "client_ip": object})
    con.register("rows_in", frame)
    con.execute("""INSERT INTO llm_requests (request_id, start_time, end_time, key_hash, client_ip, status, cost_usd,
                       completion_tokens, provider, model)
                   SELECT request_id, start_time, end_time, key_hash, client_ip, status, CAST(cost AS DECIMAL(38,12)),
                          completion_tokens, 'openai', model FROM rows_in""")
    con.unregister("rows_in")
    for day in sorted({r.start.date() for r in rows}):
        con.execute("INSERT INTO prices VALUES ('openai', 'gpt-4', ?, 30, ?, NULL, NULL, 'test', 'gpt-4')",
                    [day, OUTPUT_MTOK])
    return c


def loss_of(con, ids, control) -> Decimal:
    (result,), _ = replay(con, ids, [control])
    assert result.control == control.id
    return result.loss_usd


# ---- the reference: each control re-enacted one request at a time, in start order ----

def cost(r: Req) -> Decimal:
    return r.cost if r.status == "success" and r.cost is not None else Decimal(0)


def in_order(rows):
    return sorted(rows, key=lambda r: (r.start, r.id))


def valid_keys(rows) -> set:
    return {r.key for r in rows if r.key is not None and r.status == "success"}


def ref_auth(rows, incident) -> Decimal:
    valid = valid_keys(rows)
    return sum((cost(r) for r in rows if r.id in incident and r.key in valid), Decimal(0))


def ref_key_rpm(rows, incident, limit) -> Decimal:
    valid, seen, loss = valid_keys(rows), Counter(), Decimal(0)
    for r in in_order(rows):
        if r.key in valid:
            minute = (r.key, r.start.replace(second=0, microsecond=0))
            if seen[minute] >= limit:
                continue
            seen[minute] += 1
        loss += cost(r) if r.id in incident else 0
    return loss


def ref_ip_rate(rows, incident, rps, burst) -> Decimal:
    bucket, loss = {}, Decimal(0)
    for r in in_order(rows):
        if r.ip is not None:
            now = (r.start - EPOCH) // timedelta(milliseconds=1)
            if r.ip in bucket:
                excess, last = bucket[r.ip]
                excess = max(0, excess - rps * 1000 * (now - last) // 1000 + 1000)
                if excess > burst * 1000:
                    continue
            else:
                excess = 0
            bucket[r.ip] = (excess, now)
        loss += cost(r) if r.id in incident else 0
    return loss


def ref_max_tokens(rows, incident, cap) -> Decimal:
    loss = Decimal(0)
    for r in rows:
        if r.id in incident:
            c = cost(r)
            if c > 0 and r.completion_tokens > cap and r.model == "gpt-4":
                c = max(c - (r.completion_tokens - cap) * OUTPUT_MTOK / 1_000_000, Decimal(0))
            loss += c
    return loss


def ref_budget(rows, incident, usd, per_key) -> Decimal:
    valid, accepted, loss = valid_keys(rows), [], Decimal(0)
    for r in in_order(rows):
        if not per_key or r.key in valid:
            month = (r.start.year, r.start.month)
            spent = sum((cost(a) for a in accepted if (not per_key or a.key == r.key)
                         and a.end <= r.start and (a.end.year, a.end.month) == month), Decimal(0))
            if spent >= usd:
                continue
        accepted.append(r)
        loss += cost(r) if r.id in incident else 0
    return loss


def ref_alert(rows, incident, threshold, window_minutes, response_minutes) -> Decimal:
    start = min(r.start for r in rows if r.id in incident)
    window = timedelta(minutes=window_minutes)
    fired = next((t for t in sorted(r.end for r in rows)
                  if t >= start and sum(cost(r) for r in rows if t - window < r.end <= t) > threshold), None)
    return sum((cost(r) for r in rows if r.id in incident
                and (fired is None or r.start <= fired + timedelta(minutes=response_minutes))), Decimal(0))


# ---- random traffic: bursty streams per (key, address) over a month boundary, plus background ----

def random_traffic(seed: int) -> tuple[list[Req], set]:
    rnd = random.Random(seed)
    rows, incident = [], set()
    keys = ["k1", "k2", "k3", "k-bad", None]          # k-bad only ever fails: never a valid key
    ips = ["10.0.0.1", "10.0.0.2", "198.51.100.7", "203.0.113.9", None]

    def add(start: datetime, key, ip, attack: bool):
        status = "failure" if key == "k-bad" or rnd.random() < 0.12 else "success"
        duration = timedelta(microseconds=rnd.choice([rnd.randint(1000, 3_000_000), rnd.randint(1000, 900_000_000)]))
        r = Req(f"r{seed}-{len(rows):04d}", start, start + duration, key, ip, status,
                None if rnd.random() < 0.03 else Decimal(rnd.randint(10_000, 12_000_000)) / 1_000_000,
                rnd.randint(1, 4000), "gpt-4" if rnd.random() < 0.9 else "mystery-model")
        rows.append(r)
        if attack:
            incident.add(r.id)

    for stream in range(7):
        t = T0 + timedelta(seconds=rnd.uniform(0, 4 * 3600))
        key, ip, attack = rnd.choice(keys), rnd.choice(ips), stream % 2 == 0
        gaps_us = [(20_000, 300_000), (95_000, 105_000), (5_000, 60_000)][stream % 3]   # mixed, ~10 r/s, fast
        for _ in range(rnd.randint(20, 90)):
            add(t, key, ip, attack)
            t += timedelta(microseconds=rnd.randint(*gaps_us))
    for _ in range(150):
        add(T0 + timedelta(seconds=rnd.uniform(0, 4 * 3600), microseconds=rnd.randint(0, 999)),
            rnd.choice(keys), rnd.choice(ips), rnd.random() < 0.2)
    return rows, incident


SEEDS = [1, 2, 3, 4, 5, 6]
REFERENCES = [
    (AuthRequired(), lambda rows, inc: ref_auth(rows, inc)),
    (KeyRpm(20), lambda rows, inc: ref_key_rpm(rows, inc, 20)),
    (KeyRpm(7), lambda rows, inc: ref_key_rpm(rows, inc, 7)),
    (IpRate(10), lambda rows, inc: ref_ip_rate(rows, inc, 10, 0)),
    (IpRate(3, burst=2), lambda rows, inc: ref_ip_rate(rows, inc, 3, 2)),
    (IpRate(10, burst=5), lambda rows, inc: ref_ip_rate(rows, inc, 10, 5)),
    (MaxTokensCap(1000), lambda rows, inc: ref_max_tokens(rows, inc, 1000)),
    (KeyBudget(100), lambda rows, inc: ref_budget(rows, inc, 100, True)),
    (KeyBudget(Decimal("37.5")), lambda rows, inc: ref_budget(rows, inc, Decimal("37.5"), True)),
    (GlobalBudget(1000), lambda rows, inc: ref_budget(rows, inc, 1000, False)),
    (GlobalBudget(250), lambda rows, inc: ref_budget(rows, inc, 250, False)),
    (CostAlert(50, 60, 15), lambda rows, inc: ref_alert(rows, inc, 50, 60, 15)),
    (CostAlert(400, 60, 15), lambda rows, inc: ref_alert(rows, inc, 400, 60, 15)),
    (CostAlert(150, 30, 5), lambda rows, inc: ref_alert(rows, inc, 150, 30, 5)),
]


@pytest.fixture(scope="module")
def random_cases() -> dict:
    """seed -> (rows, incident ids, results by control id, frame), every control replayed once per seed."""
    cases = {}
    for seed in SEEDS:
        rows, incident = random_traffic(seed)
        con = make_case(rows)
        results, frame = replay(con, sorted(incident), [c for c, _ in REFERENCES])
        cases[seed] = (rows, incident, {r.control: r for r in results}, frame)
        con.close()
    return cases


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("control, reference", REFERENCES, ids=[c.id for c, _ in REFERENCES])
def test_replay_matches_sequential_reference(random_cases, seed, control, reference):
    rows, incident, results, _ = random_cases[seed]
    total = sum((cost(r) for r in rows if r.id in incident), Decimal(0))
    assert results[control.id].loss_usd == reference(rows, incident)
    assert results[control.id].saved_usd == total - results[control.id].loss_usd


def test_random_traffic_exercises_every_control(random_cases):
    for _, _, _, frame in random_cases.values():
        assert list(frame.columns) == ["control", "loss_usd", "saved_usd", "requests_affected", "collateral_requests",
                                       "collateral_usd", "collateral_from"]
        assert all(isinstance(v, Decimal) for v in frame["loss_usd"])
    # a control that never rejects anything in the random cases would be compared against nothing
    for control, _ in REFERENCES:
        assert max(results[control.id].requests_affected for _, _, results, _ in random_cases.values()) > 0
    assert any(r.start.month != r.end.month for rows, *_ in random_cases.values() for r in rows)


# ---- hand-made edges ----

def at(minute: int, second: float = 0, base: datetime = datetime(2025, 3, 17, 2, 0)) -> datetime:
    return base + timedelta(minutes=minute, seconds=second)


def burst(n: int, start: datetime, step: timedelta, **kw) -> list[Req]:
    return [Req(f"b{i:03d}", start + i * step, start + i * step + timedelta(seconds=1), **kw) for i in range(n)]


def test_key_rpm_21st_in_a_minute_is_rejected_and_the_next_minute_resets():
    rows = burst(21, at(0, 10), timedelta(seconds=1))
    rows += [Req("next-minute", at(1, 0), at(1, 1)), Req("other-key", at(0, 40), at(0, 41), key="k2")]
    con = make_case(rows)
    ids = [r.id for r in rows]
    assert loss_of(con, ids, KeyRpm(20)) == 22           # b020 rejected; 12:01:00.000 opens a new minute
    assert loss_of(con, ids, KeyRpm(21)) == 23


def test_key_rpm_counts_failures_and_spares_requests_without_a_valid_key():
    rows = burst(20, at(0, 0), timedelta(seconds=1), status="failure")
    rows += [Req("paid", at(0, 30), at(0, 31)), Req("no-key", at(0, 31), at(0, 32), key=None)]
    rows += [Req(f"bad{i}", at(0, 32 + i / 10), at(0, 33), key="k-bad", status="failure") for i in range(25)]
    con = make_case(rows)
    assert loss_of(con, [r.id for r in rows], KeyRpm(20)) == 1      # 'paid' is the 21st of k1; no-key passes


def test_ip_rate_100ms_apart_pass_99ms_apart_rejected_and_rejections_leave_the_bucket_alone():
    base = datetime(2025, 3, 17, 2, 0)
    ms = [0, 100, 199, 200, 250, 299, 300, 399]           # 199, 250, 299, 399 come < 100 ms after the last accepted
    rows = [Req(f"m{t:03d}", base + timedelta(milliseconds=t), base + timedelta(seconds=5)) for t in ms]
    rows.append(Req("other-ip", base + timedelta(milliseconds=1), base + timedelta(seconds=5), ip="10.9.9.9"))
    rows.append(Req("no-ip", base + timedelta(milliseconds=2), base + timedelta(seconds=5), ip=None))
    con = make_case(rows)
    results, _ = replay(con, [r.id for r in rows], [IpRate(10)])
    assert results[0].loss_usd == 6 and results[0].requests_affected == 4


def test_ip_rate_truncates_to_milliseconds():
    base = datetime(2025, 3, 17, 2, 0)
    rows = [Req("a", base + timedelta(microseconds=999), base + timedelta(seconds=1)),
            Req("b", base + timedelta(microseconds=100_000), base + timedelta(seconds=1)),       # 100 ms after 0 ms
            Req("c", base + timedelta(microseconds=199_999), base + timedelta(seconds=1))]       # 99 ms after b
    con = make_case(rows)
    assert loss_of(con, ["a", "b", "c"], IpRate(10)) == 2


def test_key_budget_reached_mid_request():
    rows = [Req("long", at(0), at(5), cost=Decimal(60)), Req("short", at(1), at(2), cost=Decimal(30)),
            Req("in-flight", at(3), at(4), cost=Decimal(10)),        # starts at $30 spent: accepted
            Req("just-before", at(4, 59.999999), at(6), cost=Decimal(7)),   # $40 spent: long has not ended
            Req("at-cutoff", at(5), at(6), cost=Decimal(5)),         # long ended at 02:05:00 -> $100 >= $100
            Req("later", at(30), at(31), cost=Decimal(5)),
            Req("other-key", at(30), at(31), key="k2", cost=Decimal(5))]
    con = make_case(rows)
    results, _ = replay(con, [r.id for r in rows], [KeyBudget(100), KeyBudget(Decimal("100.01")), GlobalBudget(100)])
    assert [r.loss_usd for r in results] == [112, 117, 107]
    assert results[0].requests_affected == 2


def test_budget_resets_at_the_utc_month_and_rejected_requests_never_count():
    jan = datetime(2025, 1, 31, 23, 0)
    rows = [Req("spend", jan, jan + timedelta(minutes=1), cost=Decimal(100)),
            Req("over", jan + timedelta(minutes=30), jan + timedelta(minutes=31), cost=Decimal(1)),
            # rejected in January; had it run, its $100 would land in February's spend
            Req("straddler", jan + timedelta(minutes=50), jan + timedelta(minutes=70), cost=Decimal(100)),
            Req("feb", jan + timedelta(minutes=75), jan + timedelta(minutes=76), cost=Decimal(2))]
    con = make_case(rows)
    ids = [r.id for r in rows]
    assert loss_of(con, ids, KeyBudget(100)) == 102
    rows[0].cost = Decimal(50)               # now the straddler runs, and its $100 fills February's budget at 00:10
    rows.append(Req("feb-late", jan + timedelta(minutes=80), jan + timedelta(minutes=81), cost=Decimal(3)))
    con = make_case(rows)
    ids = [r.id for r in rows]
    assert loss_of(con, ids, KeyBudget(100)) == 50 + 1 + 100
    assert loss_of(con, ids, KeyBudget(100)) == ref_budget(rows, set(ids), 100, True)


def test_budget_counts_traffic_before_the_incident():
    rows = [Req("earlier", at(0), at(1), cost=Decimal(999)), Req("incident", at(10), at(11), key=None, cost=Decimal(5))]
    con = make_case(rows)
    assert loss_of(con, ["incident"], GlobalBudget(1000)) == 5
    assert loss_of(con, ["incident"], GlobalBudget(999)) == 0


def test_cost_alert_never_fires_allows_the_full_loss():
    rows = burst(40, at(0), timedelta(minutes=2), cost=Decimal(1))
    con = make_case(rows)
    assert loss_of(con, [r.id for r in rows], CostAlert(50, 60, 15)) == 40


def test_cost_alert_stops_requests_starting_more_than_15_minutes_after_it():
    rows = [Req("big", at(0), at(1), cost=Decimal(51)),               # fires at 02:01:00
            Req("at-15", at(16), at(17)), Req("after-15", at(16, 0.000001), at(17))]
    con = make_case(rows)
    assert loss_of(con, [r.id for r in rows], CostAlert(50, 60, 15)) == 52


def test_cost_alert_ignores_fires_before_the_incident_and_spend_older_than_the_window():
    rows = [Req("pre-spike", at(0), at(1), cost=Decimal(80))]          # fires at 02:01, before the incident
    rows += [Req(f"i{i}", at(61 + i), at(61 + i, 30), key=None, cost=Decimal(10)) for i in range(30)]
    con = make_case(rows)
    incident = [r.id for r in rows[1:]]
    # at 03:01:30 the spike (02:01:00) is out of (t-60, t]; $50 at 03:05:30 is not > $50; fires at 03:06:30 with $60,
    # so requests starting up to 03:21:30 still run: i0..i20
    assert loss_of(con, incident, CostAlert(50, 60, 15)) == 10 * 21
    assert loss_of(con, incident, CostAlert(50, 60, 15)) == ref_alert(rows, set(incident), 50, 60, 15)


def test_cost_alert_window_excludes_spend_exactly_an_hour_old():
    rows = [Req("old", at(-1), at(0), cost=Decimal(30)),                 # ends 02:00:00
            Req("hour-later", at(59), at(60), cost=Decimal(21)),      # at 03:00 the window (02:00, 03:00] holds $21
            Req("last", at(80), at(81))]
    con = make_case(rows)
    ids = [r.id for r in rows]
    assert loss_of(con, ids, CostAlert(50, 60, 15)) == 52
    assert loss_of(con, ids, CostAlert(50, 60, 15)) == ref_alert(rows, set(ids), 50, 60, 15)


def test_auth_required_rejects_no_key_and_keys_seen_only_in_failures():
    rows = [Req("valid", at(0), at(1)), Req("none", at(1), at(2), key=None),
            Req("unknown", at(2), at(3), key="k-401", status="failure"),
            Req("unknown-2", at(3), at(4), key="k-401", cost=Decimal(0), status="failure")]
    con = make_case(rows)
    results, _ = replay(con, ["valid", "none", "unknown"], [AuthRequired()])
    assert results[0].loss_usd == 1 and results[0].saved_usd == 1 and results[0].requests_affected == 2


def test_max_tokens_reprices_output_above_the_cap():
    rows = [Req("long", at(0), at(1), cost=Decimal("0.30"), completion_tokens=4000),    # 3000 * $60/M = $0.18 cut
            Req("short", at(1), at(2), cost=Decimal("0.05"), completion_tokens=500),
            Req("unpriced", at(2), at(3), cost=Decimal("0.40"), completion_tokens=4000, model="mystery")]
    con = make_case(rows)
    results, _ = replay(con, ["long", "short", "unpriced"], [MaxTokensCap(1000)])
    assert results[0].loss_usd == Decimal("0.57") and results[0].requests_affected == 1


def test_default_controls_and_ids_round_trip():
    assert [c.id for c in DEFAULT_CONTROLS] == ["auth_required", "key_rpm_20", "ip_rate_10rps", "max_tokens_1000",
                                                "key_budget_100", "global_budget_1000", "cost_alert_50h_15m"]
    for control in [*DEFAULT_CONTROLS, IpRate(5, 10), KeyBudget(Decimal("12.5")), CostAlert(20, 30, 5)]:
        assert parse_control(control.id) == control
    assert parse_control("key_rpm_35") == KeyRpm(35)
    assert parse_control("cost_alert_20per30m_5m") == CostAlert(Decimal(20), 30, 5)
    with pytest.raises(ValueError, match="unknown control 'rpm_20'"):
        parse_control("rpm_20")


def test_replay_defaults_are_printable_and_leave_the_case_alone():
    rows, incident = random_traffic(11)
    con = make_case(rows)
    before = con.execute("SELECT count(*), sum(cost_usd) FROM llm_requests").fetchone()
    results, frame = replay(con, sorted(incident))
    assert [r.control for r in results] == [c.id for c in DEFAULT_CONTROLS]
    assert con.execute("SELECT count(*), sum(cost_usd) FROM llm_requests").fetchone() == before
    assert "UNION ALL" in con.steps.sql_of("controls_summary")
    assert "epoch_us" in con.steps.sql_of("controls_ip_rate_10rps_arrivals")
    assert all(0 <= r.loss_usd <= r.loss_usd + r.saved_usd for r in results)
    assert results[0].to_findings().keys() == {"control", "loss_usd", "saved_usd", "collateral"}


def test_empty_incident():
    con = make_case([Req("a", at(0), at(1))])
    results, _ = replay(con, [])
    assert all(r.loss_usd == 0 and r.saved_usd == 0 for r in results)


# ---- collateral: what each control would have cost the legitimate traffic ----

def test_collateral_counts_the_legitimate_requests_a_budget_blocks_and_from_when():
    # a legitimate key spends $90, the incident's $20 crosses the $100 global budget, legitimate traffic after the
    # cutoff is blocked too: that is the budget's collateral (the issue: "would have blocked 8,606 legitimate
    # requests ($1,331)")
    rows = [Req("legit-1", at(0), at(1), key="k2", cost=Decimal(90)),
            Req("attack-1", at(2), at(3), key=None, cost=Decimal(20)),       # ends at 02:03: $110 >= $100
            Req("legit-2", at(4), at(5), key="k2", cost=Decimal(7)),
            Req("attack-2", at(6), at(7), key=None, cost=Decimal(20)),
            Req("legit-3", at(6, 30), at(6, 40), key="k2", cost=Decimal(3), status="failure"),
            Req("after", at(8), at(9), key="k2", cost=Decimal(3))]        # after the incident: not replayed
    con = make_case(rows)
    (budget,), _ = replay(con, ["attack-1", "attack-2"], [GlobalBudget(100)])
    assert (budget.loss_usd, budget.saved_usd) == (20, 20)
    assert (budget.collateral_requests, budget.collateral_usd) == (2, 7)       # a failed request costs nothing
    assert budget.collateral_from == at(4)
    f = budget.to_findings()["collateral"]
    assert f == {"requests": 2, "usd": 7.0, "from": "2025-03-17T02:04:00Z"}


def test_collateral_of_auth_is_the_keyless_legitimate_traffic_and_other_incidents_are_not_collateral():
    rows = [Req("app", at(0), at(1), key=None, cost=Decimal(2)),         # a proxy without keys: every app is keyless
            Req("keyed", at(1), at(2), key="k1", cost=Decimal(1)),
            Req("attack", at(3), at(4), key=None, cost=Decimal(50)),
            Req("other-incident", at(3), at(4), key=None, cost=Decimal(9))]
    con = make_case(rows)
    claimed = con.load_ids("all_incidents", ["attack", "other-incident"])
    (auth,), _ = replay(con, ["attack"], [AuthRequired()], claimed=claimed)
    assert auth.saved_usd == 50
    assert (auth.collateral_requests, auth.collateral_usd, auth.collateral_from) == (1, 2, at(0))
    (rpm,), _ = replay(con, ["attack"], [KeyRpm(20)], claimed=claimed)
    assert (rpm.collateral_requests, rpm.collateral_usd, rpm.collateral_from) == (0, 0, None)
