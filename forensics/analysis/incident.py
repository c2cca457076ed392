"""What an incident is, and the SQL test for a private address: shared by the detectors (incidents) and the
verdicts that classify their findings."""
from __future__ import annotations

from dataclasses import dataclass, field

SPREAD_MIN_ADDRESSES = 5          # a key used from this many new public addresses or more has been shared (leaked)

PRIVATE_IP_SQL = """(
    regexp_matches({col}, '^(10\\.|192\\.168\\.|127\\.|172\\.(1[6-9]|2[0-9]|3[01])\\.)')
    OR regexp_matches(lower({col}), '^(::1$|f[cd][0-9a-f]{{2}}:|fe80:)'))"""


def private_ip_sql(col: str) -> str:
    return PRIVATE_IP_SQL.format(col=col)


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
