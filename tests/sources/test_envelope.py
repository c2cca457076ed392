"""Lines a collector wrapped (forensics.sources.envelope): a Kubernetes CRI container log, syslog/journald and
`docker logs --timestamps` prefixes are cut off each line, the format is detected on what is left, and a file whose
lines only look wrapped (a log_format that starts with $time_iso8601) is read as it is.

Fixture shapes (tests/assets/wrapped/, our own values): nginx-container_cri.log is the kubelet's CRI file for the
official nginx image (access log on stdout, error log on stderr, one file: `<RFC 3339 nanoseconds> <stream> <F|P>
<line>`, as in /var/log/containers/*.log); nginx-syslog.log is rsyslog's file for nginx's `access_log syslog:...`
(`Nov 16 02:00:04 host nginx: <line>`, also journalctl's short output with `nginx[pid]:`); litellm-proxy_cri.log is
tests/assets/litellm_stdout/proxy_stdout_json.log (a real LiteLLM proxy's json_logs stdout) as the kubelet would
have kept it, one long line split by the kubelet in a P part and an F part."""
from __future__ import annotations

from pathlib import Path

import pytest

from forensics.ingest import ingest_paths
from forensics.sources import envelope
from forensics.sources.interface import LoadOptions

ASSETS = Path(__file__).resolve().parent.parent / "assets"
WRAPPED = ASSETS / "wrapped"


def test_a_kubernetes_nginx_container_log_loads_its_access_lines_and_keeps_its_error_lines(con):
    [r] = ingest_paths(con, [WRAPPED / "nginx-container_cri.log"])
    assert (r.format, r.records, r.loaded, r.quarantined) == ("nginx.main", 5, 4, 1)
    assert "read as a Kubernetes container log (CRI" in r.message
    rows = con.execute("SELECT line_no, time, remote_addr, client_ip, status FROM http_requests ORDER BY line_no"
                       ).fetchall()
    assert [(n, ip, s) for n, _, _, ip, s in rows] == [(1, "203.0.113.50", 200), (2, "198.51.100.61", 200),
                                                       (4, "10.244.0.1", 200), (5, "203.0.113.50", 504)]
    assert str(rows[0][1]) == "2026-11-16 02:00:04" and rows[0][2] == "10.244.0.1"
    # the stderr line is nginx's error log: kept whole (as nginx wrote it) with its reason
    [(line, reason, raw)] = con.execute("SELECT record_no, reason, raw FROM quarantine").fetchall()
    assert line == 3 and "error-log line" in reason and raw.startswith("2026/11/16 02:00:05 [error] 29#29: *4411")


def test_syslog_and_journald_prefixes_are_cut(con):
    [r] = ingest_paths(con, [WRAPPED / "nginx-syslog.log"])
    assert (r.format, r.loaded, r.quarantined) == ("nginx.combined", 3, 0) and "syslog or journald" in r.message
    assert con.execute("SELECT list(client_ip ORDER BY line_no) FROM http_requests").fetchone()[0] == [
        "203.0.113.50", "198.51.100.61", "10.0.0.4"]


def test_a_wrapped_litellm_stdout_classifies_as_the_file_litellm_wrote(con):
    wrapped, plain = ingest_paths(con, [WRAPPED / "litellm-proxy_cri.log",
                                        ASSETS / "litellm_stdout" / "proxy_stdout_json.log"])
    assert wrapped.format == plain.format == "litellm.stdout"
    # one line more (the split one is two), of which the cut JSON part is quarantined with its reason
    assert (wrapped.records, wrapped.quarantined, plain.records, plain.quarantined) == (53, 1, 52, 0)
    classes = con.execute("""
        SELECT file_id, message_class, count(*) FROM litellm_log WHERE message_class <> 'other'
        GROUP BY ALL ORDER BY ALL""").fetchall()
    by_file = {}
    for fid, cls, n in classes:
        by_file.setdefault(fid, {})[cls] = n
    assert len(by_file) == 2 and by_file[min(by_file)] == by_file[max(by_file)]
    assert by_file[min(by_file)]["no_master_key"] == 1 and by_file[min(by_file)]["rate_limit"] == 8
    (reason,) = con.execute("SELECT reason FROM quarantine").fetchone()
    assert "JSON" in reason


def test_docker_timestamps_are_cut_but_a_format_that_starts_with_its_time_is_read_as_it_is(con, tmp_path):
    line = '203.0.113.7 - - [03/Dec/2026:04:11:02 +0000] "POST /v1/chat/completions HTTP/1.1" 200 1532 "-" "curl/8.5.0"'
    stamped = tmp_path / "docker.log"
    stamped.write_text(f"2026-12-03T04:11:02.123456789Z {line}\n2026-12-03T04:11:03.000000001Z {line}\n")
    [r] = ingest_paths(con, [stamped])
    assert r.format == "nginx.combined" and "docker logs --timestamps" in r.message
    assert con.execute("SELECT count(*) FROM http_requests WHERE host IS NULL AND client_ip = '203.0.113.7'"
                       ).fetchone()[0] == 2
    # a log_format whose first field is $time_iso8601: the "prefix" is the line's own time, not a collector's
    iso = tmp_path / "iso.log"
    iso.write_text('2026-12-03T04:11:02+00:00 203.0.113.7 "POST /v1/chat/completions HTTP/1.1" 200 1532 0.804\n'
                   '2026-12-03T04:11:03+00:00 198.51.100.9 "GET /health HTTP/1.1" 200 2 0.000\n')
    fmt = '$time_iso8601 $remote_addr "$request" $status $body_bytes_sent $request_time'
    [r] = ingest_paths(con, [iso], LoadOptions(nginx_format=fmt))
    assert (r.format, r.loaded) == ("nginx.custom", 2) and "prefix cut" not in (r.message or "")
    assert con.execute("SELECT max(request_time) FROM http_requests WHERE format = 'nginx.custom'").fetchone()[0] == 0.804


@pytest.mark.parametrize("text", [
    # nginx's own error log, LiteLLM's plain stdout, a combined line: no collector's prefix
    "2026/11/16 02:00:05 [error] 29#29: *1 upstream timed out\n2026/11/16 02:00:06 [error] 29#29: *2 x\n",
    "INFO:     10.0.0.4:52214 - \"POST /chat/completions HTTP/1.1\" 200 OK\nINFO:     Started server process [7]\n",
    '203.0.113.7 - - [03/Dec/2026:04:11:02 +0000] "GET / HTTP/1.1" 200 1 "-" "-"\n' * 2,
    # half the lines wrapped is no envelope
    "2026-11-16T02:00:04.1Z stdout F a\nplain\n2026-11-16T02:00:04.2Z stdout F b\nplain\n",
])
def test_no_envelope_where_the_program_wrote_the_lines(text):
    assert envelope.detect(text.encode()) is None
