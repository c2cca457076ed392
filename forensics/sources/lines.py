"""Read a text log as numbered lines, losslessly and fast: pyarrow tables of (line_no, line), in bounded memory.

Only '\\n' ends a line; one trailing '\\r' is stripped (CRLF files), a UTF-8 BOM at the start of the file is dropped,
a last line without newline is kept, empty lines are yielded (as ''), and bytes that are not UTF-8 are written as
`\\xHH` the way nginx escapes them, with the line numbers kept in `LineBatches.invalid_utf8_lines`. A gzip file (by
magic bytes) is decompressed as a stream; a stream cut short yields what decompresses and sets `error`.

A line longer than `max_line_bytes` is not held in memory: only its first KEPT_BYTES are yielded (as its text) and
its line number and real length go to `LineBatches.oversized_lines`, for the loader to quarantine it as cut.

With `skip_empty`, empty lines are not yielded (they are no records): they are counted in `empty_lines`, and a run of
them costs no table at all. A batch holds at most MAX_BATCH_LINES lines, however short they are.

With a ReadSpec (set by ingest), only the bytes ingest hashed are read (what is appended meanwhile waits for the next
ingest), they are hashed again as they are read and checked against the recorded sha256 (FileChangedError when the
file was rewritten), and reading may begin at a line of the file (a grown file whose start the case already holds).
"""
from __future__ import annotations

import codecs
import hashlib
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from forensics.secrets import may_hold_secret

DEFAULT_BATCH_BYTES = 32 << 20
DEFAULT_MAX_LINE_BYTES = 64 << 20
MAX_BATCH_LINES = 4_000_000              # rows per batch: 128 MiB of empty lines would otherwise be 134 M rows
_BLOCK = 4 << 20                         # bytes read (or decompressed) at a time
_THREADED_TEST_BYTES = 4 << 20             # a segment this big has its secrets pre-test run in a thread
KEPT_BYTES = 64 << 10                    # what is kept of a line over the limit (the quarantine keeps 64 KiB too)
SCHEMA = pa.schema([("line_no", pa.int64()), ("line", pa.string())])
_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
# the CSV reader needs a field delimiter: any control byte the batch does not hold will do
_DELIMITERS = [bytes([b]) for b in range(1, 32) if b not in (9, 10, 13)] + [b"\t"]
# one thread: splitting lines is memory-bound, and the thread pool's hand-offs made it 2-3x slower on 2 cores
_READ = pcsv.ReadOptions(column_names=["line"], block_size=4 << 20, use_threads=False)
_CONVERT = {t: pcsv.ConvertOptions(column_types={"line": t}, strings_can_be_null=False,
                                   quoted_strings_can_be_null=False) for t in (pa.string(), pa.binary())}

_errors = threading.local()


def _nginx_hex(err: UnicodeDecodeError) -> tuple[str, int]:
    """Decode error handler: write the bad bytes as nginx does (\\xHH) and remember where they were."""
    _errors.positions.append(err.start)
    return "".join(f"\\x{b:02X}" for b in err.object[err.start:err.end]), err.end


codecs.register_error("forensics.nginx_hex", _nginx_hex)


def decode_nginx(raw: bytes) -> tuple[str, list[int]]:
    """`raw` as text with invalid UTF-8 bytes written \\xHH; also the byte offsets where they were."""
    _errors.positions = []
    text = raw.decode("utf-8", errors="forensics.nginx_hex")
    return text, _errors.positions


# schema metadata of a batch: facts about its own lines, safe to read however far ahead the reader has gone
LAST_LINE_CUT = b"last_line_cut"        # the batch ends the file, and its last line has no newline
MAY_HOLD_SECRET = b"may_hold_secret"    # set when flag_secrets: the batch's bytes may hold a key (secrets.py)


def batch_flag(batch: pa.Table, key: bytes) -> bool:
    return bool(batch.schema.metadata and batch.schema.metadata.get(key) == b"1")


class FileChangedError(Exception):
    """The bytes read are not those ingest hashed: the file was rewritten or cut while it was read."""


@dataclass
class ReadSpec:
    """What of a file to read, set by ingest for the file being loaded."""

    size: int                    # bytes to read: the size ingest hashed (bytes appended later are not read)
    sha256: str                  # of those bytes, checked as they are read
    start: int = 0               # byte offset where the lines to load begin (a grown file: after the earlier lines)
    first_line: int = 1          # the number of the line that starts there
    read_by_lines: bool = False  # set by the reader once it has read the file (the start honoured, the bytes checked)
    last_line: int = 0           # set by the reader: the number of the last line it read
    envelope: str | None = None  # a collector's prefix cut off every line (forensics.sources.envelope), if any


