"""Ingest: find input files, detect each one's format from its content, load it losslessly and account for it."""
from __future__ import annotations

import gzip
import hashlib
import os
import stat
import time
import zlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import duckdb

from forensics import ingest_batch, pricing
from forensics.case import tool_version
from forensics.secrets import redact_text
from forensics.accounting import FileReport  # noqa: F401  (forensics.ingest.FileReport, as before)
from forensics.sources import (SAMPLE_BYTES, SOURCES, TABLES_OF_FAMILY, LoadContext, LoadOptions, LoadResult,  # noqa: F401
                               detect_format)
from forensics.sources import envelope as envelopes
from forensics.sources.lines import ReadSpec
from forensics.sources.nginx import error_log
from forensics.sources.plausible import TimeWindow
from forensics.sources.quarantine import quarantine_lines

_GZIP_MAGIC = b"\x1f\x8b"
# DuckDB keeps what a transaction appends in its buffer pool up to its memory limit (80% of RAM by default): a
# lower limit makes it write a big file's rows out as it goes, so ingest memory stays flat whatever the file size
INGEST_MEMORY_LIMIT = "512MB"          # 1 GB held 0.5 GB more at 10 M nginx lines than at 1 M (bench/bench_scale.py)
UNRECOGNISED = "unrecognised"
EMPTY = "empty"
# files a log folder holds that are not logs of ours
_IGNORED_NAMES = {"truth.json", ".DS_Store"}
# configuration files (sample_logs/config/: the audit reads them, not ingest)
_IGNORED_SUFFIXES = {".duckdb", ".wal", ".md", ".png", ".html", ".zip", ".sha256", ".ipynb", ".py", ".yaml", ".yml",
                     ".conf"}


class IngestError(Exception):
    """A file could not be ingested at all; the message is one line for the analyst."""


class NotAFile(ValueError):
    """An input that is neither a regular file nor a folder (a FIFO, a device, a socket): reading it would hang or
    never end."""


