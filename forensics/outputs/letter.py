"""The refund request's cover letter (request.md in the evidence bundle): counts as requests.csv has them, served
and failed labelled; the provider key id / project the provider billed; the cause in plain words; the per-minute
reconciliation where the provider's export has 1-minute buckets. Rendering only: analysis/evidence.py computes."""
from __future__ import annotations

from decimal import Decimal

from forensics.outputs.report import money
from forensics.outputs.safe import printable

CAUSE = {
    "unauthenticated_proxy": "Our LiteLLM proxy, which holds our API key, was reachable from the internet without "
                             "authentication; strangers sent requests through it.",
    "leaked_key": "One of our proxy's virtual keys leaked and was used by someone else through the proxy.",
    "credential_stuffing": "Keys to our proxy were guessed or replayed; requests with valid ones went through.",
    "provider_key_outside_proxy": "Our API key itself leaked and was used directly against your API.",
}


def _finding(findings: dict, incident_id: str) -> dict:
    return next(i for i in findings["incidents"] if i["id"] == incident_id)


PROVIDER_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic"}


def letter(ev, findings: dict) -> str:
    """The cover letter draft: every figure filled in from the case; what only the analyst knows is [bracketed]."""
    chosen, d, price_tables = ev.chosen, ev.disputed, ev.price_tables
    name = PROVIDER_NAMES.get(d.provider or "", printable(d.provider) or "[provider]")
    account = ", ".join(printable(i) for i in ev.accounts) or "[organization / project id]"
    billed = ", ".join(printable(i) for i in ev.billed_keys) or account
    total = d.request_cost + d.outside_cost
    lines = [f"# Refund request draft: unauthorised usage billed by {name}", "",
             "_Draft written by forensics from the case's data. Check every [bracketed] item before sending._", "",
             f"To: {name} billing support", f"Account: [organization id]; {account}",
             f"Billed to (the usage in dispute): {billed}", "",
             "## What happened", ""]
    if not chosen:
        lines += ["The case holds no incident with an `attack` verdict: there is nothing to dispute on this evidence.",
                  ""]
    for f in chosen:
        inc = _finding(findings, f.incident.id)
        keys = [k for k in inc["keys"] if k["key_hash"]]
        via = (f"your API key {printable(f.provider_key_id)} used directly, outside our proxy" if f.provider_key_id
               else f"through our LiteLLM proxy, billed to {billed}"
               + ("; no virtual key of ours (the proxy accepted unauthenticated calls)" if inc["keys"] and not keys
                  else "; our virtual key(s) " + ", ".join(f"{k['key_hint'] or ''} (sha256 {k['key_hash'][:16]}…)"
                                                           .strip() for k in keys) if keys else ""))
        h = f.headline
        counted = (f"{h.requests:,} requests ({h.served:,} served, {h.failed:,} failed)" if h.failed else
                   f"{h.requests:,} requests")
        lines += [f"- **{inc['id']}** ({inc['kind'].replace('_', ' ')}): {inc['start']} to {inc['end']} UTC, "
                  f"{counted}, {money(inc['cost_usd'])} at list prices; "
                  + (f"{len(inc['ips'])} client addresses; " if inc["ips"] else "") + f"{via}.",
                  *[f"  - {printable(e)}" for e in inc["evidence"]]]
    if chosen:
        lines += ["", "## Cause", "", *[f"- {CAUSE.get(k, 'Unauthorised use of our account; see above.')}"
                                        for k in sorted({f.incident.kind for f in chosen})],
                  "- Fixed on [date, UTC]: [what was changed]; see Remediation below."]
    lines += ["", "## Amount disputed", "",
              f"**{money(total)}**: " + (f"{money(d.request_cost)} for the {_requests_words(chosen)} listed in "
                                         f"requests.csv (column `status`; only served requests are billed), priced "
                                         f"at your list prices ({price_tables})" if d.request_cost else "")
              + (f"{'; ' if d.request_cost else ''}{money(d.outside_cost)} of usage on the key(s) above that our "
                 "proxy never made (usage_outside_proxy.csv)" if d.outside_cost else "") + "."]
    if len(d.provider_days):
        rows = d.provider_days
        beyond = d.billed_beyond_legitimate
        day_text = ", ".join(f"{r.day:%Y-%m-%d}: {money(r.provider_cost_usd)}" for r in rows.itertuples())
        diff = beyond - (d.request_cost + d.outside_cost)
        lines += ["", f"Your own cost report bills {day_text}. Our proxy's logs account for "
                      f"{money(sum(Decimal(v) for v in rows['legitimate_usd']))} of legitimate traffic on "
                      f"{'that day' if len(rows) == 1 else 'those days'}; the remaining {money(beyond)} is the "
                      "usage we dispute, " + ("matching the amount above to the cent" if abs(diff) < Decimal("0.005")
                                               else f"{money(abs(diff))} {'more' if diff > 0 else 'less'} than the "
                                                    "amount above")
                      + " (reconciliation.csv compares your bill with our logs day by day)."]
    if ev.per_minute is not None and len(ev.per_minute):
        pm = ev.per_minute
        both = int(pm["disputed_requests"].sum()) + int(pm["legitimate_requests"].sum())
        off = pm[pm["difference"] != 0]
        lines += ["", f"Your usage export has 1-minute buckets for the window: over {len(pm)} minutes it counts "
                      f"{int(pm['provider_requests'].sum()):,} requests, our logs {both:,} served "
                      f"({int(pm['disputed_requests'].sum()):,} disputed, {int(pm['legitimate_requests'].sum()):,} "
                      "legitimate); " + ("every minute matches" if not len(off) else
                                         f"{len(off)} minute(s) differ") +
                      " (reconciliation_per_minute.csv)."]
    lines += ["", "## Evidence enclosed", "",
              "- requests.csv: every disputed request with the id your logs hold (`request_id`, e.g. chatcmpl-...), "
              "UTC start and end, model, tokens and cost; keys only as sha256 hash and hint",
              "- cost_per_minute.csv, cost_per_hour.csv: the disputed cost over time",
              "- baseline_vs_incident.csv: our normal spend beside the incident's",
              "- reconciliation.csv: your billed cost against our proxy's logs per day, with the price table used",
              *(["- reconciliation_per_minute.csv: your 1-minute usage buckets against our served requests"]
                if ev.per_minute is not None else []),
              "- inc_*.png: the incident over time (requests and cost per minute with one lane per client address, or "
              "the provider's usage buckets for use outside the proxy)",
              "- chain_of_custody.json: the tool, its version and command line, each input log with sha256 and size",
              "- MANIFEST.sha256: the sha256 of every file above (`sha256sum -c MANIFEST.sha256`)", "",
              "## Remediation taken", "",
              "[Confirm each line; remove what was not done.]", ""]
    kinds = {f.incident.kind for f in chosen}
    if "unauthenticated_proxy" in kinds:
        lines.append("- Authentication enforced on the proxy (master key and virtual keys); [date, UTC]")
    if kinds & {"provider_key_outside_proxy", "leaked_key", "unauthenticated_proxy"}:
        lines.append(f"- {name} API key(s) rotated and the old ones revoked; [date, UTC]")
    if any(f.request_ids for f in chosen):
        lines.append("- Offending client addresses blocked at the firewall; [date, UTC]")
    lines += ["- Rate limits, per-key budgets, a max_tokens cap and a spend alert configured; [date, UTC]", "",
              "We ask you to credit the amount above. [Name, role, contact]", ""]
    return "\n".join(lines)


def _requests_words(chosen) -> str:
    """'1,170 served requests (status success) of the 1,241 (71 failed, status failure)': analysis/headline.py's
    counts, which are requests.csv's rows."""
    n = sum(f.headline.requests for f in chosen if f.request_ids)
    served = sum(f.headline.served for f in chosen if f.request_ids)
    if served == n:
        return f"{n:,} requests (all served, status success)"
    return f"{served:,} served requests (status success) of the {n:,} ({n - served:,} failed, status failure)"
