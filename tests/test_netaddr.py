"""The client-address walk: the vectorised SQL form settles exactly what the Python rule would, or leaves it."""
from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forensics.netaddr import TrustedProxies, client_ip_map, internal_ip_sql, is_internal
from conftest import examples  # tests/conftest.py: the tier's hypothesis budget

HOPS = ["198.51.100.7", "203.0.113.9", "8.8.8.8", "10.0.0.1", "10.255.255.255", "172.16.0.5", "172.32.0.5",
        "192.168.1.1", "127.0.0.1", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3.256", "1.2.3", "1.2.3.4.5",
        "2001:db8::1", "::1", "fc00::2", "-", "", " 198.51.100.8 ", "1.2.3.4:8080", '"1.2.3.4"', "1.2.3.4\t",
        "unknown", "1.2.3.4 5.6.7.8", "١.2.3.4", "100.64.0.1"]
CIDRS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "::1/128", "fc00::/7", "100.64.0.0/10",
         "198.51.100.7/32", "0.0.0.0/0", "203.0.113.0/24", "8.0.0.0/7"]


_CON = duckdb.connect()        # one in-memory database for every walk: a connection costs more than the query


def walk_sql(trusted: TrustedProxies, chain, peer):
    con = _CON.cursor()
    return con.execute(f"SELECT {trusted.walk_sql('c', 'p')} FROM (SELECT ?::VARCHAR AS c, ?::VARCHAR AS p)",
                       [chain, peer]).fetchone()[0]


@settings(max_examples=examples(400), deadline=None, derandomize=True, database=None)
@given(hops=st.lists(st.sampled_from(HOPS), max_size=5), sep=st.sampled_from([", ", ",", " , "]),
       peer=st.one_of(st.none(), st.sampled_from(HOPS + ["1.2.3.4,5.6.7.8"])),
       cidrs=st.lists(st.sampled_from(CIDRS), max_size=4, unique=True))
def test_sql_walk_agrees_with_the_python_rule_or_leaves_the_pair(hops, sep, peer, cidrs):
    trusted = TrustedProxies(tuple(cidrs))
    chain = sep.join(hops) if hops else None
    got = walk_sql(trusted, chain, peer)
    if got is not None:
        assert got == trusted.client(chain, peer)


@pytest.mark.parametrize("chain, peer, expected", [
    ("198.51.100.7, 10.0.0.1", "10.0.0.2", "198.51.100.7"),     # the right-most public hop
    ("203.0.113.9, 198.51.100.7", "10.0.0.2", "198.51.100.7"),  # a forged left-most entry is not believed
    ("10.0.0.1, 192.168.0.1", "127.0.0.1", "10.0.0.1"),         # all trusted: the left-most
    ("", "203.0.113.9", "203.0.113.9"),
])
def test_sql_walk_settles_plain_ipv4_chains(chain, peer, expected):
    assert walk_sql(TrustedProxies(), chain, peer) == expected


@pytest.mark.parametrize("chain, peer", [("2001:db8::1, 10.0.0.1", "10.0.0.2"), ("01.2.3.4", "10.0.0.2"),
                                         ("1.2.3.4:80", "10.0.0.2"), ("-", "-"), ("1.2.3.4", "5.6.7.8,9.9.9.9")])
def test_sql_walk_leaves_what_is_not_plain_ipv4_to_python(chain, peer):
    assert walk_sql(TrustedProxies(), chain, peer) is None


def test_client_ip_map_mixes_both_walks():
    con = duckdb.connect()
    pairs = [("198.51.100.7, 10.0.0.1", "10.0.0.2"), ("2001:db8::1, 10.0.0.1", "10.0.0.2"), ("garbage", None),
             ("01.2.3.4", "10.0.0.2"), (None, None)]
    con.execute("CREATE TABLE p (chain VARCHAR, peer VARCHAR)")
    con.executemany("INSERT INTO p VALUES (?, ?)", pairs)
    trusted = TrustedProxies()
    client_ip_map(con, "SELECT chain, peer FROM p", trusted, "m")
    got = {(c, p): ip for c, p, ip in con.execute("SELECT chain, peer, client_ip FROM m").fetchall()}
    assert got == {pair: trusted.client(*pair) for pair in pairs}


def _internal_in_sql(address: str) -> bool:
    return _CON.cursor().execute(f"SELECT {internal_ip_sql('a')} FROM (SELECT ?::VARCHAR AS a)", [address]).fetchone()[0]


@pytest.mark.parametrize("address, internal", [
    ("10.0.0.2", True), ("172.16.0.1", True), ("172.31.255.255", True), ("172.15.0.1", False), ("172.32.0.1", False),
    ("192.168.1.1", True), ("192.169.0.1", False), ("127.0.0.1", True), ("198.51.100.7", False), ("::1", True),
    ("fc00::1", True), ("fd12:3456::1", True), ("fe80::1", True), ("febf::1", True), ("fec0::1", False),
    ("fc0::1", False), ("2001:db8::1", False), ("::ffff:10.0.0.1", False),
])
def test_is_internal_and_its_sql_twin_on_the_edges_of_each_network(address, internal):
    assert is_internal(address) is internal
    assert _internal_in_sql(address) is internal


@settings(max_examples=examples(300), deadline=None, derandomize=True, database=None)
@given(address=st.ip_addresses())
def test_is_internal_and_its_sql_twin_agree_on_any_address(address):
    """One rule for a private address in Python (simulator, investigation) and SQL (detectors): they never differ."""
    assert _internal_in_sql(str(address)) is is_internal(str(address))
