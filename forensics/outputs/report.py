"""The postmortem: `report.html` (one self-contained file) and `report.md` (figures as PNG beside it).

Both are rendered from one model built here from findings.json's own numbers (so the documents and the JSON never
disagree) plus the investigation's tables, the detector's results and the figures. Every value that came from a log
is text to the templates: jinja2 escapes it in HTML, `md` escapes it in Markdown, and control characters (ANSI
escapes, newlines in a user agent) are shown as \\xHH, never interpreted.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import jinja2
import pandas as pd

from forensics import __version__
from forensics.analysis.steps import STEP_LOG
from forensics.outputs import figures as figs

TOP_ROWS = 20                 # tables show the top rows; the rest are counted, and all are in findings.json
HASH_CHARS = 12
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\n\t]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~])")


def printable(value) -> str:
    """A log value as inert text: control characters (ANSI escapes, CR/LF, NUL) become visible \\xHH."""
    if value is None:
        return ""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def md(value) -> str:
    """Text for a Markdown table cell: printable, and every character Markdown or HTML would act on escaped."""
    return _MD_SPECIAL.sub(r"\\\1", printable(value)).replace("&", "&amp;")


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


def incident_tables(inc: dict) -> list[Table]:
    out = [table("Client addresses", ["address", "requests", "cost", "first seen", "last seen"],
                 _ip_rows(inc["ips"]), numeric={1, 2}),
           table("Keys", ["key (sha256 prefix, hint)", "requests", "cost"],
                 [[key_label(k["key_hash"], k["key_hint"]), count(k["requests"]), money(k["cost_usd"])]
                  for k in inc["keys"]], numeric={1, 2}),
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


def controls_table(inc: dict, results) -> Table | None:
    if not inc["controls"]:
        return None
    affected = {c.control: c.requests_affected for c in results}
    rows = [[c["control"], CONTROL_WORDS.get(c["control"].split("_")[0] + "_", ""), money(c["loss_usd"]),
             money(c["saved_usd"]), count(affected.get(c["control"]))] for c in inc["controls"]]
    return Table("Controls replayed on this incident", ["control", "what it does", "loss it would have allowed",
                                                        "saved", "requests rejected or capped"], rows, {2, 3, 4})


CONTROL_WORDS = {
    "auth_": "virtual key required; no key or an unknown key rejected",
    "key_": "per-key limit (rate per minute or monthly budget)",
    "ip_": "nginx limit_req per real client address",
    "max_": "max_tokens capped by the proxy; completions re-priced",
    "global_": "monthly budget over all proxy traffic",
    "cost_": "cost alert on the trailing hour, responder acts within the delay",
}


# --- the detector ------------------------------------------------------------------------------------------------

def detector_summary(con: duckdb.DuckDBPyConnection, findings: dict) -> dict:
    """Train on the quiet baseline, score every request, and say what it caught of each incident."""
    from forensics.detect.run import detect

    try:
        scores, det, frame = detect(con)
    except ValueError as e:
        return {"error": printable(str(e).splitlines()[0] if str(e) else type(e).__name__)}
    ips = con.execute("SELECT request_id, client_ip FROM llm_requests").df()
    merged = frame[["request_id", "start_time"]].merge(scores, on="request_id").merge(ips, on="request_id", how="left")
    card = det.card
    train_end = datetime.fromisoformat(card.train_end.replace("Z", "+00:00")).replace(tzinfo=None)
    base = merged[merged["start_time"] < train_end]
    days = max((base["start_time"].max() - base["start_time"].min()).total_seconds() / 86400, 1 / 24) \
        if len(base) else 1
    rows = []
    for inc in findings["incidents"]:
        ids = set(inc["request_ids"])
        if not ids:
            rows.append([inc["id"], inc["kind"], "0", "-", "-", "no proxy requests to score"])
            continue
        hit = merged[merged["request_id"].isin(ids)]
        flagged = hit[hit["flagged"]]
        first = flagged["start_time"].min() if len(flagged) else None
        start = datetime.fromisoformat(inc["start"].replace("Z", "+00:00")).replace(tzinfo=None)
        rows.append([inc["id"], inc["kind"], f"{len(flagged):,} of {len(hit):,}",
                     f"{len(flagged) / len(hit):.1%}" if len(hit) else "-",
                     when(first) if first is not None else "-",
                     f"{(first - start).total_seconds() / 60:.1f} min after the start" if first is not None else
                     "never flagged"])
    top = merged[merged["flagged"]].sort_values(["score", "request_id"], ascending=[False, True]).head(10)
    return {
        "train": f"{when(card.train_start)} .. {when(card.train_end)}",
        "train_requests": card.train_requests, "threshold": f"{card.threshold:.4f}",
        "features": len(card.features), "flagged": int(merged["flagged"].sum()), "scored": len(merged),
        "baseline_alerts_per_day": f"{base['flagged'].sum() / days:.2f}",
        "per_incident": Table("What the detector caught of each incident",
                              ["incident", "kind", "flagged", "recall", "first alert", "delay"], rows, {2, 3}),
        "top": Table("Highest-scoring requests", ["time", "request id", "client", "score", "why"],
                     [[when(r.start_time), printable(r.request_id), printable(r.client_ip), f"{r.score:.3f}",
                       printable(r.reasons)] for r in top.itertuples()], {3}),
    }


# --- recommendations -----------------------------------------------------------------------------------------------

CHECKLIST = ["authentication", "rate limits", "budgets", "network exposure", "request validation", "monitoring",
             "alerts", "secret handling"]


def _control(findings, control_id):
    """(saved, incident cost) summed over attack/suspicious incidents for one control."""
    saved = total = 0.0
    for inc in findings["incidents"]:
        if inc["verdict"] == "benign":
            continue
        for c in inc["controls"]:
            if c["control"] == control_id:
                saved += c["saved_usd"]
                total += c["saved_usd"] + c["loss_usd"]
    return saved, total


def recommendations(con: duckdb.DuckDBPyConnection, findings: dict, coverage) -> list[dict]:
    """One entry per item of the incident write-up's checklist: what the data shows, and what to do."""
    watch = [i for i in findings["incidents"] if i["verdict"] != "benign"]
    kinds = {i["kind"] for i in watch}
    keyless_ok, keyless_ips = con.execute("""
        SELECT count(*) FILTER (WHERE status = 'success'), count(DISTINCT client_ip) FILTER (WHERE status = 'success')
        FROM llm_requests WHERE key_hash IS NULL""").fetchone()
    (peak_rpm,) = con.execute("""
        SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM llm_requests
        GROUP BY coalesce(key_hash, 'no key:' || coalesce(client_ip, '?')), date_trunc('minute', start_time))
    """).fetchone()
    (big_max_tokens, with_max_tokens) = con.execute(
        "SELECT count(*) FILTER (WHERE max_tokens > 1000), count(max_tokens) FROM llm_requests").fetchone()
    addresses = sum(len(i["ips"]) for i in watch)
    out = []

    def add(item, status, finding, action):
        out.append({"item": item, "status": status, "finding": finding, "action": action})

    saved, total = _control(findings, "auth_required")
    if keyless_ok:
        add("authentication", "needed",
            f"{keyless_ok:,} requests were served with no virtual key, from {keyless_ips:,} addresses; requiring a "
            f"key would have saved {money(saved)} of {money(total)}.",
            "Set general_settings.master_key and issue virtual keys (/key/generate); never run the proxy "
            "without them.")
    else:
        add("authentication", "in place", "Every served request carried a virtual key.",
            "Keep master_key set; review who holds keys." + (" A valid key was abused: rotate it." if
                                                             "leaked_key" in kinds else ""))
    s_rpm, t_rpm = _control(findings, "key_rpm_20")
    s_ip, t_ip = _control(findings, "ip_rate_10rps")
    add("rate limits", "needed" if s_rpm > 0 or s_ip > 0 else "recommended" if watch else "review",
        f"Busiest key (or keyless address) made {peak_rpm:,} requests in one minute. Replayed: 20 rpm per key saves "
        f"{money(s_rpm)}, nginx 10 r/s per address saves {money(s_ip)} of {money(t_ip or t_rpm)}.",
        "Set rpm/tpm per key and model (LiteLLM) and limit_req per client address at nginx; both are cheap, "
        "neither replaces authentication.")
    s_kb, t_kb = _control(findings, "key_budget_100")
    s_gb, t_gb = _control(findings, "global_budget_1000")
    add("budgets", "needed" if s_kb > 0 or s_gb > 0 else "recommended" if watch else "review",
        f"Replayed: $100 per key per month saves {money(s_kb)}, $1,000 per month over the proxy saves {money(s_gb)} "
        f"of {money(t_gb or t_kb)}.",
        "Set max_budget with budget_duration on every key and a global max_budget; budgets bound the worst case.")
    outside = [i for i in watch if i["kind"] == "provider_key_outside_proxy"]
    add("network exposure", "needed" if "unauthenticated_proxy" in kinds else "recommended" if watch else "review",
        f"{addresses:,} client addresses took part in the incidents." if watch else "No incident found.",
        "Keep the proxy on a private network (VPN, private ingress); expose only what clients need, behind "
        "authentication.")
    s_mt, t_mt = _control(findings, "max_tokens_1000")
    share = f"{big_max_tokens:,} of {with_max_tokens:,} requests that logged max_tokens asked for more than 1000" \
        if with_max_tokens else "max_tokens was not logged"
    add("request validation", "needed" if s_mt > 0 else "recommended" if watch else "review",
        f"{share}; capping max_tokens at 1000 saves {money(s_mt)} of {money(t_mt)}.",
        "Cap max_tokens per model and restrict each key to the models it needs.")
    gaps = [g["what"] for g in coverage.gaps] if coverage.gaps else []
    add("monitoring", "needed" if gaps else "in place",
        ("Logging gaps: " + "; ".join(gaps) + ".") if gaps else "LiteLLM, nginx and provider data all present.",
        "Log max_tokens, the client address and the LiteLLM call id in nginx; keep spend logs and provider "
        "usage exports for at least 90 days.")
    s_al, t_al = _control(findings, "cost_alert_50h_15m")
    add("alerts", "needed" if s_al > 0 else "recommended" if watch else "review",
        f"A $50/h spend alert with a 15-minute response saves {money(s_al)} of {money(t_al)}." if watch else
        "No incident to replay.",
        "Alert on trailing-hour spend (proxy and provider billing), on 401 bursts and on new client addresses "
        "per key; page someone who can act within 15 minutes.")
    add("secret handling", "needed" if outside or "leaked_key" in kinds or "credential_stuffing" in kinds
        else "review",
        (f"{len(outside)} provider key(s) used outside the proxy: the provider key itself leaked. " if outside else "")
        + ("A virtual key was used from new addresses. " if "leaked_key" in kinds else "")
        + ("Many keys were tried against the proxy. " if "credential_stuffing" in kinds else "")
        + "Keys appear here only as sha256 hash and sk-...abcd hint.",
        "Rotate every provider key the proxy holds and any virtual key involved; keep keys in a secret "
        "manager, never in logs (no Authorization header in access logs).")
    order = {c: i for i, c in enumerate(CHECKLIST)}
    return sorted(out, key=lambda r: order[r["item"]])


