"""The shared line reader: exact line numbers and text whatever the file throws at it (CRLF, BOM, gzip, bad bytes)."""
from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensics.sources.lines import decode_nginx, iter_line_batches
from conftest import examples  # tests/conftest.py: the tier's hypothesis budget


def read(path, batch_bytes=1 << 20):
    reader = iter_line_batches(path, batch_bytes)
    rows = []
    for table in reader:
        assert table.column_names == ["line_no", "line"]
        rows.extend(zip(table.column("line_no").to_pylist(), table.column("line").to_pylist()))
    assert [n for n, _ in rows] == list(range(1, len(rows) + 1))       # numbered 1.. without a gap
    assert reader.lines == len(rows)
    return [line for _, line in rows], reader


def expected_lines(data: bytes) -> list[str]:
    """The reference: split on \\n only, strip one \\r, drop a leading BOM, bad bytes as nginx's \\xHH."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data:
        return []
    text, _ = decode_nginx(data)
    parts = text.split("\n")
    if text.endswith("\n"):
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def write(tmp_path, data: bytes, name="f.log"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_plain_lines_and_last_line_without_newline(tmp_path):
    lines, reader = read(write(tmp_path, b"a\nbb\n\nccc"))
    assert lines == ["a", "bb", "", "ccc"]
    assert reader.unterminated_last_line and reader.error is None


def test_crlf_and_bom_are_removed_but_a_bare_cr_stays(tmp_path):
    lines, _ = read(write(tmp_path, b"\xef\xbb\xbfone\r\ntwo\r\n\r\nthr\ree\n"))
    assert lines == ["one", "two", "", "thr\ree"]


def test_invalid_utf8_is_written_as_nginx_escapes_and_flagged(tmp_path):
    lines, reader = read(write(tmp_path, b"ok\nbad \xff\xfe end\nfine \xc3\xa9\ncut \xe2\x82\n"))
    assert lines == ["ok", "bad \\xFF\\xFE end", "fine \u00e9", "cut \\xE2\\x82"]
    assert reader.invalid_utf8_lines == [2, 4]


def test_delimiter_like_control_bytes_do_not_split_lines(tmp_path):
    data = b"".join(bytes([b]) + b" x\n" for b in range(1, 32) if b not in (10, 13))
    lines, _ = read(write(tmp_path, data))
    assert lines == expected_lines(data)


def test_small_batches_keep_numbering_and_long_lines_whole(tmp_path):
    data = b"".join(b"line %d %s\n" % (i, b"x" * (i % 7) * 300) for i in range(200))
    lines, _ = read(write(tmp_path, data), batch_bytes=1000)
    assert lines == expected_lines(data)


def test_empty_file(tmp_path):
    lines, reader = read(write(tmp_path, b""))
    assert lines == [] and reader.lines == 0


def test_gzip_multi_member(tmp_path):
    p = write(tmp_path, gzip.compress(b"a\nb\n") + gzip.compress(b"c\nd"), "x.log.2.gz")
    lines, reader = read(p)
    assert lines == ["a", "b", "c", "d"] and reader.unterminated_last_line and reader.error is None


def test_gzip_cut_short_yields_what_decompresses_and_says_so(tmp_path):
    body = b"".join(b"%d some log line with text %d\n" % (i, i * 7919) for i in range(20000))
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    packed = z.compress(body) + z.flush()
    p = write(tmp_path, packed[: len(packed) // 2], "access.log.3.gz")
    lines, reader = read(p, batch_bytes=4096)
    assert reader.error and "cut short" in reader.error
    assert 0 < len(lines) < 20000
    full = body.decode().split("\n")
    assert lines[:-1] == full[: len(lines) - 1]                      # every whole line is exact
    assert full[len(lines) - 1].startswith(lines[-1])                # the last one may be cut


def test_gzip_corrupt_from_the_start_cannot_be_read(tmp_path):
    p = write(tmp_path, b"\x1f\x8b\x08\x00garbage-not-deflate", "bad.gz")
    with pytest.raises(ValueError, match="gzip"):
        read(p)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.lists(st.sampled_from([b"a", b"xyz", b" ", b"\n", b"\r", b"\r\n", b"\x01", b"\t", b"\xff", b"\xc3\xa9",
                                   b"\xe2\x82", b'"', b"\x00", b"\xef\xbb\xbf"]), max_size=80).map(b"".join),
    batch=st.integers(min_value=1, max_value=64),
)
def test_any_bytes_round_trip_like_the_reference(tmp_path, data, batch):
    for name, content in (("p.log", data), ("p.log.gz", gzip.compress(data))):
        lines, _ = read(write(tmp_path, content, name), batch_bytes=batch)
        assert lines == expected_lines(data)


def test_batch_flags_travel_with_their_batch(tmp_path, monkeypatch):
    """The last-line-cut and may-hold-secret facts ride on the batch they are about, whatever the reader knows."""
    from forensics.sources import lines as lines_module
    from forensics.sources.lines import LAST_LINE_CUT, MAY_HOLD_SECRET, batch_flag

    monkeypatch.setattr(lines_module, "_BLOCK", 1024)          # many small batches from a small file

    filler = b"".join(b"%05d plain line, nothing to see\n" % i for i in range(400))
    data = filler + b"ua=curl Authorization: BeArEr abcdefghijklmnopqrstuvwxyz\n" + filler + b"cut mid-li"
    reader = iter_line_batches(write(tmp_path, data), batch_bytes=4096, flag_secrets=True)
    batches = list(reader)
    assert len(batches) > 4
    secret_line = 401
    for b in batches:
        numbers = b.column("line_no").to_pylist()
        assert batch_flag(b, MAY_HOLD_SECRET) == (secret_line in numbers)
        assert batch_flag(b, LAST_LINE_CUT) == (b is batches[-1])
    assert not any(batch_flag(b, MAY_HOLD_SECRET) for b in iter_line_batches(write(tmp_path, filler, "g.log"), 4096))


_SECRETISH = st.sampled_from(["sk-", "eyJ", "bearer", "BEARER", "bEaReR", "\\u0073k-", "Sk-", "eyj", "bear er",
                              "sk_", "\xff", "\x00", "\r\n", "\n", " ", "x" * 20])


@settings(max_examples=examples(300), deadline=None, derandomize=True, database=None)
@given(parts=st.lists(st.one_of(_SECRETISH, st.text(max_size=12)), max_size=12),
       raw=st.binary(max_size=40))
def test_secret_prescan_never_misses_what_the_redaction_patterns_find(parts, raw):
    """may_hold_secret is only a shortcut: False must mean the key, JWT and bearer patterns find nothing in the text
    the loaders store (the bytes decoded, bad ones as \\xHH)."""
    import re

    from forensics.secrets import BEARER_PATTERN, JWT_PATTERN, KEY_PATTERN, may_hold_secret

    data = "".join(parts).encode("utf-8", "surrogatepass") + raw + b"A" * 16
    text, _ = decode_nginx(data)
    found = any(re.search(p, text) for p in (KEY_PATTERN, JWT_PATTERN, BEARER_PATTERN.replace("\\s+", "\\s*")))
    if found:
        assert may_hold_secret(data)
    assert may_hold_secret(b"xx" + data + b"yy", 2, 2 + len(data)) == may_hold_secret(data)
    for window in (1, 2, 5, 7):                         # needles across window edges are found all the same
        assert may_hold_secret(b"x" + data, 1, window=window) == may_hold_secret(data)
