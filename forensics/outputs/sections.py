"""The postmortem's sections as the report prints them: rendering only, every figure from analysis/postmortem.py
(the stories, action items and lessons) and analysis/leads.py.

Each section is a `Section` (id, title, blocks) so the template prints them in order and another section (the
configuration audit, say) slots in by adding one to the list.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from forensics.analysis.leads import has_value, owner_text, owners_map  # noqa: F401  (report.py: owners_map)
from forensics.analysis.origin import provenance as origin_provenance
from forensics.outputs.safe import printable

HASH_CHARS = 12


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    pairs: list[tuple[str, str]] = field(default_factory=list)      # a definition list
    tables: list = field(default_factory=list)                      # report.Table
    items: list[str] = field(default_factory=list)                  # a bullet list


def sections(pm, tables) -> list[Section]:
    """The postmortem's sections, in the order a postmortem reads (Google SRE / PagerDuty templates): impact, root
    cause and trigger, detection, response timeline, resolution, leads, action items, lessons. `tables` is
    report's helpers (table, when, count, money, Table) so the formats are the report's own."""
    multi = len(pm.stories) > 1
    out = {k: Section(k, t) for k, t in (("impact", "Impact"), ("root-cause", "Root cause and trigger"),
                                         ("detection", "Detection"), ("timeline", "Response timeline"),
                                         ("resolution", "Resolution"), ("leads", "Leads"))}
    if not pm.stories:
        for s in out.values():
            s.intro = "No attack or suspicious incident: nothing to report here."
    for st in pm.stories:
        tag = (lambda label: f"{st.incident} · {label}") if multi else (lambda label: label)
        out["impact"].pairs += [(tag(k), v) for k, v in st.impact]
        out["root-cause"].pairs += [(tag("Root cause"), st.root_cause), (tag("Trigger"), st.trigger)]
        out["detection"].pairs += [(tag(k), v) for k, v in st.detection]
        out["timeline"].tables.append(tables.Table(
            f"{st.incident}: what the data shows, and what the analyst adds", ["time", "event", "source"],
            [[tables.when(e.time) if e.time is not None else "[time]", printable(e.what), e.source]
             for e in st.timeline]))
        out["resolution"].pairs += [(tag(k), v) for k, v in st.resolution]
        out["leads"].tables += _lead_tables(st, tables)
    out["timeline"].intro = ("Data-side timestamps from the logs; the rows in [brackets] are for the analyst to fill "
                             "in from chat, tickets and memory.")
    if pm.stories and not out["leads"].tables:
        out["leads"].intro = "No lead beyond the incidents' own requests (no nginx logs, or nothing found)."
    actions = Section("action-items", "Action items",
                      "From the incident write-up's checklist: every item the data shows is needed or recommended. "
                      "Assign an owner and a due date before the review.")
    actions.tables.append(tables.Table("Action items", ["#", "priority", "action", "why", "owner", "due"],
                                       [[str(i), a.priority, a.action, printable(a.why), a.owner, a.due]
                                        for i, a in enumerate(pm.action_items, start=1)]))
    lessons = Section("lessons", "Lessons", items=[f"{k.capitalize()}: {printable(v)}" for k, v in pm.lessons])
    return [*out.values(), response_section(pm.response, tables), actions, lessons]


def response_section(plan, tables) -> Section:
    """What to block and rotate; the same content is written as files in OUT/response/ (outputs/response_files.py)."""
    from forensics.outputs import response_files as rf

    s = Section("response", "Response actions", "Generated for review, not applied. The files are in "
                f"{rf.FOLDER}/ beside this report: {rf.NGINX} (nginx, http block), {rf.LITELLM} (LiteLLM admin "
                f"calls), {rf.PROVIDER} (provider side).")
    if plan is None or plan.empty:
        s.intro = "No attack or suspicious incident: nothing to block or rotate."
        return s
    if plan.blocks:
        s.tables.append(tables.Table("Deny at nginx", ["deny", "attacking addresses", "legitimate requests from "
                                                       "its network", "incidents"],
                                     [[b.target, ", ".join(b.addresses), tables.count(b.legitimate_requests),
                                       ", ".join(b.incidents)] for b in plan.blocks], {2}))
    s.items.append(f"Limit every client address to {plan.rate_per_second} requests per second (burst {plan.burst}) "
                   "at nginx (limit_req).")
    if plan.keyless:
        s.items.append("The proxy served requests without any virtual key: set master_key and issue virtual keys "
                       "first; blocking addresses alone does not stop the next ones.")
    for k in plan.keys:
        s.items.append(f"Block, then regenerate, virtual key {tables.key_label(k.key_hash, k.key_hint)}"
                       + (f" of {printable(k.owner)}" if k.owner else "") + f" ({', '.join(k.incidents)}).")
    for prov, accounts in plan.providers.items():
        s.items.append(f"{rf.PROVIDER_NAMES.get(prov, printable(prov))}: rotate the provider key and set a spend "
                       f"limit on {', '.join(printable(a) for a in accounts) or 'the billed account'}.")
    for prov, key_id in plan.outside_keys:
        s.items.append(f"{rf.PROVIDER_NAMES.get(prov, printable(prov))} key {printable(key_id)} was used outside "
                       "the proxy: revoke it now.")
    return s


def _lead_tables(st, tables) -> list:
    lead = st.leads
    if lead is None:
        return []
    out = []
    if len(lead.networks):
        # every address listed: the block list needs them all, not the top 20
        out.append(tables.Table(
            f"{st.incident}: attacking addresses by network ({int(lead.networks['n_addresses'].sum())} addresses in "
            f"{len(lead.networks)} networks)",
            ["network", "addresses", "origin", "requests", "cost", "first seen", "last seen"],
            [[r.network, f"{r.n_addresses}: " + ", ".join(r.addresses), r.origin, tables.count(r.requests),
              tables.money(r.cost_usd), tables.when(r.first_seen), tables.when(r.last_seen)]
             for r in lead.networks.itertuples()], {3, 4},
            note=f"origin: by the hosting, cloud, CDN, VPN and Tor exit ranges shipped with {origin_provenance()}, "
                 "offline; an address in none of them is not thereby residential"))
    if len(lead.recon):
        out.append(tables.Table(
            f"{st.incident}: reconnaissance from the attacking networks before the attack",
            ["time", "address", "network", "request", "status", "user agent"],
            [[tables.when(r.time), r.client_ip, r.network, printable(f"{r.method} {r.path}"), str(r.status),
              printable(r.user_agent) if has_value(r.user_agent) else "(none)"] for r in lead.recon.itertuples()]))
    if len(lead.forged):
        out.append(tables.Table(
            f"{st.incident}: forged X-Forwarded-For values (the client claimed to be an internal caller)",
            ["forged value", "addresses", "requests", "first seen"],
            [[printable(r.forged_hop), f"{r.n_addresses}: " + ", ".join(r.addresses), tables.count(r.requests),
              tables.when(r.first_seen)] for r in lead.forged.itertuples()], {2}))
    keyed = lead.owners[lead.owners["key_hash"].notna()] if len(lead.owners) else lead.owners
    if len(keyed):
        out.append(tables.Table(
            f"{st.incident}: whose keys", ["key (sha256 prefix, hint)", "owner (alias, team, user, end users)",
                                          "requests", "cost"],
            [[tables.key_label(r["key_hash"], r["key_hint"]), printable(owner_text(r)), tables.count(r["requests"]),
              tables.money(r["cost_usd"])] for r in keyed.to_dict("records")], {2, 3}))
    return out


# --- the detector ------------------------------------------------------------------------------------------------

def detector_section(s, tables) -> dict:
    """The detector's summary (detect/summary.py) as the report prints it."""
    if s.error is not None:
        return {"error": printable(s.error)}
    rows = []
    for r in s.incidents:
        if not r.request_ids:
            rows.append([r.incident, r.kind, "0", "-", "-", "no proxy requests to score"])
            continue
        rows.append([r.incident, r.kind, f"{r.flagged:,} of {r.requests:,}",
                     f"{r.flagged / r.requests:.1%}" if r.requests else "-",
                     tables.when(r.first_alert) if r.first_alert is not None else "-",
                     f"{r.delay_minutes:.1f} min after the start" if r.first_alert is not None else "never flagged"])
    return {
        "train": f"{tables.when(s.train_start)} .. {tables.when(s.train_end)}"
                 + (f", {s.train_intervals} stretches" if s.train_intervals > 1 else ""),
        "train_requests": s.train_requests, "threshold": f"{s.threshold:.4f}",
        "features": s.features, "flagged": s.flagged, "scored": s.scored,
        "baseline_alerts_per_day": f"{s.baseline_alerts_per_day:.2f}",
        "heldout": (f"{s.heldout_alerts_per_day:.2f} a day on the quiet time held back from training"
                    if s.heldout_alerts_per_day is not None else "no quiet time held back to check it on"),
        "note": printable(s.note),
        "per_incident": tables.Table("What the detector caught of each incident",
                                     ["incident", "kind", "flagged", "recall", "first alert", "delay"], rows, {2, 3}),
        "top": tables.Table("Highest-scoring requests", ["time", "request id", "client", "score", "why"],
                            [[tables.when(r.start_time), printable(r.request_id), printable(r.client_ip),
                              f"{r.score:.3f}", printable(r.reasons)] for r in s.top.itertuples()], {3}),
    }
