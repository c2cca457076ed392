"""Small pure helpers for the response notebooks (notebooks/*.ipynb): open a case, shape frames for display.

No analysis here: the numbers come from `forensics.investigate`; these functions only select, sort and round them for
a reader (money rounded to cents for display only, key hashes cut to a prefix, never a full key).
"""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd

HASH_CHARS = 12          # key hashes are shown as their first 12 hex digits
WATCH_VERDICTS = ("attack", "suspicious")


def case_path_for(input_path: str | Path, case_dir: str | Path) -> Path:
    """The case database for INPUT: INPUT itself when it is a .duckdb case, else
    CASE_DIR/<INPUT's name>-<hash of its absolute path>.duckdb, so two inputs never share (and mix) one case, even
    two folders both called `logs`."""
    import hashlib

    p = Path(input_path)
    if p.suffix == ".duckdb":
        return p
    resolved = p.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    return Path(case_dir) / f"{resolved.name or 'case'}-{digest}.duckdb"


def open_case(input_path: str | Path, case_dir: str | Path, options=None):
    """(Case, case path): the case for INPUT, logs ingested into it (files already in the case are skipped by
    content, so re-running a notebook never doubles anything); a .duckdb INPUT is that case, as it is."""
    from forensics.api import Case

    path = case_path_for(input_path, case_dir)
    if Path(input_path).suffix == ".duckdb":
        if not path.is_file():
            raise FileNotFoundError(f"{input_path}: no such case database")
        return Case.open(path, options=options), path
    return Case.from_inputs([input_path], case_dir, options, case_path=path), path


