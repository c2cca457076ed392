"""Train the isolation forest on 1 M requests and score 1 M requests (issue target: training < 30 s on 2 cores).

    python bench/bench_detect.py [--rows 1000000]

The rows are sample_logs/' feature rows resampled with jitter (features are what the model sees; building them is
timed separately on the sample case). Prints seconds and rows/s per phase.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from forensics.api import Case
from forensics.detect import model
from forensics.detect.features import FEATURES, build_features
from forensics.detect.run import training_plan

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with Case.open(Path(tmp) / "case.duckdb") as case:
            case.ingest([ROOT / "sample_logs"])
            t0 = time.perf_counter()
            plan = training_plan(case)
            t_plan = time.perf_counter() - t0
            t0 = time.perf_counter()
            sample = build_features(case, plan.train, plan.excluded)
            t_features = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    big = sample.iloc[rng.integers(0, len(sample), args.rows)].reset_index(drop=True)
    for c in FEATURES:
        big[c] = big[c].astype("float64") * rng.uniform(0.9, 1.1, args.rows)
    start = datetime(2026, 1, 1)
    big["start_time"] = pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.integers(0, 30 * 86400, args.rows)), "s")
    t0 = time.perf_counter()
    det = model.train(big, [(start, start + timedelta(days=30))])
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = model.score_frame(det, big)
    t_score = time.perf_counter() - t0
    print(f"training plan on sample_logs (incident search, blocks): {t_plan:.2f} s")
    print(f"features on sample_logs ({len(sample):,} requests): {t_features:.2f} s "
          f"({len(sample) / t_features:,.0f} requests/s)")
    print(f"train on {args.rows:,} requests: {t_train:.2f} s (target < 30 s: ratio {t_train / 30:.2f})")
    print(f"score {args.rows:,} requests (with explanations for {int(scores['flagged'].sum()):,} flagged): "
          f"{t_score:.2f} s ({args.rows / t_score:,.0f} requests/s)")


if __name__ == "__main__":
    main()
