"""Where an attacking address comes from: a cloud or hosting provider, a CDN, a consumer VPN, a Tor exit, a declared
crawler, or none of those (most often a home or office line).

The ranges are the ones the `iporigin` package ships (its bundled table, built from the providers' own published
feeds: AWS, Google Cloud, Azure, DigitalOcean, Linode, Vultr, Oracle, Cloudflare, Fastly, GitHub; and CC0 community
lists for Hetzner, OVH, Tor exits, VPN exits and more). Offline only: its `online` module is never imported. An
address in no list is "unknown", which is absence of evidence, not a claim that it is residential.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

from forensics.netaddr import address_of

# kinds, in the analyst's words
KIND_WORDS = {"hosting": "cloud or hosting", "cdn": "CDN", "vpn": "VPN exit", "tor": "Tor exit", "bot": "crawler",
              "reserved": "private or documentation range", "unknown": "in no published range"}
# kinds whose address is a machine someone rents or an anonymiser (iporigin.DATACENTER_KINDS)
MACHINE_KINDS = frozenset({"hosting", "cdn", "vpn", "tor", "bot"})


@dataclass(frozen=True)
class Origin:
    kind: str                 # hosting, cdn, vpn, tor, bot, reserved, unknown
    provider: str | None      # 'Amazon AWS', 'Tor', ... (None when in no range)

    def words(self) -> str:
        """'cloud or hosting: Amazon AWS', 'Tor exit', 'in no published range'."""
        if self.provider and self.kind != "tor":
            return f"{KIND_WORDS.get(self.kind, self.kind)}: {self.provider}"
        return KIND_WORDS.get(self.kind, self.kind)

    def to_findings(self) -> dict:
        return {"kind": self.kind, "provider": self.provider}


def origin_of(ip: str | None) -> Origin | None:
    """The origin of one address (an IPv4-mapped IPv6 address as its IPv4 one); None when `ip` is no address."""
    addr = address_of(ip)
    return None if addr is None else _origin(addr)


@lru_cache(maxsize=65536)
def _origin(addr) -> Origin:
    import iporigin

    o = iporigin.classify(addr)
    return Origin(o.kind, o.provider or None)


def origins(ips) -> dict[str, Origin]:
    """{ip: Origin} for the distinct addresses among `ips` (what is no address is left out)."""
    out = {}
    for ip in set(ips):
        o = origin_of(ip)
        if o is not None:
            out[ip] = o
    return out


def summary(found: list[Origin]) -> str:
    """'12 cloud or hosting: Amazon AWS; 3 Tor exit' for a network's addresses (largest first); 'Tor exit (all 4)'."""
    counts: dict[str, int] = {}
    for o in found:
        counts[o.words()] = counts.get(o.words(), 0) + 1
    if len(counts) == 1:
        ((w, n),) = counts.items()
        return w if n == 1 else f"{w} (all {n})"
    return "; ".join(f"{n} {w}" for w, n in sorted(counts.items(), key=lambda c: (-c[1], c[0])))


@lru_cache(maxsize=1)
def provenance() -> str:
    """Which ranges answered: 'iporigin 1.1.2 (ranges built 2026-10-05)' (a report cites it)."""
    from importlib.metadata import version

    import iporigin

    built = datetime.fromtimestamp(iporigin.dataset_info()["built_at"], timezone.utc)
    return f"iporigin {version('iporigin')} (ranges built {built:%Y-%m-%d})"