class _CheckedFile:
    """A binary file read up to `spec.size` bytes, every byte read hashed."""

    def __init__(self, f, spec: ReadSpec):
        self.f, self.spec, self.left, self.hash = f, spec, spec.size, hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self.f.read(min(n, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        self.hash.update(data)
        return data

    def skip(self, n: int) -> None:
        while n > 0 and (data := self.read(min(n, _BLOCK))):
            n -= len(data)

    def verify(self) -> None:
        """Hash what was not read yet (a gzip stream that ended early) and compare with the recorded sha256."""
        self.skip(self.left)
        if self.left > 0 or self.hash.hexdigest() != self.spec.sha256:
            raise FileChangedError(
                f"the file changed while it was read (its first {self.spec.size:,} bytes no longer have the sha256 "
                "they had when ingest began: rewritten or cut meanwhile?): nothing of it was loaded; ingest it again")


class LineBatches:
    """Iterable of pyarrow tables (line_no int64 1-based, line string); read counters once iteration ends."""

    def __init__(self, path: str | Path, batch_bytes: int = DEFAULT_BATCH_BYTES,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, flag_secrets: bool = False,
                 skip_empty: bool = False, spec: ReadSpec | None = None):
        self.path = Path(path)
        self.flag_secrets = flag_secrets
        self.skip_empty = skip_empty
        self.spec = spec
        self.batch_bytes = max(1, int(batch_bytes))
        self.max_line_bytes = max(1, int(max_line_bytes))
        self.oversized_lines: dict[int, int] = {}    # line number -> its length in bytes, for lines over the limit
        self.first_line = spec.first_line if spec else 1
        self.lines = self.first_line - 1             # the number of the last line read so far
        self.empty_lines = 0                         # empty lines not yielded (skip_empty)
        self.invalid_utf8_lines: list[int] = []      # lines holding bytes that are not UTF-8 (shown as \xHH)
        self.unterminated_last_line = False          # the file does not end with a newline
        self.error: str | None = None                # why reading stopped before the end of the data, if it did

    @property
    def lines_read(self) -> int:
        """Lines read by this reader (from its first line on), empty ones included."""
        return self.lines - self.first_line + 1

    def __iter__(self) -> Iterator[pa.Table]:
        with open(self.path, "rb") as raw:
            gz = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            f = raw
            if self.spec is not None:
                f = _CheckedFile(raw, self.spec)
                f.skip(self.spec.start)          # hashed, not parsed: the lines an earlier file of the case holds
            blocks = self._inflate(f) if gz else iter(lambda: f.read(_BLOCK), b"")
            first = self.spec is None or self.spec.start == 0
            for seg in self._segments(blocks):
                if first and seg.startswith(_BOM):
                    seg.start += len(_BOM)
                first = False
                if seg.end > seg.start:
                    secret = self._secret_test(seg)
                    table = self._table(seg)
                    may_hold_key = secret()          # waited for even when the segment gave no table
                    if table is not None:
                        table = self._flagged(self._unwrapped(table), may_hold_key)
                    seg.release()            # the raw bytes are not kept while the caller works on the batch
                    if table is not None and table.num_rows:
                        yield table
            if self.spec is not None:
                f.verify()
                self.spec.read_by_lines, self.spec.last_line = True, self.lines

    def _secret_test(self, seg: _Segment):
        """The secrets pre-test of the segment's bytes, as a function giving its answer. On a big segment it runs in
        a thread while the lines are split: the split (pyarrow) does not hold the GIL, the pre-test (re) does."""
        if not self.flag_secrets:
            return lambda: False
        if seg.end - seg.start < _THREADED_TEST_BYTES:
            found = may_hold_secret(seg.buf, seg.start, seg.end)
            return lambda: found
        answer: list[bool] = []
        buf, start, end = seg.buf, seg.start, seg.end       # bound now: the segment is released after the split
        worker = threading.Thread(target=lambda: answer.append(may_hold_secret(buf, start, end)),
                                  name="may_hold_secret", daemon=True)
        worker.start()

        def result() -> bool:
            worker.join()
            if not answer:                           # the test raised (out of memory?): assume a key, redact
                return True
            return answer[0]
        return result

    def _unwrapped(self, table: pa.Table) -> pa.Table:
        """The lines with the spec's envelope (a collector's prefix) cut off, where they carry it."""
        if self.spec is None or self.spec.envelope is None:
            return table
        from forensics.sources.envelope import pattern

        lines = pc.replace_substring_regex(table.column(1), pattern=pattern(self.spec.envelope), replacement="",
                                           max_replacements=1)
        table = table.set_column(1, SCHEMA.field(1), lines)
        # a blank line the collector wrapped is a blank line
        return self._without_empty(table) if self.skip_empty and table.num_rows else table

    def _flagged(self, table: pa.Table, may_hold_key: bool) -> pa.Table:
        meta = {}
        if self.unterminated_last_line:              # set just before the last segment comes out
            meta[LAST_LINE_CUT] = b"1"
        if may_hold_key:
            meta[MAY_HOLD_SECRET] = b"1"
        return table.replace_schema_metadata(meta) if meta else table

    def oversized_reason(self, line_no: int) -> str:
        """Why line `line_no` is quarantined: longer than the limit for one record, and what of it was kept."""
        return (f"line of {self.oversized_lines[line_no]:,} bytes is longer than the {_size(self.max_line_bytes)} "
                f"limit for one record: cut, only its first {_size(KEPT_BYTES)} kept")

    def oversized_in(self, lo: int, hi: int) -> list[int]:
        """Line numbers in [lo, hi] that were over the limit (their text is the kept prefix only)."""
        return sorted(n for n in self.oversized_lines if lo <= n <= hi)

    # -- segments: byte ranges that end at a line boundary (or at the end of the data) -----------------------
    def _segments(self, blocks: Iterator[bytes]) -> Iterator[_Segment]:
        """Blocks of data cut into segments of about batch_bytes at line ends; memory stays within a batch and a
        block, whatever the lines: the rest of a line over max_line_bytes is counted, not kept. The blocks of a
        segment are joined once (one copy, not an append per block and a copy of the whole)."""
        parts: list[bytes] = []                      # blocks not yielded yet; only the first may start mid-line
        size = 0                                     # bytes in parts
        last = 0                                     # bytes of parts up to and including their last newline
        lines = 0                                    # newlines in parts (a batch of tiny lines is many rows)
        cut_prefix: bytes | None = None              # inside a line over the limit: its start, and its length so far
        cut_len = 0
        for data in blocks:
            if cut_prefix is not None:
                nl = data.find(b"\n")
                if nl < 0:
                    cut_len += len(data)
                    continue
                yield _Segment.cut_line(cut_prefix, cut_len + nl)
                cut_prefix, data = None, data[nl + 1:]
            nl = data.rfind(b"\n")
            if nl >= 0:
                last = size + nl + 1
                lines += data.count(b"\n")
            parts.append(data)
            size += len(data)
            if size >= self.batch_bytes or lines >= MAX_BATCH_LINES or size - last > self.max_line_bytes:
                if last:
                    joined = b"".join(parts) if len(parts) > 1 else parts[0]
                    rest = joined[last:]                 # the unfinished line at the end (a copy)
                    seg = _Segment(joined, 0, last, pa.py_buffer(joined))
                    del joined                           # the segment holds the bytes, and releases them when done
                    parts, size, last, lines = ([rest] if rest else []), len(rest), 0, 0
                    del rest
                    yield seg
                    del seg
                if size > self.max_line_bytes:           # what is left is one unfinished line, and it is too long
                    cut_prefix, cut_len = b"".join(parts)[:KEPT_BYTES], size
                    parts, size = [], 0
        if cut_prefix is not None:                   # set before the last batch goes out, for its reader
            self.unterminated_last_line = True
            yield _Segment.cut_line(cut_prefix, cut_len)
        elif parts:
            joined = b"".join(parts) if len(parts) > 1 else parts[0]
            parts.clear()
            self.unterminated_last_line = not joined.endswith(b"\n")
            yield _Segment.of(joined)

    def _inflate(self, f) -> Iterator[bytes]:
        """A gzip stream (several members allowed) in blocks of at most _BLOCK bytes, however well it compresses.

        A stream cut short or corrupt ends early and sets `error`; nothing readable at all raises ValueError."""
        inflater = zlib.decompressobj(31)
        out_total = 0
        while block := f.read(_BLOCK):
            while block:
                try:
                    data = inflater.decompress(block, _BLOCK)
                except zlib.error as e:
                    if out_total == 0:
                        raise ValueError(f"gzip data is corrupt at the start ({e})") from None
                    self.error = (f"gzip data corrupt after {out_total:,} decompressed bytes ({e}): "
                                  "the rest cannot be read")
                    return
                block = inflater.unconsumed_tail
                out_total += len(data)
                if data:
                    yield data
                if inflater.eof and inflater.unused_data:
                    rest = inflater.unused_data
                    if not rest.startswith(_GZIP_MAGIC[:len(rest)]):
                        if rest.strip(b"\x00"):
                            self.error = "data after the end of the gzip stream is not gzip: it was not read"
                        return
                    inflater = zlib.decompressobj(31)     # the next member of a concatenated gzip file
                    block = rest + block
        if not inflater.eof:
            if out_total == 0:
                raise ValueError("gzip stream cut short before any data could be decompressed")
            self.error = (f"gzip stream cut short after {out_total:,} decompressed bytes: "
                          "the rest of the file cannot be read")

    # -- one segment into a table ----------------------------------------------------------------------------
    def _table(self, seg: _Segment) -> pa.Table | None:
        """The segment's lines as a table; None when skip_empty and it holds nothing but newlines."""
        start = self.lines + 1
        if self.skip_empty and seg.cut_length is None and seg.all_newlines():
            n = seg.end - seg.start
            self.lines += n
            self.empty_lines += n
            return None
        if seg.cut_length is not None:
            self.oversized_lines[start] = seg.cut_length
            self.lines += 1
            text, _ = decode_nginx(seg.bytes())
            return pa.Table.from_arrays([pa.array([start], pa.int64()), pa.array([text], pa.string())], schema=SCHEMA)
        lines = seg.fast_split()
        if lines is None:
            lines = self._exact_split(seg.bytes(), start)
        else:
            self.invalid_utf8_lines.extend(start + r for r in seg.invalid_rows)
        if isinstance(lines, pa.Array):
            lines = pa.chunked_array([lines], pa.string())
        lines = self._cut_long(lines, start)
        n = len(lines)
        self.lines += n
        line_no = pa.chunked_array([np.arange(start, start + n, dtype=np.int64)], pa.int64())
        table = pa.Table.from_arrays([line_no, lines], schema=SCHEMA)
        if self.skip_empty and n:
            table = self._without_empty(table)
        return table

    def _without_empty(self, table: pa.Table) -> pa.Table:
        """`table` without its empty lines, counted in empty_lines."""
        lengths = pc.binary_length(table.column(1))
        if pc.min(lengths).as_py() != 0:              # one pass over the offsets, not over the bytes
            return table
        filled = pc.greater(lengths, 0)
        self.empty_lines += table.num_rows - (pc.sum(filled).as_py() or 0)
        return table.filter(filled)

    def _cut_long(self, lines: pa.ChunkedArray, start: int) -> pa.ChunkedArray:
        """Lines over the limit (but within one batch) replaced by their first KEPT_BYTES, and remembered."""
        if len(lines) == 0 or lines.nbytes <= self.max_line_bytes:
            return lines
        sizes = pc.binary_length(lines)
        over = pc.greater(sizes, self.max_line_bytes)
        if not pc.any(over).as_py():
            return lines
        rows = np.flatnonzero(over.to_numpy(zero_copy_only=False))
        for r, size in zip(rows.tolist(), pc.take(sizes, pa.array(rows)).to_pylist()):
            self.oversized_lines[start + r] = size
        kept = pc.utf8_slice_codeunits(lines, 0, KEPT_BYTES // 4)
        return pa.chunked_array([pc.if_else(over.combine_chunks(), kept.combine_chunks(), lines.combine_chunks())])

    def _exact_split(self, raw: bytes, start: int) -> pa.Array:
        """The slow, exact path: a bare '\\r', a BOM or no free delimiter byte in the segment."""
        text, bad = decode_nginx(raw)
        if bad:
            newlines = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == 10)
            rows = np.unique(np.searchsorted(newlines, np.asarray(bad, dtype=np.int64)))
            self.invalid_utf8_lines.extend(int(r) + start for r in rows)
        parts = text.split("\n")
        if text.endswith("\n"):
            parts.pop()
        return pa.array([p[:-1] if p.endswith("\r") else p for p in parts], pa.string())


class _Segment:
    """Bytes [start, end) of a block of the file's (decompressed) data, searched without copying."""

    def __init__(self, buf: bytes, start: int, end: int, arrow_buf: pa.Buffer | None):
        self.buf, self.start, self.end, self.arrow_buf = buf, start, end, arrow_buf
        self.invalid_rows: list[int] = []            # rows (from 0) of the last split that were not UTF-8
        self.cut_length: int | None = None           # set for the prefix of one line over the limit: its length

    @classmethod
    def of(cls, chunk: bytes) -> _Segment:
        return cls(chunk, 0, len(chunk), pa.py_buffer(chunk))

    @classmethod
    def cut_line(cls, prefix: bytes, length: int) -> _Segment:
        seg = cls(prefix, 0, len(prefix), None)
        seg.cut_length = length
        return seg

    def release(self) -> None:
        """Drop the bytes (the segment is done with); the generator that made it may hold it a while longer."""
        self.buf, self.arrow_buf = b"", None
        self.start = self.end = 0

    def find(self, needle: bytes) -> bool:
        return self.buf.find(needle, self.start, self.end) >= 0

    def all_newlines(self) -> bool:
        return self.startswith(b"\n") and self.buf.count(b"\n", self.start, self.end) == self.end - self.start

    def startswith(self, prefix: bytes) -> bool:
        return self.buf[self.start:self.start + len(prefix)] == prefix

    def bytes(self) -> bytes:
        return self.buf[self.start:self.end]

    def fast_split(self) -> pa.ChunkedArray | None:
        """Split with pyarrow's CSV reader (about 10 M lines/s); None when the segment needs the exact path."""
        if self.startswith(_BOM):                     # the CSV reader would drop it, but only the file's first is ours
            return None
        if self.find(b"\r"):
            raw = self.bytes()
            if raw.count(b"\r") != raw.count(b"\r\n"):   # the CSV reader would end a line at a bare '\r'
                return None
        delimiter = next((d for d in _DELIMITERS if not self.find(d)), None)
        if delimiter is None:
            return None
        parse = pcsv.ParseOptions(delimiter=delimiter.decode(), quote_char=False, double_quote=False,
                                  escape_char=False, newlines_in_values=False, ignore_empty_lines=False)
        data = self.arrow_buf.slice(self.start, self.end - self.start)
        try:
            table = pcsv.read_csv(pa.BufferReader(data), read_options=_READ, parse_options=parse,
                                  convert_options=_CONVERT[pa.string()])
            return table.column("line")
        except pa.ArrowInvalid as e:                     # invalid UTF-8 somewhere in the segment
            if "straddl" in str(e):                      # a line longer than two reader blocks: the exact path
                return None
        try:
            table = pcsv.read_csv(pa.BufferReader(data), read_options=_READ, parse_options=parse,
                                  convert_options=_CONVERT[pa.binary()])
        except pa.ArrowInvalid:
            return None
        chunks, row = [], 0
        for chunk in table.column("line").chunks:
            fixed, bad = _repair_utf8(chunk)
            chunks.append(fixed)
            self.invalid_rows.extend(row + b for b in bad)
            row += len(chunk)
        return pa.chunked_array(chunks, pa.string())


def _repair_utf8(lines: pa.BinaryArray) -> tuple[pa.StringArray, list[int]]:
    """Lines as text, bytes that are not UTF-8 written \\xHH; only lines holding a byte >= 0x80 are looked at."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
    values = np.frombuffer(lines.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    high = np.flatnonzero(values >= 0x80) + offsets[0]
    rows = np.unique(np.searchsorted(offsets, high, side="right") - 1)
    texts, bad = [], []
    for r in rows.tolist():
        text, errors = decode_nginx(lines[r].as_py())
        texts.append(text.encode())
        if errors:
            bad.append(r)
    mask = np.zeros(len(lines), dtype=bool)
    mask[rows] = True
    fixed = pc.replace_with_mask(lines, pa.array(mask), pa.array(texts, pa.binary())) if len(rows) else lines
    return fixed.cast(pa.string()), bad


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n >> 10} KiB" if not n % 1024 else f"{n} bytes"


def iter_line_batches(path: str | Path, batch_bytes: int = DEFAULT_BATCH_BYTES,
                      max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, flag_secrets: bool = False,
                      skip_empty: bool = False, spec: ReadSpec | None = None) -> LineBatches:
    """The lines of `path` (plain or gzip) as pyarrow tables (line_no, line); see LineBatches for the counters."""
    return LineBatches(path, batch_bytes, max_line_bytes, flag_secrets, skip_empty, spec)
