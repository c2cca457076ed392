"""The randomized matrix: draw (scenario, seed, deployment), simulate it, investigate it, check the findings.

One `Result` a draw, with the criteria of issue #12 (item 4) checked against truth.json:
- an attack is found as an `attack` incident whose start and end lie within 60 s of the truth's window (120 s when
  nginx is the best source that sees it); when only provider data sees it, as an `attack` or `suspicious` incident
  (provider data alone cannot tell a planned batch from abuse) within one usage bucket of the truth's window at
  bucket resolution;
- its attacker addresses with precision and recall >= 0.95 (0.9 from nginx alone), against the addresses the
  present sources can show at all (a combined-format log behind a balancer shows none);
- its cost within 0.5 % (10 % when only provider data sees it; no cost check from nginx alone);
- no other `attack` incident: a benign batch is never an attack, a baseline-only draw has none.
The truth window is what the present sources record of the incident (`seen_by`): callback payloads hold no 401s,
provider data only billed calls.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import numpy as np

from forensics.simulate.deployment import Deployment, draw_deployment, history_bucket
from forensics.simulate.scenarios import SCENARIOS

WINDOW_TOLERANCE_S = {"litellm": 60, "nginx": 120}
BUCKET_S = {"1m": 60, "1h": 3600, "1d": 86400}
IP_THRESHOLD = {"litellm": 0.95, "nginx": 0.9}
COST_TOLERANCE = {"litellm": Decimal("0.005"), "provider": Decimal("0.10")}


@dataclass(frozen=True)
class Draw:
    index: int
    scenario: str
    seed: int
    deployment: Deployment

    @property
    def group(self) -> tuple[str, str, str, str]:
        """(scenario, sources present, keys or not, history bucket): the matrix's failure-rate groups."""
        d = self.deployment
        return (self.scenario, "+".join(d.sources), "keys" if d.keys else "keyless", history_bucket(d.history_s))


@dataclass
class Result:
    draw: Draw
    reasons: list[str] = field(default_factory=list)
    found: str = ""
    metrics: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def severity(self) -> tuple:
        """For 'the worst draws': errors first, then more failed criteria, then the largest window error."""
        return (self.error is not None, len(self.reasons),
                max(abs(self.metrics.get("start_err_s", 0)), abs(self.metrics.get("end_err_s", 0))))


def draws(n: int, seed: int = 0, scenarios: tuple[str, ...] = SCENARIOS) -> list[Draw]:
    """n draws, the same for the same seed: a scenario, a simulation seed and that pair's deployment each."""
    rng = np.random.default_rng([seed, 0x6D617478])
    out = []
    for i in range(n):
        scenario = scenarios[int(rng.integers(0, len(scenarios)))]
        sim_seed = int(rng.integers(1, 2**31 - 1))
        out.append(Draw(i, scenario, sim_seed, draw_deployment(sim_seed, scenario)))
    return out


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _basis(seen: dict, order: tuple[str, ...]) -> str | None:
    return next((s for s in order if s in seen), None)


def _overlap(inc: dict, start: datetime, end: datetime, slack_s: float) -> float:
    a, b = _t(inc["start"]), _t(inc["end"])
    return min(b, end).timestamp() + slack_s - max(a, start).timestamp()


