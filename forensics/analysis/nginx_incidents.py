"""Incidents nginx alone can show, for the time LiteLLM's logs do not cover (or when there are none).

At 3 a.m. the analyst often has nginx before anyone can reach LiteLLM's database. From access-log lines on the LLM
endpoints it finds:
  surge      public addresses the case had not seen calling the LLM endpoints at several times the whole
             gateway's rate of the hour before (an open proxy being drained; cost unknown without LiteLLM or
             provider data, response bytes and request time stand in for tokens)
  auth_burst bursts of 401/403 answers on the LLM endpoints from few addresses (keys being guessed), and what those
             addresses did next
  newcomers  public addresses the gateway had not seen arriving far faster than new clients did before, however
             slowly each one calls (a leaked key used for hours)
Each incident says it rests on nginx alone; cost is unknown there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.incident import Incident
from forensics.analysis.incidents import (MIN_INCIDENT_REQUESTS, NEWCOMER_GRACE_SECONDS, SESSION_GAP_MINUTES,
                                         SLOW_GAP_MINUTES, SURGE_DRIVER_SHARE, sessions_sql, surge_sql)
from forensics.analysis.steps import Step
from forensics.netaddr import internal_ip_sql

if TYPE_CHECKING:
    from forensics.api import Case

LLM_ENDPOINT_SQL = ("regexp_matches(coalesce(path, ''), "
                    "'^(/openai)?(/v1)?/(chat/completions|completions|embeddings|messages|responses|"
                    "engines/[^/]+/(chat/)?completions|openai/deployments/[^/]+/(chat/)?completions)')")
PACE_MIN_GAPS = 5                 # an address's answers in a row that time its requests (no $request_time)...
PACE_MAX_CV = 0.25                # ...when its seconds per response byte between them vary this little...
PACE_LOOP_SHARE = 0.8             # ...and this share of its lines at least come within SESSION_GAP_MINUTES of the last
AUTH_BURST_MIN = 20               # 401/403 answers from one address in one burst
NEWCOMERS_MIN = 5                 # new public addresses arriving in one slow session...
NEWCOMERS_FACTOR = 4              # ...this many times as many as new clients arrived before
STRAY_SHARE = 2                   # a hot wave's newcomer under 1/this of its median calls, without the wave's software


@dataclass
class NginxIncident:
    incident: Incident
    lines: str                    # temp table of its lines (file_id, line_no)
    by_ip: pd.DataFrame           # ip, requests, cost_usd (0: unknown), first_seen, last_seen
    by_user_agent: pd.DataFrame   # user_agent, requests


def llm_lines_step() -> Step:
    """nginx lines on the LLM endpoints; `covered`: at a time LiteLLM's requests cover (LiteLLM then shows what
    they cost, except what never reached it: the 401s of keys being guessed)."""
    return Step("nginx_llm_lines", f"""
        WITH covered AS (SELECT min(start_time) AS lo, max(coalesce(end_time, start_time)) AS hi FROM llm_requests)
        -- nginx logs a line when the response ends: the request began $request_time before (when logged)
        SELECT h.file_id, h.line_no,
               h.time - to_microseconds(CAST(round(coalesce(h.request_time, 0) * 1e6) AS BIGINT)) AS start_time,
               h.time AS end_time, h.client_ip, h.status, h.method, h.path, h.user_agent,
               h.body_bytes, h.request_time,
               h.status IN (401, 403) AS auth_failure, CAST(0 AS DECIMAL(38,12)) AS cost_usd,
               h.file_id || ':' || h.line_no AS request_id,
               coalesce(h.time BETWEEN c.lo AND c.hi, false) AS covered
        FROM http_requests h, covered c
        WHERE h.time IS NOT NULL AND {LLM_ENDPOINT_SQL}
    """)


def nginx_surge_step(lines: str) -> Step:
    """The surge rule of incidents.surge_sql on nginx lines: request rates (nginx has no cost)."""
    return Step("nginx_surge_candidates", surge_sql(lines))


def nginx_auth_burst_step(lines: str) -> Step:
    """Addresses answered 401/403 at least AUTH_BURST_MIN times in a burst on the LLM endpoints; all their lines
    from the burst on (what they did next), one campaign. An internal address (a balancer whose log keeps only its
    own address: everyone's calls come from it) keeps only its lines with the client software the guesses came
    with (their user agent), so the proxy's own users calling on after the attack stopped do not stretch it; where
    one client software made a burst's worth of them, the burst is that software's (a user's two mistyped keys
    through the same balancer seven minutes before the script's first guess do not start it)."""
    return Step("nginx_auth_burst_candidates", f"""
        WITH failures AS (
            SELECT * FROM ({sessions_sql(f'(SELECT * FROM {lines} WHERE auth_failure)', 'client_ip')})
        ), bursts AS (
            SELECT client_ip, session_no FROM failures GROUP BY client_ip, session_no
            HAVING count(*) >= {AUTH_BURST_MIN}
        ), tried AS (   -- each client software's guesses in a burst
            SELECT f.client_ip, f.session_no, f.user_agent, count(*) AS n, min(f.start_time) AS since
            FROM failures f JOIN bursts b USING (client_ip, session_no) GROUP BY ALL
        ), agents AS (   -- the clients the guesses came with, per address (not a user's expired key some other day);
                         -- at an internal address, those with a burst's worth of guesses, when any has
            SELECT * FROM tried t
            WHERE NOT {internal_ip_sql('t.client_ip')} OR t.n >= {AUTH_BURST_MIN}
               OR NOT EXISTS (SELECT 1 FROM tried x WHERE (x.client_ip, x.session_no) = (t.client_ip, t.session_no)
                                                      AND x.n >= {AUTH_BURST_MIN})
        ), first_burst AS (SELECT client_ip, min(since) AS since FROM agents GROUP BY client_ip)
        SELECT * FROM ({sessions_sql(f'''(SELECT l.* FROM {lines} l JOIN first_burst b USING (client_ip)
                                         WHERE l.start_time >= b.since
                                           AND (NOT {internal_ip_sql('l.client_ip')} OR l.auth_failure
                                                OR EXISTS (SELECT 1 FROM agents a WHERE a.client_ip = l.client_ip
                                                    AND a.user_agent IS NOT DISTINCT FROM l.user_agent)))''')})
    """)


def by_ip_step(table: str, name: str) -> Step:
    return Step(name, f"""
        SELECT client_ip AS ip, count(*) AS requests, 0::DECIMAL(38,12) AS cost_usd, min(start_time) AS first_seen,
               max(start_time) AS last_seen
        FROM {table} GROUP BY ALL ORDER BY requests DESC, ip NULLS FIRST
    """)


def by_user_agent_step(table: str, name: str) -> Step:
    return Step(name, f"""
        SELECT user_agent, count(*) AS requests, 0::DECIMAL(38,12) AS cost_usd
        FROM {table} GROUP BY ALL ORDER BY requests DESC, user_agent NULLS FIRST
    """)


def nginx_newcomers_step(lines: str) -> Step:
    """Slow use by addresses the gateway had not seen: sessions (an hour's pause ends one) of served calls from
    public addresses first seen after the lines begin, in which NEWCOMERS_MIN or more such addresses arrive,
    NEWCOMERS_FACTOR times as many as the rate at which new public clients arrived before would give (a key found
    in a public repository, used from wherever it was found, at a rate no surge rule sees). An address calling in
    the lines' first minute counts as a client from before them, unless it calls with the client software (user
    agent) of most of such a session's addresses, which no address the gateway knew used: the leak was already
    running when the log begins. Within a session, arrivals an hour or more after the one before start a wave of
    their own, judged on its own (the office's two addresses in the afternoon are not the start of the leak's nine
    at night); a newcomer of another wave calling with that client software joins the hot one (the leak's tenth
    address, arriving after a pause). A newcomer of a hot wave that never calls with that software and calls under
    1/STRAY_SHARE as often as the wave's median newcomer is a stray, not of the wave (the office's address, new to a
    short log, calling five times in a leak's seven hours)."""
    return Step("nginx_newcomer_candidates", f"""
        WITH span AS (SELECT min(start_time) AS t0 FROM {lines}),
        firsts AS (
            SELECT client_ip, min(start_time) AS first_seen FROM {lines}, span
            WHERE client_ip IS NOT NULL AND NOT {internal_ip_sql('client_ip')} GROUP BY client_ip, span.t0
            HAVING min(start_time) > span.t0 + INTERVAL {NEWCOMER_GRACE_SECONDS} SECOND
        ), candidates AS (
            SELECT * FROM ({sessions_sql(f"(SELECT l.* FROM {lines} l SEMI JOIN firsts USING (client_ip) "
                                         "WHERE NOT l.auth_failure AND l.status < 400)", "1", SLOW_GAP_MINUTES)})
        ), sessions AS (
            SELECT c.session_no, min(c.start_time) AS s FROM candidates c GROUP BY c.session_no
        ), per_address AS (   -- the new addresses whose first call falls in the session, and their calls in it
            SELECT c.session_no, c.client_ip, count(*) AS n, any_value(f.first_seen) AS first_seen
            FROM candidates c JOIN sessions x USING (session_no) JOIN firsts f USING (client_ip)
            WHERE f.first_seen >= x.s GROUP BY ALL
        ), typical AS (SELECT session_no, median(n) AS typical FROM per_address GROUP BY session_no),
        drivers AS (   -- who drove it: a newcomer with a fifth of the median one's calls is a bystander (an office
                       -- address calling once hours later does not stretch the time the others arrived over)
            SELECT a.* FROM per_address a JOIN typical t USING (session_no)
            WHERE a.n * {SURGE_DRIVER_SHARE} >= t.typical
        ), starts AS (   -- arrivals an hour or more after the one before start a wave of their own (the office's
                         -- second address in the afternoon, the leak's nine addresses at night)
            SELECT d.*, CASE WHEN d.first_seen - lag(d.first_seen) OVER (PARTITION BY d.session_no
                                                                        ORDER BY d.first_seen, d.client_ip)
                                  <= INTERVAL {SLOW_GAP_MINUTES} MINUTE THEN 0 ELSE 1 END AS starts_wave
            FROM drivers d
        ), waves AS (
            SELECT *, dense_rank() OVER (ORDER BY session_no, wave) AS wave_no FROM (
                SELECT *, sum(starts_wave) OVER (PARTITION BY session_no ORDER BY first_seen, client_ip
                                                 ROWS UNBOUNDED PRECEDING) AS wave FROM starts)
        ), arrivals AS (   -- how many arrived in a wave, from when, over how long
            SELECT wave_no, min(first_seen) AS s, count(*) AS arrived, max(first_seen) - min(first_seen) AS over
            FROM waves GROUP BY wave_no
        ), hot AS (
            SELECT a.wave_no FROM arrivals a, span
            WHERE a.arrived >= {NEWCOMERS_MIN}
              AND a.arrived >= {NEWCOMERS_FACTOR} * (SELECT count(*) FROM firsts f WHERE f.first_seen < a.s)
                                * greatest(epoch(a.over), 3600) / greatest(epoch(a.s - span.t0), 3600)
        ), leak AS (SELECT w.session_no, w.client_ip, w.wave_no FROM waves w SEMI JOIN hot USING (wave_no)),
        early AS (   -- public addresses calling in the lines' first minute: clients from before them, as a rule
            SELECT client_ip, mode(user_agent) AS agent FROM {lines}, span
            WHERE client_ip IS NOT NULL AND NOT {internal_ip_sql('client_ip')} GROUP BY client_ip, span.t0
            HAVING min(start_time) <= span.t0 + INTERVAL {NEWCOMER_GRACE_SECONDS} SECOND
        ), agents AS (   -- the client software of most of a hot wave's addresses, used by no address known before
            SELECT w.wave_no, l.user_agent FROM leak w
            JOIN {lines} l USING (client_ip) WHERE coalesce(l.user_agent, '') NOT IN ('', '-') GROUP BY ALL
            HAVING count(DISTINCT w.client_ip) * 2 >= (SELECT count(*) FROM leak x WHERE x.wave_no = w.wave_no)
               AND NOT EXISTS (SELECT 1 FROM {lines} o WHERE o.user_agent = l.user_agent
                               AND o.client_ip NOT IN (SELECT client_ip FROM waves)
                               AND o.client_ip NOT IN (SELECT client_ip FROM early))
        ), strays AS (   -- a newcomer that arrived in a hot wave but is not of it: none of its calls come with the
                         -- software that marks the wave, and it called under 1/STRAY_SHARE as often as the median
                         -- newcomer (the office's address, new to a short log, during a leak's seven hours)
            SELECT w.client_ip FROM waves w SEMI JOIN hot USING (wave_no) JOIN typical t USING (session_no)
            WHERE w.n * {STRAY_SHARE} < t.typical AND w.wave_no IN (SELECT wave_no FROM agents)
              AND NOT EXISTS (SELECT 1 FROM {lines} l JOIN agents a USING (user_agent)
                              WHERE l.client_ip = w.client_ip AND a.wave_no = w.wave_no)
        ), others AS (   -- the first minute's addresses, and the newcomers of the session's other waves (one more
                         -- address of the leak arriving after a pause of an hour)
            SELECT client_ip, agent FROM early
            UNION
            SELECT w.client_ip, mode(l.user_agent) FROM waves w JOIN {lines} l USING (client_ip)
            WHERE w.wave_no NOT IN (SELECT wave_no FROM hot) GROUP BY w.client_ip
        ), kin AS (SELECT DISTINCT a.wave_no, o.client_ip FROM others o JOIN agents a ON o.agent = a.user_agent)
        SELECT c.* EXCLUDE (session_no), w.wave_no AS session_no
        FROM candidates c JOIN leak w USING (session_no, client_ip)
        WHERE c.client_ip NOT IN (SELECT client_ip FROM strays)
        UNION ALL BY NAME
        SELECT l.*, k.wave_no AS session_no FROM {lines} l JOIN kin k USING (client_ip)
        WHERE NOT l.auth_failure AND l.status < 400
    """)


def pace_step(mine: str, k: int) -> Step:
    """Seconds per response byte of the incident's requests, timed by its own lines where nginx logged no
    $request_time (its line time is when the answer ended; when the request began is not logged). An address whose
    client sends each request when the previous answer arrived (a loop of calls, one at a time) logs its answers one
    request's duration apart: between two of its served lines under SESSION_GAP_MINUTES apart, the gap over the later
    answer's bytes. Addresses with PACE_MIN_GAPS such gaps whose ratio varies by at most PACE_MAX_CV (coefficient of
    variation), PACE_LOOP_SHARE of their lines or more coming so (a slow leak's address calling every quarter hour at
    random has a few short gaps that agree by chance: matrix seed 99 #181, its start seven minutes early), call that
    way; the median of their medians is the pace. None without such an address (calls spaced by
    pauses, several at a time, or request times logged): then nothing is estimated."""
    return Step(f"nginx_incident_{k}_pace", f"""
        WITH served AS (
            SELECT client_ip, end_time, body_bytes, request_time,
                   epoch(end_time - lag(end_time) OVER (PARTITION BY client_ip ORDER BY end_time, request_id)) AS gap
            FROM {mine} WHERE status < 400 AND client_ip IS NOT NULL
        ), ratios AS (
            SELECT client_ip, gap / body_bytes AS r FROM served
            WHERE request_time IS NULL AND body_bytes > 0 AND gap > 0 AND gap < {SESSION_GAP_MINUTES * 60}
        ), looping AS (   -- most of its lines come one answer after the other, not minutes apart at random
            SELECT client_ip FROM served WHERE gap IS NOT NULL GROUP BY client_ip
            HAVING count(*) FILTER (WHERE gap < {SESSION_GAP_MINUTES * 60}) >= {PACE_LOOP_SHARE} * count(*)
        ), steady AS (
            SELECT client_ip, median(r) AS r FROM ratios SEMI JOIN looping USING (client_ip) GROUP BY client_ip
            HAVING count(*) >= {PACE_MIN_GAPS} AND stddev_samp(r) <= {PACE_MAX_CV} * avg(r)
        )
        SELECT median(r) AS seconds_per_byte, count(*) AS addresses FROM steady
    """)


def continued_sql(mine: str, lines: str, claimed: str, every: str) -> str:
    """Adds to a surge's lines the later served calls of its public addresses, as long as none pauses for more than
    SLOW_GAP_MINUTES (a slow leak goes quiet for a quarter of an hour, then goes on: the same campaign), and their
    earlier ones the same way (a slow leak's first three calls in the quarter hour before its rate stood out, each
    more than SESSION_GAP_MINUTES after the last: matrix seed 55 #440, its start 13 minutes late). Its
    addresses include those that join it later: public addresses never seen on the LLM endpoints (`every`: all
    their lines) before the surge began, every call of which comes from the surge's own client software (user
    agent) and none refused for auth (a key passed on to a new machine, an attacker's next proxy address)."""
    return f"""
        INSERT INTO {mine}
        WITH own AS (SELECT DISTINCT client_ip FROM {mine} WHERE NOT {internal_ip_sql('client_ip')}),
        agents AS (SELECT DISTINCT user_agent FROM {mine} WHERE client_ip IN (SELECT client_ip FROM own)),
        joined AS (
            SELECT client_ip FROM {every}
            WHERE client_ip IS NOT NULL AND NOT {internal_ip_sql('client_ip')}
              AND client_ip NOT IN (SELECT client_ip FROM own)
            GROUP BY client_ip
            HAVING min(start_time) > (SELECT min(start_time) FROM {mine})
               AND bool_and(user_agent IN (SELECT user_agent FROM agents)) AND NOT bool_or(auth_failure)
        ), addresses AS (SELECT client_ip FROM own UNION ALL SELECT client_ip FROM joined),
        pool AS (
            SELECT request_id, start_time FROM {mine}
            UNION ALL
            SELECT l.request_id, l.start_time FROM {lines} l SEMI JOIN addresses USING (client_ip)
            WHERE l.start_time > (SELECT max(start_time) FROM {mine}) AND NOT l.auth_failure AND l.status < 400
              AND NOT EXISTS (SELECT 1 FROM {claimed} x WHERE x.request_id = l.request_id)
            UNION ALL
            SELECT l.request_id, l.start_time FROM {lines} l SEMI JOIN own USING (client_ip)
            WHERE l.start_time < (SELECT min(start_time) FROM {mine}) AND NOT l.auth_failure AND l.status < 400
              AND NOT EXISTS (SELECT 1 FROM {claimed} x WHERE x.request_id = l.request_id)
        ), chained AS ({sessions_sql('pool', '1', SLOW_GAP_MINUTES)})
        SELECT l.*, 1 AS part, 0 AS starts_session, (SELECT any_value(session_no) FROM {mine}) AS session_no
        FROM {lines} l
        WHERE l.request_id IN (SELECT request_id FROM chained
                               WHERE session_no = (SELECT c.session_no FROM chained c SEMI JOIN {mine} m
                                                   USING (request_id) ORDER BY c.start_time LIMIT 1))
          AND l.request_id NOT IN (SELECT request_id FROM {mine})
    """


def find_nginx_incidents(case: Case) -> list[NginxIncident]:
    """401 bursts in every nginx line on the LLM endpoints (LiteLLM never logs a call it refused at the door), surges
    and newcomers in those LiteLLM does not cover; a line belongs to one incident at most."""
    every = case.run(llm_lines_step())
    (n,) = case.execute(f"SELECT count(*) FROM {every}").fetchone()
    if not n:
        return []
    uncovered = case.run(Step("nginx_llm_lines_uncovered", f"SELECT * FROM {every} WHERE NOT covered"))
    claimed = case.run(Step("nginx_claimed", "SELECT CAST(NULL AS VARCHAR) AS request_id WHERE false"))
    found: list[NginxIncident] = []
    for detector, make in (("auth_burst", nginx_auth_burst_step), ("surge", nginx_surge_step),
                           ("newcomers", nginx_newcomers_step)):
        table = case.run(make(every if detector == "auth_burst" else uncovered))
        sessions = case.execute(f"""
            SELECT session_no, count(*), min(start_time), max(start_time),
                   count(*) FILTER (WHERE auth_failure), count(DISTINCT client_ip),
                   count(DISTINCT client_ip) FILTER (WHERE NOT {internal_ip_sql('client_ip')}),
                   count(*) FILTER (WHERE status < 400), coalesce(sum(body_bytes), 0)
            FROM {table} c WHERE NOT EXISTS (SELECT 1 FROM {claimed} x WHERE x.request_id = c.request_id)
            GROUP BY session_no HAVING count(*) >= {MIN_INCIDENT_REQUESTS} ORDER BY 3
        """).fetchall()
        for session_no, count, start, end, rejected, ips, public, served, body in sessions:
            if detector == "auth_burst" and not rejected and not public:
                continue     # a balancer's address calling on after a pause: everyone behind it, not the guesser
            k = len(found) + 1
            mine = case.run(Step(f"nginx_incident_{k}", f"""
                SELECT c.* FROM {table} c WHERE c.session_no = ?
                  AND NOT EXISTS (SELECT 1 FROM {claimed} x WHERE x.request_id = c.request_id)"""), [session_no])
            if case.execute(f"SELECT count(*) FROM {mine}").fetchone()[0] < MIN_INCIDENT_REQUESTS:
                continue     # an earlier surge's continuation took its lines (the sessions were counted before it)
            if detector == "surge":
                case.statement("nginx_surge_continued", continued_sql(mine, uncovered, claimed, every))
                count, start, end, served, body = case.execute(f"""
                    SELECT count(*), min(start_time), max(start_time), count(*) FILTER (WHERE status < 400),
                           coalesce(sum(body_bytes), 0)
                    FROM {mine}""").fetchone()
            paced = _paced(case, mine, k)
            if paced:
                start, end = case.execute(f"SELECT min(start_time), max(start_time) FROM {mine}").fetchone()
            case.statement("nginx_claimed", f"INSERT INTO {claimed} SELECT request_id FROM {mine}")
            inc = Incident(f"N-{k}", "other", "suspicious", f"nginx_{detector}", start, end, count,
                           sources=["nginx"])
            if detector == "auth_burst":
                inc.kind, inc.verdict = "credential_stuffing", "attack"
                inc.evidence.append(f"{rejected} requests to the LLM endpoints answered 401/403 from {ips} "
                                    f"address(es) in bursts of {AUTH_BURST_MIN} or more: keys being guessed")
                if served:
                    inc.evidence.append(f"then {served} requests from the same addresses were served")
            elif detector == "newcomers":
                inc.kind, inc.verdict = "leaked_key", "attack"
                inc.evidence.append(f"{count} served requests to the LLM endpoints from {public} public address(es) "
                                    f"the gateway had never seen, arriving far faster than new clients did before, "
                                    f"over {(end - start).total_seconds() / 3600:.1f} h: someone new is using the "
                                    f"gateway (a leaked key, or the proxy open); {body:,} response bytes")
            else:
                inc.kind = "unauthenticated_proxy"
                inc.verdict = "attack" if public else "suspicious"
                inc.evidence.append(f"{count} requests to the LLM endpoints from {ips} address(es) never seen "
                                    f"before ({public} public), at several times the gateway's rate of the hour "
                                    f"before; {served} served, {body:,} response bytes")
            if paced:
                inc.evidence.append(paced)
            inc.evidence.append("seen in nginx only: who held which key and what it cost is unknown without "
                                "LiteLLM or provider data")
            found.append(NginxIncident(inc, mine, case.query(by_ip_step(mine, f"nginx_incident_{k}_by_ip")),
                                       case.query(by_user_agent_step(mine, f"nginx_incident_{k}_by_user_agent"))))
    return _merged(case, found)


def _paced(case: Case, mine: str, k: int) -> str | None:
    """Where nginx logged no $request_time, the incident's lines get estimated request starts: line time less its
    response bytes at the incident's own pace (pace_step). Returns the evidence line saying so, or None."""
    pace, addresses = case.execute(f"SELECT * FROM {case.run(pace_step(mine, k))}").fetchone()
    if not pace:
        return None
    first = case.execute(f"SELECT min(end_time) FROM {mine}").fetchone()[0]
    case.statement(f"nginx_incident_{k}_paced", f"""
        UPDATE {mine} SET start_time = end_time - to_microseconds(CAST(round(? * body_bytes * 1e6) AS BIGINT))
        WHERE request_time IS NULL AND body_bytes > 0""", [pace])
    return (f"this nginx format logs no $request_time: a line's time is when the answer ended. {addresses} "
            f"address(es) sent each request when the previous answer arrived, {pace * 1000:.1f} s per kB of answer "
            f"apart, so each request is taken to have begun that long before its line (an estimate); the first "
            f"line was written at {first:%Y-%m-%d %H:%M:%S} UTC")


def _merged(case: Case, found: list[NginxIncident]) -> list[NginxIncident]:
    """Incidents of different rules that are one campaign: the same addresses, less than an hour apart (a slow leak
    whose first hours a surge rule saw and whose rest only the newcomers rule did). The first one's kind stays."""
    out: list[NginxIncident] = []
    for n in sorted(found, key=lambda n: n.incident.start):
        prev = out[-1] if out else None
        if (prev is None or n.incident.start - prev.incident.end > pd.Timedelta(minutes=SLOW_GAP_MINUTES)
                or not set(prev.by_ip["ip"].dropna()) & set(n.by_ip["ip"].dropna())):
            out.append(n)
            continue
        k = len(out)
        lines = case.run(Step(f"nginx_merged_{k}", f"SELECT * FROM {prev.lines} UNION ALL SELECT * FROM {n.lines}"))
        a, b = prev.incident, n.incident
        a.end, a.requests = max(a.end, b.end), a.requests + b.requests
        a.verdict = "attack" if "attack" in (a.verdict, b.verdict) else a.verdict
        a.evidence.insert(-1, f"then, by the same addresses: {b.evidence[0]}")
        out[-1] = NginxIncident(a, lines, case.query(by_ip_step(lines, f"nginx_merged_{k}_by_ip")),
                                case.query(by_user_agent_step(lines, f"nginx_merged_{k}_by_user_agent")))
    return out