def special_kind(path: Path) -> str | None:
    """What `path` is when it exists and is neither a regular file nor a folder ('a FIFO', ...), else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "a special file")


def expand_inputs(inputs: Iterable[str | Path], skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Files named and every file under the folders named (recursively, sorted), case databases excluded.

    A named input that is no regular file (a FIFO, /dev/zero, a socket) raises NotAFile; one found in a folder is
    left out, and appended to `skipped` as (path, what it is)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if f.is_file():
                    if not _ignored(f):
                        files.append(f)
                elif skipped is not None and (kind := special_kind(f)):
                    skipped.append((f, kind))
        elif p.exists():
            kind = special_kind(p)
            if kind:
                raise NotAFile(f"{p}: not a regular file ({kind}): name log files or folders")
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


class _Scan:
    """One read of a file, exactly the bytes it held when opened: their sha256, and at each `mark` (the size of a
    file already in the case) the sha256 of the bytes before it, their newline count and where their last line
    starts (to recognise a file that grew from that one)."""

    def __init__(self, path: Path, marks: Iterable[int] = ()):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)      # a FIFO swapped in would not block the open
        with os.fdopen(fd, "rb") as f:
            self.stat = os.fstat(f.fileno())
            if not stat.S_ISREG(self.stat.st_mode):
                raise NotAFile(f"{path}: not a regular file")
            size = self.stat.st_size
            todo = sorted({m for m in marks if 0 < m < size})
            h, pos, newlines, line_start = hashlib.sha256(), 0, 0, 0
            self.prefixes: dict[int, tuple[str, int, int]] = {}
            while pos < size:
                want = min(1 << 20, size - pos, (todo[0] - pos) if todo else size)
                chunk = f.read(want)
                if not chunk:                # cut meanwhile: what is there
                    break
                h.update(chunk)
                if todo:                     # lines are counted only as far as a mark needs
                    newlines += chunk.count(b"\n")
                    r = chunk.rfind(b"\n")
                    if r >= 0:
                        line_start = pos + r + 1
                pos += len(chunk)
                while todo and pos == todo[0]:
                    self.prefixes[todo.pop(0)] = (h.copy().hexdigest(), newlines, line_start)
        self.sha256, self.size = h.hexdigest(), pos

    def unchanged(self, path: Path) -> bool:
        try:
            now = os.stat(path)
        except OSError:
            return False
        return (now.st_size, now.st_mtime_ns, now.st_ino) == (self.stat.st_size, self.stat.st_mtime_ns,
                                                              self.stat.st_ino)


def read_sample(path: Path, size: int | None = None) -> bytes:
    """The first 64 KiB of the file's content, decompressed when it is gzip (by magic bytes, not by name); see
    sample_and_blanks for a file that starts with blank lines."""
    return sample_and_blanks(path, size)[0]


def sample_and_blanks(path: Path, size: int | None = None) -> tuple[bytes, int | None]:
    """(sample, blank lines): the first 64 KiB of the file's content, decompressed when it is gzip, and None.

    When those are all blank, the file is read on in bounded blocks: the sample is then the content from the first
    line that is not blank (after one newline standing for the blank lines before it, as a CSV detector must see
    them), so that blank lines then records are still recognised; a file of nothing but blank lines (a whole gzip
    stream, when gzip) gives (b'', how many)."""
    with open(path, "rb") as f:
        head = f.read(SAMPLE_BYTES)
    gz = head[:2] == _GZIP_MAGIC
    if gz:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            head = d.decompress(head, SAMPLE_BYTES)
        except zlib.error as e:
            raise IngestError(f"gzip data is corrupt at the start ({e})") from None
    if head.strip() or not head:
        return head, None
    limit = size if size is not None else path.stat().st_size
    kept, lines, last = b"", 0, b"\n"
    try:
        for block in _gzip_blocks(path, limit, strict=True) if gz else _plain_blocks(path, limit):
            if not kept:
                content = block.lstrip()
                if not content:
                    lines += block.count(b"\n")
                    last = block[-1:]
                    continue
                block = block[block.rfind(b"\n", 0, len(block) - len(content)) + 1:]
            kept += block
            if len(kept) >= SAMPLE_BYTES:
                break
    except (zlib.error, EOFError):     # a cut stream: the loader reads what there is, and says what is missing
        return (b"\n" + kept[:SAMPLE_BYTES - 1] if kept else head), None
    if kept:
        return b"\n" + kept[:SAMPLE_BYTES - 1], None
    return b"", lines + (last != b"\n")


def _plain_blocks(path: Path, limit: int) -> Iterable[bytes]:
    with open(path, "rb") as f:
        while limit > 0 and (block := f.read(min(4 << 20, limit))):
            limit -= len(block)
            yield block


def _gzip_blocks(path: Path, limit: int, strict: bool = False) -> Iterable[bytes]:
    """The decompressed content of a gzip file's first `limit` bytes (several members allowed), in bounded blocks.
    Where the stream is cut or followed by what is not gzip it ends, or with `strict` raises EOFError."""
    with open(path, "rb") as f:
        inflater, fed = zlib.decompressobj(16 + zlib.MAX_WBITS), False
        while limit > 0 and (block := f.read(min(1 << 20, limit))):
            limit -= len(block)
            while block:
                fed = True
                data = inflater.decompress(block, 4 << 20)
                if data:
                    yield data
                block = inflater.unconsumed_tail
                if inflater.eof:
                    rest = inflater.unused_data + block
                    if rest and not _GZIP_MAGIC.startswith(rest[:2]):
                        if strict:
                            raise EOFError("data after the end of the gzip stream")
                        return
                    inflater, fed, block = zlib.decompressobj(16 + zlib.MAX_WBITS), False, rest
        if strict and fed and not inflater.eof:
            raise EOFError("gzip stream cut short")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def gzip_lines(path: Path, size: int) -> tuple[int, bool] | None:
    """(newlines, ends with a newline) of the content of a gzip file's first `size` bytes; None when those bytes are
    no whole gzip stream (cut inside a member)."""
    lines, last = 0, b"\n"
    try:
        for block in _gzip_blocks(path, size, strict=True):
            lines += block.count(b"\n")
            last = block[-1:]
    except (zlib.error, EOFError):
        return None
    return lines, last == b"\n"


def explain_unrecognised(sample: bytes, path: Path, options: LoadOptions | None = None) -> list[str]:
    """What the sources that can tell say about a file none recognised (closest format, how to pass one)."""
    hints = (getattr(source, "explain", None) for source in SOURCES)
    return [h for h in (explain(sample, path, options) for explain in hints if explain) if h]


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


# formats whose loaders read the file line by line (lines.LineBatches): a grown file of these loads its new lines only
LINE_FORMATS = ("nginx.", "litellm.payload_ndjson", "litellm.spendlogs_ndjson", "litellm.flat_spend", "litellm.stdout")


@dataclass
class _Grown:
    """The file extends one already in the case: its first `size` bytes are that file's."""

    path: str
    format: str
    size: int
    start: int | None = None          # byte where the lines to load begin; None: the new part cannot be read alone
    first_line: int = 1


