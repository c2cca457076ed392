"""LiteLLM's startup log (its stdout, json_logs or plain text) as configuration evidence: the proxy says itself that
it runs with no master key, that the weak-key opt-out is on, where it listens."""
from __future__ import annotations

import re
from pathlib import Path

from forensics.audit.finding import Finding
from forensics.audit.money import WRITEUP, Money
from forensics.sources.litellm import stdout

_LISTEN = re.compile(r"running on https?://(0\.0\.0\.0|\[::\]|::)(:\d+)?", re.I)
FIX_KEY = ("general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n"
           "  # export LITELLM_MASTER_KEY=\"sk-$(openssl rand -hex 32)\"")


def check(path: Path, money: Money) -> list[Finding]:
    return check_rows(stdout.read_log(path), str(path), money)


def check_rows(rows: list[dict], file: str, money: Money) -> list[Finding]:
    """Findings from classified log lines (line_no, level, message_class, message), as stdout.read_log gives them
    or as the case's litellm_log holds them."""
    text, usd = money.of("auth_required", WRITEUP)
    out, seen = [], set()

    def add(row, **kw):
        if kw["id"] not in seen:
            seen.add(kw["id"])
            out.append(Finding(file=file, line=int(row["line_no"]), checklist=kw.pop("checklist"), **kw))

    for r in rows:
        msg = r["message"] or ""
        if r["message_class"] == "no_master_key":
            add(r, id="startup.no_master_key", severity="critical", title="the proxy ran without a master key",
                setting=f"{r['level'] or ''} {msg[:120]}".strip(),
                why="LiteLLM said so at startup: every request is accepted without a key", money=text, money_usd=usd,
                checklist="authentication", fix=FIX_KEY)
        elif r["message_class"] == "weak_master_key_permitted":
            add(r, id="startup.weak_master_key_permitted", severity="critical",
                title="the proxy started with the weak-or-unset master key opt-out on",
                setting="dangerously_permit_weak_or_unset_master_key (on, per the log)",
                why="LiteLLM refuses to start without a strong key unless this opt-out is on: the log shows it was",
                money=text, money_usd=usd, checklist="authentication",
                fix="general_settings:\n  dangerously_permit_weak_or_unset_master_key: false\n" +
                    FIX_KEY.split("\n", 1)[1])
        elif _LISTEN.search(msg):
            add(r, id="startup.listens_on_all_addresses", severity="medium",
                title="LiteLLM itself listens on all addresses", setting=_LISTEN.search(msg)[0],
                why="clients can reach LiteLLM directly, around nginx and whatever limits and logs it has",
                money="", checklist="network exposure",
                fix="litellm --config config.yaml --host 127.0.0.1 --port 4000   # nginx proxies to it")
        elif "trusted_proxy_ranges is not set" in msg:
            add(r, id="startup.trusted_proxy_ranges_unset", severity="low",
                title="trusted_proxy_ranges not set", setting="general_settings.trusted_proxy_ranges (absent)",
                why="LiteLLM cannot tell its own proxies from clients when it limits failed sign-ins per address",
                money="", checklist="network exposure",
                fix="general_settings:\n  trusted_proxy_ranges: [\"10.0.0.0/8\"]   # the addresses of nginx")
    return out
