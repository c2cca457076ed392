"""Decide what an abnormal window is (attack, suspicious, benign) and write down the evidence that decided it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from forensics.analysis.incident import SPREAD_MIN_ADDRESSES, Incident
from forensics.netaddr import internal_ip_sql

if TYPE_CHECKING:
    from forensics.api import Case


def _facts(case: Case, inc: Incident, facts: str) -> dict:
    """Who and what the incident's requests were, against what the case saw before it started."""
    row = case.execute(f"""
        WITH mine AS (SELECT f.* FROM {facts} f JOIN {inc.table} USING (request_id)),
        before AS (SELECT * FROM {facts} WHERE start_time < (SELECT min(start_time) FROM mine))
        SELECT
            count(*) AS n,
            count(*) FILTER (WHERE status = 'success') AS ok,
            count(*) FILTER (WHERE auth_failure) AS rejected,
            count(DISTINCT key_hash) FILTER (WHERE auth_failure) AS rejected_keys,
            count(*) FILTER (WHERE key_hash IS NULL AND NOT auth_failure) AS keyless,
            count(DISTINCT client_ip) AS ips,
            count(DISTINCT client_ip) FILTER (WHERE client_ip NOT IN (SELECT client_ip FROM before
                                                                    WHERE client_ip IS NOT NULL)) AS new_ips,
            count(DISTINCT client_ip) FILTER (WHERE NOT {internal_ip_sql('client_ip')}) AS public_ips,
            count(DISTINCT (key_hash, client_ip)) FILTER (WHERE key_valid AND (key_hash, client_ip) NOT IN
                (SELECT (key_hash, client_ip) FROM before WHERE key_hash IS NOT NULL)) AS new_key_ip_pairs,
            count(DISTINCT model) FILTER (WHERE key_valid AND (key_hash, model) NOT IN
                (SELECT (key_hash, model) FROM before WHERE key_hash IS NOT NULL)) AS new_key_models,
            count(DISTINCT user_agent) FILTER (WHERE key_valid AND (key_hash, user_agent) NOT IN
                (SELECT (key_hash, user_agent) FROM before WHERE key_hash IS NOT NULL)) AS new_key_agents,
            list(DISTINCT coalesce(key_alias, key_hash)) FILTER (WHERE key_valid AND status = 'success') AS keys,
            sum(cost_usd) AS cost,
            count(*) FILTER (WHERE key_hash IS NULL AND NOT auth_failure AND status = 'success') AS keyless_ok,
            (SELECT count(*) FROM before) AS earlier
        FROM mine
    """).fetchone()
    names = ["n", "ok", "rejected", "rejected_keys", "keyless", "ips", "new_ips", "public_ips", "new_key_ip_pairs",
             "new_key_models", "new_key_agents", "keys", "cost", "keyless_ok", "earlier"]
    return dict(zip(names, row))


def _keyless(f: dict) -> str:
    """'1,241 requests (1,170 served, 71 failed)': the same count and labels as analysis/headline.py."""
    n, ok = int(f["keyless"] or 0), int(f["keyless_ok"] or 0)
    return f"{n:,} requests ({ok:,} served, {n - ok:,} failed)" if n != ok else f"{n:,} requests served"


