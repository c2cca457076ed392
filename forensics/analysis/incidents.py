"""Find abnormal windows in a case and decide what each one is.

Detectors look for the signatures of the ways a gateway is abused, each from the case's own data:
  keyless      LLM calls the proxy served without a virtual key, in a proxy that uses keys (open proxy); however
               large the attack, the keyed traffic of the case shows the proxy is meant to use keys
  stuffing     bursts of 401s with many distinct keys from the same addresses, and what those addresses did next
  new_address  a valid key suddenly used from addresses it never used before (leaked key)
  spread       a key new to the case used from many public addresses, far more than any other key (leaked key
               with no past in the logs to compare with)
  surge        public addresses the case had not seen, spending (or calling) several times the whole proxy's rate of
               the hour before: an open proxy without any keys, or any abuse after a short history (minutes suffice)
  rate         a key spending far above its own usual rate (planned batch jobs land here)
  cost_spike   15 minutes of proxy spend far above the usual for that time of day; its big spenders
Each detector yields candidate request sets; sessions split at gaps; small ones are dropped; a request belongs to one
incident at most (in the order above). Usage the provider billed that the proxy never saw comes from reconcile.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from forensics.analysis.incident import SPREAD_MIN_ADDRESSES, Incident
from forensics.analysis.steps import Step
from forensics.netaddr import internal_ip_sql, network_sql

if TYPE_CHECKING:
    from forensics.api import Case

SESSION_GAP_MINUTES = 10          # a pause this long ends a burst
SLOW_GAP_MINUTES = 60             # a leaked key is often used slowly, for hours: a longer pause ends its session
MIN_INCIDENT_REQUESTS = 20        # fewer is noise, not an incident
MIN_KEYED_REQUESTS = 20           # a proxy that served this many keyed calls is one that uses keys
STUFFING_MIN_DISTINCT_KEYS = 20   # distinct rejected keys from one address in a burst
NEW_ADDRESS_GRACE_HOURS = 24      # addresses a key used in its first day are its own
RATE_BUCKET_MINUTES = 10
RATE_FACTOR = 4.0                 # a key's 10-minute bucket this many times its usual busy bucket
SPIKE_BUCKET_MINUTES = 15
SPIKE_FACTOR = 4.0                # proxy spend in 15 minutes this many times the usual for that time of day...
SPIKE_FLOOR_FACTOR = 10.0         # ...and this many times the median 15 minutes of the whole case
SPIKE_ACTOR_SHARE = 0.25          # actors who made at least this share of a spike's spend are its cause
SURGE_FACTOR = 4.0                # newcomers spending this many times the whole proxy's rate just before them
SURGE_LOOKBACK_MINUTES = 60       # "just before": at least this long (as long as the surge itself when longer)
SURGE_SLICE_MINUTES = 15          # "meanwhile": the rest of the proxy's rate in the median slice this long
NEWCOMER_GRACE_SECONDS = 60      # an address calling in the logs' first minute was a client before they begin...
SURGE_KIN_MIN = 2                # ...unless it calls with the client software of this many newcomers, that no
#                                  address the proxy knew uses (the surge began as the logs did)
SURGE_DRIVER_SHARE = 5            # an address in a surge with a fifth of the median address's calls is a bystander

def request_facts_step() -> Step:
    """Per LLM request, the facts the detectors use; health checks (no model group, no client) excluded."""
    return Step("request_facts", """
        WITH valid_keys AS (
            SELECT DISTINCT key_hash FROM llm_requests WHERE status = 'success' AND key_hash IS NOT NULL
        )
        SELECT r.request_id, r.start_time, r.end_time, r.key_hash, r.key_alias, r.client_ip, r.user_agent,
               coalesce(nullif(r.model_group, ''), r.model) AS model, r.status,
               coalesce(r.cost_usd, 0) AS cost_usd,
               (r.status = 'failure' AND (r.error_code IN ('401', '403')
                    OR r.error_class ILIKE '%auth%' OR r.error_message ILIKE '%invalid%key%')) AS auth_failure,
               (v.key_hash IS NOT NULL) AS key_valid
        FROM llm_requests r LEFT JOIN valid_keys v USING (key_hash)
        WHERE r.start_time IS NOT NULL
          AND NOT (coalesce(r.model_group, '') = '' AND r.requester_ip_raw IS NULL AND r.key_hash IS NULL)
    """)


def sessions_sql(candidates: str, partition: str = "1", gap_minutes: int = SESSION_GAP_MINUTES) -> str:
    """Split candidate requests into sessions at pauses longer than `gap_minutes`, per `partition`."""
    return f"""
        WITH ordered AS (
            SELECT *, {partition} AS part,
                   CASE WHEN start_time - lag(start_time) OVER (PARTITION BY {partition} ORDER BY start_time)
                             <= INTERVAL {gap_minutes} MINUTE THEN 0 ELSE 1 END AS starts_session
            FROM {candidates}
        )
        SELECT *, sum(starts_session) OVER (PARTITION BY part ORDER BY start_time, request_id
                                            ROWS UNBOUNDED PRECEDING) AS session_no
        FROM ordered
    """


def keyless_step(facts: str) -> Step:
    """Requests without a virtual key that the proxy did not reject for auth, when keyed traffic is the norm."""
    return Step("keyless_candidates", f"""
        SELECT * FROM ({sessions_sql(f'''(SELECT * FROM {facts}
                 WHERE key_hash IS NULL AND NOT auth_failure
                   AND (SELECT count(*) FILTER (WHERE key_valid AND status = 'success') >= {MIN_KEYED_REQUESTS}
                        FROM {facts}))''')})
    """)


def stuffing_step(facts: str) -> Step:
    """Addresses that presented many distinct rejected keys in a burst; all their requests from the burst on."""
    return Step("stuffing_candidates", f"""
        WITH failures AS (
            SELECT * FROM ({sessions_sql(f'(SELECT * FROM {facts} WHERE auth_failure)', 'client_ip')})
        ), bursts AS (
            SELECT client_ip, session_no, min(start_time) AS first_failure
            FROM failures GROUP BY ALL
            HAVING count(DISTINCT key_hash) >= {STUFFING_MIN_DISTINCT_KEYS}   -- keyless 401s are not guesses
        ), first_burst AS (
            SELECT client_ip, min(first_failure) AS since FROM bursts GROUP BY client_ip
        )
        SELECT f.* FROM {facts} f JOIN first_burst b USING (client_ip) WHERE f.start_time >= b.since
    """)


def new_address_step(facts: str) -> Step:
    """Requests of a valid key from addresses it first used a day (a quarter of a shorter history) or more after the
    key's own first use, outside the networks (`network_sql`) of the addresses it used in that first day (its holder's
    office behind a pool of NAT addresses: 198.51.100.24 after 198.51.100.23); sessions per key and per kind of address,
    internal or public (a key's owner adding a server in its own network while a thief uses the key from the internet
    are two stories: with minutes of history the second replica of the key's own service is new too, and its calls are
    not the thief's)."""
    return Step("new_address_candidates", f"""
        WITH grace AS (
            SELECT least(INTERVAL {NEW_ADDRESS_GRACE_HOURS} HOUR, (max(start_time) - min(start_time)) / 4) AS g
            FROM {facts}
        ), pairs AS (
            SELECT key_hash, client_ip, min(start_time) AS pair_first
            FROM {facts} WHERE key_valid AND client_ip IS NOT NULL GROUP BY ALL
        ), keys AS (
            SELECT key_hash, min(start_time) AS key_first FROM {facts} WHERE key_valid GROUP BY ALL
        ), own_networks AS (   -- the networks of the addresses the key used in its grace period: its holder's
            SELECT DISTINCT p.key_hash, {network_sql('p.client_ip')} AS net FROM pairs p JOIN keys k USING (key_hash)
            WHERE p.pair_first < k.key_first + (SELECT g FROM grace)
        ), new_pairs AS (
            SELECT p.key_hash, p.client_ip FROM pairs p JOIN keys k USING (key_hash)
            WHERE p.pair_first >= k.key_first + (SELECT g FROM grace)
              AND NOT EXISTS (SELECT 1 FROM own_networks o WHERE o.key_hash = p.key_hash AND o.net <> ''
                              AND o.net = {network_sql('p.client_ip')})
        )
        SELECT * FROM ({sessions_sql(f'''(SELECT f.* FROM {facts} f
                                          JOIN new_pairs USING (key_hash, client_ip))''',
                                       f"key_hash || CASE WHEN {internal_ip_sql('client_ip')} THEN ' internal' "
                                       "ELSE '' END", SLOW_GAP_MINUTES)})
    """)


def spread_step(facts: str) -> Step:
    """Requests of a valid key with no past in the logs to compare its addresses with (first seen after they begin,
    or seen first in the spread itself: a leak already running when the logs start) used from SPREAD_MIN_ADDRESSES
    or more public addresses, more than twice as many as any other key of the case ever used (a key committed to a
    public repository, used from wherever it was found)."""
    return Step("spread_candidates", f"""
        WITH span AS (SELECT min(start_time) AS t0 FROM {facts}),
        spread AS (
            SELECT key_hash, min(start_time) AS key_first,
                   count(DISTINCT client_ip) FILTER (WHERE NOT {internal_ip_sql('client_ip')}) AS public_ips
            FROM {facts} WHERE key_valid AND client_ip IS NOT NULL GROUP BY ALL
        ), wide AS (
            SELECT s.key_hash, s.key_first, s.key_first > span.t0 AS new_key FROM spread s, span
            WHERE s.public_ips >= {SPREAD_MIN_ADDRESSES}
              AND s.public_ips > 2 * coalesce((SELECT max(o.public_ips) FROM spread o
                                               WHERE o.key_hash <> s.key_hash), 0)
        ), candidates AS (   -- its calls from public addresses, in sessions that are themselves that spread
            SELECT * FROM ({sessions_sql(f"(SELECT f.* FROM {facts} f SEMI JOIN wide USING (key_hash) "
                                         f"WHERE NOT {internal_ip_sql('f.client_ip')})", 'key_hash', SLOW_GAP_MINUTES)})
        ), sessions AS (
            SELECT part, session_no, min(start_time) AS first FROM candidates GROUP BY ALL
            HAVING count(DISTINCT client_ip) >= {SPREAD_MIN_ADDRESSES}
        )
        -- a key there from the logs' first call: only when its first call opens the spread (no past of its own)
        SELECT c.* FROM candidates c SEMI JOIN sessions USING (part, session_no) JOIN wide w ON w.key_hash = c.part
        WHERE w.new_key OR EXISTS (SELECT 1 FROM sessions s WHERE s.part = c.part AND s.first = w.key_first)
    """)


def surge_sql(rows: str) -> str:
    """Sessions of `rows` (request_id, start_time, client_ip, auth_failure, cost_usd) from public addresses first seen
    after the rows' first minute (not rejected for auth) whose cost (or, when nothing is priced, request) rate is SURGE_FACTOR
    times that of all rows over the lookback before them (a surge with nothing before it counts) and SURGE_FACTOR
    times that of all the other rows meanwhile (a team whose day starts a minute after the logs do is a newcomer to
    them and calls many times more than that minute did, but less than the rest of the proxy does meanwhile): their
    rate in the median SURGE_SLICE_MINUTES of the session's own time. Not over the rows' whole time, nor the
    session's mean: a nightly batch after a thief's third address stopped raised the proxy's mean rate over the
    case above a quarter of the thief's (matrix seed 123 #416), one in the last ten minutes of an hour's theft its
    mean meanwhile (123 #222)."""
    return f"""
        WITH span AS (SELECT min(start_time) AS t0 FROM {rows}),
        firsts AS (   -- public addresses: whether first seen after the rows' first minute, and their client software
            SELECT client_ip, min(start_time) > span.t0 + INTERVAL {NEWCOMER_GRACE_SECONDS} SECOND AS late,
                   mode(user_agent) AS agent
            FROM {rows}, span WHERE client_ip IS NOT NULL AND NOT {internal_ip_sql('client_ip')}
            GROUP BY client_ip, span.t0
        ), kin AS (   -- client software of SURGE_KIN_MIN newcomers or more, used by no address the proxy knew
            SELECT agent FROM firsts f WHERE late AND coalesce(agent, '') NOT IN ('', '-') GROUP BY agent
            HAVING count(*) >= {SURGE_KIN_MIN} AND NOT EXISTS (
                SELECT 1 FROM {rows} o ANTI JOIN firsts x USING (client_ip) WHERE o.user_agent = f.agent)
        ), newcomers AS (
            SELECT client_ip FROM firsts WHERE late OR agent IN (SELECT agent FROM kin)
        ), candidates AS (
            SELECT * FROM ({sessions_sql(f"(SELECT f.* FROM {rows} f SEMI JOIN newcomers n USING (client_ip) "
                                         "WHERE NOT f.auth_failure)")})
        ), sessions AS (
            SELECT session_no, min(start_time) AS s, greatest(max(start_time) - min(start_time), INTERVAL 1 MINUTE) AS d,
                   count(*) AS n, sum(cost_usd) AS cost
            FROM candidates GROUP BY session_no
        ), lookback AS (
            SELECT x.session_no, x.n, x.cost, epoch(x.d) AS seconds,
                   greatest(x.s - greatest(x.d, INTERVAL {SURGE_LOOKBACK_MINUTES} MINUTE), span.t0) AS since, x.s
            FROM sessions x, span
        ), before AS (
            SELECT l.session_no, any_value(l.n) AS n, any_value(l.cost) AS cost, any_value(l.seconds) AS seconds,
                   epoch(any_value(l.s) - any_value(l.since)) AS before_seconds,
                   count(f.request_id) AS n_before, coalesce(sum(f.cost_usd), 0) AS cost_before
            FROM lookback l LEFT JOIN {rows} f ON f.start_time >= l.since AND f.start_time < l.s
            GROUP BY l.session_no
        ), slices AS (   -- the session's own time in SURGE_SLICE_MINUTES slices (the last one may be shorter)
            SELECT session_no, s + k * INTERVAL {SURGE_SLICE_MINUTES} MINUTE AS lo,
                   least(s + (k + 1) * INTERVAL {SURGE_SLICE_MINUTES} MINUTE, s + d + INTERVAL 1 MICROSECOND) AS hi
            FROM (SELECT session_no, s, d,
                         unnest(range(0, CAST(ceil(epoch(d) / {60 * SURGE_SLICE_MINUTES}) AS BIGINT))) AS k
                  FROM sessions)
        ), others AS (
            SELECT * FROM {rows} f WHERE NOT EXISTS (SELECT 1 FROM candidates c WHERE c.request_id = f.request_id)
        ), meanwhile AS (   -- the rest of the traffic's rate a second in its median slice
            SELECT session_no, median(n_rest / seconds) AS n_rate, median(cost_rest / seconds) AS cost_rate
            FROM (SELECT sl.session_no, sl.lo, greatest(epoch(sl.hi - sl.lo), 1) AS seconds,
                         count(o.request_id) AS n_rest, coalesce(sum(o.cost_usd), 0) AS cost_rest
                  FROM slices sl LEFT JOIN others o ON o.start_time >= sl.lo AND o.start_time < sl.hi
                  GROUP BY ALL)
            GROUP BY session_no
        ), whole AS (
            SELECT coalesce(sum(cost_usd), 0) AS cost_all FROM {rows}
        ), hot AS (
            SELECT session_no FROM before JOIN meanwhile USING (session_no), whole
            WHERE (before_seconds <= 0 OR (CASE WHEN cost > 0 AND cost_before > 0
                    THEN cost / seconds >= {SURGE_FACTOR} * cost_before / before_seconds
                    ELSE n / seconds >= {SURGE_FACTOR} * n_before / before_seconds END))
              -- and against the rest of the case's traffic meanwhile: the minute before an office's first calls
              -- is no usual (priced when the case's other traffic is)
              AND (CASE WHEN cost > 0 AND cost_all > cost
                    THEN cost / seconds >= {SURGE_FACTOR} * cost_rate
                    ELSE n / seconds >= {SURGE_FACTOR} * n_rate END)
        ), per_address AS (   -- who drove the surge: a newcomer with a fifth of the median address's calls did not
            SELECT c.session_no, c.client_ip, count(*) AS n
            FROM candidates c SEMI JOIN hot h USING (session_no) GROUP BY c.session_no, c.client_ip
        ), typical AS (
            SELECT session_no, median(n) AS typical FROM per_address GROUP BY session_no
        )
        SELECT c.* FROM candidates c JOIN per_address a USING (session_no, client_ip) JOIN typical t USING (session_no)
        WHERE a.n * {SURGE_DRIVER_SHARE} >= t.typical
    """


def surge_step(facts: str) -> Step:
    """Public addresses the case had not seen, spending several times the whole proxy's rate just before them."""
    return Step("surge_candidates", surge_sql(facts))


def rate_step(facts: str) -> Step:
    """10-minute buckets where a valid key made RATE_FACTOR times its usual busy-bucket count of requests."""
    return Step("rate_candidates", f"""
        WITH buckets AS (
            SELECT key_hash, time_bucket(INTERVAL {RATE_BUCKET_MINUTES} MINUTE, start_time) AS bucket,
                   count(*) AS n
            FROM {facts} WHERE key_valid GROUP BY ALL
        ), usual AS (
            SELECT key_hash, quantile_cont(n, 0.9) AS p90 FROM buckets GROUP BY key_hash
        ), hot AS (
            SELECT b.key_hash, b.bucket FROM buckets b JOIN usual u USING (key_hash)
            WHERE b.n >= {RATE_FACTOR} * u.p90 AND b.n >= {MIN_INCIDENT_REQUESTS} / 2
        )
        SELECT * FROM ({sessions_sql(f'''(SELECT f.* FROM {facts} f JOIN hot h
                 ON f.key_hash = h.key_hash
                 AND time_bucket(INTERVAL {RATE_BUCKET_MINUTES} MINUTE, f.start_time) = h.bucket)''', 'key_hash')})
    """)


def cost_spike_step(facts: str) -> Step:
    """15-minute buckets of proxy spend far above that slot's usual (same time of day, other days); the
    requests of the keys (or, without a key, the addresses) that made at least a quarter of the spike's spend."""
    m = SPIKE_BUCKET_MINUTES
    return Step("cost_spike_candidates", f"""
        WITH buckets AS (
            SELECT time_bucket(INTERVAL {m} MINUTE, start_time) AS bucket, sum(cost_usd) AS cost
            FROM {facts} GROUP BY ALL
        ), filled AS (   -- quiet buckets count as zero spend
            SELECT g.bucket, coalesce(b.cost, 0) AS cost
            FROM (SELECT unnest(generate_series(min(bucket), max(bucket), INTERVAL {m} MINUTE)) AS bucket
                  FROM buckets) g LEFT JOIN buckets b USING (bucket)
        ), usual AS (
            SELECT CAST(bucket AS TIME) AS slot, median(cost) AS slot_median FROM filled GROUP BY ALL
        ), hot AS (
            SELECT f.bucket FROM filled f JOIN usual u ON CAST(f.bucket AS TIME) = u.slot
            WHERE f.cost > {SPIKE_FACTOR} * u.slot_median
              AND f.cost > {SPIKE_FLOOR_FACTOR} * (SELECT median(cost) FROM filled)
        ), hot_requests AS (
            SELECT f.*, coalesce(f.key_hash, 'ip:' || coalesce(f.client_ip, '?')) AS actor,
                   time_bucket(INTERVAL {m} MINUTE, f.start_time) AS bucket
            FROM {facts} f JOIN hot h ON time_bucket(INTERVAL {m} MINUTE, f.start_time) = h.bucket
        ), spenders AS (
            SELECT actor FROM hot_requests GROUP BY actor
            HAVING sum(cost_usd) >= {SPIKE_ACTOR_SHARE} * (SELECT sum(cost_usd) FROM hot_requests)
        )
        SELECT * EXCLUDE (actor, bucket) FROM ({sessions_sql(
            '(SELECT * FROM hot_requests WHERE actor IN (SELECT actor FROM spenders))', '1', m)})
    """)


DETECTORS = [("stuffing", stuffing_step), ("keyless", keyless_step), ("new_address", new_address_step),
             ("spread", spread_step), ("surge", surge_step), ("rate", rate_step), ("cost_spike", cost_spike_step)]


def claimed_step() -> Step:
    """The requests already given to an incident (filled as incidents are found, in detector order)."""
    return Step("claimed", "SELECT CAST(NULL AS VARCHAR) AS request_id WHERE false")


def unclaimed_sessions_sql(candidates: str, claimed: str) -> str:
    """A detector's significant sessions among the requests no earlier incident claimed."""
    return f"""
        SELECT part, session_no, count(*) AS n, min(start_time), max(start_time)
        FROM {candidates} c WHERE NOT EXISTS (SELECT 1 FROM {claimed} x WHERE x.request_id = c.request_id)
        GROUP BY ALL HAVING count(*) >= {MIN_INCIDENT_REQUESTS} ORDER BY 4
    """


def incident_requests_step(n: int, candidates: str, claimed: str) -> Step:
    """One session's unclaimed requests: incident n's request ids. Parameters: part, session_no."""
    return Step(f"incident_{n}", f"""
        SELECT DISTINCT c.request_id FROM {candidates} c
        WHERE c.part IS NOT DISTINCT FROM ? AND c.session_no = ?
          AND NOT EXISTS (SELECT 1 FROM {claimed} x WHERE x.request_id = c.request_id)
    """)


@dataclass
class IncidentSearch:
    """What the incident search found, and the tables later steps read: per-request facts, claimed requests."""

    incidents: list[Incident]
    facts: str
    claimed: str


def find_incidents(case: Case) -> IncidentSearch:
    """Run every detector, keep significant sessions, give each request to one incident, classify."""
    from forensics.analysis.verdicts import classify

    facts = case.run(request_facts_step())
    claimed = case.run(claimed_step())
    incidents: list[Incident] = []
    for detector, make_step in DETECTORS:
        table = case.run(make_step(facts))
        if detector == "stuffing":   # one burst campaign per detector run: all stuffing addresses together
            table = case.run(Step("stuffing_campaign", sessions_sql(table)))
        sessions = case.execute(unclaimed_sessions_sql(table, claimed)).fetchall()
        for part, session_no, n, start, end in sessions:
            number = len(incidents) + 1
            inc_table = case.run(incident_requests_step(number, table, claimed), [part, session_no])
            case.statement("claimed", f"INSERT INTO {claimed} SELECT request_id FROM {inc_table}")
            incidents.append(Incident(f"INC-{number}", "other", "suspicious", detector, start, end, n,
                                      table=inc_table))
    incidents = _one_key_one_story(case, incidents, facts)
    incidents.sort(key=lambda i: i.start)
    for i, inc in enumerate(incidents, start=1):
        inc.id = f"INC-{i}"
        classify(case, inc, facts)
    return IncidentSearch(incidents, facts, claimed)


KEY_DETECTORS = ("new_address", "spread", "surge")   # a key used from addresses new to it


def _one_key_one_story(case: Case, incidents: list[Incident], facts: str) -> list[Incident]:
    """Incidents of KEY_DETECTORS on one and the same key whose windows overlap (or come within SESSION_GAP_MINUTES)
    as one: a stolen key spent from four addresses, three of them surging at 01:25 and the fourth arriving at 01:30
    when the proxy's rate was already the attack's (its new address found on its own), is one attack (matrix seed 99
    #208: its addresses and cost split over two incidents). The story is told by the first of KEY_DETECTORS among
    them: the key's own past (addresses it never used) says more than the proxy's rate does (matrix seed 123 #416: a
    thief's first address, inside the key's grace period, surged with the other two; "a key from three new
    addresses" is the leak, where the surge alone, with no client the key never used, was only suspicious)."""
    keyed = [i for i in incidents if i.detector in KEY_DETECTORS and i.table]
    keys = {}
    for inc in keyed:
        found = case.execute(f"SELECT DISTINCT key_hash FROM {facts} JOIN {inc.table} USING (request_id)").fetchall()
        keys[inc.id] = found[0][0] if len(found) == 1 and found[0][0] is not None else None
    gap = timedelta(minutes=SESSION_GAP_MINUTES)
    out = [i for i in incidents if i not in keyed]
    merged: list[Incident] = []
    for inc in sorted(keyed, key=lambda i: i.start):
        into = next((m for m in merged if keys[m.id] is not None and keys[m.id] == keys[inc.id]
                     and inc.start <= m.end + gap and m.start <= inc.end + gap), None)
        if into is None:
            merged.append(inc)
            continue
        case.statement(f"merge_{into.id}", f"INSERT INTO {into.table} SELECT request_id FROM {inc.table}")
        into.start, into.end, into.requests = min(into.start, inc.start), max(into.end, inc.end), \
            into.requests + inc.requests
        into.detector = min(into.detector, inc.detector, key=KEY_DETECTORS.index)
    return out + merged
