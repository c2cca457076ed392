"""nginx access logs: every format, the oddities real files hold, the real client address, secrets, accounting."""
from __future__ import annotations

import gzip
import zlib
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensics import case
from forensics.sources import lines as lines_module
from forensics.sources.interface import LoadContext, LoadOptions, LoadResult
from forensics.sources.lines import iter_line_batches
from forensics.sources.nginx import SOURCE, nginx
from forensics.sources.nginx.nginx_formats import COMBINED, parse_log_format
from conftest import examples  # tests/conftest.py: the tier's hypothesis budget

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "nginx"
KEY1 = "sk-" + "Q7rT2vX9kL4mN8pZ1aB3cD5e"
KEY2 = "sk-proj-" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0"


class Loaded:
    def __init__(self, con, fmt: str, result: LoadResult, file_id: int):
        self.con, self.fmt, self.result, self.file_id = con, fmt, result, file_id

    def rows(self, columns: str) -> dict[int, tuple]:
        """line_no -> the columns asked for."""
        got = self.con.execute(f"SELECT line_no, {columns} FROM http_requests WHERE file_id = ? ORDER BY line_no",
                               [self.file_id]).fetchall()
        return {r[0]: r[1:] if len(r) > 2 else r[1] for r in got}

    def quarantine(self) -> dict[int, str]:
        return dict(self.con.execute("SELECT record_no, reason FROM quarantine WHERE file_id = ? ORDER BY 1",
                                     [self.file_id]).fetchall())


def load(path: Path, fmt: str | None = None, options: LoadOptions | None = None, con=None) -> Loaded:
    """Detect and load one file inside a transaction as the driver does, then check the accounting."""
    con = con or case.connect(":memory:")
    data = path.read_bytes()
    sample = zlib.decompressobj(31).decompress(data, 65536) if data[:2] == b"\x1f\x8b" else data[:65536]
    fmt = fmt or SOURCE.detect(sample, path, options)
    assert fmt, f"{path.name} not detected"
    file_id = con.execute("SELECT coalesce(max(file_id), 0) + 1 FROM ingest_files").fetchone()[0]
    con.execute("INSERT INTO ingest_files (file_id, path, sha256, size_bytes, status, started_at, tool_version) "
                "VALUES (?, ?, ?, ?, 'loading', now(), 't')", [file_id, str(path), f"sha{file_id}", len(data)])
    con.execute("BEGIN")
    result = SOURCE.load(LoadContext(con, file_id, path, str(path), options or LoadOptions()), fmt)
    con.execute("COMMIT")
    assert_conserved(con, file_id, path, result)
    return Loaded(con, fmt, result, file_id)


def assert_conserved(con, file_id: int, path: Path, r: LoadResult) -> None:
    """records == loaded + quarantined, the tables hold exactly that, and records = the non-empty lines read."""
    assert r.records == r.loaded + r.quarantined and r.merged == 0
    assert con.execute("SELECT count(*) FROM quarantine WHERE file_id = ?", [file_id]).fetchone()[0] == r.quarantined
    assert con.execute("SELECT count(*) FROM http_requests WHERE file_id = ?", [file_id]).fetchone()[0] == r.loaded
    reader = iter_line_batches(path)
    lines = sum(t.num_rows - sum(1 for v in t.column("line").to_pylist() if v == "") for t in reader)
    assert r.records == lines + (1 if reader.error else 0)


