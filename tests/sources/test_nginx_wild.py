"""nginx access logs as found in the wild: vhost and address-list heads, CLF lines mixed in, custom trailing fields
found by inference (and a file inference must refuse), --nginx-format always used, --nginx-conf driving detection,
and the message for a file no format fits.

Fixture shapes: vhost.log follows filebeat's nginx module test logs (module/nginx/access/test/test-with-host.log and
test.log: `example.com:80 "a, b, c" 10.2.1.185 - - [...]`, `2a03:..., 10.225.192.17 10.2.2.121 - - [...]`, `unix:`
peers, an IP as the vhost) with our own values; timed.log is the `timed` format of issue #14 (combined +
`$request_time $upstream_response_time "$http_x_forwarded_for" $upstream_http_x_litellm_call_id`); reordered.log
puts the usual trailing fields (ingress-nginx's upstream lists, nginx.md) in an unusual order after a vhost;
two_formats.log is two servers' logs concatenated (the same trailing fields, in two orders); conf/ and nginx-T.txt
are Debian's /etc/nginx layout and `nginx -T` output (see test_nginx_conf.py).
"""
from __future__ import annotations

import itertools
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from forensics import case
from forensics.ingest import ingest_paths
from forensics.sources.interface import LoadOptions
from forensics.sources.nginx import SOURCE
from forensics.sources.nginx.nginx_formats import CLF, COMBINED
from forensics.sources.nginx.nginx_infer import infer

from test_nginx import load

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "nginx"
TIMED = (COMBINED + ' $request_time $upstream_response_time "$http_x_forwarded_for" '
         "$upstream_http_x_litellm_call_id")


def test_vhost_and_address_list_heads_and_clf_lines():
    got = load(ASSETS / "vhost.log")
    assert got.fmt == "nginx.combined" and got.result.quarantined == 0 and got.result.loaded == 12
    rows = got.rows("host, remote_addr, forwarded_for, client_ip, status")
    assert rows[1] == ("llm.example.com", "203.0.113.7", None, "203.0.113.7", 200)
    assert rows[2] == ("llm.example.com:443", "198.51.100.23", None, "198.51.100.23", 200)
    # a vhost, then $remote_addr written as a list: the right-most hop that is not a trusted proxy
    assert rows[3] == ("llm.example.com", "81.2.69.143", "10.0.0.2, 10.0.0.1", "81.2.69.143", 200)
    assert rows[4] == (None, "81.2.69.160", "10.0.0.2, 10.0.0.1", "81.2.69.160", 401)
    assert rows[5] == (None, "81.2.69.161", "10.0.0.5, 10.0.0.1", "81.2.69.161", 401)      # quoted list
    # a quoted X-Forwarded-For before the balancer's address: the client is its right-most untrusted hop
    assert rows[6] == ("llm.example.com:443", "10.2.1.185", "203.0.113.50, 172.16.0.4", "203.0.113.50", 200)
    assert rows[7] == (None, "10.2.2.121", "2001:db8::7, 10.225.192.17", "2001:db8::7", 200)
    assert rows[8] == ("192.0.2.44", "10.0.0.3", "10.0.0.9, 198.51.100.77", "198.51.100.77", 200)
    assert rows[9][:2] == ("llm.example.com:80", "unix:") and rows[10][:2] == ("192.0.2.44:80", "127.0.0.1")
    # Common Log Format lines (no referer, no user agent), with and without a vhost
    assert rows[11] == ("static.example.org", "203.0.113.9", None, "203.0.113.9", 404)
    assert got.rows("remote_user, user_agent, body_bytes")[12] == ("alice", None, 5120)


def test_trusted_proxies_move_the_client_along_an_address_list():
    got = load(ASSETS / "vhost.log", options=LoadOptions(trusted_proxies=("10.0.0.0/8", "81.2.69.0/24")))
    assert got.rows("client_ip")[3] == "10.0.0.2"     # every hop trusted: the left-most one (netaddr's rule)


