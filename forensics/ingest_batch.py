"""Many small files per DuckDB statement: a bucket of one-request JSON objects (LiteLLM's S3/GCS loggers) or of
one-line nginx files loads in batches, not one file per round trip (~90 ms each: a month of a bucket at 1 request/s
would take days).

Small files of a format a loader can take together (BATCH_FORMATS) are read once each (bytes, sha256, format from
content), then loaded BATCH_FILES at a time, in one transaction per batch: one loader run over all of them, under a
batch id, then every row moved to its own file's id and line (one UPDATE per table: ids and line numbers only, no
text is rewritten), each file's counts taken from what the case holds and checked against what the loader read,
one ingest_files row per file. The accounting is the per-file path's: sha256, records = loaded + quarantined, the
rows under each file_id = loaded - merged, quarantine by file and line; a batch that fails is rolled back and its
files go through the per-file path one by one (forensics.ingest.ingest_file), as do the files that are not plain
(gzip, not UTF-8, a BOM, CR line ends, no final newline, a file that extends one already in the case: what the
per-file path reads in a way of its own).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import duckdb
import pyarrow as pa

from forensics import pricing
from forensics.case import tool_version
from forensics.duck import query_with
from forensics.secrets import redact_text
from forensics.accounting import FileReport
from forensics.sources import SAMPLE_BYTES, TABLES_OF_FAMILY, LoadContext, LoadOptions, detect_format
from forensics.sources.nginx.nginx_infer import infer, inference_sample
from forensics.sources.plausible import TimeWindow

SMALL_BYTES = 256 << 10       # a file up to this size may be loaded with others
MIN_FILES = 8                 # fewer small files of one format than this load one by one (no gain to batch them)
BATCH_FILES = 2000            # files per batch (one transaction): ~0.5 s of work, a few MB of text
BATCH_ID = -1                 # the file id a batch's rows carry until they are moved to their files
# formats whose loader takes many files at once: nginx access logs (lines of the files joined, in order; with the
# log_formats of --nginx-conf, nginx.conf.*, and formats inferred from the lines, grouped by the format each file's
# own lines give) and one-object LiteLLM files (one record each)
LINE_BATCHED = ("nginx.combined", "nginx.main", "nginx.timings", "nginx.ingress", "nginx.json", "nginx.json_default",
                "nginx.custom", "nginx.inferred")
CONF_FORMATS = "nginx.conf."
OBJECT_BATCHED = ("litellm.payload_object", "litellm.spendlogs_object")
BATCH_FORMATS = LINE_BATCHED + OBJECT_BATCHED
PROGRESS_SECONDS = 5.0


@dataclass
class SmallFile:
    """A small file read whole: what the batch needs of it."""

    index: int                 # its place in the input order
    path: Path
    display: str               # redacted, as shown and stored
    data: bytes
    sha256: str
    format: str | None = None
    log_format: str | None = None    # nginx.inferred: the log_format its lines give (files load with theirs only)
    source: object = None
    records: int = 0           # lines that are records (not empty), or 1 for an object
    blank: int = 0             # empty lines


@dataclass
class Progress:
    """A line on stderr every few seconds on a long run (terminal or not): files done, records read."""

    total: int
    write: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    every: float = PROGRESS_SECONDS
    files: int = 0
    records: int = 0
    started: float = field(default_factory=time.perf_counter)
    last: float = field(default_factory=time.perf_counter)

    def add(self, files: int, records: int) -> None:
        self.files += files
        self.records += records
        now = time.perf_counter()
        if now - self.last >= self.every and self.files < self.total:
            self.last = now
            rate = self.files / max(now - self.started, 1e-9)
            self.write(f"ingest: {self.files:,} of {self.total:,} files, {self.records:,} records "
                       f"({rate:,.0f} files/s)")


def batched(fmt: str | None) -> bool:
    """Whether files of format `fmt` may load together."""
    return fmt is not None and (fmt in BATCH_FORMATS or fmt.startswith(CONF_FORMATS))


def line_batched(fmt: str | None) -> bool:
    return fmt is not None and (fmt in LINE_BATCHED or fmt.startswith(CONF_FORMATS))


def inferred_format(data: bytes) -> str | None:
    """The log_format the nginx loader would infer for this plain line file alone (nginx_infer), None for none."""
    lines = enumerate(data.decode("utf-8").split("\n")[:-1], start=1)
    return infer(inference_sample((n, ln) for n, ln in lines if ln)).text      # the reader skips empty lines


def read_small(index: int, path: Path) -> SmallFile | None:
    """The file read whole when it is a small regular file; None otherwise (it takes the per-file path)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or not 0 < st.st_size <= SMALL_BYTES:
            return None
        data = f.read(SMALL_BYTES + 1)
    if len(data) > SMALL_BYTES:
        return None
    return SmallFile(index, path, redact_text(str(path)), data, hashlib.sha256(data).hexdigest())


