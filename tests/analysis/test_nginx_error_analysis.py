"""The nginx error log in the analyses: rejections and upstream failures in an incident's timeline, and the limits
the case HAD beside the controls replay (which assumes none)."""
from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

from forensics.analysis import limits, timeline
from forensics.outputs import report
from forensics.api import Case

# sample_logs/ (open_proxy): the incident runs 2026-11-16 02:00-02:45 UTC. Its access log times lines by $msec, which
# says no offset: the error log's local times are read as UTC (an error log whose server runs UTC). Entries shaped
# like tests/assets/nginx/error.log (nginx's ngx_http_log_error context).
ENTRIES = [
    '2026/11/16 02:05:{s:02d} [error] 31#31: *{n} limiting requests, excess: 10.{s:03d} by zone "llm", client: '
    '198.51.100.{ip}, server: api.example.com, request: "POST /v1/chat/completions HTTP/1.1", host: "api.example.com"'
    .format(s=s, n=1000 + s, ip=s % 3 + 1) for s in range(12)
] + [
    '2026/11/16 02:06:01 [error] 31#31: *2001 upstream timed out (110: Connection timed out) while reading response '
    'header from upstream, client: 198.51.100.1, server: api.example.com, request: "POST /v1/chat/completions '
    'HTTP/1.1", upstream: "http://10.0.1.10:4000/v1/chat/completions", host: "api.example.com"',
    '2026/11/16 02:06:02 [warn] 31#31: *2002 delaying request, excess: 0.500, by zone "llm", client: 198.51.100.2, '
    'server: api.example.com, request: "POST /v1/chat/completions HTTP/1.1", host: "api.example.com"',
    # a day later: outside the incident
    '2026/11/17 10:00:00 [error] 31#31: *3001 limiting connections by zone "addr", client: 203.0.113.5, server: '
    'api.example.com, request: "GET / HTTP/1.1", host: "api.example.com"',
]


def test_timeline_and_controls_read_the_error_log(sample_case_copy, tmp_path):
    log = tmp_path / "error.log"
    log.write_text("\n".join(ENTRIES) + "\n")
    with Case.open(sample_case_copy) as case:
        [r] = case.ingest([log])
        assert (r.format, r.records, r.loaded) == ("nginx.error", 15, 15) and "read as UTC" in r.message
        ids = [i for (i,) in case.execute(
            "SELECT request_id FROM llm_requests WHERE key_hash IS NULL AND start_time >= '2026-11-16 02:00' "
            "AND start_time < '2026-11-16 02:45'").fetchall()]
        assert len(ids) > 1000
        t = timeline.timeline(case, case.load_ids("inc_ids", ids), "inc")
        minutes = t.nginx_minutes.set_index("minute")
        assert minutes.loc[datetime(2026, 11, 16, 2, 5), ["rejected", "rejected_addresses", "upstream_failures"]
                           ].tolist() == [12, 3, 0]
        assert minutes.loc[datetime(2026, 11, 16, 2, 6), "upstream_failures"] == 1
        events = t.nginx_events.set_index("class")
        assert events.loc["limit_req", "entries"] == 12 and list(events.loc["limit_req", "zones"]) == ["llm"]
        assert "limit_conn" not in events.index            # the next day's entry is not in this incident
        seen = limits.limits_seen(case, datetime(2026, 11, 16, 2), datetime(2026, 11, 16, 2, 45))
        assert seen[["directive", "zone", "effect", "requests", "addresses"]].values.tolist() == [
            ["limit_req", "llm", "delayed", 1, 1], ["limit_req", "llm", "rejected", 12, 3]]
        text = limits.limits_text(seen)
        assert text[1].startswith('nginx limit_req zone "llm" was in force: it rejected 12 requests from 3 addresses '
                                  'between 2026-11-16 02:05:00 and 2026-11-16 02:05:11 UTC')
        assert len(limits.limits_seen(case)) == 3           # the whole case: limit_conn too
        # the report's tables of them (an upstream timeout names no zone)
        events_table = report.nginx_errors_table(SimpleNamespace(timeline=t))
        assert events_table.rows[1] == ["upstream_timed_out", "1", "2026-11-16 02:06:01 UTC", "2026-11-16 02:06:01 UTC",
                                        "1", ""]
        assert report.limits_table(SimpleNamespace(limits=seen)).rows[1][:5] == ["limit_req", "llm", "rejected", "12",
                                                                                    "3"]


def test_no_error_log_no_rows(sample_case_copy):
    with Case.open(sample_case_copy) as case:
        assert limits.limits_seen(case).empty and limits.limits_text(limits.limits_seen(case)) == []
        ids = [i for (i,) in case.execute("SELECT request_id FROM llm_requests LIMIT 5").fetchall()]
        assert timeline.timeline(case, case.load_ids("some", ids), "x").nginx_events is None
