"""What the postmortem says beyond findings.json, computed before anything is rendered: the sections a postmortem
has (impact, root cause and trigger, detection, the data-side timeline, resolution, action items, lessons), the
checklist recommendations, the leads (analysis/leads.py) and the anomaly detector's summary.

The analyst fills in what only people know (who noticed, what was done when): those places are [bracketed].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from forensics.analysis.leads import Leads, case_owners, leads, owners_map
from forensics.analysis.recommendations import money, recommendations
from forensics.analysis.response import ResponsePlan, plan
from forensics.analysis.steps import Step

if TYPE_CHECKING:
    import pandas as pd

    from forensics.api import Case
    from forensics.detect.summary import DetectorSummary
    from forensics.investigate import Investigation

FILL = "[analyst: fill in]"
OWNER, DUE = "[owner]", "[due date]"

ROOT_CAUSE = {
    "unauthenticated_proxy": "The LiteLLM proxy was reachable from the internet and served requests without a virtual "
                             "key (no master_key / authentication enforced).",
    "leaked_key": "A virtual key was used from addresses its owner never used: the key leaked or was shared.",
    "credential_stuffing": "Keys were guessed or replayed against the proxy; some were valid.",
    "provider_key_outside_proxy": "A provider API key was used directly, outside the proxy: the provider key itself "
                                  "leaked.",
}


@dataclass(frozen=True)
class Event:
    time: datetime | None          # None: the analyst fills it in
    what: str
    source: str                    # which log shows it ('analyst' when nobody's log does)


@dataclass(frozen=True)
class ActionItem:
    action: str
    why: str
    priority: str                  # needed | recommended | review
    owner: str = OWNER
    due: str = DUE


@dataclass
class IncidentStory:
    """One attack or suspicious incident told as a postmortem tells it."""
    incident: str
    root_cause: str
    trigger: str
    impact: list[tuple[str, str]]
    detection: list[tuple[str, str]]
    timeline: list[Event]
    resolution: list[tuple[str, str]]
    leads: Leads | None


@dataclass
class Postmortem:
    recommendations: list[dict]               # {item, status, finding, action}, in the write-up's checklist order
    detector: DetectorSummary | None          # None when the detector was left out
    stories: list[IncidentStory] = field(default_factory=list)
    action_items: list[ActionItem] = field(default_factory=list)
    lessons: list[tuple[str, str]] = field(default_factory=list)     # (went well | went wrong | got lucky, text)
    owners: pd.DataFrame | None = None        # who each key of the case belongs to
    response: ResponsePlan | None = None      # what to block and rotate (analysis/response.py)


def course_step(incident_table: str, name: str) -> Step:
    """Data-side moments of an incident: first and last request, the end of its busiest 15 minutes, the first and
    last provider 429, and legitimate requests that failed while it ran (parameters: start, end)."""
    return Step(name, f"""
        WITH mine AS (SELECT r.* FROM llm_requests r JOIN {incident_table} USING (request_id)),
        spend AS (
            SELECT start_time, sum(coalesce(cost_usd, 0)) OVER (ORDER BY start_time
                RANGE BETWEEN INTERVAL 899999999 MICROSECONDS PRECEDING AND CURRENT ROW) AS spend_15m FROM mine
        ), others AS (
            SELECT r.* FROM llm_requests r ANTI JOIN {incident_table} USING (request_id)
            WHERE r.start_time BETWEEN CAST(? AS TIMESTAMP) AND CAST(? AS TIMESTAMP)
        )
        SELECT (SELECT min(start_time) FROM mine) AS first_request, (SELECT max(start_time) FROM mine) AS last_request,
               (SELECT arg_max(start_time, spend_15m) FROM spend) AS peak_15m_end,
               (SELECT max(spend_15m) FROM spend) AS peak_15m_usd,
               (SELECT min(start_time) FROM mine WHERE error_code = '429') AS first_429,
               (SELECT max(start_time) FROM mine WHERE error_code = '429') AS last_429,
               (SELECT count(*) FROM mine WHERE error_code = '429') AS n_429,
               (SELECT count(*) FROM others) AS others, (SELECT count(*) FROM others WHERE status <> 'success') AS
               others_failed, (SELECT count(DISTINCT key_hash) FROM others WHERE status <> 'success') AS others_keys
    """)


def _when(t) -> str:
    return "-" if t is None else f"{t:%Y-%m-%d %H:%M:%S} UTC"


def story(case: Case, f, inc: dict, findings: dict, detector, logs_end) -> IncidentStory:
    """The postmortem of one incident, from its findings entry `inc` and the investigation's finding `f`."""
    h = f.headline
    lead = leads(case, f)
    timeline: list[Event] = []
    course = None
    if f.request_ids and f.incident.table:
        n = f.incident.id.split("-")[1]
        course = case.query(course_step(f.incident.table, f"incident_{n}_course"),
                            [f.incident.start, f.incident.end]).iloc[0]
    if lead is not None and len(lead.recon):
        r = lead.recon.iloc[0]
        timeline.append(Event(r["time"].to_pydatetime(), f"first reconnaissance: {r['method']} {r['path']} from "
                              f"{r['client_ip']} ({r['network']}), {len(lead.recon)} such request(s) before the attack",
                              "nginx"))
    timeline.append(Event(f.incident.start, f"first attack request ({inc['kind'].replace('_', ' ')})",
                          "+".join(inc["sources"])))
    if course is not None and course["peak_15m_end"] is not None:
        timeline.append(Event(course["peak_15m_end"].to_pydatetime(),
                              f"end of the busiest 15 minutes: {money(course['peak_15m_usd'])} "
                              f"(peak {money(inc['peak_cost_per_hour_usd'])}/h)", "litellm"))
    if course is not None and course["n_429"]:
        timeline.append(Event(course["first_429"].to_pydatetime(),
                              f"first provider 429 (rate limited); {int(course['n_429']):,} in all until "
                              f"{_when(course['last_429'].to_pydatetime())}", "litellm"))
    if detector is not None and detector.error is None:
        catch = next((c for c in detector.incidents if c.incident == inc["id"]), None)
        if catch is not None and catch.first_alert is not None:
            timeline.append(Event(catch.first_alert, f"the anomaly detector would have alerted "
                                  f"({catch.delay_minutes:.1f} min after the start)", "detector replay"))
    timeline.append(Event(f.incident.end, "last attack request", "+".join(inc["sources"])))
    for what in ("noticed (how, by whom)", "contained (what was done)", "resolved (what changed)"):
        timeline.append(Event(None, f"{what}: {FILL}", "analyst"))
    timeline.sort(key=lambda e: (e.time is None, e.time or datetime.min))

    impact = [("Money", f"{money(inc['cost_usd'])} at list prices over {h.requests:,} requests ({h.served:,} served, "
                        f"{h.failed:,} failed); peak {money(inc['peak_cost_per_hour_usd'])}/h, "
                        + (f"{h.times_baseline:.1f}x the baseline" if h.times_baseline is not None else
                           "no baseline spend to compare with"))]
    p = inc.get("projection") or {}
    if p:
        impact.append(("Had nobody stopped it", f"{money(p['24h'])} a day, {money(p['30d'])} a month"))
    if course is not None:
        if course["others_failed"]:
            impact.append(("Users", f"{int(course['others_failed']):,} of {int(course['others']):,} legitimate "
                                    f"requests failed while the incident ran ({int(course['others_keys'])} key(s)): "
                                    "the provider's rate limit hit everyone sharing its key"))
        else:
            impact.append(("Users", f"none of the {int(course['others']):,} legitimate requests during the incident "
                                    "failed"))
    if inc["kind"] == "provider_key_outside_proxy":
        impact.append(("Users", "none through the proxy; the provider key's quota was shared with the attacker"))
    trigger = (f"First request {_when(f.incident.start)}"
               + (f" from {min(inc['ips'], key=lambda i: i['first_seen'] or '~')['ip']}" if inc["ips"] else "")
               + (f", after reconnaissance from the same network since {_when(timeline[0].time)}"
                  if lead is not None and len(lead.recon) else "")
               + (f"; {len(lead.forged)} forged X-Forwarded-For value(s) ("
                  + ", ".join(str(v) for v in lead.forged["forged_hop"][:5]) + ") show intent to pass as an internal "
                  "caller" if lead is not None and len(lead.forged) else "") + ".")
    detection = _detection(inc, detector, f)
    end = f.incident.end
    if logs_end is not None and (logs_end - end).total_seconds() < 15 * 60:
        state = f"ONGOING at the end of the logs ({_when(logs_end)}): contain first"
    else:
        state = f"stopped at {_when(end)}" + (f", {(logs_end - end).total_seconds() / 3600:.1f} h before the logs end"
                                               if logs_end is not None else "")
    resolution = [("Data", state), ("What stopped it", FILL), ("What was changed, when", FILL)]
    return IncidentStory(inc["id"], ROOT_CAUSE.get(inc["kind"], "Abnormal usage; see the evidence."), trigger,
                         impact, detection, timeline, resolution, lead)


