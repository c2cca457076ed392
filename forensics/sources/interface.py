"""What every log family implements: detect a format from a sample of the file, load a file into the case."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import duckdb

from forensics.sources.lines import ReadSpec
from forensics.sources.plausible import TimeWindow


@dataclass(frozen=True)
class LoadResult:
    """Per-file accounting. records == loaded + quarantined always holds; merged is a part of loaded."""

    records: int
    loaded: int
    quarantined: int
    merged: int = 0
    notes: tuple[str, ...] = ()


@dataclass
class LoadOptions:
    """Options the analyst can set on the command line."""

    nginx_format: str | None = None            # a custom nginx log_format string: always used for nginx access logs
    nginx_conf: tuple[str, ...] = ()           # nginx.conf files or `nginx -T` outputs: their log_formats drive detection
    trusted_proxies: tuple[str, ...] = ()      # CIDRs of the operator's own balancers (private ranges by default)
    price_overrides: Path | None = None        # CSV of prices for custom deployments (see forensics.pricing)


@dataclass
class LoadContext:
    """Everything a loader needs: the open case, the file's id and its path as shown to the user."""

    con: duckdb.DuckDBPyConnection
    file_id: int
    path: Path                 # real path on disk (may be .gz)
    display_path: str          # as the user named it; used in messages
    options: LoadOptions = field(default_factory=LoadOptions)
    window: TimeWindow = field(default_factory=TimeWindow.at)   # times a record may carry (ingest clock + 1 day)
    # what of the file to read (set by ingest: the bytes hashed, where a grown file's new lines start); the line
    # reader honours it and checks the bytes it reads against the recorded sha256
    read: ReadSpec | None = None
    # the records of many small one-object files, read by ingest (forensics.ingest_batch): staged as records 1..n
    # instead of reading `path`; a loader that takes them says so in BATCH_FORMATS
    texts: list[str] | None = None
    # the log_format ingest inferred for every file of a batch of small nginx.inferred files (each file's own)
    inferred_format: str | None = None


class Source(Protocol):
    """A log family (nginx, litellm, openai, anthropic)."""

    family: str

    def detect(self, sample: bytes, path: Path, options: LoadOptions | None = None) -> str | None:
        """Return a format id like 'nginx.combined' when `sample` (the first 64 KiB, decompressed) is ours.

        `options` carries what the analyst told us (e.g. a custom nginx log_format to try)."""

    def load(self, ctx: LoadContext, fmt: str) -> LoadResult:
        """Load the whole file into the case's canonical tables and the quarantine table."""
