"""The nginx checks, on every location that proxies (proxy_pass: the LLM location): exposure (listen on all
addresses with no allow/deny, auth_request, basic auth or client certificates), limit_req / limit_conn, body size,
real_ip trusting any source, access log off or without the fields an investigation needs, long proxy_read_timeout.

nginx inherits most directives from the enclosing levels (http > server > location) unless the inner level sets its
own: each check reads the innermost level that sets the directive."""
from __future__ import annotations

import re
from dataclasses import dataclass

from forensics.audit.finding import Finding
from forensics.audit.money import WRITEUP, Money
from forensics.sources.nginx.nginx_conf import Directive, NginxConf

ALL_ADDRESSES = re.compile(r"^(\*|0\.0\.0\.0|\[::\])(:\d+)?$|^\d+$")
# what the logging-gap report misses when the access log lacks them (forensics.analysis.coverage)
NEEDED_FIELDS = {"$request_time": "how long each request ran (the cost of a long generation)",
                 "$http_x_forwarded_for": "the real client behind a load balancer",
                 "$upstream_http_x_litellm_call_id": "the LiteLLM call id that joins a line to its spend log row"}
COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
            '"$http_user_agent"')
LONG_TIMEOUT_S = 300


@dataclass(frozen=True)
class LLMLocation:
    location: Directive
    chain: tuple[Directive, ...]          # http, server, location(s): outermost first

    def innermost(self, name: str) -> list[Directive]:
        """The directives `name` of the innermost level that has any (nginx's inheritance), else []."""
        for block in reversed(self.chain):
            found = [c for c in block.children if c.name == name]
            if found:
                return found
        return []

    def anywhere(self, name: str) -> list[Directive]:
        return [c for block in self.chain for c in block.children if c.name == name]

    @property
    def server(self) -> Directive | None:
        return next((b for b in self.chain if b.name == "server"), None)


def llm_locations(conf: NginxConf) -> list[LLMLocation]:
    out: list[LLMLocation] = []

    def visit(d: Directive, chain: tuple[Directive, ...]) -> None:
        if d.block:
            inner = (*chain, d)
            if d.name == "location" and any(c.name in ("proxy_pass", "grpc_pass") for c in d.children):
                out.append(LLMLocation(d, inner))
            for c in d.children:
                visit(c, inner)

    for d in conf.directives:
        visit(d, ())
    return out


