"""LiteLLM loaders: SpendLogs CSV/JSON/NDJSON, StandardLoggingPayload (NDJSON, arrays, one object), flat rows."""
from __future__ import annotations

import gzip
import json
import zlib
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import examples, run_cli
from forensics import case, ingest, secrets
from forensics.sources.litellm import litellm, litellm_read
from forensics.sources import lines as lines_module
from forensics.sources.interface import LoadContext, LoadResult

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "litellm"
R1 = "chatcmpl-2283081b-dc89-41f6-93e6-d4f914774027"
REF_HASH = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
OLD_KEY = "sk-_UKt8dy5f-8dNLIOT5bQRA"           # a raw virtual key, as very old metadata kept it
BEARER_KEY = "sk-Fn8Ej39NkBQmUagFEoUWPQ"        # sent in an Authorization header the payload kept
S3_OBJECT = "time-2025-06-22T18-03-20-123456_chatcmpl-s3-object-0001.json"
# one SpendLogs row as LiteLLM's GCS bucket / pub/sub loggers write it (docs/my-website/docs/observability/
# gcs_bucket_integration.md: metadata double-encoded as a string, cache_hit "None", empty strings for no value)
GCS_ROW = "gcs_spendlogs_row.json"
GCS_ID = "chatcmpl-3946ddc2-bcfe-43f6-9b8e-2427951de85c"
UI_PAGE = "spendlogs_ui_page.json"               # GET /spend/logs/ui?page=1&page_size=3: rows 1-3 of 7
UI_IDS = ["chatcmpl-9f3b2c1e-4a5d-4e6f-8a7b-0c1d2e3f4a5b", "chatcmpl-1b7e6d5c-2f3a-4b8c-9d0e-5f6a7b8c9d0e",
          "0c9a8b7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d"]
SUPPORT_HASH = "8c85814b1b3c2ba5e8b59e83082aef71ad1db67e248bd9454889f64795bff284"


@pytest.fixture
def db():
    con = case.connect(":memory:")
    yield con
    con.close()


def load(con, path: Path, fmt: str | None = None) -> LoadResult:
    """Detect and load one file the way the driver does (one transaction) and check the accounting invariant."""
    path = Path(path)
    sample = path.read_bytes()[:65536]
    if sample[:2] == b"\x1f\x8b":
        sample = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(sample, 65536)
    fmt = fmt or litellm.SOURCE.detect(sample, path)
    assert fmt, f"{path.name} not detected"
    (file_id,) = con.execute("SELECT coalesce(max(file_id), 0) + 1 FROM ingest_files").fetchone()
    con.execute(
        "INSERT INTO ingest_files (file_id, path, sha256, size_bytes, format, status, started_at, tool_version) "
        "VALUES (?, ?, 'x', 1, ?, 'loading', now(), 't')",
        [file_id, str(path), fmt],
    )
    con.execute("BEGIN TRANSACTION")
    result = litellm.SOURCE.load(LoadContext(con, file_id, path, path.name), fmt)
    con.execute("COMMIT")
    assert result.records == result.loaded + result.quarantined
    (q,) = con.execute("SELECT count(*) FROM quarantine WHERE file_id = ?", [file_id]).fetchone()
    (own,) = con.execute("SELECT count(*) FROM llm_requests WHERE file_id = ?", [file_id]).fetchone()
    assert q == result.quarantined
    assert own == result.loaded - result.merged
    return result


def row(con, request_id: str) -> dict:
    cur = con.execute("SELECT * FROM llm_requests WHERE request_id = ?", [request_id])
    names = [d[0] for d in cur.description]
    found = cur.fetchall()
    assert len(found) == 1, f"{request_id}: {len(found)} rows"
    return dict(zip(names, found[0]))


def reasons(con) -> dict[int, str]:
    return dict(con.execute("SELECT record_no, reason FROM quarantine ORDER BY record_no").fetchall())


def all_text(con) -> str:
    """Every stored value of llm_requests and quarantine, as one string: to look for leaked keys."""
    rows = con.execute("SELECT CAST(to_json(r) AS VARCHAR) FROM llm_requests r").fetchall()
    rows += con.execute("SELECT CAST(to_json(q) AS VARCHAR) FROM quarantine q").fetchall()
    return "\n".join(r for (r,) in rows)


# ---- detection ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fmt", [
    ("spendlogs.csv", "litellm.spendlogs_csv"),
    ("spendlogs_old.csv", "litellm.spendlogs_csv"),
    ("spendlogs_api.json", "litellm.spendlogs_json"),
    ("spendlogs.ndjson", "litellm.spendlogs_ndjson"),
    ("payload.ndjson", "litellm.payload_ndjson"),
    ("payload_batches.json", "litellm.payload_json_array"),
    (S3_OBJECT, "litellm.payload_object"),
    (GCS_ROW, "litellm.spendlogs_object"),
    ("datadog.json", "litellm.payload_json_array"),
    ("flat_spend.ndjson", "litellm.flat_spend"),
    (UI_PAGE, "litellm.spendlogs_ui_page"),
    ("spendlogs_summarize.json", "litellm.spendlogs_daily_totals"),
])
def test_detects_each_format_from_content(name, fmt):
    data = (ASSETS / name).read_bytes()
    assert litellm.SOURCE.detect(data[:65536], Path("renamed.log")) == fmt