# --- the model ------------------------------------------------------------------------------------------------------

def _files(con, names: dict) -> Table:
    rows = con.execute("""
        SELECT path, format, records, loaded, quarantined, sha256, size_bytes, coalesce(message, '')
        FROM ingest_files WHERE status = 'loaded' ORDER BY path, file_id""").fetchall()
    rows = [(names.get(r[5], r[0]), *r[1:]) for r in rows]
    total = ["total", f"{len(rows)} files", count(sum(r[2] or 0 for r in rows)), count(sum(r[3] or 0 for r in rows)),
             count(sum(r[4] or 0 for r in rows)), "", "", ""]
    return Table("Input files", ["file", "format", "records read", "loaded", "quarantined", "sha256", "bytes", "note"],
                 [[printable(c) if not isinstance(c, int) else count(c) for c in r] for r in rows] + [total],
                 {2, 3, 4, 6})


def _quarantine(con, names: dict) -> Table:
    rows = con.execute("""
        SELECT f.sha256, q.reason, count(*) AS n, min(q.record_no) AS first_line, f.path
        FROM quarantine q JOIN ingest_files f USING (file_id) GROUP BY ALL ORDER BY f.path, n DESC, q.reason
    """).fetchall()
    rows = [(names.get(sha, path), r, n, line) for sha, r, n, line, path in rows]
    return table("Quarantined records by file and reason", ["file", "reason", "records", "first line"],
                 [[p, r, count(n), count(line)] for p, r, n, line in rows], {2, 3})