def _grown_from(con: duckdb.DuckDBPyConnection, path: Path, size: int) -> tuple[list[int], list[tuple]]:
    """The sizes of the loaded files of the case smaller than this one (the marks a scan hashes at), and those files
    as (size, sha256, path, format), largest first."""
    rows = con.execute(
        "SELECT size_bytes, sha256, path, format FROM ingest_files WHERE status = 'loaded' AND size_bytes > 0 "
        "AND size_bytes < ? AND format NOT IN (?, ?) ORDER BY size_bytes DESC, file_id", [size, UNRECOGNISED, EMPTY],
    ).fetchall()
    return sorted({r[0] for r in rows}), rows


def _extends(scan: _Scan, path: Path, earlier: list[tuple]) -> _Grown | None:
    """The largest file of the case this one extends (same bytes as its whole content), with where to resume."""
    for size, sha, shown, fmt in earlier:
        prefix = scan.prefixes.get(size)
        if prefix is None or prefix[0] != sha:
            continue
        grown = _Grown(shown, fmt, size)
        if _is_gzip(path):
            counted = gzip_lines(path, size)
            if counted is not None and counted[1]:        # whole members ending with a whole line
                grown.start, grown.first_line = size, counted[0] + 1
        else:                                              # from the line the earlier copy ended in (cut, maybe)
            _, newlines, line_start = prefix
            grown.start, grown.first_line = line_start, newlines + 1
        return grown
    return None


def ingest_file(
    con: duckdb.DuckDBPyConnection, path: Path, display: str, options: LoadOptions | None = None
) -> FileReport:
    """Load one file into the case, in one transaction; never raises for a bad file, reports instead.

    The file is read as it was when ingest began: its size then bounds every read and its sha256 is checked again
    as its lines are read (a file appended to meanwhile loads what was hashed; one rewritten fails). A file that
    extends one already in the case (a log that grew) loads only its new lines when its format is read by lines.
    Nothing unredacted reaches the case: each loader redacts keys in the statements that store its rows (never an
    UPDATE after: the old values would stay in the file's free blocks), and the path and message stored and
    reported here are redacted too (a key may stand in a file name, and a note may quote a record)."""
    options = options or LoadOptions()
    display = redact_text(display)
    started = time.perf_counter()
    try:
        size_now = os.stat(path).st_size
        marks, earlier = _grown_from(con, path, size_now)
        scan = _Scan(path, marks)
    except NotAFile as e:
        return FileReport(display, "", None, 0, 0, 0, False, status="failed", message=str(e).split(": ", 1)[-1])
    except OSError as e:
        return FileReport(display, "", None, 0, 0, 0, False, status="failed", message=f"cannot read: {e.strerror}")
    sha, size = scan.sha256, scan.size
    row = con.execute(
        "SELECT format, records, loaded, quarantined, merged FROM ingest_files WHERE sha256 = ? AND status = 'loaded' "
        "AND format <> ?", [sha, UNRECOGNISED],
    ).fetchone()
    if row:
        fmt, records, loaded, quarantined, merged = row
        return FileReport(display, sha, fmt, records, loaded, quarantined, True, merged, status="skipped",
                          message="same content already in the case")
    grown = _extends(scan, path, earlier) if earlier else None
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
        spec = ReadSpec(size, sha)
        ctx = LoadContext(con, file_id, path, display, options, TimeWindow.at(now), spec)
        notes: list[str] = []
        resumed = False
        sample, blank = sample_and_blanks(path, size) if size else (b"", None)
        if size == 0 or blank is not None:
            # nothing but blank lines (or nothing): no record to lose; said in the message, not quarantined
            source, fmt, result = None, EMPTY, LoadResult(0, 0, 0)
            if blank:
                notes.append(f"only blank lines: {blank:,} blank lines skipped")
        else:
            source, fmt, envelope = _detect_wrapped(sample, path, options)
            if envelope is not None:
                spec.envelope = envelope
                notes.append(f"read as {envelopes.description(envelope)}: that prefix cut off each line")
            resumed = (grown is not None and grown.start is not None and fmt == grown.format
                       and fmt.startswith(LINE_FORMATS))
            if resumed:
                spec.start, spec.first_line = grown.start, grown.first_line
            if source is None:
                fmt = UNRECOGNISED
                result = _quarantine_unrecognised(ctx)
            else:
                result = source.load(ctx, fmt)
        if not spec.read_by_lines and not scan.unchanged(path):
            raise IngestError(f"the file changed while it was read ({size:,} bytes when ingest began): its records "
                              "and its sha256 would not match; ingest it again once nothing writes to it")
        if grown is not None:
            notes.insert(0, _grown_note(grown, spec, fmt, resumed))
        family = source.family if source is not None else "none"
        _check_conservation(con, file_id, family, result)
        if family == "litellm":
            pricing.price_requests(con, "price_status IS NULL", options.price_overrides)
        seconds = time.perf_counter() - started
        message = redact_text("; ".join([*notes, *result.notes])) or None
        if fmt == UNRECOGNISED:
            message = "; ".join(["format not recognised: every line kept in quarantine",
                                 *(n for n in result.notes if n.endswith("blank lines skipped")),
                                 *explain_unrecognised(sample, path, options)])
            message = redact_text(message)
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


