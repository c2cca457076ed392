"""The nginx family: access logs (combined, main, timings, ingress, JSON, a --nginx-format, the log_formats of a
--nginx-conf, formats inferred from the lines), one row per line. nginx_conf parses nginx configuration."""
from __future__ import annotations

from forensics.sources.nginx.nginx import SOURCE

TABLES: tuple[str, ...] = ("http_requests",)   # the case tables this family loads records into

__all__ = ["SOURCE", "TABLES"]