def plain_bytes(data: bytes) -> bool:
    """Whether `data` is UTF-8 text with no BOM, no CR, no NUL, not gzip and not all blank: what the per-file path
    reads exactly as the batch does (before the format's own test, plain_text)."""
    if data[:2] == b"\x1f\x8b" or data[:3] == b"\xef\xbb\xbf" or b"\r" in data or b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(data.strip())


def plain_text(data: bytes, fmt: str) -> bool:
    """Whether a plain file (plain_bytes) reads the same in a batch as alone: a line file ends with a newline; an
    object file is one JSON object, parsed whole."""
    if fmt in OBJECT_BATCHED:
        text = data.decode("utf-8")
        try:
            return isinstance(json.loads(text), dict)
        except (ValueError, RecursionError):
            return False
    return data.endswith(b"\n") and bool(data.strip())


def line_counts(data: bytes) -> tuple[int, int]:
    """(records, blank lines) of a line file ending with a newline: records are the lines that are not empty."""
    lines = data.count(b"\n")
    blank = data.count(b"\n\n") + data.startswith(b"\n")
    if blank:     # runs of 3+ newlines: count exactly
        blank = sum(1 for ln in data.split(b"\n")[:-1] if not ln)
    return lines - blank, blank


def extends_another(data: bytes, marks: dict[int, set[str]]) -> bool:
    """Whether the file's first N bytes are a whole file already in the case (or in this batch), for some size N in
    `marks` (size -> sha256s): a grown log, which the per-file path loads from where the earlier copy ended."""
    h, pos = hashlib.sha256(), 0
    for size in sorted(s for s in marks if s < len(data)):
        h.update(data[pos:size])
        pos = size
        if h.copy().hexdigest() in marks[size]:
            return True
    return False


def load_batch(con: duckdb.DuckDBPyConnection, files: list[SmallFile], options: LoadOptions | None) -> list:
    """Load `files` (one format, plain, distinct contents, none in the case) in one transaction; their FileReports
    in the same order. Raises (after rolling back) when anything fails: the caller then loads them one by one."""
    options = options or LoadOptions()
    fmt, source = files[0].format, files[0].source
    started = time.perf_counter()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    tmp = None
    con.execute("BEGIN TRANSACTION")
    try:
        ids = [i for (i,) in con.execute("SELECT nextval('file_id_seq') FROM range(?)", [len(files)]).fetchall()]
        ids.sort()
        ctx = LoadContext(con, BATCH_ID, files[0].path, f"{len(files)} small files", options, TimeWindow.at(now),
                          inferred_format=files[0].log_format)
        if fmt in OBJECT_BATCHED:
            ctx.texts = [f.data.decode("utf-8") for f in files]
            lo = list(range(1, len(files) + 1))
            hi, shift = lo, [n - 1 for n in lo]
        else:
            tmp = _joined([f.data for f in files])
            ctx.path = tmp.path
            lo, hi, shift, line = [], [], [], 0
            for f in files:
                n = f.data.count(b"\n")
                lo.append(line + 1)
                hi.append(line + n)
                shift.append(line)
                line += n
        result = source.load(ctx, fmt)
        expected = sum(f.records for f in files)
        if result.records != expected:
            raise ValueError(f"batch accounting: the loader read {result.records} records, the files hold {expected}")
        moved = pa.table({"file_id": pa.array(ids, pa.int32()), "lo": pa.array(lo, pa.int64()),
                          "hi": pa.array(hi, pa.int64()), "shift": pa.array(shift, pa.int64())})
        tables = TABLES_OF_FAMILY.get(source.family, ())
        for table, column in [*((t, _RECORD_COLUMN[t]) for t in tables), ("quarantine", "record_no")]:
            query_with(con, "_batch_map", moved, f"""
                UPDATE {table} SET file_id = m.file_id, {column} = {table}.{column} - m.shift
                FROM _batch_map m WHERE {table}.file_id = {BATCH_ID} AND {table}.{column} BETWEEN m.lo AND m.hi""")
        counts = _counts(con, moved, tables)
        seconds = (time.perf_counter() - started) / len(files)
        # what the loader says of the format holds for each file alike (the log_format inferred, or of nginx.conf)
        said = [n for n in result.notes if n.startswith("log_format ")]
        rows, reports = [], []
        for f, fid in zip(files, ids):
            stored, quarantined = counts.get(fid, (0, 0))
            loaded = f.records - quarantined
            notes = [*said, *([f"{f.blank:,} blank lines skipped (not records)"] if f.blank else [])]
            message = redact_text("; ".join(notes)) or None
            rows.append((fid, f.display, f.sha256, len(f.data), fmt, f.records, loaded, quarantined,
                         loaded - stored, message, seconds))
            reports.append(FileReport(f.display, f.sha256, fmt, f.records, loaded, quarantined, False,
                                      loaded - stored, message=message, seconds=seconds))
        bad = [r for r in rows if r[7] > r[5] or r[8] < 0 or (r[8] and fmt not in OBJECT_BATCHED)]
        if bad:
            raise ValueError(f"batch accounting: {bad[0][1]} has {bad[0][5]} records, {bad[0][7]} quarantined, "
                             f"{bad[0][6] - bad[0][8]} rows stored")
        columns = ("file_id", "path", "sha256", "size_bytes", "format", "records", "loaded", "quarantined", "merged",
                   "message", "seconds")
        query_with(con, "_batch_files", pa.table({c: [r[n] for r in rows] for n, c in enumerate(columns)}), f"""
            INSERT INTO ingest_files ({', '.join(columns)}, status, started_at, tool_version)
            SELECT {', '.join(columns)}, 'loaded', TIMESTAMP '{now.isoformat(sep=' ')}',
                   '{tool_version().replace("'", "''")}' FROM _batch_files""")
        if source.family == "litellm":
            pricing.price_requests(con, "price_status IS NULL", options.price_overrides)
        con.execute("COMMIT")
        return reports
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise
    finally:
        if tmp is not None:
            tmp.close()


