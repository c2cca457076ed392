"""Leads an investigator follows beyond the incident's own requests: reconnaissance from the attacking networks
before the attack, forged X-Forwarded-For values (a sign of intent), the attacking addresses grouped by network
(/24 for IPv4, /48 for IPv6, every address listed, with its hosting/cloud/Tor origin), and who a key belongs to
(alias, team, user, end users).

Each is a named SQL step over the case (http_requests: nginx; llm_requests: LiteLLM); only the address -> network
and address -> origin mappings of the incident's few distinct addresses are done in Python (ipaddress, iporigin).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis import origin
from forensics.analysis.steps import Step
from forensics.netaddr import address_of, internal_ip_sql

if TYPE_CHECKING:
    from forensics.api import Case

# what a scanner asks first: the front page and the model list (OpenAI-compatible paths), the docs LiteLLM serves
RECON_PATHS = ("/", "/v1/models", "/models", "/health", "/health/liveliness", "/docs", "/openapi.json",
               "/v1/model/info", "/model/info", "/key/info", "/user/info", "/robots.txt", "/.env")
RECON_WITHIN_DAYS = 7              # how far back before the first attack request reconnaissance is looked for
# X-Forwarded-For hops a client outside has no business sending: loopback and private ranges (spoofing a trusted
# internal caller), or anything but the proxy chain's own hops
FORGED_SQL = f"(hop = 'localhost' OR {internal_ip_sql('hop')})"


def network_of(ip: str | None) -> str | None:
    """'203.0.113.0/24' for an IPv4 address, '2001:db8:1::/48' for an IPv6 one; None when not an address."""
    addr = address_of(ip)
    if addr is None:
        return None
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def ip_order(ip: str):
    """Addresses in numeric order (203.0.113.21 before 203.0.113.109); what is no address last."""
    try:
        a = ipaddress.ip_address(ip)
        return (a.version, int(a), "")
    except ValueError:
        return (9, 0, ip)


@dataclass
class Leads:
    networks: pd.DataFrame        # network, addresses (all), n_addresses, requests, cost_usd, first/last_seen,
                                  # origin (cloud/hosting, Tor, VPN...: analysis/origin.py)
    recon: pd.DataFrame           # time, client_ip, network, method, path, status, user_agent (before the attack)
    forged: pd.DataFrame          # forged_hop, addresses (list), n_addresses, requests, first_seen
    owners: pd.DataFrame          # key_hash, key_hint, key_alias, team, user_id, end_users, requests, cost_usd


def networks_step(ips_table: str, incident_table: str, name: str) -> Step:
    return Step(name, f"""
        SELECT n.network, list(DISTINCT r.client_ip ORDER BY r.client_ip) AS addresses,
               count(DISTINCT r.client_ip) AS n_addresses, count(*) AS requests,
               coalesce(sum(r.cost_usd), 0) AS cost_usd, min(r.start_time) AS first_seen, max(r.start_time) AS last_seen
        FROM llm_requests r JOIN {incident_table} USING (request_id) JOIN {ips_table} n ON n.ip = r.client_ip
        GROUP BY n.network ORDER BY cost_usd DESC, n.network
    """)


def recon_step(ips_table: str, name: str) -> Step:
    """nginx requests for the front page, the model list and the like from the attacking networks in the days before
    the first attack request (parameters: first attack time twice)."""
    paths = ", ".join(f"'{p}'" for p in RECON_PATHS)
    return Step(name, f"""
        WITH nets AS (SELECT DISTINCT network FROM {ips_table}), seen AS (
            SELECT h.time, h.client_ip, h.method, split_part(h.path, '?', 1) AS path, h.status, h.user_agent,
                   CASE WHEN contains(h.client_ip, ':') THEN NULL
                        ELSE regexp_replace(h.client_ip, '\\.[0-9]+$', '.0/24') END AS v4_network
            FROM http_requests h
            WHERE h.time < CAST(? AS TIMESTAMP) AND h.time >= CAST(? AS TIMESTAMP) - INTERVAL {RECON_WITHIN_DAYS} DAY
              AND (split_part(h.path, '?', 1) IN ({paths}) OR h.method NOT IN ('POST'))
        )
        SELECT s.time, s.client_ip, coalesce(i.network, s.v4_network) AS network, s.method, s.path, s.status,
               s.user_agent
        FROM seen s LEFT JOIN {ips_table} i ON i.ip = s.client_ip
        WHERE coalesce(i.network, s.v4_network) IN (SELECT network FROM nets)
        ORDER BY s.time
    """)


def forged_step(ips_table: str, name: str) -> Step:
    """X-Forwarded-For hops before the real client that claim loopback or private addresses, sent by the attacking
    addresses (nginx appends the real client last; what comes before it is what the client wrote)."""
    return Step(name, f"""
        WITH hops AS (
            SELECT h.client_ip, h.time, trim(unnest(string_split(h.forwarded_for, ','))) AS hop
            FROM http_requests h SEMI JOIN {ips_table} i ON i.ip = h.client_ip
            WHERE h.forwarded_for LIKE '%,%'
        )
        SELECT hop AS forged_hop, list(DISTINCT client_ip ORDER BY client_ip) AS addresses,
               count(DISTINCT client_ip) AS n_addresses, count(*) AS requests, min(time) AS first_seen
        FROM hops WHERE hop <> client_ip AND {FORGED_SQL}
        GROUP BY hop ORDER BY requests DESC, hop
    """)


def owners_step(incident_table: str | None, name: str) -> Step:
    """Who each key belongs to, as LiteLLM logged it: alias, team, user, how many end users; over the incident's
    requests (or the whole case when `incident_table` is None)."""
    join = f"JOIN {incident_table} USING (request_id)" if incident_table else ""
    return Step(name, f"""
        SELECT r.key_hash, any_value(r.key_hint) AS key_hint, string_agg(DISTINCT r.key_alias, ', ') AS key_alias,
               string_agg(DISTINCT coalesce(r.team_alias, r.team_id), ', ') AS team,
               string_agg(DISTINCT r.user_id, ', ') AS user_id, count(DISTINCT r.end_user) AS end_users,
               count(*) AS requests, coalesce(sum(r.cost_usd), 0) AS cost_usd
        FROM llm_requests r {join}
        GROUP BY r.key_hash ORDER BY cost_usd DESC, requests DESC, r.key_hash NULLS LAST
    """)


def ips_step(name: str) -> Step:
    """The incident's addresses with their network (parameter: a list of [ip, network] pairs)."""
    return Step(name, """
        SELECT CAST(p[1] AS VARCHAR) AS ip, CAST(p[2] AS VARCHAR) AS network
        FROM (SELECT unnest(CAST(? AS VARCHAR[][])) AS p) WHERE p[2] IS NOT NULL
    """)


