"""Hosting/cloud/Tor origin of attacking addresses (forensics/analysis/origin.py), by the ranges the iporigin package
ships. The sample's addresses are documentation ranges (TEST-NET-3), so the addresses of real providers are taken
from the package's own table at test time."""
from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest

from forensics.analysis import origin
from forensics.analysis.incidents import find_incidents
from forensics.analysis.leads import leads
from forensics.api import Case


def _shipped(kind: str, provider: str | None = None, version: int = 4, n: int = 1) -> list[str]:
    """n addresses from the middle of ranges of that kind (and provider) in iporigin's bundled table."""
    from iporigin._data import dataset

    d = dataset()
    starts, ends, labels = ((d.v4_starts, d.v4_ends, d.v4_labels) if version == 4 else
                            (d.v6_starts, d.v6_ends, d.v6_labels))
    out = []
    for s, e, label in zip(starts, ends, labels):
        p, k = d.labels[label]
        addr = (ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address)(s + (e - s) // 2)
        if k == kind and (provider is None or p == provider) and e - s >= 2 and addr.is_global:
            out.append(str(addr))
            if len(out) == n:
                return out
    pytest.fail(f"iporigin ships no {kind} {provider or ''} range of IPv{version}")


def test_addresses_from_the_shipped_ranges_get_their_origin():
    (aws,) = _shipped("hosting", "Amazon AWS")
    (tor,) = _shipped("tor")
    (v6,) = _shipped("hosting", version=6)
    assert origin.origin_of(aws) == origin.Origin("hosting", "Amazon AWS")
    assert origin.origin_of(aws).words() == "cloud or hosting: Amazon AWS"
    assert origin.origin_of(tor).kind == "tor" and origin.origin_of(tor).words() == "Tor exit"
    assert origin.origin_of(f"::ffff:{aws}") == origin.origin_of(aws)          # IPv4-mapped: the IPv4 address
    assert origin.origin_of(v6).kind == "hosting" and origin.origin_of(v6).provider
    assert origin.origin_of("203.0.113.16") == origin.Origin("reserved", None)   # TEST-NET-3: no origin to claim
    assert origin.origin_of("10.0.0.1").words() == "private or documentation range"
    assert origin.origin_of("not an address") is None and origin.origin_of(None) is None
    assert origin.summary([origin.origin_of(a) for a in (aws, aws, tor)]) == \
        "2 cloud or hosting: Amazon AWS; 1 Tor exit"
    assert origin.summary([origin.origin_of(tor)] * 3) == "Tor exit (all 3)"
    assert origin.provenance().startswith("iporigin ")


def test_leads_label_each_attacking_network_with_its_origin(sample_case_copy):
    """The sample's attack with its addresses moved to real AWS and Tor exit addresses: the leads' networks carry
    the origin of every address, a mixed network says how many of each."""
    aws = _shipped("hosting", "Amazon AWS", n=3)
    tor = _shipped("tor", n=2)
    with Case.open(sample_case_copy) as case:
        search = find_incidents(case)
        inc = search.incidents[0]
        inc.id = "INC-1"
        ips = [ip for (ip,) in case.execute(f"SELECT DISTINCT client_ip FROM llm_requests JOIN {inc.table} "
                                            "USING (request_id) ORDER BY client_ip").fetchall()]
        moved = dict(zip(ips, [*aws, *tor, *[tor[0]] * len(ips)]))
        case.execute(f"""UPDATE llm_requests SET client_ip = m.new FROM (SELECT unnest(?) AS old, unnest(?) AS new) m
                         WHERE client_ip = m.old AND request_id IN (SELECT request_id FROM {inc.table})""",
                     [list(moved), list(moved.values())])
        ids = [r for (r,) in case.execute(f"SELECT request_id FROM {inc.table}").fetchall()]
        lead = leads(case, SimpleNamespace(incident=inc, request_ids=ids))
    by_network = dict(zip(lead.networks["network"], lead.networks["origin"]))
    for a in aws:
        assert "Amazon AWS" in by_network[str(ipaddress.ip_network(f"{a}/24", strict=False))]
    tor_net = str(ipaddress.ip_network(f"{tor[0]}/24", strict=False))
    assert "Tor exit" in by_network[tor_net]
    assert set(lead.networks["origin"]) - {""}, lead.networks


def test_findings_give_each_address_its_origin(sample_report):
    """On sample_logs every attacking address is a documentation address: 'reserved', never a made-up provider."""
    findings, out = sample_report
    ips = findings["incidents"][0]["ips"]
    assert ips and all(i["origin"] == {"kind": "reserved", "provider": None} for i in ips)
    md = (out / "report.md").read_text()
    assert "ranges shipped with iporigin " in md and "| private or documentation range (all 21) |" in md
