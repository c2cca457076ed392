"""Train isolation forests on a quiet baseline, calibrate one threshold to a false-alert budget, score, explain,
save and load them with a card that says what they were trained on.

Two views of each request, each its own forest: `request` sees every feature (volumes, rates, sizes, novelty of
address, key and client software); `key_drift` sees only how the request departs from its key's own past (model,
prompt size, kind of address, the key's address and client-software history, its rate). A leaked key used from new
places with other models is ordinary traffic to the first view and stands out in the second. Each view's score is
divided by its baseline 99th percentile, the request's score is the larger of the two, and the threshold on that
lets through at most `alerts_per_day` on the baseline.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from forensics.detect.features import FEATURES

SEED = 0
ALERTS_PER_DAY = 1.0
SCALE_QUANTILE = 0.99
KEY_DRIFT = ["key_price_rise", "key_prompt_rise", "key_public_shift", "key_rate_15m"]
VIEWS = {"request": list(FEATURES), "key_drift": KEY_DRIFT}
KEY_HISTORY = ("ips_per_key", "pair_requests_before", "key_agent_requests_before")


class ModelMismatch(Exception):
    """A saved detector whose features are not the ones this version builds."""


@dataclass
class Card:
    features: list[str]
    train_start: str
    train_end: str
    train_requests: int
    data_sha256: str
    threshold: float
    alerts_per_day: float
    versions: dict
    medians: dict
    spreads: dict
    views: dict            # view name -> its features
    scales: dict           # view name -> its baseline SCALE_QUANTILE score (the divisor)


@dataclass
class Detector:
    forests: dict          # view name -> IsolationForest
    card: Card

    def view_scores(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each view's score over its baseline scale (1.0 = the baseline's 99th percentile)."""
        return {v: -score_samples(f, _matrix(frame, self.card.views[v])) / self.card.scales[v]
                for v, f in self.forests.items()}

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Higher = more anomalous: the larger of the views' scaled scores (`frame` already transformed)."""
        return np.max(np.vstack(list(self.view_scores(frame).values())), axis=0)

    def flag(self, frame: pd.DataFrame) -> np.ndarray:
        return self.score(frame) > self.card.threshold


PARALLEL_MIN_ROWS = 50_000


def score_samples(forest: IsolationForest, x: np.ndarray) -> np.ndarray:
    """forest.score_samples over row chunks in threads, one per core (sklearn scores on one core; its tree walks
    release the GIL). Same numbers as one call: each row's score depends on that row only."""
    workers = os.cpu_count() or 1
    if workers == 1 or len(x) < PARALLEL_MIN_ROWS:
        return forest.score_samples(x)
    chunks = np.array_split(x, workers)
    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(forest.score_samples, chunks)))


def _matrix(frame: pd.DataFrame, features) -> np.ndarray:
    return frame[list(features)].astype("float64").fillna(0.0).to_numpy()