def leads(case: Case, finding) -> Leads | None:
    """The leads of one incident with proxy requests; None for one without (provider-only, nginx-only)."""
    inc = finding.incident
    if not finding.request_ids or not inc.table:
        return None
    n = inc.id.split("-")[1]
    ips = [ip for (ip,) in case.execute(f"""SELECT DISTINCT r.client_ip FROM llm_requests r JOIN {inc.table}
                                            USING (request_id) WHERE r.client_ip IS NOT NULL""").fetchall()]
    ips_table = case.run(ips_step(f"incident_{n}_networks_of"), [[[ip, network_of(ip)] for ip in sorted(ips)]])
    networks = case.query(networks_step(ips_table, inc.table, f"incident_{n}_networks"))
    networks["addresses"] = [sorted(a, key=ip_order) for a in networks["addresses"]]
    networks["origin"] = [origin.summary([o for o in map(origin.origin_of, a) if o is not None])
                          for a in networks["addresses"]]
    first = pd.Timestamp(inc.start).to_pydatetime()
    has_nginx = case.execute("SELECT count(*) > 0 FROM http_requests").fetchone()[0]
    if has_nginx:
        recon = case.query(recon_step(ips_table, f"incident_{n}_recon"), [first, first])
        forged = case.query(forged_step(ips_table, f"incident_{n}_forged_forwarded_for"))
        forged["addresses"] = [sorted(a, key=ip_order) for a in forged["addresses"]]
    else:
        recon = pd.DataFrame(columns=["time", "client_ip", "network", "method", "path", "status", "user_agent"])
        forged = pd.DataFrame(columns=["forged_hop", "addresses", "n_addresses", "requests", "first_seen"])
    owners = case.query(owners_step(inc.table, f"incident_{n}_key_owners"))
    return Leads(networks, recon, forged, owners)


def case_owners(case: Case) -> pd.DataFrame:
    """Who each key of the whole case belongs to (the report's cost-by-key table)."""
    return case.query(owners_step(None, "key_owners"))


def owner_text(row) -> str:
    """'support-bot (team support, user svc-support-bot, 14 end users)': who a key belongs to, as LiteLLM logged it."""
    parts = []
    if has_value(row.get("team")):
        parts.append(f"team {row['team']}")
    if has_value(row.get("user_id")):
        parts.append(f"user {row['user_id']}")
    if row.get("end_users"):
        parts.append(f"{int(row['end_users']):,} end user{'s' if int(row['end_users']) != 1 else ''}")
    alias = row["key_alias"] if has_value(row.get("key_alias")) else ""
    text = f"{alias} ({', '.join(parts)})" if parts and alias else alias or ", ".join(parts)
    return text if text else "(no owner logged)"


def has_value(v) -> bool:
    return v is not None and not (isinstance(v, float) and pd.isna(v)) and str(v) != ""


def owners_map(owners: pd.DataFrame | None) -> dict:
    """key_hash -> owner text (None key: requests without a virtual key)."""
    if owners is None or not len(owners):
        return {}
    return {r["key_hash"]: owner_text(r) for r in owners.to_dict("records")}