def test_the_timed_variant_with_a_call_id_loads_by_inference():
    got = load(ASSETS / "timed.log")
    assert got.fmt == "nginx.inferred" and got.result.quarantined == 0 and got.result.loaded == 6
    assert f"log_format inferred from the lines: '{TIMED}'" in got.result.notes
    rows = got.rows("request_time, upstream_time, forwarded_for, client_ip, litellm_call_id")
    assert rows[1] == (1.204, 1.201, "203.0.113.7", "203.0.113.7", "5f0c6f2e-3b8d-4c1e-9a77-0d4f1e2b3c4d")
    assert rows[3] == (0.002, None, "198.51.100.23", "198.51.100.23", None)
    assert rows[4][0] == 30.001 and rows[4][1] == pytest.approx(30.001) and rows[4][2:] == (None, "10.0.0.4", None)


def test_trailing_fields_in_an_unusual_order_load_without_flags():
    got = load(ASSETS / "reordered.log")
    assert got.fmt == "nginx.inferred" and got.result.quarantined == 0
    rows = got.rows("host, client_ip, litellm_call_id, upstream_time, upstream_addr, upstream_status, request_time")
    assert rows[1] == ("llm.example.com", "203.0.113.7", "9c1e7a52-0d3b-4a8f-b6e1-2f4c5d6e7f80", 0.905,
                       "127.0.0.1:4000", "200", 0.907)
    assert rows[3][3] == pytest.approx(0.032) and rows[3][4:] == ("127.0.0.1:4000, 127.0.0.1:4001", "502, 200", 0.033)
    assert rows[4] == ("llm.example.com", "10.0.0.4", None, None, None, None, 0.0)


def test_every_ordering_of_the_usual_trailing_fields_is_inferred():
    values = {"$request_time": ["1.204", "0.002", "30.001", "0.310"],
              "$upstream_response_time": ["1.201", "-", "15.000, 15.001", "0.309"],
              '"$http_x_forwarded_for"': ['"203.0.113.7"', '"198.51.100.23, 10.0.0.9"', '"-"', '"192.0.2.10"'],
              "$upstream_http_x_litellm_call_id": ["5f0c6f2e-3b8d-4c1e-9a77-0d4f1e2b3c4d", "-", "-",
                                                   "0b7e3f6a-1c2d-4e5f-a6b7-c8d9e0f1a2b3"]}
    orders = list(itertools.permutations(values))
    for order in orders:
        lines = [(i + 1, f'10.0.0.4 - - [17/Mar/2025:02:00:0{i} +0000] "POST /v1/chat/completions HTTP/1.1" 200 '
                         f'812 "-" "OpenAI/Python 1.51.0" ' + " ".join(values[v][i] for v in order))
                 for i in range(4)]
        assert infer(lines).text == COMBINED + " " + " ".join(order), order
    assert len(orders) == 24


def test_inference_refuses_a_file_whose_fields_change_type(tmp_path):
    # the same two trailing fields, in one order on some lines and the other order on others: any single format
    # would load forwarded-for addresses as request times, so the file must stay unrecognised
    path = ASSETS / "two_formats.log"
    lines = list(enumerate(path.read_text().splitlines(), start=1))
    refused = infer(lines)
    assert refused.text is None
    assert refused.reason == ("field 3 after $body_bytes_sent holds a number on line 1 and a quoted address list "
                              "on line 2: not one format")
    assert SOURCE.detect(path.read_bytes(), path) is None
    # lines that end in free text of varying length are no format either
    ragged = [(n, ln + " took" + " very" * n + " long") for n, ln in lines]
    assert infer(ragged).reason == "the lines end in 7 to 10 fields after $body_bytes_sent, not one format"
    # and the file, ingested, stays whole in quarantine with a message that says what to do
    con = case.connect(":memory:")
    [r] = ingest_paths(con, [path])
    assert (r.format, r.records, r.quarantined) == ("unrecognised", 4, 4)
    assert r.message == (
        "format not recognised: every line kept in quarantine; closest nginx format nginx.timings: line 1: "
        "$upstream_response_time expected, found '\"203.0.113.7\"' (no format inferred: field 3 after "
        "$body_bytes_sent holds a number on line 1 and a quoted address list on line 2: not one format); pass its "
        "log_format with --nginx-format '...' or the server's nginx.conf with --nginx-conf FILE")