def test_combined_with_the_oddities_of_real_files():
    got = load(ASSETS / "combined.log")
    assert got.fmt == "nginx.combined"
    assert (got.result.records, got.result.loaded, got.result.quarantined) == (23, 17, 6)
    assert any("1 blank lines skipped" in n for n in got.result.notes)
    req = got.rows("request_raw, method, path, protocol, status")
    assert req[4][0].startswith("\\x16\\x03\\x01") and req[4][1:4] == (None, None, None)        # TLS handshake
    assert req[5][0].startswith("\\x03\\x00\\x00/*") and req[5][1] is None                      # RDP probe
    assert req[6] == ("", None, None, None, 400) and req[7] == ("-", None, None, None, 400)
    assert req[8] == ("HELP", None, None, None, 400)
    assert req[9][1:3] == ("PATCHp", "/x")                          # shaped like HTTP: kept as the client sent it
    assert req[10][1:3] == ("CONNECT", "api.openai.com:443")
    assert len(req[17][2]) > 3000
    peers = got.rows("host, remote_addr, forwarded_for, client_ip")
    assert peers[2] == (None, "2a02:cf40::4e36", None, "2a02:cf40::4e36")
    assert peers[12] == ("api.example.com", "203.0.113.10", None, "203.0.113.10")              # vhost prefix
    assert peers[13] == (None, "85.181.35.98", "10.0.0.2, 10.0.0.1", "85.181.35.98")           # XFF list first
    assert peers[16] == (None, "unix:", None, "unix:")
    ua = got.rows("user_agent, remote_user, body_bytes")
    assert ua[11] == ('Mozilla/5.0 "quoted" agent', "alice", 812)                              # nginx \x22
    assert ua[14][0] == 'Agent "with" quotes'                                                   # Apache \"
    assert ua[15] == (None, None, None)                                                          # '-' bytes
    times = got.rows("time, time_raw")
    assert times[2] == (datetime(2025, 3, 30, 0, 59, 59), "30/Mar/2025:01:59:59 +0100")
    assert times[3] == (datetime(2025, 3, 30, 1, 0, 1), "30/Mar/2025:03:00:01 +0200")        # DST switch: 2 s later
    q = got.quarantine()
    assert set(q) == {18, 19, 21, 22, 23, 24}
    assert "error-log" in q[18] and "journald" in q[19] and q[21] == "blank line"
    assert q[22] == 'status "abc" is not a number' and "31/Feb/2025" in q[23]
    assert "cut short" in q[24]


def test_main_format_real_client_behind_forged_forwarded_for():
    got = load(ASSETS / "main.log")
    assert got.fmt == "nginx.main" and got.result.quarantined == 0
    assert got.rows("client_ip") == {
        1: "203.0.113.7",
        2: "198.51.100.77",                  # '127.0.0.1' was written by the client: never taken
        3: "198.51.100.78",                  # a made-up public first hop is not taken either
        4: "198.51.100.79",                  # our own hop 10.0.0.3 skipped
        5: "203.0.113.8",                    # no header: the peer
        6: "192.168.1.4",                    # every hop trusted: the left-most
        7: "2001:db8:85a3::8a2e:370:7334",
    }
    assert got.rows("forwarded_for")[5] is None
    own = load(ASSETS / "main.log", options=LoadOptions(trusted_proxies=("10.0.0.0/8", "198.51.100.0/24")))
    assert own.rows("client_ip")[2] == "127.0.0.1"                   # the operator trusts 198.51.100.0/24


def test_timings_variants_and_upstream_lists():
    got = load(ASSETS / "timings.log")
    assert got.fmt == "nginx.timings"
    r = got.rows("request_time, upstream_time_raw, upstream_time, upstream_addr, upstream_status, request_id, "
                 "forwarded_for, client_ip")
    assert r[1][:6] == (2.512, "2.510", 2.51, "127.0.0.1:4000", "200", "6f1c2b0d9e8a4c3b2a1f0e9d8c7b6a5f")
    assert r[2][:6] == (0.001, "-", None, None, None, None)
    assert r[3][1:5] == ("0.250, 0.500", pytest.approx(0.75), "10.0.0.7:4000, 10.0.0.8:4000", "502, 200")
    assert r[4][2] == pytest.approx(1.009) and r[4][4] == "200 : 200"
    assert r[5][6:] == ("203.0.113.7", "203.0.113.7")
    assert got.quarantine() == {6: 'request_time "abc" is not a number'}


def test_ingress_nginx():
    got = load(ASSETS / "ingress.log")
    assert got.fmt == "nginx.ingress" and got.result.loaded == 3
    r = got.rows("request_length, request_time, upstream_addr, upstream_time, upstream_status, request_id, time")
    assert r[1] == (842, 2.514, "172.17.0.6:4000", 2.512, "200", "1b7e3f6c0f5d4a2b9c8d7e6f5a4b3c2d",
                    datetime(2025, 3, 17, 1, 0, 4))
    assert r[2][2:5] == ("172.17.0.6:8080, 172.17.0.7:8080", pytest.approx(0.010), "502, 200")
    assert r[3][2:5] == (None, None, None)


