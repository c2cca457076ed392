"""The audit's findings as text (a block per finding) or JSON (schema forensics.audit/1, docs/contract.md)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from forensics import __version__
from forensics.audit.finding import SEVERITIES

SCHEMA = "forensics.audit/1"


def to_json(result) -> dict:
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {"schema": SCHEMA, "tool_version": __version__, "generated_at": now, **result.to_json()}


def json_text(result) -> str:
    from forensics.secrets import redact_text

    return redact_text(json.dumps(to_json(result), indent=2))


def text_lines(result) -> list[str]:
    """The findings, most severe first: head line, then setting, why, cost and the fix, indented."""
    out = []
    for f in result.findings:
        out.append(f"{f.severity.upper():<8} {f.id}  {f.where}")
        out.append(f"  {f.title}")
        out.append(f"  setting: {f.setting}")
        out.append(f"  why: {f.why}")
        if f.money:
            out.append(f"  cost: {f.money}")
        out.append("  fix:")
        out += [f"    {ln}" for ln in f.fix.splitlines()]
        out.append("")
    counts = ", ".join(f"{sum(f.severity == s for f in result.findings)} {s}" for s in SEVERITIES)
    out.append(f"{len(result.findings)} findings ({counts}) in {len(result.files)} files: "
               + ", ".join(f"{p} ({k})" for p, k in result.files))
    return out