class _joined:
    """The files' bytes one after the other, as a file the line reader opens by path: in memory (memfd, gone with
    the process, however it ends) where the system has it, else a temporary file removed when the batch is done."""

    def __init__(self, parts: list[bytes]):
        if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
            self.fd = os.memfd_create("forensics_batch")
            self.path, self.temp = Path(f"/proc/self/fd/{self.fd}"), None
        else:
            self.fd, name = tempfile.mkstemp(prefix="forensics_batch_", suffix=".log")
            self.path = self.temp = Path(name)
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(self.fd, view):]

    def close(self) -> None:
        os.close(self.fd)
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)


# the column holding a row's place in its file, per family table
_RECORD_COLUMN = {"http_requests": "line_no", "nginx_errors": "line_no", "llm_requests": "record_no",
                  "litellm_log": "line_no", "provider_usage": "record_no", "provider_costs": "record_no"}


def _counts(con: duckdb.DuckDBPyConnection, moved: pa.Table, tables: tuple[str, ...]) -> dict[int, tuple[int, int]]:
    """file_id -> (rows stored under it in the family's tables, quarantine rows) for the batch's files; rows left
    under the batch id mean a row that fits no file (an accounting error)."""
    rows = " UNION ALL ".join(f"SELECT file_id FROM {t} WHERE file_id = {BATCH_ID} OR file_id IN "
                              f"(SELECT file_id FROM _batch_map)" for t in tables)
    got = query_with(con, "_batch_map", moved, f"""
        WITH r AS (SELECT file_id, count(*) AS n FROM ({rows}) GROUP BY ALL),
             q AS (SELECT file_id, count(*) AS n FROM quarantine WHERE file_id = {BATCH_ID}
                   OR file_id IN (SELECT file_id FROM _batch_map) GROUP BY ALL)
        SELECT coalesce(r.file_id, q.file_id), coalesce(r.n, 0), coalesce(q.n, 0) FROM r FULL JOIN q USING (file_id)""")
    counts = {int(f): (int(n), int(q)) for f, n, q in got}
    if BATCH_ID in counts:
        raise ValueError(f"batch accounting: {sum(counts[BATCH_ID])} rows fit no file of the batch")
    return counts


WINDOW_FILES = 8000           # input files looked at together (read, detected, grouped by format)
WINDOW_BYTES = 64 << 20       # and at most this much of their text in memory


