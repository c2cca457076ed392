"""What the anomaly detector says about a case, for the postmortem: trained on the quiet baseline, what it caught of
each incident (flagged share, first alert and its delay), its alert rate on the training and held-back quiet time
and its top alerts."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from forensics.api import Case

TOP_ALERTS = 10


@dataclass(frozen=True)
class IncidentCatch:
    incident: str
    kind: str
    request_ids: int                # the incident's proxy requests (0: usage outside the proxy only)
    requests: int                   # of those, scored
    flagged: int
    first_alert: datetime | None
    delay_minutes: float | None     # first alert after the incident's start


@dataclass
class DetectorSummary:
    error: str | None = None        # why nothing could be scored (one line)
    train_start: str | None = None
    train_end: str | None = None
    train_requests: int = 0
    train_intervals: int = 0
    note: str = ""                  # the detector's line about scarce quiet data ('' when there was enough)
    heldout_alerts_per_day: float | None = None    # on quiet time held back from training (None: none held back)
    threshold: float = 0.0
    features: int = 0
    flagged: int = 0
    scored: int = 0
    baseline_alerts_per_day: float = 0.0
    incidents: list[IncidentCatch] = field(default_factory=list)
    top: pd.DataFrame = field(default_factory=pd.DataFrame)   # start_time, request_id, client_ip, score, reasons


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def summarize(case: Case, findings: dict) -> DetectorSummary:
    """Train on the quiet baseline, score every request, and say what it caught of each incident."""
    import numpy as np

    from forensics.detect.model import explain_rows
    from forensics.detect.run import detect_rows

    try:
        scored, rows = detect_rows(case)
    except ValueError as e:
        return DetectorSummary(error=str(e).splitlines()[0] if str(e) else type(e).__name__)
    card = scored.detector.card
    # the features stay in their step table and each request's score in an array: only the incidents' requests and
    # the flagged ones come into memory as rows, never a frame of every request
    wanted = sorted({r for inc in findings["incidents"] for r in inc["request_ids"]})
    hits = case.execute(f"SELECT rowid AS _row, request_id, start_time FROM {rows.table} "
                        "WHERE request_id IN (SELECT unnest(?::VARCHAR[]))", [wanted]).df()
    hits["flagged"] = scored.flagged[hits["_row"].to_numpy()]
    caught = []
    for inc in findings["incidents"]:
        ids = set(inc["request_ids"])
        hit = hits[hits["request_id"].isin(ids)] if ids else hits.iloc[0:0]
        flagged = hit[hit["flagged"]]
        first = flagged["start_time"].min() if len(flagged) else None
        delay = (first - _utc(inc["start"])).total_seconds() / 60 if first is not None else None
        caught.append(IncidentCatch(inc["id"], inc["kind"], len(ids), len(hit), len(flagged), first, delay))
    alerts = case.execute(f"SELECT rowid AS _row, request_id, start_time FROM {rows.table} "
                          "WHERE rowid IN (SELECT unnest(?::BIGINT[]))",
                          [np.flatnonzero(scored.flagged).tolist()]).df()
    alerts["score"] = np.round(scored.scores[alerts["_row"].to_numpy()], 6)
    top = alerts.sort_values(["score", "request_id"], ascending=[False, True]).head(TOP_ALERTS)
    one = np.zeros(len(rows), dtype=bool)
    one[top["_row"].to_numpy()] = True
    top = top.assign(flagged=True, reasons=explain_rows(scored.detector, rows, one)[top["_row"].to_numpy()])
    ips = case.execute("SELECT request_id, client_ip FROM llm_requests WHERE request_id IN "
                       "(SELECT unnest(?::VARCHAR[]))", [top["request_id"].tolist()]).df()
    top = top.drop(columns="_row").merge(ips, on="request_id", how="left").reset_index(drop=True)
    return DetectorSummary(
        train_start=card.train_start, train_end=card.train_end, train_requests=card.train_requests,
        train_intervals=len(card.train_intervals), note=card.note, heldout_alerts_per_day=card.heldout_alerts_per_day,
        threshold=card.threshold, features=len(card.features), flagged=int(scored.flagged.sum()),
        scored=len(rows), baseline_alerts_per_day=card.train_alerts_per_day, incidents=caught, top=top)
