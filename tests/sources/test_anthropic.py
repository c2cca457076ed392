"""Anthropic usage and cost reports: detection, total input, cents to dollars exactly, accounting, merging."""
from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from forensics.sources.provider.anthropic import SOURCE
from forensics.sources.interface import LoadContext, LoadResult

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "anthropic"


def load(con, path: Path, fmt: str | None = None) -> LoadResult:
    """Load one file as the driver would, then check the accounting invariant."""
    data = path.read_bytes()
    fmt = fmt or SOURCE.detect(data[:65536], path)
    assert fmt, f"{path.name} not detected"
    file_id = con.execute("SELECT coalesce(max(file_id), 0) + 1 FROM ingest_files").fetchall()[0][0]
    con.execute("INSERT INTO ingest_files (file_id, path, sha256, size_bytes, status, started_at, tool_version) "
                "VALUES (?, ?, ?, ?, 'loading', now(), 't')", [file_id, str(path), f"sha{file_id}", len(data)])
    r = SOURCE.load(LoadContext(con, file_id, path, str(path)), fmt)
    assert r.records == r.loaded + r.quarantined and 0 <= r.merged <= r.loaded
    (q, rows), = con.execute(
        "SELECT (SELECT count(*) FROM quarantine WHERE file_id = $f), "
        "(SELECT count(*) FROM provider_usage WHERE file_id = $f) + (SELECT count(*) FROM provider_costs "
        "WHERE file_id = $f)", {"f": file_id}).fetchall()
    assert q == r.quarantined and rows == r.loaded - r.merged
    return r


def rows(con, table: str) -> list[dict]:
    cur = con.execute(f"SELECT * FROM {table} ORDER BY file_id, record_no")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def write(tmp_path: Path, name: str, results: list[dict], start="2025-08-01T00:00:00Z", end="2025-08-02T00:00:00Z"):
    f = tmp_path / name
    f.write_text(json.dumps({"data": [{"starting_at": start, "ending_at": end, "results": results}],
                             "has_more": False, "next_page": None}))
    return f


@pytest.mark.parametrize("name, fmt", [
    ("usage_report.json", "anthropic.usage_report"),
    ("cost_report.json", "anthropic.cost_report"),
    ("cost_report_analytics.json", "anthropic.cost_report"),
    ("report_broken.ndjson", "anthropic.cost_report"),
])
def test_detects_reports_from_content(name, fmt):
    assert SOURCE.detect((ASSETS / name).read_bytes(), Path("x.dat")) == fmt


@pytest.mark.parametrize("sample", [
    b'{"object":"page","data":[{"object":"bucket","start_time":1730419200,"end_time":1730505600,"results":[]}]}',
    b'{"data":[{"date":"2025-08-01","model_breakdown":[{"estimated_cost":{"currency":"USD","amount":1025}}]}]}',
    b'{"data":[{"starting_at":"2025-08-01T00:00:00Z","ending_at":"2025-08-02T00:00:00Z","results":[]}]}',
    b"starting_at,uncached_input_tokens\n",
])
def test_does_not_claim_other_files(sample):
    assert SOURCE.detect(sample, Path("report.json")) is None


def test_usage_report_total_input_is_the_sum_of_its_parts(con):
    r = load(con, ASSETS / "usage_report.json")
    assert (r.records, r.loaded, r.quarantined) == (2, 2, 0)
    assert r.notes == ("page cursor page_MjAyNS0wNS0xNFQwMDowMDowMFo=: more pages exist "
                       "(has_more is true; no page continuing it was in the case when "
                       "this file was loaded)",)
    example, workbench = rows(con, "provider_usage")
    assert (example["bucket_start"], example["bucket_end"], example["bucket_width"]) == (
        datetime(2025, 8, 1), datetime(2025, 8, 2), "1d")
    assert (example["input_tokens"], example["uncached_input_tokens"], example["cache_read_tokens"],
            example["cache_write_tokens"], example["cache_write_1h_tokens"], example["output_tokens"],
            example["web_search_requests"], example["requests"]) == (492, 123, 123, 246, 123, 123, 123, None)
    assert (example["provider"], example["api_key_id"], example["project_id"], example["model"],
            example["service_tier"], example["context_window"]) == (
        "anthropic", "apikey_01Rj2N8SVvo6BePZj99NhmiT", "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
        "claude-sonnet-4-20250514", "standard", "0-200k")
    assert json.loads(example["raw"])["cache_creation"] == {"ephemeral_1h_input_tokens": 123,
                                                            "ephemeral_5m_input_tokens": 123}
    # default workspace and Workbench usage: NULL ids
    assert (workbench["project_id"], workbench["api_key_id"]) == (None, None)
    assert (workbench["input_tokens"], workbench["cache_write_tokens"]) == (250000 + 96000 + 4000, 4000)