def _reconciliation(findings, inv) -> list[Table]:
    rows = [[r["provider"], f"{when(r['start'])} .. {when(r['end'])}", money(r["provider_cost_usd"]),
             money(r["proxy_cost_usd"]), money(r["unexplained_usd"]), str(len(r["outside_proxy"]))]
            for r in findings["reconciliation"]]
    out = [Table("Provider bill against the proxy's logs", ["provider", "window", "provider billed",
                                                             "proxy re-priced", "unexplained", "keys outside proxy"],
                 rows, {2, 3, 4, 5})]
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


def _summary(findings, inv, con) -> list[tuple[str, str]]:
    watch = [i for i in findings["incidents"] if i["verdict"] != "benign"]
    base = findings["baseline"]
    if not watch:
        return [("What", "No incident: nothing abnormal found in the case."),
                ("When", f"{when(findings['coverage']['start'])} .. {when(findings['coverage']['end'])}"),
                ("How much", f"{money(findings['cost']['total_usd'])} in all; baseline "
                             f"{money(base['cost_per_hour_usd'])}/h"),
                ("Who", f"{len(findings['cost']['by_key'])} keys, {len(findings['cost']['by_ip'])} addresses"),
                ("Status", "no action needed on this evidence")]
    main = max(watch, key=lambda i: i["cost_usd"])
    others = len(watch) - 1
    what = f"{main['id']} {main['verdict']}: {main['kind'].replace('_', ' ')}" + \
        (f" (and {others} more incident{'s' if others > 1 else ''})" if others else "")
    if main.get("evidence"):
        what += f". {main['evidence'][0]}"
    p = main.get("projection") or {}
    how = (f"{money(main['cost_usd'])} over {count(main['requests'])} requests (peak "
           f"{money(main['peak_cost_per_hour_usd'])}/h against a baseline of {money(base['cost_per_hour_usd'])}/h)")
    if p:
        how += (f"; unchecked it would have cost {money(p['24h'])} a day (95% interval {money(p['low_24h'])} – "
                f"{money(p['high_24h'])})")
    keys = [k for k in main["keys"] if k["key_hash"]]
    who = (f"{len(main['ips'])} client addresses; " if main["ips"] else "") + \
        (f"{len(keys)} key(s): " + ", ".join(key_label(k["key_hash"], k["key_hint"]) for k in keys[:3])
         if keys else "no virtual key" if main["keys"] else "a provider key outside the proxy")
    if main["user_agents"]:
        who += "; user agents " + ", ".join(f"{u['user_agent']} ({u['requests']:,})" for u in main["user_agents"][:3])
    (last,) = con.execute("SELECT max(coalesce(end_time, start_time)) FROM llm_requests").fetchone()
    end = datetime.fromisoformat(main["end"].replace("Z", "+00:00")).replace(tzinfo=None)
    if last is not None and (last - end).total_seconds() < 15 * 60:
        status = f"ONGOING: incident traffic until {when(main['end'])}, within 15 minutes of the end of the logs"
    else:
        gap = f" ({(last - end).total_seconds() / 3600:.1f} h before the logs end)" if last is not None else ""
        status = f"stopped at {when(main['end'])}{gap}"
    unexplained = sum(r["unexplained_usd"] for r in findings["reconciliation"])
    if unexplained > 1:
        status += f"; {money(unexplained)} billed by the provider that the proxy never logged"
    return [("What", what), ("When", f"{when(main['start'])} .. {when(main['end'])} "
                                      f"({duration(main['start'], main['end'])})"),
            ("How much", how), ("Who", who), ("Status", status)]


