"""The postmortem's recommendations: one row per item of the incident write-up's checklist, with what this case's
data shows (replayed controls, keyless traffic, the busiest minute) and what to do."""
from __future__ import annotations

from typing import TYPE_CHECKING

from forensics.analysis.limits import limits_seen, limits_text
from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case


def money(v) -> str:
    return "-" if v is None else f"${float(v):,.2f}"


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


def collateral(findings, control_id) -> dict:
    """The most legitimate traffic the control would have blocked in any incident's replay (each replay runs to its
    incident's end): {requests, usd, from}."""
    worst = {"requests": 0, "usd": 0.0, "from": None}
    for inc in findings["incidents"]:
        for c in inc["controls"]:
            if c["control"] == control_id and c.get("collateral", worst)["requests"] > worst["requests"]:
                worst = c["collateral"]
    return worst


def collateral_text(findings, *control_ids) -> str:
    """What the controls would have cost legitimate users, in words ('' when nothing)."""
    parts = []
    for cid in control_ids:
        c = collateral(findings, cid)
        if c["requests"]:
            since = f" from {c['from'][:19].replace('T', ' ')} UTC" if c["from"] else ""
            parts.append(f"{cid} would also have blocked {c['requests']:,} legitimate requests ({money(c['usd'])} of "
                         f"service){since}")
    return (" But " + "; ".join(parts) + ": set it above what legitimate traffic needs.") if parts else \
        " No legitimate request would have been blocked."


def traffic_facts_step() -> Step:
    """What the checklist rows cite about the whole case: keyless successes and their addresses, the busiest minute
    of one key (or keyless address), and how many requests asked for more than 1000 max_tokens."""
    return Step("recommendation_facts", """
        WITH per_minute AS (
            SELECT count(*) AS n FROM llm_requests
            GROUP BY coalesce(key_hash, 'no key:' || coalesce(client_ip, '?')), date_trunc('minute', start_time)
        )
        SELECT count(*) FILTER (WHERE key_hash IS NULL AND status = 'success') AS keyless_ok,
               count(DISTINCT client_ip) FILTER (WHERE key_hash IS NULL AND status = 'success') AS keyless_ips,
               (SELECT coalesce(max(n), 0) FROM per_minute) AS peak_rpm,
               count(*) FILTER (WHERE max_tokens > 1000) AS big_max_tokens, count(max_tokens) AS with_max_tokens
        FROM llm_requests
    """)


def _keyless_text(watch: list[dict], keyless_ok: int, keyless_ips: int) -> str:
    """Keyless requests in the incidents' own figures (findings: without_key, served_without_key), the same numbers
    the summary prints; the case-wide served count beside them when other keyless requests were served too."""
    without = sum(i.get("without_key", 0) for i in watch)
    served = sum(i.get("served_without_key", 0) for i in watch)
    if not without:
        return f"{keyless_ok:,} requests were served with no virtual key, from {keyless_ips:,} addresses"
    text = (f"{without:,} incident requests carried no virtual key ({served:,} served, {without - served:,} failed)"
            if without != served else f"{served:,} incident requests were served with no virtual key")
    others = keyless_ok - served
    return text + (f"; {others:,} more keyless requests were served outside the incidents" if others > 0 else "") + \
        f"; {keyless_ips:,} addresses served without a key in all"


def recommendations(case: Case, findings: dict, coverage) -> list[dict]:
    """One entry per item of the incident write-up's checklist: what the data shows, and what to do."""
    watch = [i for i in findings["incidents"] if i["verdict"] != "benign"]
    kinds = {i["kind"] for i in watch}
    facts = case.query(traffic_facts_step()).iloc[0]
    keyless_ok, keyless_ips, peak_rpm = int(facts["keyless_ok"]), int(facts["keyless_ips"]), int(facts["peak_rpm"])
    big_max_tokens, with_max_tokens = int(facts["big_max_tokens"]), int(facts["with_max_tokens"])
    addresses = sum(len(i["ips"]) for i in watch)
    out = []

    def add(item, status, finding, action):
        out.append({"item": item, "status": status, "finding": finding, "action": action})

    saved, total = _control(findings, "auth_required")
    if keyless_ok:
        add("authentication", "needed",
            _keyless_text(watch, keyless_ok, keyless_ips) + f"; requiring a key would have saved {money(saved)} of "
            f"{money(total)}."
            + (collateral_text(findings, "auth_required").replace(": set it above what legitimate traffic needs.",
                                                                    ": issue keys to those clients first.")),
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
        f"{money(s_rpm)}, nginx 10 r/s per address saves {money(s_ip)} of {money(t_ip or t_rpm)}."
        + collateral_text(findings, "key_rpm_20", "ip_rate_10rps")
        + "".join(" " + t for t in limits_text(limits_seen(case))),
        "Set rpm/tpm per key and model (LiteLLM) and limit_req per client address at nginx; both are cheap, "
        "neither replaces authentication.")
    s_kb, t_kb = _control(findings, "key_budget_100")
    s_gb, t_gb = _control(findings, "global_budget_1000")
    add("budgets", "needed" if s_kb > 0 or s_gb > 0 else "recommended" if watch else "review",
        f"Replayed: $100 per key per month saves {money(s_kb)}, $1,000 per month over the proxy saves {money(s_gb)} "
        f"of {money(t_gb or t_kb)}." + collateral_text(findings, "key_budget_100", "global_budget_1000"),
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
        f"{share}; capping max_tokens at 1000 saves {money(s_mt)} of {money(t_mt)}."
        + collateral_text(findings, "max_tokens_1000").replace("blocked", "cut short"),
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
