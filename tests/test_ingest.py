"""The ingest driver: detection, per-file accounting, idempotency, files that cannot be read."""
import gzip
import json

from forensics.ingest import expand_inputs, ingest_paths

COMBINED = (
    '203.0.113.7 - - [16/Nov/2026:03:00:04 +0100] "POST /chat/completions HTTP/1.1" 200 1534 "-" "curl/8.5.0"\n'
    '2a02:cf40::4e36 - - [16/Nov/2026:03:00:05 +0100] "GET /health HTTP/1.1" 200 2 "-" "kube-probe/1.29"\n'
)


def _counts(con, sha):
    return con.execute(
        "SELECT records, loaded, quarantined, status FROM ingest_files WHERE sha256 = ? AND status <> 'skipped'", [sha]
    ).fetchall()


def test_conservation_and_detection_per_file(con, tmp_path):
    (tmp_path / "access.log").write_text(COMBINED + "this is not an access log line\n")
    [r] = ingest_paths(con, [tmp_path / "access.log"])
    assert r.format == "nginx.combined"
    assert (r.records, r.loaded, r.quarantined) == (3, 2, 1)
    assert con.execute("SELECT count(*) FROM http_requests").fetchone()[0] == 2
    (line_no, reason) = con.execute("SELECT record_no, reason FROM quarantine").fetchone()
    assert line_no == 3 and reason


def test_same_content_twice_is_skipped_and_not_doubled(con, tmp_path):
    (tmp_path / "a.log").write_text(COMBINED)
    (tmp_path / "copy-of-a.log").write_text(COMBINED)
    first = ingest_paths(con, [tmp_path / "a.log"])
    again = ingest_paths(con, [tmp_path])
    assert not first[0].skipped
    assert [r.skipped for r in again] == [True, True]
    assert all(r.records == 2 and r.loaded == 2 for r in again)
    assert con.execute("SELECT count(*) FROM http_requests").fetchone()[0] == 2


def test_unrecognised_file_is_kept_in_quarantine(con, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello\nworld\n")
    [r] = ingest_paths(con, [f])
    assert r.format == "unrecognised" and (r.records, r.loaded, r.quarantined) == (2, 0, 2)
    assert con.execute("SELECT list(raw ORDER BY record_no) FROM quarantine").fetchone()[0] == ["hello", "world"]


def test_empty_file_loads_nothing_and_says_so(con, tmp_path):
    f = tmp_path / "empty.log"
    f.write_bytes(b"")
    [r] = ingest_paths(con, [f])
    assert r.status == "loaded" and r.format == "empty" and r.records == 0


def test_unreadable_file_fails_alone(con, tmp_path):
    good = tmp_path / "good.log"
    good.write_text(COMBINED)
    bad = tmp_path / "bad.log.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate")
    reports = {r.path.rsplit("/", 1)[-1]: r for r in ingest_paths(con, [bad, good])}
    assert reports["bad.log.gz"].status == "failed" and "gzip" in reports["bad.log.gz"].message
    assert "\n" not in reports["bad.log.gz"].message
    assert reports["good.log"].loaded == 2


def test_gzip_detected_by_content(con, tmp_path):
    f = tmp_path / "access.log.2.gz"
    f.write_bytes(gzip.compress(COMBINED.encode(), mtime=0))
    [r] = ingest_paths(con, [f])
    assert r.format == "nginx.combined" and r.loaded == 2


def test_folders_are_searched_recursively_and_truth_ignored(tmp_path):
    (tmp_path / "nginx").mkdir()
    (tmp_path / "nginx" / "access.log").write_text(COMBINED)
    (tmp_path / "truth.json").write_text(json.dumps({}))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.log").write_text(COMBINED)
    assert [p.name for p in expand_inputs([tmp_path])] == ["access.log"]


def test_custom_log_format_from_the_command_line(con, tmp_path):
    from forensics.sources import LoadOptions

    fmt = '$remote_addr [$time_local] "$request" $status "$upstream_http_x_litellm_call_id"'
    f = tmp_path / "custom.log"
    f.write_text('203.0.113.7 [16/Nov/2026:03:00:04 +0100] "POST /chat/completions HTTP/1.1" 200 "c-1"\n')
    [r] = ingest_paths(con, [f], LoadOptions(nginx_format=fmt))
    assert r.format == "nginx.custom" and r.loaded == 1
    assert con.execute("SELECT litellm_call_id, time FROM http_requests").fetchone()[0] == "c-1"
