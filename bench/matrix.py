"""The randomized matrix: every draw is a scenario under a random deployment, investigated and checked against truth.

    python bench/matrix.py --draws 500 --seed 0 [--jobs 2] [--scenarios open_proxy ...] [--keep DIR] [--json FILE]

Prints the pass count, every failing draw (incident kind, sources, best source, deviation from the truth), one row
per draw (pass/fail and why), the failure rate per (scenario, sources present, keys or not, history
bucket) and along each dimension alone, how often each failure occurs, the worst draws and the time per draw. The
criteria are in forensics/simulate/matrix.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from forensics.simulate import matrix
from forensics.simulate.pool import add_draw_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_draw_arguments(parser, draws=60)
    parser.add_argument("--keep", type=Path, help="copy the logs of failing draws into this folder")
    parser.add_argument("--json", type=Path, help="write every draw's result as JSON lines here")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def progress(r: matrix.Result) -> None:
        print(f"  #{r.draw.index:<4} {r.draw.scenario:38} {'pass' if r.ok else 'FAIL'} "
              f"{r.seconds.get('total', 0):5.1f} s  {'; '.join(r.reasons)[:150]}", file=sys.stderr, flush=True)

    results = matrix.run(args.draws, args.seed, tuple(args.scenarios), args.jobs, args.keep, progress)
    failed = sum(not r.ok for r in results)
    print(f"# Randomized matrix: {args.draws} draws, seed {args.seed}: {len(results) - failed} pass, {failed} fail "
          f"({failed / len(results):.0%}) in {time.perf_counter() - started:.0f} s\n")
    print(matrix.timing_summary(results) + "\n")
    print("## Failure rate per group\n\n" + matrix.group_table(results) + "\n")
    print("## Failure rate per dimension\n\n" + matrix.marginal_table(results) + "\n")
    print("## Failures by kind\n\n" + matrix.reason_table(results) + "\n")
    print("## Failing draws\n\n" + matrix.failure_table(results) + "\n")
    print("## Cost measured, not judged (daily totals without a whole day of the attack's kind)\n\n"
          + matrix.undetermined_table(results) + "\n")
    print("## Worst draws\n\n" + matrix.draw_table(matrix.worst(results)) + "\n")
    print("## Every draw\n\n" + matrix.draw_table(results))
    if args.json:
        with args.json.open("w") as f:
            for r in results:
                f.write(json.dumps({"index": r.draw.index, "scenario": r.draw.scenario, "seed": r.draw.seed,
                                    "deployment": r.draw.deployment.describe(), "ok": r.ok, "reasons": r.reasons,
                                    "found": r.found, "metrics": r.metrics, "seconds": r.seconds}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