def test_json_escape_json():
    got = load(ASSETS / "json.log")
    assert got.fmt == "nginx.json"
    r = got.rows("time, remote_user, client_ip, method, path, user_agent, referer, upstream_time, litellm_call_id")
    assert r[1] == (datetime(2025, 3, 17, 1, 0, 4), None, "203.0.113.7", "POST", "/v1/chat/completions",
                    "OpenAI/Python 1.51.0", None, 2.512, "c0ffee00-1111-2222-3333-444455556666")
    assert r[2][1:6] == (None, "198.51.100.77", "GET", "/v1/models?q=\u2713", 'Agent "x" \\ y')
    assert r[3][2:5] == ("10.0.0.5", None, None)
    q = got.quarantine()
    assert q[4] == 'status "2OO" is not a number' and "JSON" in q[5] and "error-log" in q[6]


def test_json_with_the_operators_own_field_names():
    got = load(ASSETS / "json_names.log")
    assert got.fmt == "nginx.json"
    r = got.rows("time, time_raw, host, client_ip, method, path, protocol, status, body_bytes, user_agent")
    assert r[1] == (datetime(2025, 3, 17, 1, 0, 4), "2025-03-17T02:00:04+01:00", "api.example.com", "203.0.113.7",
                    "GET", "/health", "HTTP/1.1", 200, 2, "kube-probe/1.29")
    assert r[2][0] == datetime(2025, 3, 17, 1, 0, 5) and r[2][3] == "2a02:cf40::4e36"


def test_json_epoch_msec_and_request_length(tmp_path):
    f = tmp_path / "msec.log"
    f.write_text('{"msec":"1742173204.123","remote_addr":"203.0.113.7","request":"GET / HTTP/1.1","status":"204",'
                 '"bytes_sent":"180","request_length":"512","upstream_status":"-"}\n')
    got = load(f)
    assert got.fmt == "nginx.json"
    assert got.rows("time, time_raw, body_bytes, request_length, upstream_status")[1] == (
        datetime(2025, 3, 17, 1, 0, 4, 123000), "1742173204.123", 180, 512, None)


def test_json_default_escaping_is_repaired_or_quarantined():
    got = load(ASSETS / "json_default.log")
    assert got.fmt == "nginx.json_default"
    r = got.rows("request_raw, path, user_agent")
    assert r[1] == ("GET /x?a=\\x22b\\x22 HTTP/1.1", '/x?a="b"', 'curl "q" \\xE2\\x9C\\x93')
    assert r[2][2] == "back\\slash"
    assert list(got.quarantine()) == [3]


def test_custom_format_from_options_with_a_logged_key_redacted():
    options = LoadOptions(nginx_format=(ASSETS / "custom.format").read_text())
    # without the format the file loads by inference (tests/sources/test_nginx_wild.py); given, it is always used
    assert SOURCE.detect((ASSETS / "custom.log").read_bytes(), ASSETS / "custom.log") == "nginx.inferred"
    got = load(ASSETS / "custom.log", options=options)
    assert got.fmt == "nginx.custom"
    r = got.rows("client_ip, request_time, litellm_call_id, path")
    assert r[1][:3] == ("203.0.113.7", 2.514, "c0ffee00-1111-2222-3333-444455556666")
    assert r[2][3].startswith("/v1/models?api_key=[redacted key sk-...1Qq0 sha256:")
    assert list(got.quarantine()) == [3]
    for table in ("http_requests", "quarantine"):
        cols = [c for (c,) in got.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND data_type = 'VARCHAR'",
            [table]).fetchall()]
        text = " ".join(str(v) for row in got.con.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
                        for v in row)
        assert KEY1 not in text and KEY2 not in text and "[redacted key" in text


def test_custom_format_as_pasted_from_nginx_conf():
    pasted = (ASSETS / "custom.format").read_text()
    bare = parse_log_format(pasted)
    assert bare.startswith("$remote_addr - $remote_user [$time_local]") and bare.endswith('"$http_authorization"')
    assert parse_log_format(bare) == bare
    assert parse_log_format(f"log_format combined '{COMBINED}';") == COMBINED


