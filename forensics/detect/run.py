"""The `detect` command's library side: choose the quiet baseline, train (or load), score every request."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from typing import TYPE_CHECKING

import pandas as pd

from forensics.detect import model
from forensics.detect.features import build_features

if TYPE_CHECKING:
    from forensics.api import Case

BASELINE_MARGIN = timedelta(hours=1)   # stop learning an hour before the first incident


def baseline_window(case: Case, frame: pd.DataFrame) -> tuple[datetime, datetime]:
    """From the case's first request to an hour before its first incident (or its last request when quiet)."""
    from forensics.analysis.incidents import find_incidents

    start = frame["start_time"].min().to_pydatetime()
    incidents = find_incidents(case).incidents
    if incidents:
        first = min(i.start for i in incidents)
        end = first - BASELINE_MARGIN if first - BASELINE_MARGIN > start else first   # never an inverted window
    else:
        end = frame["start_time"].max().to_pydatetime() + timedelta(microseconds=1)
    return start, end


def detect(case: Case, model_path: Path | None = None, save_path: Path | None = None,
           window: tuple[datetime, datetime] | None = None,
           alerts_per_day: float = model.ALERTS_PER_DAY) -> tuple[pd.DataFrame, model.Detector, pd.DataFrame]:
    """Scores for every request of the case, the detector used, and the feature frame."""
    frame = build_features(case)
    if model_path is not None:
        det = model.load(model_path)
    else:
        start, end = window or baseline_window(case, frame)
        det = model.train(frame, start, end, alerts_per_day)
    if save_path is not None:
        model.save(det, save_path)
    return model.score_frame(det, frame), det, frame
