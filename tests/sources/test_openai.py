"""OpenAI Usage/Costs pages and dashboard CSVs: detection, exact values, accounting, merging of re-exports."""
from __future__ import annotations

import gzip
import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from forensics.sources.interface import LoadContext, LoadResult
from forensics.sources.provider.openai import SOURCE
from forensics.sources.provider.provider_stage import CURSOR_NOTE

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "openai"


def load(con, path: Path, fmt: str | None = None) -> LoadResult:
    """Load one file as the driver would, then check the accounting invariant."""
    data = path.read_bytes()
    sample = gzip.decompress(data)[:65536] if data[:2] == b"\x1f\x8b" else data[:65536]
    fmt = fmt or SOURCE.detect(sample, path)
    assert fmt, f"{path.name} not detected"
    file_id = con.execute("SELECT coalesce(max(file_id), 0) + 1 FROM ingest_files").fetchall()[0][0]
    con.execute("INSERT INTO ingest_files (file_id, path, sha256, size_bytes, status, started_at, tool_version) "
                "VALUES (?, ?, ?, ?, 'loading', now(), 't')", [file_id, str(path), f"sha{file_id}", len(data)])
    result = SOURCE.load(LoadContext(con, file_id, path, str(path)), fmt)
    assert_conserved(con, file_id, result)
    return result


def assert_conserved(con, file_id: int, r: LoadResult) -> None:
    assert r.records == r.loaded + r.quarantined
    assert 0 <= r.merged <= r.loaded
    (q,), = con.execute("SELECT count(*) FROM quarantine WHERE file_id = ?", [file_id]).fetchall()
    (rows,), = con.execute("SELECT (SELECT count(*) FROM provider_usage WHERE file_id = $f) + "
                           "(SELECT count(*) FROM provider_costs WHERE file_id = $f)", {"f": file_id}).fetchall()
    assert q == r.quarantined
    assert rows == r.loaded - r.merged


def usage(con, where: str = "true") -> list[dict]:
    cur = con.execute(f"SELECT * FROM provider_usage WHERE {where} ORDER BY file_id, record_no")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


@pytest.mark.parametrize("name, fmt", [
    ("usage_completions_current.json", "openai.usage_completions"),
    ("usage_completions_grouped_1h.ndjson", "openai.usage_completions"),
    ("usage_completions_2025-04_1d.json", "openai.usage_completions"),
    ("usage_broken.ndjson", "openai.usage_completions"),
    ("costs.json", "openai.costs"),
    ("completions_usage_2024-11-01_2024-11-01.csv", "openai.usage_csv"),
    ("completions_usage_2024-11-02_2024-11-02.csv", "openai.usage_csv"),
    ("costs_2024-11-01_2024-11-02.csv", "openai.costs_csv"),
])
def test_detects_each_shape_from_content(name, fmt):
    path = ASSETS / name
    assert SOURCE.detect(path.read_bytes(), Path("renamed.dat")) == fmt or name.endswith("-02.csv")
    assert SOURCE.detect(path.read_bytes(), path) == fmt


@pytest.mark.parametrize("sample", [
    b'{"data":[{"starting_at":"2025-08-01T00:00:00Z","ending_at":"2025-08-02T00:00:00Z","results":[]}]}',
    b'{"object":"chat.completion","id":"chatcmpl-1","choices":[]}',
    b'203.0.113.7 - - [16/Nov/2026:03:00:04 +0100] "POST /chat/completions HTTP/1.1" 200 1534 "-" "curl/8.5.0"\n',
    b"request_id,startTime,endTime,spend\nabc,2026-11-16,2026-11-16,0.1\n",
    b"",
])
def test_does_not_claim_other_files(sample):
    assert SOURCE.detect(sample, Path("usage.json")) is None


def test_page_of_empty_buckets_falls_back_on_the_file_name():
    page = b'{"object":"page","data":[{"object":"bucket","start_time":1,"end_time":61,"results":[]}],"has_more":false}'
    assert SOURCE.detect(page, Path("costs-nov.json")) == "openai.costs"
    assert SOURCE.detect(page, Path("usage-nov.json")) == "openai.usage_completions"
    assert SOURCE.detect(page.replace(b"completions", b"x"), Path("p.json")) == "openai.usage_completions"


