"""Accuracy of the investigation on every simulator scenario: findings against truth.json, one row per seed.

    python bench/accuracy.py [--seeds 1 2 3] [--scenarios open_proxy ...]

Columns: what was found (verdict/kind), window errors in seconds, attacker-address precision and recall, and the
cost found against the truth's (attributed cost; for spend outside the proxy, the provider-side cost).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from forensics.api import Case
from forensics.outputs import findings as findings_out
from forensics.simulate import SCENARIOS, simulate


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def evaluate(scenario: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        truth = simulate(scenario, Path(tmp) / "logs", seed=seed)
        with Case.open(Path(tmp) / "case.duckdb") as case:
            case.ingest([Path(tmp) / "logs"])
            t0 = time.perf_counter()
            found = findings_out.build(case.investigate())
            seconds = time.perf_counter() - t0
    row = {"scenario": scenario, "seed": seed, "seconds": seconds,
           "found": ", ".join(f"{i['verdict']}/{i['kind']}" for i in found["incidents"]) or "none"}
    truths = [t for t in truth.get("incidents", []) if t.get("verdict") == "attack"]
    if not truths:
        row["expected"] = "no attack"
        row["ok"] = all(i["verdict"] != "attack" for i in found["incidents"])
        return row
    t = truths[0]
    attacks = [i for i in found["incidents"] if i["verdict"] == "attack"]
    if not attacks:
        row.update(expected=t["kind"], ok=False)
        return row
    inc = attacks[0]
    ips, true_ips = {i["ip"] for i in inc["ips"]}, set(t.get("attacker_ips") or [])
    hits = len(ips & true_ips)
    cost, true_cost = Decimal(str(inc["cost_usd"])), Decimal(t["cost_usd"])
    row.update(
        expected=t["kind"], start_err=(_t(inc["start"]) - _t(t["start"])).total_seconds(),
        end_err=(_t(inc["end"]) - _t(t["end"])).total_seconds(),
        precision=hits / len(ips) if ips else (1.0 if not true_ips else 0.0),
        recall=hits / len(true_ips) if true_ips else 1.0,
        cost=cost, true_cost=true_cost, cost_err_pct=float((cost - true_cost) / true_cost * 100),
    )
    row["ok"] = (len(attacks) == 1 and abs(row["start_err"]) <= 60 and abs(row["end_err"]) <= 60
                 and row["precision"] >= 0.95 and row["recall"] >= 0.95 and abs(row["cost_err_pct"]) <= 0.5)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    args = parser.parse_args()
    print("| scenario | seed | found | start err s | end err s | IP precision | IP recall | cost found | cost truth "
          "| cost err % | ok |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for scenario in args.scenarios:
        for seed in args.seeds:
            r = evaluate(scenario, seed)
            f = (lambda k, fmt: format(r[k], fmt) if k in r else "–")
            print(f"| {scenario} | {seed} | {r['found']} | {f('start_err', '.1f')} | {f('end_err', '.1f')} | "
                  f"{f('precision', '.3f')} | {f('recall', '.3f')} | {f('cost', '.2f')} | {f('true_cost', '.2f')} | "
                  f"{f('cost_err_pct', '.3f')} | {'yes' if r['ok'] else 'NO'} |")


if __name__ == "__main__":
    main()