@pytest.mark.parametrize("sample", [
    b'203.0.113.10 - - [24/Jan/2025:09:20:46 +0000] "POST /v1/chat/completions HTTP/1.1" 200 512 "-" "curl/8"\n',
    b'{"object": "page", "data": [{"start_time": 1730419200, "end_time": 1730505600, "results": []}]}',
    b'{"data": [{"id": 1, "name": "x"}], "total": 1, "page": 1, "page_size": 10, "total_pages": 1}',
    b'{"data": [], "total": 0}',
    b'{"object": "list", "data": [], "has_more": false}',
    b"date,model,cost\n2025-01-24,gpt-4o,1.00\n",
    b'{"message": "Spend Logs transactions: 0", "level": "DEBUG", "timestamp": "2025-05-26T09:48:01"}\n',
    b"",
])
def test_leaves_other_files_alone(sample):
    assert litellm.SOURCE.detect(sample, Path("x.json")) is None


def test_detects_a_payload_larger_than_the_sample():
    big = json.loads((ASSETS / S3_OBJECT).read_text())
    big["messages"] = [{"role": "user", "content": "x" * 100_000}]
    assert litellm.SOURCE.detect(json.dumps(big).encode()[:65536], Path("p")) == "litellm.payload_ndjson"
    pretty = json.dumps(big, indent=2).encode()
    assert litellm.SOURCE.detect(pretty[:65536], Path("p")) == "litellm.payload_object"
    array = json.dumps([big, big]).encode()
    assert litellm.SOURCE.detect(array[:65536], Path("p")) == "litellm.payload_json_array"


# ---- SpendLogs CSV ------------------------------------------------------------------------------------------

def test_reference_row_loads_field_by_field(db):
    r = load(db, ASSETS / "spendlogs.csv")
    assert (r.records, r.loaded, r.quarantined, r.merged) == (4, 4, 0, 0)
    got = row(db, R1)
    assert got["spend_logged"] == Decimal("0.000225")
    assert str(got["spend_logged"].normalize()) == "0.000225"
    assert got["start_time"] == datetime(2025, 1, 24, 9, 20, 46, 847000)
    assert got["end_time"] == datetime(2025, 1, 24, 9, 20, 46, 851000)
    assert got["start_time_raw"] == "2025-01-24 09:20:46.847"
    assert (got["prompt_tokens"], got["completion_tokens"], got["total_tokens"]) == (10, 20, 30)
    assert got["key_hash"] == REF_HASH and got["key_hint"] is None
    assert (got["key_alias"], got["team_id"], got["user_id"], got["end_user"]) == (
        "ci-bot", "team-a", "u-832cf511", "customer-42")
    assert (got["requester_ip_raw"], got["client_ip"]) == ("203.0.113.10", "203.0.113.10")
    assert (got["model"], got["model_group"], got["provider"]) == ("gpt-4o", "gpt-4o", "openai")
    assert got["status"] == "success" and got["cache_hit"] is False
    assert got["request_tags"] == '["prod"]'
    assert got["session_id"] == "7c1e4c8e-0a9b-4f4e-9c57-2b1d0b3f9a11"
    assert got["source_format"] == "litellm.spendlogs_csv" and got["record_no"] == 1
    assert got["cost_usd"] is None and got["price_status"] is None


def test_failure_401_row_keeps_presented_key_hash_and_real_client(db):
    load(db, ASSETS / "spendlogs.csv")
    got = row(db, "4f8e2d1c-3b7a-4c55-9e10-aa5b6c7d8e9f")
    assert got["status"] == "failure"
    assert (got["error_code"], got["error_class"]) == ("401", "ProxyException")
    assert got["start_time"] == got["end_time"]
    assert got["spend_logged"] == 0
    assert got["key_hash"] == secrets.key_hash("sk-Zq4Wv0pLx9RtYb2NcDe7Fg")
    assert got["requester_ip_raw"] == "198.51.100.7, 10.0.0.2"
    assert got["client_ip"] == "198.51.100.7"
    assert got["cache_hit"] is None                    # 'None' in the export


def test_cache_hit_row_keeps_its_id_and_flag(db):
    load(db, ASSETS / "spendlogs.csv")
    got = row(db, R1 + "_cache_hit1737710447.86")
    assert got["cache_hit"] is True
    assert got["start_time"] == datetime(2025, 1, 24, 9, 20, 47, 850000)   # ISO 'T' and '+00:00' form


def test_empty_api_key_means_no_key(db):
    load(db, ASSETS / "spendlogs.csv")
    got = row(db, "chatcmpl-3c1d9e7f-health")
    assert got["key_hash"] is None and got["key_hint"] is None
    assert got["model_group"] is None                  # '' is no value
    assert got["start_time"] == datetime(2025, 1, 24, 9, 25)               # 'Z' form


def test_old_export_without_later_columns_in_another_order(db):
    r = load(db, ASSETS / "spendlogs_old.csv")
    assert (r.records, r.loaded, r.quarantined) == (3, 3, 0)
    first = row(db, "chatcmpl-8pOld0001")
    assert first["start_time"] == datetime(2024, 2, 6, 10, 11, 12, 123456)
    assert first["status"] == "success"                # no status column, no error: success
    assert first["session_id"] is None and first["requester_ip_raw"] is None and first["team_id"] is None
    assert first["user_id"] == "u-1"
    second = row(db, "chatcmpl-8pOld0002")
    assert second["status"] == "failure"               # derived from metadata.error_information
    assert (second["error_class"], second["error_code"]) == ("RateLimitError", "429")
    jwt = row(db, "chatcmpl-8pOld0003")
    assert jwt["key_hash"].startswith("hashed-jwt-") and jwt["key_hint"] is None
    assert jwt["start_time"] == datetime(2024, 2, 7, 8, 0, 0, 500000)


