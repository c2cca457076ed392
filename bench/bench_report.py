"""Time `report` on sample_logs/ (or any INPUT): ingest per format, then the investigation, against the 10 s target.

    python bench/bench_report.py [INPUT ...] [--repeat N]

Each run starts from an empty case in a temporary folder, so nothing is skipped as already loaded.
"""
from __future__ import annotations

import argparse
import statistics
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
        pm = postmortem.prepare(case, inv, result, run_detector=False)
        model = report.build_model(inv, result, pm, case.steps)
        t3 = time.perf_counter()
        from forensics.detect.summary import summarize

        model["detector"] = report.detector_section(summarize(case, result))
        t4 = time.perf_counter()
        report.write(Path(tmp) / "out", model)
        t5 = time.perf_counter()
        case.close()
    per_format: dict[str, float] = defaultdict(float)
    for r in reports:
        per_format[f"  ingest {r.format}"] += r.seconds
    return {"ingest": t1 - t0, **per_format, "investigate": t2 - t1, "figures and tables": t3 - t2,
            "detector (train + score)": t4 - t3, "render html + md": t5 - t4, "report total": t5 - t0,
            "records": sum(r.records for r in reports)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("inputs", nargs="*", type=Path, default=[ROOT / "sample_logs"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.inputs) for _ in range(args.repeat)]
    print(f"report on {', '.join(map(str, args.inputs))}: {int(runs[0]['records']):,} records, "
          f"median of {args.repeat} runs")
    print(f"{'phase':<36}{'seconds':>10}{'share':>8}")
    total = statistics.median(r["report total"] for r in runs)
    for key in runs[0]:
        if key == "records":
            continue
        med = statistics.median(r[key] for r in runs)
        print(f"{key:<36}{med:>10.2f}{med / total:>8.0%}")
    print(f"{'target (issue: report < 10 s)':<36}{TARGET_SECONDS:>10.2f}   ratio total/target = {total / TARGET_SECONDS:.2f}")


if __name__ == "__main__":
    main()
