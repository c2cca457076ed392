"""Per-request features for the anomaly detectors, built in one SQL statement over the case.

Each feature is something an analyst would look at, and each means the same after an hour of history as after a
month, so a model learnt on one stretch of quiet traffic carries over to the rest: what the request asked for, how
fast its address and key were going in the last minutes (trailing windows, never counts since the case began), how
often the address failed, and how the request departs from its key's profile in the quiet baseline (the training
intervals): a dearer model, a bigger prompt or max_tokens, a faster pace from the request's network (its /24) than
its own, a public address in a network the key used less than HABIT_SHARE of the time there, client software it used
that seldom there (from a public address).
Requests without a key form one group of their own (a proxy without keys has only that group); a request rejected
for its key forms none and departs from none (a typo's or a stuffer's secret is no key's use).
Sizes are shrunk toward a key of this case by PRIOR_REQUESTS (the mean of the keys' means; the spread between keys
plus within one), so a key seen a few times, or never (a nightly job first seen after the training time), is judged
against the case's own keys, not against its busiest key's requests; addresses and client software toward the whole
baseline's. No feature encodes the time of day or the date. Windows end at the request (no peeking);
requests starting at the same instant are ordered by id, so features repeat exactly.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case

CONTENT = ("prompt_tokens", "completion_tokens", "max_tokens", "output_price_mtok", "completion_per_prompt",
           "keyless", "public_address", "auth_failure")
ACTIVITY = ("ip_rate_1m", "ip_rate_15m", "key_rate_1m", "key_rate_15m", "ip_error_rate_15m", "ip_auth_failures_15m",
            "ip_keys_1h", "key_ips_1h")
PROFILE = ("key_price_rise", "key_prompt_rise", "key_max_tokens_rise", "key_public_shift", "key_new_address",
           "key_new_agent", "key_rate_rise")
SD_FLOOR = 0.5             # log2 units: a key that always sends the same still varies by ~40 % before it is odd
FEATURES = CONTENT + ACTIVITY + PROFILE
# what a request asks for and how it departs from its key's profile; not rates nor the key's pace, which follow the
# time of day and the load (a training stretch of nights sees none of the day's): past their training range no news
# and an address's rejected keys (past a person's few typos: model.TYPO_RETRIES), which no load explains
BEYOND = [c for c in (*CONTENT, *PROFILE) if c not in ("key_rate_rise", "auth_failure")] + ["ip_auth_failures_15m"]
HABIT_SHARE = 0.1          # a network or client software carrying this share of a key's baseline requests is its own
PRIOR_REQUESTS = 10        # a key's baseline profile counts this many requests of the whole baseline's beside its own

Intervals = list[tuple[datetime, datetime]]


def features_step() -> Step:
    """Parameters: the training intervals' starts and ends (two lists of timestamps, the same length), the request
    ids left out of the baseline."""
    from forensics.netaddr import internal_ip_sql

    private = internal_ip_sql("ip")
    k, sd, habit = PRIOR_REQUESTS, SD_FLOOR, HABIT_SHARE
    return Step("detector_features", f"""
        WITH r AS (
            SELECT r.request_id, r.start_time, r.key_hash, coalesce(r.key_hash, '(no key)') AS grp,
                   coalesce(r.client_ip, '?') AS ip, coalesce(r.user_agent, '?') AS agent, r.status,
                   -- the address's network: its /24 for IPv4 (an office's or a cloud's pool of addresses), else itself
                   CASE WHEN regexp_matches(coalesce(r.client_ip, '?'), '^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$')
                        THEN regexp_replace(r.client_ip, '[.][0-9]+$', '') ELSE coalesce(r.client_ip, '?') END AS net,
                   CAST(r.status = 'failure' AND r.error_code IN ('401', '403') AS INTEGER) AS auth_failure,
                   coalesce(r.prompt_tokens, 0) AS prompt_tokens, coalesce(r.completion_tokens, 0) AS completion_tokens,
                   -- a file that shows max_tokens on some rows did not get it on the others: 0, not sent; a file
                   -- that shows it on none (spend logs without request bodies) does not log it: NULL, unknown
                   CASE WHEN f.shows_max_tokens THEN coalesce(r.max_tokens, 0) END AS max_tokens,
                   coalesce(CAST(p.output_mtok AS DOUBLE), 0) AS output_price_mtok,
                   epoch(r.start_time) AS t
            FROM llm_requests r
            LEFT JOIN (SELECT file_id, bool_or(max_tokens IS NOT NULL) AS shows_max_tokens
                       FROM llm_requests GROUP BY file_id) f USING (file_id)
            LEFT JOIN prices p ON p.provider = coalesce(r.provider, '')
                 AND p.model = coalesce(nullif(r.model, ''), r.model_group) AND p.day = CAST(r.start_time AS DATE)
            WHERE r.start_time IS NOT NULL
        ), x AS (
            SELECT *, CAST(NOT {private} AS INTEGER) AS public_address,
                   log2(output_price_mtok + 0.01) AS l_price, log2(prompt_tokens + 1.0) AS l_prompt,
                   log2(max_tokens + 1.0) AS l_max,
                   -- the key's (or the keyless group's) pace from the request's network: its requests from
                   -- there in the last 15 minutes (a leaked key's owner, still calling from its own servers while
                   -- others hammer the key elsewhere, keeps its own pace)
                   log2(count(*) OVER (PARTITION BY grp, net ORDER BY t
                                       RANGE BETWEEN 900 PRECEDING AND CURRENT ROW)) AS l_rate,
                   EXISTS (SELECT 1 FROM (SELECT unnest(?::TIMESTAMP[]) AS s, unnest(?::TIMESTAMP[]) AS e) w
                           WHERE r.start_time >= w.s AND r.start_time < w.e)
                   AND r.request_id NOT IN (SELECT unnest(?::VARCHAR[])) AS in_baseline
            FROM r
        ), base AS (SELECT * FROM x WHERE in_baseline),
        accepted AS (SELECT * FROM base WHERE auth_failure = 0),   -- a rejected secret is no key's use
        everyone AS (SELECT coalesce(avg(public_address), 0) AS public_share, count(*) AS n FROM base),
        key_stats AS (
            SELECT grp, count(*) AS n, avg(l_price) AS m_price, var_pop(l_price) AS v_price, avg(l_prompt) AS m_prompt,
                   var_pop(l_prompt) AS v_prompt, count(l_max) AS n_max, avg(l_max) AS m_max, var_pop(l_max) AS v_max,
                   avg(l_rate) AS m_rate, var_pop(l_rate) AS v_rate
            FROM accepted GROUP BY grp
        ), prior AS (    -- a key of this case: the mean of the keys' means, the spread between keys plus within one
            SELECT coalesce(avg(m_price), 0) AS l_price, coalesce(avg(m_prompt), 0) AS l_prompt, avg(m_max) AS l_max,
                   coalesce(avg(m_rate), 0) AS l_rate,
                   coalesce(var_pop(m_rate), 0) + coalesce(sum(n * v_rate) / sum(n), 0) AS v_rate,
                   coalesce(var_pop(m_price), 0) + coalesce(sum(n * v_price) / sum(n), 0) AS v_price,
                   coalesce(var_pop(m_prompt), 0) + coalesce(sum(n * v_prompt) / sum(n), 0) AS v_prompt,
                   coalesce(var_pop(m_max), 0) + coalesce(sum(n_max * v_max) / nullif(sum(n_max), 0), 0) AS v_max
            FROM key_stats
        ), networks AS (SELECT net, count(*) AS n FROM base GROUP BY net),
        agents AS (SELECT agent, count(*) AS n FROM base GROUP BY agent),
        profiles AS (    -- per key (or the keyless group): means and spreads shrunk toward the prior
            SELECT b.grp, count(*) AS n,
                   (sum(b.l_price) + {k} * any_value(q.l_price)) / (count(*) + {k}) AS l_price,
                   (sum(b.l_prompt) + {k} * any_value(q.l_prompt)) / (count(*) + {k}) AS l_prompt,
                   (sum(b.l_max) + {k} * any_value(q.l_max)) / (count(b.l_max) + {k}) AS l_max,
                   greatest({sd}, sqrt((count(*) * var_pop(b.l_price) + {k} * any_value(q.v_price)) / (count(*) + {k})))
                       AS sd_price,
                   greatest({sd}, sqrt((count(*) * var_pop(b.l_prompt) + {k} * any_value(q.v_prompt))
                                       / (count(*) + {k})))
                       AS sd_prompt,
                   greatest({sd}, sqrt((count(b.l_max) * coalesce(var_pop(b.l_max), 0) + {k} * any_value(q.v_max))
                                       / (count(b.l_max) + {k})))
                       AS sd_max,
                   (sum(b.l_rate) + {k} * any_value(q.l_rate)) / (count(*) + {k}) AS l_rate,
                   greatest({sd}, sqrt((count(*) * var_pop(b.l_rate) + {k} * any_value(q.v_rate)) / (count(*) + {k})))
                       AS sd_rate,
                   (sum(b.public_address) + {k} * any_value(e.public_share)) / (count(*) + {k}) AS public_share
            FROM accepted b, everyone e, prior q GROUP BY b.grp
        ), pair_share AS (SELECT grp, net, count(*) AS n FROM accepted GROUP BY ALL),
        agent_share AS (SELECT grp, agent, count(*) AS n FROM accepted GROUP BY ALL),
        features AS (
        SELECT x.request_id, x.start_time,
               x.prompt_tokens, x.completion_tokens, x.max_tokens, x.output_price_mtok,
               x.completion_tokens / (x.prompt_tokens + 1.0) AS completion_per_prompt,
               CAST(x.key_hash IS NULL AS INTEGER) AS keyless, x.public_address, x.auth_failure,
               count(*) OVER (PARTITION BY x.ip ORDER BY x.t RANGE BETWEEN 60 PRECEDING AND CURRENT ROW) AS ip_rate_1m,
               count(*) OVER (PARTITION BY x.ip ORDER BY x.t RANGE BETWEEN 900 PRECEDING AND CURRENT ROW)
                   AS ip_rate_15m,
               CASE WHEN x.key_hash IS NULL THEN 0 ELSE count(*) OVER (PARTITION BY x.key_hash ORDER BY x.t
                    RANGE BETWEEN 60 PRECEDING AND CURRENT ROW) END AS key_rate_1m,
               CASE WHEN x.key_hash IS NULL THEN 0 ELSE count(*) OVER (PARTITION BY x.key_hash ORDER BY x.t
                    RANGE BETWEEN 900 PRECEDING AND CURRENT ROW) END AS key_rate_15m,
               avg(CAST(x.status = 'failure' AS INTEGER)) OVER (PARTITION BY x.ip ORDER BY x.t
                    RANGE BETWEEN 900 PRECEDING AND CURRENT ROW) AS ip_error_rate_15m,
               sum(x.auth_failure) OVER (PARTITION BY x.ip ORDER BY x.t
                    RANGE BETWEEN 900 PRECEDING AND CURRENT ROW) AS ip_auth_failures_15m,
               count(DISTINCT x.key_hash) OVER (PARTITION BY x.ip ORDER BY x.t
                    RANGE BETWEEN 3600 PRECEDING AND CURRENT ROW) AS ip_keys_1h,
               CASE WHEN x.key_hash IS NULL THEN 0 ELSE count(DISTINCT x.ip) OVER (PARTITION BY x.key_hash ORDER BY x.t
                    RANGE BETWEEN 3600 PRECEDING AND CURRENT ROW) END AS key_ips_1h,
               -- the request against its key's baseline profile, one-sided: what makes it cost more or look foreign
               -- (sizes in the key's own spreads: a key that always asks for the same model is judged strictly)
               greatest(0, (x.l_price - coalesce(p.l_price, q.l_price))
                           / coalesce(p.sd_price, greatest({sd}, sqrt(q.v_price)))) AS key_price_rise,
               greatest(0, (x.l_prompt - coalesce(p.l_prompt, q.l_prompt))
                           / coalesce(p.sd_prompt, greatest({sd}, sqrt(q.v_prompt)))) AS key_prompt_rise,
               -- max_tokens only against a baseline that shows it: unknown on either side, no claim (0)
               coalesce(greatest(0, (x.l_max - coalesce(p.l_max, q.l_max))
                           / coalesce(p.sd_max, greatest({sd}, sqrt(q.v_max)))), 0) AS key_max_tokens_rise,
               -- its pace from this network against its own (a CI job's bursts are its habit, a leaked key's
               -- hammering is not)
               greatest(0, (x.l_rate - coalesce(p.l_rate, q.l_rate))
                           / coalesce(p.sd_rate, greatest({sd}, sqrt(q.v_rate)))) AS key_rate_rise,
               greatest(0, x.public_address - coalesce(p.public_share, e.public_share)) AS key_public_shift,
               -- a public address only: a new private one is the operator's own new server, not news; new when
               -- its network is: a key used from one office's or cloud's pool of addresses moves within it
               -- (1 - its share of the key's baseline requests over HABIT_SHARE: what the key uses that often is
               -- its habit, however many others it uses)
               x.public_address * greatest(0, 1 - (coalesce(ps.n, 0) + {k} * coalesce(a.n, 0) / greatest(e.n, 1))
                                       / (coalesce(p.n, 0) + {k}) / {habit}) AS key_new_address,
               -- the same: new client software on the operator's own servers is an upgrade or a new service
               x.public_address * greatest(0, 1 - (coalesce(gs.n, 0) + {k} * coalesce(g.n, 0) / greatest(e.n, 1))
                                       / (coalesce(p.n, 0) + {k}) / {habit}) AS key_new_agent
        FROM x CROSS JOIN everyone e CROSS JOIN prior q
        LEFT JOIN profiles p ON p.grp = x.grp
        LEFT JOIN pair_share ps ON ps.grp = x.grp AND ps.net = x.net
        LEFT JOIN agent_share gs ON gs.grp = x.grp AND gs.agent = x.agent
        LEFT JOIN networks a ON a.net = x.net
        LEFT JOIN agents g ON g.agent = x.agent
        )
        -- a rejected request departs from no key's profile (its secret is a typo or a stuffer's guess): its
        -- address's rejections speak for it
        SELECT * REPLACE ({', '.join(f'CASE WHEN auth_failure = 1 THEN 0 ELSE {c} END AS {c}' for c in PROFILE)})
        FROM features ORDER BY start_time, request_id
    """)


def build_features(case: Case, baseline: Intervals, excluded: list[str] = ()) -> pd.DataFrame:
    """Features of every request in the case, ordered by start time (request_id, start_time, then FEATURES);
    the key profiles come from the requests in the `baseline` intervals but those `excluded`."""
    starts = [s for s, _ in baseline]
    ends = [e for _, e in baseline]
    return case.query(features_step(), [starts, ends, list(excluded)])
