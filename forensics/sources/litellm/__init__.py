"""The LiteLLM family: SpendLogs exports (CSV, JSON, NDJSON, /spend/logs/ui pages), callback payloads and flat
spend rows, one row per request."""
from __future__ import annotations

from forensics.sources.litellm.litellm import SOURCE

TABLES: tuple[str, ...] = ("llm_requests",)    # the case tables this family loads records into

__all__ = ["SOURCE", "TABLES"]
