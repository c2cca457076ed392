"""Issue #15 "Safe to share, for real": inputs that once took all the memory, hung, doubled rows or forged console
lines. Implausible times and negative usage are corpus cases (cases.toml); what needs a process of its own (memory,
time, a FIFO), a file that grows, or a thread writing while ingest reads is tested here.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from forensics import case as case_db
from forensics.api import Case
from forensics.ingest import ingest_file, ingest_paths
from forensics.schema import FAMILY_TABLES

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE_LOGS = ROOT / "sample_logs"
GB = 1_000_000_000


# ---- helpers --------------------------------------------------------------------------------------------------

def run_bounded(args: list[str], rss_limit: int, timeout: float, cwd: Path = ROOT) -> dict:
    """Run `args`, killing it when its resident memory passes `rss_limit` bytes or it runs over `timeout` seconds
    (so that a regression fails the test instead of taking the shared machine's memory). Returns its exit code,
    peak RSS (VmHWM, polled), seconds, output and why it was killed (None when it finished)."""
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    out: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, s=s: out.__setitem__(n, s.read()), daemon=True)
               for n, s in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for t in readers:
        t.start()
    peak, killed = 0, None
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm = next(int(ln.split()[1]) * 1024 for ln in status.splitlines() if ln.startswith("VmHWM:"))
            peak = max(peak, hwm)
        except (OSError, StopIteration):
            pass
        if peak > rss_limit:
            killed = f"resident memory over {rss_limit:,} bytes"
        elif time.monotonic() - started > timeout:
            killed = f"still running after {timeout} s"
        if killed:
            proc.kill()
            proc.wait()
            break
        time.sleep(0.05)
    for t in readers:
        t.join()
    return {"code": proc.returncode, "peak_rss": peak, "seconds": time.monotonic() - started, "killed": killed,
            "stdout": out.get("stdout", b"").decode("utf-8", "replace"),
            "stderr": out.get("stderr", b"").decode("utf-8", "replace")}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forensics", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def combined(i: int, ip: str = "203.0.113.7") -> str:
    return (f'{ip} - - [17/Mar/2025:02:{i // 60 % 60:02d}:{i % 60:02d} +0000] "GET /v1/models?n={i} HTTP/1.1" '
            f'200 5 "-" "curl/8"\n')


def payload(i: int, **over) -> dict:
    d = {"id": f"chatcmpl-safe-{i:05d}", "litellm_call_id": f"call-safe-{i:05d}", "call_type": "acompletion",
         "status": "success", "custom_llm_provider": "openai", "model": "gpt-4", "model_group": "gpt-4",
         "startTime": 1742173204.5 + i, "endTime": 1742173205.5 + i, "response_cost": 0.01, "prompt_tokens": 10,
         "completion_tokens": 20, "total_tokens": 30, "requester_ip_address": "203.0.113.10",
         "metadata": {"user_api_key_hash": None, "requester_ip_address": "203.0.113.10"}}
    d.update(over)
    return d


def nd(*objs) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def conserved(con, file_id: int) -> None:
    records, loaded, quarantined, merged = con.execute(
        "SELECT records, loaded, quarantined, merged FROM ingest_files WHERE file_id = ?", [file_id]).fetchone()
    assert records == loaded + quarantined
    (q,) = con.execute("SELECT count(*) FROM quarantine WHERE file_id = ?", [file_id]).fetchone()
    stored = sum(con.execute(f"SELECT count(*) FROM {t} WHERE file_id = ?", [file_id]).fetchone()[0]
                 for t in FAMILY_TABLES)
    assert (q, stored) == (quarantined, loaded - merged)


# ---- 2. one implausible time took all the memory ----------------------------------------------------------------

@pytest.mark.slow
def test_implausible_times_are_quarantined_and_the_report_stays_small(tmp_path, sample_report):
    """Year 1 (Go's zero time), the epoch and year 9999 beside sample_logs: every family quarantines them at load,
    so `report` needs no series over ten thousand years (it was killed at 24 GB) and finds what sample_logs alone
    gives."""
    extra = tmp_path / "extra"
    (extra / "litellm").mkdir(parents=True)
    (extra / "litellm" / "far_payloads.ndjson").write_text(nd(
        payload(1, startTime=-62135596800.0, endTime=-62135596799.0),
        payload(2, startTime=0.0, endTime=0.0),
        payload(3, startTime="9999-12-31T23:59:59+14:00", endTime="9999-12-31T23:59:59+14:00"),
    ))
    (extra / "nginx").mkdir()
    (extra / "nginx" / "far.log").write_text(nd(*(
        {"time_iso8601": iso, "msec": msec, "remote_addr": "203.0.113.7", "request": "POST /v1/chat/completions "
         "HTTP/1.1", "status": "200", "body_bytes_sent": "5", "http_user_agent": "curl/8"}
        for iso, msec in (("0001-01-01T00:00:00+00:00", "-62135596800.000"), ("1970-01-01T00:00:00+00:00", "0.000"),
                          ("9999-12-31T23:59:59+14:00", "253402250399.000")))))
    (extra / "openai").mkdir()
    (extra / "openai" / "far_usage.json").write_text(json.dumps({"object": "page", "has_more": False, "data": [
        {"object": "bucket", "start_time": s, "end_time": s + 60, "results": [
            {"object": "organization.usage.completions.result", "input_tokens": 10, "output_tokens": 5,
             "num_model_requests": 1, "model": "gpt-4", "api_key_id": "key_far"}]}
        for s in (-62135596800, 0, 253402300739)]}))
    (extra / "anthropic").mkdir()
    (extra / "anthropic" / "far_cost.json").write_text(json.dumps({"has_more": False, "data": [
        {"starting_at": s, "ending_at": e, "results": [{"currency": "USD", "amount": "100", "model": "x",
                                                        "cost_type": "tokens"}]}
        for s, e in (("0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z"), ("1970-01-01T00:00:00Z", "1970-01-02T00:00:00Z"),
                     ("9999-12-30T00:00:00+14:00", "9999-12-31T00:00:00+14:00"))]}))
    out = tmp_path / "out"
    r = run_bounded([sys.executable, "-m", "forensics", "report", str(SAMPLE_LOGS), str(extra), "--out", str(out)],
                    rss_limit=2 * GB, timeout=600)
    assert r["killed"] is None, (r["killed"], r["stderr"][-2000:])
    assert r["code"] == 0, r["stderr"]
    assert r["peak_rss"] < 2 * GB
    findings = json.loads((out / "findings.json").read_text())
    alone, _ = sample_report
    assert findings["incidents"] == alone["incidents"]
    # every one of those records is in the case's quarantine, its reason naming the field and the value
    con = case_db.connect(out / "case.duckdb", read_only=True)
    reasons = [r for (r,) in con.execute(
        "SELECT q.reason FROM quarantine q JOIN ingest_files f USING (file_id) WHERE f.path LIKE ? ORDER BY f.path, "
        "q.record_no", [f"{extra}%"]).fetchall()]
    con.close()
    assert len(reasons) == 12, reasons
    assert all("plausible" in r for r in reasons), reasons
    assert any('startTime "-62135596800.0"' in r for r in reasons), reasons
    assert any('msec "253402250399.000"' in r for r in reasons), reasons
    assert any('bucket starting_at "9999-12-30T00:00:00+14:00"' in r for r in reasons), reasons
    assert any('bucket start_time "0"' in r for r in reasons), reasons


# ---- 5. a log that grew ---------------------------------------------------------------------------------------

def test_a_grown_log_loads_only_its_new_lines(tmp_path):
    log = tmp_path / "access.log"
    log.write_text("".join(combined(i) for i in range(1000)))
    con = case_db.connect(tmp_path / "case.duckdb")
    (first,) = ingest_paths(con, [log])
    assert (first.records, first.loaded) == (1000, 1000)
    with open(log, "a") as f:
        f.write("".join(combined(i) for i in range(1000, 1010)))
    (grown,) = ingest_paths(con, [log])
    assert (grown.status, grown.skipped, grown.records, grown.loaded, grown.quarantined) == ("loaded", False, 10, 10, 0)
    assert f"extends {log}: lines 1001..1010 loaded" in grown.message
    assert grown.sha256 == hashlib.sha256(log.read_bytes()).hexdigest()
    assert con.execute("SELECT count(*) FROM http_requests").fetchone()[0] == 1010
    fid, size = con.execute("SELECT file_id, size_bytes FROM ingest_files WHERE sha256 = ?", [grown.sha256]).fetchone()
    assert size == log.stat().st_size
    assert con.execute("SELECT min(line_no), max(line_no), count(*) FROM http_requests WHERE file_id = ?",
                       [fid]).fetchone() == (1001, 1010, 10)
    assert con.execute("SELECT list(path ORDER BY line_no) FROM http_requests WHERE file_id = ?", [fid]).fetchone()[0] \
        == [f"/v1/models?n={i}" for i in range(1000, 1010)]
    conserved(con, fid)
    # rotated: the grown file copied to access.log.1 and grown again
    rotated = tmp_path / "access.log.1"
    rotated.write_bytes(log.read_bytes() + combined(1010).encode())
    (third,) = ingest_paths(con, [rotated])
    assert (third.records, third.loaded) == (1, 1)
    assert f"extends {log}: lines 1011..1011 loaded" in third.message
    assert con.execute("SELECT count(*) FROM http_requests").fetchone()[0] == 1011
    con.close()


def test_a_grown_log_whose_last_line_was_cut_loads_it_whole(tmp_path):
    """The first copy was taken while nginx wrote: its last line was cut (quarantined). The grown file finishes that
    line: it loads from that line on, under its own line number."""
    log = tmp_path / "access.log"
    whole = "".join(combined(i) for i in range(20))
    log.write_text(whole[:-30])
    con = case_db.connect(tmp_path / "case.duckdb")
    (first,) = ingest_paths(con, [log])
    assert (first.records, first.loaded, first.quarantined) == (20, 19, 1)
    log.write_text(whole + combined(20))
    (grown,) = ingest_paths(con, [log])
    assert (grown.records, grown.loaded, grown.quarantined) == (2, 2, 0)
    assert "lines 20..21 loaded" in grown.message
    assert con.execute("SELECT count(*) FROM http_requests").fetchone()[0] == 21
    con.close()


def test_a_grown_callback_log_and_a_grown_gzip(tmp_path):
    nd_log = tmp_path / "callbacks.ndjson"
    nd_log.write_text(nd(*(payload(i) for i in range(5))))
    gz_log = tmp_path / "access.log.gz"
    gz_log.write_bytes(gzip.compress("".join(combined(i) for i in range(30)).encode(), mtime=0))
    con = case_db.connect(tmp_path / "case.duckdb")
    ingest_paths(con, [nd_log, gz_log])
    with open(nd_log, "a") as f:
        f.write(nd(payload(5), payload(6)))
    with open(gz_log, "ab") as f:     # another gzip member appended, as some loggers do
        f.write(gzip.compress("".join(combined(i) for i in range(30, 33)).encode(), mtime=0))
    a, b = ingest_paths(con, [nd_log, gz_log])
    assert (a.format, a.records, a.loaded, a.merged) == ("litellm.payload_ndjson", 2, 2, 0)
    assert "lines 6..7 loaded" in a.message
    assert (b.format, b.records, b.loaded) == ("nginx.combined", 3, 3)
    assert "lines 31..33 loaded" in b.message
    assert con.execute("SELECT count(*) FROM llm_requests").fetchone()[0] == 7
    assert con.execute("SELECT count(*) FROM http_requests").fetchone()[0] == 33
    con.close()


def test_a_grown_file_of_a_format_not_read_by_lines_loads_whole_and_says_so(tmp_path):
    """Concatenated JSON arrays (a generic_api log) and a SpendLogs CSV grow by appending too; they are loaded whole
    again, as before (the requests merge by id), and the note says why."""
    arrays = tmp_path / "batches.json"
    arrays.write_text(json.dumps([payload(1), payload(2)]))
    con = case_db.connect(tmp_path / "case.duckdb")
    ingest_paths(con, [arrays])
    with open(arrays, "a") as f:
        f.write(json.dumps([payload(3)]))
    (again,) = ingest_paths(con, [arrays])
    assert (again.format, again.records, again.loaded, again.merged) == ("litellm.payload_json_array", 3, 3, 2)
    assert f"extends {arrays}" in again.message and "loaded whole" in again.message
    fid = con.execute("SELECT max(file_id) FROM ingest_files").fetchone()[0]
    conserved(con, fid)
    assert con.execute("SELECT count(*) FROM llm_requests").fetchone()[0] == 3
    con.close()


# ---- 6. a file appended to while it is read -----------------------------------------------------------------------

def test_a_file_appended_to_during_ingest_records_what_was_read(tmp_path):
    log = tmp_path / "access.log"
    log.write_text("".join(combined(i, ip=f"203.0.113.{i % 200}") for i in range(300_000)))
    stop = threading.Event()
    appended = []

    def writer():
        with open(log, "a") as f:
            while not stop.is_set():
                f.write("".join(combined(i) for i in range(50)))
                f.flush()
                appended.append(50)
                time.sleep(0.002)

    con = case_db.connect(tmp_path / "case.duckdb")
    t = threading.Thread(target=writer)
    t.start()
    try:
        r = ingest_file(con, log, str(log))
    finally:
        stop.set()
        t.join()
    assert r.status == "loaded", r.message
    sha, size, records = con.execute("SELECT sha256, size_bytes, records FROM ingest_files").fetchone()
    data = log.read_bytes()
    assert len(data) > size, "the writer appended nothing after the file was hashed: the test proves nothing"
    assert hashlib.sha256(data[:size]).hexdigest() == sha
    assert records == data[:size].count(b"\n")
    assert con.execute("SELECT count(*) FROM http_requests").fetchone()[0] == records
    con.close()


def test_a_file_rewritten_while_it_is_read_fails_and_loads_nothing(tmp_path, monkeypatch):
    """copytruncate and rewrite between the hash and the read: the bytes read are checked against the sha256."""
    from forensics.sources.nginx import nginx

    log = tmp_path / "access.log"
    log.write_text("".join(combined(i) for i in range(100)))
    load = nginx.NginxSource.load

    def rewritten_first(self, ctx, fmt):
        log.write_text("".join(combined(i, ip="198.51.100.9") for i in range(100)))     # same size, other bytes
        return load(self, ctx, fmt)

    monkeypatch.setattr(nginx.NginxSource, "load", rewritten_first)
    con = case_db.connect(tmp_path / "case.duckdb")
    r = ingest_file(con, log, str(log))
    assert r.status == "failed" and "changed while it was read" in r.message, r.message
    assert con.execute("SELECT count(*) FROM http_requests").fetchone()[0] == 0
    con.close()


def test_a_file_not_read_by_lines_that_grows_while_it_is_read_fails(tmp_path, monkeypatch):
    """A JSON array is read by DuckDB, which reads to the end: a file that changed meanwhile is not recorded with
    the sha256 of what it was."""
    from forensics.sources.litellm import litellm_read

    path = tmp_path / "batch.json"
    path.write_text(json.dumps([payload(1), payload(2)]))
    batches = litellm_read.json_value_batches

    def grown_first(con, p, notes, pages=None):
        with open(path, "a") as f:
            f.write(json.dumps([payload(3)]))
        yield from batches(con, p, notes, pages)

    monkeypatch.setattr(litellm_read, "json_value_batches", grown_first)
    con = case_db.connect(tmp_path / "case.duckdb")
    r = ingest_file(con, path, str(path))
    assert r.status == "failed" and "changed while it was read" in r.message, r.message
    assert con.execute("SELECT count(*) FROM llm_requests").fetchone()[0] == 0
    con.close()


# ---- 8. a file of blank lines -------------------------------------------------------------------------------------

def test_blank_lines_are_no_records(tmp_path):
    blank = tmp_path / "blank.log"
    blank.write_bytes(b"\n" * 100_000)
    then_log = tmp_path / "then.log"
    then_log.write_bytes(b"\n" * 100_000 + "".join(combined(i) for i in range(3)).encode() + b"\n\n")
    con = case_db.connect(tmp_path / "case.duckdb")
    a, b = ingest_paths(con, [blank, then_log])
    assert (a.format, a.records, a.loaded, a.quarantined) == ("empty", 0, 0, 0)
    assert "100,000 blank lines skipped" in a.message
    assert (b.format, b.records, b.loaded, b.quarantined) == ("nginx.combined", 3, 3, 0)
    assert "100,002 blank lines skipped" in b.message
    assert con.execute("SELECT list(line_no ORDER BY line_no) FROM http_requests").fetchone()[0] == [
        100_001, 100_002, 100_003]
    con.close()


@pytest.mark.slow
def test_a_64_mib_gzip_of_newlines_is_quick_and_small(tmp_path):
    newlines = tmp_path / "blank.log.gz"
    newlines.write_bytes(gzip.compress(b"\n" * (64 << 20), compresslevel=1))
    then_one = tmp_path / "blank_then_one.log.gz"
    then_one.write_bytes(gzip.compress(b"\n" * (64 << 20) + combined(1).encode(), compresslevel=1))
    case = tmp_path / "case.duckdb"
    r = run_bounded([sys.executable, "-m", "forensics", "ingest", str(newlines), str(then_one), "--case", str(case),
                     "--json"], rss_limit=GB, timeout=120)
    assert r["killed"] is None, r["killed"]
    assert r["code"] == 0, r["stderr"]
    assert r["seconds"] < 30, r["seconds"]       # 52 s (and 2.4 GB) before; a few seconds on an idle machine
    assert r["peak_rss"] < 700_000_000, r["peak_rss"]
    a, b = json.loads(r["stdout"])
    assert (a["format"], a["records"], a["loaded"], a["quarantined"]) == ("empty", 0, 0, 0)
    assert (b["format"], b["records"], b["loaded"], b["quarantined"]) == ("nginx.combined", 1, 1, 0)
    assert f"{64 << 20:,} blank lines skipped" in r["stderr"]
    assert not Path(f"{case}.tmp").exists()


def test_a_stale_duckdb_spill_is_removed_when_the_case_is_opened(tmp_path):
    """A run killed while DuckDB spilled leaves CASE.duckdb.tmp behind (7.6 GB in the issue): the next open removes
    it (the open holds the case's write lock: no other process can be using it)."""
    path = tmp_path / "case.duckdb"
    Case.open(path).close()
    stale = Path(f"{path}.tmp")
    stale.mkdir()
    (stale / "duckdb_temp_4242_0_storage_DEFAULT-0.tmp").write_bytes(b"\0" * 4096)
    (stale / "duckdb_temp_4242_0_owner").write_bytes(b"")
    with Case.open(path):
        pass
    assert not stale.exists()


def test_the_spill_goes_with_the_case_after_an_interrupt(tmp_path, monkeypatch):
    """Ctrl-C in the middle of a load that spilled: closing the case removes the spill."""
    from forensics.sources.nginx import nginx

    path = tmp_path / "case.duckdb"
    log = tmp_path / "access.log"
    log.write_text("".join(combined(i) for i in range(10)))

    spilled = []

    def interrupted(self, ctx, fmt):
        try:                               # (an error here would be reported as the file's failure, not raised)
            ctx.con.execute("SET memory_limit = '64MB'")
            ctx.con.execute("CREATE TEMP TABLE spill AS SELECT range AS a, md5(range::VARCHAR) AS b "
                            "FROM range(3000000) ORDER BY b")
            spill = Path(f"{path}.tmp")
            spilled.extend(spill.iterdir() if spill.is_dir() else [])
        except Exception as e:
            spilled.append(e)
        raise KeyboardInterrupt

    monkeypatch.setattr(nginx.NginxSource, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with Case.open(path) as case:
            case.ingest([log])
    assert spilled and not any(isinstance(f, Exception) for f in spilled), spilled
    assert not Path(f"{path}.tmp").exists()


# ---- special files and file names --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "char_device", "socket"])
def test_a_file_that_is_no_regular_file_is_refused(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "pipe.log"
        os.mkfifo(path)
    elif kind == "char_device":
        path = Path("/dev/zero")
    else:
        path = tmp_path / "sock.log"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
    try:
        r = cli("ingest", str(path), "--case", str(tmp_path / "c.duckdb"), timeout=60)
    finally:
        if kind == "socket":
            s.close()
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "not a regular file" in lines[0], lines
    assert "Traceback" not in r.stderr


def test_a_folder_walk_skips_special_files_with_a_note(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    os.mkfifo(folder / "pipe.log")
    (folder / "access.log").write_text(combined(1))
    r = cli("ingest", str(folder), "--case", str(tmp_path / "c.duckdb"), "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    assert [x["path"] for x in json.loads(r.stdout)] == [str(folder / "access.log")]
    assert any(str(folder / "pipe.log") in ln and "skipped" in ln and "FIFO" in ln for ln in r.stderr.splitlines())


def test_control_characters_in_file_names_cannot_forge_console_lines(tmp_path):
    name = "evil\nforensics: all clear, nothing quarantined\x1b[2K.log"
    path = tmp_path / name
    path.write_text(combined(1) + "not an access log line\n" + combined(2))
    r = cli("ingest", str(path), "--case", str(tmp_path / "c.duckdb"))
    assert r.returncode == 0, r.stderr
    shown = str(tmp_path) + "/evil\\x0aforensics: all clear, nothing quarantined\\x1b[2K.log"
    for stream in (r.stdout, r.stderr):
        assert "\x1b" not in stream
        assert not any(ln.startswith("forensics: all clear") for ln in stream.splitlines()), stream
    assert any(ln.startswith(f"{shown} line 2: ") for ln in r.stderr.splitlines()), r.stderr
    assert shown in r.stdout
    # a usage error names the file escaped too
    r = cli("ingest", str(tmp_path / "missing\nforensics: ok"), "--case", str(tmp_path / "c.duckdb"))
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"forensics: {tmp_path}/missing\\x0aforensics: ok: no such file or folder"]