def classify(case: Case, inc: Incident, facts: str) -> None:
    """Set inc.kind, inc.verdict and inc.evidence from the incident's facts (`facts`: the request-facts table)."""
    f = _facts(case, inc, facts)
    cost = f"${float(f['cost'] or 0):,.2f}"
    if inc.detector == "stuffing":
        inc.kind, inc.verdict = "credential_stuffing", "attack"
        inc.evidence.append(f"{f['rejected']} requests rejected for authentication with {f['rejected_keys']} "
                            f"distinct keys from {f['ips']} address(es)")
        if f["ok"]:
            inc.evidence.append(f"then {f['ok']} successful requests from the same addresses with key(s) "
                                f"{', '.join(map(str, f['keys'] or []))}: {cost}")
    elif inc.detector == "keyless":
        inc.kind, inc.verdict = "unauthenticated_proxy", "attack"
        inc.evidence.append(f"{_keyless(f)} without any virtual key, while the case's other traffic carries keys: "
                            f"the proxy accepted unauthenticated calls")
        inc.evidence.append(f"{f['ips']} client addresses, {f['new_ips']} never seen before the incident; {cost}")
    elif inc.detector == "surge":
        keyless = f["keyless"] >= f["n"] / 2
        inc.kind = "unauthenticated_proxy" if keyless else "leaked_key"
        # calls without a key from new internet addresses are an open proxy (addresses all seen calling before the
        # surge are the proxy's own clients starting their day); a valid key's holder showing up from one or two
        # new addresses (working from home) is not yet a leak: that takes the spread of a key found and shared
        # ...or of a key from several new public addresses with a client it never used (a thief's script: the holder
        # working from home brings the same client along)
        inc.verdict = "attack" if f["public_ips"] and (keyless and f["new_ips"]
                                                       or f["new_ips"] >= SPREAD_MIN_ADDRESSES
                                                       or f["new_ips"] >= NEW_CLIENT_MIN_ADDRESSES
                                                       and f["new_key_agents"]) else "suspicious"
        if keyless:
            inc.evidence.append(f"{_keyless(f)} without any virtual key from {f['new_ips']} "
                                f"public address(es) never seen before: the proxy accepts unauthenticated calls")
        else:
            inc.evidence.append(f"key(s) {', '.join(map(str, f['keys'] or []))} used from {f['new_ips']} "
                                "public address(es) never seen before"
                                + (f", with {f['new_key_agents']} client(s) (user agent) the key never used before"
                                   if f["new_key_agents"] else ""))
        inc.evidence.append(f"{f['n']} requests at {SURGE_TEXT} the whole proxy's rate of the hour before; {cost}"
                            if f["earlier"] else
                            f"{f['n']} requests from the logs' first minute (nothing before them to compare with), at "
                            f"{SURGE_TEXT} the rate of the rest of the proxy's traffic meanwhile; {cost}")
    elif inc.detector == "spread":
        inc.kind, inc.verdict = "leaked_key", "attack"
        inc.evidence.append(f"key(s) {', '.join(map(str, f['keys'] or []))}, with no past in the logs before it, used "
                            f"from {f['public_ips']} public addresses, more than twice as many as any other key of "
                            f"the case ever used; {cost}")
    elif inc.detector == "new_address":
        # a public address the key had never used before the incident; one it had used before (the pair's later
        # sessions: an employee's home address on another day) is not news
        public = f["public_ips"] > 0 and f["new_key_ip_pairs"] > 0
        inc.kind, inc.verdict = "leaked_key", ("attack" if public else "suspicious")
        inc.evidence.append(f"key(s) {', '.join(map(str, f['keys'] or []))} used from {f['new_key_ip_pairs']} "
                            f"address(es) they had never used ({f['public_ips']} public); {cost}")
    else:
        # keyless calls are never a planned job by a known key
        known = f["new_key_ip_pairs"] == 0 and f["new_key_models"] == 0 and f["keyless"] == 0
        inc.kind = "other"
        inc.verdict = "benign" if known and f["new_key_agents"] == 0 else "suspicious"
        inc.evidence.append(f"key(s) {', '.join(map(str, f['keys'] or []))} at {RATE_TEXT} their usual rate; "
                            + ("same addresses, models and clients as before: looks planned"
                               if inc.verdict == "benign" else
                               f"{f['new_key_ip_pairs']} new address(es), {f['new_key_models']} new model(s)")
                            + f"; {cost}")


NEW_CLIENT_MIN_ADDRESSES = 3     # a key's surge from this many new public addresses with a new client is a leak
RATE_TEXT = "several times"
SURGE_TEXT = "several times"