# upstream_time.log: nginx's own `upstream_time` log_format example (docs.nginx.com and the nginx blog on
# application performance monitoring: `"$http_user_agent"' 'rt=$request_time uct="$upstream_connect_time"
# uht="$upstream_header_time" urt="$upstream_response_time"`, the two strings joined with no space); trace_pairs.log
# a test config's `"$http_x_forwarded_for" $http_x_request_id $msec ua="$upstream_addr" us="$upstream_status" ...`;
# quoted_times.log an ELK guide's `"$request_time" "$upstream_response_time" "$http_x_forwarded_for"
# "$http_client_ip" "$http_x_real_ip"`. Our own values in each.
UPSTREAM_TIME = (COMBINED + 'rt=$request_time uct="$inferred_text" uht="$inferred_text" '
                 'urt="$upstream_response_time"')


def test_name_value_pairs_load_by_inference_named_by_their_keys():
    got = load(ASSETS / "upstream_time.log")
    assert got.fmt == "nginx.inferred" and (got.result.loaded, got.result.quarantined) == (4, 0)
    assert f"log_format inferred from the lines: '{UPSTREAM_TIME}'" in got.result.notes
    rows = got.rows("time, client_ip, user_agent, request_time, upstream_time, upstream_time_raw")
    assert rows[1] == (datetime(2026, 12, 3, 3, 11, 2), "203.0.113.7", "OpenAI/Python 1.51.0", 12.301, 12.3, "12.300")
    assert rows[2][3:] == (0.0, None, "-")
    assert rows[3][1] == "2001:db8::9" and rows[3][3] == 3.002 and rows[3][4] == pytest.approx(3.001)
    assert rows[4][2] == "Mozilla/5.0 (l9scan/2.0.; +https://leakix.net)"

    trace = load(ASSETS / "trace_pairs.log")
    assert trace.fmt == "nginx.inferred" and (trace.result.loaded, trace.result.quarantined) == (3, 0)
    rows = trace.rows("client_ip, request_id, request_time, upstream_addr, upstream_status, upstream_time")
    # the trailing $msec is the line's time again, not a request that took 56 years: no column takes it
    assert rows[1] == ("198.51.100.7", "7f9c3f0e2b1a4d5e8c6b9a0f1e2d3c4b", None, "127.0.0.1:4000", "200", 12.3)
    assert rows[2][2:] == (None, None, None, None)
    assert rows[3][3:5] == ("127.0.0.1:4000, 127.0.0.1:4001", "504, 504") and rows[3][5] == pytest.approx(120.003)


def test_quoted_times_are_request_and_upstream_times():
    got = load(ASSETS / "quoted_times.log")
    assert got.fmt == "nginx.inferred" and (got.result.loaded, got.result.quarantined) == (3, 0)
    rows = got.rows("client_ip, forwarded_for, request_time, upstream_time")
    assert rows[1] == ("198.51.100.7", "198.51.100.7, 10.0.0.9", 12.301, 12.3)
    assert rows[2] == ("10.0.0.2", None, 0.0, None)
    assert rows[3][:3] == ("203.0.113.50", "203.0.113.50", 3.002) and rows[3][3] == pytest.approx(3.001)


def test_inference_refuses_pairs_whose_keys_change_and_names_no_column_from_an_unknown_key():
    lines = list(enumerate((ASSETS / "upstream_time.log").read_text().splitlines(), start=1))
    # the same position holds rt= on some lines and urt= on others: two formats, none inferred
    swapped = [(n, ln.replace("rt=", "xx=", 1).replace("urt=", "rt=").replace("xx=", "urt=", 1) if n % 2 else ln)
               for n, ln in lines]
    refused = infer(swapped)
    assert refused.text is None and refused.reason == (
        'field 3 after $body_bytes_sent holds urt= with a number on line 1 and rt= with a number on line 2: '
        'not one format')
    # a well-known key whose values do not fit its variable (rt= holding words) is parsed but names no column
    words = [(n, re.sub(r'"rt=[0-9.]+ ', '"rt=slow ', ln)) for n, ln in lines]
    assert infer(words).text == COMBINED + 'rt=$inferred_token uct="$inferred_text" uht="$inferred_text" ' \
                                           'urt="$upstream_response_time"'