def _transform(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts and sizes on a log scale so a 10x burst matters as much at 3 requests as at 300."""
    out = frame.copy()
    for c in FEATURES:
        if c not in LINEAR:
            out[c] = np.log1p(out[c].astype("float64").clip(lower=0))
    return out


def train(frame: pd.DataFrame, start: datetime, end: datetime, alerts_per_day: float = ALERTS_PER_DAY,
          n_estimators: int = 200) -> Detector:
    """Fit on requests starting in [start, end); the threshold lets through at most `alerts_per_day` there."""
    base = frame[(frame["start_time"] >= start) & (frame["start_time"] < end)]
    if len(base) < 100:
        raise ValueError(f"only {len(base)} requests in the training window {start} .. {end}: too few to learn from")
    x = _transform(base)
    forests, scales, scaled = {}, {}, []
    for view, features in VIEWS.items():
        forests[view] = IsolationForest(n_estimators=n_estimators, max_samples=min(2048, len(base)),
                                        random_state=SEED, n_jobs=-1).fit(_matrix(x, features))
        raw = -score_samples(forests[view], _matrix(x, features))     # scored once: scale and threshold from it
        scales[view] = float(np.quantile(raw, SCALE_QUANTILE))
        scaled.append(raw / scales[view])
    scores = np.sort(np.max(np.vstack(scaled), axis=0))[::-1]
    # the days the training requests span (as the evaluation counts them), not the window asked for
    days = max((base["start_time"].max() - base["start_time"].min()).total_seconds() / 86400, 1 / 24)
    allowed = int(np.floor(alerts_per_day * days))
    threshold = float(scores[allowed]) if allowed < len(scores) else float(scores[-1])
    digest = hashlib.sha256(pd.util.hash_pandas_object(base[["request_id"]], index=False).to_numpy().tobytes())
    card = Card(list(FEATURES), start.isoformat() + "Z", end.isoformat() + "Z", len(base), digest.hexdigest(),
                threshold, alerts_per_day,
                {p: version(p) for p in ("scikit-learn", "numpy", "pandas", "duckdb")},
                {c: float(x[c].median()) for c in FEATURES},
                {c: float(max((x[c] - x[c].median()).abs().median(), 1e-3)) for c in FEATURES},
                {v: list(f) for v, f in VIEWS.items()}, scales)
    return Detector(forests, card)


def score_frame(det: Detector, frame: pd.DataFrame) -> pd.DataFrame:
    """request_id, score, flagged, and for flagged requests the features furthest from the baseline, in words."""
    x = _transform(frame)
    scores = det.score(x)
    flagged = scores > det.card.threshold
    reasons = np.full(len(frame), "", dtype=object)
    rows = np.flatnonzero(flagged)
    if len(rows):
        features = list(FEATURES)
        medians = np.array([det.card.medians[c] for c in features])
        spreads = np.array([det.card.spreads[c] for c in features])
        z = np.abs((_matrix(x.iloc[rows], features) - medians) / spreads)
        key_cols = [i for i, c in enumerate(features) if c.startswith("key_") or c in KEY_HISTORY]
        keyless = frame["keyless"].to_numpy()[rows].astype(bool)
        z[np.ix_(keyless, key_cols)] = -1.0      # a request without a key has no key history to speak of
        z[z == 0] = -1.0                         # a feature at its usual value explains nothing
        top = np.argsort(-z, axis=1, kind="stable")[:, :3]
        values = _matrix(frame.iloc[rows], features)
        for j, i in enumerate(rows):
            reasons[i] = "; ".join(describe(features[k], values[j, k], medians[k]) for k in top[j] if z[j, k] > 0)
    return pd.DataFrame({"request_id": frame["request_id"].to_numpy(), "score": np.round(scores, 6),
                         "flagged": flagged, "reasons": reasons})


WORDS = {
    "prompt_tokens": "{v:,.0f} prompt tokens (usually {u:,.0f})",
    "completion_tokens": "{v:,.0f} completion tokens (usually {u:,.0f})",
    "max_tokens": "max_tokens {v:,.0f} (usually {u:,.0f})",
    "output_price_mtok": "a model at ${v:g} per M output tokens (usually ${u:g})",
    "key_requests_before": "the key had made {v:,.0f} requests before (usually {u:,.0f})",
    "ip_requests_before": "the address had made {v:,.0f} requests before (usually {u:,.0f})",
    "ip_rate_1m": "{v:,.0f} requests from this address in a minute (usually {u:,.0f})",
    "ip_rate_15m": "{v:,.0f} requests from this address in 15 minutes (usually {u:,.0f})",
    "key_rate_1m": "{v:,.0f} requests with this key in a minute (usually {u:,.0f})",
    "key_rate_15m": "{v:,.0f} requests with this key in 15 minutes (usually {u:,.0f})",
    "ip_auth_failures_15m": "{v:,.0f} rejected keys from this address in 15 minutes (usually {u:,.0f})",
    "keys_per_ip": "{v:,.0f} keys used from this address (usually {u:,.0f})",
    "ips_per_key": "this key seen from {v:,.0f} addresses (usually {u:,.0f})",
    "pair_requests_before": "the key had made {v:,.0f} requests from this address before (usually {u:,.0f})",
    "key_agent_requests_before": "the key had made {v:,.0f} requests with this client software before "
                                 "(usually {u:,.0f})",
    "key_age_hours": "key first seen {v:,.1f} h before (usually {u:,.0f} h)",
    "ip_age_hours": "address first seen {v:,.1f} h before (usually {u:,.0f} h)",
    "agent_age_hours": "client software first seen {v:,.1f} h before (usually {u:,.0f} h)",
}
LINEAR = {"hour_of_day", "weekday", "keyless", "public_address", "ip_error_rate_15m", "completion_per_prompt",
          "key_price_rise", "key_prompt_rise", "key_public_shift"}


def describe(feature: str, value, median) -> str:
    """One feature in an analyst's words, against its usual (baseline median) value."""
    v = float(value)
    if feature == "keyless":
        return "no virtual key on the request" if v else "a virtual key on the request"
    if feature == "public_address":
        return "from a public address" if v else "from a private address"
    if feature == "key_price_rise":
        return f"a model {2 ** v:,.1f}x dearer per output token than the key's earlier average"
    if feature == "key_prompt_rise":
        return f"a prompt {2 ** v:,.1f}x the key's earlier average"
    if feature == "key_public_shift":
        return (f"from a public address, where {1 - v:.0%} of the key's earlier requests came from public ones"
                if v > 0 else "from the kind of address the key always used")
    if feature in LINEAR:
        return f"{feature.replace('_', ' ')} {v:g} (usually {median:g})"
    return WORDS[feature].format(v=v, u=float(np.expm1(median)))


def save(det: Detector, path: Path) -> None:
    """`path` (joblib) and `path`.json (the card), each written whole or not at all (the card last)."""
    from forensics.outputs.atomic import atomic_write, write_text

    with atomic_write(path, "wb") as fh:
        joblib.dump(det.forests, fh)
    write_text(f"{path}.json", json.dumps(asdict(det.card), indent=2, sort_keys=True) + "\n")


def load(path: Path) -> Detector:
    fields = json.loads(Path(f"{path}.json").read_text())
    if set(fields) != set(Card.__dataclass_fields__) or fields.get("views") != {v: list(f) for v, f in VIEWS.items()}:
        raise ModelMismatch(f"{path}: saved by another version of the detector (other views or card fields); "
                            "train it again on this version")
    card = Card(**fields)
    if list(card.features) != list(FEATURES):
        missing = sorted(set(FEATURES) - set(card.features))
        extra = sorted(set(card.features) - set(FEATURES))
        raise ModelMismatch(f"{path}: trained on other features (missing {missing or 'none'}, extra {extra or 'none'});"
                            " train it again on this version")
    return Detector(joblib.load(path), card)
