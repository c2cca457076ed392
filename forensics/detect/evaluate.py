"""How good a detector is against a simulator's truth: ROC-AUC, precision and recall at the threshold, time from
an incident's start to the first alert, alerts per day on baseline traffic, beside two simple baselines."""
from __future__ import annotations

from datetime import datetime

import pandas as pd
from sklearn.metrics import roc_auc_score

COST_PER_HOUR_ALERT = 50.0      # the write-up's kind of alert: proxy spend in the trailing hour above $50
ADDRESS_RATE_ALERT = 30         # a client address making more than 30 requests in a minute


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).replace(tzinfo=None)


def evaluate(scores: pd.DataFrame, features: pd.DataFrame, truth: dict, card) -> pd.DataFrame:
    """One row per method: the model, and the cost-per-hour and per-address-rate thresholds on the same requests.
    `baseline_alerts_per_day`: on the ordinary requests in the detector's training intervals (`card`);
    `heldout_alerts_per_day`: on the ordinary requests outside them (time the calibration never saw);
    `planned_alerts` counts alerts on the requests of a planned job (a truth incident that is not an attack)."""
    from forensics.detect.model import days as span_days, utc, within

    attack = set().union(*[set(i.get("request_ids") or []) for i in truth.get("incidents", [])
                           if i.get("verdict") == "attack"])
    frame = features[["request_id", "start_time", "ip_rate_1m"]].merge(scores, on="request_id")
    frame["attack"] = frame["request_id"].isin(attack)
    planned = set().union(*[set(i.get("request_ids") or []) for i in truth.get("incidents", [])
                            if i.get("verdict") != "attack"])
    frame["planned"] = frame["request_id"].isin(planned)
    starts = [_t(i["start"]) for i in truth.get("incidents", []) if i.get("verdict") == "attack" and i.get("request_ids")]
    intervals = [(utc(a), utc(b)) for a, b in card.train_intervals]
    trained = within(frame, intervals)
    ordinary = ~frame["attack"].to_numpy() & ~frame["planned"].to_numpy()
    days = span_days(intervals)
    methods = {"isolation forest": (frame["score"].to_numpy(), frame["flagged"].to_numpy()),
               "address rate > 30/min": (frame["ip_rate_1m"].to_numpy(dtype=float),
                                         frame["ip_rate_1m"].to_numpy() > ADDRESS_RATE_ALERT)}
    if "cost_last_hour" in frame:
        methods["cost > $50/h"] = (frame["cost_last_hour"].to_numpy(float),
                                   frame["cost_last_hour"].to_numpy(float) > COST_PER_HOUR_ALERT)
    quiet_after = ~trained & ordinary
    lo, hi = frame["start_time"].min(), frame["start_time"].max()
    after_days = max(((hi - lo).total_seconds() - span_days(intervals) * 86400) / 86400, 1 / 24) \
        if quiet_after.any() else None
    rows = []
    for name, (score, flagged) in methods.items():
        y = frame["attack"].to_numpy()
        first = frame.loc[flagged & y, "start_time"].min() if (flagged & y).any() else None
        rows.append({
            "method": name,
            "roc_auc": float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan"),
            "precision": float((flagged & y).sum() / flagged.sum()) if flagged.sum() else float("nan"),
            "recall": float((flagged & y).sum() / y.sum()) if y.sum() else float("nan"),
            "minutes_to_first_alert": (first - min(starts)).total_seconds() / 60 if first is not None and starts else None,
            "baseline_alerts_per_day": float(flagged[trained & ordinary].sum() / days),
            # a planned job (the truth's benign or suspicious incident): alerts on it are false alarms to count
            "planned_requests": int(frame["planned"].sum()),
            "planned_alerts": int((flagged & frame["planned"].to_numpy()).sum()),
            # ordinary traffic outside the training intervals: false alerts the calibration never saw
            "heldout_alerts_per_day": float((flagged & quiet_after).sum() / after_days) if after_days else None,
        })
    return pd.DataFrame(rows)
