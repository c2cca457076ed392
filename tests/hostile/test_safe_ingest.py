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
