"""The anomaly detector over the randomized simulator matrix: AUC, recall at the calibrated threshold, normal
requests flagged and false alerts per held-back quiet day, per draw, with the worst draws and per-feature drift.

    python bench/detect_matrix.py --draws 500 --seed 0 [--jobs 2] [--scenarios open_proxy ...] [--max-history-h H]

Draws are the matrix's (forensics/simulate/matrix.py), kept when the deployment holds LiteLLM requests (the
detector scores those). The thresholds are the issue's (#13): AUC >= 0.97 and recall >= 0.9 on every draw with an
attack, normal requests flagged <= 1 % in every draw, median <= 2 false alerts per held-back quiet day.
"""
from __future__ import annotations

import argparse
import sys
import time

from forensics.detect import matrix
from forensics.simulate.pool import add_draw_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_draw_arguments(parser, draws=20)
    parser.add_argument("--max-history-h", type=float, help="cap each draw's history (hours)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def progress(r: matrix.DrawScore) -> None:
        m = r.metrics
        print(f"  #{r.draw.index:<4} {r.draw.scenario:38} {r.seconds:5.1f} s  auc {m.get('auc', float('nan')):.3f} "
              f"recall {m.get('recall', float('nan')):.3f} normal {m.get('normal_flagged_share', 0):.2%} "
              f"held-out/day {m.get('heldout_alerts_per_day', float('nan')):.2f}  {'; '.join(r.failures)} {r.note}",
              file=sys.stderr, flush=True)

    cap = int(args.max_history_h * 3600) if args.max_history_h else None
    results = matrix.run(args.draws, args.seed, tuple(args.scenarios), args.jobs, cap, progress)
    print(f"# Detector matrix: {args.draws} draws, seed {args.seed}, {time.perf_counter() - started:.0f} s\n")
    print(matrix.summary(results) + "\n")
    print("## Worst draws\n\n" + matrix.draw_table(matrix.worst(results)) + "\n")
    print("## Drift: held-out normal requests outside the training range, per feature\n\n"
          + matrix.drift_table(results) + "\n")
    print("## Every draw\n\n" + matrix.draw_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
