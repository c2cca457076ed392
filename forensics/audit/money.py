"""What a finding costs: the incident write-up's figures, or, with a case, its incidents' controls replay."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from forensics.audit.finding import INCIDENT_DAY_USD, INCIDENT_HOUR_USD, INCIDENT_MONTH_USD

WRITEUP = (f"the write-up's open proxy cost ${INCIDENT_HOUR_USD:,.2f} in its first hour (normal: $12-15/h), "
           f"${INCIDENT_DAY_USD:,.2f} a day at that rate, ${INCIDENT_MONTH_USD:,.2f} in 30 days")


@dataclass(frozen=True)
class Replayed:
    incident: str              # INC-1
    kind: str
    cost_usd: Decimal
    loss_usd: dict[str, Decimal] = field(default_factory=dict)     # control id -> what the incident would have cost


@dataclass(frozen=True)
class Money:
    """The price of a missing control: from the case's attack incidents when one was given, else the write-up."""

    incidents: tuple[Replayed, ...] = ()

    def of(self, control: str | None, writeup: str) -> tuple[str, Decimal | None]:
        """(text, USD the missing control let through in the case, or None)."""
        if not self.incidents or control is None:
            return f"{writeup[0].upper()}{writeup[1:]}", None
        parts, lost = [], Decimal(0)
        for inc in self.incidents:
            loss = inc.loss_usd.get(control)
            if loss is None:
                continue
            saved = inc.cost_usd - loss
            lost += saved
            parts.append(f"{inc.incident} ({inc.kind}) cost ${inc.cost_usd:,.2f}; with {control} it would have cost "
                         f"${loss:,.2f} (${saved:,.2f} saved)")
        if not parts:
            return f"{writeup[0].upper()}{writeup[1:]}", None
        return "In the case: " + "; ".join(parts) + ".", lost


def from_investigation(inv) -> Money:
    """The controls replay of an investigation's attack incidents."""
    return Money(tuple(Replayed(f.incident.id, f.incident.kind, Decimal(f.cost_usd),
                                {c.control: Decimal(c.loss_usd) for c in f.controls})
                       for f in inv.incidents if f.incident.verdict == "attack"))