def test_custom_json_template(tmp_path):
    template = ('log_format j escape=json \'{"ts":"$time_iso8601","ip":"$remote_addr","rq":"$request",'
                '"st":"$status","b":"$body_bytes_sent","call":"$upstream_http_x_litellm_call_id"}\';')
    f = tmp_path / "j.log"
    f.write_text('{"ts":"2025-03-17T02:00:04+01:00","ip":"203.0.113.7","rq":"GET /x HTTP/1.1","st":"200","b":"5",'
                 '"call":"abc"}\n')
    got = load(f, options=LoadOptions(nginx_format=template))
    assert got.fmt == "nginx.custom"
    assert got.rows("time, client_ip, path, status, body_bytes, litellm_call_id")[1] == (
        datetime(2025, 3, 17, 1, 0, 4), "203.0.113.7", "/x", 200, 5, "abc")


def test_custom_format_is_required_for_nginx_custom():
    with pytest.raises(ValueError, match="log_format"):
        load(ASSETS / "combined.log", fmt="nginx.custom")


def test_rotated_gzip_and_a_gzip_cut_short(tmp_path):
    full = load(ASSETS / "main.log")
    gz = tmp_path / "access.log.2.gz"
    gz.write_bytes(gzip.compress((ASSETS / "main.log").read_bytes(), mtime=0))
    got = load(gz)
    assert got.fmt == "nginx.main" and got.rows("client_ip") == full.rows("client_ip")

    body = "".join(line + "\n" for _ in range(300) for line in (ASSETS / "main.log").read_text().splitlines())
    packed = gzip.compress(body.encode(), mtime=0)
    cut = tmp_path / "access.log.3.gz"
    cut.write_bytes(packed[: len(packed) * 2 // 3])
    got = load(cut)
    q = got.quarantine()
    assert got.result.loaded > 0 and any("gzip" in reason for reason in q.values())
    assert any("gzip" in n for n in got.result.notes)


def test_crlf_bom_and_invalid_utf8(tmp_path):
    lf = load(ASSETS / "main.log")
    crlf = tmp_path / "crlf.log"
    crlf.write_bytes(b"\xef\xbb\xbf" + (ASSETS / "main.log").read_bytes().replace(b"\n", b"\r\n"))
    got = load(crlf)
    cols = "time, remote_addr, forwarded_for, client_ip, request_raw, user_agent"
    assert got.fmt == "nginx.main" and got.rows(cols) == lf.rows(cols)

    bad = tmp_path / "latin1.log"
    bad.write_bytes(b'203.0.113.7 - - [17/Mar/2025:02:00:04 +0100] "GET / HTTP/1.1" 200 5 "-" "caf\xe9 agent"\n')
    got = load(bad)
    assert got.rows("user_agent")[1] == "caf\\xE9 agent"
    assert any("not UTF-8" in n for n in got.result.notes)


def test_detection_claims_only_access_logs(tmp_path):
    assert SOURCE.detect(b"hello\nworld\n", Path("x.log")) is None
    assert SOURCE.detect(b"request_id,startTime,spend\nabc,2025-01-01,0.1\n", Path("x.csv")) is None
    assert SOURCE.detect(b'{"level":"INFO","message":"started","timestamp":"2025-01-01T00:00:00Z"}\n',
                         Path("x.json")) is None
    line = (ASSETS / "combined.log").read_text().splitlines()[0]
    assert SOURCE.detect(f"{line}\nnoise\nnoise\nnoise\n".encode(), Path("a")) is None       # a minority
    assert SOURCE.detect(f"{line}\n{line}\nnoise\n".encode(), Path("a")) == "nginx.combined"
    # a sample cut inside its last line still detects
    assert SOURCE.detect(((line + "\n") * 3 + line[:20]).encode(), Path("a")) == "nginx.combined"


def _spy_on_batches(monkeypatch, batch_bytes: int, method: str, record) -> list:
    """Small batches (the reader cuts them at block ends), and what `record(self, batch)` says of each call of
    nginx._Load.`method`, in order."""
    monkeypatch.setattr(nginx, "BATCH_BYTES", batch_bytes)
    monkeypatch.setattr(lines_module, "_BLOCK", 4096)
    seen = []
    real = getattr(nginx._Load, method)

    def spy(self, batch):
        seen.append(record(self, batch))
        return real(self, batch)
    monkeypatch.setattr(nginx._Load, method, spy)
    return seen


@pytest.mark.slow
def test_many_batches_with_variants_mixed_and_odd_lines(tmp_path, monkeypatch):
    lines = (ASSETS / "timings.log").read_text().splitlines()
    body = [lines[i % len(lines)] if i % 97 else "garbage line" for i in range(1, 1201)]
    f = tmp_path / "big.log"
    f.write_text("\n".join(body) + "\n")
    whole = load(f)
    seen = _spy_on_batches(monkeypatch, 16384, "_batch", lambda self, batch: batch.num_rows)
    batched = load(f)
    assert len(seen) > 5 and sum(seen) == 1200
    assert batched.result == whole.result
    assert batched.rows("request_time, upstream_time, request_id") == whole.rows("request_time, upstream_time, "
                                                                                   "request_id")
    assert batched.quarantine() == whole.quarantine()
    assert sum(1 for r in whole.quarantine().values() if "does not match" in r) == 1200 // 97


def test_the_walk_join_only_once_a_batch_needs_it(tmp_path, monkeypatch):
    """Batches of plain IPv4 peers are inserted without the join on walked pairs; a later batch's IPv6 peer and
    address list still get the client the walk gives. Odd methods take the regex (GET and the like skip it), and a
    byte count that is no number is quarantined with its reason, batch by batch as for the whole file."""
    line = '{} - - [17/Mar/2025:01:00:{:02d} +0000] "{} /v1/models HTTP/1.1" 200 {} "-" "curl/8.5.0"'
    body = [line.format(f"203.0.113.{i % 200 + 1}", i % 60, "GET", i) for i in range(300)]
    body += [line.format("2A02:CF40::4E36", 1, "get", 5), line.format("10.0.0.2, 10.0.0.1, 85.181.35.98", 2,
             "PROPFIND", 6), line.format("203.0.113.1", 3, "POST", "x12"), line.format("::ffff:203.0.113.9", 4,
             "9GET", 7)]
    f = tmp_path / "access.log"
    f.write_text("\n".join(body) + "\n")
    whole = load(f)
    walked = _spy_on_batches(monkeypatch, 8192, "_insert_converted", lambda self, converted: self.walked)
    batched = load(f)
    assert len(walked) > 3 and walked[0] == 0 and walked[-1] >= 2          # no join at first, then the walked pairs
    cols = "method, remote_addr, forwarded_for, client_ip, body_bytes"
    assert batched.rows(cols) == whole.rows(cols) and batched.quarantine() == whole.quarantine()
    rows = whole.rows(cols)
    assert rows[1] == ("GET", "203.0.113.1", None, "203.0.113.1", 0)
    assert rows[301] == ("get", "2A02:CF40::4E36", None, "2a02:cf40::4e36", 5)
    assert rows[302] == ("PROPFIND", "85.181.35.98", "10.0.0.2, 10.0.0.1", "85.181.35.98", 6)
    assert rows[304] == (None, "::ffff:203.0.113.9", None, "::ffff:cb00:7109", 7)     # "9GET" is no method
    assert whole.quarantine() == {303: 'body_bytes_sent "x12" is not a number'}


def test_lines_with_forwarded_for_are_parsed_once(tmp_path, monkeypatch):
    """main format behind a balancer (every line needs the walk): one statement reads a batch's lines, the insert;
    no second parse gathers X-Forwarded-For pairs. The walk runs after each batch on the stored pairs, and a later
    batch joins the pairs walked before: the clients are those of one batch for the whole file."""
    line = '10.0.0.{} - - [17/Mar/2025:01:00:{:02d} +0000] "GET /v1/models HTTP/1.1" 200 5 "-" "curl/8.5.0" "{}"'
    xffs = ["198.51.100.{}, 10.0.0.1", "2001:db8::{:x}, 10.0.0.1", "-"]
    body = [line.format(i % 4 + 2, i % 60, xffs[i % 3].format(i % 50 + 1)) for i in range(400)]
    f = tmp_path / "main.log"
    f.write_text("\n".join(body) + "\n")
    whole = load(f, "nginx.main")
    reads, walks = [], []
    real_run, real_walk = nginx._Load._run, nginx.walk_pairs
    monkeypatch.setattr(nginx._Load, "_run",
                        lambda self, sql: reads.append("_nginx_batch" in sql) or real_run(self, sql))
    monkeypatch.setattr(nginx, "walk_pairs", lambda *a, **k: walks.append(len(reads)) or real_walk(*a, **k))
    seen = _spy_on_batches(monkeypatch, 8192, "_batch", lambda self, batch: len(reads))
    batched = load(f, "nginx.main")
    assert len(seen) > 3
    assert [sum(reads[a:b]) for a, b in zip(seen, seen[1:] + [len(reads)])] == [1] * len(seen)
    # walked after the first batch's insert; later batches join the pairs walked before, and walk only new ones
    assert seen[0] < walks[0] <= seen[1] and len(walks) < len(seen)
    cols = "remote_addr, forwarded_for, client_ip"
    assert batched.rows(cols) == whole.rows(cols)
    rows = whole.rows(cols)
    assert rows[1] == ("10.0.0.2", "198.51.100.1, 10.0.0.1", "198.51.100.1")
    assert rows[2] == ("10.0.0.3", "2001:db8::2, 10.0.0.1", "2001:db8::2")
    assert rows[3] == ("10.0.0.4", None, "10.0.0.4")


# (X-Forwarded-For as nginx logs it, peer, the client netaddr's walk gives with the default trusted networks)
TRICKY_XFF = [
    ("203.0.113.9, 198.51.100.7, 10.0.0.1", "10.0.0.2", "198.51.100.7"),     # a spoofed left-most entry
    ("127.0.0.1, 198.51.100.7", "10.0.0.2", "198.51.100.7"),                 # a forged "trusted" one too
    ("10.0.0.5, 192.168.1.1", "10.0.0.2", "10.0.0.5"),                       # every hop trusted: the left-most
    ("198.51.100.7", "203.0.113.50", "203.0.113.50"),                        # an untrusted peer is the client
    ("2001:DB8:0:0::1, 10.0.0.1", "10.0.0.2", "2001:db8::1"),                # IPv6, written as Python writes it
    ("198.51.100.7, fd00::7", "::1", "198.51.100.7"),                        # trusted IPv6 hops skipped
    ("[2001:db8::5]:443", "10.0.0.2", "2001:db8::5"),                        # with a port
    ("198.51.100.7:5555, 10.0.0.1", "10.0.0.2", "198.51.100.7"),
    ("unknown, 10.0.0.1", "10.0.0.2", "unknown"),                            # garbage: kept, never guessed past
    ("198.51.100.7, garbage", "10.0.0.2", "garbage"),
    ("01.2.3.4", "10.0.0.2", "01.2.3.4"),                                    # leading zeros: no address
    ("x" * 150, "10.0.0.2", "x" * 100),
    (", , 203.0.113.9 ,,", "10.0.0.2", "203.0.113.9"),                       # empty hops
    ("-, 198.51.100.7, -", "10.0.0.2", "198.51.100.7"),
    ("\\x22198.51.100.7\\x22, 10.0.0.1", "10.0.0.2", "198.51.100.7"),   # a quoted list (nginx writes \x22)
    ("-", "10.0.0.2", "10.0.0.2"),                                           # no header: the peer
    ("", "10.0.0.2", "10.0.0.2"),
    ("-", "2A02:CF40::1", "2a02:cf40::1"),                                   # an IPv6 peer, no header
]


@pytest.mark.parametrize("batch_bytes", [1 << 20, 8192])
def test_tricky_forwarded_for_values_get_the_walks_client(tmp_path, monkeypatch, batch_bytes):
    """main format behind balancers, each odd X-Forwarded-For value in several batches between plain lines: the
    client is netaddr's rule on the stored (X-Forwarded-For, peer) for every row (what the join on walked pairs
    gave before), with the default trusted networks and the operator's own."""
    line = '{} - - [17/Mar/2025:01:00:{:02d} +0000] "GET /v1/models HTTP/1.1" 200 5 "-" "curl/8.5.0" "{}"'
    body, expected = [], {}
    for i in range(240):
        xff, peer, client = TRICKY_XFF[i % len(TRICKY_XFF)] if i % 3 == 0 else (f"198.51.100.{i}, 10.0.0.1",
                                                                                 "10.0.0.3", f"198.51.100.{i}")
        body.append(line.format(peer, i % 60, xff))
        expected[i + 1] = client
    f = tmp_path / "main.log"
    f.write_text("\n".join(body) + "\n")
    seen = _spy_on_batches(monkeypatch, batch_bytes, "_batch", lambda self, batch: batch.num_rows)
    got = load(f, "nginx.main")
    assert got.result.loaded == 240 and (len(seen) == 1 if batch_bytes > f.stat().st_size else len(seen) > 2)
    rows = got.rows("forwarded_for, remote_addr, client_ip")
    assert {n: r[2] for n, r in rows.items()} == expected
    rule = nginx.TrustedProxies(())
    assert all(client == rule.client(xff, peer) for xff, peer, client in rows.values())
    own = ("198.51.100.0/24", "10.0.0.0/8", "::1/128")
    mine = load(f, "nginx.main", LoadOptions(trusted_proxies=own))
    rule = nginx.TrustedProxies(own)
    clients = mine.rows("forwarded_for, remote_addr, client_ip")
    assert all(client == rule.client(xff, peer) for xff, peer, client in clients.values())
    assert clients[1][2] == "203.0.113.9" and clients[2][2] == "198.51.100.1"   # the balancers' own range skipped


def _nginx_escape(text: str) -> str:
    """What nginx writes for a value: '"', '\\' and bytes outside printable ASCII as \\xHH."""
    out = []
    for b in text.encode():
        out.append(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02X}")
    return "".join(out)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
                          st.sampled_from(["203.0.113.7", "2a02:cf40::4e36", "10.0.0.1"]),
                          st.integers(100, 599), st.integers(0, 10**9)), min_size=1, max_size=20))