def test_current_spec_example_loads_the_provider_totals(con):
    r = load(con, ASSETS / "usage_completions_current.json")
    assert (r.records, r.loaded, r.quarantined, r.merged) == (1, 1, 0, 0)
    [row] = usage(con)
    assert row["provider"] == "openai"
    assert (row["bucket_start"], row["bucket_end"], row["bucket_width"]) == (
        datetime(2024, 11, 1), datetime(2024, 11, 2), "1d")
    assert (row["input_tokens"], row["uncached_input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"],
            row["cache_write_1h_tokens"], row["output_tokens"], row["requests"]) == (1000, 500, 400, 100, None, 500, 5)
    assert row["model"] is None and row["api_key_id"] is None and row["batch"] is None
    page = json.loads((ASSETS / "usage_completions_current.json").read_text())
    assert json.loads(row["raw"]) == page["data"][0]["results"][0]
    assert r.notes == ("page cursor page_AAAAAGdGxdEiJdKOAAAAAGcqsYA=: more pages exist "
                       "(has_more is true; no page continuing it was in the case when "
                       "this file was loaded)",)


def test_grouped_pages_give_one_row_per_result_and_none_for_empty_buckets(con):
    r = load(con, ASSETS / "usage_completions_grouped_1h.ndjson")
    assert (r.records, r.loaded, r.quarantined) == (3, 3, 0)
    assert r.notes == ()   # page 2 continues page 1: no cursor left dangling
    rows = usage(con)
    assert [(x["record_no"], x["api_key_id"], x["model"], x["input_tokens"], x["output_tokens"]) for x in rows] == [
        (1, "key_abc", "gpt-4o-mini-2024-07-18", 5000, 1000),
        (2, "key_xyz", "gpt-4-0613", 120000, 64000),
        (3, "key_abc", "gpt-4o-mini-2024-07-18", 5000, 1000),
    ]
    assert {x["bucket_width"] for x in rows} == {"1h"}
    assert datetime(2024, 11, 1, 1) not in {x["bucket_start"] for x in rows}       # the empty bucket
    # ...listed in provider_buckets, beside the others: the time the export covers (not records: not counted)
    listed = con.execute("SELECT bucket_start, results FROM provider_buckets WHERE provider = 'openai' "
                         "AND kind = 'usage' ORDER BY bucket_start").fetchall()
    assert (datetime(2024, 11, 1, 1), 0) in listed and sum(n for _, n in listed) == 3
    new, old = rows[0], rows[2]
    assert (new["cache_write_tokens"], new["uncached_input_tokens"], new["service_tier"]) == (200, 3000, "default")
    # 2025-04 shape: no uncached/cache-write fields; input_tokens stays the provider's total, nothing rebuilt
    assert (old["cache_write_tokens"], old["uncached_input_tokens"], old["cache_read_tokens"]) == (None, None, 4000)
    assert old["service_tier"] is None and old["batch"] is False


def test_array_of_2025_04_pages(con):
    r = load(con, ASSETS / "usage_completions_2025-04_1d.json")
    assert (r.records, r.loaded, r.quarantined, r.notes) == (3, 3, 0, ())
    rows = usage(con)
    assert [x["input_tokens"] for x in rows] == [5000, 120000, 700]
    assert [x["batch"] for x in rows] == [False, True, False]
    assert rows[2]["bucket_start"] == datetime(2024, 11, 3)


def test_broken_records_are_quarantined_with_reasons_and_good_ones_load(con):
    r = load(con, ASSETS / "usage_broken.ndjson")
    assert (r.records, r.loaded, r.quarantined) == (7, 2, 5)
    reasons = dict(con.execute("SELECT record_no, reason FROM quarantine ORDER BY record_no").fetchall())
    assert reasons == {
        1: "bucket has no start_time",
        3: 'input_tokens "lots" is not a whole number',
        4: "result is not an object",
        5: "not valid JSON (Expecting ',' delimiter)",
        6: "organization.usage.images.result has no token counts: not loaded into provider_usage",
    }
    rows = usage(con)
    assert [(x["record_no"], x["input_tokens"], x["output_tokens"]) for x in rows] == [(2, 10, 2), (7, 16, None)]
    assert json.loads(rows[1]["raw"])["object"] == "organization.usage.embeddings.result"
    images_raw = con.execute("SELECT raw FROM quarantine WHERE record_no = 6").fetchall()[0][0]
    assert json.loads(images_raw)["images"] == 2


