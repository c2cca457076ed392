"""The postmortem: `report.html` (one self-contained file) and `report.md` (figures as PNG beside it).

Both are rendered from one model built here from findings.json's own numbers (so the documents and the JSON never
disagree) plus the investigation's tables, the detector's results and the figures. Every value that came from a log
is text to the templates: jinja2 escapes it in HTML, `md` escapes it in Markdown, and control characters (ANSI
escapes, newlines in a user agent), bidi controls and invisible characters are shown as \\xHH / \\uHHHH, never
interpreted (outputs/safe.py).
"""
from __future__ import annotations

import base64
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import jinja2
import markupsafe
import pandas as pd

from forensics import __version__
from forensics.analysis.status import status as status_of
from forensics.outputs import figures as figs
from forensics.outputs import sections as pm_sections
from forensics.outputs.safe import md, printable, visible

TOP_ROWS = 20                 # tables show the top rows; the rest are counted, and all are in findings.json
HASH_CHARS = 12
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def money(v) -> str:
    if v is None:
        return "-"
    return f"${float(v):,.2f}"


def count(v) -> str:
    return "-" if v is None else f"{int(v):,}"


def when(t) -> str:
    """UTC to the second for reading, from a findings ISO string or a datetime."""
    if t is None or t is pd.NaT:
        return "-"
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00")).replace(tzinfo=None)
    if isinstance(t, pd.Timestamp):
        t = t.to_pydatetime()
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(start: str, end: str) -> str:
    s = datetime.fromisoformat(start.replace("Z", "+00:00"))
    e = datetime.fromisoformat(end.replace("Z", "+00:00"))
    minutes = round((e - s).total_seconds() / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def requests_text(inc: dict) -> str:
    """'1,241 requests (1,170 served, 71 failed)' from findings' served/failed (analysis/headline.py)."""
    n, failed = inc["requests"], inc.get("failed", 0)
    return f"{count(n)} requests" + (f" ({count(inc['served'])} served, {count(failed)} failed)" if failed else "")


def times_text(inc: dict) -> str:
    t = inc.get("times_baseline")
    return "-" if t is None else f"{t:.1f}x"


def peak_text(inc: dict, base: dict) -> str:
    """'peak $510.28/h, 38.7x the baseline of $13.18/h': the one way the peak and its multiple are written."""
    if inc.get("times_baseline") is None:
        return f"peak {money(inc['peak_cost_per_hour_usd'])}/h (no baseline spend to compare with)"
    return (f"peak {money(inc['peak_cost_per_hour_usd'])}/h, {times_text(inc)} the baseline of "
            f"{money(base['cost_per_hour_usd'])}/h")


def key_label(key_hash, hint) -> str:
    if not key_hash:
        return "(no key)"
    return f"{key_hash[:HASH_CHARS]}… {hint or ''}".strip()


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)     # column indexes to right-align
    note: str = ""


def table(title, columns, rows, numeric=(), total=None) -> Table:
    shown = rows[:TOP_ROWS]
    note = f"top {TOP_ROWS} of {len(rows)} rows; all are in findings.json" if len(rows) > TOP_ROWS else ""
    if total is not None:
        shown = [*shown, total]
    return Table(title, columns, [[printable(c) for c in r] for r in shown], set(numeric), note)


def _ip_rows(ips):
    return [[i["ip"], count(i["requests"]), money(i["cost_usd"]), when(i.get("first_seen")), when(i.get("last_seen"))]
            for i in ips]


def incident_tables(inc: dict, owners: dict) -> list[Table]:
    out = [table("Client addresses", ["address", "requests", "cost", "first seen", "last seen"],
                 _ip_rows(inc["ips"]), numeric={1, 2}),
           table("Keys", ["key (sha256 prefix, hint)", "owner (alias, team, user, end users)", "requests", "cost"],
                 [[key_label(k["key_hash"], k["key_hint"]), owners.get(k["key_hash"], "(no virtual key)"),
                   count(k["requests"]), money(k["cost_usd"])] for k in inc["keys"]], numeric={2, 3}),
           table("Models", ["model", "requests", "cost"],
                 [[m["model"], count(m["requests"]), money(m["cost_usd"])] for m in inc["models"]], numeric={1, 2}),
           table("User agents", ["user agent", "requests"],
                 [[u["user_agent"] if u["user_agent"] is not None else "(none)", count(u["requests"])]
                  for u in inc["user_agents"]], numeric={1})]
    return [t for t in out if t.rows]


