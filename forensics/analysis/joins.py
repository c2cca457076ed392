"""The three-way join: nginx lines to LiteLLM requests, and the match rate that says how far to trust it.

Exactly by LiteLLM call id where nginx logged `$upstream_http_x_litellm_call_id`; otherwise by client address, an
LLM path and time: nginx writes a line when the response ends, so its time sits near the request's end time.
Provider usage is joined to both through the reconciliation's buckets (reconcile.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case

TIME_TOLERANCE_SECONDS = 2
LLM_PATH_SQL = "regexp_matches(h.path, '(chat/)?completions|/embeddings|/messages|/responses')"


def nginx_to_litellm_step() -> Step:
    """One row per LiteLLM request: the nginx line that carried it, how it was matched (call_id | time | none)."""
    return Step("nginx_to_litellm", f"""
        WITH id_pairs AS (   -- failures carry the call id as their request id
            SELECT r.request_id, h.file_id, h.line_no
            FROM llm_requests r JOIN http_requests h ON h.litellm_call_id = r.litellm_call_id
            UNION
            SELECT r.request_id, h.file_id, h.line_no
            FROM llm_requests r JOIN http_requests h ON h.litellm_call_id = r.request_id
        ), by_id AS (
            SELECT request_id, file_id, line_no, 'call_id' AS matched_by, 0.0 AS seconds_apart FROM id_pairs
            QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY file_id, line_no) = 1
        ), unmatched AS (
            SELECT r.* FROM llm_requests r WHERE NOT EXISTS (SELECT 1 FROM by_id b WHERE b.request_id = r.request_id)
        ), probes AS (   -- each unmatched request looks in the seconds around its end: an equality join, not a range
            SELECT u.request_id, u.client_ip, coalesce(u.end_time, u.start_time) AS at,
                   CAST(floor(epoch(coalesce(u.end_time, u.start_time))) AS BIGINT) + d AS second
            FROM unmatched u, range(-{TIME_TOLERANCE_SECONDS}, {TIME_TOLERANCE_SECONDS} + 1) t(d)
        ), lines AS (
            SELECT h.*, CAST(floor(epoch(h.time)) AS BIGINT) AS second FROM http_requests h
            WHERE {LLM_PATH_SQL}
              AND NOT EXISTS (SELECT 1 FROM by_id b WHERE b.file_id = h.file_id AND b.line_no = h.line_no)
        ), by_time AS (
            SELECT p.request_id, h.file_id, h.line_no, 'time' AS matched_by, abs(epoch(h.time) - epoch(p.at)) AS seconds_apart
            FROM probes p JOIN lines h ON h.client_ip = p.client_ip AND h.second = p.second
            WHERE abs(epoch(h.time) - epoch(p.at)) <= {TIME_TOLERANCE_SECONDS}
            QUALIFY row_number() OVER (PARTITION BY p.request_id ORDER BY seconds_apart, h.file_id, h.line_no) = 1
        )
        SELECT r.request_id, m.file_id, m.line_no, coalesce(m.matched_by, 'none') AS matched_by, m.seconds_apart
        FROM llm_requests r LEFT JOIN (SELECT * FROM by_id UNION ALL SELECT * FROM by_time) m USING (request_id)
    """)


def match_rate_step(join: str) -> Step:
    return Step("nginx_match_rate", f"""
        SELECT count(*) AS llm_requests,
               count(*) FILTER (WHERE matched_by = 'call_id') AS by_call_id,
               count(*) FILTER (WHERE matched_by = 'time') AS by_time,
               count(*) FILTER (WHERE matched_by = 'none') AS unmatched,
               round(count(*) FILTER (WHERE matched_by <> 'none') / nullif(count(*), 0), 4) AS match_rate
        FROM {join}
    """)


def join_nginx(case: Case) -> pd.DataFrame:
    """Build the join (one row per LiteLLM request) and return its match-rate summary."""
    return case.query(match_rate_step(case.run(nginx_to_litellm_step())))