def _detection(inc: dict, detector, f) -> list[tuple[str, str]]:
    out = [("How it was noticed", FILL), ("Time to detect", f"{FILL} (noticed minus {_when(f.incident.start)})")]
    if detector is not None and detector.error is None:
        catch = next((c for c in detector.incidents if c.incident == inc["id"]), None)
        if catch is not None and catch.first_alert is not None:
            out.append(("The detector, replayed", f"first alert {_when(catch.first_alert)}, "
                                                  f"{catch.delay_minutes:.1f} min after the start; "
                                                  f"{catch.flagged:,} of {catch.requests:,} requests flagged"))
    alert = next((c for c in inc["controls"] if c["control"].startswith("cost_alert")), None)
    if alert is not None:
        out.append(("A spend alert, replayed", f"{alert['control']} would have saved {money(alert['saved_usd'])} of "
                                               f"{money(alert['saved_usd'] + alert['loss_usd'])}"))
    return out


def action_items(recs: list[dict]) -> list[ActionItem]:
    """The checklist rows that need doing, most urgent first, each with an owner and a due date to fill in."""
    rank = {"needed": 0, "recommended": 1, "review": 2}
    todo = [r for r in recs if r["status"] in rank]
    return [ActionItem(r["action"], f"{r['item']}: {r['finding']}", r["status"])
            for r in sorted(todo, key=lambda r: rank[r["status"]])]