def test_a_given_nginx_format_is_always_used_or_the_file_fails(tmp_path):
    path = ASSETS / "timed.log"
    # it fits: used, although the file would also load by inference
    assert SOURCE.detect(path.read_bytes(), path, LoadOptions(nginx_format=TIMED)) == "nginx.custom"
    # it does not fit a file another format takes: never ignored, the file fails with the first field that failed
    wrong = COMBINED + ' "$http_x_forwarded_for" $request_time'
    with pytest.raises(ValueError, match=r'^--nginx-format does not fit this nginx access log \(nginx\.inferred '
                                         r'does\): line 1: \'" "\' before \$http_x_forwarded_for expected, found '
                                         r'\'" 1\.204 1\.201 '):
        SOURCE.detect(path.read_bytes(), path, LoadOptions(nginx_format=wrong))
    con = case.connect(":memory:")
    [r] = ingest_paths(con, [ASSETS / "combined.log"], LoadOptions(nginx_format=wrong))
    assert r.status == "failed" and r.message.startswith("--nginx-format does not fit this nginx access log "
                                                         "(nginx.combined does): line 1:")
    # a file that is no access log at all is left to the other sources
    assert SOURCE.detect(b"time,model,cost\n2025-03-17,gpt-4o,0.01\n", Path("x.csv"),
                         LoadOptions(nginx_format=wrong)) is None


def test_nginx_conf_log_formats_and_access_logs_drive_detection(tmp_path):
    # conf/ declares main, timed and json_analytics; access_log lines say which file is written in which
    logs = tmp_path / "var-log-nginx"
    logs.mkdir()
    shutil.copy(ASSETS / "timed.log", logs / "llm.access.log.1")
    shutil.copy(ASSETS / "main.log", logs / "access.log")
    shutil.copy(ASSETS / "json_analytics.log", logs / "llm.json.log")
    for conf in (ASSETS / "conf" / "nginx.conf", ASSETS / "nginx-T.txt"):
        options = LoadOptions(nginx_conf=(str(conf),))
        con = case.connect(":memory:")
        reports = {Path(r.path).name: r for r in ingest_paths(con, [logs], options)}
        assert {n: (r.format, r.quarantined) for n, r in reports.items()} == {
            "llm.access.log.1": ("nginx.conf.timed", 0), "access.log": ("nginx.conf.main", 0),
            "llm.json.log": ("nginx.conf.json_analytics", 0)}, conf
        assert reports["llm.access.log.1"].message.startswith("log_format timed of ")
        assert "nginx.conf line 30" in reports["llm.access.log.1"].message
        call_ids = con.execute("SELECT count(litellm_call_id) FROM http_requests WHERE format = 'nginx.conf.timed'")
        assert call_ids.fetchone()[0] == 3


def test_the_configurations_log_formats_are_tried_for_files_no_access_log_names(tmp_path):
    f = tmp_path / "gateway-2025-03-17.log"
    shutil.copy(ASSETS / "timed.log", f)
    options = LoadOptions(nginx_conf=(str(ASSETS / "nginx-T.txt"),))
    assert SOURCE.detect(f.read_bytes(), f, options) == "nginx.conf.timed"


def test_nginx_conf_on_the_command_line(tmp_path):
    from conftest import run_cli

    log = tmp_path / "logs" / "llm.access.log"
    log.parent.mkdir()
    shutil.copy(ASSETS / "timed.log", log)
    r = run_cli("ingest", log.parent, "--case", tmp_path / "c.duckdb", "--json",
                "--nginx-conf", ASSETS / "conf" / "nginx.conf")
    assert r.returncode == 0, r.stderr
    assert '"format": "nginx.conf.timed"' in r.stdout and '"quarantined": 0' in r.stdout
    missing = run_cli("ingest", log, "--case", tmp_path / "c.duckdb", "--nginx-conf", tmp_path / "none.conf")
    assert (missing.returncode, missing.stderr.strip()) == (2, f"forensics: --nginx-conf {tmp_path / 'none.conf'}: "
                                                               "no such file")
    bad = tmp_path / "nginx.conf"
    bad.write_text("http {\n    log_format x '$remote_addr';\n")
    broken = run_cli("ingest", log, "--case", tmp_path / "c.duckdb", "--nginx-conf", bad)
    assert broken.returncode == 1 and broken.stderr.count("\n") == 1 and "Traceback" not in broken.stderr
    assert f"{bad} line 1: unexpected end of file: the \"{{\" opened here is never closed" in broken.stderr


