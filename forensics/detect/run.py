"""The `detect` command's library side: choose the quiet training data, train (or load), score every request.

The detector learns from the case's quiet requests: every request no incident detector claimed (but those of an
incident the search itself judged benign: ordinary work at a busy hour), and none from a public address whose
requests the incidents mostly claimed (what an attacker sent beside the incident's window). They are taken from the
whole case, before and after the incidents: a short history before an attack holds too little, and none of the day's
clients when it was a night. The case is cut in blocks (whole days when it spans HOLD_BACK_EVERY days or more, else
eighths of at most an hour) and every HOLD_BACK_EVERY-th block is held back when enough remains, to count the alerts a
day on quiet time the model never saw: the same hours and weekdays as the training blocks, not another season. With
too little quiet data the detector says so in one line and learns from what there is (or, with almost none, from the
case's first requests, incidents included); it fails only when the case holds no request to score."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forensics.detect import model
from forensics.detect.features import Intervals

if TYPE_CHECKING:
    from forensics.api import Case

MIN_QUIET = 200                        # fewer quiet requests than this: said in the note, nothing held back
MIN_FALLBACK = 10                      # fewer than this: learn from the case's first requests instead
HOLD_BACK_EVERY, HOLD_BACK_AT = 4, 2   # every 4th block (the 3rd, 7th, ...) is held back ...
MIN_HELD_BACK = 50                     # ... when that holds this many quiet requests and leaves MIN_QUIET to train on
MAX_SHORT_BLOCK = timedelta(hours=1)
ADDRESS_CLAIMED_SHARE = 0.5
VOLUME_DETECTORS = ("surge", "keyless")   # the incident search's detectors whose evidence is volume
TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class TrainingPlan:
    train: Intervals
    held_back: Intervals = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)     # request ids the incidents claimed or touched
    note: str = ""


def excluded_requests(case: Case) -> list[str]:
    """The requests the incident search claimed, and every request from a public address whose requests it mostly
    claimed (an attacker's requests the incident's window cut off; a known public client stays in)."""
    from forensics.netaddr import internal_ip_sql
    from forensics.analysis.incidents import find_incidents

    search = find_incidents(case)
    # an incident the search itself judged benign (a cost spike of the keys' ordinary work, a planned batch) is
    # ordinary traffic: left out, its keys' big requests would be news to the detector ever after
    found = [i for i in search.incidents if i.table and i.verdict != "benign"]
    tables = [i.table for i in found]
    tables = [i.table for i in found if not (i.detector in VOLUME_DETECTORS
                                             and _no_faster_than_the_rest(case, i.table, tables))]
    if not tables:
        return []
    claimed = " UNION ".join(f"SELECT request_id FROM {t}" for t in tables)
    return [r for (r,) in case.execute(f"""
        WITH claimed AS ({claimed}),
        addresses AS (   -- public addresses most of whose requests an incident claimed: the incidents' own
            SELECT r.client_ip FROM llm_requests r LEFT JOIN claimed c USING (request_id)
            WHERE r.client_ip IS NOT NULL AND NOT {internal_ip_sql('r.client_ip')}
            GROUP BY r.client_ip HAVING count(c.request_id) >= {ADDRESS_CLAIMED_SHARE} * count(*)
        ), own AS (      -- a key's own servers: the private addresses it used outside every incident
            SELECT DISTINCT coalesce(r.key_hash, '') AS grp, r.client_ip FROM llm_requests r ANTI JOIN claimed c
                USING (request_id)
            WHERE r.client_ip IS NOT NULL AND {internal_ip_sql('r.client_ip')}
        ), mixed AS (    -- ... when the case tells its addresses apart (not one balancer's address for every request)
            SELECT count(DISTINCT client_ip) > 1 AS shown FROM llm_requests WHERE {internal_ip_sql('client_ip')}
        )
        -- the requests an incident's window caught from a key's own servers are the key's ordinary work
        (SELECT request_id FROM claimed
         EXCEPT SELECT r.request_id FROM llm_requests r SEMI JOIN claimed c USING (request_id)
                JOIN own o ON o.grp = coalesce(r.key_hash, '') AND o.client_ip = r.client_ip, mixed WHERE mixed.shown)
        UNION SELECT request_id FROM llm_requests SEMI JOIN addresses USING (client_ip)
        ORDER BY 1
    """).fetchall()]


def _no_faster_than_the_rest(case: Case, table: str, tables: list[str]) -> bool:
    """An incident found by its volume (newcomers' surge, keyless calls) whose requests go no faster than the case's
    other traffic at the same time (outside every incident): the proxy's own clients (an office behind its public
    addresses), not its abuse (an open proxy's: the write-up's 1,200 calls in 45 minutes at night), whatever window
    the search gave them; they stay in training."""
    others = " UNION ".join(f"SELECT request_id FROM {t}" for t in tables)
    found, rest = case.execute(f"""
        WITH r AS (SELECT request_id, epoch(start_time) AS t FROM llm_requests WHERE start_time IS NOT NULL),
        c AS (SELECT t FROM r SEMI JOIN {table} USING (request_id)),
        span AS (SELECT min(t) AS a, max(t) AS b, greatest((max(t) - min(t)) / 60, 1) AS minutes FROM c),
        q AS (SELECT t FROM r ANTI JOIN ({others}) o USING (request_id), span WHERE t BETWEEN span.a AND span.b)
        SELECT (SELECT count(*) FROM c) / any_value(minutes), (SELECT count(*) FROM q) / any_value(minutes) FROM span
    """).fetchone()
    return rest is not None and found is not None and found <= rest


def block_length(span: timedelta) -> timedelta:
    """Whole days over HOLD_BACK_EVERY days or more; else eighths, at most an hour: a held-back block of a short case
    never takes a whole part of a day (an office key's one busy morning) from training."""
    if span >= HOLD_BACK_EVERY * timedelta(days=1):
        return timedelta(days=1)
    return max(min(span / 8, MAX_SHORT_BLOCK), timedelta(minutes=1))


def _blocks(first: datetime, last: datetime, block: timedelta) -> list[tuple[int, datetime, datetime]]:
    """[first, last] cut at first + k * block: (k, start, end)."""
    out, k = [], 0
    while first + k * block <= last:
        out.append((k, first + k * block, min(first + (k + 1) * block, last + TICK)))
        k += 1
    return out


def training_plan(case: Case) -> TrainingPlan:
    """The intervals to train on and those to hold back, the requests to leave out; a note when quiet data was
    scarce. Counted in SQL: no list of the case's requests comes into memory."""
    timed = "FROM llm_requests WHERE start_time IS NOT NULL"
    total, first, last = case.execute(f"SELECT count(*), min(start_time), max(start_time) {timed}").fetchone()
    if total < model.MIN_TRAIN_REQUESTS:
        raise ValueError(f"{total} LLM requests with a start time in the case: nothing to score")
    excluded = excluded_requests(case)
    quiet = f"{timed} AND request_id NOT IN (SELECT unnest(?::VARCHAR[]))"

    def quiet_in(intervals: Intervals) -> int:
        inside, params = within_sql("start_time", intervals)
        (count,) = case.execute(f"SELECT count(*) {quiet} AND {inside}", [excluded] + params).fetchone()
        return int(count)

    whole = [(first, last + TICK)]
    (n,) = case.execute(f"SELECT count(*) {quiet}", [excluded]).fetchone()
    what = f"only {n} quiet requests (outside the incidents and their addresses)"
    if n < MIN_FALLBACK and not excluded:
        return TrainingPlan(whole, [], [], f"only {n} requests in the case: learnt from all of them, the threshold "
                                           "is a rough guide")
    if n < MIN_FALLBACK:
        k = min(total, max(MIN_QUIET, total // 4))
        (kth,) = case.execute(f"SELECT start_time {timed} ORDER BY start_time, request_id LIMIT 1 OFFSET {k - 1}"
                              ).fetchone()
        return TrainingPlan([(first, kth + TICK)], [], [], f"{what}: learnt from the case's first {k} requests, "
                                                          "incidents included (what they share with the incidents "
                                                          "is not flagged)")
    if n < MIN_QUIET:
        return TrainingPlan(whole, [], excluded, f"{what}: learnt from those, none held back to check the alert rate")
    span = last - first
    block = block_length(span)
    pieces = _blocks(first, last, block)
    kept = _merge([(a, b) for k, a, b in pieces if k % HOLD_BACK_EVERY != HOLD_BACK_AT])
    held = _merge([(a, b) for k, a, b in pieces if k % HOLD_BACK_EVERY == HOLD_BACK_AT])
    if held and quiet_in(kept) >= MIN_QUIET and quiet_in(held) >= MIN_HELD_BACK:
        return TrainingPlan(kept, held, excluded)
    return TrainingPlan(whole, [], excluded, f"{n} quiet requests: too few to hold any back to check the alert rate")


def _merge(intervals: Intervals) -> Intervals:
    out: Intervals = []
    for a, b in intervals:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def within_sql(column: str, intervals: Intervals) -> tuple[str, list]:
    """`column` inside one of the half-open intervals, as a filter with one range test per interval, and its
    parameters. (An EXISTS over the unnested interval lists is a join DuckDB materialises: 240 MB more at 1 M
    requests, bench/bench_scale.py.)"""
    if not intervals:
        return "false", []
    test = f"({column} >= CAST(? AS TIMESTAMP) AND {column} < CAST(? AS TIMESTAMP))"
    return "(" + " OR ".join([test] * len(intervals)) + ")", [t for interval in intervals for t in interval]


class TableRows:
    """The feature rows of a case as the step table detector_features (in its order: start time, request id), read
    a chunk at a time (model.FrameRows has the same methods over a frame in memory)."""

    def __init__(self, case: Case, table: str):
        self.case, self.table = case, table
        (self.n,) = case.execute(f"SELECT count(*) FROM {table}").fetchone()

    def __len__(self) -> int:
        return int(self.n)

    def chunks(self):
        """The rows in rowid order, a chunk at a time. A plain scan: DuckDB keeps a table's insertion order
        (preserve_insertion_order), which each chunk's rowids are checked against; an ORDER BY rowid would sort the
        whole table first (210 MB more at 1 M requests)."""
        result = self.case.execute(f"SELECT rowid AS _row, * FROM {self.table}")
        vectors = model.CHUNK_ROWS // 2048 + 1           # DuckDB hands a result over in vectors of 2,048 rows
        expected = 0
        while len(chunk := result.fetch_df_chunk(vectors)):
            row = chunk.pop("_row").to_numpy()
            if row[0] != expected or (len(row) > 1 and not (np.diff(row) == 1).all()):
                raise RuntimeError(f"{self.table}: rows came out of rowid order at {expected}")
            expected += len(row)
            yield chunk

    def frame(self) -> pd.DataFrame:
        return self.case.execute(f"SELECT * FROM {self.table} ORDER BY rowid").df()

    def training(self, intervals: Intervals, excluded: set, limit: int) -> tuple[pd.DataFrame, int, dict]:
        """As model.FrameRows.training, in SQL: only the sample comes into memory."""
        from forensics.detect.features import FEATURES

        inside, params = within_sql("start_time", intervals)
        base = f"""(SELECT rowid AS _row, * FROM {self.table}
                   WHERE {inside} AND request_id NOT IN (SELECT unnest(?::VARCHAR[])))"""
        params = params + [sorted(excluded)]
        n, ratio, *tops = self.case.execute(
            f"SELECT count(*), max({model.RATIO_SQL}), {', '.join(f'max({c})' for c in FEATURES)} FROM {base}",
            params).fetchone()
        sample = f"(SELECT * FROM {base} ORDER BY md5(request_id) LIMIT {int(limit)})" if n > limit else base
        rows = self.case.execute(f"SELECT * EXCLUDE (_row) FROM {sample} ORDER BY _row", params).df()
        return rows, int(n), model.maxima_of(dict(zip(FEATURES, tops)), ratio)

    def rows(self, index: np.ndarray) -> pd.DataFrame:
        return self.case.execute(f"SELECT * FROM {self.table} WHERE rowid IN (SELECT unnest(?::BIGINT[])) "
                                 "ORDER BY rowid", [[int(i) for i in index]]).df()


def detect_rows(case: Case, model_path: Path | None = None, save_path: Path | None = None,
                window: tuple[datetime, datetime] | None = None, alerts_per_day: float = model.ALERTS_PER_DAY,
                n_estimators: int = model.N_ESTIMATORS) -> tuple[model.Scored, TableRows]:
    """Score every request of the case (see `detect`), the features staying in the case's step table: what comes
    into memory is a bounded training sample, a chunk of rows at a time and a few numbers per request."""
    from forensics.detect.features import features_step

    if model_path is not None:
        det = model.load(model_path)
        intervals = [(model.utc(a).to_pydatetime(), model.utc(b).to_pydatetime()) for a, b in det.card.train_intervals]
        excluded = excluded_requests(case) if det.card.excluded_requests else []
        rows = TableRows(case, case.run(features_step(), feature_params(intervals, excluded)))
        scores, flagged = model.score_rows(det, rows)
        scored = model.Scored(det, scores, flagged)
    else:
        plan = TrainingPlan([window]) if window is not None else training_plan(case)
        rows = TableRows(case, case.run(features_step(), feature_params(plan.train, plan.excluded)))
        scored = model.fit_score(rows, plan.train, alerts_per_day, n_estimators, plan.held_back, plan.note,
                                 set(plan.excluded))
    if save_path is not None:
        model.save(scored.detector, save_path)
    return scored, rows


def feature_params(baseline: Intervals, excluded) -> list:
    return [[s for s, _ in baseline], [e for _, e in baseline], list(excluded)]


def detect(case: Case, model_path: Path | None = None, save_path: Path | None = None,
           window: tuple[datetime, datetime] | None = None, alerts_per_day: float = model.ALERTS_PER_DAY,
           n_estimators: int = model.N_ESTIMATORS) -> tuple[pd.DataFrame, model.Detector, pd.DataFrame]:
    """Scores for every request of the case, the detector used, and the feature frame. `window`: train on every
    request in [start, end) instead (the analyst's choice: nothing left out, nothing held back)."""
    scored, rows = detect_rows(case, model_path, save_path, window, alerts_per_day, n_estimators)
    frame = rows.frame()
    scores = pd.DataFrame({"request_id": frame["request_id"].to_numpy(), "score": np.round(scored.scores, 6),
                           "flagged": scored.flagged,
                           "reasons": model.explain_rows(scored.detector, rows, scored.flagged)})
    return scores, scored.detector, frame