def build_model(con: duckdb.DuckDBPyConnection, inv, findings: dict, run_detector: bool = True) -> dict:
    """Everything the templates print. Numbers come from `findings` wherever findings.json has them."""
    band = figs.baseline_band(con, inv) if any(f.request_ids for f in inv.incidents) else None
    incidents = []
    all_figures: list[figs.Figure] = []
    for f, inc in zip(inv.incidents, findings["incidents"]):
        section_figs = []
        if f.request_ids:
            section_figs.append(figs.timeline_figure(con, f, band))
        else:
            section_figs.append(figs.provider_figure(f))
        section_figs += [figs.projection_figure(f), figs.controls_figure(f)]
        section_figs = [x for x in section_figs if x is not None]
        all_figures += section_figs
        incidents.append({
            "f": inc, "duration": duration(inc["start"], inc["end"]), "tables": incident_tables(inc),
            "projection": projection_table(inc, findings["baseline"]["cost_per_hour_usd"]),
            "controls": controls_table(inc, f.controls), "figures": section_figs,
            "phases": _phases(f),
        })
    cost = findings["cost"]
    overall = [
        table("Cost by model", ["model", "requests", "cost"],
              [[m["model"], count(m["requests"]), money(m["cost_usd"])] for m in cost["by_model"]], {1, 2},
              total=["total", count(sum(m["requests"] for m in cost["by_model"])), money(cost["total_usd"])]),
        table("Cost by key", ["key (sha256 prefix, hint)", "requests", "cost"],
              [[key_label(k["key_hash"], k["key_hint"]), count(k["requests"]), money(k["cost_usd"])]
               for k in cost["by_key"]], {1, 2}),
        table("Cost by client address", ["address", "requests", "cost"],
              [[i["ip"], count(i["requests"]), money(i["cost_usd"])] for i in cost["by_ip"]], {1, 2}),
        table("Requests by user agent", ["user agent", "requests", "cost"],
              [[printable(r.user_agent) if r.user_agent is not None else "(none)", count(r.requests),
                money(r.cost_usd)] for r in inv.by_user_agent.itertuples()], {1, 2}),
    ]
    names = {i["sha256"]: i["path"] for i in findings["inputs"]}
    steps = sorted({s for fig in all_figures for s in fig.steps} | {"baseline", "coverage", "daily_reconciliation"})
    return {
        "tool_version": __version__, "generated_at": findings["generated_at"], "findings": findings,
        "summary": _summary(findings, inv, con), "incidents": incidents, "overall": overall,
        "reconciliation": _reconciliation(findings, inv),
        "detector": detector_summary(con, findings) if run_detector else None,
        "coverage": {"start": when(findings["coverage"]["start"]), "end": when(findings["coverage"]["end"]),
                     "sources": findings["coverage"]["sources"], "gaps": inv.coverage.gaps},
        "files": _files(con, names), "quarantine": _quarantine(con, names),
        "recommendations": recommendations(con, findings, inv.coverage),
        "nginx_match": _nginx_match(inv),
        "sql": [(name, STEP_LOG[name]) for name in steps if name in STEP_LOG],
        "figures": all_figures, "baseline": findings["baseline"], "money": money, "count": count,
    }


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
    r = m.iloc[0].to_dict()
    parts = [f"{k.replace('_', ' ')}: {v:,}" if isinstance(v, int) else f"{k.replace('_', ' ')}: {v}"
             for k, v in r.items()]
    return "; ".join(parts)


# --- rendering -----------------------------------------------------------------------------------------------------

def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(
        enabled_extensions=("html", "html.j2"), default_for_string=True), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["md"] = md
    env.filters["printable"] = printable
    env.filters["b64"] = lambda b: base64.b64encode(b).decode("ascii")
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
    (out_dir / "report.html").write_text(render_html(model), encoding="utf-8")
    (out_dir / "report.md").write_text(render_md(model), encoding="utf-8")
    return [out_dir / "report.html", out_dir / "report.md", *written]

