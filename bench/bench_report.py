"""Time `report` on sample_logs/ (or any INPUT): ingest per format, then the investigation, against the 10 s target.

    python bench/bench_report.py [INPUT ...] [--repeat N] [--baseline CHECKOUT]

Each run starts from an empty case in a temporary folder, so nothing is skipped as already loaded. `--baseline`: the
same runs with the forensics of another checkout (an earlier commit: `git worktree add /tmp/base <rev>`), side by
side, with the ratio of each phase (this tree / baseline).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from forensics.analysis import postmortem
from forensics.api import Case
from forensics.outputs import findings, report

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 10.0


def one_run(inputs: list[Path]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        case = Case.open(Path(tmp) / "case.duckdb")
        t0 = time.perf_counter()
        reports = case.ingest(inputs)
        t1 = time.perf_counter()
        inv = case.investigate()
        result = findings.build(inv)
        t2 = time.perf_counter()
        pm = postmortem.prepare(case, inv, result)
        model = report.build_model(inv, result, pm, case.steps)
        t3 = time.perf_counter()
        report.write(Path(tmp) / "out", model)
        t4 = time.perf_counter()
        case.close()
    per_format: dict[str, float] = defaultdict(float)
    for r in reports:
        per_format[f"  ingest {r.format}"] += r.seconds
    return {"ingest": t1 - t0, **per_format, "investigate": t2 - t1,
            "postmortem, detector, figures, tables": t3 - t2, "render html + md": t4 - t3, "report total": t4 - t0,
            "records": sum(r.records for r in reports)}


def medians(inputs: list[Path], repeat: int) -> dict[str, float]:
    runs = [one_run(inputs) for _ in range(repeat)]
    return {key: statistics.median(r.get(key, 0.0) for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("inputs", nargs="*", type=Path, default=[ROOT / "sample_logs"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout of another commit, run the same way beside this one")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)    # one child run's medians
    args = parser.parse_args()
    here = medians(args.inputs, args.repeat)
    if args.json:
        print(json.dumps(here))
        return
    base = None
    if args.baseline is not None:
        env = os.environ | {"PYTHONPATH": str(args.baseline.resolve())}
        out = subprocess.run([sys.executable, __file__, *map(str, args.inputs), "--repeat", str(args.repeat), "--json"],
                             env=env, capture_output=True, text=True, check=True, cwd=args.baseline)
        base = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"report on {', '.join(map(str, args.inputs))}: {int(here['records']):,} records, "
          f"median of {args.repeat} runs" + (f", beside the baseline {args.baseline}" if base else ""))
    print(f"{'phase':<40}{'seconds':>10}{'share':>8}" + (f"{'baseline':>10}{'ratio':>8}" if base else ""))
    total = here["report total"]
    for key, med in here.items():
        if key == "records":
            continue
        line = f"{key:<40}{med:>10.2f}{med / total:>8.0%}"
        if base:
            b = base.get(key)
            line += f"{b:>10.2f}{med / b:>8.2f}" if b else f"{'-':>10}{'-':>8}"
        print(line)
    print(f"{'target (issue: report < 10 s)':<40}{TARGET_SECONDS:>10.2f}   "
          f"ratio total/target = {total / TARGET_SECONDS:.2f}")


if __name__ == "__main__":
    main()