def test_raw_key_is_hashed_and_never_stored(db):
    load(db, ASSETS / "spendlogs_old.csv")
    for request_id in ("chatcmpl-8pOld0001", "chatcmpl-8pOld0002"):   # hash in api_key / raw key in api_key
        got = row(db, request_id)
        assert got["key_hash"] == secrets.key_hash(OLD_KEY)
        assert got["key_hint"] == secrets.key_hint(OLD_KEY)
    assert OLD_KEY not in all_text(db)


def test_gzip_export_loads_the_same(db, tmp_path):
    gz = tmp_path / "spend_logs.csv.gz"
    gz.write_bytes(gzip.compress((ASSETS / "spendlogs.csv").read_bytes()))
    r = load(db, gz)
    assert (r.records, r.loaded) == (4, 4)
    assert row(db, R1)["spend_logged"] == Decimal("0.000225")


def test_broken_csv_lines_are_quarantined_and_the_rest_loads(db, tmp_path):
    lines = (ASSETS / "spendlogs.csv").read_text().splitlines()
    bad_spend = lines[4].replace(",0.000012,", ",twelve,")
    bad_time = lines[4].replace("chatcmpl-3c1d9e7f-health", "chatcmpl-badtime").replace(
        "2025-01-24T09:25:00.000Z", "yesterday", 1)
    text = "\r\n".join([lines[0], lines[1], lines[2] + ",extra", bad_spend, bad_time, lines[3][:200]]) + "\r\n"
    f = tmp_path / "broken.csv"
    f.write_text(text)
    r = load(db, f, "litellm.spendlogs_csv")
    assert (r.records, r.loaded, r.quarantined) == (5, 1, 4)
    got = reasons(db)                                  # record n is on line n + 1
    assert got[2].startswith("CSV line 3: Expected Number of Columns: 32 Found: 33")
    assert got[5].startswith("CSV line 6: ")           # cut inside a quoted field
    assert (got[3], got[4]) == ('spend "twelve" is not a number', 'start time "yesterday" is not a timestamp')
    assert row(db, R1)["end_time"] == datetime(2025, 1, 24, 9, 20, 46, 851000)
    assert row(db, R1)["record_no"] == 1


@pytest.mark.parametrize("name, fmt", [("spendlogs.csv", "litellm.spendlogs_csv"),
                                       ("payload.ndjson", "litellm.payload_ndjson")])
