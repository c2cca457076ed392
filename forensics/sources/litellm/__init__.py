"""The LiteLLM family: SpendLogs exports (CSV, JSON, NDJSON, /spend/logs/ui pages), callback payloads and flat
spend rows, one row per request; the proxy's own stdout (json_logs or plain text), one row per line."""
from __future__ import annotations

from forensics.sources.litellm.litellm import SOURCE

TABLES: tuple[str, ...] = ("llm_requests", "litellm_log")    # the case tables this family loads records into

__all__ = ["SOURCE", "TABLES"]