def check_incident(t: dict, incidents: list[dict], used: set[int]) -> tuple[list[str], dict]:
    """One true attack against the found incidents (attacks; also suspicious ones when only provider data sees it);
    marks the one it matched in `used`."""
    seen = {s: v for s, v in t.get("seen_by", {}).items() if v.get("separable", True)}
    basis = _basis(seen, ("litellm", "nginx", "provider"))
    if basis is None:
        if t.get("seen_by"):          # held in the totals, set apart by nothing: only no false all-clear is asked
            start = min(_t(s["start"]) for s in t["seen_by"].values())
            end = max(_t(s["end"]) for s in t["seen_by"].values())
            used.update(i for i, a in enumerate(incidents) if _overlap(a, start, end, 86400) >= 0)
            return [], {"basis": "-"}
        return [f"{t['kind']}: no present source sees it (simulator: draw should not exist)"], {}
    tol = WINDOW_TOLERANCE_S.get(basis) or BUCKET_S[seen["provider"]["bucket"]]
    start = min(_t(s["start"]) for s in seen.values())
    end = max(_t(s["end"]) for s in seen.values())
    verdicts = ("attack", "suspicious") if basis == "provider" else ("attack",)
    if basis == "provider":       # the truth at the export's resolution: the buckets it touches
        start = datetime.fromtimestamp(start.timestamp() // tol * tol, start.tzinfo)
        end = datetime.fromtimestamp(-(-end.timestamp() // tol) * tol, end.tzinfo)
    candidates = [(i, _overlap(a, start, end, tol)) for i, a in enumerate(incidents)
                  if i not in used and a["verdict"] in verdicts]
    candidates = [c for c in candidates if c[1] >= 0]
    metrics: dict = {"basis": basis, "tolerance_s": tol}
    if not candidates:
        return [f"attack not found ({basis} sees {t['kind']} {t['start'][:16]}..{t['end'][11:16]})"], metrics
    # the attack first, then the most overlap, then the tightest window (a day-long spike of another key covers the
    # attack's minutes as fully as the minute-by-minute incident that is the attack)
    i, _ = max(candidates, key=lambda c: (incidents[c[0]]["verdict"] == "attack", c[1],
                                         -(_t(incidents[c[0]]["end"]) - _t(incidents[c[0]]["start"])).total_seconds()))
    used.add(i)
    inc = incidents[i]
    reasons = []
    metrics["start_err_s"] = (_t(inc["start"]) - start).total_seconds()
    shown = seen.get("provider", {}).get("shown_start")
    if basis == "provider" and shown:      # a probe its totals may not show: its first call, or the first they show
        later = datetime.fromtimestamp(_t(shown).timestamp() // tol * tol, start.tzinfo)
        metrics["start_err_s"] = min(metrics["start_err_s"], (_t(inc["start"]) - later).total_seconds(), key=abs)
    metrics["end_err_s"] = (_t(inc["end"]) - end).total_seconds()
    for edge in ("start", "end"):
        err = metrics[f"{edge}_err_s"]
        if abs(err) > tol:
            reasons.append(f"{edge} off by {err:+.0f} s (tolerance {tol} s, {basis})")
    ip_basis = _basis(seen, ("litellm", "nginx"))
    expected = set(t.get("observable_attacker_ips", ()))
    if ip_basis and expected:
        got = {x["ip"] for x in inc.get("ips", [])}
        hits = len(got & expected)
        precision = hits / len(got) if got else 0.0
        recall = hits / len(expected)
        metrics |= {"precision": precision, "recall": recall}
        need = IP_THRESHOLD[ip_basis]
        if precision < need or recall < need:
            reasons.append(f"addresses precision {precision:.2f} recall {recall:.2f} < {need} "
                           f"({len(got)} found, {len(expected)} true, {ip_basis})")
    cost_basis = _basis(seen, ("litellm", "provider"))
    if cost_basis == "provider" and not seen["provider"].get("cost_determined", True):
        metrics["cost_undetermined"] = True    # daily totals without a whole day of its kind: measured, not judged
    if cost_basis:
        true_cost = Decimal(t["cost_usd"] if cost_basis == "litellm" else seen["provider"]["cost_usd"])
        cost = Decimal(str(inc.get("cost_usd", 0)))
        err = (cost - true_cost) / true_cost if true_cost else Decimal(0) if cost == 0 else Decimal(1)
        metrics |= {"cost": float(cost), "true_cost": float(true_cost), "cost_err_pct": float(err * 100)}
        if abs(err) > COST_TOLERANCE[cost_basis] and not metrics.get("cost_undetermined"):
            reasons.append(f"cost ${cost:.2f} vs ${true_cost:.2f} ({float(err) * 100:+.1f} %, tolerance "
                           f"{float(COST_TOLERANCE[cost_basis]) * 100:g} %, {cost_basis})")
    return reasons, metrics


def check(truth: dict, findings: dict) -> tuple[list[str], dict]:
    """The criteria for one draw: (reasons it fails, metrics)."""
    incidents = findings["incidents"]
    true_attacks = [t for t in truth["incidents"] if t["verdict"] == "attack"]
    reasons: list[str] = []
    metrics: dict = {}
    used: set[int] = set()
    for t in true_attacks:
        r, m = check_incident(t, incidents, used)
        reasons += r
        metrics |= m
    extra = [a for i, a in enumerate(incidents) if i not in used and a["verdict"] == "attack"]
    if true_attacks and findings.get("status", "attack") == "clear":
        reasons.append("false all-clear: status 'clear' on a draw with an attack")
    if extra:
        what = "benign batch called an attack" if truth["scenario"] == "benign_batch" else (
            "attack in a draw without one" if not true_attacks else "extra attack incident")
        reasons.append(f"{what}: " + ", ".join(f"{a['kind']} {a['start'][:16]}" for a in extra[:3])
                       + (f" (+{len(extra) - 3})" if len(extra) > 3 else ""))
    return reasons, metrics


def run_draw(draw: Draw, workdir: Path | None = None, keep: Path | None = None) -> Result:
    """Simulate the draw into a temporary folder, investigate it, check it; `keep`: copy a failing draw there."""
    from forensics.api import Case
    from forensics.outputs import findings as findings_out
    from forensics.simulate.simulation import simulate
    from forensics.sources.interface import LoadOptions

    result = Result(draw)
    dep = draw.deployment
    tmp = Path(tempfile.mkdtemp(prefix=f"matrix{draw.index}-", dir=workdir))
    try:
        t0 = time.perf_counter()
        truth = simulate(draw.scenario, tmp / "logs", seed=draw.seed, deployment=dep)
        t1 = time.perf_counter()
        options = LoadOptions(nginx_format=dep.nginx_log_format if dep.nginx_format == "custom" else None)
        with Case.from_inputs([tmp / "logs"], tmp / "out", options) as case:
            t2 = time.perf_counter()
            findings = findings_out.build(case.investigate())
            t3 = time.perf_counter()
            quarantined = sum(r.quarantined for r in case.reports)
        result.seconds = {"simulate": t1 - t0, "ingest": t2 - t1, "investigate": t3 - t2, "total": t3 - t0}
        result.metrics["files"] = len(truth["files"])
        result.found = ", ".join(f"{i['verdict']}/{i['kind']}" for i in findings["incidents"]) or "none"
        result.reasons, metrics = check(truth, findings)
        result.metrics |= metrics
        if quarantined:
            result.reasons.append(f"{quarantined} records quarantined on ingest")
    except Exception as e:            # a crash is a failed draw with its reason, not the end of the matrix
        result.error = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()[-1][:300]
        result.reasons.append(f"error: {result.error}")
    finally:
        if keep is not None and not result.ok:
            shutil.copytree(tmp / "logs", keep / f"draw{draw.index}-{draw.scenario}", dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def run(n: int, seed: int = 0, scenarios: tuple[str, ...] = SCENARIOS, jobs: int = 1, keep: Path | None = None,
        progress=None) -> list[Result]:
    """The matrix over n draws, `jobs` at a time; `progress(result)` after each."""
    from functools import partial

    from forensics.simulate.pool import run_each

    return run_each(partial(run_draw, keep=keep), draws(n, seed, scenarios), jobs, progress)


# --- tables -------------------------------------------------------------------------------------------------------

def describe(d: Deployment) -> str:
    """The deployment in a table cell."""
    parts = ["+".join(d.sources), "keys" if d.keys else "keyless", history_bucket(d.history_s)]
    if d.litellm_sink:
        parts.append(d.litellm_sink + (f"/{d.object_store}" if d.object_store else ""))
    if d.nginx_format:
        parts.append(f"nginx {d.nginx_format} {d.nginx_timezone} {d.nginx_rotation}")
    if d.providers:
        parts.append(" ".join(f"{p} {d.usage_bucket(p)}" for p in d.providers))
    parts.append("LB" if d.behind_lb else "no LB")
    return ", ".join(parts)


def draw_table(results: list[Result]) -> str:
    lines = ["| # | scenario | seed | deployment | found | s | result | reason |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        d = r.draw
        lines.append(f"| {d.index} | {d.scenario} | {d.seed} | {describe(d.deployment)} | {r.found} | "
                     f"{r.seconds.get('total', 0):.1f} | {'pass' if r.ok else 'FAIL'} | {'; '.join(r.reasons)} |")
    return "\n".join(lines)


def _rates(results: list[Result], key) -> list[tuple[tuple, int, int]]:
    groups: dict[tuple, list[bool]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r.ok)
    return sorted(((k, len(v), sum(not x for x in v)) for k, v in groups.items()),
                  key=lambda x: (-x[2] / x[1], -x[1], x[0]))


def group_table(results: list[Result]) -> str:
    """Failure rate per (scenario, sources present, keys or not, history bucket)."""
    lines = ["| scenario | sources | keys | history | draws | failed | failure rate |", "|---|---|---|---|---|---|---|"]
    for (scenario, sources, keys, hist), n, bad in _rates(results, lambda r: r.draw.group):
        lines.append(f"| {scenario} | {sources} | {keys} | {hist} | {n} | {bad} | {bad / n:.0%} |")
    return "\n".join(lines)


DIMENSIONS = {
    "scenario": lambda r: r.draw.scenario,
    "sources": lambda r: "+".join(r.draw.deployment.sources),
    "keys": lambda r: "keys" if r.draw.deployment.keys else "keyless",
    "history": lambda r: history_bucket(r.draw.deployment.history_s),
    "litellm sink": lambda r: r.draw.deployment.litellm_sink or "-",
    "nginx format": lambda r: r.draw.deployment.nginx_format or "-",
    "balancer": lambda r: "LB" if r.draw.deployment.behind_lb else "no LB",
    "best source": lambda r: r.metrics.get("basis", "-"),
}


def marginal_table(results: list[Result]) -> str:
    """Failure rate along each dimension on its own (which option hurts most)."""
    lines = ["| dimension | value | draws | failed | failure rate |", "|---|---|---|---|---|"]
    for name, key in DIMENSIONS.items():
        for (value,), n, bad in _rates(results, lambda r, key=key: (key(r),)):
            lines.append(f"| {name} | {value} | {n} | {bad} | {bad / n:.0%} |")
    return "\n".join(lines)


def reason_table(results: list[Result]) -> str:
    """How often each kind of failure occurs (the reason up to its first figure), with the best source that saw it."""
    counts: dict[str, int] = defaultdict(int)
    for r in results:
        for reason in r.reasons:
            what = re.split(r"[-+$]?\d", reason.split(":")[0].split(" (")[0])[0].strip()
            counts[f"{what} ({r.metrics.get('basis', '-')})"] += 1
    lines = ["| failure (best source) | draws |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def deviation(r: Result) -> str:
    """How far a draw's match is from the truth: window edges, cost, addresses (what was measured)."""
    m = r.metrics
    parts = [f"{edge} {m[f'{edge}_err_s']:+.0f} s" for edge in ("start", "end") if f"{edge}_err_s" in m]
    if "cost_err_pct" in m:
        parts.append(f"cost {m['cost_err_pct']:+.1f} %")
    if "precision" in m:
        parts.append(f"addresses P {m['precision']:.2f} R {m['recall']:.2f}")
    return ", ".join(parts) or "-"


def failure_table(results: list[Result]) -> str:
    """Every failing draw: the incident kind, the sources present, the best source seeing it, the deviations."""
    lines = ["| # | scenario | sources | best source | deviation | found | reason |", "|---|---|---|---|---|---|---|"]
    for r in results:
        if not r.ok:
            lines.append(f"| {r.draw.index} | {r.draw.scenario} | {'+'.join(r.draw.deployment.sources)} | "
                         f"{r.metrics.get('basis', '-')} | {deviation(r)} | {r.found} | {'; '.join(r.reasons)} |")
    return "\n".join(lines)


def undetermined_table(results: list[Result]) -> str:
    """The draws whose cost the checker measured but did not judge (daily provider totals without a whole day of
    each kind the attack touches outside it): how far off the tool's estimate was there."""
    lines = ["| # | scenario | sources | cost error | pass |", "|---|---|---|---|---|"]
    for r in results:
        if r.metrics.get("cost_undetermined"):
            lines.append(f"| {r.draw.index} | {r.draw.scenario} | {'+'.join(r.draw.deployment.sources)} | "
                         f"{r.metrics.get('cost_err_pct', float('nan')):+.1f} % | {'yes' if r.ok else 'no'} |")
    return "\n".join(lines) if len(lines) > 2 else "none"


def worst(results: list[Result], n: int = 10) -> list[Result]:
    return sorted((r for r in results if not r.ok), key=lambda r: r.severity, reverse=True)[:n]


def timing_summary(results: list[Result]) -> str:
    totals = np.array([r.seconds.get("total", 0.0) for r in results if r.seconds])
    if not totals.size:
        return "no timings"
    parts = {k: np.array([r.seconds[k] for r in results if r.seconds]) for k in ("simulate", "ingest", "investigate")}
    return (f"seconds per draw: median {np.median(totals):.1f}, p90 {np.percentile(totals, 90):.1f}, max "
            f"{totals.max():.1f}; median simulate {np.median(parts['simulate']):.1f}, ingest "
            f"{np.median(parts['ingest']):.1f}, investigate {np.median(parts['investigate']):.1f}")


def failure_message(results: list[Result]) -> str:
    """Every failing draw in one message (for a test)."""
    bad = [r for r in results if not r.ok]
    head = f"{len(bad)} of {len(results)} draws fail the criteria:"
    return "\n".join([head] + [f"  #{r.draw.index} {r.draw.scenario} seed {r.draw.seed} "
                               f"[{describe(r.draw.deployment)}]: {'; '.join(r.reasons)}" for r in bad])
