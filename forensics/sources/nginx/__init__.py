"""The nginx family: access logs (combined, main, timings, ingress, JSON, a --nginx-format, the log_formats of a
--nginx-conf, formats inferred from the lines), one row per line; the error log (error_log), one row per entry.
nginx_conf parses nginx configuration."""
from __future__ import annotations

from forensics.sources.nginx import error_log
from forensics.sources.nginx.nginx import SOURCE

SOURCES = [error_log.SOURCE, SOURCE]            # detection order: an error log is recognised by its entry lines
TABLES: tuple[str, ...] = ("http_requests", "nginx_errors")   # the case tables this family loads records into

__all__ = ["SOURCE", "SOURCES", "TABLES"]