def test_costs_are_exact_dollars(con):
    r = load(con, ASSETS / "costs.json")   # two pretty-printed pages one after the other
    assert (r.records, r.loaded, r.quarantined, r.notes) == (3, 3, 0, ())
    rows = con.execute("SELECT line_item, project_id, api_key_id, quantity, quantity_unit, amount_usd, amount_raw, "
                       "currency_raw, bucket_start FROM provider_costs ORDER BY record_no").fetchall()
    assert rows == [
        ("input_tokens", "proj_abc", None, 10000.0, "tokens", Decimal("0.06"), "0.06", "usd", datetime(2024, 11, 1)),
        ("gpt-4o-2024-08-06, output", "proj_abc", "key_abc", None, None, Decimal("1.2345678901"), "1.2345678901",
         "usd", datetime(2024, 11, 1)),
        ("Image models", "proj_abc", None, None, None, Decimal("0.12"), "0.12", "usd", datetime(2024, 11, 2)),
    ]
    assert con.execute("SELECT sum(amount_usd) FROM provider_costs").fetchall()[0][0] == Decimal("1.4145678901")


def test_dashboard_usage_csv_with_float_counts(con):
    r = load(con, ASSETS / "completions_usage_2024-11-01_2024-11-01.csv")
    assert (r.records, r.loaded, r.quarantined) == (3, 3, 0)
    rows = usage(con)
    assert [(x["record_no"], x["api_key_id"], x["requests"], x["input_tokens"], x["output_tokens"],
             x["cache_read_tokens"], x["uncached_input_tokens"], x["batch"], x["bucket_width"]) for x in rows] == [
        (2, "key_abc", 3, 1200, 300, 200, 1000, False, "1m"),
        (3, "key_xyz", 1, 50, 20, 0, 50, False, "1m"),
        (4, "key_xyz", 2, 4000, 1000, 0, 4000, True, "1m"),
    ]
    assert rows[0]["user_id"] is None and json.loads(rows[0]["raw"])["project_name"] == "Main"
    assert rows[2]["bucket_start"] == datetime(2024, 11, 1, 0, 1)


def test_empty_usage_export_is_valid_and_empty(con):
    r = load(con, ASSETS / "completions_usage_2024-11-02_2024-11-02.csv")
    assert (r.records, r.loaded, r.quarantined) == (0, 0, 0)


def test_dashboard_cost_csv(con):
    r = load(con, ASSETS / "costs_2024-11-01_2024-11-02.csv")
    assert (r.records, r.loaded, r.quarantined) == (3, 3, 0)
    rows = con.execute("SELECT record_no, line_item, amount_usd, currency_raw, bucket_end FROM provider_costs "
                       "ORDER BY record_no").fetchall()
    assert rows == [
        (2, "gpt-4o-2024-08-06, input", Decimal("0.06"), "usd", datetime(2024, 11, 2)),
        (3, "gpt-4o-2024-08-06, output", Decimal("0.0123456789"), "usd", datetime(2024, 11, 2)),
        (4, "gpt-4-0613, output", Decimal("12.5"), "usd", datetime(2024, 11, 3)),
    ]


