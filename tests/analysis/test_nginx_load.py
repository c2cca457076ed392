"""nginx_load: a surge of the gateway's LLM calls that nginx shows but cannot attribute (a balancer's log with no
client address) is a `suspicious` incident, never "nothing abnormal"; a nightly batch at its usual hour, ordinary
daily peaks and a quiet log are not.

The slot frames are what load_slots_step returns (slot index, served calls, seconds of $request_time, calls with a
time). The end-to-end case is sample_logs' own nginx log rewritten as a balancer without X-Forwarded-For would have
written it (the `timings` format: $remote_addr is the balancer, $request_time logged), read alone."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from forensics.analysis.nginx_load import SLOTS_PER_DAY, surges

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_logs"
DAY0 = 20_000 * SLOTS_PER_DAY            # a day's first slot (2024-10-04): slots are 5-minute steps since 1970


def _week(seed: int = 1, days: int = 7, batch: bool = True) -> dict[int, float]:
    """Served calls per slot: a working-day curve with Poisson noise, and (batch) a nightly job at 02:15-02:45."""
    rng = np.random.default_rng(seed)
    calls = {}
    for d in range(days):
        for k in range(SLOTS_PER_DAY):
            hour = k * 5 / 60
            rate = 2 + 18 * max(0.0, np.sin((hour - 7) / 12 * np.pi)) * (0.4 if d % 7 >= 5 else 1.0)
            if batch and 2.25 <= hour < 2.75:
                rate += 60
            calls[DAY0 + d * SLOTS_PER_DAY + k] = float(rng.poisson(rate))
    return calls


def _frame(calls: dict[int, float], seconds_per_call: float | None = 2.0) -> pd.DataFrame:
    rows = [(s, c, c * (seconds_per_call or 0), c if seconds_per_call else 0) for s, c in calls.items() if c]
    return pd.DataFrame(rows, columns=["slot", "calls", "busy_s", "timed"])


def test_a_quiet_week_with_its_nightly_batch_has_no_surge():
    for seed in range(5):
        assert surges(_frame(_week(seed))) == []
        assert surges(_frame(_week(seed), seconds_per_call=None)) == []


def test_an_open_proxy_drained_at_night_is_one_surge_of_its_own_slots():
    calls = _week(3)
    night = DAY0 + 6 * SLOTS_PER_DAY + 24          # the last day, 02:00
    busy = {s: c * 2.0 for s, c in calls.items()}
    for s in range(night, night + 9):              # 45 minutes, ~27 calls a minute, 4,000-token answers
        calls[s] += 135
        busy[s] += 135 * 100.0
    frame = _frame(calls)
    frame["busy_s"] = frame["slot"].map(busy)
    [(first, last, ratio, metric)] = surges(frame)
    assert (first, last) == (night, night + 8) and metric == "busy time" and ratio > 20
    # without $request_time the calls alone show it, batch and all
    [(first, last, _, metric)] = surges(_frame(calls, seconds_per_call=None))
    assert (first, last) == (night, night + 8) and metric == "calls"


def test_a_developers_burst_of_quick_calls_is_no_surge():
    # seen in a randomized draw: a few dozen quick calls in three minutes from known addresses, at a quiet hour
    calls = _week(6, batch=False)
    burst = DAY0 + 2 * SLOTS_PER_DAY + 21 * 12 + 8             # day 3, 21:40
    calls[burst] += 55
    calls[burst + 1] += 15
    frame = _frame(calls, seconds_per_call=2.2)
    assert surges(frame) == []                                 # $request_time logged: not busy
    assert surges(_frame(calls, seconds_per_call=None)) == []  # calls only: fewer than MIN_SURGE_CALLS in all
    calls[burst + 1] += 60                                     # the same at a drain's size is one
    [(first, _, _, metric)] = surges(_frame(calls, seconds_per_call=None))
    assert first == burst and metric == "calls"


def test_minutes_of_history_are_enough_and_a_batch_that_recurs_is_not_a_surge():
    # 30 minutes of a quiet gateway, then a surge: no other day to compare with, the slots before it are the usual
    calls = {DAY0 + k: 4.0 for k in range(6)} | {DAY0 + 6 + k: 150.0 for k in range(4)}
    [(first, last, ratio, _)] = surges(_frame(calls, seconds_per_call=None))
    assert (first, last) == (DAY0 + 6, DAY0 + 9) and ratio == pytest.approx(150 / 4)
    # too little before it to call anything usual: not a surge
    assert surges(_frame({DAY0: 4.0, DAY0 + 1: 150.0, DAY0 + 2: 150.0}, seconds_per_call=None)) == []
    # the first night's batch of a week's log is usual at its hour on the other nights
    assert surges(_frame(_week(4, days=3))) == []


@pytest.fixture(scope="module")
def balancer_log(sample_case_file, tmp_path_factory) -> Path:
    """sample_logs' nginx lines (as the sample case loaded them) written again as a balancer's `timings` log: no
    X-Forwarded-For, the balancer's address only, $request_time kept."""
    out = tmp_path_factory.mktemp("balancer") / "access.log"
    con = sample_case_file.con
    con.execute(f"""
        COPY (SELECT printf('%s - - [%s] "%s" %d %d "-" "%s" %s - - - -', remote_addr,
                            strftime(time, '%d/%b/%Y:%H:%M:%S +0000'), request_raw, status, coalesce(body_bytes, 0),
                            coalesce(user_agent, '-'), coalesce(CAST(request_time AS VARCHAR), '-'))
              FROM http_requests WHERE time IS NOT NULL AND request_raw NOT LIKE '%"%'
                AND regexp_matches(request_raw, '^[ -~]*$') AND regexp_matches(coalesce(user_agent, ''), '^[^"]*$')
              ORDER BY time, file_id, line_no)
        TO '{out}' (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\t')""")
    return out


@pytest.mark.slow
def test_nginx_behind_a_balancer_without_client_addresses_is_not_an_all_clear(balancer_log, tmp_path):
    from forensics.api import Case
    from forensics.outputs import findings as findings_out

    truth = json.loads((SAMPLE / "truth.json").read_text())["incidents"][0]
    assert "X-Forwarded-For" not in balancer_log.read_text()[:2000]
    with Case.from_inputs([str(balancer_log)], tmp_path / "out") as case:
        found = findings_out.build(case.investigate())
    [inc] = [i for i in found["incidents"] if i["verdict"] in ("attack", "suspicious")]
    assert inc["verdict"] == "suspicious" and inc["sources"] == ["nginx"]
    t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))    # noqa: E731
    assert abs((t(inc["start"]) - t(truth["start"])).total_seconds()) <= 60
    assert abs((t(inc["end"]) - t(truth["end"])).total_seconds()) <= 60
    assert "who called cannot be told" in inc["evidence"][0]
    assert found["status"] != "clear"
