"""The real client address behind load balancers, as nginx's realip module finds it with real_ip_recursive on."""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache

import duckdb
import pandas as pd

from forensics.duck import query_with

# an IPv4 address as Python's ipaddress accepts it: four decimal octets up to 255, no leading zeros
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
DEFAULT_TRUSTED = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
    "::1/128", "fc00::/7", "fe80::/10",
)


# The same networks as SQL, for a column of normalised addresses (an IPv6 address's first group written in full).
INTERNAL_IP_SQL = """(
    regexp_matches({col}, '^(10\\.|192\\.168\\.|127\\.|172\\.(1[6-9]|2[0-9]|3[01])\\.)')
    OR regexp_matches(lower({col}), '^(::1$|f[cd][0-9a-f]{{2}}:|fe[89ab][0-9a-f]:)'))"""


def network_sql(col: str) -> str:
    """SQL: the network an address belongs to for "the same organisation" (its /24 for IPv4, its /48 for IPv6 written
    with its first three groups), '' when the text shows neither (an IPv6 address compressed before them)."""
    return (f"CASE WHEN contains({col}, ':') THEN regexp_extract(lower({col}), "
            f"'^([0-9a-f]{{1,4}}:[0-9a-f]{{1,4}}:[0-9a-f]{{1,4}}):', 1) "
            f"ELSE regexp_extract({col}, '^([0-9]+\\.[0-9]+\\.[0-9]+)\\.', 1) END")


def internal_ip_sql(col: str) -> str:
    """SQL true when `col` is a private, loopback or link-local address (DEFAULT_TRUSTED): is_internal in SQL."""
    return INTERNAL_IP_SQL.format(col=col)


@lru_cache(maxsize=1)
def _internal_networks() -> tuple:
    return tuple(ipaddress.ip_network(c) for c in DEFAULT_TRUSTED)


def is_internal(address: str) -> bool:
    """A private, loopback or link-local address (DEFAULT_TRUSTED): the operator's own network, not a client on the
    internet. The one rule of the investigation and the simulator (internal_ip_sql is its SQL twin); False for what
    is no address."""
    ip = parse_ip(str(address))
    return ip is not None and any(ip.version == n.version and ip in n for n in _internal_networks())


def address_of(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """parse_ip, an IPv4-mapped IPv6 address ('::ffff:203.0.113.9') as its IPv4 address: what leads and origins
    group and look up."""
    ip = parse_ip(text or "")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


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
        self._hops: dict[str, tuple[str | None, bool]] = {}

    def __contains__(self, ip) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)

    def walk_sql(self, chain: str, peer: str) -> str:
        """SQL for `client(chain, peer)` when every hop is a plain IPv4 address, else NULL (Python decides those).

        Logs behind a load balancer hold one X-Forwarded-For chain per client: hundreds of thousands of distinct
        pairs, which the Python walk took ~45 us each to settle; this settles the common case vectorised.
        """
        hops = (f"list_filter(list_transform(string_split(coalesce({chain}, '') || ',' || "
                f"coalesce(trim({peer}), ''), ','), lambda h: trim(h)), lambda h: h NOT IN ('', '-'))")
        as_int = ("(CAST(split_part(h, '.', 1) AS UBIGINT) << 24) + (CAST(split_part(h, '.', 2) AS UBIGINT) << 16) "
                  "+ (CAST(split_part(h, '.', 3) AS UBIGINT) << 8) + CAST(split_part(h, '.', 4) AS UBIGINT)")
        v4 = [n for n in self.networks if n.version == 4]
        trusted = " OR ".join(f"(x.n >> {32 - n.prefixlen}) = {int(n.network_address) >> (32 - n.prefixlen)}"
                              for n in v4) or "false"
        # a peer holding a comma is one (bad) hop to Python, but would be split here: left to Python. The hop
        # list is bound once in a scalar subquery (DuckDB decorrelates it: 1.3 s for 1 M pairs; binding it with a
        # one-element list_transform instead took 12 s). Each hop's number is computed once, not once per network
        return (f"(SELECT CASE WHEN NOT contains(coalesce({peer}, ''), ',') AND len(l) > 0 AND list_bool_and("
                f"list_transform(l, lambda h: regexp_full_match(h, '{_IPV4}'))) THEN coalesce(list_filter("
                f"list_transform(list_reverse(l), lambda h: {{'h': h, 'n': {as_int}}}), lambda x: NOT ({trusted}))[1].h, "
                f"l[1]) END FROM (SELECT {hops} AS l))")

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
            address, trusted = self._hop(hop)
            if address is None:
                return hop[:100]          # written by whoever sent the header; keep it visible, never guess past it
            if not trusted:
                return address
        first = self._hop(hops[0])[0]
        return first if first is not None else hops[0][:100]

    def _hop(self, hop: str) -> tuple[str | None, bool]:
        """(the address as client() writes it, whether it is trusted) for one hop, (None, False) for no address.
        Remembered: a client behind a balancer comes with each of its few peers, and parsing an IPv6 address with
        ipaddress costs ~10 us."""
        known = self._hops.get(hop)
        if known is None:
            if len(self._hops) >= 200_000:
                self._hops.clear()
            ip = parse_ip(hop)
            known = self._hops[hop] = (None, False) if ip is None else (str(ip), ip in self)
        return known


def walk_pairs(con: duckdb.DuckDBPyConnection, name: str, pairs_sql: str, trusted: TrustedProxies,
               run: Callable[[str], list] | None = None) -> str:
    """Create temp table `name`(chain, peer, client_ip) for the (chain, peer) rows `pairs_sql` selects (distinct
    already): SQL walks the chains of plain IPv4 hops, Python the rest. `run` executes a statement that needs more
    than `con` (e.g. arrow data in scope); by default con.execute."""
    (run or (lambda sql: con.execute(sql).fetchall()))(
        f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT chain::VARCHAR AS chain, peer::VARCHAR AS peer, "
        f"{trusted.walk_sql('chain', 'peer')} AS client_ip FROM ({pairs_sql})")
    rest = con.execute(f"SELECT chain, peer FROM {name} WHERE client_ip IS NULL").fetchall()
    walked = [(c, p, trusted.client(c or None, p or None)) for c, p in rest]
    walked = [w for w in walked if w[2] is not None]
    if walked:
        frame = pd.DataFrame(walked, columns=["chain", "peer", "client_ip"], dtype="object")
        query_with(con, "_client_ip_frame", frame,
                   f"UPDATE {name} SET client_ip = f.client_ip::VARCHAR FROM _client_ip_frame f "
                   f"WHERE {name}.chain IS NOT DISTINCT FROM f.chain::VARCHAR "
                   f"AND {name}.peer IS NOT DISTINCT FROM f.peer::VARCHAR")
    return name


def client_ip_map(con: duckdb.DuckDBPyConnection, pairs_sql: str, trusted: TrustedProxies, name: str) -> str:
    """Create temp table `name`(chain, peer, client_ip) for the distinct (chain, peer) pairs `pairs_sql` selects;
    the walk runs over distinct pairs only, then joins back in SQL."""
    return walk_pairs(con, name, f"SELECT DISTINCT chain, peer FROM ({pairs_sql})", trusted)


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
