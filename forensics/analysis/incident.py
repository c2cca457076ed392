"""What an incident is, and the SQL test for a private address: shared by the detectors (incidents) and the
verdicts that classify their findings."""
from __future__ import annotations

from dataclasses import dataclass, field

from forensics.netaddr import internal_ip_sql

SPREAD_MIN_ADDRESSES = 5          # a key used from this many new public addresses or more has been shared (leaked)


def private_ip_sql(col: str) -> str:
    """SQL true for an address of the operator's own network (forensics.netaddr.internal_ip_sql)."""
    return internal_ip_sql(col)


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
