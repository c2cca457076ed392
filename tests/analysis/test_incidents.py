"""Detector edges found in review: a huge open-proxy attack, keyless 401s, a keyless spike is never benign."""
from datetime import datetime, timedelta
from decimal import Decimal

import pandas as pd

from forensics.api import Case
from forensics.analysis.incidents import find_incidents

T0 = datetime(2026, 11, 9)


def _case(rows):
    c = Case.memory()
    con = c.con
    frame = pd.DataFrame(rows, columns=["request_id", "start_time", "key_hash", "client_ip", "status", "error_code",
                                        "cost"]).astype({"key_hash": object, "error_code": object, "cost": object})
    con.register("rows_in", frame)
    con.execute("""INSERT INTO llm_requests (request_id, start_time, end_time, key_hash, client_ip, status, error_code,
                       model_group, model, provider, requester_ip_raw, cost_usd)
                   SELECT request_id, start_time, start_time + INTERVAL 2 SECOND, key_hash, client_ip, status,
                          error_code, 'gpt-4o', 'gpt-4o', 'openai', client_ip, CAST(cost AS DECIMAL(38,12))
                   FROM rows_in""")
    con.unregister("rows_in")
    return c


def _baseline(days=3):
    """Two app servers with their keys, one request every 5 minutes each."""
    rows = []
    for i in range(days * 24 * 12):
        t = T0 + timedelta(minutes=5 * i)
        rows.append((f"a{i}", t, "k" * 64, "10.0.0.5", "success", None, "0.01"))
        rows.append((f"b{i}", t + timedelta(seconds=30), "j" * 64, "10.0.0.6", "success", None, "0.02"))
    return rows


def test_open_proxy_found_even_when_keyless_calls_outnumber_keyed_ones():
    rows = _baseline()
    start = T0 + timedelta(days=3)
    rows += [(f"x{i}", start + timedelta(seconds=i), None, f"203.0.113.{i % 30}", "success", None, "0.30")
             for i in range(5000)]
    con = _case(rows)
    [inc] = find_incidents(con).incidents
    assert (inc.kind, inc.verdict, inc.requests) == ("unauthenticated_proxy", "attack", 5000)


def test_keyless_401s_are_not_credential_stuffing():
    rows = _baseline()
    start = T0 + timedelta(days=2, hours=3)
    rows += [(f"u{i}", start + timedelta(seconds=10 * i), None, "198.51.100.9", "failure", "401", "0")
             for i in range(40)]
    con = _case(rows)
    assert [i.kind for i in find_incidents(con).incidents] == []


def test_many_distinct_rejected_keys_are_stuffing():
    rows = _baseline()
    start = T0 + timedelta(days=2, hours=3)
    rows += [(f"s{i}", start + timedelta(seconds=3 * i), f"{i:064x}", "198.51.100.9", "failure", "401", "0")
             for i in range(40)]
    con = _case(rows)
    [inc] = find_incidents(con).incidents
    assert (inc.kind, inc.verdict) == ("credential_stuffing", "attack")
    assert Decimal(0) == con.execute(f"SELECT coalesce(sum(cost_usd), 0) FROM llm_requests "
                                     f"JOIN {inc.table} USING (request_id)").fetchone()[0]
