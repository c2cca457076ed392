"""Benchmark: how soon `report` on raw logs tells the analyst about the incident (issue #17: within 5 s on sample_logs).

    python bench/bench_first_look.py [INPUT ...] [--runs 3]

Runs `python -m forensics report INPUT --out TMP` as the analyst would (a fresh process, a fresh output folder) and
times, from the moment the process is started, the stderr lines: the first look's line (forensics.first_look), the
full search's "incident:" line, and the end of the run. Prints one row per run and the load average beside it: on a
shared machine the numbers move with the load, so read them with it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_run(inputs: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "forensics", "report", *inputs, "--out", f"{tmp}/out"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen: dict = {}
        for line in proc.stderr:
            now = time.monotonic() - t0
            if "first look (" in line or "first look:" in line:
                seen.setdefault("first_look_s", now)
                seen.setdefault("first_look", line.split("] ", 1)[-1].strip())
            elif "] incident:" in line:
                seen.setdefault("full_search_s", now)
            elif "first look confirmed" in line or "first look corrected" in line or "first look had" in line:
                seen["verdict"] = line.split("] ", 1)[-1].strip()
        proc.wait()
        seen["total_s"] = time.monotonic() - t0
        seen["exit"] = proc.returncode
        return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", default=["sample_logs/"])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for n in range(1, args.runs + 1):
        load = os.getloadavg()[0]
        r = one_run(args.inputs)
        print(f"run {n}: first look {r.get('first_look_s', float('nan')):5.1f} s, full search's incident line "
              f"{r.get('full_search_s', float('nan')):5.1f} s, whole run {r['total_s']:5.1f} s (exit {r['exit']}, "
              f"load average {load:.2f})")
    print(f"first look: {r.get('first_look')}")
    print(f"then: {r.get('verdict')}")


if __name__ == "__main__":
    main()
