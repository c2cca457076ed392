"""Benchmark: many small files, the way LiteLLM's S3/GCS loggers and per-request nginx shippers leave them.

    python bench/bench_small_files.py [--files 2000] [--baseline 200] [--keep]

Writes N one-request JSON objects (StandardLoggingPayload, the S3 logger's `{date}/time-..._{id}.json` tree), N
one-line nginx files (combined format) and N one-line nginx files of a custom format found by inference
($time_iso8601 in place of $time_local, then `$request_time $upstream_response_time "$http_x_forwarded_for"
$upstream_http_x_litellm_call_id`) under bench/data/ (gitignored), ingests each tree into a fresh case with the
batched path (many files per DuckDB statement) and a sample of it one file per statement (the baseline: ingest_file
on each), asserts conservation per file (records = loaded + quarantined, rows stored under each file_id = loaded -
merged, one row per request), and prints files/s side by side. Targets on 2 cores: >= 2,000 JSON objects/s and
>= 1,000 nginx files/s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forensics import case  # noqa: E402
from forensics.ingest import ingest_file, ingest_paths  # noqa: E402

DATA = ROOT / "bench" / "data"
START = datetime(2026, 11, 16, 2, 0, tzinfo=timezone.utc)
# the shape of tests/assets/litellm/time-2025-06-22T18-03-20-123456_chatcmpl-s3-object-0001.json (LiteLLM's S3
# logger: one StandardLoggingPayload per object), trimmed to the fields a request needs
PAYLOAD = json.loads((ROOT / "tests/assets/litellm/time-2025-06-22T18-03-20-123456_chatcmpl-s3-object-0001.json")
                     .read_text())


def write_objects(folder: Path, n: int) -> None:
    for i in range(n):
        t = START + timedelta(seconds=i * 0.7)
        rid = f"chatcmpl-bench-{i:07d}"
        doc = dict(PAYLOAD, id=rid, litellm_call_id=f"b0000000-0000-4000-8000-{i:012d}", startTime=t.timestamp(),
                   endTime=t.timestamp() + 1.5, completionStartTime=t.timestamp() + 0.4,
                   requester_ip_address=f"203.0.113.{i % 250 + 1}")
        day = folder / t.strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        (day / f"time-{t.strftime('%Y-%m-%dT%H-%M-%S-%f')}_{rid}.json").write_text(json.dumps(doc, indent=2))


def write_nginx(folder: Path, n: int, inferred: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = START + timedelta(seconds=i * 0.7)
        if inferred:             # behind a balancer: the client in X-Forwarded-For, LiteLLM's call id at the end
            line = (f'10.0.0.{i % 4 + 2} - - [{t.isoformat()}] "POST /v1/chat/completions HTTP/1.1" 200 '
                    f'{1200 + i % 800} "-" "OpenAI/Python 1.51.0" {1.2 + i % 50 / 100:.3f} {1.1 + i % 50 / 100:.3f} '
                    f'"203.0.113.{i % 250 + 1}" b0000000-0000-4000-8000-{i:012d}\n')
        else:
            line = (f'203.0.113.{i % 250 + 1} - - [{t.strftime("%d/%b/%Y:%H:%M:%S +0000")}] '
                    f'"POST /v1/chat/completions HTTP/1.1" {200 if i % 17 else 429} {1200 + i % 800} "-" '
                    f'"OpenAI/Python 1.51.0"\n')
        (folder / f"access-{i:07d}.log").write_text(line)


def check(con, reports, kind: str) -> None:
    """Conservation per file: what ingest reported is what the case holds under each file."""
    bad = con.execute("""
        WITH rows AS (SELECT file_id, count(*) AS n FROM (SELECT file_id FROM llm_requests UNION ALL
                      SELECT file_id FROM http_requests UNION ALL SELECT file_id FROM nginx_errors) GROUP BY ALL),
             q AS (SELECT file_id, count(*) AS n FROM quarantine GROUP BY ALL)
        SELECT count(*) FROM ingest_files f LEFT JOIN rows r USING (file_id) LEFT JOIN q USING (file_id)
        WHERE f.status = 'loaded' AND (f.records <> f.loaded + f.quarantined OR coalesce(q.n, 0) <> f.quarantined
              OR coalesce(r.n, 0) <> f.loaded - f.merged OR f.records <> 1)""").fetchone()[0]
    assert bad == 0, f"{kind}: {bad} files whose counts do not add up"
    assert all(r.status == "loaded" and r.records == 1 == r.loaded for r in reports), kind
    if kind == "nginx inferred":
        assert {r.format for r in reports} == {"nginx.inferred"}, kind


def timed_batched(files: Path, kind: str) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        con = case.connect(Path(tmp) / "case.duckdb")
        t = time.perf_counter()
        reports = ingest_paths(con, [files])
        con.close()
        seconds = time.perf_counter() - t
        con = case.connect(Path(tmp) / "case.duckdb")
        check(con, reports, kind)
        again = ingest_paths(con, [files])       # re-ingesting doubles nothing
        assert all(r.skipped for r in again), kind
        con.close()
    return seconds, len(reports)


def timed_one_by_one(files: list[Path], kind: str) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        con = case.connect(Path(tmp) / "case.duckdb")
        t = time.perf_counter()
        reports = [ingest_file(con, p, str(p)) for p in files]
        con.close()
        seconds = time.perf_counter() - t
        con = case.connect(Path(tmp) / "case.duckdb")
        check(con, reports, kind)
        con.close()
    return seconds, len(reports)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000, help="files of each kind")
    ap.add_argument("--baseline", type=int, default=200, help="of those, how many the one-file-per-statement "
                    "baseline ingests")
    ap.add_argument("--keep", action="store_true", help="keep the generated trees in bench/data/")
    args = ap.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="small_files_", dir=DATA))
    try:
        objects, nginx, inferred = root / "s3", root / "nginx", root / "nginx_inferred"
        write_objects(objects, args.files)
        write_nginx(nginx, args.files)
        write_nginx(inferred, args.files, inferred=True)
        print(f"{args.files:,} one-request JSON objects, {args.files:,} one-line nginx files and {args.files:,} of "
              f"a format found by inference (load average {os.getloadavg()[0]:.2f})")
        with tempfile.TemporaryDirectory() as tmp:     # the price table's one-off import is not per file
            con = case.connect(Path(tmp) / "warm.duckdb")
            ingest_paths(con, [ROOT / "tests/assets/litellm/gcs_spendlogs_row.json"])
            con.close()
        print(f"{'kind':<16}{'batched files/s':>18}{'one per statement':>20}{'speed-up':>10}{'target':>8}")
        for kind, folder, target in (("json objects", objects, 2000), ("nginx files", nginx, 1000),
                                     ("nginx inferred", inferred, 1000)):
            seconds, n = timed_batched(folder, kind)
            sample = sorted(p for p in folder.rglob("*") if p.is_file())[:args.baseline]
            base_s, base_n = timed_one_by_one(sample, kind)
            rate, base = n / seconds, base_n / base_s
            print(f"{kind:<16}{rate:>18,.0f}{base:>20,.0f}{rate / base:>9.1f}x{'  ok' if rate >= target else ' MISS':>8}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