def lessons(findings: dict, stories: list[IncidentStory], recs: list[dict]) -> list[tuple[str, str]]:
    """What went well, what went wrong, where we got lucky: from the data; the analyst adds the rest."""
    out = []
    status = {r["item"]: r["status"] for r in recs}
    if all(m not in findings["coverage"]["missing"] for m in ("litellm", "provider")):
        out.append(("went well", "LiteLLM and provider logs were kept: every request and its cost could be "
                                 "reconstructed and reconciled with the bill."))
    wrong = [item for item, s in status.items() if s == "needed"]
    if wrong:
        out.append(("went wrong", "Missing controls from the deployment checklist: " + ", ".join(wrong) + "."))
    if any("provider 429" in e.what for s in stories for e in s.timeline):
        out.append(("got lucky", "The provider's rate limit (429s) capped the spend, at the price of legitimate "
                                 "traffic sharing the key."))
    out.append(("to discuss", FILL))
    return out


def prepare(case: Case, inv: Investigation, findings: dict, run_detector: bool = True) -> Postmortem:
    detector = None
    if run_detector:
        from forensics.detect.summary import summarize

        detector = summarize(case, findings)
    recs = recommendations(case, findings, inv.coverage)
    stories = [story(case, f, inc, findings, detector, inv.logs_end)
               for f, inc in zip(inv.incidents, findings["incidents"]) if inc["verdict"] != "benign"]
    owners = case_owners(case)
    return Postmortem(recs, detector, stories, action_items(recs), lessons(findings, stories, recs), owners,
                      plan(case, inv, findings, owners_map(owners)))
