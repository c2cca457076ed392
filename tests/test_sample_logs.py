"""sample_logs/ (the open_proxy incident) loads losslessly and reproduces the write-up's figures."""
from decimal import Decimal

import pytest


def test_every_file_conserves_its_records(sample_case):
    con, reports = sample_case
    assert reports, "sample_logs/ holds no files"
    for r in reports:
        assert r.status == "loaded", f"{r.path}: {r.message}"
        assert r.format != "unrecognised", r.path
        assert r.records == r.loaded + r.quarantined, r.path
    stored = con.execute(
        "SELECT sum(records), sum(loaded), sum(quarantined) FROM ingest_files WHERE status = 'loaded'"
    ).fetchone()
    assert stored == (sum(r.records for r in reports), sum(r.loaded for r in reports),
                      sum(r.quarantined for r in reports))


def test_every_source_family_is_present(sample_case):
    con, _ = sample_case
    formats = {f for (f,) in con.execute("SELECT DISTINCT format FROM ingest_files").fetchall()}
    for family in ("litellm.", "nginx.", "openai.", "anthropic."):
        assert any(f.startswith(family) for f in formats), f"no {family} file in sample_logs: {formats}"


def test_attack_requests_match_truth(sample_case, sample_truth):
    con, _ = sample_case
    [incident] = sample_truth["incidents"]
    ids = incident["request_ids"]
    con.execute("CREATE OR REPLACE TEMP TABLE truth_ids AS SELECT unnest(?::VARCHAR[]) AS request_id", [ids])
    n, keyless, cost = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE key_hash IS NULL), sum(cost_usd) "
        "FROM llm_requests JOIN truth_ids USING (request_id)"
    ).fetchone()
    assert n == len(ids) == incident["requests"]
    assert 1100 <= n <= 1300
    assert keyless == n                                   # unauthenticated: no virtual key on any of them
    assert cost == Decimal(incident["cost_usd"])          # re-priced cost equals the simulator's exact cost
    assert abs(cost - Decimal("347.23")) <= Decimal("347.23") * Decimal("0.05")
    (minutes,) = con.execute(
        "SELECT date_diff('second', min(start_time), max(start_time)) / 60 FROM llm_requests JOIN truth_ids "
        "USING (request_id)"
    ).fetchone()
    assert 40 <= minutes <= 46


def test_attack_comes_from_the_real_clients_not_the_balancer(sample_case, sample_truth):
    con, _ = sample_case
    [incident] = sample_truth["incidents"]
    con.execute("CREATE OR REPLACE TEMP TABLE truth_ids AS SELECT unnest(?::VARCHAR[]) AS request_id",
                [incident["request_ids"]])
    ips = {ip for (ip,) in con.execute(
        "SELECT DISTINCT client_ip FROM llm_requests JOIN truth_ids USING (request_id)").fetchall()}
    assert ips == set(incident["attacker_ips"])
    nginx_ips = {ip for (ip,) in con.execute(
        "SELECT DISTINCT h.client_ip FROM http_requests h JOIN llm_requests r USING (litellm_call_id) "
        "JOIN truth_ids t ON t.request_id = r.request_id").fetchall()}
    assert nginx_ips == set(incident["attacker_ips"])


def test_baseline_cost_per_hour(sample_case, sample_truth):
    con, _ = sample_case
    base = sample_truth["baseline"]
    (per_hour,) = con.execute(
        "SELECT sum(cost_usd) / (date_diff('second', ?::TIMESTAMP, ?::TIMESTAMP) / 3600) FROM llm_requests "
        "WHERE start_time >= ?::TIMESTAMP AND start_time < ?::TIMESTAMP",
        [base["start"].rstrip("Z"), base["end"].rstrip("Z"), base["start"].rstrip("Z"), base["end"].rstrip("Z")],
    ).fetchone()
    assert 12 <= per_hour <= 15
    assert per_hour == pytest.approx(float(base["cost_per_hour_usd"]), rel=0.01)


def test_requests_in_two_litellm_exports_stay_one_row(sample_case):
    con, reports = sample_case
    litellm = [r for r in reports if r.format and r.format.startswith("litellm.")]
    assert len(litellm) >= 2 and sum(r.merged for r in litellm) > 0
    (dupes,) = con.execute("SELECT count(*) - count(DISTINCT request_id) FROM llm_requests").fetchone()
    assert dupes == 0


def test_every_request_is_priced(sample_case):
    con, _ = sample_case
    rows = dict(con.execute("SELECT price_status, count(*) FROM llm_requests GROUP BY 1").fetchall())
    assert set(rows) <= {"priced"}, rows
    (logged, repriced) = con.execute(
        "SELECT sum(spend_logged), sum(cost_usd) FROM llm_requests WHERE status = 'success'").fetchone()
    assert abs(logged - repriced) <= logged * Decimal("0.001")