def test_csv_bad_values_and_malformed_lines_are_quarantined_by_line(con, tmp_path):
    f = tmp_path / "completions_usage.csv"
    f.write_text("start_time,end_time,start_time_iso,end_time_iso,input_tokens,output_tokens,model\n"
                 "1730419200,1730419260,2024-11-01T00:00:00+00:00,2024-11-01T00:01:00+00:00,3.0,1,gpt-4o\n"
                 "1,2,3\n"
                 "1730419260,1730419320,2024-11-01T00:01:00+00:00,2024-11-01T00:02:00+00:00,3.5,1,gpt-4o\n"
                 ",,2024-11-01T00:02:00+00:00,2024-11-01T00:03:00Z,7,1,gpt-4o\n")
    r = load(con, f)
    assert (r.records, r.loaded, r.quarantined) == (4, 2, 2)
    quarantined = con.execute("SELECT record_no, raw, reason FROM quarantine ORDER BY record_no").fetchall()
    assert [(n, reason.split(":")[0]) for n, _, reason in quarantined] == [
        (3, "CSV line is malformed"), (4, 'input_tokens "3.5" is not a whole number')]
    assert quarantined[0][1] == "1,2,3"
    rows = usage(con)
    assert [(x["record_no"], x["input_tokens"], x["bucket_start"]) for x in rows] == [
        (2, 3, datetime(2024, 11, 1, 0, 0)), (5, 7, datetime(2024, 11, 1, 0, 2))]   # ISO time when unix is empty


def test_reexported_rows_merge_and_other_widths_are_kept(con, tmp_path):
    first = load(con, ASSETS / "usage_completions_grouped_1h.ndjson")
    overlapping = tmp_path / "again.ndjson"   # same buckets, another file (another sha256)
    overlapping.write_text((ASSETS / "usage_completions_grouped_1h.ndjson").read_text() + "\n")
    again = load(con, overlapping)
    assert (again.records, again.loaded, again.merged) == (3, 3, 3)
    daily = load(con, ASSETS / "usage_completions_2025-04_1d.json")   # 1d view of overlapping usage
    assert daily.merged == 0
    assert con.execute("SELECT count(*) FROM provider_usage").fetchall()[0][0] == first.loaded + daily.loaded
    assert con.execute("SELECT list(DISTINCT bucket_width ORDER BY bucket_width) FROM provider_usage"
                       ).fetchall()[0][0] == ["1d", "1h"]


def test_same_page_twice_in_one_file_merges(con, tmp_path):
    page = (ASSETS / "usage_completions_current.json").read_text()
    f = tmp_path / "twice.json"
    f.write_text(page + "\n" + page)
    r = load(con, f)
    assert (r.records, r.loaded, r.merged) == (2, 2, 1)


def test_reexport_with_other_values_is_kept_and_noted(con, tmp_path):
    load(con, ASSETS / "usage_completions_current.json")
    page = json.loads((ASSETS / "usage_completions_current.json").read_text())
    page["data"][0]["results"][0]["output_tokens"] = 600
    f = tmp_path / "later.json"
    f.write_text(json.dumps(page))
    r = load(con, f)
    assert (r.loaded, r.merged) == (1, 0)
    assert any("provider_usage buckets of this file appear in the case with other token counts" in n for n in r.notes)


def test_keys_in_any_field_are_redacted(con, tmp_path):
    key = "sk-proj-" + "A1b2C3d4" * 4
    page = {"object": "page", "has_more": False, "next_page": None, "data": [
        {"object": "bucket", "start_time": 1730419200, "end_time": 1730419260, "results": [
            {"object": "organization.usage.completions.result", "input_tokens": 1, "output_tokens": 1,
             "num_model_requests": 1, "user_id": key},
            {"object": "organization.usage.completions.result", "input_tokens": key, "output_tokens": 1}]}]}
    f = tmp_path / "leaky.json"
    f.write_text(json.dumps(page))
    r = load(con, f)
    assert (r.loaded, r.quarantined) == (1, 1)
    stored = con.execute("SELECT user_id || raw FROM provider_usage UNION ALL SELECT raw || reason FROM quarantine"
                         ).fetchall()
    assert stored and all(key not in text and "sk-...C3d4" in text for (text,) in stored)


def test_gzipped_ndjson(con, tmp_path):
    f = tmp_path / "usage.ndjson.gz"
    f.write_bytes(gzip.compress((ASSETS / "usage_completions_grouped_1h.ndjson").read_bytes()))
    assert load(con, f).loaded == 3


def test_a_page_cut_short_is_one_quarantined_record_with_its_text(con, tmp_path):
    f = tmp_path / "cut.json"
    text = (ASSETS / "usage_completions_current.json").read_text()[:300]
    f.write_text(text)
    r = load(con, f, "openai.usage_completions")
    assert (r.records, r.loaded, r.quarantined) == (1, 0, 1)
    raw, reason = con.execute("SELECT raw, reason FROM quarantine").fetchone()
    assert raw == text.strip("\n") and reason.startswith("not valid JSON (") and "cut short" in reason


