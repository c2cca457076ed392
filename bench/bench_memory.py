"""Benchmark: peak memory of `ingest` on a log far larger than a record batch (the contract: bounded memory).

    python bench/bench_memory.py [--gb 5] [--kind nginx|payload|payload_array|both] [--keep]

Writes the log under bench/data/ (gitignored): nginx `main`-format lines, LiteLLM callback payload NDJSON
(StandardLoggingPayload, ~1.6 KB a line), or the same payloads as one JSON array (`payload_array`, loaded as
litellm.payload_json_array); each a block of varied records repeated with a new day / new request ids so that no
two records are the same, written block by block. Then runs `python -m forensics ingest FILE --case ...` in a
subprocess and prints the file size, the child's peak RSS (getrusage of children), wall time and lines (records)/s.
Target: peak RSS < 2 GB at 5 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
BLOCK_LINES = 100_000
AGENTS = ["OpenAI/Python 1.51.0", "python-requests/2.32.3", "curl/8.5.0", "Go-http-client/1.1",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"]
PATHS = ["/v1/chat/completions", "/v1/embeddings", "/v1/models", "/health", "/.env", "/v1/models?limit=20"]


def nginx_block(rng: np.random.Generator) -> bytes:
    """BLOCK_LINES nginx `main` lines of one day; the day is the placeholder @@ (two digits)."""
    secs = np.sort(rng.integers(0, 86400, BLOCK_LINES))
    ips = rng.integers(1, 255, (BLOCK_LINES, 2))
    out = []
    for i in range(BLOCK_LINES):
        s = int(secs[i])
        out.append(
            f'10.0.0.{i % 4 + 2} - - [@@/Nov/2026:{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d} +0000] '
            f'"POST {PATHS[i % len(PATHS)]} HTTP/1.1" {(200, 200, 200, 401, 429)[i % 5]} {int(rng.integers(0, 9000))} '
            f'"-" "{AGENTS[i % len(AGENTS)]}" "198.51.{ips[i, 0]}.{ips[i, 1]}, 10.0.0.1"\n')
    return "".join(out).encode()


def payload_block(rng: np.random.Generator) -> bytes:
    """BLOCK_LINES payload lines; request ids end in the placeholder @@@@@@ (the block's number)."""
    out = []
    t0 = 1794787200.0
    for i in range(BLOCK_LINES):
        start = t0 + i * 0.8
        d = {
            "id": f"chatcmpl-{i:07d}-@@@@@@", "litellm_call_id": f"{i:08x}-0000-4000-8000-@@@@@@000000",
            "call_type": "acompletion", "stream": False, "status": "success", "custom_llm_provider": "openai",
            "startTime": start, "endTime": start + 1.5, "completionStartTime": start + 0.4,
            "model": "gpt-4o", "model_group": "gpt-4o", "api_base": "https://api.openai.com/v1",
            "response_cost": 0.000225, "total_tokens": 30 + i % 500, "prompt_tokens": 10 + i % 300,
            "completion_tokens": 20 + i % 200, "request_tags": [], "end_user": f"cust-{i % 97}",
            "requester_ip_address": f"198.51.{i % 250}.{i % 199}",
            "metadata": {"user_api_key_hash": f"{i % 20:064x}", "user_api_key_alias": f"key-{i % 20}",
                         "user_api_key_team_id": "team-a", "requester_ip_address": f"198.51.{i % 250}.{i % 199}",
                         "user_agent": AGENTS[i % len(AGENTS)], "requester_metadata": {},
                         "usage_object": {"completion_tokens": 20, "prompt_tokens": 10, "total_tokens": 30}},
            "messages": [{"role": "user", "content": "Summarise this text please. " * 20}],
            "response": {"id": f"chatcmpl-{i}", "object": "chat.completion",
                         "choices": [{"finish_reason": "stop", "index": 0,
                                      "message": {"role": "assistant", "content": "A summary. " * 20}}]},
            "model_parameters": {"max_tokens": 1000, "temperature": 0.2},
            "hidden_params": {"model_id": "6bace4d6db01", "cache_key": None, "api_base": None},
            "error_str": None,
        }
        out.append(json.dumps(d) + "\n")
    return "".join(out).encode()


def generate(kind: str, gb: float) -> tuple[Path, int]:
    DATA.mkdir(parents=True, exist_ok=True)
    suffix = {"nginx": "log", "payload": "ndjson", "payload_array": "json"}[kind]
    path = DATA / f"memory_{kind}_{gb:g}gb.{suffix}"
    target = int(gb * 1e9)
    block = (nginx_block if kind == "nginx" else payload_block)(np.random.default_rng(7))
    per_block = block.count(b"\n")
    if kind == "payload_array":     # the same records as one JSON array: "[\n" rec ",\n" rec ... "\n]\n"
        block = block.rstrip(b"\n").replace(b"\n", b",\n")
    reps = max(1, round(target / len(block)))
    size = reps * len(block) + (2 + 2 * (reps - 1) + 3 if kind == "payload_array" else 0)
    if path.exists() and path.stat().st_size == size:
        return path, reps * per_block
    with open(path, "wb") as f:     # block by block: the generator holds one block, whatever the size
        if kind == "payload_array":
            f.write(b"[\n")
        for r in range(reps):
            if kind == "nginx":
                f.write(block.replace(b"@@/Nov", b"%02d/Nov" % (r % 28 + 1)))
            else:
                if kind == "payload_array" and r:
                    f.write(b",\n")
                f.write(block.replace(b"@@@@@@", b"%06d" % r))
        if kind == "payload_array":
            f.write(b"\n]\n")
    return path, reps * per_block


def run(path: Path, lines: int) -> dict:
    case = DATA / f"{path.stem}.duckdb"
    for p in (case, Path(f"{case}.wal")):
        p.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "forensics", "ingest", str(path), "--case", str(case), "--json"],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss     # Linux: KiB, the largest child so far
    report = json.loads(proc.stdout)[0] if proc.returncode == 0 else {"error": proc.stderr.strip()}
    if os.environ.get("BENCH_KEEP_CASE") is None:
        case.unlink(missing_ok=True)
    return {"file": path.name, "size_gb": round(path.stat().st_size / 1e9, 3), "lines": lines,
            "format": report.get("format"), "loaded": report.get("loaded"), "quarantined": report.get("quarantined"),
            "exit": proc.returncode, "peak_rss_gb": round(peak_kib * 1024 / 1e9, 3), "wall_s": round(wall, 1),
            "lines_per_s": round(lines / wall), **({"error": report["error"]} if "error" in report else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=5.0, help="size of each generated log in GB (default 5)")
    ap.add_argument("--kind", choices=["nginx", "payload", "payload_array", "both"], default="both",
                    help="both: nginx and payload")
    ap.add_argument("--keep", action="store_true", help="keep the generated logs for the next run")
    args = ap.parse_args()
    for kind in (["nginx", "payload"] if args.kind == "both" else [args.kind]):
        t = time.perf_counter()
        path, lines = generate(kind, args.gb)
        print(f"generated {path.name}: {path.stat().st_size / 1e9:.2f} GB, {lines:,} lines "
              f"in {time.perf_counter() - t:.0f} s", flush=True)
        # each kind in its own process, so that ru_maxrss is this ingest's peak and not the largest so far
        out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                              f"import bench_memory as b, json; from pathlib import Path; "
                              f"print(json.dumps(b.run(Path({str(path)!r}), {lines})))"],
                             capture_output=True, text=True, cwd=ROOT)
        print(out.stdout.strip() or out.stderr.strip(), flush=True)
        if not args.keep:
            path.unlink()


if __name__ == "__main__":
    main()
