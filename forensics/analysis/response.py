"""What to block and rotate, computed from the case: the attacking networks (denied whole only when no legitimate
request came from them, else address by address), the virtual keys involved, and the provider accounts to rotate.
outputs/response_files.py writes them as an nginx snippet, LiteLLM calls and provider steps, to be reviewed and
applied by a person: nothing here touches a running system."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case

WATCH = ("attack", "suspicious")
RATE_PER_SECOND = 10           # limit_req per client address: the replayed ip_rate_10rps control
BURST = 20


@dataclass(frozen=True)
class Block:
    target: str                    # a network (203.0.113.0/24) or one address
    addresses: tuple[str, ...]     # the attacking addresses it covers
    legitimate_requests: int       # requests from the network outside every incident (0 for a whole-network deny)
    incidents: tuple[str, ...]


@dataclass(frozen=True)
class KeyAction:
    key_hash: str
    key_hint: str | None
    owner: str
    incidents: tuple[str, ...]


@dataclass
class ResponsePlan:
    blocks: list[Block] = field(default_factory=list)
    keys: list[KeyAction] = field(default_factory=list)
    keyless: bool = False                               # the proxy served requests without any key
    providers: dict[str, list[str]] = field(default_factory=dict)   # provider -> project / key ids billed
    outside_keys: list[tuple[str, str]] = field(default_factory=list)   # (provider, key id) used outside the proxy
    rate_per_second: int = RATE_PER_SECOND
    burst: int = BURST

    @property
    def empty(self) -> bool:
        return not (self.blocks or self.keys or self.keyless or self.outside_keys)


def legitimate_by_network_step(ids_table: str) -> Step:
    """Requests (LiteLLM and nginx) from each attacking IPv4 /24 by addresses that took no part in any incident
    (parameter: the list of networks)."""
    v4 = "regexp_replace({c}, '\\.[0-9]+$', '.0/24')"
    return Step("response_legitimate_by_network", f"""
        WITH nets AS (SELECT unnest(CAST(? AS VARCHAR[])) AS network),
        attackers AS (SELECT DISTINCT r.client_ip FROM llm_requests r JOIN {ids_table} USING (request_id)
                      WHERE r.client_ip IS NOT NULL),
        seen AS (
            SELECT {v4.format(c='client_ip')} AS network FROM llm_requests
            WHERE client_ip IS NOT NULL AND NOT contains(client_ip, ':') AND client_ip NOT IN (SELECT * FROM attackers)
            UNION ALL
            SELECT {v4.format(c='client_ip')} FROM http_requests
            WHERE client_ip IS NOT NULL AND NOT contains(client_ip, ':') AND client_ip NOT IN (SELECT * FROM attackers)
        )
        SELECT n.network, count(s.network) AS legitimate
        FROM nets n LEFT JOIN seen s USING (network) GROUP BY n.network ORDER BY n.network
    """)


def plan(case: Case, inv, findings: dict, owners: dict) -> ResponsePlan:
    """The response plan for the attack and suspicious incidents; `owners` maps key_hash -> owner text."""
    from forensics.analysis.leads import ip_order, network_of

    p = ResponsePlan()
    watch = [(f, inc) for f, inc in zip(inv.incidents, findings["incidents"]) if inc["verdict"] in WATCH]
    by_network: dict[str, dict] = {}
    for f, inc in watch:
        for ip in inc["ips"]:
            net = network_of(ip["ip"])
            if net is None:
                continue
            entry = by_network.setdefault(net, {"addresses": set(), "incidents": set()})
            entry["addresses"].add(ip["ip"])
            entry["incidents"].add(inc["id"])
        for k in inc["keys"]:
            if k["key_hash"]:
                p.keys.append(KeyAction(k["key_hash"], k["key_hint"], owners.get(k["key_hash"], ""), (inc["id"],)))
            elif k["requests"]:
                p.keyless = True
        if f.provider_key_id and f.provider:
            p.outside_keys.append((f.provider, f.provider_key_id))
        if f.headline is not None and f.headline.without_key:
            p.keyless = True
    p.keys = _merge_keys(p.keys)
    pairs = [[str(i), inc["id"]] for f, inc in watch for i in f.request_ids]
    legit: dict[str, int] = {}
    if by_network:
        from forensics.analysis.evidence import disputed_ids_step

        ids = case.run(Step("response_incident_ids", disputed_ids_step().sql), [pairs])
        frame = case.query(legitimate_by_network_step(ids), [sorted(by_network)])
        legit = {r.network: int(r.legitimate) for r in frame.itertuples()}
    for net in sorted(by_network, key=lambda n: (-len(by_network[n]["addresses"]), n)):
        e = by_network[net]
        addresses = tuple(sorted(e["addresses"], key=ip_order))
        n_legit = legit.get(net)
        incidents = tuple(sorted(e["incidents"]))
        if len(addresses) > 1 and n_legit == 0:
            p.blocks.append(Block(net, addresses, 0, incidents))
        else:                        # one address, IPv6, or a network legitimate clients use too: addresses only
            p.blocks += [Block(a, (a,), n_legit or 0, incidents) for a in addresses]
    for prov, accounts in _accounts(case, {f.provider for f, _ in watch if f.provider} |
                                    _providers_of(case, watch)).items():
        p.providers[prov] = accounts
    return p


def _merge_keys(keys: list[KeyAction]) -> list[KeyAction]:
    merged: dict[str, KeyAction] = {}
    for k in keys:
        old = merged.get(k.key_hash)
        merged[k.key_hash] = k if old is None else KeyAction(k.key_hash, k.key_hint, k.owner,
                                                             tuple(sorted(set(old.incidents) | set(k.incidents))))
    return list(merged.values())


def _providers_of(case: Case, watch) -> set[str]:
    ids = [str(i) for f, _ in watch for i in f.request_ids]
    if not ids:
        return set()
    return {p for (p,) in case.execute("""SELECT DISTINCT provider FROM llm_requests
                                          WHERE request_id IN (SELECT unnest(CAST(? AS VARCHAR[])))
                                            AND provider IS NOT NULL""", [ids]).fetchall()}


def _accounts(case: Case, providers: set[str]) -> dict[str, list[str]]:
    """Per provider, the project and API key ids its exports name (what its support looks up)."""
    out = {}
    for prov in sorted(providers):
        out[prov] = [i for (i,) in case.execute("""
            SELECT DISTINCT 'project ' || project_id FROM provider_costs WHERE provider = ? AND project_id IS NOT NULL
            UNION SELECT DISTINCT 'API key id ' || api_key_id FROM provider_usage WHERE provider = ?
              AND api_key_id IS NOT NULL ORDER BY 1""", [prov, prov]).fetchall()]
    return out