def test_bad_buckets_in_valid_json_are_quarantined_with_their_own_text(con, tmp_path):
    good = {"object": "bucket", "start_time": 1730419200, "end_time": 1730419260, "results": [
        {"object": "organization.usage.completions.result", "input_tokens": 7, "output_tokens": 1}]}
    no_start = {"object": "bucket", "end_time": 1730419320, "results": good["results"]}
    backwards = {"object": "bucket", "start_time": 1730419380, "end_time": 1730419320, "results": []}
    pages = [{"object": "page", "data": [good, no_start], "has_more": True, "next_page": "page_1"},
             {"object": "page", "data": [backwards, dict(good, start_time="soon")], "has_more": False},
             {"object": "page", "error": {"message": "rate limited"}}]
    f = tmp_path / "pages.ndjson"
    f.write_text("\n".join(json.dumps(p) for p in pages) + "\n")
    r = load(con, f, "openai.usage_completions")
    assert (r.records, r.loaded, r.quarantined) == (5, 1, 4)
    got = con.execute("SELECT record_no, reason, raw FROM quarantine ORDER BY record_no").fetchall()
    assert [(n, reason) for n, reason, _ in got] == [
        (2, "bucket has no start_time"), (3, "bucket ends before it starts"),
        (4, 'bucket start_time "soon" is not a unix time'), (5, "page has no data list")]
    assert json.loads(got[0][2]) == no_start and json.loads(got[3][2]) == pages[2]
    assert r.notes == (CURSOR_NOTE.format("page_1"),)


def test_a_page_loaded_after_its_continuation_has_no_cursor_note(con, tmp_path):
    lines = (ASSETS / "usage_completions_grouped_1h.ndjson").read_text().splitlines()
    (tmp_path / "page1.json").write_text(lines[0])
    (tmp_path / "page2.json").write_text(lines[1])
    assert load(con, tmp_path / "page2.json").notes == ()
    assert load(con, tmp_path / "page1.json").notes == ()   # its next bucket (02:00, 1h) is already in the case


def test_a_case_made_before_provider_buckets_is_read_merged_and_completed(tmp_path):
    """provider_buckets came without a new schema version: a case written before it is read (the provider-only
    search runs on its usage rows), merged, and gains the table when opened read-write."""
    from forensics.analysis.provider_spikes import find_provider_spikes, has_listed
    from forensics.api import Case

    with Case.open(tmp_path / "old.duckdb") as old:
        old.ingest([ASSETS / "usage_completions_grouped_1h.ndjson"])
        assert old.execute("SELECT count(*) FROM provider_buckets").fetchone()[0] > 0
        old.execute("DROP TABLE provider_buckets")
    with Case.open(tmp_path / "old.duckdb", read_only=True) as old:
        assert old.schema_version == 2 and not has_listed(old)
        assert find_provider_spikes(old) == []
    with Case.open(tmp_path / "new.duckdb") as new:
        assert [r.format for r in new.merge([tmp_path / "old.duckdb"])] == ["openai.usage_completions"]
        assert has_listed(new) and new.execute("SELECT count(*) FROM provider_usage").fetchone()[0] == 3
    with Case.open(tmp_path / "old.duckdb") as old:
        assert old.execute("SELECT count(*) FROM provider_buckets").fetchone() == (0,)
    with Case.open(tmp_path / "cur.duckdb") as cur:                # a current case: its listed buckets merge across
        cur.ingest([ASSETS / "usage_completions_grouped_1h.ndjson"])
        listed = cur.execute("SELECT count(*) FROM provider_buckets").fetchone()[0]
    with Case.open(tmp_path / "new2.duckdb") as new:
        new.merge([tmp_path / "cur.duckdb"])
        assert new.execute("SELECT count(*) FROM provider_buckets b JOIN ingest_files f USING (file_id) "
                           "WHERE f.status = 'loaded'").fetchone()[0] == listed