def projection_table(inc: dict, baseline_per_hour: float) -> Table | None:
    p = inc.get("projection")
    if not p:
        return None
    rows = [["burn rate (last 60 min of the incident)", money(p["rate_usd_per_hour"]) + "/h", ""],
            ["baseline", money(baseline_per_hour) + "/h", ""],
            ["24 hours", money(p["24h"]), f"{money(p['low_24h'])} – {money(p['high_24h'])}"],
            ["7 days", money(p["7d"]), ""], ["30 days", money(p["30d"]), ""]]
    return Table("Projection had nobody stopped it", ["horizon", "cost", "95% interval"],
                 rows, {1, 2})


def nginx_errors_table(f) -> Table | None:
    """What nginx's error log says of the incident's minutes, per class (timeline.nginx_events_step)."""
    events = f.timeline.nginx_events if f.timeline is not None else None
    if events is None or events.empty:
        return None
    return table("nginx error log during the incident", ["class", "entries", "first", "last", "addresses", "zones"],
                 [[r.class_, count(r.entries), when(r.first), when(r.last), count(r.addresses), _names(r.zones)]
                  for r in events.rename(columns={"class": "class_"}).itertuples()], numeric={1, 4})


def _names(values) -> str:
    """A DuckDB list cell (a list, an array, or NULL: None, NaN, pd.NA) as 'a, b'."""
    return ", ".join(str(v) for v in values) if hasattr(values, "__len__") and not isinstance(values, str) else ""


def limits_table(f) -> Table | None:
    """The limits the case had while the incident ran (analysis.limits.limits_seen): the replay assumes none."""
    if f.limits is None or f.limits.empty:
        return None
    return table("Limits in force (nginx error log): the replay below assumes none",
                 ["directive", "zone", "effect", "requests", "addresses", "first", "last"],
                 [[r.directive, r.zone if isinstance(r.zone, str) else "", r.effect, count(r.requests),
                   count(r.addresses), when(r.first), when(r.last)] for r in f.limits.itertuples()], numeric={3, 4})


def controls_table(inc: dict, results) -> Table | None:
    if not inc["controls"]:
        return None
    affected = {c.control: c.requests_affected for c in results}
    rows = [[c["control"], CONTROL_WORDS.get(c["control"].split("_")[0] + "_", ""), money(c["loss_usd"]),
             money(c["saved_usd"]), count(affected.get(c["control"])), _collateral(c.get("collateral"))]
            for c in inc["controls"]]
    return Table("Controls replayed on this incident", ["control", "what it does", "loss it would have allowed",
                                                        "saved", "requests rejected or capped",
                                                        "legitimate requests blocked (collateral)"], rows, {2, 3, 4})


def _collateral(c) -> str:
    if not c or not c["requests"]:
        return "none"
    return f"{count(c['requests'])} ({money(c['usd'])}) from {when(c['from'])}"


CONTROL_WORDS = {
    "auth_": "virtual key required; no key or an unknown key rejected",
    "key_": "per-key limit (rate per minute or monthly budget)",
    "ip_": "nginx limit_req per real client address",
    "max_": "max_tokens capped by the proxy; completions re-priced",
    "global_": "monthly budget over all proxy traffic",
    "cost_": "cost alert on the trailing hour, responder acts within the delay",
}


# --- the model ------------------------------------------------------------------------------------------------------

def _files(inv, names: dict) -> Table:
    files = sorted(inv.files, key=lambda f: (f["path"], f["file_id"]))
    rows = [(names.get(f["sha256"], f["path"]), f["format"], f["records"], f["loaded"], f["quarantined"], f["sha256"],
             f["size_bytes"], f["message"] or "") for f in files]
    total = ["total", f"{len(rows)} files", count(sum(r[2] or 0 for r in rows)), count(sum(r[3] or 0 for r in rows)),
             count(sum(r[4] or 0 for r in rows)), "", "", ""]
    return Table("Input files", ["file", "format", "records read", "loaded", "quarantined", "sha256", "bytes", "note"],
                 [[printable(c) if not isinstance(c, int) else count(c) for c in r] for r in rows] + [total],
                 {2, 3, 4, 6})


def _quarantine(inv, names: dict) -> Table:
    rows = [(names.get(sha, path), r, n, line) for sha, r, n, line, path in inv.quarantine]
    return table("Quarantined records by file and reason", ["file", "reason", "records", "first line"],
                 [[p, r, count(n), count(line)] for p, r, n, line in rows], {2, 3})