def test_no_nginx_hint_for_files_that_are_nothing_like_an_access_log(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("meeting notes\nnothing to see here\n")
    assert SOURCE.explain(f.read_bytes(), f) is None


# iso8601.log, msec.log and maptime.log: the combined core with its time swapped for the other time variables nginx
# has (nginx.md: `$time_iso8601` 2025-03-17T02:00:04+01:00, `$msec` 1742173204.123; values here of 2025-11-16), and
# the time a `map $time_iso8601 $time {"~(...)T(...)" "$1 $2";}` of a public nginx.conf writes (no zone offset)
ISO_TIMED = COMBINED.replace("[$time_local]", "[$time_iso8601]") + " $request_time $upstream_response_time"
MSEC_CALL_ID = (COMBINED.replace("[$time_local]", "$msec") + ' "$http_x_forwarded_for" '
                "$upstream_http_x_litellm_call_id")


def test_a_format_with_time_iso8601_loads_by_inference_with_combined_lines_mixed_in():
    got = load(ASSETS / "iso8601.log")
    assert got.fmt == "nginx.inferred" and (got.result.records, got.result.loaded, got.result.quarantined) == (6, 6, 0)
    assert f"log_format inferred from the lines: '{ISO_TIMED}'" in got.result.notes
    rows = got.rows("time, time_raw, client_ip, request_time, upstream_time")
    assert rows[1] == (datetime(2025, 11, 16, 2, 0, 4), "2025-11-16T02:00:04+00:00", "10.0.0.4", 1.204, 1.201)
    assert rows[2][:2] == (datetime(2025, 11, 16, 2, 0, 5), "2025-11-16T03:00:05+01:00")     # to UTC
    assert rows[3][2:4] == ("2a02:cf40::4e36", 0.002) and rows[4][4] == pytest.approx(30.001)
    # a combined line of another virtual host: its $time_local read as such
    assert rows[5] == (datetime(2025, 11, 16, 2, 0, 8), "16/Nov/2025:02:00:08 +0000", "192.0.2.44", None, None)


def test_a_format_with_msec_loads_by_inference():
    got = load(ASSETS / "msec.log")
    assert got.fmt == "nginx.inferred" and (got.result.records, got.result.loaded, got.result.quarantined) == (4, 4, 0)
    assert f"log_format inferred from the lines: '{MSEC_CALL_ID}'" in got.result.notes
    rows = got.rows("time, time_raw, client_ip, litellm_call_id")
    assert rows[1] == (datetime(2025, 11, 16, 2, 0, 4, 123000), "1763258404.123", "203.0.113.7",
                       "5f0c6f2e-3b8d-4c1e-9a77-0d4f1e2b3c4d")
    assert rows[2][0] == datetime(2025, 11, 16, 2, 0, 5, 7000) and rows[4][2:] == ("10.0.0.5", None)
    # the bracketed forms too, the fields after the user agent or not
    for time, value in (("[$msec]", "[1763258404.123]"), ("$time_iso8601", "2025-11-16T02:00:04+00:00")):
        lines = [(n, f'10.0.0.4 - - {value} "GET /v1/models HTTP/1.1" 200 64 "-" "curl/8.5.0"') for n in (1, 2)]
        assert infer(lines).text == COMBINED.replace("[$time_local]", time)
        assert infer([(n, ln.rsplit(' "-"', 1)[0]) for n, ln in lines]).text == CLF.replace("[$time_local]", time)


def test_inference_refuses_a_time_with_no_zone():
    # "2025-11-16 02:00:04" could be any zone's: no format is inferred (no UTC could be told), the file stays whole
    # in quarantine and the message names the field and how to pass a format
    path = ASSETS / "maptime.log"
    refused = infer(list(enumerate(path.read_text().splitlines(), start=1)))
    assert refused.text is None and refused.reason == (
        'no line starts like an nginx access-log line (address, user, [time] as $time_local, $time_iso8601 or $msec, '
        '"request", status, bytes)')
    assert SOURCE.detect(path.read_bytes(), path) is None
    [r] = ingest_paths(case.connect(":memory:"), [path])
    assert (r.format, r.records, r.quarantined) == ("unrecognised", 4, 4)
    assert r.message.startswith("format not recognised: every line kept in quarantine; closest nginx format ")
    assert "$time_local expected, found '2025-11-16 02:00:04]" in r.message and "--nginx-format" in r.message
