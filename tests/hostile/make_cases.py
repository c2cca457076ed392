"""Write the hostile corpus under tests/hostile/cases/ (run once; the files are committed, this keeps them reproducible).

Each file is a real format (see ../shared/reference/) mutated the way incident data is: attackers writing into the
logs, files cut while copied, exports of other versions. Expected outcomes live in cases.toml, decided by hand.
Huge inputs (the 10 MB line, the file of NULs) are not here: test_hostile_corpus.py builds them in tmp_path.
"""
from __future__ import annotations

import gzip
import json
import tomllib
from pathlib import Path

from keyscan import pct, uesc, xesc

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
KEYS = tomllib.loads((HERE / "cases.toml").read_text())["keys"]
OPENAI, ANTHROPIC, VIRTUAL, BEARER, SIMULATED, OPAQUE = (KEYS[k] for k in ("openai", "anthropic", "virtual", "bearer",
                                                                             "simulated", "opaque"))

UA = "OpenAI/Python 1.51.0"


def combined(ip="203.0.113.7", t="17/Mar/2025:02:00:04 +0100", req="POST /v1/chat/completions HTTP/1.1",
             status=200, size=1534, ref="-", ua=UA, user="-") -> str:
    return f'{ip} - {user} [{t}] "{req}" {status} {size} "{ref}" "{ua}"'


def main_fmt(xff: str, peer="10.0.0.5", **kw) -> str:
    return combined(ip=peer, **kw) + f' "{xff}"'


