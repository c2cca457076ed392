"""What an incident is: shared by the detectors (incidents) and the verdicts that classify their findings. (The
test for a private address is forensics.netaddr's is_internal / internal_ip_sql.)"""
from __future__ import annotations

from dataclasses import dataclass, field

SPREAD_MIN_ADDRESSES = 5          # a key used from this many new public addresses or more has been shared (leaked)


@dataclass
class Incident:
    """One abnormal window: what, when, how much, and why we think so."""

    id: str
    kind: str                       # unauthenticated_proxy | leaked_key | credential_stuffing | other | ...
    verdict: str                    # attack | suspicious | benign
    detector: str
    start: object                   # datetime (UTC, naive)
    end: object
    requests: int
    evidence: list[str] = field(default_factory=list)
    table: str | None = None        # handle: temp table of its request ids (None for provider-only incidents)
    sources: list[str] = field(default_factory=lambda: ["litellm"])   # the sources it rests on
