"""The case's one-word status and what its evidence cannot rule out: never a clean bill of health on partial data.

An incident kind can only be ruled out where a source that could show it covers the period: proxy abuse (open
proxy, leaked or guessed keys, runaway spend) needs LiteLLM's request logs (nginx shows surges and 401 bursts, but no
keys and no cost); usage outside the proxy needs the provider's usage or cost data beside them.
"""
from __future__ import annotations

STATUSES = ("attack", "suspicious", "clear", "inconclusive")

UNSEEN = {   # missing source -> what its absence leaves open
    "litellm": "abuse through the proxy with valid or leaked keys and what any proxy traffic cost (no LiteLLM "
               "request logs)",
    "nginx": "requests rejected before LiteLLM logged them (no nginx access logs)",
    "provider": "usage of the provider keys outside the proxy (no provider usage or cost data)",
}


def status(incidents: list[dict], missing: list[str]) -> tuple[str, list[str]]:
    """(status, what cannot be ruled out): attack or suspicious when an incident says so; clear only when LiteLLM
    and provider data are both present; else inconclusive."""
    open_ = [UNSEEN[m] for m in ("litellm", "provider", "nginx") if m in missing]
    verdicts = {i["verdict"] for i in incidents}
    if "attack" in verdicts:
        return "attack", open_
    if "suspicious" in verdicts:
        return "suspicious", open_
    if "litellm" in missing or "provider" in missing:
        return "inconclusive", open_
    return "clear", open_
