"""The incident write-up the project starts from (a LiteLLM proxy left open; its author's own figures), and whether a
case is that incident: the notebooks compare with the write-up only then, never on another case.

The write-up says: "Last hour: $347.23 (normal: $12-15/hr)", "~1,200 requests to GPT-4", "about 45 minutes", and
"24 hours: $8,334 / 1 week: $58,338 / 1 month: $249,864".
"""
from __future__ import annotations

from decimal import Decimal

STATED_LAST_HOUR_USD = Decimal("347.23")
STATED_PROJECTION_USD = {"1h": Decimal("347.23"), "24h": Decimal("8334"), "7d": Decimal("58338"),
                         "30d": Decimal("249864")}
STATED_REQUESTS = 1200          # "~1,200 requests"
STATED_MINUTES = 45
KIND = "unauthenticated_proxy"


def is_writeup_incident(finding) -> bool:
    """The write-up's incident: an open proxy abused for about 45 minutes with about 1,200 requests and about
    $347 of spend (each within 10 %)."""
    if finding is None or finding.incident.kind != KIND:
        return False
    inc = finding.incident
    minutes = (inc.end - inc.start).total_seconds() / 60
    requests = finding.headline.requests if finding.headline is not None else len(finding.request_ids)
    cost = Decimal(finding.cost_usd)
    return (abs(minutes - STATED_MINUTES) <= STATED_MINUTES * 0.1
            and abs(requests - STATED_REQUESTS) <= STATED_REQUESTS * 0.1
            and abs(cost - STATED_LAST_HOUR_USD) <= STATED_LAST_HOUR_USD * Decimal("0.1"))