def test_gzip_cut_short_keeps_what_it_holds(db, tmp_path, name, fmt):
    data = gzip.compress((ASSETS / name).read_bytes() * 20)
    f = tmp_path / (name + ".gz")
    f.write_bytes(data[: len(data) * 2 // 3])
    r = load(db, f, fmt)
    assert r.loaded > 0 and any("cut short" in n for n in r.notes)


def test_a_cut_object_file_is_one_quarantined_record(db, tmp_path):
    f = tmp_path / "object.json"
    f.write_text((ASSETS / S3_OBJECT).read_text()[:-200])
    r = load(db, f, "litellm.payload_object")
    assert (r.records, r.quarantined) == (1, 1)
    assert reasons(db) == {1: "not valid JSON"}


# ---- StandardLoggingPayload ---------------------------------------------------------------------------------

def test_payload_ndjson_fields_and_quarantine(db):
    r = load(db, ASSETS / "payload.ndjson")
    assert (r.records, r.loaded, r.quarantined, r.merged) == (10, 5, 5, 0)   # the blank line is no record
    p1 = row(db, "chatcmpl-fa9be5b7-9487-46ab-86de-6462d578fea1")
    assert p1["start_time"] == datetime(2025, 6, 22, 17, 59, 8, 162725)    # epoch float, to the microsecond
    assert p1["start_time_raw"] == "1750615148.162725"
    assert p1["spend_logged"] == Decimal("0.001047")
    assert p1["key_hash"] == REF_HASH and p1["key_alias"] == "ci-bot"
    assert p1["litellm_call_id"] == "dbecd23a-e71a-49cf-90d4-712a8a8e29c5"
    assert p1["session_id"] == "4c97150b-b1a3-4dec-bd7a-734786b1b3bc"      # trace_id, as SpendLogs keeps it
    assert p1["stream"] is True and p1["cache_read_tokens"] == 0 and p1["cache_write_tokens"] == 0
    assert p1["provider"] == "bedrock" and p1["status"] == "success" and p1["error_class"] is None
    assert reasons(db) == {
        7: "not valid JSON", 8: "not a JSON object", 9: "no request_id, id or litellm_call_id",
        10: 'start time "yesterday" is not a timestamp', 11: 'spend "abc" is not a number'}


def test_payload_string_times_cache_tokens_and_max_tokens(db):
    load(db, ASSETS / "payload.ndjson")
    p4 = row(db, "msg_01XYZstringtimes")
    assert p4["start_time"] == datetime(2025, 1, 24, 9, 20, 46, 847371)
    assert (p4["cache_read_tokens"], p4["cache_write_tokens"]) == (1000, 100)
    assert p4["max_tokens"] == 1024                    # model_parameters.max_completion_tokens
    assert p4["user_agent"] == "curl/8.5.0"
    assert p4["spend_logged"] == Decimal("0.0042")     # a string response_cost


def test_payload_failure_429_and_keys_in_text_are_redacted(db):
    load(db, ASSETS / "payload.ndjson")
    p3 = row(db, "e3b0c442-98fc-4c14-9afb-f4c8996fb924")
    assert p3["status"] == "failure" and p3["litellm_call_id"] == p3["request_id"]
    assert (p3["error_class"], p3["error_code"]) == ("RateLimitError", "429")
    assert "sk-proj-AbCdEfGhIjKlMnOpQrSt1234" not in p3["error_message"]
    assert secrets.REDACTED_PREFIX in p3["error_message"]
    assert p3["client_ip"] == "198.51.100.7"
    text = all_text(db)
    assert BEARER_KEY not in text                      # Authorization header of a quarantined line
    assert "sk-proj-AbCdEfGhIjKlMnOpQrSt1234" not in text


def test_spendlogs_csv_and_payload_of_the_same_requests_stay_one_row(db):
    load(db, ASSETS / "spendlogs.csv")
    r = load(db, ASSETS / "payload.ndjson")
    assert r.merged == 2                               # the reference request and its cache hit
    got = row(db, R1)
    assert got["source_format"] == "litellm.spendlogs_csv"                  # the first file keeps the row
    assert got["max_tokens"] == 256 and got["user_agent"] == "AsyncOpenAI/Python 2.54.0"
    assert got["litellm_call_id"] == "5d0b4a8e-2f6c-4e1a-9b3d-7c8e9f0a1b2c"
    assert got["spend_logged"] == Decimal("0.000225") and got["key_hash"] == REF_HASH
    hit = row(db, R1 + "_cache_hit1737710447.86")
    assert hit["litellm_call_id"] == "77aa88bb-cc99-4d00-8e11-f22334455667"
    (n,) = db.execute("SELECT count(*) FROM llm_requests WHERE request_id LIKE ?", [R1 + "%"]).fetchone()
    assert n == 2


def test_the_same_requests_in_the_other_order_give_the_same_rows(db):
    load(db, ASSETS / "payload.ndjson")
    r = load(db, ASSETS / "spendlogs.csv")
    assert r.merged == 2
    ids = {i for (i,) in db.execute("SELECT request_id FROM llm_requests").fetchall()}
    assert R1 + "_cache_hit1737710447.86" in ids      # the SpendLogs id replaces the payload's
    assert sum(1 for i in ids if i.startswith(R1)) == 2
    assert row(db, R1)["max_tokens"] == 256


def test_duplicates_within_a_file_collapse_and_fill(db, tmp_path):
    lines = (ASSETS / "payload.ndjson").read_text().splitlines()
    second = json.loads(lines[0])
    second["model_parameters"] = {"max_tokens": 99}
    f = tmp_path / "dup.ndjson"
    f.write_text(lines[0] + "\n" + json.dumps(second) + "\n")
    r = load(db, f)
    assert (r.records, r.loaded, r.merged) == (2, 2, 1)
    got = row(db, "chatcmpl-fa9be5b7-9487-46ab-86de-6462d578fea1")
    assert got["max_tokens"] == 99 and got["record_no"] == 1


def test_json_array_batches_and_record_numbers(db):
    r = load(db, ASSETS / "payload_batches.json")
    assert (r.records, r.loaded, r.quarantined) == (3, 3, 0)
    nos = dict(db.execute("SELECT request_id, record_no FROM llm_requests").fetchall())
    assert nos == {"chatcmpl-arr-0001": 1, "chatcmpl-arr-0002": 2, "chatcmpl-arr-0003": 3}
    assert row(db, "chatcmpl-arr-0001")["start_time"] == datetime(2025, 6, 22, 18, 1, 40, 250000)  # string epoch
    assert row(db, "chatcmpl-arr-0002")["client_ip"] == "192.0.2.44"
    assert row(db, "chatcmpl-arr-0003")["spend_logged"] == Decimal("0.0000245")


def test_truncated_json_array_keeps_the_good_prefix(db, tmp_path):
    text = (ASSETS / "payload_batches.json").read_text().splitlines()[0]
    f = tmp_path / "cut.json"
    f.write_text(text[: len(text) - 300])
    r = load(db, f, "litellm.payload_json_array")
    assert (r.records, r.loaded, r.quarantined) == (2, 1, 1)
    assert reasons(db) == {2: "not valid JSON"}


def _array_records() -> list:
    """Seven payload records (the last repeats the first request) and, in the middle, two elements that are none."""
    base = [r for line in (ASSETS / "payload_batches.json").read_text().splitlines() for r in json.loads(line)]
    out = []
    for i in range(6):
        r = dict(base[i % 3], id=f"chatcmpl-many-{i:04d}", litellm_call_id=f"a0000000-0000-4000-8000-{i:012d}")
        out.append(r)
    again = dict(out[0], end_user="customer-again")   # a request twice, in different batches: one row
    return out[:3] + [5, {"detail": "Not authenticated"}] + out[3:] + [again]


def _array_file(tmp_path: Path, shape: str, prompt: str = "") -> Path:
    """The records of _array_records (or /spend/logs/ui rows) as one array, two arrays or two pages; `prompt` goes
    into the second record."""
    f = tmp_path / f"{shape}.json"
    records = _array_records()
    if shape == "array":
        records[1]["prompt"] = prompt
        f.write_text(json.dumps(records, indent=1))
    elif shape == "arrays":                            # batches written one after another: [...]\n[...]
        records[1]["prompt"] = prompt
        f.write_text(json.dumps(records[:4]) + "\n" + json.dumps(records[4:]) + "\n")
    else:                                              # /spend/logs/ui pages 1-2 of 3 (SpendLogs rows)
        rows = json.loads((ASSETS / UI_PAGE).read_text())["data"]
        page1 = _ui_page(data=rows[:2] + [5, {"detail": "x"}] + rows[2:])
        page1["data"][1] = dict(page1["data"][1], prompt=prompt)
        page2 = _ui_page(page=2, data=[dict(r, request_id=r["request_id"] + "-p2") for r in rows])
        f.write_text(json.dumps(page1) + "\n" + json.dumps(page2))
    return f


def _loaded(con) -> tuple[list, list]:
    rows = con.execute("SELECT * FROM llm_requests ORDER BY request_id").fetchall()
    quarantine = con.execute("SELECT record_no, raw, reason FROM quarantine ORDER BY record_no").fetchall()
    return rows, quarantine


@pytest.mark.parametrize("shape", ["array", "arrays", "pages"])
@pytest.mark.parametrize("setting, value", [("JSON_BATCH_BYTES", 400), ("JSON_BATCH_RECORDS", 2)])
def test_json_array_loads_the_same_in_small_batches(tmp_path, monkeypatch, shape, setting, value):
    f = _array_file(tmp_path, shape)
    whole = case.connect(":memory:")
    small = case.connect(":memory:")
    try:
        expected = load(whole, f)
        monkeypatch.setattr(litellm_read, setting, value)
        batches: list[int] = []
        stage = litellm_read._stage_texts

        def counted(con, texts):
            batches.append(stage(con, texts))
            return batches[-1]

        monkeypatch.setattr(litellm_read, "_stage_texts", counted)
        got = load(small, f)
        assert len(batches) > 2 and sum(batches) == got.records
        assert got == expected and got.records == got.loaded + got.quarantined
        assert _loaded(small) == _loaded(whole)
        quarantined = {n: why for n, _, why in _loaded(small)[1]}
        if shape == "pages":
            assert (got.records, got.loaded, got.quarantined) == (8, 6, 2)
            assert quarantined == {3: "not a JSON object", 4: "no request_id, id or litellm_call_id"}
            assert got.notes == ("pages 1-2 of 3 of /spend/logs/ui (7 rows in all): page 3 is not in this file",)
            assert row(small, UI_IDS[2] + "-p2")["record_no"] == 8
        else:
            assert (got.records, got.loaded, got.quarantined, got.merged) == (9, 7, 2, 1)
            assert quarantined == {4: "not a JSON object", 5: "no request_id, id or litellm_call_id"}
            assert row(small, "chatcmpl-many-0003")["record_no"] == 6
            first = row(small, "chatcmpl-many-0000")   # the first record's values, the later one fills the gaps
            assert first["record_no"] == 1 and first["end_user"] == row(whole, "chatcmpl-many-0000")["end_user"]
    finally:
        whole.close()
        small.close()


@pytest.mark.parametrize("shape, big", [("array", False), ("arrays", False), ("pages", False), ("array", True)])
def test_json_array_read_again_the_old_way_when_the_first_reading_fails(tmp_path, monkeypatch, shape, big):
    """A value over the first reading's object size (DuckDB takes at least 16 MiB), or too little memory for it:
    parsed again with MAX_JSON_BYTES under DuckDB's default memory limit; a record too large for the memory limit
    of the reads of the batches: read again under the default. The same records."""
    f = _array_file(tmp_path, shape, prompt="x" * 40_000_000 if big else "")    # a 40 MB prompt in the middle
    whole = case.connect(":memory:")
    small = case.connect(":memory:")
    try:
        expected = load(whole, f)
        if big:                                        # and too large for the limit on reading it back
            monkeypatch.setattr(litellm_read, "READ_OBJECT_BYTES", 1 << 20)
            monkeypatch.setattr(litellm_read, "READ_MEMORY_LIMIT", "16MB")
        else:
            monkeypatch.setattr(litellm_read, "PARSE_MEMORY_LIMIT", "1MB")
        monkeypatch.setattr(litellm_read, "JSON_BATCH_RECORDS", 2)
        assert load(small, f) == expected
        assert _loaded(small) == _loaded(whole)
    finally:
        whole.close()
        small.close()


def test_one_object_per_file(db):
    r = load(db, ASSETS / S3_OBJECT)
    assert (r.records, r.loaded) == (1, 1)
    assert row(db, "chatcmpl-s3-object-0001")["start_time"] == datetime(2025, 6, 22, 18, 3, 20, 123456)


@pytest.mark.parametrize("pretty", [True, False])
def test_one_spendlogs_row_per_file_pretty_or_not(db, tmp_path, pretty):
    f = tmp_path / "row.json"
    doc = json.loads((ASSETS / GCS_ROW).read_text())
    f.write_text(json.dumps(doc, indent=4 if pretty else None))
    r = load(db, f)
    assert (r.records, r.loaded, r.quarantined) == (1, 1, 0)
    got = row(db, GCS_ID)
    assert got["source_format"] == "litellm.spendlogs_object"
    assert (got["start_time"], got["key_hash"], got["key_alias"], got["user_id"], got["client_ip"]) == (
        datetime(2024, 8, 1, 14, 27, 12, 563246), REF_HASH, "ci-bot", "u-832cf511", "203.0.113.10")
    assert (got["cache_hit"], got["cache_read_tokens"], got["max_tokens"], got["team_id"]) == (None, 4, 64, None)
    assert got["spend_logged"] == Decimal("0.000055")


def test_spendlogs_object_and_an_ndjson_export_of_the_same_request_stay_one_row(db, tmp_path):
    doc = json.loads((ASSETS / GCS_ROW).read_text())
    exported = dict(doc, metadata=json.loads(doc["metadata"]), cache_hit="False", session_id=None,
                    end_user="customer-42")
    (tmp_path / "export.ndjson").write_text(json.dumps(exported) + "\n" + json.dumps(dict(exported, request_id="x-2"))
                                            + "\n")
    first = load(db, ASSETS / GCS_ROW)
    second = load(db, tmp_path / "export.ndjson")
    assert (first.loaded, second.loaded, second.merged) == (1, 2, 1)
    got = row(db, GCS_ID)
    # the row the first file made stays; the later export fills what it lacked
    assert (got["file_id"], got["end_user"], got["session_id"]) == (1, "customer-42", doc["session_id"])
    assert db.execute("SELECT count(*) FROM llm_requests").fetchone()[0] == 2


def test_datadog_items_are_looked_through(db):
    r = load(db, ASSETS / "datadog.json")
    assert (r.records, r.loaded, r.quarantined) == (2, 1, 1)
    assert row(db, "chatcmpl-dd-0001")["spend_logged"] == Decimal("0.001047")
    assert reasons(db) == {2: "no request_id, id or litellm_call_id"}          # a proxy 401, not a payload


def test_crlf_bom_and_invalid_utf8_lines(db, tmp_path):
    lines = (ASSETS / "payload.ndjson").read_bytes().splitlines()
    f = tmp_path / "crlf.ndjson"
    f.write_bytes(b"\xef\xbb\xbf" + lines[0] + b"\r\n" + b'{"id": "x\xff"}\r\n' + lines[1] + b"\r\n")
    r = load(db, f, "litellm.payload_ndjson")
    assert (r.records, r.loaded, r.quarantined) == (3, 2, 1)
    assert reasons(db)[2].startswith("not valid UTF-8")



def _payload_line(i: int, **extra) -> str:
    """A small StandardLoggingPayload line; `extra` keys are added at the end (`_raw`: text pasted in as it is)."""
    raw = extra.pop("_raw", "")
    d = {"id": f"chatcmpl-b{i}", "litellm_call_id": f"c{i}", "startTime": 1750615148.0 + i, "response_cost": 0.001,
         "model": "gpt-4o", **extra}
    return json.dumps(d)[:-1] + raw + "}"


def test_a_key_twice_is_found_in_lines_that_share_their_keys(db, tmp_path, monkeypatch):
    """Lines are checked for a key twice once per distinct list of keys: a key twice among many records with the same
    keys, a key holding NUL (the keys joined at NUL would look like other keys) twice or once, and `{}` all come
    out as one record at a time would."""
    lines = [_payload_line(i) for i in range(200)]
    lines[50] = _payload_line(50, _raw=', "model": "gpt-4o-mini"')             # a key twice
    lines[60] = _payload_line(60, **{"a\u0000b": 1})                        # NUL in a key, once: loads
    lines[61] = _payload_line(61, a=1, b=2)                                   # the same keys joined at NUL
    lines[62] = _payload_line(62, _raw=', "a\\u0000b": 1, "a\\u0000b": 2')   # NUL in a key, twice
    lines[70] = "{}"
    f = tmp_path / "dup.ndjson"
    f.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(litellm_read, "LINE_BATCH_BYTES", 4096)            # several batches
    monkeypatch.setattr(lines_module, "_BLOCK", 1024)
    r = load(db, f, "litellm.payload_ndjson")
    assert (r.records, r.loaded, r.quarantined) == (200, 197, 3)
    got = reasons(db)
    assert got[51].startswith('key "model" appears twice')
    assert got[63].startswith('key "a\x00b" appears twice')
    assert got[71] == "no request_id, id or litellm_call_id"
    assert row(db, "chatcmpl-b60")["model"] == "gpt-4o" and row(db, "chatcmpl-b61")["model"] == "gpt-4o"


def test_payload_lines_are_staged_in_one_statement_unless_a_batch_needs_the_old_way(db, tmp_path, monkeypatch):
    """A batch of payload lines is checked, converted and typed in one statement (hint.staged), but goes the old
    way (_ll_rec first) when a record has a key twice or may be a Datadog item; the rows are the same either way."""
    item = {"ddsource": "litellm", "message": _payload_line(900)}
    lines = [_payload_line(i) for i in range(120)]
    lines[40] = _payload_line(40, _raw=', "model": "x"')
    lines[80] = json.dumps(item)
    f = tmp_path / "mixed.ndjson"
    f.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(litellm_read, "LINE_BATCH_BYTES", 2500)
    monkeypatch.setattr(lines_module, "_BLOCK", 1024)
    staged = []
    line_batches = litellm_read.line_batches

    def spy(*args, **kwargs):
        for n, hint in line_batches(*args, **kwargs):
            staged.append(hint.staged)
            yield n, hint
    monkeypatch.setattr(litellm_read, "line_batches", spy)
    r = load(db, f, "litellm.payload_ndjson")
    assert (r.records, r.loaded, r.quarantined) == (120, 119, 1)
    assert reasons(db)[41].startswith('key "model" appears twice')
    assert row(db, "chatcmpl-b900")["spend_logged"] == Decimal("0.001")        # looked through the Datadog item
    assert len(staged) > 3 and staged.count(False) == 2 and staged[0]

# ---- flat rows and SpendLogs JSON ---------------------------------------------------------------------------

def test_flat_spend_rows(db):
    r = load(db, ASSETS / "flat_spend.ndjson")
    assert (r.records, r.loaded) == (2, 2)
    f1 = row(db, "chatcmpl-EV0H5GUaqkJvsrLQo7nw5DU5qCdUi")
    assert f1["start_time"] == datetime(2026, 10, 3, 20, 5, 30, 951000)    # epoch milliseconds
    assert f1["completion_start_time"] == datetime(2026, 10, 3, 20, 5, 32, 21000)
    assert f1["spend_logged"] == Decimal("0.0000245")
    assert (f1["key_alias"], f1["team_alias"], f1["team_id"]) == ("vercel-app", "Vercel", "team-v")
    assert f1["key_hash"] == "fixture-key"             # not a key LiteLLM would hash: kept as logged
    assert f1["user_agent"].startswith("ai-sdk-openai-compatible/3.0.62")
    assert f1["cache_hit"] is False and f1["status"] == "success" and f1["error_message"] is None
    f2 = row(db, "chatcmpl-flat-0002")
    assert f2["status"] == "failure" and f2["error_message"].endswith("context length exceeded")
    assert f2["cache_write_tokens"] == 1800 and f2["client_ip"] == "203.0.113.99"
    assert f2["start_time"] == f2["end_time"]


def test_flat_spend_as_a_json_array(db, tmp_path):
    f = tmp_path / "flat.json"
    f.write_text(json.dumps([json.loads(x) for x in (ASSETS / "flat_spend.ndjson").read_text().splitlines()]))
    r = load(db, f)
    assert (r.records, r.loaded) == (2, 2)
    assert row(db, "chatcmpl-flat-0002")["cache_write_tokens"] == 1800


@pytest.mark.parametrize("name, prefix", [("spendlogs_api.json", "chatcmpl-api-"),
                                          ("spendlogs.ndjson", "chatcmpl-nd-")])
def test_spendlogs_json_rows(db, name, prefix):
    r = load(db, ASSETS / name)
    assert (r.records, r.loaded) == (2, 2)
    ok = row(db, prefix + "0001")                      # metadata as an object
    assert ok["start_time"] == datetime(2025, 1, 25, 10, 0, 0, 123000)
    assert ok["user_agent"] == "OpenAI/Python 1.60.0" and ok["cache_read_tokens"] == 8
    assert ok["max_tokens"] == 64                      # from proxy_server_request
    assert ok["request_tags"] == '["prod"]' and ok["spend_logged"] == Decimal("0.000225")
    failed = row(db, prefix + "0002")                  # metadata as a JSON string
    assert failed["status"] == "failure" and failed["error_class"] == "BadRequestError"
    assert failed["key_alias"] == "ci-bot" and failed["request_tags"] == '["prod"]'


# ---- /spend/logs/ui pages and /spend/logs?summarize=true --------------------------------------------------------

PAGE_NOTE = "page 1 of 3 of /spend/logs/ui (7 rows in all): pages 2-3 are not in this file"


def _ui_page(**changes) -> dict:
    page = json.loads((ASSETS / UI_PAGE).read_text())
    page.update(changes)
    return page


def test_spendlogs_ui_page_rows_load_with_a_note_on_the_missing_pages(db):
    r = load(db, ASSETS / UI_PAGE)
    assert (r.records, r.loaded, r.quarantined, r.merged) == (3, 3, 0, 0)
    assert r.notes == (PAGE_NOTE,)
    nos = dict(db.execute("SELECT request_id, record_no FROM llm_requests").fetchall())
    assert nos == {UI_IDS[0]: 1, UI_IDS[1]: 2, UI_IDS[2]: 3}           # the position in data
    ok = row(db, UI_IDS[0])
    assert ok["source_format"] == "litellm.spendlogs_ui_page"
    assert ok["key_hash"] == REF_HASH and ok["key_hint"] is None and ok["key_alias"] == "ci-bot"
    assert (ok["prompt_tokens"], ok["completion_tokens"], ok["total_tokens"]) == (10, 20, 30)
    assert ok["spend_logged"] == Decimal("0.000225")
    assert ok["start_time"] == datetime(2026, 11, 16, 3, 0, 4, 123000)   # ISO with Z
    assert ok["start_time_raw"] == "2026-11-16T03:00:04.123Z"
    assert (ok["model"], ok["model_group"], ok["provider"]) == ("gpt-4o", "gpt-4o", "openai")
    assert (ok["client_ip"], ok["end_user"], ok["team_id"]) == ("203.0.113.10", "customer-42", "team-a")
    assert ok["user_agent"] == "AsyncOpenAI/Python 2.54.0" and ok["request_tags"] == '["prod"]'
    claude = row(db, UI_IDS[1])
    assert claude["key_hash"] == SUPPORT_HASH and claude["model_group"] == "claude-sonnet"
    assert (claude["prompt_tokens"], claude["completion_tokens"]) == (1200, 300)
    assert claude["spend_logged"] == Decimal("0.0081")
    failed = row(db, UI_IDS[2])                        # a 401: the presented key's hash, spend 0
    assert failed["status"] == "failure" and (failed["error_code"], failed["error_class"]) == ("401", "ProxyException")
    assert failed["spend_logged"] == 0 and failed["start_time"] == failed["end_time"]


def test_ui_pages_in_a_row_gzip_and_larger_than_the_sample(db, tmp_path):
    second = _ui_page(page=2)
    for r in second["data"]:
        r["request_id"] += "-p2"
    f = tmp_path / "spend_logs_ui.json.gz"             # pages 1 and 2 saved one after the other, compressed
    f.write_bytes(gzip.compress((json.dumps(_ui_page(), indent=2) + "\n" + json.dumps(second)).encode()))
    r = load(db, f)
    assert (r.records, r.loaded, r.quarantined) == (6, 6, 0)
    assert r.notes == ("pages 1-2 of 3 of /spend/logs/ui (7 rows in all): page 3 is not in this file",)
    assert row(db, UI_IDS[0] + "-p2")["record_no"] == 4   # numbered on across the pages
    big = _ui_page(total=100, page_size=100, total_pages=1)
    big["data"] = [dict(big["data"][0], request_id=f"chatcmpl-big-{i:04d}") for i in range(100)]
    text = json.dumps(big, indent=1).encode()          # the page keys come last, after 64 KiB of rows
    assert len(text) > 65536 and litellm.SOURCE.detect(text[:65536], Path("p")) == "litellm.spendlogs_ui_page"
    f = tmp_path / "page_of_100.json"
    f.write_bytes(text)
    r = load(db, f)
    assert (r.records, r.loaded, r.notes) == (100, 100, ())   # page 1 of 1: nothing missing


def test_empty_ui_page_loads_nothing_and_says_so(db, tmp_path):
    f = tmp_path / "empty_page.json"
    f.write_text(json.dumps({"data": [], "total": 0, "page": 1, "page_size": 100, "total_pages": 0}))
    r = load(db, f)
    assert (r.records, r.loaded, r.quarantined) == (0, 0, 0)
    assert r.notes == ("page 1 of /spend/logs/ui holds no rows (0 rows in all)",)
    f = tmp_path / "past_the_end.json"
    f.write_text(json.dumps(_ui_page(data=[], page=4)))
    r = load(db, f)
    assert r.records == 0
    assert r.notes == ("page 4 of 3 of /spend/logs/ui (7 rows in all): pages 1-3 are not in this file",
                       "page 4 of /spend/logs/ui holds no rows (7 rows in all)")


def test_ui_page_elements_that_are_no_record_are_quarantined(db, tmp_path):
    page = _ui_page()
    page["data"][1:1] = [5, {"detail": "x"}]
    f = tmp_path / "page.json"
    f.write_text(json.dumps(page) + '\n{"detail": "Not authenticated"}\n')   # and an error body after it
    r = load(db, f)
    assert (r.records, r.loaded, r.quarantined) == (6, 3, 3)
    assert reasons(db) == {
        2: "not a JSON object", 3: "no request_id, id or litellm_call_id", 6: 'not a page: no "data" list'}
    assert row(db, UI_IDS[1])["record_no"] == 4 and r.notes == (PAGE_NOTE,)


def test_a_cut_ui_page_keeps_the_rows_before_the_cut(db, tmp_path):
    f = tmp_path / "cut.json"
    f.write_text((ASSETS / UI_PAGE).read_text()[:-900])
    r = load(db, f)
    assert (r.records, r.loaded, r.quarantined) == (3, 2, 1)
    assert reasons(db) == {3: "not valid JSON"}


def test_spend_logs_summarised_by_day_fail_alone_with_one_line(tmp_path):
    sample = b'[{"startTime": "2025-01-24", "spend": 1.5, "users": {}, "models": {}}]'
    assert litellm.SOURCE.detect(sample, Path("x.json")) == "litellm.spendlogs_daily_totals"
    totals, rows = ASSETS / "spendlogs_summarize.json", ASSETS / UI_PAGE
    con = case.connect(":memory:")
    try:
        by_name = {Path(r.path).name: r for r in ingest.ingest_paths(con, [totals, rows])}
        files = con.execute("SELECT path, status, message FROM ingest_files ORDER BY file_id").fetchall()
    finally:
        con.close()
    failed, loaded = by_name[totals.name], by_name[rows.name]
    assert failed.status == "failed" and failed.message == litellm.DAILY_REFUSED
    assert litellm.DAILY_REFUSED == ("LiteLLM /spend/logs per-day totals (summarize=true), not requests: "
                                     "export with summarize=false or use /spend/logs/ui")
    assert (loaded.status, loaded.records, loaded.loaded, loaded.quarantined) == ("loaded", 3, 3, 0)
    assert [(Path(p).name, s) for p, s, _ in files] == [(totals.name, "failed"), (rows.name, "loaded")]
    cli = run_cli("ingest", str(totals), str(rows), "--case", str(tmp_path / "c.duckdb"))
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert [line for line in cli.stderr.splitlines() if totals.name in line] == [
        f"forensics: {totals}: {litellm.DAILY_REFUSED}"]


# ---- robustness ---------------------------------------------------------------------------------------------

_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
    st.text(max_size=12), st.sampled_from(["", "sk-AAAAAAAAAAAAAAAAAAAAAA", "1e400", "2025-13-40", "-1", "None"]),
)
_KEYS = ["id", "litellm_call_id", "startTime", "endTime", "response_cost", "prompt_tokens", "cache_hit",
         "requester_ip_address", "request_tags", "metadata", "model_parameters", "status"]


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.one_of(
    st.dictionaries(st.sampled_from(_KEYS), _VALUE, max_size=len(_KEYS)).map(json.dumps),
    st.text(max_size=30).filter(lambda t: "\n" not in t and "\r" not in t),
), max_size=12))
def test_any_lines_load_or_quarantine_never_fail(tmp_path, records):
    f = tmp_path / "fuzz.ndjson"
    head = (ASSETS / "payload.ndjson").read_text().splitlines()[0]
    f.write_text("\n".join([head, *records]) + "\n")
    con = case.connect(":memory:")
    try:
        r = load(con, f, "litellm.payload_ndjson")
        assert r.records >= 1 and r.loaded >= 1
        assert "sk-AAAAAAAAAAAAAAAAAAAAAA" not in all_text(con)
    finally:
        con.close()