def ingest_small(con: duckdb.DuckDBPyConnection, files: list[Path], options: LoadOptions | None,
                 progress: Progress | None = None) -> tuple[dict[int, object], list[int]]:
    """Load the small plain files of `files` in batches; returns (input index -> FileReport for those done, the
    indexes left for the per-file path)."""
    done: dict[int, object] = {}
    rest: list[int] = []
    window: list[SmallFile] = []
    size = 0
    for i, path in enumerate(files):
        f = read_small(i, path)
        if f is None:
            rest.append(i)
            continue
        window.append(f)
        size += len(f.data)
        if len(window) >= WINDOW_FILES or size >= WINDOW_BYTES:
            _window(con, window, options, done, rest, progress)
            window, size = [], 0
    if window:
        _window(con, window, options, done, rest, progress)
    return done, sorted(rest)


def _window(con, window: list[SmallFile], options: LoadOptions | None, done: dict, rest: list[int],
            progress: Progress | None) -> None:
    plain: list[SmallFile] = []
    for f in window:
        try:
            source, fmt = detect_format(f.data[:SAMPLE_BYTES], f.path, options) if plain_bytes(f.data) else (None, None)
        except Exception:        # the per-file path says what is wrong with it
            source, fmt = None, None
        if batched(fmt) and plain_text(f.data, fmt):
            f.source, f.format = source, fmt
            f.records, f.blank = (1, 0) if fmt in OBJECT_BATCHED else line_counts(f.data)
            f.log_format = inferred_format(f.data) if fmt == "nginx.inferred" else None
            if fmt != "nginx.inferred" or f.log_format is not None:
                plain.append(f)
                continue
        rest.append(f.index)
    if not plain:
        return
    known = {sha: row for sha, *row in con.execute(
        "SELECT sha256, format, records, loaded, quarantined, merged FROM ingest_files WHERE status = 'loaded' "
        "AND format <> 'unrecognised' AND sha256 IN (SELECT unnest(?::VARCHAR[]))",
        [sorted({f.sha256 for f in plain})]).fetchall()}
    grown = _grown(con, [f for f in plain if line_batched(f.format) and f.sha256 not in known])
    first: dict[str, SmallFile] = {}
    again: list[SmallFile] = []
    groups: dict[str, list[SmallFile]] = {}
    for f in plain:
        if f.sha256 in known:
            fmt, records, loaded, quarantined, merged = known[f.sha256]
            done[f.index] = FileReport(f.display, f.sha256, fmt, records, loaded, quarantined, True, merged,
                                       status="skipped", message="same content already in the case")
        elif f.sha256 in first:
            again.append(f)
        elif f.sha256 in grown:
            rest.append(f.index)
        else:
            first[f.sha256] = f
            groups.setdefault((f.format, f.log_format), []).append(f)
    for group in groups.values():
        if len(group) < MIN_FILES:
            rest.extend(f.index for f in group)
            continue
        for start in range(0, len(group), BATCH_FILES):
            batch = group[start:start + BATCH_FILES]
            try:
                reports = load_batch(con, batch, options)
            except Exception:      # anything odd in the batch: each file alone, the per-file path says what
                rest.extend(f.index for f in batch)
                continue
            for f, r in zip(batch, reports):
                done[f.index] = r
            if progress is not None:
                progress.add(len(batch), sum(f.records for f in batch))
    for f in again:       # the same content twice in the input: the second is skipped, as one by one
        r = done.get(first[f.sha256].index)
        if r is None:
            rest.append(f.index)
        else:
            done[f.index] = FileReport(f.display, f.sha256, r.format, r.records, r.loaded, r.quarantined, True,
                                       r.merged, status="skipped", message="same content already in the case")


def _grown(con, files: list[SmallFile]) -> set[str]:
    """sha256s of the line files whose first lines are a whole file already in the case or in `files` (a grown log:
    the per-file path loads only its new lines)."""
    prefixes: dict[str, str] = {}
    for f in files:
        h, pos, end = hashlib.sha256(), 0, f.data.find(b"\n")
        while 0 <= end < len(f.data) - 1:
            h.update(f.data[pos:end + 1])
            pos = end + 1
            prefixes[h.copy().hexdigest()] = f.sha256
            end = f.data.find(b"\n", pos)
    if not prefixes:
        return set()
    own = {f.sha256 for f in files}
    hits = {p for p in prefixes if p in own}
    hits |= {p for (p,) in con.execute(
        "SELECT sha256 FROM ingest_files WHERE status = 'loaded' AND sha256 IN (SELECT unnest(?::VARCHAR[]))",
        [sorted(prefixes)]).fetchall()}
    return {prefixes[p] for p in hits}
