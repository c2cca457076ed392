"""The detector over the randomized simulator: draw deployments that hold LiteLLM requests, simulate, score, measure.

Per draw, against truth.json: per-request ROC-AUC of the attack requests against the rest, recall at the calibrated
threshold, the share of normal requests flagged (normal: in no truth incident), false alerts per quiet day outside
the training window (the days the threshold never saw), and per feature how far the normal requests outside the
training window drift from it (the share outside the training range: about 1 % when a feature carries over).
"""
from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from forensics.simulate.matrix import Draw, describe, draws
from forensics.simulate.scenarios import SCENARIOS

# the issue's acceptance thresholds (#13)
MIN_AUC = 0.97
MIN_RECALL = 0.9
MAX_NORMAL_FLAGGED = 0.01
MAX_MEDIAN_HELDOUT_ALERTS_PER_DAY = 2.0
MIN_HELDOUT_DAYS = 1 / 24        # shorter held-back quiet time is reported, not divided by


@dataclass
class DrawScore:
    draw: Draw
    metrics: dict = field(default_factory=dict)
    drift: dict = field(default_factory=dict)     # feature -> share of held-out normal requests outside training range
    note: str = ""                                # the detector's one line about its training window, if any
    seconds: float = 0.0
    error: str | None = None

    @property
    def search_misfire(self) -> bool:
        """The incident search left most of the attack in the quiet data, or a found incident's normal requests
        are what the detector flags (their like never reached training): issue #12's side, not the detector's."""
        m = self.metrics
        return bool(m) and (m.get("attack_left_in", 0) > 0.5 or (
            m.get("normal_flagged_share", 0) > MAX_NORMAL_FLAGGED >= m.get("quiet_flagged_share", 0)))

    @property
    def failures(self) -> list[str]:
        """Which acceptance thresholds this draw misses (the median of held-out alerts is the run's, not a draw's)."""
        if self.error:
            return [f"error: {self.error}"]
        m, out = self.metrics, []
        if m.get("attack", 0):
            if not m["auc"] >= MIN_AUC:
                out.append(f"AUC {m['auc']:.3f}")
            if not m["recall"] >= MIN_RECALL:
                out.append(f"recall {m['recall']:.3f}")
        if m.get("normal_flagged_share", 0) > MAX_NORMAL_FLAGGED:
            out.append(f"normal flagged {m['normal_flagged_share']:.2%} ({m['normal_flagged']} of {m['normal']})")
        return out


def detect_draws(n: int, seed: int = 0, scenarios: tuple[str, ...] = SCENARIOS,
                 max_history_s: int | None = None) -> list[Draw]:
    """n matrix draws whose deployment holds LiteLLM requests (the detector scores those; a draw without them has
    nothing to score), the same for the same seed; `max_history_s` caps each draw's history (short draws, for CI)."""
    out: list[Draw] = []
    batch = 2 * n + 8
    while len(out) < n:
        pool = [d for d in draws(batch, seed, scenarios) if "litellm" in d.deployment.sources]
        out = pool[:n]
        batch *= 2
    if max_history_s is not None:
        out = [replace(d, deployment=replace(d.deployment, history_s=min(d.deployment.history_s, max_history_s)))
               for d in out]
    return [replace(d, index=i) for i, d in enumerate(out)]


