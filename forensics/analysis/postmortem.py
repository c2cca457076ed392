"""What the postmortem says beyond findings.json, computed before anything is rendered: the checklist
recommendations and the anomaly detector's summary."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from forensics.analysis.recommendations import recommendations

if TYPE_CHECKING:
    from forensics.api import Case
    from forensics.detect.summary import DetectorSummary
    from forensics.investigate import Investigation


@dataclass
class Postmortem:
    recommendations: list[dict]               # {item, status, finding, action}, in the write-up's checklist order
    detector: DetectorSummary | None          # None when the detector was left out


def prepare(case: Case, inv: Investigation, findings: dict, run_detector: bool = True) -> Postmortem:
    detector = None
    if run_detector:
        from forensics.detect.summary import summarize

        detector = summarize(case, findings)
    return Postmortem(recommendations(case, findings, inv.coverage), detector)