def _reconciliation(findings, inv) -> list[Table]:
    logs = {rec.provider: (rec.logs_start, rec.logs_end) for rec in inv.reconciliation}
    rows = [[r["provider"], f"{when(r['start'])} .. {when(r['end'])}",
             " .. ".join(when(t) for t in logs.get(r["provider"], (None, None))), money(r["provider_cost_usd"]),
             money(r["proxy_cost_usd"]), money(r["unexplained_usd"]), str(len(r["outside_proxy"]))]
            for r in findings["reconciliation"]]
    out = [Table("Provider bill against the proxy's logs (billing buckets the logs cover; a provider key the proxy "
                 "did not use is followed over the provider's whole export)",
                 ["provider", "window", "proxy's logs", "provider billed", "proxy re-priced", "unexplained",
                  "keys outside proxy"], rows, {3, 4, 5, 6})]
    outside = [[r["provider"], k["api_key_id"], f"{when(k['start'])} .. {when(k['end'])}", money(k["cost_usd"])]
               for r in findings["reconciliation"] for k in r["outside_proxy"]]
    if outside:
        out.append(Table("Provider keys with usage the proxy never saw", ["provider", "key id", "window", "cost"],
                         outside, {3}))
    daily = []
    for rec in inv.reconciliation:
        if rec.daily is None:
            continue
        for r in rec.daily.itertuples():
            daily.append([rec.provider, when(r.bucket_start)[:10], money(r.provider_cost_usd), money(r.proxy_cost_usd),
                          money(r.unexplained_usd)])
    if daily:
        out.append(table("Per billing day", ["provider", "day (UTC)", "provider billed", "proxy re-priced",
                                             "unexplained"], daily, {2, 3, 4}))
    return out


def _summary(findings, inv) -> list[tuple[str, str]]:
    watch = [i for i in findings["incidents"] if i["verdict"] != "benign"]
    base = findings["baseline"]
    _, unseen = status_of(findings["incidents"], inv.coverage.missing)
    open_text = ("; cannot be ruled out on this evidence: " + "; ".join(unseen)) if unseen else ""
    if not watch:
        state = ("clear: no action needed on this evidence" if findings["status"] == "clear" else
                 "INCONCLUSIVE: nothing abnormal in the data there is" + open_text)
        return [("What", "No incident: nothing abnormal found in the case."),
                ("When", f"{when(findings['coverage']['start'])} .. {when(findings['coverage']['end'])}"),
                ("How much", f"{money(findings['cost']['total_usd'])} in all; baseline "
                             f"{money(base['cost_per_hour_usd'])}/h"),
                ("Who", f"{len(findings['cost']['by_key'])} keys, {len(findings['cost']['by_ip'])} addresses"),
                ("Status", state)]
    main = max(watch, key=lambda i: i["cost_usd"])
    others = len(watch) - 1
    what = f"{main['id']} {main['verdict']}: {main['kind'].replace('_', ' ')}" + \
        (f" (and {others} more incident{'s' if others > 1 else ''})" if others else "")
    if main.get("evidence"):
        what += f". {main['evidence'][0]}"
    p = main.get("projection") or {}
    if main.get("sources") == ["nginx"]:
        how = (f"cost unknown (nginx only: no LiteLLM or provider data) over {count(main['requests'])} requests "
               "to the LLM endpoints")
    else:
        how = f"{money(main['cost_usd'])} over {requests_text(main)}; {peak_text(main, base)}"
    if p:
        how += (f"; unchecked it would have cost {money(p['24h'])} a day (95% interval {money(p['low_24h'])} – "
                f"{money(p['high_24h'])})")
    keys = [k for k in main["keys"] if k["key_hash"]]
    who = (f"{len(main['ips'])} client addresses; " if main["ips"] else "") + \
        (f"{len(keys)} key(s): " + ", ".join(key_label(k["key_hash"], k["key_hint"]) for k in keys[:3])
         if keys else "no virtual key" if main["keys"] else
         "keys unknown (nginx logs none)" if main.get("sources") == ["nginx"] else "a provider key outside the proxy")
    if main["user_agents"]:
        who += "; user agents " + ", ".join(f"{u['user_agent']} ({u['requests']:,})" for u in main["user_agents"][:3])
    last = inv.logs_end or inv.coverage.end
    end = datetime.fromisoformat(main["end"].replace("Z", "+00:00")).replace(tzinfo=None)
    if last is not None and (last - end).total_seconds() < 15 * 60:
        status = f"ONGOING: incident traffic until {when(main['end'])}, within 15 minutes of the end of the logs"
    else:
        gap = f" ({(last - end).total_seconds() / 3600:.1f} h before the logs end)" if last is not None else ""
        status = f"stopped at {when(main['end'])}{gap}"
    unexplained = sum(r["unexplained_usd"] for r in findings["reconciliation"])
    if unexplained > 1:
        status += f"; {money(unexplained)} billed by the provider that the proxy never logged"
    status += open_text
    return [("What", what), ("When", f"{when(main['start'])} .. {when(main['end'])} "
                                      f"({duration(main['start'], main['end'])})"),
            ("How much", how), ("Who", who), ("Status", status)]