def short_hash(value) -> str | None:
    """A key hash cut to its first HASH_CHARS characters (None stays None: a keyless request)."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    return str(value)[:HASH_CHARS]


def display_frame(df: pd.DataFrame | None, hash_columns=("key", "key_hash")) -> pd.DataFrame:
    """A copy for display: Decimal money as float (the display format rounds to cents), key hashes shortened,
    times to the second, a fresh 0..n index."""
    if df is None:
        return pd.DataFrame()
    out = df.copy().reset_index(drop=True)
    for col in out.columns:
        s = out[col]
        if col in hash_columns:
            out[col] = s.map(short_hash)
        elif s.dtype == object and s.map(lambda v: isinstance(v, Decimal)).any():
            out[col] = s.map(lambda v: float(round(v, 2)) if isinstance(v, Decimal) else v).astype("float64")
        elif pd.api.types.is_datetime64_any_dtype(s):
            out[col] = s.dt.floor("s")
        elif col.endswith("_usd") and pd.api.types.is_float_dtype(s):
            out[col] = s.round(2)
    return out


def usd(value) -> str:
    """Money as text rounded to cents: $1,234.56."""
    return f"${float(value):,.2f}"


def files_frame(case, input_path: str | Path | None = None) -> pd.DataFrame:
    """What is in the case, one row per file loaded: path (relative to INPUT when under it), format, records read,
    loaded, quarantined, sorted by path."""
    df = case.execute("""
        SELECT path, format, records, loaded, quarantined, status FROM ingest_files ORDER BY path, file_id
    """).df()
    if input_path is not None and Path(input_path).suffix != ".duckdb":
        root = Path(input_path).resolve()

        def rel(p: str) -> str:
            try:
                return Path(p).resolve().relative_to(root).as_posix()
            except ValueError:
                return Path(p).name
        df["path"] = df["path"].map(rel)
    return df.sort_values(["path", "format"]).reset_index(drop=True)


def formats_frame(files: pd.DataFrame) -> pd.DataFrame:
    """files_frame totalled per format."""
    return (files.groupby("format", dropna=False)[["records", "loaded", "quarantined"]].sum()
            .assign(files=files.groupby("format", dropna=False).size()).reset_index()
            .sort_values("format").reset_index(drop=True))


def incidents_frame(inv) -> pd.DataFrame:
    """One row per incident: id, kind, verdict, window (UTC), requests, cost."""
    rows = [{"incident": f.incident.id, "kind": f.incident.kind, "verdict": f.incident.verdict,
             "start_utc": pd.Timestamp(f.incident.start).floor("s"), "end_utc": pd.Timestamp(f.incident.end).floor("s"),
             "minutes": round((pd.Timestamp(f.incident.end) - pd.Timestamp(f.incident.start)).total_seconds() / 60, 1),
             "requests": f.headline.requests, "served": f.headline.served, "failed": f.headline.failed,
             "cost_usd": float(round(f.cost_usd, 2))} for f in inv.incidents]
    return pd.DataFrame(rows, columns=["incident", "kind", "verdict", "start_utc", "end_utc", "minutes", "requests",
                                       "served", "failed", "cost_usd"])


def spend_check(inv) -> pd.DataFrame:
    """Baseline spend per hour next to each incident's mean and peak spend per hour and the peak's multiple of the
    baseline: the figures of analysis/headline.py, as the report and the evidence bundle print them."""
    base = Decimal(str(inv.baseline.get("cost_per_hour_usd") or 0))
    rows = [{"what": "baseline (hours without incident requests)", "requests": None, "served": None, "failed": None,
             "cost_usd": None, "mean_usd_per_hour": float(round(base, 2)), "peak_usd_per_hour": None,
             "peak_times_baseline": 1.0}]
    for f in inv.incidents:
        h = f.headline
        rows.append({"what": f"{f.incident.id} {f.incident.kind} ({f.incident.verdict})", "requests": h.requests,
                     "served": h.served, "failed": h.failed, "cost_usd": float(round(h.cost_usd, 2)),
                     "mean_usd_per_hour": float(round(h.mean_cost_per_hour_usd, 2)),
                     "peak_usd_per_hour": None if h.peak_cost_per_hour_usd is None else
                     float(round(h.peak_cost_per_hour_usd, 2)),
                     "peak_times_baseline": None if h.times_baseline is None else float(round(h.times_baseline, 1))})
    return pd.DataFrame(rows)


def last_minutes(case, minutes: int = 15) -> pd.DataFrame:
    """The last `minutes` of LiteLLM traffic in the case, per UTC minute: requests, successes, keyless successes,
    401s, 429s, distinct addresses and cost (is anything still going on at the end of the logs?)."""
    return case.execute(f"""
        WITH last AS (SELECT max(start_time) AS t FROM llm_requests)
        SELECT date_trunc('minute', r.start_time) AS minute_utc, count(*) AS requests,
               count(*) FILTER (WHERE r.status = 'success') AS successful,
               count(*) FILTER (WHERE r.status = 'success' AND nullif(r.key_hash, '') IS NULL) AS keyless_successes,
               count(*) FILTER (WHERE r.error_code = '401') AS http_401,
               count(*) FILTER (WHERE r.error_code = '429') AS http_429,
               count(DISTINCT r.client_ip) AS addresses,
               CAST(round(coalesce(sum(r.cost_usd), 0), 2) AS DOUBLE) AS cost_usd
        FROM llm_requests r, last
        WHERE r.start_time > last.t - INTERVAL {int(minutes)} MINUTE
        GROUP BY ALL ORDER BY minute_utc
    """).df()


def addresses_to_block(inv, verdicts=WATCH_VERDICTS) -> pd.DataFrame:
    """Client addresses of attack/suspicious incidents, with requests, cost and first/last seen; most costly first."""
    frames = []
    for f in inv.incidents:
        if f.incident.verdict in verdicts and f.by_ip is not None and len(f.by_ip):
            frames.append(f.by_ip.assign(incident=f.incident.id))
    if not frames:
        return pd.DataFrame(columns=["ip", "incidents", "requests", "successful", "cost_usd", "first_seen",
                                     "last_seen"])
    df = pd.concat(frames, ignore_index=True)
    df = df[df["ip"].notna()]
    df["cost_usd"] = df["cost_usd"].map(lambda v: Decimal(str(v)) if not isinstance(v, Decimal) else v)
    out = df.groupby("ip").agg(incidents=("incident", lambda s: ", ".join(sorted(set(s)))),
                               requests=("requests", "sum"), successful=("successful", "sum"),
                               cost_usd=("cost_usd", lambda s: sum(s, Decimal(0))),
                               first_seen=("first_seen", "min"), last_seen=("last_seen", "max")).reset_index()
    out["_c"] = out["cost_usd"].map(float)
    return out.sort_values(["_c", "ip"], ascending=[False, True]).drop(columns="_c").reset_index(drop=True)


def keys_to_rotate(inv, verdicts=WATCH_VERDICTS) -> pd.DataFrame:
    """Virtual keys that succeeded in attack/suspicious incidents (hash prefix, hint, alias), most costly first; keys
    only ever rejected are left out, and a keyless incident has none (there the fix is authentication, not rotation)."""
    frames = []
    for f in inv.incidents:
        if f.incident.verdict in verdicts and f.by_key is not None and len(f.by_key):
            frames.append(f.by_key.assign(incident=f.incident.id))
    cols = ["key", "key_hint", "key_alias", "incidents", "requests", "successful", "cost_usd"]
    if not frames:
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)
    df = df[df["key"].notna() & (df["successful"] > 0)]   # keys presented and only rejected (401s) work nowhere
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["cost_usd"] = df["cost_usd"].map(lambda v: Decimal(str(v)) if not isinstance(v, Decimal) else v)
    out = df.groupby("key", dropna=False).agg(
        key_hint=("key_hint", "first"), key_alias=("key_alias", "first"),
        incidents=("incident", lambda s: ", ".join(sorted(set(s)))), requests=("requests", "sum"),
        successful=("successful", "sum"), cost_usd=("cost_usd", lambda s: sum(s, Decimal(0)))).reset_index()
    out["key"] = out["key"].map(short_hash)
    out["_c"] = out["cost_usd"].map(float)
    return out.sort_values(["_c", "key"], ascending=[False, True]).drop(columns="_c")[cols].reset_index(drop=True)


def keyless_successes(case) -> dict:
    """Does the proxy serve calls without a virtual key? Counts of keyless successful requests vs all successes."""
    keyless, total, first, last = case.execute("""
        SELECT count(*) FILTER (WHERE nullif(key_hash, '') IS NULL), count(*),
               min(start_time) FILTER (WHERE nullif(key_hash, '') IS NULL),
               max(start_time) FILTER (WHERE nullif(key_hash, '') IS NULL)
        FROM llm_requests WHERE status = 'success'
    """).fetchone()
    return {"keyless_successes": int(keyless), "successes": int(total),
            "first_utc": None if first is None else pd.Timestamp(first).floor("s"),
            "last_utc": None if last is None else pd.Timestamp(last).floor("s"),
            "proxy_accepts_unauthenticated_calls": bool(keyless)}


def incident_requests(case, finding) -> pd.DataFrame:
    """An incident's requests (start time, client address, status, cost), sorted; empty for a provider-only one."""
    table = finding.incident.table
    if not table:
        return pd.DataFrame(columns=["start_time", "client_ip", "status", "cost_usd"])
    return case.execute(f"""
        SELECT r.start_time, coalesce(nullif(r.client_ip, ''), '(none)') AS client_ip, r.status,
               CAST(coalesce(r.cost_usd, 0) AS DOUBLE) AS cost_usd
        FROM llm_requests r JOIN {table} USING (request_id) ORDER BY r.start_time, r.request_id
    """).df()


