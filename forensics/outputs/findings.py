"""findings.json, exactly as the contract (schema forensics.findings/1) specifies."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pandas as pd

from forensics import __version__
from forensics.analysis import origin
from forensics.analysis.status import status
from forensics.investigate import Investigation

SCHEMA = "forensics.findings/1"


def iso(t) -> str | None:
    """ISO 8601 UTC with Z; milliseconds only when the time has them."""
    if t is None or (isinstance(t, float) and math.isnan(t)) or t is pd.NaT:
        return None
    if isinstance(t, pd.Timestamp):
        t = t.to_pydatetime()
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    text = t.isoformat(timespec="milliseconds" if t.microsecond else "seconds")
    return text + "Z"


def usd(v) -> float:
    """USD as a JSON number rounded to 6 decimals (rounding happens here, at display, only)."""
    if _none(v) is None:
        return 0.0
    return float(round(Decimal(str(v)), 6))


def _none(v):
    return None if v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v)) else v


def _rows(frame: pd.DataFrame, fields: dict) -> list[dict]:
    """Frame rows as contract objects: fields maps output name -> (column, converter)."""
    out = []
    for rec in frame.to_dict("records"):
        out.append({name: conv(_none(rec.get(col))) for name, (col, conv) in fields.items()})
    return out


def _with_origin(ips: list[dict]) -> list[dict]:
    """Each address with its origin (analysis/origin.py: cloud/hosting, CDN, VPN, Tor, crawler...; null for what is
    no address)."""
    found = origin.origins(r["ip"] for r in ips if r["ip"])
    return [{**r, "origin": found[r["ip"]].to_findings() if r["ip"] in found else None} for r in ips]


def _int(v) -> int:
    return int(v or 0)


def _str(v):
    return None if v is None else str(v)


def build(inv: Investigation, generated_at: datetime | None = None, absolute_paths: bool = False) -> dict:
    """findings.json's object for an investigation; input paths cut to the input folder unless `absolute_paths`."""
    from forensics.outputs.paths import shareable_paths

    inputs = [(f["path"], f["sha256"], f["format"], f["records"], f["loaded"], f["quarantined"]) for f in inv.files]
    names = shareable_paths([i[0] for i in inputs], absolute_paths)
    incidents = []
    for f in inv.incidents:
        inc = f.incident
        incidents.append({
            "id": inc.id, "verdict": inc.verdict, "kind": inc.kind,
            "start": iso(inc.start), "end": iso(inc.end),
            # provider-only incidents have no proxy request ids: their count is the provider's
            "requests": len(f.request_ids) or int(inc.requests or 0), "cost_usd": usd(f.cost_usd),
            "peak_cost_per_hour_usd": usd(f.projection.peak_cost_per_hour_usd) if f.projection else 0.0,
            **(f.headline.to_findings() if f.headline is not None else {}),
            "ips": _with_origin(_rows(f.by_ip, {"ip": ("ip", _str), "requests": ("requests", _int),
                                                "cost_usd": ("cost_usd", usd), "first_seen": ("first_seen", iso),
                                                "last_seen": ("last_seen", iso)})),
            "keys": _rows(f.by_key, {"key_hash": ("key", _str), "key_hint": ("key_hint", _str),
                                    "requests": ("requests", _int), "cost_usd": ("cost_usd", usd)}),
            "models": _rows(f.by_model, {"model": ("model", _str), "requests": ("requests", _int),
                                        "cost_usd": ("cost_usd", usd)}),
            "user_agents": _rows(f.by_user_agent, {"user_agent": ("user_agent", _str),
                                                  "requests": ("requests", _int)}),
            "request_ids": f.request_ids,
            "projection": f.projection.to_findings() if f.projection else None,
            "controls": [c.to_findings() for c in f.controls],
            "evidence": inc.evidence,
            "sources": list(inc.sources),
        })
    state, _ = status(incidents, inv.coverage.missing)
    return {
        "schema": SCHEMA,
        "tool_version": __version__,
        "generated_at": iso((generated_at or datetime.now(timezone.utc)).replace(microsecond=0)),
        "status": state,
        "inputs": [{"path": names[p], "sha256": s, "format": fm, "records": r, "loaded": lo, "quarantined": q}
                   for p, s, fm, r, lo, q in inputs],
        "coverage": {"start": iso(inv.coverage.start), "end": iso(inv.coverage.end),
                     "sources": inv.coverage.sources, "missing": inv.coverage.missing},
        "baseline": {"cost_per_hour_usd": usd(inv.baseline.get("cost_per_hour_usd")),
                     "requests_per_hour": round(float(_none(inv.baseline.get("requests_per_hour")) or 0), 3)},
        "incidents": incidents,
        "cost": {
            "total_usd": usd(inv.cost_total),
            "by_model": _rows(inv.by_model, {"model": ("model", _str), "requests": ("requests", _int),
                                             "cost_usd": ("cost_usd", usd)}),
            "by_key": _rows(inv.by_key, {"key_hash": ("key", _str), "key_hint": ("key_hint", _str),
                                         "requests": ("requests", _int), "cost_usd": ("cost_usd", usd)}),
            "by_ip": _rows(inv.by_ip, {"ip": ("ip", _str), "requests": ("requests", _int),
                                       "cost_usd": ("cost_usd", usd)}),
        },
        "reconciliation": [{
            "provider": r.provider, "start": iso(r.start), "end": iso(r.end),
            "provider_cost_usd": usd(r.provider_cost_usd), "proxy_cost_usd": usd(r.proxy_cost_usd),
            "unexplained_usd": usd(r.unexplained_usd),
            "outside_proxy": [{"api_key_id": k["api_key_id"], "start": iso(k["start"]), "end": iso(k["end"]),
                               "cost_usd": usd(k["cost_usd"])} for k in r.outside_proxy],
        } for r in inv.reconciliation],
    }


def write(path: Path, findings: dict) -> None:
    """findings.json; characters that could hide or reorder text (bidi controls, zero-width...) as \\u escapes
    (outputs/safe.py): the values read back are exact."""
    from forensics.outputs.safe import json_text

    path.write_text(json_text(findings, indent=2) + "\n", encoding="utf-8")


def write_steps_sql(path: Path, steps, head: str = "") -> None:
    """Every statement the investigation ran, in order, parameters written in: re-runs against the case database
    (`head`: what makes a session see the case, for a case that is no database file)."""
    path.write_text(head + steps.script(), encoding="utf-8")