def _detect_wrapped(sample: bytes, path: Path, options: LoadOptions) -> tuple:
    """(source, format, envelope): a sample whose lines a collector prefixed (forensics.sources.envelope) is
    detected without the prefix when a line format is recognised that way, else as it is (envelope None)."""
    envelope = envelopes.detect(sample)
    if envelope is not None:
        try:
            source, fmt = detect_format(envelopes.unwrap(sample, envelope), path, options)
        except ValueError:      # e.g. a --nginx-format the cut lines do not fit: the lines as they are may
            source = fmt = None
        if source is not None and fmt.startswith(LINE_FORMATS):
            return source, fmt, envelope
    return (*detect_format(sample, path, options), None)


def _grown_note(grown: _Grown, spec: ReadSpec, fmt: str, resumed: bool) -> str:
    """What the note says of a file that extends one already in the case."""
    if resumed and spec.read_by_lines:
        if spec.last_line < spec.first_line:
            return f"extends {grown.path}: no new line"
        return f"extends {grown.path}: lines {spec.first_line}..{spec.last_line} loaded"
    if fmt != grown.format:
        why = f"read as {fmt}, not {grown.format} as that file was"
    elif not fmt.startswith(LINE_FORMATS) or not spec.read_by_lines:
        why = f"{fmt} is not read line by line"
    else:
        why = "that file ends inside a gzip member or a line"
    return (f"extends {grown.path} (its first {grown.size:,} bytes are that file): {why}, so it was loaded whole "
            "(requests already in the case merge by id)")


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
    status: Callable[[str], None] | None = None,
) -> list[FileReport]:
    """Ingest every file under `inputs`; returns one report per file, in input order.

    Many small files load in batches (forensics.ingest_batch), the others one by one. `progress` wraps each file
    loaded alone (a spinner); `status` gets a line every few seconds on a long run (files done, records read)."""
    files = expand_inputs(inputs)
    (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchone()
    con.execute(f"SET memory_limit = '{INGEST_MEMORY_LIMIT}'")
    ticker = ingest_batch.Progress(len(files), status) if status else None
    try:
        done, rest = (ingest_batch.ingest_small(con, files, options, ticker) if len(files) >= ingest_batch.MIN_FILES
                      else ({}, list(range(len(files)))))
        for i in rest:
            with progress(files[i]) if progress else nullcontext():
                done[i] = ingest_file(con, files[i], str(files[i]), options)
            if ticker:
                ticker.add(1, done[i].records)
        error_log.resolve_offsets(con)        # error logs read before the access log that gives their offset
    finally:
        con.execute(f"SET memory_limit = '{limit}'")
    return [done[i] for i in range(len(files))]