def test_printable_values_survive_nginx_escaping(tmp_path, records):
    f = tmp_path / "prop.log"
    f.write_text("".join(
        f'{ip} - - [17/Mar/2025:02:00:04 +0100] "GET /p HTTP/1.1" {status} {size} "-" "{_nginx_escape(ua)}"\n'
        for ua, ip, status, size in records))
    got = load(f, fmt="nginx.combined")
    assert got.result.loaded == len(records)
    rows = got.rows("user_agent, client_ip, status, body_bytes")
    for i, (ua, ip, status, size) in enumerate(records, start=1):
        assert rows[i] == (ua if ua not in ("", "-") else None, ip, status, size)


def test_json_keys_added_later_in_the_file_still_load(tmp_path):
    """log_format edited and nginx reloaded: after 3,000 lines the objects gain http_x_forwarded_for and
    request_time. The mapping inferred from the first lines must not drop them."""
    f = tmp_path / "reloaded.log"
    line = ('{{"time_iso8601":"2025-03-17T01:{m:02d}:{s:02d}+00:00","remote_addr":"10.0.0.2",'
            '"request":"POST /v1/chat/completions HTTP/1.1","status":"200","body_bytes_sent":"512"{extra}}}\n')
    with f.open("w") as fh:
        for i in range(6000):
            extra = ',"http_x_forwarded_for":"203.0.113.9","request_time":"1.250"' if i >= 3000 else ""
            fh.write(line.format(m=i // 60 % 60, s=i % 60, extra=extra))
    got = load(f)
    assert got.fmt == "nginx.json" and got.result.loaded == 6000
    rows = got.rows("forwarded_for, client_ip, request_time")
    assert rows[1] == (None, "10.0.0.2", None)
    assert rows[3001] == ("203.0.113.9", "203.0.113.9", pytest.approx(1.25))
    assert sum(1 for r in rows.values() if r[0] == "203.0.113.9") == 3000
