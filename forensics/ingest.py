"""Ingest: find input files, detect each one's format from its content, load it losslessly and account for it."""
from __future__ import annotations

import gzip
import hashlib
import time
import zlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import duckdb

from forensics import pricing
from forensics.case import tool_version
from forensics.secrets import redact_text
from forensics.sources import SOURCES, TABLES_OF_FAMILY, LoadContext, LoadOptions, LoadResult
from forensics.sources.quarantine import quarantine_lines

SAMPLE_BYTES = 64 * 1024
# DuckDB keeps what a transaction appends in its buffer pool up to its memory limit (80% of RAM by default): a
# lower limit makes it write a big file's rows out as it goes, so ingest memory stays flat whatever the file size
INGEST_MEMORY_LIMIT = "1GB"
UNRECOGNISED = "unrecognised"
# files a log folder holds that are not logs of ours
_IGNORED_NAMES = {"truth.json", ".DS_Store"}
_IGNORED_SUFFIXES = {".duckdb", ".wal", ".md", ".png", ".html", ".zip", ".sha256", ".ipynb", ".py"}


class IngestError(Exception):
    """A file could not be ingested at all; the message is one line for the analyst."""


@dataclass
class FileReport:
    """What happened to one input file: the contract's per-file object plus status and message."""

    path: str
    sha256: str
    format: str | None
    records: int
    loaded: int
    quarantined: int
    skipped: bool
    merged: int = 0
    status: str = "loaded"       # loaded | skipped | failed
    message: str | None = None
    seconds: float = 0.0

    def contract(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in ("path", "sha256", "format", "records", "loaded", "quarantined", "skipped")}


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named and every file under the folders named (recursively, sorted), case databases excluded."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(
                f for f in sorted(p.rglob("*"))
                if f.is_file() and not _ignored(f) and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def _ignored(path: Path) -> bool:
    return path.name in _IGNORED_NAMES or path.suffix.lower() in _IGNORED_SUFFIXES


def file_sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def read_sample(path: Path) -> bytes:
    """The first 64 KiB of the file's content, decompressed when it is gzip (by magic bytes, not by name)."""
    with open(path, "rb") as f:
        head = f.read(SAMPLE_BYTES)
    if head[:2] == b"\x1f\x8b":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            return d.decompress(head, SAMPLE_BYTES)
        except zlib.error as e:
            raise IngestError(f"gzip data is corrupt at the start ({e})") from None
    return head


def detect_format(sample: bytes, path: Path, options: LoadOptions | None = None) -> tuple[object | None, str | None]:
    for source in SOURCES:
        fmt = source.detect(sample, path, options)
        if fmt:
            return source, fmt
    return None, None


def _quarantine_unrecognised(ctx: LoadContext) -> LoadResult:
    """A file in no known format is kept whole in the quarantine table, line by line, so nothing is lost."""
    return quarantine_lines(ctx, "format not recognised")


def _check_conservation(con: duckdb.DuckDBPyConnection, file_id: int, family: str, r: LoadResult) -> None:
    """The invariant every file must meet: read = loaded + quarantined, and the tables hold exactly that."""
    if r.records != r.loaded + r.quarantined:
        raise IngestError(f"accounting error: {r.records} read != {r.loaded} loaded + {r.quarantined} quarantined")
    (q,) = con.execute("SELECT count(*) FROM quarantine WHERE file_id = ?", [file_id]).fetchone()
    if q != r.quarantined:
        raise IngestError(f"accounting error: quarantine holds {q} rows, loader reported {r.quarantined}")
    tables = TABLES_OF_FAMILY.get(family, ())
    if tables:
        stored = sum(
            con.execute(f"SELECT count(*) FROM {t} WHERE file_id = ?", [file_id]).fetchone()[0] for t in tables
        )
        if stored != r.loaded - r.merged:
            raise IngestError(f"accounting error: {stored} rows stored, loader reported {r.loaded - r.merged} new")


