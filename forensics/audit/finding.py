"""One finding of the configuration audit: what is wrong, where (file and line), what it costs, and the fix."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal

SEVERITIES = ("critical", "high", "medium", "low")

# the incident write-up's figures (/work/shared/seed/incident-writeup.txt; the projection's exact ones, README)
INCIDENT_HOUR_USD = Decimal("347.23")            # "Last hour: $347.23 (normal: $12-15/hr)"
INCIDENT_DAY_USD = Decimal("8333.52")            # that rate for 24 h (the write-up rounds it to $8,334)
INCIDENT_MONTH_USD = Decimal("250005.60")        # for 30 days (the write-up: $249,864)


@dataclass(frozen=True)
class Finding:
    """A setting (or its absence) that lets a gateway be abused. `line` 0: the file as a whole (a setting absent)."""

    id: str                      # stable check id, e.g. litellm.no_master_key
    severity: str                # critical | high | medium | low
    title: str                   # one line
    file: str
    line: int
    setting: str                 # the setting at fault, as the file spells it (or would)
    why: str                     # why it matters
    money: str                   # what it costs: the write-up's figures, or the case's controls replay
    fix: str                     # the exact snippet (YAML or nginx) that fixes it
    checklist: str               # the write-up's checklist item: authentication, rate limits, budgets, ...
    money_usd: Decimal | None = None    # the loss this finding allowed in the case, when --case gave one

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {SEVERITIES}")

    @property
    def where(self) -> str:
        return f"{self.file} line {self.line}" if self.line else self.file

    def to_json(self) -> dict:
        d = asdict(self)
        d["money_usd"] = None if self.money_usd is None else float(round(self.money_usd, 6))
        return d


def rank(f: Finding) -> tuple:
    return (SEVERITIES.index(f.severity), f.file, f.line, f.id)


def blocking(findings) -> bool:
    """True when something high or critical was found (exit code 1)."""
    return any(f.severity in ("critical", "high") for f in findings)
