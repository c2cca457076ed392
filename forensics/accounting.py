"""What ingest says of each input file: the contract's per-file object (ingest --json, findings.json inputs)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class FileReport:
    """What happened to one input file: the contract's per-file object plus status and message."""

    path: str
    sha256: str
    format: str | None
    records: int
    loaded: int
    quarantined: int
    skipped: bool
    merged: int = 0
    status: str = "loaded"       # loaded | skipped | failed
    message: str | None = None
    seconds: float = 0.0

    def contract(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in ("path", "sha256", "format", "records", "loaded", "quarantined", "skipped")}