def _seconds(text: str) -> float | None:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", text.strip())
    if not m:
        return None
    return int(m[1]) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def _size(text: str) -> int | None:
    m = re.fullmatch(r"(\d+)([kKmMgG])?", text.strip())
    return None if not m else int(m[1]) * {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[(m[2] or "").lower() or None]


def _f(d: Directive | None, fallback_file: str, **kw) -> Finding:
    return Finding(file=d.file if d else fallback_file, line=d.line if d else 0, **kw)


def check(conf: NginxConf, money: Money, proxy_has_key: bool = False) -> list[Finding]:
    """Findings for every LLM location of `conf`; `proxy_has_key`: a LiteLLM config with a strong master key was
    audited alongside (an open nginx in front of it is defence in depth lost, not an open proxy)."""
    out: list[Finding] = []
    main = conf.files[0] if conf.files else "nginx.conf"
    formats = {"combined": COMBINED}
    for d in conf.find("log_format"):          # nginx joins the format's strings as they are
        if d.args:
            formats[d.args[0]] = "".join(a for a in d.args[1:] if not a.startswith("escape="))
    for loc in llm_locations(conf):
        name = f"location {' '.join(loc.location.args)}"
        out += _exposure(loc, name, main, money, proxy_has_key)
        out += _limits(loc, name, main, money, conf)
        out += _logging(loc, name, main, formats)
        out += _sizes(loc, name, main)
    out += _real_ip(conf, money)
    return out


def _exposure(loc: LLMLocation, name: str, main: str, money: Money, proxy_has_key: bool) -> list[Finding]:
    server = loc.server
    listens = [d for d in (server.children if server else ()) if d.name == "listen"]
    open_listen = [d for d in listens if d.args and ALL_ADDRESSES.match(d.args[0])]
    if listens and not open_listen:
        return []                         # bound to given addresses only (loopback, a private interface)
    guards = [n for n in ("allow", "deny", "auth_request", "auth_basic", "auth_jwt", "satisfy")
              if any(d.args and d.args[0] != "off" for d in loc.innermost(n))]
    mtls = any(d.args and d.args[0] in ("on", "optional") for d in loc.anywhere("ssl_verify_client"))
    if guards or mtls:
        return []
    where = open_listen[0] if open_listen else server
    text, usd = money.of("auth_required", WRITEUP + " (the write-up: 'my fault for testing on a public URL')")
    listen = " ".join(where.args) if where is not None and where.name == "listen" else "80 (no listen: nginx's default)"
    return [_f(where, main, id="nginx.open_to_all", severity="medium" if proxy_has_key else "critical",
               title=f"{name} is reachable from anywhere, with no access control in nginx",
               setting=f"listen {listen}; no allow/deny, auth_request, auth_basic or ssl_verify_client",
               why="any address on the internet reaches the LLM; only LiteLLM's own key check stands between a "
                   "scanner and your provider bill" + ("" if proxy_has_key else ", and no master key was found"),
               money=text, money_usd=usd, checklist="network exposure",
               fix=f"{name} {{\n    allow 10.0.0.0/8;          # your applications\n    deny all;\n"
                   "    # or: auth_basic \"LiteLLM\"; auth_basic_user_file /etc/nginx/.htpasswd;\n"
                   "    # or, in server: ssl_client_certificate /etc/nginx/ca.crt; ssl_verify_client on;\n}")]


def _limits(loc: LLMLocation, name: str, main: str, money: Money, conf: NginxConf) -> list[Finding]:
    req, conn = loc.innermost("limit_req"), loc.innermost("limit_conn")
    if req:
        return []
    zones = conf.find("limit_req_zone")
    zone = zones[0].args[1].split("=", 1)[-1].split(":")[0] if zones and len(zones[0].args) > 1 else "llm"
    text, usd = money.of("ip_rate_10rps", "the write-up's attack sent ~1,200 requests in 45 minutes from a few "
                         "addresses; a per-address limit_req makes each address a trickle")
    lines = [f"{name} {{", f"    limit_req zone={zone} burst=20 nodelay;"]
    if not conn:
        lines.append("    limit_conn addr 10;    # with, in http: limit_conn_zone $binary_remote_addr zone=addr:10m;")
    fix = ("" if zones else "# in http:\nlimit_req_zone $binary_remote_addr zone=llm:10m rate=10r/s;\n") + \
        "\n".join([*lines, "}"])
    return [_f(loc.location, main, id="nginx.no_rate_limit", severity="medium" if conn else "high",
               title=f"{name}: no limit_req" + (" (limit_conn only)" if conn else " or limit_conn"),
               setting="limit_req (absent)" + ("" if conn else "; limit_conn (absent)"),
               why="nginx forwards every request as fast as clients send them" +
                   (f"; limit_req_zone {zones[0].args[1]} is defined but not used here" if zones else ""),
               money=text, money_usd=usd, checklist="rate limits", fix=fix)]


def _logging(loc: LLMLocation, name: str, main: str, formats: dict[str, str]) -> list[Finding]:
    logs = loc.innermost("access_log")
    if logs and all(d.args and d.args[0] == "off" for d in logs):
        return [_f(logs[0], main, id="nginx.no_access_log", severity="high",
                   title=f"{name}: access log off", setting="access_log off",
                   why="no line per request: after an incident nothing shows who called, from where, how often",
                   money="", checklist="monitoring",
                   fix=f"{name} {{\n    access_log /var/log/nginx/llm.log timed;\n}}")]
    used = [(d, d.args[1] if len(d.args) > 1 else "combined") for d in logs if d.args and d.args[0] != "off"]
    if not used:
        used = [(None, "combined")]       # no access_log anywhere: nginx's default logs/access.log combined
    out = []
    for d, fmt in used:
        text = formats.get(fmt)
        if text is None:
            continue
        missing = [v for v in NEEDED_FIELDS if v not in text]
        if missing:
            out.append(_f(d or loc.location, main, id="nginx.log_format_blind", severity="medium",
                          title=f"{name}: log format '{fmt}' lacks {', '.join(missing)}",
                          setting=f"access_log ... {fmt}",
                          why="the investigation cannot see " + "; ".join(NEEDED_FIELDS[v] for v in missing),
                          money="", checklist="monitoring",
                          fix="log_format timed '$remote_addr - $remote_user [$time_local] \"$request\" $status "
                              "$body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_time "
                              "$upstream_response_time \"$http_x_forwarded_for\" $upstream_http_x_litellm_call_id';\n"
                              "access_log /var/log/nginx/llm.log timed;"))
    return out


def _sizes(loc: LLMLocation, name: str, main: str) -> list[Finding]:
    out = []
    body = loc.innermost("client_max_body_size")
    if body and body[-1].args and _size(body[-1].args[0]) == 0:
        out.append(_f(body[-1], main, id="nginx.body_unbounded", severity="medium",
                      title=f"{name}: client_max_body_size 0 (no limit)", setting="client_max_body_size 0",
                      why="a prompt of any size is forwarded: input tokens are billed, and a huge body ties up the "
                          "proxy", money="", checklist="request validation",
                      fix=f"{name} {{\n    client_max_body_size 2m;\n}}"))
    timeout = loc.innermost("proxy_read_timeout")
    secs = _seconds(timeout[-1].args[0]) if timeout and timeout[-1].args else None
    if secs is not None and secs > LONG_TIMEOUT_S:
        out.append(_f(timeout[-1], main, id="nginx.long_read_timeout", severity="low",
                      title=f"{name}: proxy_read_timeout {timeout[-1].args[0]}",
                      setting=f"proxy_read_timeout {timeout[-1].args[0]}",
                      why=f"far above what a completion needs (under {LONG_TIMEOUT_S} s even for 4,000 tokens): "
                          "long generations run to the end and hold connections", money="",
                      checklist="request validation", fix=f"{name} {{\n    proxy_read_timeout 120s;\n}}"))
    return out


def _real_ip(conf: NginxConf, money: Money) -> list[Finding]:
    if not conf.find("real_ip_header"):
        return []
    out = []
    for d in conf.find("set_real_ip_from"):
        if d.args and d.args[0] in ("0.0.0.0/0", "::/0", "all"):
            out.append(Finding(file=d.file, line=d.line, id="nginx.real_ip_any", severity="high",
                               title="the client address is taken from a header anyone can set",
                               setting=f"set_real_ip_from {d.args[0]} with real_ip_header",
                               why="any client writes its own X-Forwarded-For: per-address limits and allow lists "
                                   "are bypassed, and the logs name forged addresses",
                               money="", checklist="network exposure",
                               fix="set_real_ip_from 10.0.0.0/8;        # your load balancers only\n"
                                   "real_ip_header X-Forwarded-For;\nreal_ip_recursive on;"))
    return out
