"""nginx error log: detected by content, one row per entry (continuation lines folded in), classified, times in UTC
from the access log's offset, keys redacted, lossless accounting."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from conftest import run_cli
from forensics import case
from forensics.ingest import ingest_paths
from forensics.analysis.timeline import nginx_events_step
from forensics.sources.nginx import error_log

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "nginx"
# tests/assets/nginx/error.log: lines shaped like nginx's own (ngx_log_error + ngx_http_log_error's context) and like
# elastic/beats filebeat/module/nginx/error/test/error.log (FastCGI stderr spanning lines), its times on the same
# server and day as combined.log (a DST switch: +0100 until 02:00, then +0200)
ERROR_LOG = ASSETS / "error.log"
KEY = "sk-" + "Q7rT2vX9kL4mN8pZ1aB3cD5e"


@pytest.fixture
def con(tmp_path):
    c = case.connect(tmp_path / "case.duckdb")
    yield c
    c.close()


def test_detected_by_content_not_by_name():
    sample = ERROR_LOG.read_bytes()
    assert error_log.detect(sample, Path("whatever.txt")) == "nginx.error"
    assert error_log.detect((ASSETS / "combined.log").read_bytes(), Path("error.log")) is None
    # an access log with one error-log line in it stays an access log (tests/hostile: quarantined as such)
    mixed = Path(__file__).resolve().parent.parent / "hostile" / "cases" / "nginx_error_log_and_syslog_mixed.log"
    assert error_log.detect(mixed.read_bytes(), mixed) is None


def test_every_entry_is_classified_with_its_fields(con):
    [r] = ingest_paths(con, [ASSETS / "combined.log", ERROR_LOG])[1:]
    assert (r.format, r.records, r.loaded, r.quarantined) == ("nginx.error", 14, 14, 0)
    rows = {n: rest for n, *rest in con.execute(
        "SELECT line_no, class, level, pid, tid, connection, zone, client_ip, server, request, upstream, host "
        "FROM nginx_errors ORDER BY line_no").fetchall()}
    assert [rows[n][0] for n in sorted(rows)] == [
        "other", "other", "limit_req", "limit_conn", "limit_req_delayed", "upstream_timed_out", "connect_failed",
        "upstream_prematurely_closed", "no_live_upstreams", "ssl", "body_too_large", "file_not_found", "other",
        "limit_req_dry_run"]
    assert rows[3] == ["limit_req", "error", 31, 31, 1201, "llm", "203.0.113.7", "api.example.com",
                       "POST /v1/chat/completions HTTP/1.1", None, "api.example.com"]
    assert rows[1][4] is None                                    # a process-level entry has no connection
    assert rows[7][6:] == ["2a02:cf40::4e36", "_", "GET /health HTTP/1.1", "http://127.0.0.1:4000/health", "10.0.0.5"]
    # a request line holding ', client: ' does not move the client (it is the first one, before server:)
    assert rows[12][6] == "198.51.100.23" and rows[12][8] == "GET /.env, client: 1.2.3.4 HTTP/1.1"
    # the FastCGI entry spans lines 13-14: one record, its message both lines
    (message,) = con.execute("SELECT message FROM nginx_errors WHERE line_no = 13").fetchone()
    assert "first line\nPHP message: PHP Warning:  second line\" while reading" in message
    assert 14 not in rows


# tests/assets/nginx/error_auth.log: entries shaped like fail2ban's nginx test logs (fail2ban/tests/files/logs/
# nginx-http-auth, nginx-limit-req: auth_basic's wrong user and password, `server: ,` empty, `#0` thread ids, a
# referrer after the host), and like ngx_http_access_module's deny and a scanner's missing file; our own values
def test_auth_basic_deny_and_missing_files_are_classes_of_their_own(con):
    [r] = ingest_paths(con, [ASSETS / "error_auth.log"])
    assert (r.records, r.loaded, r.quarantined) == (8, 8, 0)
    got = con.execute("SELECT line_no, class, client_ip, server, path FROM nginx_errors ORDER BY line_no").fetchall()
    assert [row[1] for row in got] == ["limit_req", "auth_basic_failed", "auth_basic_failed", "auth_basic_failed",
                                       "access_forbidden", "file_not_found", "other", "other"]
    assert got[2][2:] == ("203.0.113.52", None, "/v1/chat/completions")        # `server: ,` is no server
    assert got[4][2] == "2001:db8::54" and got[5][4] == "/.git/config"
    # the incident timeline's error-log events name them (an auth failure burst is the stuffing's own trace)
    step = nginx_events_step("events")
    events = {c: n for c, n, *_ in con.execute(step.sql, [datetime(2026, 12, 3), datetime(2026, 12, 4)]).fetchall()}
    assert events == {"limit_req": 1, "auth_basic_failed": 3, "access_forbidden": 1, "file_not_found": 1}


def test_times_take_the_offset_the_access_log_shows_across_dst(con):
    ingest_paths(con, [ASSETS / "combined.log", ERROR_LOG])
    got = dict(con.execute("SELECT line_no, (time, time_raw, utc_offset, offset_source) FROM nginx_errors").fetchall())
    assert got[3] == (datetime(2025, 3, 30, 0, 59, 58), "2025/03/30 01:59:58", "+01:00", "access log")
    assert got[6] == (datetime(2025, 3, 30, 1, 0, 1), "2025/03/30 03:00:01", "+02:00", "access log")
    assert got[1][2] == "+01:00"            # before the first access-log line: the earliest offset


def test_error_log_before_its_access_log_is_settled_once_that_is_in(con):
    [r] = ingest_paths(con, [ERROR_LOG])
    assert "read as UTC" in r.message
    assert con.execute("SELECT time FROM nginx_errors WHERE line_no = 3").fetchone()[0] == datetime(2025, 3, 30, 1, 59, 58)
    ingest_paths(con, [ASSETS / "combined.log"])
    assert con.execute("SELECT time, utc_offset FROM nginx_errors WHERE line_no = 3").fetchone() == (
        datetime(2025, 3, 30, 0, 59, 58), "+01:00")


def test_continuation_before_any_entry_is_quarantined_and_keys_are_redacted(con, tmp_path):
    f = tmp_path / "error.log"
    f.write_text("stray continuation line\n\n"
                 + ERROR_LOG.read_text().splitlines()[2].replace("POST /v1/chat/completions", f"GET /x?key={KEY}")
                 + "\n" + "\n".join(ERROR_LOG.read_text().splitlines()[3:6]) + "\n")
    [r] = ingest_paths(con, [f])
    assert (r.format, r.records, r.loaded, r.quarantined) == ("nginx.error", 5, 4, 1)
    assert con.execute("SELECT record_no, reason FROM quarantine").fetchall()[0][0] == 1
    dump = str(con.execute("SELECT * FROM nginx_errors").fetchall())
    assert KEY not in dump and "[redacted key sk-...cD5e" in dump
    assert ingest_paths(con, [f])[0].skipped                     # again: nothing doubles
    assert con.execute("SELECT count(*) FROM nginx_errors").fetchone()[0] == 4


def test_impossible_and_implausible_times_are_quarantined_with_the_value(con, tmp_path):
    good = ERROR_LOG.read_text().splitlines()[2]
    f = tmp_path / "error.log"
    f.write_text("\n".join([good, good.replace("2025/03/30", "2025/02/31"), good.replace("2025/03/30", "1999/03/30")])
                 + "\n")
    [r] = ingest_paths(con, [f])
    assert (r.records, r.loaded, r.quarantined) == (3, 1, 2)
    reasons = dict(con.execute("SELECT record_no, reason FROM quarantine").fetchall())
    assert reasons[2] == 'time "2025/02/31 01:59:58" is not a valid time'
    assert reasons[3].startswith('time "1999/03/30 01:59:58" is 1999-03-30 01:59:58 UTC: outside the plausible range')


def test_ingest_command_reports_it(tmp_path):
    out = run_cli("ingest", ERROR_LOG, "--case", tmp_path / "c.duckdb", "--json")
    assert out.returncode == 0, out.stderr
    [obj] = json.loads(out.stdout)
    assert (obj["format"], obj["records"], obj["loaded"], obj["quarantined"]) == ("nginx.error", 14, 14, 0)


def test_a_merged_case_keeps_its_error_log(tmp_path):
    from forensics.api import Case

    with Case.open(tmp_path / "a.duckdb") as a:
        a.ingest([ASSETS / "combined.log", ERROR_LOG])
        want = a.execute("SELECT * EXCLUDE (file_id) FROM nginx_errors ORDER BY line_no").fetchall()
    with Case.open(tmp_path / "b.duckdb") as b:
        reports = b.merge([tmp_path / "a.duckdb"])
        assert [r.format for r in reports] == ["nginx.combined", "nginx.error"]
        assert b.execute("SELECT * EXCLUDE (file_id) FROM nginx_errors ORDER BY line_no").fetchall() == want


@pytest.mark.slow
def test_a_case_made_before_nginx_errors_is_read_merged_and_completed(tmp_path):
    from forensics.analysis import limits
    from forensics.api import Case

    with Case.open(tmp_path / "old.duckdb") as old:
        old.ingest([ASSETS / "combined.log"])
        old.execute("DROP TABLE nginx_errors")                 # as a case written before nginx_errors was
    with Case.open(tmp_path / "old.duckdb", read_only=True) as old:
        assert old.schema_version == 2 and limits.limits_seen(old).empty
    with Case.open(tmp_path / "new.duckdb") as new:
        assert [r.format for r in new.merge([tmp_path / "old.duckdb"])] == ["nginx.combined"]
    with Case.open(tmp_path / "old.duckdb") as old:                # read-write: it gains the table
        assert old.schema_version == 2 and old.execute("SELECT count(*) FROM nginx_errors").fetchone() == (0,)