def build_model(inv, findings: dict, postmortem, steps) -> dict:
    """Everything the templates print. Numbers come from `findings` wherever findings.json has them, the rest from
    the investigation and the postmortem (analysis/postmortem.py); `steps` is the case's step log."""
    incidents = []
    all_figures: list[figs.Figure] = []
    owners = pm_sections.owners_map(postmortem.owners)
    for f, inc in zip(inv.incidents, findings["incidents"]):
        section_figs = []
        if f.request_ids:
            section_figs.append(figs.timeline_figure(f, inv.band))
        else:
            section_figs.append(figs.provider_figure(f))
        section_figs += [figs.projection_figure(f), figs.controls_figure(f)]
        section_figs = [x for x in section_figs if x is not None]
        all_figures += section_figs
        incidents.append({
            "f": inc, "duration": duration(inc["start"], inc["end"]), "tables": incident_tables(inc, owners),
            "projection": projection_table(inc, findings["baseline"]["cost_per_hour_usd"]),
            "controls": controls_table(inc, f.controls), "figures": section_figs,
            "nginx_errors": nginx_errors_table(f), "limits": limits_table(f),
            "phases": _phases(f),
            "headline": f"{when(inc['start'])} .. {when(inc['end'])} ({duration(inc['start'], inc['end'])}): "
                        f"{requests_text(inc)}, {money(inc['cost_usd'])}; {peak_text(inc, findings['baseline'])}.",
        })
    cost = findings["cost"]
    overall = [
        table("Cost by model", ["model", "requests", "cost"],
              [[m["model"], count(m["requests"]), money(m["cost_usd"])] for m in cost["by_model"]], {1, 2},
              total=["total", count(sum(m["requests"] for m in cost["by_model"])), money(cost["total_usd"])]),
        table("Cost by key", ["key (sha256 prefix, hint)", "owner (alias, team, user, end users)", "requests",
                              "cost"],
              [[key_label(k["key_hash"], k["key_hint"]), owners.get(k["key_hash"], "(no virtual key)"),
                count(k["requests"]), money(k["cost_usd"])] for k in cost["by_key"]], {2, 3}),
        table("Cost by client address", ["address", "requests", "cost"],
              [[i["ip"], count(i["requests"]), money(i["cost_usd"])] for i in cost["by_ip"]], {1, 2}),
        table("Requests by user agent", ["user agent", "requests", "cost"],
              [[printable(r.user_agent) if r.user_agent is not None else "(none)", count(r.requests),
                money(r.cost_usd)] for r in inv.by_user_agent.itertuples()], {1, 2}),
    ]
    names = {i["sha256"]: i["path"] for i in findings["inputs"]}
    shown = sorted({s for fig in all_figures for s in fig.steps} | {"baseline", "coverage", "daily_reconciliation"})
    logged = set(steps.names())
    return {
        "tool_version": __version__, "generated_at": when(findings["generated_at"]), "findings": findings,
        "sections": pm_sections.sections(postmortem, sys.modules[__name__]),
        "response_plan": postmortem.response,
        "response_source": "; ".join(f"{i['id']} {i['kind']} {when(i['start'])} .. {when(i['end'])}"
                                     for i in findings["incidents"] if i["verdict"] != "benign"),
        "summary": _summary(findings, inv), "incidents": incidents, "overall": overall,
        "reconciliation": _reconciliation(findings, inv),
        "detector": pm_sections.detector_section(postmortem.detector, sys.modules[__name__])
        if postmortem.detector is not None else None,
        "coverage": {"start": when(findings["coverage"]["start"]), "end": when(findings["coverage"]["end"]),
                     "sources": findings["coverage"]["sources"], "gaps": inv.coverage.gaps},
        "files": _files(inv, names), "quarantine": _quarantine(inv, names),
        "recommendations": _citing_settings(postmortem.recommendations, findings.get("configuration")),
        "configuration": findings.get("configuration"),
        "nginx_match": _nginx_match(inv),
        "sql": [(name, steps.sql_of(name)) for name in shown if name in logged],
        "figures": all_figures, "baseline": findings["baseline"], "money": money, "count": count,
    }