def test_cost_report_cents_become_exact_dollars(con):
    r = load(con, ASSETS / "cost_report.json")
    assert (r.records, r.loaded, r.quarantined, r.notes) == (3, 3, 0, ())
    got = [(x["amount_raw"], x["amount_usd"], x["currency_raw"], x["project_id"], x["line_item"], x["cost_type"],
            x["token_type"], x["model"]) for x in rows(con, "provider_costs")]
    assert got == [
        ("123.78912", Decimal("1.2378912"), "USD", "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
         "Claude Sonnet 4 Usage - Input Tokens", "tokens", "uncached_input_tokens", "claude-sonnet-4-20250514"),
        ("250", Decimal("2.5"), "USD", None, "Claude Opus 3 Usage - Output Tokens", "tokens", "output_tokens",
         "claude-3-opus-20240229"),
        ("0.5", Decimal("0.005"), "USD", None, "Code Execution Usage", "code_execution", None, None),
    ]
    assert str(got[0][1]) == "1.237891200000"   # DECIMAL(38,12), never a float
    assert con.execute("SELECT sum(amount_usd) FROM provider_costs").fetchall()[0][0] == Decimal("3.7428912")


def test_numeric_amount_is_read_as_cents_and_noted(con, tmp_path):
    f = write(tmp_path, "cost.json", [{"currency": "USD", "amount": 123.78912, "description": "x"}])
    r = load(con, f)
    assert r.loaded == 1
    assert con.execute("SELECT amount_usd, amount_raw FROM provider_costs").fetchall() == [
        (Decimal("1.2378912"), "123.78912")]
    assert r.notes == ("1 cost rows have a JSON number as amount where the API writes a decimal string: read as "
                       "cents per the API; check the file was not converted to dollars",)


def test_analytics_cost_rows_keep_list_amount_in_raw(con):
    r = load(con, ASSETS / "cost_report_analytics.json")
    assert (r.loaded, len(r.notes)) == (1, 1) and "list_amount" in r.notes[0]
    [row] = rows(con, "provider_costs")
    assert row["amount_usd"] == Decimal("10.005") and json.loads(row["raw"])["list_amount"] == "1250"


def test_analytics_usage_rows_count_requests(con, tmp_path):
    f = write(tmp_path, "usage.json", [{"uncached_input_tokens": 10, "cache_read_input_tokens": 0,
                                        "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                                           "ephemeral_1h_input_tokens": 0},
                                        "output_tokens": 5, "requests": 3, "total_tokens": 15}],
              start="2025-08-01T10:00:00Z", end="2025-08-01T10:01:00Z")
    load(con, f)
    [row] = rows(con, "provider_usage")
    assert (row["requests"], row["input_tokens"], row["bucket_width"]) == (3, 10, "1m")


def test_broken_records_are_quarantined_with_reasons(con):
    r = load(con, ASSETS / "report_broken.ndjson")
    assert (r.records, r.loaded, r.quarantined) == (6, 1, 5)
    assert con.execute("SELECT list(reason ORDER BY record_no) FROM quarantine").fetchall()[0][0] == [
        "bucket has no starting_at",
        'bucket starting_at "yesterday" is not an RFC 3339 time',
        'amount "abc" is not a number',
        'currency "EUR" is not USD',
        "not valid JSON (Expecting value)",
    ]
    assert con.execute("SELECT record_no, amount_usd FROM provider_costs").fetchall() == [(5, Decimal("0.999"))]


def test_times_with_offsets_become_naive_utc(con, tmp_path):
    row = {"uncached_input_tokens": 1, "output_tokens": 1}
    load(con, write(tmp_path, "offset.json", [row], start="2025-08-01T02:00:00+02:00", end="2025-08-01T03:00:00+02:00"))
    load(con, write(tmp_path, "naive.json", [row], start="2025-08-01T01:00:00", end="2025-08-01T02:00:00"))
    got = con.execute("SELECT bucket_start, bucket_end, bucket_width FROM provider_usage ORDER BY file_id").fetchall()
    assert got == [(datetime(2025, 8, 1, 0), datetime(2025, 8, 1, 1), "1h"),
                   (datetime(2025, 8, 1, 1), datetime(2025, 8, 1, 2), "1h")]


def test_reexport_merges_but_other_dimensions_do_not(con, tmp_path):
    load(con, ASSETS / "cost_report.json")
    copy = tmp_path / "cost_report_copy.json"
    copy.write_text((ASSETS / "cost_report.json").read_text() + "\n")
    again = load(con, copy)
    assert (again.loaded, again.merged) == (3, 3)
    row = {"uncached_input_tokens": 5, "output_tokens": 1, "model": "claude-sonnet-4-20250514"}
    geo = load(con, write(tmp_path, "geo.json", [dict(row, inference_geo="us"), dict(row, inference_geo="eu")]))
    assert (geo.loaded, geo.merged) == (2, 0)
    assert con.execute("SELECT count(*) FROM provider_costs").fetchall()[0][0] == 3
