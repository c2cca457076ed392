"""Train isolation forests on a quiet baseline, calibrate one threshold to a false-alert budget, score, explain,
save and load them with a card that says what they were trained on.

Two views of each request, each its own forest: `request` sees every feature but the raw counts of requests in a
window (sizes, failures, addresses and keys per hour, how it departs from its key's baseline profile); `key_drift`
sees only that departure (model, prompt and max_tokens size, kind of address, a network or client software the key
seldom used, its pace from the request's network against its own). A leaked key used from new places with other
models is ordinary traffic to the first view and stands out in the second. Each view's score is divided by its
baseline 99th percentile, the request's score is the larger of the two, and the threshold on that lets through at
most `alerts_per_day` on the training intervals (and at most MAX_ALERT_SHARE of their requests); the card also says
how many a day it raised on the held-back quiet intervals it never learnt from.
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

from forensics.detect.features import BEYOND, FEATURES, PROFILE, Intervals

SEED = 0
ALERTS_PER_DAY = 1.0
MAX_ALERT_SHARE = 0.005              # of the training requests, whatever the budget a day
SCALE_QUANTILE = 0.99
KEY_DRIFT = list(PROFILE)
# counts of requests in a window follow the time of day and the load (a CI job's bursts, a busier weekday): the
# forests see the key's pace against its own (key_rate_rise) instead; the counts stay for the explanations
PACE = ("ip_rate_1m", "ip_rate_15m", "key_rate_1m", "key_rate_15m")
# one rejected request is a person's mistyped key (they retry it a few times), never news by itself: the forests see
# the address's rejections beyond TYPO_RETRIES in 15 minutes (stuffing makes hundreds), not the request's own 401
TYPO_RETRIES = 3
VIEWS = {"request": [c for c in FEATURES if c not in PACE and c != "auth_failure"], "key_drift": KEY_DRIFT}
RISES = ("key_price_rise", "key_prompt_rise", "key_max_tokens_rise")    # in the key's own spreads
RISE_FLOOR = 3.0                    # a rise this large is never past the training range (ceilings start here)
TAIL_QUANTILE, TAIL_ROWS = 0.99, 5  # a tail's stretch: above its 99th percentile, or above its 5th largest value
RANGE_FLOOR = 1.0                   # a feature constant in training: a step of 1 (x e on log scales) past it counts 1
N_ESTIMATORS = 100                  # trees per view (sklearn's default; scoring 1 M training rows is most of training)
SUBSAMPLE = 256                     # rows per tree (the isolation forest's own default): each training row sits in
                                    # few trees, so its score is nearly as out-of-sample as a new request's
MIN_TRAIN_REQUESTS = 2              # an isolation forest needs two points; fewer than plan.MIN_QUIET is said in a note


class ModelMismatch(Exception):
    """A saved detector whose features are not the ones this version builds."""


@dataclass
class Card:
    features: list[str]
    train_start: str       # the first training interval's start ..
    train_end: str         # .. the last one's end
    train_intervals: list  # [[start, end], ...] ISO UTC: the quiet time the forests learnt from
    held_back: list        # [[start, end], ...]: quiet time kept out of training, to check the calibration on
    note: str              # one line when the quiet data was too little and what was done instead ('' otherwise)
    train_requests: int
    heldout_requests: int
    excluded_requests: int # left out of training and of the held-back check: the incidents' and their addresses' 
    data_sha256: str
    threshold: float
    alerts_per_day: float          # asked for
    train_alerts_per_day: float    # raised on the training intervals (the threshold was set there)
    heldout_alerts_per_day: float | None   # raised on the held-back quiet intervals (None: none held back)
    versions: dict
    medians: dict
    spreads: dict
    views: dict            # view name -> its features
    scales: dict           # view name -> its baseline SCALE_QUANTILE score (the divisor)
    ceilings: dict         # feature -> its largest value in training and the top percent's stretch (model scale)
    ranges: dict           # feature -> its training range (1st to 99th percentile, at least RANGE_FLOOR)


@dataclass
class Detector:
    forests: dict          # view name -> IsolationForest
    card: Card

    @property
    def note(self) -> str:
        return self.card.note

    def view_scores(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each view's score over its baseline scale (1.0 = the baseline's 99th percentile)."""
        return {v: -score_samples(f, _matrix(frame, self.card.views[v])) / self.card.scales[v]
                for v, f in self.forests.items()}

    def beyond(self, frame: pd.DataFrame) -> np.ndarray:
        """How far past everything seen in training the request lies: per feature, the excess over its training
        maximum in training ranges, summed (0 inside the training range)."""
        ceilings = np.array([np.inf if self.card.ceilings[c] is None else self.card.ceilings[c] for c in BEYOND])
        ranges = np.array([self.card.ranges[c] for c in BEYOND])
        values = frame[BEYOND].astype("float64").fillna(-np.inf).to_numpy()       # unknown: nothing past anything
        return (np.maximum(values - ceilings, 0) / ranges).sum(axis=1)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Higher = more anomalous (`frame` already transformed): the larger of the views' scaled scores, plus how
        far past the training range it lies (an isolation forest scores a point 10x past the largest value it saw
        like that value: it cannot tell 'rare' from 'never seen'). A request rejected for its key carries no
        content (no model call was made): it is judged by its address's rejections alone (stuffing), never by the
        forests, to which a person's mistyped key is as rare as an attack."""
        views = np.max(np.vstack(list(self.view_scores(frame).values())), axis=0)
        return np.where(rejected(frame), 0.0, views) + self.beyond(frame)

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


