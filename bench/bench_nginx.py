"""Benchmark: nginx combined-format ingest vs a plain Python-regex parser vs DuckDB's own read_csv vs GoAccess.

    python bench/bench_nginx.py [--lines 2000000] [--repeat 3] [--quick] [--keep] [--xff]

Writes the log to bench/data/ (gitignored) and prints lines/s for each contender side by side. With --repeat N the
contenders run interleaved, N rounds of one run each, and each figure is the median of its N runs: a shared machine's
load then weighs on every contender alike. The machine's load average is printed too.

The practical ceiling (issue #14) is DuckDB's own `read_csv` of the same file *plus a split into typed columns*:
the columns http_requests gets from a combined line (time parsed to a UTC TIMESTAMP with its original text kept,
remote_addr, remote_user, the request line kept and split into method/path/protocol, status INTEGER, body_bytes
BIGINT, referer, user_agent; with --xff the X-Forwarded-For text too) written into the http_requests table of a fresh
on-disk case. It does no line numbers, no checks, no client-address walk, no secrets scan, and drops rejects.
Up to session 6 the ceiling was only the raw split into ten VARCHAR columns (no types, no request split): that
figure is still measured and printed next to the typed one, so both ratios can be compared with earlier runs.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import median

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forensics import case  # noqa: E402
from forensics.sources.lines import iter_line_batches  # noqa: E402

DATA = ROOT / "bench" / "data"
PATHS = ["/v1/chat/completions", "/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/health",
         "/", "/favicon.ico", "/.env", "/wp-login.php", "/key/info", "/ui/", "/v1/models?limit=%d",
         "/static/app.js?v=%d", "/search?q=%%E2%%9C%%93+%d"]
AGENTS = ["OpenAI/Python 1.51.0", "python-requests/2.32.3", "curl/8.5.0", "Go-http-client/1.1", "axios/1.7.2",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
          "Safari/537.36", "Mozilla/5.0 (compatible; zgrab/0.x)", "litellm/1.48.0", "kube-probe/1.29", "-"]
REFERERS = ["-"] * 6 + ["https://chat.example.org/", "https://example.com/app?x=1"]
METHODS = ["POST"] * 5 + ["GET"] * 8 + ["HEAD", "OPTIONS"]
STATUSES = [200] * 30 + [201, 204, 301, 304, 400, 401, 403, 404, 404, 429, 499, 500, 502, 503]
ODD_REQUESTS = ['', '-', r'\x16\x03\x01\x02\x00\x01\x00\x01\xFC\x03\x03', 'HELP', 'CONNECT api.openai.com:443 HTTP/1.1']
CHECKPOINT_SECONDS: list[float] = []
TARGET = 1_500_000          # lines/s on 2 cores, the aim issue #2 set
CEILING_TARGET = 0.6        # of DuckDB's own read_csv + typed split of the same file (issue #14)
BASELINE = re.compile(r'^(\S+) \S+ (\S+) \[([^\]]+)\] "([^"]*)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"( "[^"]*")?$')
# GoAccess: COMBINED, or with --xff the client from the X-Forwarded-For list at the end of the `main` format
GOACCESS_MAIN = ['--log-format=%^ %^ %^ [%d:%t %^] "%r" %s %b "%R" "%u" ~h{," }', "--date-format=%d/%b/%Y",
                 "--time-format=%T"]


def generate(path: Path, n: int, seed: int = 7, xff: bool = False) -> None:
    """n combined-format lines: zipf-ish clients (5% IPv6), LLM-gateway paths, scanners, a DST-free +0000 clock.

    xff: nginx's `main` format behind a load balancer instead: the peer is one of four balancer addresses and the
    client stands in "$http_x_forwarded_for" ("client, 10.0.0.1"; "-" for 5% of lines, the balancer's own probes)."""
    rng = np.random.default_rng(seed)
    v4 = [f"{a}.{b}.{c}.{d}" for a, b, c, d in rng.integers([1, 0, 0, 1], [224, 256, 256, 255], (20000, 4))]
    v6 = [f"2a02:cf40:{x:x}::{y:x}" for x, y in rng.integers(1, 65535, (1000, 2))]
    pool = v4 + v6
    weight = 1.0 / (np.arange(len(pool)) + 20.0)
    ip = rng.choice(len(pool), n, p=weight / weight.sum())
    per_second = 40
    start = datetime(2025, 3, 17, 1, 0, 4, tzinfo=timezone.utc)
    stamps = [(start + timedelta(seconds=s)).strftime("%d/%b/%Y:%H:%M:%S +0000") for s in range(n // per_second + 1)]
    path_idx = rng.integers(0, len(PATHS), n)
    requests = [
        PATHS[p] % rng.integers(1, 10**6) if "%d" in PATHS[p] else PATHS[p] for p in path_idx[:50000]
    ]
    req = (pl.Series(METHODS).gather(rng.integers(0, len(METHODS), n)) + " "
           + pl.Series(requests).gather(rng.integers(0, len(requests), n)) + " HTTP/1.1")
    odd = rng.random(n) < 0.001
    req = pl.select(pl.when(pl.Series(odd)).then(pl.Series(ODD_REQUESTS).gather(rng.integers(0, 5, n)))
                    .otherwise(req)).to_series()
    frame = pl.DataFrame({
        "ip": pl.Series(pool).gather(ip),
        "t": pl.Series(stamps).gather(np.arange(n) // per_second),
        "req": req,
        "status": pl.Series(STATUSES).gather(rng.integers(0, len(STATUSES), n)).cast(pl.Utf8),
        "bytes": pl.Series(rng.integers(0, 60000, n)).cast(pl.Utf8),
        "ref": pl.Series(REFERERS).gather(rng.integers(0, len(REFERERS), n)),
        "ua": pl.Series(AGENTS).gather(rng.integers(0, len(AGENTS), n)),
    })
    tail = [pl.lit('"')]
    if xff:
        direct = rng.random(n) < 0.05
        frame = frame.with_columns(
            xff=pl.when(pl.Series(direct)).then(pl.lit("-")).otherwise(pl.col("ip") + ", 10.0.0.1"),
            ip=pl.Series([f"10.0.0.{k}" for k in range(2, 6)]).gather(rng.integers(0, 4, n)))
        tail = [pl.lit('" "'), pl.col("xff"), pl.lit('"')]
    lines = frame.select(pl.concat_str([
        pl.col("ip"), pl.lit(" - - ["), pl.col("t"), pl.lit('] "'), pl.col("req"), pl.lit('" '), pl.col("status"),
        pl.lit(" "), pl.col("bytes"), pl.lit(' "'), pl.col("ref"), pl.lit('" "'), pl.col("ua"), *tail,
    ]).alias("line"))
    path.parent.mkdir(parents=True, exist_ok=True)
    lines.write_csv(path, include_header=False, quote_style="never")


def bench_ingest(path: Path, on_disk: bool) -> float:
    """The project's ingest into a fresh case, committed and closed: what `forensics ingest` costs its user.

    Closing an on-disk case runs DuckDB's checkpoint; that part is also kept apart (CHECKPOINT_SECONDS), since the
    batch size decides how much of the writing happens there.
    """
    from forensics.ingest import ingest_paths

    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        con = case.connect(Path(tmp) / "case.duckdb" if on_disk else ":memory:")
        t = time.perf_counter()
        [report] = ingest_paths(con, [path])
        assert report.status == "loaded", report.message
        assert report.loaded == report.records, (report.records, report.loaded, report.quarantined)
        closing = time.perf_counter()
        con.close()
        end = time.perf_counter()
        if on_disk:
            CHECKPOINT_SECONDS.append(end - closing)
        return end - t


def bench_write_only(path: Path) -> tuple[float, float]:
    """DuckDB's own cost of writing the parsed rows: the ingest's http_requests rows (made untimed, in memory)
    copied into the table of a fresh on-disk case. No parse at all: what any loader into this table pays."""
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        mem = case.connect(":memory:")
        from forensics.ingest import ingest_paths
        ingest_paths(mem, [path])
        disk = Path(tmp) / "case.duckdb"
        case.connect(disk).close()
        mem.execute(f"ATTACH '{disk}' AS disk")
        (n,) = mem.execute("SELECT count(*) FROM memory.http_requests").fetchone()
        t, before = time.perf_counter(), cpu_seconds()
        mem.execute("INSERT INTO disk.http_requests SELECT * FROM memory.http_requests")
        mem.execute("DETACH disk")                   # closed, as the ingest's case is
        seconds, cpu = time.perf_counter() - t, cpu_seconds() - before
        mem.execute(f"ATTACH '{disk}' AS disk (READ_ONLY)")
        assert mem.execute("SELECT count(*) FROM disk.http_requests").fetchone()[0] == n > 0
        mem.close()
        return seconds, cpu


def bench_duckdb_csv(path: Path, xff: bool = False) -> float:
    """DuckDB's parallel CSV reader splitting each line on spaces and quotes into nine text columns of an on-disk
    table: no line numbers, no types, no checks, rejects dropped. The crudest load DuckDB itself can do."""
    columns = {c: "VARCHAR" for c in ("addr", "ident", "user", "time", "zone", "request", "status", "bytes",
                                      "referer", "agent", *(["xff"] if xff else []))}
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        con = case.connect(Path(tmp) / "case.duckdb")
        t = time.perf_counter()
        con.execute(f"CREATE TABLE raw AS SELECT * FROM read_csv('{path}', delim=' ', quote='\"', escape='', "
                    f"header=false, columns={columns}, strict_mode=false, ignore_errors=true)")
        seconds = time.perf_counter() - t
        con.close()
        return seconds


def bench_duckdb_typed(path: Path, xff: bool = False) -> float:
    """The ceiling issue #14 names: DuckDB's parallel read_csv of the same file split into the typed columns
    http_requests gets from a combined line, inserted into that table of a fresh on-disk case (see the module's
    docstring for what it leaves out)."""
    columns = {c: "VARCHAR" for c in ("addr", "ident", "user", "time", "zone", "request", "status", "bytes",
                                      "referer", "agent", *(["xff"] if xff else []))}
    stamp = "time[2:] || ' ' || zone[:-2]"
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        con = case.connect(Path(tmp) / "case.duckdb")
        t = time.perf_counter()
        con.execute(f"""
            INSERT INTO http_requests (time, time_raw, remote_addr, remote_user, forwarded_for, request_raw, method,
                                       path, protocol, status, body_bytes, referer, user_agent)
            SELECT timezone('UTC', strptime({stamp}, '%d/%b/%Y:%H:%M:%S %z')), {stamp}, addr, nullif(user, '-'),
                   {"nullif(xff, '-')" if xff else "NULL"}, request, rq[1], rq[2], rq[3], TRY_CAST(status AS INTEGER),
                   TRY_CAST(nullif(bytes, '-') AS BIGINT), nullif(referer, '-'), nullif(agent, '-')
            FROM (SELECT *, string_split(request, ' ') AS rq
                  FROM read_csv('{path}', delim=' ', quote='"', escape='', header=false, columns={columns},
                                strict_mode=false, ignore_errors=true))""")
        seconds = time.perf_counter() - t
        (n,) = con.execute("SELECT count(*) FROM http_requests WHERE time IS NOT NULL AND status IS NOT NULL").fetchone()
        con.close()
        assert n > 0
        return seconds


def bench_read(path: Path) -> float:
    t = time.perf_counter()
    sum(b.num_rows for b in iter_line_batches(path))
    return time.perf_counter() - t


def bench_regex(path: Path) -> float:
    """What a reasonable person would write: one compiled regex in a loop, datetime.strptime, rows in a list."""
    t = time.perf_counter()
    rows, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = BASELINE.match(line.rstrip("\n"))
            if m is None:
                bad += 1
                continue
            addr, user, ts, request, status, size, referer, agent, xff = m.groups()
            rows.append((addr, user, datetime.strptime(ts, "%d/%b/%Y:%H:%M:%S %z"), request, int(status),
                         None if size == "-" else int(size), referer, agent, xff and xff[2:-1]))
            if len(rows) >= 100_000:                 # a batch would be written here; keep memory bounded
                rows.clear()
    assert bad == 0, f"{bad} lines the baseline regex did not match"
    return time.perf_counter() - t


def bench_goaccess(path: Path, xff: bool = False) -> float | None:
    exe = shutil.which("goaccess")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        t = time.perf_counter()
        subprocess.run([exe, str(path), *(GOACCESS_MAIN if xff else ["--log-format=COMBINED"]), "--no-progress",
                        "-o", str(Path(tmp) / "out.json")], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return time.perf_counter() - t


def cpu_seconds() -> float:
    """CPU seconds of this process's threads and its children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(run) -> tuple[float, float] | None:
    """(wall seconds, CPU seconds): CPU time is what a shared, busy machine distorts least. A contender with an
    untimed set-up returns both figures itself."""
    before = cpu_seconds()
    result = run()
    if result is None or isinstance(result, tuple):
        return result
    return result, cpu_seconds() - before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=1,
                    help="N interleaved rounds; each figure is the median of its N runs (a busy machine is noisy)")
    ap.add_argument("--quick", action="store_true",
                    help="only the on-disk ingest, the two read_csv ceilings and GoAccess (the ratios of issue #14)")
    ap.add_argument("--keep", action="store_true", help="keep the generated log in bench/data/")
    ap.add_argument("--xff", action="store_true",
                    help="nginx `main` format behind a load balancer (client in X-Forwarded-For) instead of combined")
    args = ap.parse_args(argv)
    DATA.mkdir(parents=True, exist_ok=True)
    log = DATA / f"access-{'main' if args.xff else 'combined'}-{args.lines}.log"
    if not log.exists():
        t = time.perf_counter()
        generate(log, args.lines, xff=args.xff)
        print(f"generated {args.lines:,} lines ({log.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - t:.1f}s")
    contenders = [
        ("read lines only (lines.py)", lambda: bench_read(log)),
        ("ingest -> on-disk case", lambda: bench_ingest(log, on_disk=True)),
        ("ingest -> in-memory case", lambda: bench_ingest(log, on_disk=False)),
        ("Python regex + strptime", lambda: bench_regex(log)),
        ("ceiling: DuckDB write only", lambda: bench_write_only(log)),
        ("old ceiling: read_csv, VARCHARs", lambda: bench_duckdb_csv(log, args.xff)),
        ("ceiling: read_csv, typed split", lambda: bench_duckdb_typed(log, args.xff)),
        ("GoAccess " + ("(main format)" if args.xff else "--log-format=COMBINED"),
         lambda: bench_goaccess(log, args.xff)),
    ]
    if args.quick:
        contenders = [c for c in contenders if c[0].startswith(("ingest -> on-disk", "old ceiling", "ceiling: read_csv",
                                                                "GoAccess"))]
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    runs: dict[str, list] = {name: [] for name, _ in contenders}
    for round_ in range(args.repeat):                # interleaved: each round runs every contender once
        for name, run in contenders:
            runs[name].append(timed(run))
        print(f"  round {round_ + 1}: load average {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, tuple[float, float] | None] = {
        name: None if r[0] is None else (median([w for w, _ in r]), median([c for _, c in r])) for name, r in runs.items()}
    for name in (n for n, r in results.items() if r is None):
        print(f"  {name}: skipped (goaccess not on PATH)")
    base_wall = (results.get("Python regex + strptime") or (None, None))[0]
    print(f"\n{'contender':32s} {'wall s':>7s} {'lines/s':>11s} {'vs regex':>9s} {'cpu s':>7s} {'lines/cpu-s':>12s}")
    for name, r in results.items():
        if r is not None:
            wall, cpu = r
            versus = f"{base_wall / wall:8.2f}x" if base_wall else f"{'-':>9s}"
            print(f"{name:32s} {wall:7.2f} {args.lines / wall:11,.0f} {versus} "
                  f"{cpu:7.2f} {args.lines / cpu:12,.0f}")
    print(f"of the on-disk ingest, closing the case (DuckDB's checkpoint) took {min(CHECKPOINT_SECONDS):.2f}s")
    ingest, ceiling = results["ingest -> on-disk case"], results.get("ceiling: DuckDB write only")
    if ceiling:
        print(f"target {TARGET:,} lines/s; on-disk ingest at {args.lines / ingest[0]:,.0f} is "
              f"{args.lines / ingest[0] / TARGET:.0%} of it; DuckDB writing the parsed rows alone, with no parse, "
              f"runs at {args.lines / ceiling[0]:,.0f} rows/s ({args.lines / ceiling[0] / TARGET:.0%} of the target)")
    typed, raw = results["ceiling: read_csv, typed split"], results["old ceiling: read_csv, VARCHARs"]
    print(f"on-disk ingest against DuckDB's read_csv + typed split (the ceiling of issue #14): {typed[0] / ingest[0]:.2f}x "
          f"its speed (wall), {typed[1] / ingest[1]:.2f}x (CPU); target {CEILING_TARGET}x")
    print(f"on-disk ingest against the old ceiling, read_csv into VARCHARs only: {raw[0] / ingest[0]:.2f}x its speed "
          f"(wall), {raw[1] / ingest[1]:.2f}x (CPU)")
    goaccess = results[next(k for k in results if k.startswith("GoAccess"))]
    if goaccess is not None:
        print(f"on-disk ingest against GoAccess: {goaccess[0] / ingest[0]:.2f}x its speed (wall)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not args.keep:
        log.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
