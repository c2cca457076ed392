"""The real client address behind load balancers, as nginx's realip module finds it with real_ip_recursive on."""
from __future__ import annotations

import ipaddress
from functools import lru_cache

import duckdb
import pandas as pd

from forensics.duck import query_with

DEFAULT_TRUSTED = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
    "::1/128", "fc00::/7", "fe80::/10",
)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from a log field: strips ports ('1.2.3.4:5678', '[2001:db8::1]:443') and blanks; None if not one."""
    t = text.strip().strip('"')
    if not t or t == "-":
        return None
    if t.startswith("["):
        t = t[1:].split("]", 1)[0]
    elif t.count(":") == 1 and "." in t:
        t = t.split(":", 1)[0]
    try:
        return ipaddress.ip_address(t)
    except ValueError:
        return None


class TrustedProxies:
    """The operator's own hops: addresses in these networks are skipped when walking X-Forwarded-For."""

    def __init__(self, cidrs: tuple[str, ...] | list[str] = ()):
        self.cidrs = tuple(cidrs) or DEFAULT_TRUSTED
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in self.cidrs)

    def __contains__(self, ip) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)

    @lru_cache(maxsize=200_000)
    def client(self, chain: str | None, peer: str | None) -> str | None:
        """Right-most address of `chain, peer` that is not trusted; the left-most one when all are trusted."""
        hops = [h.strip() for h in (chain or "").split(",")]
        hops = [h for h in hops if h and h != "-"]
        if peer and peer.strip() not in ("", "-"):
            hops.append(peer.strip())
        if not hops:
            return None
        for hop in reversed(hops):
            ip = parse_ip(hop)
            if ip is None:
                return hop[:100]          # written by whoever sent the header; keep it visible, never guess past it
            if ip not in self:
                return str(ip)
        first = parse_ip(hops[0])
        return str(first) if first is not None else hops[0][:100]


def client_ip_map(con: duckdb.DuckDBPyConnection, pairs_sql: str, trusted: TrustedProxies, name: str) -> str:
    """Create temp table `name`(chain, peer, client_ip) for the distinct (chain, peer) pairs `pairs_sql` selects.

    The walk runs in Python over distinct pairs only (a case has few), then joins back in SQL.
    """
    pairs = con.execute(f"SELECT DISTINCT chain, peer FROM ({pairs_sql})").fetchall()
    frame = pd.DataFrame(
        {
            "chain": pd.Series([c for c, _ in pairs], dtype="object"),
            "peer": pd.Series([p for _, p in pairs], dtype="object"),
            "client_ip": pd.Series([trusted.client(c, p) for c, p in pairs], dtype="object"),
        }
    )
    query_with(con, "_client_ip_frame", frame,
               f"CREATE OR REPLACE TEMP TABLE {name} AS "
               "SELECT chain::VARCHAR AS chain, peer::VARCHAR AS peer, client_ip::VARCHAR AS client_ip "
               "FROM _client_ip_frame")
    return name


def reresolve_client_ips(con: duckdb.DuckDBPyConnection, trusted: TrustedProxies) -> None:
    """Recompute client_ip in the whole case for a new list of trusted proxies (the analyst learnt the balancers)."""
    for table, chain, peer in (("http_requests", "forwarded_for", "remote_addr"),
                               ("llm_requests", "requester_ip_raw", "NULL")):
        m = client_ip_map(con, f"SELECT {chain} AS chain, {peer}::VARCHAR AS peer FROM {table}", trusted, "_ip_remap")
        con.execute(f"""
            UPDATE {table} AS t SET client_ip = m.client_ip FROM {m} AS m
            WHERE t.{chain} IS NOT DISTINCT FROM m.chain AND {peer if peer == 'NULL' else 't.' + peer}::VARCHAR
                  IS NOT DISTINCT FROM m.peer
              AND t.client_ip IS DISTINCT FROM m.client_ip
        """)