def measure(scores: pd.DataFrame, frame: pd.DataFrame, truth: dict, card,
            left_out: set = frozenset()) -> tuple[dict, dict]:
    """(metrics, drift) of one scored case against its truth; `left_out`: the requests the incident search claimed
    (the detector learnt around them), to tell its misses and false incidents from the detector's own errors."""
    from sklearn.metrics import roc_auc_score

    from forensics.detect.features import FEATURES
    from forensics.detect.model import _transform

    incidents = truth.get("incidents", [])
    attack = set().union(*[set(i.get("request_ids") or []) for i in incidents if i.get("verdict") == "attack"])
    planned = set().union(*[set(i.get("request_ids") or []) for i in incidents if i.get("verdict") != "attack"])
    f = frame[["request_id", "start_time"]].merge(scores[["request_id", "score", "flagged"]], on="request_id")
    y = f["request_id"].isin(attack).to_numpy()
    normal = ~y & ~f["request_id"].isin(planned).to_numpy()
    flagged = f["flagged"].to_numpy()
    claimed = f["request_id"].isin(left_out).to_numpy()
    from forensics.detect.model import within

    intervals = [(utc(a), utc(b)) for a, b in card.train_intervals]
    trained = within(f, intervals)
    held = normal & ~trained
    held_days = _quiet_days(f["start_time"], truth, intervals)
    m = {
        "requests": len(f), "attack": int(y.sum()), "normal": int(normal.sum()), "planned": int(len(planned)),
        "train_requests": card.train_requests, "excluded": card.excluded_requests,
        "train_hours": sum((b - a).total_seconds() for a, b in intervals) / 3600,
        "auc": float(roc_auc_score(y, f["score"])) if 0 < y.sum() < len(y) else float("nan"),
        "recall": float((flagged & y).sum() / y.sum()) if y.sum() else float("nan"),
        "normal_flagged": int((flagged & normal).sum()),
        "normal_flagged_share": float((flagged & normal).sum() / normal.sum()) if normal.sum() else 0.0,
        "planned_flagged": int((flagged & f["request_id"].isin(planned).to_numpy()).sum()),
        "heldout_requests": int(held.sum()), "heldout_days": held_days,
        "heldout_alerts": int((flagged & held).sum()),
        "heldout_alerts_per_day": float((flagged & held).sum() / held_days) if held_days >= MIN_HELDOUT_DAYS
        else float("nan"),
        # the incident search's side: an attack it left in the quiet data (the detector learnt from it), normal
        # requests it claimed (the detector never saw their like); the detector's own false alerts are the rest
        "attack_left_in": float((y & ~claimed).sum() / y.sum()) if y.sum() else 0.0,
        "normal_claimed": int((normal & claimed).sum()),
        "quiet_flagged_share": float((flagged & normal & ~claimed).sum() / (normal & ~claimed).sum())
        if (normal & ~claimed).sum() else 0.0,
        "card_alerts_per_day": card.train_alerts_per_day, "card_heldout_alerts_per_day": card.heldout_alerts_per_day,
    }
    drift = {}
    if held.sum() and trained.sum():
        x = _transform(frame)
        for c in FEATURES:
            base = x[c].to_numpy(dtype=float)[trained & normal if (trained & normal).any() else trained]
            lo, hi = np.quantile(base, [0.005, 0.995])
            v = x[c].to_numpy(dtype=float)[held]
            drift[c] = float(((v < lo) | (v > hi)).mean())
    return m, drift


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text.replace("Z", "")).tz_localize(None) if text.endswith("Z") else pd.Timestamp(text)


def _quiet_days(times: pd.Series, truth: dict, intervals) -> float:
    """Days of the case outside the training window and outside every truth incident (its quiet, held-out time)."""
    lo, hi = times.min(), times.max()
    busy = list(intervals) + [(utc(i["start"]), utc(i["end"])) for i in truth.get("incidents", [])
                             if i.get("start") and i.get("end")]
    spans = sorted((max(a, lo), min(b, hi)) for a, b in busy if min(b, hi) > max(a, lo))
    covered, cur_a, cur_b = 0.0, None, None
    for a, b in spans:
        if cur_b is None or a > cur_b:
            covered += (cur_b - cur_a).total_seconds() if cur_b is not None else 0
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    covered += (cur_b - cur_a).total_seconds() if cur_b is not None else 0
    return max(0.0, ((hi - lo).total_seconds() - covered) / 86400)


def run_detect_draw(draw: Draw, workdir: Path | None = None, n_estimators: int | None = None) -> DrawScore:
    """Simulate the draw, ingest it, train the detector as `detect` does, score every request, measure."""
    from forensics.api import Case
    from forensics.detect import model
    from forensics.detect.run import detect, excluded_requests
    from forensics.simulate.simulation import simulate
    from forensics.sources.interface import LoadOptions

    result = DrawScore(draw)
    dep = draw.deployment
    tmp = Path(tempfile.mkdtemp(prefix=f"detect{draw.index}-", dir=workdir))
    t0 = time.perf_counter()
    try:
        truth = simulate(draw.scenario, tmp / "logs", seed=draw.seed, deployment=dep)
        options = LoadOptions(nginx_format=dep.nginx_log_format if dep.nginx_format == "custom" else None)
        with Case.from_inputs([tmp / "logs"], tmp / "out", options) as case:
            kwargs = {} if n_estimators is None else {"n_estimators": n_estimators}
            scores, det, frame = detect(case, **kwargs)
            left_out = set(excluded_requests(case)) if det.card.excluded_requests else set()
        result.note = det.note
        result.metrics, result.drift = measure(scores, frame, truth, det.card, left_out)
    except Exception as e:            # a crash is a failed draw with its reason, not the end of the run
        result.error = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()[-1][:300]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        result.seconds = time.perf_counter() - t0
    return result


def run(n: int, seed: int = 0, scenarios: tuple[str, ...] = SCENARIOS, jobs: int = 1,
        max_history_s: int | None = None, progress=None, n_estimators: int | None = None) -> list[DrawScore]:
    """The detector over n draws, `jobs` at a time; `progress(result)` after each."""
    from forensics.simulate.pool import run_each

    work = partial(run_detect_draw, n_estimators=n_estimators)
    return run_each(work, detect_draws(n, seed, scenarios, max_history_s), jobs, progress)