def projection_frame(proj, write_up_rate: Decimal | None = None) -> pd.DataFrame:
    """Horizons (1h, 24h, 7d, 30d): the projection with its bootstrap interval, and optionally the write-up's linear
    arithmetic at `write_up_rate` $/h beside it."""
    from forensics.analysis.projection import HORIZON_HOURS, linear_projection

    rows = []
    lin = linear_projection(write_up_rate) if write_up_rate is not None else {}
    for h in HORIZON_HOURS:
        row = {"horizon": h, "hours": HORIZON_HOURS[h]}
        if proj is not None:
            row |= {"low_usd": proj.low[h], "projected_usd": proj.projected[h], "high_usd": proj.high[h]}
        if lin:
            row["write_up_linear_usd"] = lin[h]
        rows.append(row)
    return display_frame(pd.DataFrame(rows))


def controls_display(frame: pd.DataFrame | None) -> pd.DataFrame:
    """A controls replay frame for display, with the share of the incident's cost each control would have saved."""
    if frame is None or frame.empty:
        return pd.DataFrame(columns=["control", "loss_usd", "saved_usd", "saved_pct", "requests_affected"])
    df = frame.copy()
    total = [float(l + s) for l, s in zip(df["loss_usd"], df["saved_usd"])]
    df["saved_pct"] = [round(100 * float(s) / t, 1) if t else 0.0 for s, t in zip(df["saved_usd"], total)]
    return display_frame(df[["control", "loss_usd", "saved_usd", "saved_pct", "requests_affected"]])


def main_incident(inv, verdicts=WATCH_VERDICTS):
    """The costliest attack/suspicious incident with proxy requests (else the costliest incident), or None."""
    pool = [f for f in inv.incidents if f.incident.verdict in verdicts and f.request_ids] or \
        [f for f in inv.incidents if f.request_ids] or list(inv.incidents)
    return max(pool, key=lambda f: (f.cost_usd, f.incident.id), default=None)


def verdict_lines(inv) -> list[str]:
    """The case's status and one line per incident, with the report's own figures (analysis/headline.py)."""
    from forensics.outputs import findings as findings_out
    from forensics.outputs.report import peak_text, requests_text, when

    findings = findings_out.build(inv)
    lines = [f"status: {findings['status']}" + (f" (missing: {', '.join(findings['coverage']['missing'])})"
                                                 if findings["coverage"]["missing"] else "")]
    for i in findings["incidents"]:
        lines.append(f"{i['id']} {i['verdict']} {i['kind']}: {when(i['start'])} .. {when(i['end'])}, "
                     f"{requests_text(i)}, {usd(i['cost_usd'])}; {peak_text(i, findings['baseline'])}")
    if not findings["incidents"]:
        lines.append("no incident found")
    return lines


def timeline_chart(inv):
    """The report's timeline figure of the main incident (requests and cost per minute, a lane per address) as an
    image to display; None when there is no incident with proxy requests."""
    from IPython.display import Image

    from forensics.outputs import figures as figs

    f = main_incident(inv)
    f = f if f is not None and f.request_ids else next((x for x in inv.incidents if x.request_ids), None)
    fig = figs.timeline_figure(f, inv.band) if f is not None else None
    return Image(data=fig.png) if fig is not None else None
