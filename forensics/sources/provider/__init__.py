"""The provider family: OpenAI and Anthropic usage and cost reports (API pages, dashboard CSVs), and the notes on
their pages (pagenotes). Two sources, one staging and the same tables."""
from __future__ import annotations

from forensics.sources.provider import anthropic, openai
from forensics.sources.provider.provider_stage import TABLES as _STAGE_TABLES

SOURCES = (openai.SOURCE, anthropic.SOURCE)    # in detection order
TABLES: tuple[str, ...] = tuple(_STAGE_TABLES.values())   # provider_usage, provider_costs
COVERAGE: tuple[str, ...] = ("provider_buckets",)          # every bucket a page listed (provider_pages)

__all__ = ["SOURCES", "TABLES", "COVERAGE"]