# --- tables -------------------------------------------------------------------------------------------------------

def _num(v, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)


def draw_table(results: list[DrawScore]) -> str:
    lines = ["| # | scenario | deployment | requests | attack | train h | AUC | recall | normal flagged | "
             "held-out alerts/day (days) | card train/held-out | s | result |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m, d = r.metrics, r.draw
        lines.append(
            f"| {d.index} | {d.scenario} | {describe(d.deployment)} | {m.get('requests', '–')} | "
            f"{m.get('attack', '–')} "
            f"| {_num(m.get('train_hours'), '.1f')} | {_num(m.get('auc'), '.3f')} | {_num(m.get('recall'), '.3f')} | "
            f"{_num(m.get('normal_flagged_share'), '.2%')} ({m.get('normal_flagged', '–')}) | "
            f"{_num(m.get('heldout_alerts_per_day'), '.2f')} ({_num(m.get('heldout_days'), '.2f')}) | "
            f"{_num(m.get('card_alerts_per_day'), '.2f')}/{_num(m.get('card_heldout_alerts_per_day'), '.2f')} | "
            f"{r.seconds:.1f} | {'; '.join(r.failures) or 'pass'}"
            f"{' [incident search misfire]' if r.search_misfire else ''}"
            f"{' (' + r.note + ')' if r.note else ''} |")
    return "\n".join(lines)


def summary(results: list[DrawScore]) -> str:
    ok = [r for r in results if not r.error]
    attacked = [r for r in ok if r.metrics["attack"]]
    per_day = [r.metrics["heldout_alerts_per_day"] for r in ok if not np.isnan(r.metrics["heldout_alerts_per_day"])]
    failing = sum(bool(r.failures) for r in results)
    lines = [f"draws: {len(results)} ({len(results) - len(ok)} errors), with an attack: {len(attacked)}; "
             f"failing a per-draw threshold: {failing}"]
    if attacked:
        auc = np.array([r.metrics["auc"] for r in attacked])
        rec = np.array([r.metrics["recall"] for r in attacked])
        lines.append(f"AUC: min {np.nanmin(auc):.3f}, median {np.nanmedian(auc):.3f}, draws < {MIN_AUC}: "
                     f"{int((auc < MIN_AUC).sum())}; recall: min {np.nanmin(rec):.3f}, median {np.nanmedian(rec):.3f}, "
                     f"draws < {MIN_RECALL}: {int((rec < MIN_RECALL).sum())}")
    if ok:
        share = np.array([r.metrics["normal_flagged_share"] for r in ok])
        lines.append(f"normal flagged: max {share.max():.2%}, median {np.median(share):.2%}, draws > "
                     f"{MAX_NORMAL_FLAGGED:.0%}: {int((share > MAX_NORMAL_FLAGGED).sum())}")
    if per_day:
        lines.append(f"false alerts per held-out quiet day: median {np.median(per_day):.2f} (target <= "
                     f"{MAX_MEDIAN_HELDOUT_ALERTS_PER_DAY:g}), p90 {np.percentile(per_day, 90):.2f}, over "
                     f"{len(per_day)} draws with >= 1 h of held-out quiet time")
    misfires = [r for r in results if r.failures and r.search_misfire]
    lines.append(f"failing draws the incident search explains (attack left in the quiet data, or a false incident's "
                 f"requests flagged): {len(misfires)}; failing on the detector's side: {failing - len(misfires)}")
    fallbacks = sum(bool(r.note) for r in ok)
    lines.append(f"draws with a training-window note (fallback): {fallbacks}")
    return "\n".join(lines)


def drift_table(results: list[DrawScore]) -> str:
    """Per feature, the mean share of held-out normal requests outside the training range (~1 % if it carries over)."""
    rows = pd.DataFrame([r.drift for r in results if r.drift])
    if rows.empty:
        return "no draw with both training and held-out requests"
    mean = rows.mean().sort_values(ascending=False)
    lines = ["| feature | mean share outside training range | draws > 10 % |", "|---|---|---|"]
    lines += [f"| {c} | {v:.1%} | {int((rows[c] > 0.1).sum())} |" for c, v in mean.items()]
    return "\n".join(lines)


def worst(results: list[DrawScore], n: int = 10) -> list[DrawScore]:
    def badness(r: DrawScore) -> tuple:
        m = r.metrics
        return (r.error is not None, len(r.failures), m.get("normal_flagged_share", 0),
                -np.nan_to_num(m.get("auc", 1.0), nan=1.0))
    return sorted(results, key=badness, reverse=True)[:n]
