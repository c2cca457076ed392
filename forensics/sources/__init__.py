"""One package per log family; each exposes its SOURCE (SOURCES when it has several; see interface.Source) and the
case tables it loads records into (TABLES). Detection tries the sources in the order of SOURCES."""
from __future__ import annotations

from forensics.sources import litellm, nginx, provider
from forensics.sources.interface import LoadContext, LoadOptions, LoadResult, Source

SOURCES: list[Source] = [litellm.SOURCE, *provider.SOURCES, *nginx.SOURCES]   # litellm, openai, anthropic, nginx

# Source.family -> the case tables its records are stored in (for a loaded file: rows there = loaded - merged)
TABLES_OF_FAMILY: dict[str, tuple[str, ...]] = {
    litellm.SOURCE.family: litellm.TABLES,
    **{source.family: provider.TABLES for source in provider.SOURCES},
    nginx.SOURCE.family: nginx.TABLES,
}

SAMPLE_BYTES = 64 * 1024      # what detection sees of a file: its first 64 KiB, decompressed


def detect_format(sample: bytes, path, options: LoadOptions | None = None) -> tuple[Source | None, str | None]:
    """(source, format id) of the first source that recognises `sample`; (None, None) when none does."""
    for source in SOURCES:
        fmt = source.detect(sample, path, options)
        if fmt:
            return source, fmt
    return None, None


__all__ = ["SAMPLE_BYTES", "SOURCES", "detect_format", "TABLES_OF_FAMILY", "LoadContext", "LoadOptions", "LoadResult", "Source"]
