"""LiteLLM's own stdout (json_logs and plain text) into litellm_log: every line a record, each classified."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from forensics import case, ingest
from forensics.sources import litellm
from forensics.sources.litellm import stdout

ASSETS = Path(__file__).resolve().parent.parent / "assets"
STDOUT = ASSETS / "litellm_stdout"


@pytest.fixture
def db(tmp_path):
    con = case.connect(tmp_path / "case.duckdb")
    yield con
    con.close()


def classes(con, name: str) -> dict[str, int]:
    return dict(con.execute("SELECT message_class, count(*) FROM litellm_log JOIN ingest_files f USING (file_id) "
                            "WHERE f.path LIKE ? GROUP BY ALL", [f"%{name}"]).fetchall())


def test_real_json_logs_load_every_line_classified(db):
    r = ingest.ingest_file(db, STDOUT / "proxy_stdout_json.log", "proxy_stdout_json.log")
    assert (r.format, r.records, r.loaded, r.quarantined) == ("litellm.stdout", 52, 52, 0)
    assert "9 blank lines skipped" in r.message
    got = classes(db, "proxy_stdout_json.log")
    # counted with grep: 16 access lines with 200; 6 with 429 + 2 RateLimitError lines; 4 uvicorn startup lines and
    # 2 of the banner's text lines; 'other': 15 more text lines, the trusted_proxy_ranges warning, 4 shutdown lines
    assert got == {"http_access": 16, "rate_limit": 8, "startup": 6, "no_master_key": 1,
                   "weak_master_key_permitted": 1, "other": 20}
    first, level, component, logger = db.execute(
        "SELECT time, level, component, logger FROM litellm_log WHERE message_class = 'no_master_key'").fetchone()
    assert (str(first), level, component, logger) == ("2026-12-04 11:02:48.579212", "CRITICAL", "LiteLLM Proxy",
                                                      "proxy_server.py:6957")
    calls = [c for (c,) in db.execute(
        "SELECT litellm_call_id FROM litellm_log WHERE level = 'ERROR' ORDER BY line_no").fetchall()]
    assert calls == ["2ef7b2d6-bddf-4cf6-8fe8-1f14d3a858d1", "740eb18f-b231-4ed2-b013-4e93f2e206c4"]
    assert db.execute("SELECT client, method, path, status FROM litellm_log WHERE status = 429 ORDER BY line_no "
                      "LIMIT 1").fetchone() == ("2001:db8:4:1::25", "POST", "/v1/chat/completions", 429)


def test_plain_text_log_and_a_cut_json_line(db):
    r = ingest.ingest_file(db, STDOUT / "proxy_stdout_plain.log", "proxy_stdout_plain.log")
    assert (r.format, r.records, r.loaded, r.quarantined) == ("litellm.stdout", 18, 17, 1)
    (reason,) = db.execute("SELECT reason FROM quarantine").fetchone()
    assert "opens a JSON object and is not one" in reason
    got = classes(db, "proxy_stdout_plain.log")
    assert got["no_master_key"] == 1 and got["weak_master_key_permitted"] == 1 and got["budget_exceeded"] == 1
    assert got["rate_limit"] == 1 and got["startup"] == 4
    assert db.execute("SELECT level, component, logger, time, time_raw FROM litellm_log "
                      "WHERE message_class = 'budget_exceeded'").fetchone() == (
        "ERROR", "LiteLLM Proxy", "auth_exception_handler.py:79", None, "12:50:46")
    assert "time of day only" in r.message
    assert db.execute("SELECT status, client FROM litellm_log WHERE message_class = 'auth_error' AND status IS NOT NULL"
                      ).fetchone() == (401, "127.0.0.6")


def test_a_key_in_a_message_never_reaches_the_case(db, tmp_path):
    key = "sk-proj-" + "Abc123XyZ" * 4
    p = tmp_path / "stdout.log"
    p.write_text('{"message": "Invalid API key ' + key + '", "level": "ERROR", "timestamp": '
                 '"2026-12-04T11:02:48.1", "component": "LiteLLM Proxy", "logger": "auth.py:1"}\n')
    r = ingest.ingest_file(db, p, "stdout.log")
    assert r.format == "litellm.stdout" and r.loaded == 1
    (msg, cls) = db.execute("SELECT message, message_class FROM litellm_log").fetchone()
    assert key not in msg and "[redacted key sk-...3XyZ sha256:" in msg and cls == "auth_error"


def test_an_implausible_timestamp_is_quarantined_naming_it(db, tmp_path):
    p = tmp_path / "stdout.log"
    p.write_text('{"message": "Application startup complete.", "level": "INFO", "timestamp": "0001-01-01T00:00:00",'
                 ' "component": "uvicorn.error", "logger": "on.py:62"}\n'
                 '{"message": "LiteLLM: Proxy initialized", "level": "INFO", "timestamp": "2025-05-26 09:48:01,786"}\n')
    r = ingest.ingest_file(db, p, "stdout.log")
    assert (r.records, r.loaded, r.quarantined) == (2, 1, 1)
    assert 'timestamp "0001-01-01T00:00:00"' in db.execute("SELECT reason FROM quarantine").fetchone()[0]
    assert str(db.execute("SELECT time FROM litellm_log").fetchone()[0]) == "2025-05-26 09:48:01.786000"


@pytest.mark.parametrize("path", sorted(p for d in ("litellm", "nginx", "openai", "anthropic")
                                        for p in (ASSETS / d).iterdir() if p.is_file()), ids=lambda p: p.name)
def test_no_other_format_is_taken_for_stdout(path):
    text = path.read_bytes()[:65536].decode("utf-8", "replace")
    assert stdout.detect(text) is None


def test_a_grown_stdout_log_loads_its_new_lines_only(db, tmp_path):
    p = tmp_path / "stdout.log"
    shutil.copy(STDOUT / "proxy_stdout_plain.log", p)
    text = p.read_text().split("\n")
    p.write_text("\n".join(text[:10]) + "\n")
    first = ingest.ingest_file(db, p, "stdout.log")
    p.write_text("\n".join(text[:14]) + "\n")
    second = ingest.ingest_file(db, p, "stdout.log")
    assert (first.loaded, second.loaded) == (10, 4) and "lines 11..14 loaded" in second.message
    assert db.execute("SELECT count(DISTINCT line_no), count(*) FROM litellm_log").fetchone() == (14, 14)


def test_the_family_declares_the_table():
    assert "litellm_log" in litellm.TABLES
