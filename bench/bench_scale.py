"""Benchmark (issue #19): `report` end to end on a busy gateway at growing sizes, time per phase and peak memory.

    python bench/bench_scale.py [--millions 1 4 10] [--no-detector] [--keep]

For each size N (millions of nginx lines) it writes, under bench/data/scale_N/ (gitignored), what a busy gateway
logs with no attack: N M nginx `combined` lines at ~50 lines/s (so 1 M lines are 5.6 hours, 10 M are 2.3 days), one
line in ten a `POST /v1/chat/completions` that LiteLLM also logged as a StandardLoggingPayload line
(callback NDJSON, N/10 M lines), the rest the usual mix of other paths and statuses. The files are written by DuckDB
(a few seconds per 10 M lines), the same bytes for the same N.

Then it runs `python -m forensics report DIR --out OUT` in a child process and prints, per size: the wall time, the
child's peak RSS (wait4), the seconds of each phase and of the slowest named SQL steps as `report --timings` prints
them, and the growth against the smallest size, so that one run shows how time and memory grow.
Targets (#19): 10 M + 1 M in < 60 s with peak RSS < 2 GB, and RSS at 10 M no more than 1.3x RSS at 1 M.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
LINES_PER_SECOND = 50
START = "2026-11-01 00:00:00"
TIMED = re.compile(r"^\s+([0-9.]+)  (.*)$")

# the mix of a busy gateway's other lines: (path, method, status) by line number modulo 9 (every 10th line is a
# completion, written apart)
NGINX_SQL = f"""
COPY (
  WITH l AS (
    SELECT i,
           TIMESTAMP '{START}' + to_microseconds((i * 1000000 // {LINES_PER_SECOND})::BIGINT) AS ts,
           CASE WHEN i % 10 = 0 THEN '198.51.100.' || (1 + (i // 10) % 40)
                ELSE '203.0.113.' || (1 + (i * 7919) % 200) END AS ip
    FROM range(?) t(i))
  SELECT printf('%s - - [%s] "%s %s HTTP/1.1" %d %d "-" "%s"', ip, strftime(ts, '%d/%b/%Y:%H:%M:%S +0000'),
                CASE WHEN i % 10 = 0 THEN 'POST' ELSE ['GET', 'GET', 'GET', 'POST', 'GET', 'GET', 'HEAD', 'GET',
                                                       'GET'][1 + i % 9] END,
                CASE WHEN i % 10 = 0 THEN '/v1/chat/completions'
                     ELSE ['/', '/health', '/v1/models', '/v1/embeddings', '/static/app.js', '/favicon.ico', '/',
                           '/robots.txt', '/.env'][1 + i % 9] END,
                CASE WHEN i % 10 = 0 THEN (CASE WHEN i % 997 = 0 THEN 429 ELSE 200 END)
                     ELSE [200, 200, 200, 200, 304, 404, 200, 404, 404][1 + i % 9] END,
                CASE WHEN i % 10 = 0 THEN 900 + i % 1700 ELSE 30 + i % 5000 END,
                CASE WHEN i % 10 = 0 THEN 'OpenAI/Python 1.51.0'
                     ELSE ['Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0', 'kube-probe/1.29', 'curl/8.5.0',
                           'python-requests/2.32.3', 'Go-http-client/1.1'][1 + i % 5] END)
  FROM l ORDER BY i
) TO '{{path}}' (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\t')
"""

# one StandardLoggingPayload per completion line (field names and types as in ../shared/reference/litellm.md)
PAYLOAD_SQL = f"""
COPY (
  WITH r AS (
    SELECT j, i,
           epoch(TIMESTAMP '{START}' + to_microseconds((i * 1000000 // {LINES_PER_SECOND})::BIGINT)) AS t0,
           '198.51.100.' || (1 + j % 40) AS ip, 200 + (i * 31) % 1500 AS prompt, 20 + (i * 17) % 600 AS completion,
           i % 997 = 0 AS failed, j % 12 AS k
    FROM (SELECT j, j * 10 AS i FROM range(?) t(j)))
  SELECT printf('chatcmpl-%012d', j) AS id,
         printf('%08x-5c1e-4b6a-9d2f-%012x', j, j) AS litellm_call_id,
         'acompletion' AS call_type, false AS stream,
         CASE WHEN failed THEN 'failure' ELSE 'success' END AS status,
         'openai' AS custom_llm_provider,
         t0 AS startTime, t0 + 1.2 + (j % 40) / 10 AS endTime, t0 + 0.4 AS completionStartTime,
         ['gpt-4o-mini', 'gpt-4o', 'gpt-4o-mini', 'text-embedding-3-small'][1 + j % 4] AS model,
         ['gpt-4o-mini', 'gpt-4o', 'gpt-4o-mini', 'text-embedding-3-small'][1 + j % 4] AS model_group,
         'https://api.openai.com/v1' AS api_base,
         CASE WHEN failed THEN 0 ELSE round((prompt * 0.15 + completion * 0.6) / 1e6, 9) END AS response_cost,
         CASE WHEN failed THEN 0 ELSE prompt + completion END AS total_tokens,
         CASE WHEN failed THEN 0 ELSE prompt END AS prompt_tokens,
         CASE WHEN failed THEN 0 ELSE completion END AS completion_tokens,
         []::VARCHAR[] AS request_tags, printf('cust-%d', j % 97) AS end_user, ip AS requester_ip_address,
         {{'user_api_key_hash': sha256('key-' || k), 'user_api_key_alias': 'app-' || k,
           'user_api_key_team_id': 'team-' || (k % 3), 'user_api_key_user_id': NULL::VARCHAR,
           'requester_ip_address': ip, 'user_agent': 'OpenAI/Python 1.51.0',
           'usage_object': {{'completion_tokens': CASE WHEN failed THEN 0 ELSE completion END,
                             'prompt_tokens': CASE WHEN failed THEN 0 ELSE prompt END,
                             'total_tokens': CASE WHEN failed THEN 0 ELSE prompt + completion END}}}} AS metadata,
         [{{'role': 'user', 'content': 'Summarise the ticket.'}}] AS messages,
         {{'max_tokens': CASE WHEN j % 3 = 0 THEN 1024 END, 'temperature': 0.2}} AS model_parameters,
         {{'model_id': '6bace4d6db01', 'api_base': 'https://api.openai.com/v1'}} AS hidden_params,
         CASE WHEN failed THEN 'litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached'
         END AS error_str
  FROM r ORDER BY j
) TO '{{path}}' (FORMAT json)
"""


def generate(millions: float) -> Path:
    """bench/data/scale_N/ with nginx/access.log and litellm/callbacks.ndjson; reused when already complete."""
    lines = int(millions * 1_000_000)
    folder = DATA / f"scale_{millions:g}"
    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "nginx").mkdir(parents=True)
    (folder / "litellm").mkdir()
    # in a child process: DuckDB's writing grows this process to a few GB, and a report started from it later
    # would count that (a forked child's peak RSS starts at its parent's: 2.52 GB instead of 1.14 at 10 M)
    subprocess.run([sys.executable, __file__, "--write", str(folder), str(lines)], check=True)
    done.write_text(f"{lines}\n")
    return folder


def write(folder: Path, lines: int) -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(NGINX_SQL.replace("{path}", str(folder / "nginx" / "access.log")), [lines])
    con.execute(PAYLOAD_SQL.replace("{path}", str(folder / "litellm" / "callbacks.ndjson")), [lines // 10])
    con.close()


def run_report(folder: Path, detector: bool) -> dict:
    """`report --timings` on the folder in a child process: wall, peak RSS (wait4), the seconds of each phase and
    of the slowest named SQL steps, as the report itself measured them."""
    with tempfile.TemporaryDirectory(dir=DATA) as out:
        args = [sys.executable, "-m", "forensics", "report", str(folder), "--out", out, "--timings"]
        if not detector:
            args.append("--no-detector")
        started = time.perf_counter()
        child = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        err = child.stderr.read()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    phases: dict[str, float] = {}
    steps: dict[str, float] = {}
    into = None
    for line in err.splitlines():
        if line.startswith("timings: "):
            into = phases if "per phase" in line else steps
        elif into is not None and (m := TIMED.match(line)):
            name = "ingest: " + m[2].split(" ", 1)[0] if m[2].startswith("loading ") else m[2]
            into[name] = into.get(name, 0.0) + float(m[1])      # the files of a size: one row, "ingest: loading"
    return {"exit": code, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_gb": usage.ru_maxrss * 1024 / 1e9,
            "phases": phases, "steps": steps,
            "error": "" if code in (0, 1) else err.strip().splitlines()[-1:]}


def main() -> None:
    if sys.argv[1:2] == ["--write"]:
        return write(Path(sys.argv[2]), int(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--millions", type=float, nargs="+", default=[1, 4, 10], help="nginx lines, in millions")
    ap.add_argument("--no-detector", action="store_true", help="report --no-detector")
    ap.add_argument("--keep", action="store_true", help="keep the generated logs for the next run")
    args = ap.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.millions:
        t = time.perf_counter()
        folder = generate(n)
        print(f"{n:g} M nginx lines + {n / 10:g} M payloads: generated in {time.perf_counter() - t:.1f} s "
              f"({sum(p.stat().st_size for p in folder.rglob('*') if p.is_file()) / 1e9:.2f} GB)", flush=True)
        load_before = os.getloadavg()[0]
        r = run_report(folder, not args.no_detector)
        r["load"] = (load_before, os.getloadavg()[0])
        results.append((n, r))
        print(f"  report: exit {r['exit']}, {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, peak RSS {r['rss_gb']:.2f} GB, "
              f"load average {r['load'][0]:.1f} before, {r['load'][1]:.1f} after {r['error'] or ''}",
              flush=True)
        if not args.keep:
            shutil.rmtree(folder)
    base_n, base = results[0]
    print("\n| nginx lines + payloads | wall s | CPU s | peak RSS GB | wall / smallest | RSS / smallest |")
    print("|---|---|---|---|---|---|")
    for n, r in results:
        print(f"| {n:g} M + {n / 10:g} M | {r['wall']:.1f} | {r['cpu']:.1f} | {r['rss_gb']:.2f} | {r['wall'] / base['wall']:.2f}x "
              f"| {r['rss_gb'] / base['rss_gb']:.2f}x |")
    names = list(dict.fromkeys(k for _, r in results for k in r["phases"]))
    print("\n| phase | " + " | ".join(f"{n:g} M" for n, _ in results) + " |")
    print("|---|" + "---|" * len(results))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r['phases'].get(name, 0):.1f}" for _, r in results) + " |")
    names = list(dict.fromkeys(k for _, r in results for k in sorted(r["steps"], key=lambda k: -r["steps"][k])))
    print("\n| slowest named SQL steps | " + " | ".join(f"{n:g} M" for n, _ in results) + " |")
    print("|---|" + "---|" * len(results))
    for name in names[:15]:
        print(f"| {name} | " + " | ".join(f"{r['steps'].get(name, 0):.1f}" for _, r in results) + " |")
    print(f"\ntargets (#19): 10 M + 1 M under 60 s and 2 GB; RSS at the largest size at most 1.3x the smallest "
          f"(here {results[-1][1]['rss_gb'] / base['rss_gb']:.2f}x)")


if __name__ == "__main__":
    main()
