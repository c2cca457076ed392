"""One module per log family; each exposes SOURCE (see interface.Source). Detection tries them in this order."""
from __future__ import annotations

from forensics.sources import anthropic, litellm, nginx, openai
from forensics.sources.interface import LoadContext, LoadOptions, LoadResult, Source

SOURCES: list[Source] = [litellm.SOURCE, openai.SOURCE, anthropic.SOURCE, nginx.SOURCE]

__all__ = ["SOURCES", "LoadContext", "LoadOptions", "LoadResult", "Source"]