def ingest_file(
    con: duckdb.DuckDBPyConnection, path: Path, display: str, options: LoadOptions | None = None
) -> FileReport:
    """Load one file into the case, in one transaction; never raises for a bad file, reports instead.

    Nothing unredacted reaches the case: each loader redacts keys in the statements that store its rows (never an
    UPDATE after: the old values would stay in the file's free blocks), and the path and message stored and
    reported here are redacted too (a key may stand in a file name, and a note may quote a record)."""
    options = options or LoadOptions()
    display = redact_text(display)
    started = time.perf_counter()
    try:
        sha, size = file_sha256(path)
    except OSError as e:
        return FileReport(display, "", None, 0, 0, 0, False, status="failed", message=f"cannot read: {e.strerror}")
    row = con.execute(
        "SELECT format, records, loaded, quarantined, merged FROM ingest_files WHERE sha256 = ? AND status = 'loaded' "
        "AND format <> ?", [sha, UNRECOGNISED],
    ).fetchone()
    if row:
        fmt, records, loaded, quarantined, merged = row
        return FileReport(display, sha, fmt, records, loaded, quarantined, True, merged, status="skipped",
                          message="same content already in the case")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    con.execute("BEGIN TRANSACTION")
    try:
        # an earlier attempt that recognised nothing (e.g. before --nginx-format was given) is replaced
        con.execute("DELETE FROM quarantine WHERE file_id IN (SELECT file_id FROM ingest_files WHERE sha256 = ? "
                    "AND format = ?)", [sha, UNRECOGNISED])
        con.execute("DELETE FROM ingest_files WHERE sha256 = ? AND format = ?", [sha, UNRECOGNISED])
        (file_id,) = con.execute("SELECT nextval('file_id_seq')").fetchone()
        con.execute(
            "INSERT INTO ingest_files (file_id, path, sha256, size_bytes, status, started_at, tool_version) "
            "VALUES (?, ?, ?, ?, 'loading', ?, ?)",
            [file_id, display, sha, size, now, tool_version()],
        )
        ctx = LoadContext(con, file_id, path, display, options)
        sample = read_sample(path) if size else b""
        if size == 0 or (sample and not sample.strip() and size <= SAMPLE_BYTES and len(sample) == size):
            # nothing but blanks (or nothing): no record to lose; said in the message, not quarantined
            source, fmt, result = None, "empty", LoadResult(0, 0, 0, notes=("only blank lines",) if size else ())
        else:
            source, fmt = detect_format(sample, path, options)
            if source is None:
                fmt = UNRECOGNISED
                result = _quarantine_unrecognised(ctx)
            else:
                result = source.load(ctx, fmt)
        family = source.family if source is not None else "none"
        _check_conservation(con, file_id, family, result)
        if family == "litellm":
            pricing.price_requests(con, "price_status IS NULL", options.price_overrides)
        seconds = time.perf_counter() - started
        message = redact_text("; ".join(result.notes)) or None
        if fmt == UNRECOGNISED:
            message = "format not recognised: every line kept in quarantine"
        con.execute(
            "UPDATE ingest_files SET format = ?, records = ?, loaded = ?, quarantined = ?, merged = ?, "
            "status = 'loaded', message = ?, seconds = ? WHERE file_id = ?",
            [fmt, result.records, result.loaded, result.quarantined, result.merged, message, seconds, file_id],
        )
        con.execute("COMMIT")
        return FileReport(display, sha, fmt, result.records, result.loaded, result.quarantined, False,
                          result.merged, message=message, seconds=seconds)
    except Exception as e:  # one bad file never stops the others; the reason is kept in the case
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:    # a failed COMMIT has rolled back already
            pass
        reason = _one_line(e)
        con.execute(
            "INSERT INTO ingest_files (file_id, path, sha256, size_bytes, status, message, started_at, seconds, "
            "tool_version) VALUES (nextval('file_id_seq'), ?, ?, ?, 'failed', ?, ?, ?, ?)",
            [display, sha, size, reason, now, time.perf_counter() - started, tool_version()],
        )
        report = FileReport(display, sha, None, 0, 0, 0, False, status="failed", message=reason)
        report.error = e  # kept for --debug
        return report


def _one_line(e: BaseException) -> str:
    # a statement that failed inside the transaction makes the next ones fail too: the first error is the news
    while isinstance(e, duckdb.TransactionException) and e.__context__ is not None:
        e = e.__context__
    if isinstance(e, RecursionError):
        return "a record is nested too deeply to be read"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, (gzip.BadGzipFile, EOFError, zlib.error)):
        text = f"gzip data is truncated or corrupt ({text})"
    return redact_text(text)[:500]


def ingest_paths(
    con: duckdb.DuckDBPyConnection,
    inputs: Iterable[str | Path],
    options: LoadOptions | None = None,
    progress: Callable[[Path], AbstractContextManager] | None = None,
) -> list[FileReport]:
    """Ingest every file under `inputs`; returns one report per file, in input order."""
    reports = []
    files = expand_inputs(inputs)
    (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchone()
    con.execute(f"SET memory_limit = '{INGEST_MEMORY_LIMIT}'")
    try:
        for path in files:
            with progress(path) if progress else nullcontext():
                reports.append(ingest_file(con, path, str(path), options))
    finally:
        con.execute(f"SET memory_limit = '{limit}'")
    return reports
