"""The nginx family: access logs (combined, main, timings, ingress, JSON, custom log_format), one row per line."""
from __future__ import annotations

from forensics.sources.nginx.nginx import SOURCE

TABLES: tuple[str, ...] = ("http_requests",)   # the case tables this family loads records into

__all__ = ["SOURCE", "TABLES"]