def rejected(frame: pd.DataFrame) -> np.ndarray:
    return frame["auth_failure"].fillna(0).to_numpy(dtype=float) > 0


def _matrix(frame: pd.DataFrame, features) -> np.ndarray:
    return frame[list(features)].astype("float64").fillna(0.0).to_numpy()


def _transform(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts and sizes on a log scale so a 10x burst matters as much at 3 requests as at 300 (an address's rejected
    keys past TYPO_RETRIES); completion per prompt token as its log2: a chat's short question and long answer (a
    ratio of 1) is as far from a retrieval job's long context and short answer (0.01) as that is from it, not a
    hundred times further (on a linear scale every generation task is an outlier in a baseline of long prompts)."""
    out = frame.copy()
    out["ip_auth_failures_15m"] = out["ip_auth_failures_15m"].astype("float64") - TYPO_RETRIES
    for c in FEATURES:
        if c not in LINEAR:
            out[c] = np.log1p(out[c].astype("float64").clip(lower=0))
    out["completion_per_prompt"] = _ratio(frame)
    return out


def _ratio(frame: pd.DataFrame) -> pd.Series:
    """Completion per prompt token as the model sees it (a log2); RATIO_SQL is the same in SQL."""
    return np.log2((frame["completion_tokens"].astype("float64").clip(lower=0) + 1)
                   / (frame["prompt_tokens"].astype("float64").clip(lower=0) + 1))


# completion per prompt is transformed from two columns (_transform): its largest value is not the transform of
# the column's largest, so a table's maxima are taken of this expression (run.TableRows.training)
RATIO_SQL = "log2((greatest(completion_tokens, 0) + 1) / (greatest(prompt_tokens, 0) + 1))"


def maxima_of(raw: dict, ratio: float | None) -> dict:
    """Each feature's largest transformed value (NaN where no row shows it), from each feature column's raw maximum
    (the transform never decreases) and the largest completion per prompt as _ratio (RATIO_SQL) gives it."""
    row = pd.DataFrame([{c: np.nan if v is None or pd.isna(v) else float(v) for c, v in raw.items()}])
    x = _transform(row)
    out = {c: float(v) if pd.notna(v := x[c].iloc[0]) else np.nan for c in FEATURES}
    out["completion_per_prompt"] = np.nan if ratio is None or pd.isna(ratio) else float(ratio)
    return out


def iso(t) -> str:
    return pd.Timestamp(t).isoformat() + "Z"


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text.removesuffix("Z"))


def within(frame: pd.DataFrame, intervals) -> np.ndarray:
    """Rows of `frame` whose start_time lies in one of the [start, end) intervals."""
    t = frame["start_time"].to_numpy()
    mask = np.zeros(len(frame), dtype=bool)
    for a, b in intervals:
        mask |= (t >= np.datetime64(pd.Timestamp(a))) & (t < np.datetime64(pd.Timestamp(b)))
    return mask


def stretch(values: np.ndarray, top: float | None = None) -> float:
    """The largest value plus the stretch of the tail above its TAIL_QUANTILE (above its TAIL_ROWS-th largest
    value when that is lower: the 99th percentile of a few hundred values is the largest one or two, no tail).
    `top`: the largest value when `values` are a sample of the rows (the largest of them all)."""
    q = min(TAIL_QUANTILE, max(0.0, 1 - TAIL_ROWS / len(values)))
    top = float(np.max(values)) if top is None else float(top)
    return 2 * top - float(np.quantile(values, q))


def days(intervals) -> float:
    """The intervals' length in days (at least an hour: a rate over minutes says little)."""
    return max(sum((pd.Timestamp(b) - pd.Timestamp(a)).total_seconds() for a, b in intervals) / 86400, 1 / 24)