def _citing_settings(recommendations: list[dict], configuration: dict | None) -> list[dict]:
    """Each checklist item's action followed by the settings the configuration audit found at fault for it."""
    if not configuration:
        return recommendations
    out = []
    for r in recommendations:
        at_fault = [f for f in configuration["findings"] if f["checklist"] == r["item"]
                    and f["severity"] in ("critical", "high")]
        cited = "; ".join(f"{f['file']}{' line ' + str(f['line']) if f['line'] else ''}: {f['setting']}"
                          for f in at_fault)
        out.append({**r, "action": f"{r['action']} Settings at fault: {cited}." if cited else r["action"]})
    return out


def _phases(f) -> Table | None:
    tl = f.timeline
    if tl is None or tl.phases is None or not len(tl.phases):
        return None
    return Table("Phases", ["phase", "start", "end", "requests", "cost"],
                 [[printable(r.phase), when(r.start), when(r.end), count(r.requests), money(r.cost_usd)]
                  for r in tl.phases.itertuples()], {3, 4})


def _nginx_match(inv) -> str:
    m = inv.nginx_match
    if m is None or not len(m):
        return ""
    r = m.iloc[0]
    if not r["llm_requests"]:
        return ""
    rate = "-" if pd.isna(r["match_rate"]) else f"{float(r['match_rate']):.1%}"
    return (f"Of {count(r['llm_requests'])} LiteLLM requests, {count(r['by_call_id'])} were matched to their nginx "
            f"line by LiteLLM call id and {count(r['by_time'])} by client address and time; {count(r['unmatched'])} "
            f"have no nginx line ({rate} matched).")


# --- rendering -----------------------------------------------------------------------------------------------------

def _finalize(value):
    """Every value a template prints: hidden characters (bidi, zero-width, controls but line breaks and tabs) shown
    as escapes, whatever the value and its filters; markup stays markup."""
    if hasattr(value, "__html__"):                 # jinja2's Markup (a macro's output): rebuilt as Markup
        return type(value)(visible(str(value)))
    return visible(value) if isinstance(value, str) else value


_HYPHENATED = re.compile(r"\S*-\S*")


def nobreak(value):
    """HTML: the value escaped, every word with a hyphen (ids, dates, file names) kept on one line: browsers break
    after a hyphen, and 'chatcmpl-' / 'EU6d...' on two lines is no id any more. Markdown has no line breaks to fear."""
    if value is None:
        return value
    escaped = str(markupsafe.escape(value))       # entities hold no space and no hyphen: tokens stay whole
    return markupsafe.Markup(_HYPHENATED.sub(lambda m: f'<span class="nb">{m.group(0)}</span>', escaped))


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(
        enabled_extensions=("html", "html.j2"), default_for_string=True), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, finalize=_finalize)
    env.filters["md"] = md
    env.filters["printable"] = printable
    env.filters["b64"] = lambda b: base64.b64encode(b).decode("ascii")
    env.filters["nobreak"] = nobreak
    return env


def render_html(model: dict) -> str:
    return _env().get_template("report.html.j2").render(**model)


def render_md(model: dict) -> str:
    return _env().get_template("report.md.j2").render(**model)


def write(out_dir: Path, model: dict) -> list[Path]:
    """report.html, report.md and figures/*.png under out_dir; returns the paths written."""
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fig in model["figures"]:
        p = fig_dir / f"{fig.name}.png"
        p.write_bytes(fig.png)
        written.append(p)
    from forensics.outputs import response_files

    written += response_files.write(out_dir, model["response_plan"], model["response_source"])
    (out_dir / "report.html").write_text(render_html(model), encoding="utf-8")
    (out_dir / "report.md").write_text(render_md(model), encoding="utf-8")
    return [out_dir / "report.html", out_dir / "report.md", *written]