def write(name: str, data: bytes | str) -> None:
    (CASES / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def lines(*rows: str, end: str = "\n") -> str:
    return "".join(r + end for r in rows)


def payload(i: int, **over) -> dict:
    """A StandardLoggingPayload as LiteLLM's callbacks write it (trimmed to the fields we read)."""
    d = {
        "id": f"chatcmpl-hostile-{i:04d}", "litellm_call_id": f"c0ffee00-0000-4000-8000-{i:012d}",
        "call_type": "acompletion", "stream": False, "status": "success", "custom_llm_provider": "openai",
        "startTime": 1742173204.5 + i, "endTime": 1742173205.5 + i, "completionStartTime": 1742173205.5 + i,
        "model": "gpt-4o", "model_group": "gpt-4o", "api_base": "https://api.openai.com/v1",
        "response_cost": 0.000225, "total_tokens": 30, "prompt_tokens": 10, "completion_tokens": 20,
        "request_tags": [], "end_user": "", "requester_ip_address": "203.0.113.10",
        "metadata": {"user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
                     "user_api_key_alias": "ci-bot", "requester_ip_address": "203.0.113.10",
                     "user_agent": UA, "requester_metadata": {}},
        "messages": [{"role": "user", "content": "hi"}], "response": {}, "model_parameters": {"max_tokens": 100},
        "error_str": None,
    }
    d.update(over)
    return d


def spendlog(i: int, **over) -> dict:
    d = {
        "request_id": f"chatcmpl-spend-{i:04d}", "call_type": "acompletion",
        "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b", "spend": 0.000225,
        "total_tokens": 30, "prompt_tokens": 10, "completion_tokens": 20,
        "startTime": f"2025-01-25T10:00:{i:02d}.123Z", "endTime": f"2025-01-25T10:00:{i:02d}.456Z",
        "completionStartTime": None, "model": "gpt-4o", "model_group": "gpt-4o", "custom_llm_provider": "openai",
        "api_base": "https://api.openai.com/v1", "user": "u-1", "metadata": {"user_api_key_alias": "ci-bot"},
        "cache_hit": "False", "cache_key": "Cache OFF", "request_tags": [], "team_id": "team-a",
        "end_user": "", "requester_ip_address": "203.0.113.10", "status": "success",
    }
    d.update(over)
    return d


CSV_HEADER = ("request_id,call_type,api_key,spend,total_tokens,prompt_tokens,completion_tokens,startTime,endTime,"
              "model,model_group,custom_llm_provider,user,metadata,end_user,requester_ip_address,status")


def csv_row(i, spend="0.000225", total="30", prompt="10", completion="20", start=None, end_user="",
            api_key="88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b", meta='"{}"', rid=None):
    start = start or f"2025-01-24 09:20:{i:02d}.847"
    rid = rid or f"chatcmpl-csv-{i:04d}"
    return (f"{rid},acompletion,{api_key},{spend},{total},{prompt},{completion},{start},{start},gpt-4o,gpt-4o,"
            f"openai,u-1,{meta},{end_user},203.0.113.10,success")


def nd(*objs) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def oa_cost_page(results, start=1730419200, end=1730505600, **page) -> dict:
    return {"object": "page", "data": [{"object": "bucket", "start_time": start, "end_time": end,
                                        "results": results}], "has_more": False, "next_page": None, **page}


def oa_cost(value, line_item="gpt-4o-2024-08-06, input", **kw) -> dict:
    return {"object": "organization.costs.result", "amount": {"value": value, "currency": "usd"},
            "line_item": line_item, "project_id": "proj_abc", **kw}


def oa_usage(**kw) -> dict:
    d = {"object": "organization.usage.completions.result", "input_tokens": 1000, "input_cached_tokens": 400,
         "output_tokens": 500, "num_model_requests": 5, "project_id": None, "user_id": None, "api_key_id": None,
         "model": "gpt-4o-2024-08-06", "batch": None}
    d.update(kw)
    return d


def an_cost(amount, **kw) -> dict:
    d = {"currency": "USD", "amount": amount, "workspace_id": None, "description": "Claude Sonnet 4 Usage - Input Tokens",
         "cost_type": "tokens", "context_window": "0-200k", "model": "claude-sonnet-4-20250514",
         "service_tier": "standard", "token_type": "uncached_input_tokens"}
    d.update(kw)
    return d


def an_page(results, start="2025-08-01T00:00:00Z", end="2025-08-02T00:00:00Z") -> dict:
    return {"data": [{"starting_at": start, "ending_at": end, "results": results}], "has_more": False,
            "next_page": None}


def an_usage(**kw) -> dict:
    d = {"uncached_input_tokens": 250000, "cache_creation": {"ephemeral_1h_input_tokens": 0,
         "ephemeral_5m_input_tokens": 4000}, "cache_read_input_tokens": 96000, "output_tokens": 180000,
         "server_tool_use": {"web_search_requests": 0}, "api_key_id": "apikey_01Rj2N8SVvo6BePZj99NhmiT",
         "workspace_id": None, "model": "claude-sonnet-4-20250514", "service_tier": "standard",
         "context_window": "0-200k"}
    d.update(kw)
    return d


def build() -> None:
    for old in CASES.glob("*"):
        old.unlink()
    # ---- nginx -------------------------------------------------------------------------------------------------
    write("nginx_tls_rdp_probes.log", lines(
        combined(),
        combined(ip="198.51.100.23", req=r"\x16\x03\x01\x02\x00\x01\x00\x01\xFC\x03\x03\xA1\xB2", status=400,
                 size=157, ua="-"),
        combined(ip="198.51.100.23", req=r"\x03\x00\x00/*\xE0\x00\x00\x00\x00\x00Cookie: mstshash=Administr",
                 status=400, size=157, ua="-"),
        combined(ip="192.0.2.44", req="", status=400, size=0, ua="-"),
        combined(ip="192.0.2.44", req="-", status=400, size=0, ua="-"),
        combined(ip="192.0.2.44", req="SSH-2.0-Go", status=400, size=157, ua="-"),
    ))
    # bytes that are not UTF-8 written raw (a log from a tool that does not escape, or a corrupted copy)
    write("nginx_raw_non_utf8.log", lines(
        combined(), combined(req="GET /\xff\xfe HTTP/1.1").encode("latin-1").decode("latin-1"),
    ).encode("latin-1") + b'203.0.113.8 - - [17/Mar/2025:02:00:06 +0100] "GET / HTTP/1.1" 200 5 "-" "bad\xc3\x28ua"\n')
    write("nginx_crlf_bom.log", b"\xef\xbb\xbf" + lines(combined(), combined(ip="203.0.113.9"),
                                                       combined(ip="203.0.113.10"), end="\r\n").encode())
    full = lines(*(combined(ip=f"203.0.113.{i}", t=f"17/Mar/2025:02:{i:02d}:00 +0100") for i in range(60)))
    gz = gzip.compress(full.encode(), mtime=0)
    write("nginx_cut_in_the_middle.log.gz", gz[: len(gz) // 2])
    write("nginx_gzip_two_members.log.gz", gzip.compress(lines(combined()).encode(), mtime=0)
          + gzip.compress(lines(combined(ip="203.0.113.99")).encode(), mtime=0))
    write("nginx_gzip_trailing_garbage.log.gz", gzip.compress(lines(combined()).encode(), mtime=0) + b"GARBAGE!")
    write("nginx_gzip_corrupt_start.log.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"this is not deflate data" * 4)
    write("empty.log", b"")
    write("blank_lines_only.log", b"\n\n   \n\t\n")
    write("nginx_times_far.log", lines(
        combined(t="01/Jan/2099:00:00:00 +0000"), combined(t="31/Dec/1999:23:59:59 +0000"),
        combined(t="01/Jan/1970:00:00:00 +0000"), combined(t="29/Feb/2024:12:00:00 +0000"),
    ))
    # issue #15: $msec of the epoch, of year 1 and of year 9999 (seconds: the old rule read that as milliseconds)
    write("nginx_json_times_far.log", nd(*(
        {"msec": msec, "time_iso8601": iso, "remote_addr": "203.0.113.7", "request": "GET / HTTP/1.1",
         "status": "200", "body_bytes_sent": "5"}
        for msec, iso in (("1742173204.123", "2025-03-17T01:00:04+00:00"), ("0.000", "1970-01-01T00:00:00+00:00"),
                          ("-62135596800.000", "0001-01-01T00:00:00+00:00"),
                          ("253402300799.000", "9999-12-31T23:59:59+00:00"),
                          ("1742173205.456", "2025-03-17T01:00:05+00:00")))))
    write("nginx_odd_offsets.log", lines(
        combined(t="17/Mar/2025:12:00:00 +0545"), combined(t="17/Mar/2025:12:00:00 -0930"),
        combined(t="17/Mar/2025:12:00:00 +1400"), combined(t="17/Mar/2025:12:00:00 -1200"),
    ))
    write("nginx_dst_switch.log", lines(   # Europe/Berlin: spring forward, then fall back (02:30 happens twice)
        combined(t="30/Mar/2025:01:59:59 +0100"), combined(t="30/Mar/2025:03:00:00 +0200"),
        combined(t="26/Oct/2025:02:30:00 +0200"), combined(t="26/Oct/2025:02:10:00 +0100"),
    ))
    write("nginx_impossible_dates.log", lines(
        combined(), combined(t="30/Feb/2025:10:00:00 +0000"), combined(t="17/Mar/2025:25:61:00 +0000"),
        combined(t="17/Foo/2025:10:00:00 +0000"),
    ))
    write("nginx_xff_forged.log", lines(
        main_fmt("10.1.2.3, 198.51.100.77"),                        # private address forged first
        main_fmt("127.0.0.1, 203.0.113.50, 10.0.0.9"),              # loopback forged; our second balancer 10.0.0.9
        main_fmt("1.2.3.4, 198.51.100.8"),                          # a public address forged first
        main_fmt("-", peer="198.51.100.9"),                         # no balancer: the peer is the client
        main_fmt("not-an-ip, 198.51.100.10"),
    ))
    write("nginx_ua_injection.log", lines(
        combined(ua="<script>alert(1)</script>"),
        combined(ua='=HYPERLINK(\\x22http://evil.example/\\x22,\\x22click\\x22)'),
        combined(ua=r"\x1B[31mred\x1B[0m\x1B]0;owned\x07"),
        combined(ua=r"line1\x0Aline2\x0D\x0A203.0.113.66 - - fake"),
        combined(ua="@SUM(1+1)*cmd|' /C calc'!A0", ref="+cmd|' /C calc'!A0"),
    ))
    write("nginx_raw_newline_in_ua.log", lines(
        combined(), combined(ua="first half") [:-1] + "\nsecond half\"", combined(ip="203.0.113.9"),
    ))
    write("nginx_authorization_logged.log", lines(
        combined(req=f"GET /v1/models?api_key={OPENAI} HTTP/1.1"),
        combined(ua=f"curl/8.5.0 Authorization: Bearer {VIRTUAL}"),
        combined(ref=f"https://app.example/?token={BEARER}", user=SIMULATED),
        combined(req=f"POST /key/{ANTHROPIC}/info HTTP/1.1", ua=f"authorization: BeArEr {BEARER}"),
        f'203.0.113.7 - - [17/Mar/2025:02:00:04 +0100] "GET /{OPENAI} HTTP/1.1" 200 5 "-" "cut',
    ))
    write("nginx_json_authorization.log", nd(
        {"time_local": "17/Mar/2025:02:00:04 +0100", "remote_addr": "10.0.0.5", "request": "GET / HTTP/1.1",
         "status": "200", "body_bytes_sent": "5", "http_user_agent": UA, "http_authorization": f"Bearer {OPENAI}",
         "http_x_forwarded_for": "203.0.113.7"},
        {"time_local": "17/Mar/2025:02:00:05 +0100", "remote_addr": "10.0.0.5", "request": "GET / HTTP/1.1",
         "status": "401", "body_bytes_sent": "5", "http_user_agent": f"x-api-key: {ANTHROPIC}",
         "http_authorization": f"Bearer {VIRTUAL}", "http_x_forwarded_for": "203.0.113.8"},
    ))
    write("nginx_json_wrong_types.log", nd(
        {"time_local": "17/Mar/2025:02:00:04 +0100", "remote_addr": "203.0.113.7", "request": "GET / HTTP/1.1",
         "status": "200", "body_bytes_sent": "5", "request_time": "0.010"},
        {"time_local": "17/Mar/2025:02:00:05 +0100", "remote_addr": "203.0.113.7", "request": "GET / HTTP/1.1",
         "status": 404, "body_bytes_sent": 12, "request_time": 0.5},
        {"time_local": "17/Mar/2025:02:00:06 +0100", "remote_addr": "203.0.113.7", "request": "GET / HTTP/1.1",
         "status": "abc", "body_bytes_sent": "-", "request_time": "fast"},
        {"time_local": "17/Mar/2025:02:00:07 +0100", "remote_addr": ["203.0.113.7"], "request": None,
         "status": "200", "body_bytes_sent": {"n": 1}},
        {"time_local": "yesterday", "remote_addr": "203.0.113.7", "request": "GET / HTTP/1.1", "status": "200"},
    ) + '["not", "an", "object"]\n' + '{"time_local": "17/Mar/2025:02:00:08 +0100", "status": "200", "status": "500",'
        ' "remote_addr": "203.0.113.7", "request": "GET / HTTP/1.1"}\n')
    # keys where nobody looks for them: in numbers and times (so in the quarantine reason), as the client address
    write("nginx_keys_in_numbers.log", lines(
        *(combined(ip=f"203.0.113.{i}") for i in range(1, 7)),
        combined(status=OPENAI), combined(size=ANTHROPIC), combined(t=VIRTUAL), combined(ip=VIRTUAL),
        combined(size=BEARER),
    ))

    def jline(**over) -> dict:
        return {"time_iso8601": "2025-03-17T02:00:04+01:00", "remote_addr": "203.0.113.7",
                "request": "GET / HTTP/1.1", "status": "200", "body_bytes_sent": "5", "request_length": "120",
                "request_time": "0.010", "http_x_forwarded_for": "-", "http_user_agent": UA} | over

    write("nginx_json_keys_in_numbers.log", nd(
        jline(), jline(remote_addr="203.0.113.8"), jline(status=OPENAI), jline(body_bytes_sent=ANTHROPIC),
        jline(time_iso8601=VIRTUAL), jline(remote_addr=VIRTUAL),
        jline(remote_addr="10.0.0.5", http_x_forwarded_for=f"203.0.113.9, {OPENAI}"),
        jline(request_length=BEARER), jline(request_time=OPENAI),
    ) + nd(jline(http_user_agent=f"k={OPENAI}")).replace(OPENAI, uesc(OPENAI, "-")))
    # keys percent-encoded, nginx-escaped (\xHH), partly or wholly, upper or lower case
    write("nginx_keys_encoded.log", lines(
        combined(),
        combined(req=f"GET /v1/models?api_key={pct(OPENAI, '-')} HTTP/1.1"),
        combined(req=f"GET /key/{pct(VIRTUAL[:3], lower=True)}{VIRTUAL[3:]}/info HTTP/1.1"),
        combined(ua=f"curl/8 key={xesc(ANTHROPIC, '-')}"),
        combined(ref=f"https://app.example/?t={pct(BEARER, '.')}"),
        combined(req=f"GET /?auth=Bearer%20{pct(OPAQUE[:5])}{OPAQUE[5:]} HTTP/1.1"),
        combined(user=xesc(SIMULATED, lower=True)),
        combined(req=f"GET /{xesc(OPENAI, '-', lower=True)} HTTP/1.1", ua=f"Bearer+{OPAQUE}"),
    ))
    write("unrecognised_keys_encoded.txt", lines(
        "notes from the on-call channel", f"leaked: {pct(OPENAI, '-')}", f"and {xesc(ANTHROPIC[:3])}{ANTHROPIC[3:]}",
        f"header was Authorization: Bearer%20{OPAQUE}", f"jwt {uesc(BEARER, '.')}",
    ))
    deep = "[" * 100000 + "]" * 100000
    write("nginx_json_deep_nesting.log", nd(
        {"time_local": "17/Mar/2025:02:00:04 +0100", "remote_addr": "203.0.113.7", "request": "GET / HTTP/1.1",
         "status": "200", "body_bytes_sent": "5"},
        {"time_local": "17/Mar/2025:02:00:05 +0100", "remote_addr": "203.0.113.7", "request": "GET / HTTP/1.1",
         "status": "200", "body_bytes_sent": "5"},
    ) + '{"time_local": "17/Mar/2025:02:00:06 +0100", "remote_addr": "203.0.113.7", "status": "200", "x": '
        + deep + "}\n")
    write("nginx_error_log_and_syslog_mixed.log", lines(
        combined(), combined(ip="203.0.113.9"),
        '2025/03/17 02:00:05 [error] 1234#0: *5 connect() failed (111: Connection refused) while connecting to '
        'upstream, client: 203.0.113.7, server: _, request: "POST /v1/chat/completions HTTP/1.1"',
        "Mar 17 02:00:06 gw nginx[1234]: " + combined(ip="203.0.113.10"),
        combined(ip="203.0.113.11"),
    ))
    write("nginx_control_bytes.log", lines(combined(), combined(ip="203.0.113.9")).encode()
          + bytes(range(1, 32)).replace(b"\n", b"") + b"\n" + lines(combined(ip="203.0.113.10")).encode())
    write("nginx_bare_cr.log", (combined() + "\r" + combined(ip="203.0.113.9") + "\n"
                                + combined(ip="203.0.113.10", ua="a\rb") + "\n").encode())
    write("nginx_last_line_cut.log", lines(combined(), combined(ip="203.0.113.9"))
          + combined(ip="203.0.113.10")[:60])
    write("mixed_nginx_and_litellm.log", lines(combined(), combined(ip="203.0.113.9"), combined(ip="203.0.113.10"))
          + nd(payload(1)) + lines(combined(ip="203.0.113.11")) + '{"time_local": "x", "status": "200"}\n')
    write("nginx_dup_a.log", lines(combined(ip="203.0.113.77"), combined(ip="203.0.113.78")))
    write("nginx_dup_b.log", lines(combined(ip="203.0.113.77"), combined(ip="203.0.113.78")))
    # ---- LiteLLM -----------------------------------------------------------------------------------------------
    write("spendlogs_bom_crlf.csv", b"\xef\xbb\xbf" + lines(CSV_HEADER, csv_row(1), csv_row(2), end="\r\n").encode())
    write("spendlogs_wrong_types.csv", lines(
        CSV_HEADER, csv_row(1), csv_row(2, spend="abc"), csv_row(3, total="ten"), csv_row(4, start="yesterday"),
        csv_row(5, spend=" 0.5 ", total="1e3"), csv_row(6, prompt="99999999999999999999999"),
        csv_row(7, spend="NaN"), csv_row(8, spend="-0.01"),
    ))
    write("spendlogs_ragged.csv", lines(
        CSV_HEADER, csv_row(1), csv_row(2) + ",extra,fields", "chatcmpl-csv-0003,acompletion,short",
        csv_row(4, end_user='"unbalanced'), csv_row(5),
    ))
    write("spendlogs_old_version.csv", lines(
        "request_id,api_key,spend,startTime,endTime,model,user",
        "chatcmpl-old-1,88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b,0.01,"
        "2024-03-01 10:00:00,2024-03-01 10:00:01,gpt-3.5-turbo,u-1",
    ))
    write("spendlogs_injection_and_keys.csv", lines(
        CSV_HEADER,
        csv_row(1, end_user='"=HYPERLINK(""http://evil.example"",""x"")"'),
        csv_row(2, end_user="<script>alert(1)</script>", api_key=VIRTUAL),
        csv_row(3, meta=f'"{{""user_api_key"": ""{VIRTUAL}"", ""error"": ""Incorrect API key provided: {OPENAI}""}}"'),
        csv_row(4, spend="oops", end_user=f"Bearer {BEARER}"),
    ))
    write("spendlogs_wrong_shape.json", json.dumps(
        [spendlog(1), 1, "x", None, [spendlog(2)], {"unrelated": True}, spendlog(3)]))
    write("spendlogs_numbers_as_strings.ndjson", nd(
        spendlog(1, spend="0.000225", total_tokens="30", prompt_tokens="10", completion_tokens="20"),
        spendlog(2, spend="1e-3", total_tokens=" 7 ", prompt_tokens="3", completion_tokens="4"),
        spendlog(3, spend=True, total_tokens=1.5),
        spendlog(4, total_tokens="1e30"),
    ))
    write("spendlogs_crlf.ndjson", nd(spendlog(1), spendlog(2)).replace("\n", "\r\n"))
    write("payload_missing_fields.ndjson", nd(
        payload(1), {k: v for k, v in payload(2).items() if k not in ("id",)},
        {k: v for k, v in payload(3).items() if k not in ("id", "litellm_call_id")},
        {k: v for k, v in payload(4).items() if k != "startTime"} | {"litellm_call_id": "x"},
        payload(5, startTime=None), payload(6, metadata=None), payload(7, metadata="not an object"),
    ))
    dup = json.dumps(payload(2))
    write("payload_duplicate_keys.ndjson", nd(payload(1)) + dup[:-1] + ', "id": "chatcmpl-other"}\n'
          + dup.replace('"response_cost": 0.000225', '"response_cost": 0.000225, "response_cost": 999.0')
               .replace("hostile-0002", "hostile-0003") + "\n")
    write("payload_deep_nesting.ndjson", nd(payload(1))
          + json.dumps(payload(2))[:-1] + ', "x": ' + deep + "}\n"
          + deep + "\n" + nd(payload(3)))
    write("payload_times.ndjson", nd(
        payload(1, startTime=4102444800.0, endTime=4102444801.0),           # 2100-01-01
        payload(2, startTime=946684799.0, endTime=946684800.0),             # 1999-12-31T23:59:59
        payload(3, startTime="2025-03-17T12:00:00+05:45", endTime="2025-03-17T12:00:01+05:45"),
        payload(4, startTime="2025-10-26T02:30:00+02:00", endTime="2025-10-26T02:10:00+01:00"),
        payload(5, startTime=1742173204123, endTime=1742173205123),         # epoch milliseconds
        payload(6, startTime="2025-03-17 12:00:00", endTime="2025-03-17 12:00:01"),
        payload(7, startTime=-1.0, endTime=0.0),
        payload(8, startTime="2025-02-30T00:00:00Z"),
        payload(9, startTime=1e300),
    ))
    # issue #15: times no log of ours can hold (Go's zero time, the epoch, year 9999; epoch seconds of year 9999
    # that the old unit rule took for milliseconds) are quarantined, whatever the unit; plausible units all load
    write("payload_implausible_times.ndjson", nd(
        payload(1, startTime=-62135596800.0, endTime=-62135596799.0),      # 0001-01-01: Go's zero time
        payload(2, startTime=0, endTime=0),                                 # the epoch
        payload(3, startTime="9999-12-31T23:59:59+14:00", endTime="9999-12-31T23:59:59+14:00"),
        payload(4, startTime=253402300799, endTime=253402300800),          # year 9999 in epoch seconds
        payload(5, startTime=253402300799000, endTime=253402300800000),    # ... and in milliseconds
        payload(6, startTime=1742173204.5, endTime=4102444800.0),          # a good start, an end in 2100
        payload(7, completionStartTime=-62135596800.0),                     # a good start and end
        payload(8, startTime=1742173204123, endTime=1742173205123),        # epoch milliseconds
        payload(9, startTime=1742173204123456, endTime=1742173205123456),  # epoch microseconds
        payload(10, startTime="2025-03-17T01:00:04Z", endTime="2025-03-17T01:00:05Z"),
    ))
    # issue #15: negative counts and spend are no usage: quarantined, the reason naming the field
    write("payload_negative.ndjson", nd(
        payload(1),
        payload(2, response_cost=-347.23),
        payload(3, prompt_tokens=-10),
        payload(4, completion_tokens=-20, total_tokens=-10),
        payload(5, metadata={**payload(5)["metadata"], "usage_object": {"cache_read_input_tokens": -400}}),
        payload(6, response_cost=0.0, prompt_tokens=0, completion_tokens=0, total_tokens=0),
    ))
    write("payload_keys_everywhere.ndjson", nd(
        payload(1, metadata={**payload(1)["metadata"], "user_api_key_hash": None, "user_api_key": VIRTUAL,
                             "requester_custom_headers": {"authorization": f"Bearer {VIRTUAL}"},
                             "user_agent": f"my-app/1.0 key={OPENAI}"}),
        payload(2, status="failure", error_str=f"AuthenticationError: Incorrect API key provided: {OPENAI}.",
                error_information={"error_class": "AuthenticationError",
                                   "error_message": f"invalid x-api-key {ANTHROPIC}"}),
        payload(3, request_tags=[f"User-Agent: curl/8 Bearer {BEARER}"], end_user=SIMULATED,
                messages=[{"role": "user", "content": f"my key is {OPENAI}"}]),
    ) + '{"id": "broken", "api_key": "' + ANTHROPIC + '", "startTime": \n')
    arr = json.dumps([payload(i) for i in range(1, 6)])
    write("payload_array_truncated.json", arr[: arr.index('"chatcmpl-hostile-0004"') + 40])
    write("payload_nan.ndjson", nd(payload(1)) + json.dumps(payload(2, response_cost=float("nan"))) + "\n"
          + json.dumps(payload(3, response_cost=float("inf"))) + "\n")
    write("payload_non_utf8.ndjson", nd(payload(1)).encode() + json.dumps(payload(2, end_user="XXXX")).encode()
          .replace(b"XXXX", b"\xff\xfe") + b"\n" + nd(payload(3)).encode())
    full = nd(*(payload(i) for i in range(1, 21))).encode()
    gz = gzip.compress(full, mtime=0)
    write("payload_cut.ndjson.gz", gz[: int(len(gz) * 0.6)])
    write("flat_spend_wrong_types.ndjson", nd(
        {"request_id": "flat-1", "start_time": 1742173204123, "end_time": 1742173205123, "spend": 0.01,
         "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b", "model": "gpt-4o",
         "total_tokens": 30, "prompt_tokens": 10, "completion_tokens": 20},
        {"request_id": "flat-2", "start_time": "1742173204123", "end_time": "1742173205123", "spend": "0.02",
         "api_key": VIRTUAL, "model": "gpt-4o", "total_tokens": "30", "prompt_tokens": "10",
         "completion_tokens": "20"},
        {"request_id": "flat-3", "start_time": "soon", "spend": "abc", "api_key": "x", "model": "gpt-4o"},
    ))
    write("litellm_object_wrong_shape.json", json.dumps({"hello": "world", "startTime": 1}))
    # ---- providers ---------------------------------------------------------------------------------------------
    write("anthropic_cost_report_cents.json", json.dumps(an_page([
        an_cost("12345"), an_cost("0.5"), an_cost("250", token_type="output_tokens"),
        an_cost("1e2", token_type="cache_read_input_tokens"), an_cost(12345, token_type="cache_creation.ephemeral_5m_input_tokens"),
        an_cost("lots", token_type="web_search"), an_cost(None, description="no amount"),
    ]), indent=1))
    write("anthropic_usage_wrong_types.json", json.dumps({"data": [
        {"starting_at": "2025-08-01T00:00:00Z", "ending_at": "2025-08-02T00:00:00Z", "results": [
            an_usage(), an_usage(uncached_input_tokens="123"), an_usage(output_tokens="many"),
            an_usage(cache_creation=None), an_usage(api_key_id=ANTHROPIC)]},
        {"starting_at": "not a time", "ending_at": "2025-08-03T00:00:00Z", "results": [an_usage()]},
        {"starting_at": "2025-08-03T00:00:00+05:30", "ending_at": "2025-08-04T00:00:00+05:30", "results": "oops"},
    ], "has_more": False, "next_page": None}))
    write("openai_costs_wrong_types.json", json.dumps(oa_cost_page([
        oa_cost(0.06), oa_cost("0.07"), oa_cost("free"), oa_cost(None), oa_cost(1e-12),
        oa_cost(0.5, line_item=f"leaked {OPENAI}", project_id=f"Bearer {BEARER}"),
        {"object": "organization.costs.result", "line_item": "no amount at all"},
        "not an object",
    ])))
    write("openai_usage_missing_fields.json", json.dumps({"object": "page", "data": [
        {"object": "bucket", "start_time": 1730419200, "end_time": 1730505600, "results": [oa_usage()]},
        {"object": "bucket", "end_time": 1730505600, "results": [oa_usage()]},
        {"object": "bucket", "start_time": "1730505600", "end_time": "1730592000",
         "results": [oa_usage(input_tokens="12", output_tokens=None)]},
        {"object": "bucket", "start_time": 1730592000, "end_time": 1730678400, "results": []},
    ], "has_more": False, "next_page": None}))
    # issue #15: bucket times at the epoch, in year 1 or in year 9999 are quarantined with their bucket
    write("openai_usage_far_buckets.json", json.dumps({"object": "page", "data": [
        {"object": "bucket", "start_time": 1730419200, "end_time": 1730505600, "results": [oa_usage()]},
        {"object": "bucket", "start_time": 0, "end_time": 86400, "results": [oa_usage(), oa_usage(model="x")]},
        {"object": "bucket", "start_time": 253370764800, "end_time": 253370851200, "results": [oa_usage()]},  # 9999
        {"object": "bucket", "start_time": 1730505600, "end_time": 253370764800, "results": [oa_usage()]},
    ], "has_more": False, "next_page": None}))
    write("anthropic_cost_far_buckets.json", json.dumps({"data": [
        {"starting_at": "2025-08-01T00:00:00Z", "ending_at": "2025-08-02T00:00:00Z", "results": [an_cost("100")]},
        {"starting_at": "0001-01-01T00:00:00Z", "ending_at": "0001-01-02T00:00:00Z", "results": [an_cost("100")]},
        {"starting_at": "1970-01-01T00:00:00Z", "ending_at": "1970-01-02T00:00:00Z", "results": [an_cost("100")]},
        {"starting_at": "9999-12-30T00:00:00+14:00", "ending_at": "9999-12-31T00:00:00+14:00",
         "results": [an_cost("100")]},
    ], "has_more": False, "next_page": None}))
    write("openai_costs_far_times.csv", lines(
        "start_time,end_time,amount_value,amount_currency,line_item,project_id",
        '1730419200,1730505600,0.06,usd,"gpt-4o-2024-08-06, input",proj_abc',
        '0,86400,0.06,usd,"gpt-4o-2024-08-06, input",proj_abc',
        '253370764800,253370851200,0.06,usd,"gpt-4o-2024-08-06, input",proj_abc',
    ))
    write("openai_usage_wrong_shape.json", json.dumps({"object": "page", "data": {"start_time": 1}, "has_more": False}))
    write("openai_costs_bom_crlf.csv", b"\xef\xbb\xbf" + lines(
        "start_time,end_time,amount_value,amount_currency,line_item,project_id,organization_id,project_name,organization_name",
        '1730419200,1730505600,0.06,usd,"gpt-4o-2024-08-06, input",proj_abc,org-abc,Main,Acme',
        '1730419200,1730505600,abc,usd,"gpt-4o-2024-08-06, output",proj_abc,org-abc,Main,Acme',
        '1730419200,1730505600,12.5,usd,"=HYPERLINK(""http://evil"")",proj_abc,org-abc,Main,Acme',
        end="\r\n").encode())
    cost = json.dumps(an_page([an_cost("100"), an_cost("200"), an_cost("300")]), indent=1)
    write("anthropic_cost_truncated.json", cost[: cost.index('"200"') + 3])
    write("openai_usage_pages_ndjson_broken.ndjson", json.dumps(oa_cost_page([oa_cost(0.06)])) + "\n"
          + json.dumps(oa_cost_page([oa_cost(0.07)], start=1730505600, end=1730592000))[:-30] + "\n"
          + json.dumps(oa_cost_page([oa_cost(0.08)], start=1730592000, end=1730678400)) + "\n")


if __name__ == "__main__":
    build()
    print(f"{len(list(CASES.iterdir()))} files, {sum(p.stat().st_size for p in CASES.iterdir()):,} bytes")