MAX_TRAIN_ROWS = 200_000             # training rows the forests and the card's statistics learn from: all of them up
                                    # to this, else a deterministic sample of this many (those whose request id's
                                    # md5 comes first): a forest sees SUBSAMPLE rows per tree, and medians and
                                    # percentiles have long settled; the maxima and the threshold still come from
                                    # every training row
CHUNK_ROWS = 100_000                 # rows scored at a time: memory stays flat however many requests the case has


class FrameRows:
    """The rows to train on and score, from a feature frame in memory (build_features). `detect` on a case reads
    them from a DuckDB table instead (run.TableRows), chunk by chunk: both give the same numbers."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    def chunks(self):
        for lo in range(0, len(self.frame), CHUNK_ROWS):
            yield self.frame.iloc[lo:lo + CHUNK_ROWS]

    def training(self, intervals, excluded: set, limit: int) -> tuple[pd.DataFrame, int, dict]:
        """(the training rows, or a deterministic sample of `limit` of them; how many there are; each feature's
        largest value over all of them, NaN when none shows it)."""
        base = self.frame[within(self.frame, intervals) & ~self.frame["request_id"].isin(excluded).to_numpy()]
        n, maxima = len(base), maxima_of({c: base[c].max() for c in FEATURES}, _ratio(base).max()) if len(base) else {}
        if n > limit:      # the `limit` rows whose request id's md5 comes first (TableRows takes the same rows)
            digests = np.array([hashlib.md5(str(r).encode()).hexdigest() for r in base["request_id"]])
            base = base.iloc[np.sort(np.argsort(digests, kind="stable")[:limit])]
        return base, n, maxima

    def rows(self, index: np.ndarray) -> pd.DataFrame:
        return self.frame.iloc[index]


@dataclass
class Scored:
    """A detector and what it says of every row (in the rows' order)."""
    detector: Detector
    scores: np.ndarray
    flagged: np.ndarray


def train(frame: pd.DataFrame, intervals: Intervals, alerts_per_day: float = ALERTS_PER_DAY,
          n_estimators: int = N_ESTIMATORS, held_back: Intervals = (), note: str = "",
          excluded: set = frozenset()) -> Detector:
    """Fit on requests starting in the training intervals (but those `excluded`); the threshold lets through at
    most `alerts_per_day` there; the card also counts the alerts a day on the `held_back` intervals."""
    return fit_score(FrameRows(frame), intervals, alerts_per_day, n_estimators, held_back, note, excluded).detector


def fit_score(rows, intervals: Intervals, alerts_per_day: float = ALERTS_PER_DAY,
              n_estimators: int = N_ESTIMATORS, held_back: Intervals = (), note: str = "",
              excluded: set = frozenset(), sample: int | None = None) -> Scored:
    """Train on `rows` (FrameRows, run.TableRows) and score every one of them, a chunk at a time.

    The forests and the card's medians, spreads and percentiles learn from the training rows (at most `sample` of
    them, a deterministic sample past that); every training row is scored for the scales and the threshold, once:
    the same scores then serve every row's score."""
    base, n_train, maxima = rows.training(intervals, excluded, MAX_TRAIN_ROWS if sample is None else sample)
    if n_train < MIN_TRAIN_REQUESTS:
        first, last = iso(intervals[0][0]) if intervals else "-", iso(intervals[-1][1]) if intervals else "-"
        raise ValueError(f"only {n_train} requests in the training intervals {first} .. {last}: too few to learn "
                         "from")
    x = _transform(base)
    # `maxima`: each transformed feature's largest value over every training row, not only the sample
    # a feature the training rows never show (max_tokens in spend logs without request bodies): no ceiling; else the
    # largest value plus the stretch of the tail above it (stretch): a new request a little past the largest of a
    # long tail (a short training time's few hundred ratios) is the tail going on, not news
    ceilings = {c: stretch(x[c].dropna().to_numpy(), maxima[c]) if x[c].notna().any() else None
                for c in FEATURES}
    for c in RISES:        # a few of the key's own spreads above its profile is ordinary, however short the training
        ceilings[c] = None if ceilings[c] is None else max(ceilings[c], RISE_FLOOR)
    ranges = {c: float(max(np.nan_to_num(x[c].quantile(0.99) - x[c].quantile(0.01)), RANGE_FLOOR)) for c in FEATURES}
    forests = {}
    no = rejected(x)
    fit = x[~no] if (~no).sum() >= MIN_TRAIN_REQUESTS else x      # the forests learn the requests that were served
    for view, features in VIEWS.items():
        forests[view] = IsolationForest(n_estimators=n_estimators, max_samples=max(2, min(SUBSAMPLE, len(fit) // 2)),
                                        random_state=SEED, n_jobs=-1).fit(_matrix(fit, features))
    card = Card(list(FEATURES), iso(intervals[0][0]), iso(intervals[-1][1]),
                [[iso(a), iso(b)] for a, b in intervals], [[iso(a), iso(b)] for a, b in held_back], note,
                n_train, 0, len(excluded), "", 0.0, alerts_per_day, 0.0, None,
                {p: version(p) for p in ("scikit-learn", "numpy", "pandas", "duckdb")},
                {c: float(np.nan_to_num(x[c].median())) for c in FEATURES},      # over the rows that show it
                {c: float(max(np.nan_to_num((x[c] - x[c].median()).abs().median()), 1e-3)) for c in FEATURES},
                {v: list(f) for v, f in VIEWS.items()}, {v: 1.0 for v in VIEWS}, ceilings, ranges)
    det = Detector(forests, card)
    raw, beyond, no, trained, held, digest = _score_rows(det, rows, intervals, held_back, excluded)
    served = trained & ~no
    for view in VIEWS:    # each view over its baseline 99th percentile (of the served requests, when some were not)
        scale = raw[view][served] if served.sum() >= MIN_TRAIN_REQUESTS and served.sum() < trained.sum() \
            else raw[view][trained]
        card.scales[view] = float(np.quantile(scale, SCALE_QUANTILE))
    views = np.where(no, 0.0, np.max(np.vstack([raw[v] / card.scales[v] for v in VIEWS]), axis=0))
    del raw
    scores = np.sort(views[trained])[::-1]                       # beyond is 0 on training rows
    # the budget a day, but never more than MAX_ALERT_SHARE of the requests: a quiet proxy (a hundred requests a day)
    # would otherwise spend it on a percent of its ordinary traffic
    allowed = int(np.floor(min(alerts_per_day * days(intervals), MAX_ALERT_SHARE * n_train)))
    # a budget of less than one alert on the training time (under a day of it, or a quiet proxy's few hundred
    # requests): not the top training score, which a few of the next requests pass by chance alone (a new request
    # tops n others once in n + 1), but past it by the tail's own stretch, as a feature's ceiling
    tail = views[served] if served.any() else views[trained]
    card.threshold = threshold = float(scores[min(allowed, len(scores) - 1)]) if allowed else stretch(tail)
    card.train_alerts_per_day = float((scores > threshold).sum() / days(intervals))
    card.data_sha256 = digest.hexdigest()
    total = views + beyond
    flagged = total > threshold
    if held.any():
        card.heldout_requests = int(held.sum())
        card.heldout_alerts_per_day = float(flagged[held].sum() / days(held_back))
    return Scored(det, total, flagged)


def _score_rows(det: Detector, rows, intervals: Intervals, held_back: Intervals, excluded: set):
    """Each view's raw score, how far past the training range, rejected, in training, held back, and the sha256 of
    the training rows' ids: for every row, a chunk at a time."""
    raw = {v: [] for v in det.forests}
    beyond, no, trained, held = [], [], [], []
    digest = hashlib.sha256()
    for chunk in rows.chunks():
        x = _transform(chunk)
        for view, forest in det.forests.items():
            raw[view].append(-score_samples(forest, _matrix(x, det.card.views[view])))
        beyond.append(det.beyond(x))
        no.append(rejected(x))
        kept = ~chunk["request_id"].isin(excluded).to_numpy()
        trained.append(within(chunk, intervals) & kept)
        held.append((within(chunk, held_back) & kept) if len(held_back) else np.zeros(len(chunk), dtype=bool))
        digest.update(pd.util.hash_pandas_object(chunk.loc[trained[-1], ["request_id"]], index=False)
                      .to_numpy().tobytes())
    join = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)  # noqa: E731
    return ({v: join(r, float) for v, r in raw.items()}, join(beyond, float), join(no, bool), join(trained, bool),
            join(held, bool), digest)


def score_rows(det: Detector, rows) -> tuple[np.ndarray, np.ndarray]:
    """A trained (or loaded) detector's scores and flags for every row, a chunk at a time."""
    scores = [det.score(_transform(chunk)) for chunk in rows.chunks()]
    scores = np.concatenate(scores) if scores else np.zeros(0)
    return scores, scores > det.card.threshold


def explain_rows(det: Detector, rows, flagged: np.ndarray) -> np.ndarray:
    """The reasons of the flagged rows ('' for the others), reading only those rows."""
    from forensics.detect.explain import reasons

    out = np.full(len(flagged), "", dtype=object)
    index = np.flatnonzero(flagged)
    if len(index):
        frame = rows.rows(index)
        out[index] = reasons(det.card, frame, _transform(frame), np.ones(len(frame), dtype=bool))
    return out


def score_frame(det: Detector, frame: pd.DataFrame) -> pd.DataFrame:
    """request_id, score, flagged, and for flagged requests the features furthest from the baseline, in words."""
    from forensics.detect.explain import reasons

    x = _transform(frame)
    scores = det.score(x)
    flagged = scores > det.card.threshold
    return pd.DataFrame({"request_id": frame["request_id"].to_numpy(), "score": np.round(scores, 6),
                         "flagged": flagged, "reasons": reasons(det.card, frame, x, flagged)})


LINEAR = {"keyless", "public_address", "auth_failure", "ip_error_rate_15m", "completion_per_prompt", *PROFILE}


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
