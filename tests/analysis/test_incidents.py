"""Detector edges found in review: a huge open-proxy attack, keyless 401s, a keyless spike is never benign."""
from datetime import datetime, timedelta
from decimal import Decimal

import pandas as pd

from forensics.api import Case
from forensics.analysis.incidents import find_incidents

T0 = datetime(2026, 11, 9)


def _case(rows):
    c = Case.memory()
    con = c.con
    frame = pd.DataFrame(rows, columns=["request_id", "start_time", "key_hash", "client_ip", "status", "error_code",
                                        "cost"]).astype({"key_hash": object, "error_code": object, "cost": object})
    con.register("rows_in", frame)
    con.execute("""INSERT INTO llm_requests (request_id, start_time, end_time, key_hash, client_ip, status, error_code,
                       model_group, model, provider, requester_ip_raw, cost_usd)
                   SELECT request_id, start_time, start_time + INTERVAL 2 SECOND, key_hash, client_ip, status,
                          error_code, 'gpt-4o', 'gpt-4o', 'openai', client_ip, CAST(cost AS DECIMAL(38,12))
                   FROM rows_in""")
    con.unregister("rows_in")
    return c


def _baseline(days=3):
    """Two app servers with their keys, one request every 5 minutes each."""
    rows = []
    for i in range(days * 24 * 12):
        t = T0 + timedelta(minutes=5 * i)
        rows.append((f"a{i}", t, "k" * 64, "10.0.0.5", "success", None, "0.01"))
        rows.append((f"b{i}", t + timedelta(seconds=30), "j" * 64, "10.0.0.6", "success", None, "0.02"))
    return rows


def test_open_proxy_found_even_when_keyless_calls_outnumber_keyed_ones():
    rows = _baseline()
    start = T0 + timedelta(days=3)
    rows += [(f"x{i}", start + timedelta(seconds=i), None, f"203.0.113.{i % 30}", "success", None, "0.30")
             for i in range(5000)]
    con = _case(rows)
    [inc] = find_incidents(con).incidents
    assert (inc.kind, inc.verdict, inc.requests) == ("unauthenticated_proxy", "attack", 5000)


def test_keyless_401s_are_not_credential_stuffing():
    rows = _baseline()
    start = T0 + timedelta(days=2, hours=3)
    rows += [(f"u{i}", start + timedelta(seconds=10 * i), None, "198.51.100.9", "failure", "401", "0")
             for i in range(40)]
    con = _case(rows)
    assert [i.kind for i in find_incidents(con).incidents] == []


def test_many_distinct_rejected_keys_are_stuffing():
    rows = _baseline()
    start = T0 + timedelta(days=2, hours=3)
    rows += [(f"s{i}", start + timedelta(seconds=3 * i), f"{i:064x}", "198.51.100.9", "failure", "401", "0")
             for i in range(40)]
    con = _case(rows)
    [inc] = find_incidents(con).incidents
    assert (inc.kind, inc.verdict) == ("credential_stuffing", "attack")
    assert Decimal(0) == con.execute(f"SELECT coalesce(sum(cost_usd), 0) FROM llm_requests "
                                     f"JOIN {inc.table} USING (request_id)").fetchone()[0]


def _leak(hours_before: float, addresses: int):
    """A key the logs never saw before, used slowly (a request every 2 minutes for 5 hours) from `addresses`
    public addresses in turn, `hours_before` hours of the two app servers' traffic before it (the matrix's
    leaked_virtual_key draws with short histories: issue #12)."""
    rows = [r for r in _baseline(1) if r[1] < T0 + timedelta(hours=hours_before)]
    start = T0 + timedelta(hours=hours_before)
    rows += [(f"l{i}", start + timedelta(minutes=2 * i), "c" * 64, f"203.0.113.{40 + i % addresses}", "success",
              None, "0.03") for i in range(150)]
    return _case(rows)


def test_a_new_key_used_from_many_public_addresses_is_a_leaked_key_even_with_minutes_of_history():
    for hours in (0.5, 20):
        [inc] = find_incidents(_leak(hours, 9)).incidents
        assert (inc.kind, inc.verdict, inc.detector, inc.requests) == ("leaked_key", "attack", "spread", 150)


def test_a_leak_already_running_when_the_logs_begin_is_a_leaked_key():
    """Matrix seed 42 #103: the logs (a few minutes of history) open with the leaked key's first call; it is used
    slowly for 7 hours from nine public addresses while the app servers call from inside. No past of its own to
    compare with, like a key first seen later: its spread is the leak. A key whose first calls came from its own
    server before the public addresses is judged by its new addresses, not by the spread."""
    app = [r for r in _baseline(1) if r[1] < T0 + timedelta(hours=8)]
    leak = [(f"l{i}", T0 + timedelta(minutes=2 * i, seconds=-1), "c" * 64, f"203.0.113.{40 + i % 9}", "success",
             None, "0.03") for i in range(210)]
    [inc] = find_incidents(_case(app + leak)).incidents
    assert (inc.kind, inc.verdict, inc.detector, inc.requests) == ("leaked_key", "attack", "spread", 210)
    own = [(f"o{i}", T0 + timedelta(minutes=i, seconds=-1), "c" * 64, "10.0.0.7", "success", None, "0.03")
           for i in range(5)]
    assert all(i.detector != "spread" for i in find_incidents(_case(app + own + leak[10:])).incidents)


def test_a_new_key_from_as_few_addresses_as_the_others_use_is_no_incident():
    # two app servers use one address each: a new key from two public addresses is a new app, not a leak
    assert find_incidents(_leak(20, 2)).incidents == []


def _nginx_case(rows):
    """A case holding only nginx lines: (time, client_ip, status) on /v1/chat/completions."""
    c = Case.memory()
    frame = pd.DataFrame(rows, columns=["time", "client_ip", "status"])
    c.con.register("lines_in", frame)
    c.con.execute("""INSERT INTO http_requests (file_id, line_no, time, client_ip, status, method, path, user_agent,
                         body_bytes, request_time)
                     SELECT 1, row_number() OVER (ORDER BY time), time, client_ip, status, 'POST',
                            '/v1/chat/completions', 'python-requests/2.32', 900, 2.5 FROM lines_in""")
    c.con.unregister("lines_in")
    return c


def _nginx_agents_case(rows):
    """A case holding only nginx lines: (time, client_ip, user agent), all served, on /v1/chat/completions."""
    c = Case.memory()
    c.con.register("lines_in", pd.DataFrame(rows, columns=["time", "client_ip", "ua"]))
    c.con.execute("""INSERT INTO http_requests (file_id, line_no, time, client_ip, status, method, path, user_agent,
                         body_bytes, request_time)
                     SELECT 1, row_number() OVER (ORDER BY time), time, client_ip, 200, 'POST',
                            '/v1/chat/completions', ua, 900, 2.5 FROM lines_in""")
    c.con.unregister("lines_in")
    return c


def test_nginx_alone_finds_a_key_used_slowly_from_new_public_addresses():
    """The matrix's nginx-only leaked_virtual_key draws: two app servers and one known public partner call all day;
    then nine public addresses never seen arrive within 40 minutes and call every few minutes for 6 hours, at a
    rate no surge rule sees. A newcomer now and then (the partner's second office) is no incident."""
    from forensics.analysis.nginx_incidents import find_nginx_incidents

    rows = [(T0 + timedelta(minutes=3 * i), f"10.0.0.{5 + i % 2}", 200) for i in range(20 * 60)]
    rows += [(T0 + timedelta(hours=h), "198.51.100.7", 200) for h in range(1, 60, 3)]
    rows += [(T0 + timedelta(hours=30), "198.51.100.8", 200)]
    start = T0 + timedelta(hours=40)
    leak = [(start + timedelta(minutes=5 * a + 15 * i), f"203.0.113.{60 + a}", 200) for a in range(9)
            for i in range(24)]
    found = find_nginx_incidents(_nginx_case(rows + leak))
    [n] = found
    assert (n.incident.kind, n.incident.verdict, n.incident.requests) == ("leaked_key", "attack", len(leak))
    assert set(n.by_ip["ip"]) == {f"203.0.113.{60 + a}" for a in range(9)}
    assert find_nginx_incidents(_nginx_case(rows)) == []


def test_an_office_address_calling_once_hours_later_does_not_hide_a_slow_leak_in_nginx():
    """Matrix seed 13 #152: an hour and three quarters of app servers (and one call from the office's public
    address), then nine public addresses arrive within 45 minutes and call every quarter hour for 7 hours; the
    office's other address calls once near the end. Counted among the newcomers, it stretched their arrivals over
    seven hours, a rate the office's one newcomer before matched: no incident. It is a bystander (a fifth of the
    median newcomer's calls), and the nine are the leak."""
    from forensics.analysis.nginx_incidents import find_nginx_incidents

    rows = [(T0 + timedelta(minutes=3 * i), f"10.0.0.{5 + i % 2}", 200) for i in range(9 * 20)]
    rows += [(T0 + timedelta(minutes=10), "198.51.100.24", 200), (T0 + timedelta(hours=8, minutes=42),
                                                                   "198.51.100.23", 200)]
    start = T0 + timedelta(hours=1, minutes=48)
    leak = [(start + timedelta(minutes=5 * a + 15 * i), f"203.0.113.{60 + a}", 200) for a in range(9)
            for i in range(27)]
    [n] = find_nginx_incidents(_nginx_case(rows + leak))
    assert (n.incident.kind, n.incident.verdict, n.incident.requests) == ("leaked_key", "attack", len(leak))
    assert set(n.by_ip["ip"]) == {f"203.0.113.{60 + a}" for a in range(9)}


def test_a_slow_leak_already_running_when_the_nginx_log_begins_keeps_its_first_addresses():
    """Matrix seed 13 #259: twelve minutes of history, and the log opens with the leak: two of its nine addresses
    call in its first minute, which counts them as clients from before the log (recall 7/9, start 8 minutes late).
    They call with the client software of the seven newcomers, which no address the gateway knew used: they are
    the leak's. The same two addresses with the app servers' client stay clients from before."""
    from forensics.analysis.nginx_incidents import find_nginx_incidents
    from forensics.api import Case

    def case(early_agent: str):
        rows = [(T0 + timedelta(seconds=40 + 180 * i), f"10.0.0.{5 + i % 2}", "AsyncOpenAI/Python 1.54.0")
                for i in range(140)]
        rows += [(T0 + timedelta(seconds=5 + 20 * a + 900 * i), f"203.0.113.{60 + a}", early_agent)
                 for a in range(2) for i in range(27)]
        rows += [(T0 + timedelta(minutes=8 + 4 * a, seconds=900 * i), f"203.0.113.{62 + a}", "python-requests/2.32.3")
                 for a in range(7) for i in range(25)]
        return _nginx_agents_case(rows)
    [n] = find_nginx_incidents(case("python-requests/2.32.3"))
    assert set(n.by_ip["ip"]) == {f"203.0.113.{60 + a}" for a in range(9)} and n.incident.start < T0 + timedelta(
        seconds=10)
    [n] = find_nginx_incidents(case("AsyncOpenAI/Python 1.54.0"))
    assert set(n.by_ip["ip"]) == {f"203.0.113.{62 + a}" for a in range(7)}
    # matrix seed 13 #50: the leak's tenth address arrives 1.5 hours after the ninth, a wave of its own by the pause;
    # with the leak's client software, which no known address used, it is the leak's
    late = case("python-requests/2.32.3")
    late.con.execute("""INSERT INTO http_requests (file_id, line_no, time, client_ip, status, method, path, user_agent,
                            body_bytes, request_time)
                        SELECT 2, i, TIMESTAMP '2026-11-09 02:10:00' + i * INTERVAL 13 MINUTE, '198.19.77.5', 200,
                               'POST', '/v1/chat/completions', 'python-requests/2.32.3', 900, 2.5
                        FROM range(20) t(i)""")
    [n] = find_nginx_incidents(late)
    assert set(n.by_ip["ip"]) == {f"203.0.113.{60 + a}" for a in range(9)} | {"198.19.77.5"}


def test_a_newcomer_without_the_leaks_client_software_calling_a_few_times_is_not_the_leaks():
    """Matrix seed 8888 #474: an hour and three quarters of app servers, then nine public addresses never seen arrive
    within 25 minutes and call every quarter hour for six hours, all with python-requests. Among them the office's
    address, new to so short a log, calls five times with langchain, the last two minutes after the leak's end. It
    made more than a fifth of the median newcomer's calls, so it counted as a driver: precision 0.9 and the end 141 s
    late. It never calls with the software that marks the wave and calls under half as often as the median newcomer:
    not the leak's. With the leak's software, or at the leak's rate, it stays the leak's."""
    from forensics.analysis.nginx_incidents import find_nginx_incidents

    def case(office_agent: str, office_calls: int):
        rows = [(T0 + timedelta(seconds=40 + 180 * i), f"10.0.0.{5 + i % 2}", "AsyncOpenAI/Python 1.54.0")
                for i in range(35)]
        start = T0 + timedelta(hours=1, minutes=45)
        rows += [(start + timedelta(minutes=3 * a + 15 * i), f"203.0.113.{60 + a}", "python-requests/2.32.3")
                 for a in range(9) for i in range(24)]
        end = start + timedelta(minutes=24 + 15 * 23)
        step = (end + timedelta(minutes=2) - (start + timedelta(minutes=11))) / (office_calls - 1)
        rows += [(start + timedelta(minutes=11) + step * i, "198.51.100.23", office_agent)
                 for i in range(office_calls)]
        return _nginx_agents_case(rows), start, end
    leak = {f"203.0.113.{60 + a}" for a in range(9)}
    c, start, end = case("langchain/0.3.7", 5)
    [n] = find_nginx_incidents(c)
    assert set(n.by_ip["ip"]) == leak
    assert n.incident.end == end - timedelta(seconds=2.5) and n.incident.requests == 9 * 24   # began 2.5 s before
    for agent, calls in (("python-requests/2.32.3", 5), ("langchain/0.3.7", 20)):
        [n] = find_nginx_incidents(case(agent, calls)[0])
        assert set(n.by_ip["ip"]) == leak | {"198.51.100.23"}


def test_a_stolen_keys_addresses_found_by_two_detectors_are_one_incident():
    """Matrix seed 99 #208: a stolen key spent from four addresses; three surged at 01:25 (the surge rule), the fourth
    arrived at 01:30 when the proxy's rate was already the attack's and was found as a new address of the key on its
    own: two incidents, each with part of the addresses and the cost. One key, overlapping times, both about
    addresses new to it: one incident. Another key's incident at the same time stays its own."""
    from forensics.analysis.incident import Incident
    from forensics.analysis.incidents import _one_key_one_story, request_facts_step
    from forensics.analysis.steps import Step

    start = T0 + timedelta(hours=1, minutes=25)
    rows = [(f"s{i}", start + timedelta(seconds=3 * i), "k" * 64, f"192.0.2.{11 + i % 3}", "success", None, "0.06")
            for i in range(600)]
    rows += [(f"n{i}", start + timedelta(minutes=5, seconds=4 * i), "k" * 64, "203.0.113.28", "success", None, "0.06")
             for i in range(300)]
    rows += [(f"o{i}", start + timedelta(seconds=5 * i), "j" * 64, "203.0.113.99", "success", None, "0.01")
             for i in range(100)]
    c = _case(rows)
    facts = c.run(request_facts_step())

    def incident(name: str, detector: str, prefix: str) -> Incident:
        table = c.run(Step(f"test_{name}", f"SELECT request_id FROM llm_requests WHERE request_id LIKE '{prefix}%'"))
        first, last, n = c.execute(f"SELECT min(start_time), max(start_time), count(*) FROM llm_requests "
                                   f"WHERE request_id LIKE '{prefix}%'").fetchone()
        return Incident(name, "other", "suspicious", detector, first, last, n, table=table)
    found = _one_key_one_story(c, [incident("A", "surge", "s"), incident("B", "new_address", "n"),
                                   incident("C", "new_address", "o")], facts)
    # the key's own past tells the story (addresses it never used), not the proxy's rate
    assert sorted((i.id, i.detector, i.requests) for i in found) == [("A", "new_address", 900),
                                                                     ("C", "new_address", 100)]
    (a,) = [i for i in found if i.id == "A"]
    assert c.execute(f"SELECT count(DISTINCT request_id) FROM {a.table}").fetchone()[0] == 900
    assert (a.start, a.end) == (start, start + timedelta(seconds=3 * 599))


def test_an_offices_afternoon_addresses_are_not_the_start_of_a_leak_at_night():
    """Matrix seed 99 #181: the office's two public addresses first call at 15:02 and 15:53 and now and then until
    late; a leaked key's nine addresses arrive from 19:07 within 40 minutes. With no hour's pause between, all were
    one session of newcomers: the incident started at 15:02 with eleven addresses. Arrivals an hour or more after
    the one before are a wave of their own: the nine."""
    from forensics.analysis.nginx_incidents import find_nginx_incidents

    rows = [(T0 + timedelta(minutes=3 * i), f"10.0.0.{5 + i % 2}", 200) for i in range(12 * 20)]
    rows += [(T0 + timedelta(minutes=30 + 50 * a + 47 * i), f"198.51.100.{23 + a}", 200) for a in range(2)
             for i in range(13)]
    start = T0 + timedelta(hours=4, minutes=37)
    leak = [(start + timedelta(minutes=5 * a + 15 * i), f"203.0.113.{60 + a}", 200) for a in range(9)
            for i in range(24)]
    [n] = find_nginx_incidents(_nginx_case(rows + leak))
    assert set(n.by_ip["ip"]) == {f"203.0.113.{60 + a}" for a in range(9)}
    assert n.incident.start == start - timedelta(seconds=2.5)      # its request began 2.5 s before its line


def test_the_pace_of_answers_comes_from_an_address_calling_one_request_after_the_other():
    """nginx without $request_time (matrix seed 99 #181): a slow leak's address calls every few minutes to half an
    hour at random; five of its short gaps happened to agree per answer byte, and the whole incident was dated seven
    minutes early by that 'pace'. An address whose lines mostly come one answer after the other gives the pace; one
    whose lines mostly come minutes apart does not."""
    from forensics.analysis.nginx_incidents import llm_lines_step, pace_step
    from forensics.api import Case
    from forensics.analysis.steps import Step

    def pace(rows):
        c = Case.memory()
        c.con.register("lines_in", pd.DataFrame(rows, columns=["time", "client_ip", "bytes"]))
        c.con.execute("""INSERT INTO http_requests (file_id, line_no, time, client_ip, status, method, path,
                             user_agent, body_bytes, request_time)
                         SELECT 1, row_number() OVER (ORDER BY time), time, client_ip, 200, 'POST',
                                '/v1/chat/completions', 'python-requests/2.32', bytes, NULL FROM lines_in""")
        lines = c.run(llm_lines_step())
        mine = c.run(Step("mine", f"SELECT * FROM {lines}"))
        return c.execute(f"SELECT * FROM {c.run(pace_step(mine, 1))}").fetchone()
    loop, t = [], T0
    for i in range(30):                       # back to back: each answer 0.02 s a byte after the last
        size = 4000 + 500 * (i % 5)
        t += timedelta(seconds=0.02 * size)
        loop.append((t, "203.0.113.5", size))
    assert pace(loop) == (0.02, 1)
    random, t = [], T0
    for i, minutes in enumerate([1.6, 25, 1.6, 31, 1.6, 18, 1.6, 22, 1.6, 27, 1.6, 35]):
        t += timedelta(minutes=minutes)
        random.append((t, "203.0.113.6", 4800))
    assert pace(random)[1] == 0


def _keyless_office(heavy_days):
    """A proxy with no keys: two app servers all along, and an office's public address that first calls lightly on
    day 1 (one call every 10 minutes from 09:00 to 17:00) and on `heavy_days` calls hard from 08:00 (120 calls in
    30 minutes): the matrix's keyless baseline draws, where the office's morning is a surge over the night."""
    rows = [(r[0], r[1], None, *r[3:]) for r in _baseline()]
    day1 = T0 + timedelta(days=1, hours=9)
    rows += [(f"o{i}", day1 + timedelta(minutes=10 * i), None, "198.51.100.23", "success", None, "0.05")
             for i in range(48)]
    for d in heavy_days:
        start = T0 + timedelta(days=d, hours=8)
        rows += [(f"h{d}-{i}", start + timedelta(seconds=15 * i), None, "198.51.100.23", "success", None, "0.20")
                 for i in range(120)]
    return _case(rows)


def test_a_keyless_surge_from_an_address_seen_calling_before_is_not_an_open_proxy():
    """The same burst is an open proxy being found when its address is new, and the office starting its day when
    the address had been calling before it (matrix seed 3 #461)."""
    found = find_incidents(_keyless_office([2])).incidents
    assert [(i.kind, i.verdict) for i in found] == [("unauthenticated_proxy", "suspicious")]
    rows = [(r[0], r[1], None, *r[3:]) for r in _baseline()]
    start = T0 + timedelta(days=2, hours=8)
    rows += [(f"h{i}", start + timedelta(seconds=15 * i), None, "203.0.113.9", "success", None, "0.20")
             for i in range(120)]
    assert [(i.kind, i.verdict) for i in find_incidents(_case(rows)).incidents] == [("unauthenticated_proxy", "attack")]


def test_a_keys_later_session_from_an_address_it_used_before_is_not_a_leak():
    """A key first used from its app server, then (a day later) from a public address for an hour, and the next day
    from the same address again: the first time is a new address for the key (attack), the second is not news
    (suspicious; matrix seed 3 #209)."""
    rows = _baseline(4)
    for n, day in enumerate((2, 3)):
        start = T0 + timedelta(days=day, hours=10)
        rows += [(f"p{n}-{i}", start + timedelta(minutes=2 * i), "k" * 64, "198.51.100.23", "success", None, "0.01")
                 for i in range(30)]
    found = find_incidents(_case(rows)).incidents
    assert [(i.kind, i.verdict, i.start.day) for i in found] == [("leaked_key", "attack", 11),
                                                                 ("leaked_key", "suspicious", 12)]


def test_nginx_newcomers_leave_out_a_bystander_arriving_with_them():
    """The slow leak of the test above, and an office address first calling once just before it: the office's one
    call is not the leak's (a fifth of the median newcomer's calls), so neither its address nor its time is
    (matrix seed 3 #62, #70)."""
    from forensics.analysis.nginx_incidents import find_nginx_incidents

    rows = [(T0 + timedelta(minutes=3 * i), f"10.0.0.{5 + i % 2}", 200) for i in range(20 * 60)]
    rows += [(T0 + timedelta(hours=h), "198.51.100.7", 200) for h in range(1, 60, 3)]
    start = T0 + timedelta(hours=40)
    leak = [(start + timedelta(minutes=5 * a + 15 * i), f"203.0.113.{60 + a}", 200) for a in range(9)
            for i in range(24)]
    office = [(start - timedelta(minutes=40), "198.51.100.23", 200)]
    [n] = find_nginx_incidents(_nginx_case(rows + office + leak))
    assert set(n.by_ip["ip"]) == {f"203.0.113.{60 + a}" for a in range(9)}
    assert n.incident.start == start - timedelta(seconds=2.5)     # the first call began $request_time before


def test_a_keys_new_internal_server_is_not_the_thief_using_it_from_the_internet():
    """Minutes of history (matrix seed 77 #91, #141, #160): the support-bot key had called from 10.0.0.5 only; a
    stolen copy of it is then spent from five public addresses, and in the same hour its own service's second
    replica (10.0.0.7) makes two calls. Both addresses are new to the key; the replica's calls are its owner's, not
    the thief's: the incident names the five public addresses alone, and its cost is theirs."""
    rows = [(f"a{i}", T0 + timedelta(minutes=i), "k" * 64, "10.0.0.5", "success", None, "0.01") for i in range(20)]
    start = T0 + timedelta(minutes=25)
    rows += [(f"x{i}", start + timedelta(seconds=10 * i), "k" * 64, f"203.0.113.{i % 5}", "success", None, "0.05")
             for i in range(200)]
    rows += [(f"r{i}", start + timedelta(minutes=3 + 7 * i), "k" * 64, "10.0.0.7", "success", None, "0.01")
             for i in range(2)]
    con = _case(rows)
    [inc] = [i for i in find_incidents(con).incidents if i.verdict == "attack"]
    ips = {r[0] for r in con.execute(f"SELECT DISTINCT client_ip FROM llm_requests JOIN {inc.table} "
                                     "USING (request_id)").fetchall()}
    assert ips == {f"203.0.113.{i}" for i in range(5)}
    assert inc.requests == 200


def test_an_office_starting_its_day_a_minute_after_the_logs_is_no_open_proxy():
    """A proxy without keys, logs from 12:47 (matrix seed 77 #360, #419): the data team's two office addresses
    call from 12:49 ($18 an hour of claude), newcomers to logs that began a minute earlier and many times what that
    minute spent. The rest of the proxy spends $90 an hour meanwhile: the office is no surge, and no attack. The
    same addresses calling at eight times the rest of the proxy's rate are one."""
    def rows(office_cost: str):
        out = [("first", T0, None, "10.0.0.5", "success", None, "0.001")]
        out += [(f"i{i}", T0 + timedelta(minutes=5, seconds=10 * i), None, f"10.0.0.{5 + i % 3}", "success", None,
                 "0.25") for i in range(1080)]
        out += [(f"o{i}", T0 + timedelta(seconds=90 + 60 * i), None, f"198.51.100.{23 + i % 2}", "success", None,
                 office_cost) for i in range(180)]
        return out
    assert [i.verdict for i in find_incidents(_case(rows("0.30"))).incidents if i.verdict == "attack"] == []
    [inc] = [i for i in find_incidents(_case(rows("12.00"))).incidents if i.verdict == "attack"]
    assert inc.kind == "unauthenticated_proxy" and inc.requests == 180


def test_a_keys_second_office_address_in_the_network_it_used_is_not_a_leak():
    """The data team's key from 198.51.100.23 for hours, then also from 198.51.100.24 (matrix seed 77 #422): the
    office's other NAT address, in the network the key always used, is its holder's. An address in another
    network is still news."""
    def rows(later: str):
        out = [(f"a{i}", T0 + timedelta(minutes=5 * i), "d" * 64, "198.51.100.23", "success", None, "0.30")
               for i in range(120)]
        return out + [(f"b{i}", T0 + timedelta(hours=8, minutes=2 * i), "d" * 64, later, "success", None, "0.30")
                      for i in range(60)]
    assert [i.verdict for i in find_incidents(_case(rows("198.51.100.24"))).incidents] == []
    [inc] = find_incidents(_case(rows("203.0.113.9"))).incidents
    assert (inc.kind, inc.verdict) == ("leaked_key", "attack")


def test_a_keys_surge_from_new_public_addresses_with_a_client_it_never_used_is_a_leak():
    """Half an hour of history (matrix seed 21 #166): the support-bot key from its two servers with the OpenAI
    client, first seen minutes before (too soon for any address to be new to it); then, at many times the proxy's
    rate, from four public addresses never seen, with python-requests. One short of a leak's spread (five
    addresses), but a holder working from home brings his own client along: a new client from several new addresses
    is a thief's script. The same surge with the key's own client stays suspicious."""
    def case(agent: str):
        rows = [(f"j{i}", T0 + timedelta(seconds=60 * i), "j" * 64, "10.0.0.9", "success", None, "0.02",
                 "OpenAI/Python 1.51.2") for i in range(60)]
        rows += [(f"a{i}", T0 + timedelta(minutes=25, seconds=40 * i), "k" * 64, f"10.0.0.{5 + i % 2}", "success",
                  None, "0.02", "OpenAI/Python 1.51.2") for i in range(9)]
        start = T0 + timedelta(minutes=31)
        rows += [(f"x{i}", start + timedelta(seconds=2 * i), "k" * 64, f"203.0.113.{10 + i % 4}", "success", None,
                  "0.06", agent) for i in range(600)]
        c = _case([r[:7] for r in rows])
        c.con.register("agents", pd.DataFrame([(r[0], r[7]) for r in rows], columns=["request_id", "ua"]))
        c.con.execute("UPDATE llm_requests SET user_agent = a.ua FROM agents a "
                      "WHERE a.request_id = llm_requests.request_id")
        return c
    [inc] = find_incidents(case("python-requests/2.31.0")).incidents
    assert (inc.kind, inc.verdict) == ("leaked_key", "attack")
    [inc] = find_incidents(case("OpenAI/Python 1.51.2")).incidents
    assert (inc.kind, inc.verdict) == ("leaked_key", "suspicious")


def test_an_nginx_surge_that_pauses_is_one_incident_and_its_second_burst_no_empty_one():
    """An open proxy hammered from ten public addresses for five minutes, a twelve-minute pause, five more (matrix
    seed 5 #126): two surge sessions, the first continued over the pause took the second's lines, and the second
    became an incident of no lines and no end (the report crashed). One incident of all 200 calls."""
    from forensics.analysis.nginx_incidents import find_nginx_incidents

    rows = [(T0 + timedelta(minutes=3 * i), f"10.0.0.{5 + i % 2}", 200) for i in range(20 * 20)]
    start = T0 + timedelta(hours=18)
    burst = [(start + timedelta(seconds=3 * i), f"203.0.113.{i % 10}", 200) for i in range(100)]
    burst += [(start + timedelta(minutes=17, seconds=3 * i), f"203.0.113.{i % 10}", 200) for i in range(100)]
    [n] = find_nginx_incidents(_nginx_case(rows + burst))
    assert (n.incident.kind, n.incident.verdict, n.incident.requests) == ("unauthenticated_proxy", "attack", 200)


def test_an_nginx_surges_addresses_calling_before_it_stood_out_open_it():
    """A slow leak seen in nginx alone (matrix seed 55 #440): the leak's first three calls at 19:04 and 19:08, then a
    ten-minute pause, then nine addresses every few seconds. The surge session began at 19:18 and continued forward
    over pauses; its earlier calls, from its own addresses, were left out and the start was 13 minutes late (and the
    start stayed the first session's even where the continuation reached further). They open it."""
    from forensics.analysis.nginx_incidents import find_nginx_incidents

    rows = [(T0 + timedelta(minutes=9 * i), "10.20.1.13", 200) for i in range(140)]
    start = T0 + timedelta(hours=19, minutes=4)
    early = [(start, "203.0.113.112", 200), (start + timedelta(seconds=50), "203.0.113.112", 200),
             (start + timedelta(minutes=4), "198.19.77.115", 200)]
    surge = [(start + timedelta(minutes=14, seconds=30 + 4 * i), f"192.0.2.{i % 9}", 200) for i in range(150)]
    surge += [(start + timedelta(minutes=15, seconds=4 * i + 1), ip, 200) for i, ip in
              enumerate(("203.0.113.112", "198.19.77.115") * 5)]
    [n] = find_nginx_incidents(_nginx_case(rows + early + surge))
    assert n.incident.kind == "unauthenticated_proxy" and n.incident.requests == 163
    assert n.incident.start == start - timedelta(seconds=2.5)     # its first line less $request_time


def test_a_balancers_401_burst_ends_with_the_guessers_client_not_with_everyone_behind_it():
    """nginx behind a balancer that keeps only its own address (matrix seed 11 #246, #330, #431, #494): a script
    guesses keys (python-requests), finds one and spends it, all from 10.0.0.2, like every user behind the
    balancer. The proxy's own users calling on after the script stopped (OpenAI's client; one of them answered
    401 once the day before, an expired key) stretched the incident minutes past the attack: it ends with the
    guessers' client."""
    from forensics.analysis.nginx_incidents import find_nginx_incidents

    def lines(rows):
        c = _nginx_case([r[:3] for r in rows])
        c.con.register("ua_in", pd.DataFrame([(r[0], r[3]) for r in rows], columns=["time", "ua"]))
        c.con.execute("UPDATE http_requests SET user_agent = u.ua FROM ua_in u WHERE u.time = http_requests.time")
        return c
    users = [(T0 + timedelta(minutes=7 * i, seconds=1), "10.0.0.2", 200, "OpenAI/Python 1.54.0") for i in range(400)]
    users += [(T0 + timedelta(hours=20, seconds=2), "10.0.0.2", 401, "OpenAI/Python 1.54.0")]
    start = T0 + timedelta(hours=40)
    guesses = [(start + timedelta(seconds=2 * i, milliseconds=3), "10.0.0.2", 401, "python-requests/2.31.0")
               for i in range(300)]
    spend = [(start + timedelta(minutes=11, seconds=3 * i, milliseconds=5), "10.0.0.2", 200, "python-requests/2.31.0")
             for i in range(400)]
    [n] = find_nginx_incidents(lines(users + guesses + spend))
    assert n.incident.kind == "credential_stuffing"
    assert n.incident.end == spend[-1][0] - timedelta(seconds=2.5)     # its start: the line less $request_time
    # matrix seed 2468 #240: a user's two mistyped keys through the balancer seven minutes before the first guess
    # (langchain, then OpenAI's client) started the burst there (start -452 s); it starts with the guessers' client
    typos = [(start - timedelta(minutes=7, seconds=s), "10.0.0.2", 401, ua)
             for s, ua in ((31, "langchain/0.3.7"), (11, "OpenAI/Python 1.54.0"))]
    [n] = find_nginx_incidents(lines(users + typos + guesses + spend))
    assert n.incident.start == guesses[0][0] - timedelta(seconds=2.5) and n.incident.requests == 700
    # a script that sends another client name with every guess has no software of its own: the burst is everyone's
    rotating = [(t, ip, status, f"agent-{i}") for i, (t, ip, status, _) in enumerate(guesses)]
    [n] = find_nginx_incidents(lines(users + typos + rotating + spend))
    assert n.incident.kind == "credential_stuffing" and n.incident.start == typos[0][0] - timedelta(seconds=2.5)


def test_a_thiefs_first_address_inside_the_keys_grace_joins_the_theft_beside_a_later_batch():
    """Matrix seed 123 #416: 2 h 40 min of logs, so a key's own addresses are those of its first 40 minutes. The
    support-bot key was first used at 00:50 from its server; the thief's first address called 12 s before 01:29,
    inside that grace, the other two after it. The surge of the three newcomers (the proxy's own traffic a few
    dollars meanwhile) takes the first one; a nightly batch of $62 after the theft, which raised the proxy's mean
    rate over the whole case above a quarter of the thieves', is no part of "meanwhile"."""
    rows = [(f"w{i}", T0 + timedelta(minutes=10 * i), "w" * 64, "10.20.1.11", "success", None, "0.05")
            for i in range(16)]
    rows += [(f"s{i}", T0 + timedelta(minutes=m), "s" * 64, "10.20.2.22", "success", None, "0.30")
             for i, m in enumerate((50, 130))]
    rows.append(("a-first", T0 + timedelta(minutes=88, seconds=44), "s" * 64, "203.0.113.251", "success", None,
                 "0.06"))
    for n, ip in enumerate(("203.0.113.251", "192.0.2.161", "192.0.2.232")):
        rows += [(f"t{n}-{i}", T0 + timedelta(minutes=94, seconds=7 * i + n), "s" * 64, ip, "success", None, "0.06")
                 for i in range(330)]
    rows += [(f"b{i}", T0 + timedelta(minutes=138, seconds=5 * i), "b" * 64, "10.20.3.31", "success", None, "0.29")
             for i in range(214)]
    con = _case(rows)
    [inc] = [i for i in find_incidents(con).incidents if i.verdict == "attack"]
    ips = {r[0] for r in con.execute(f"SELECT DISTINCT client_ip FROM llm_requests JOIN {inc.table} "
                                     "USING (request_id)").fetchall()}
    assert ips == {"203.0.113.251", "192.0.2.161", "192.0.2.232"}
    assert inc.requests == 991 and inc.kind == "leaked_key"


def test_a_theft_with_a_batch_in_its_last_minutes_is_still_a_surge():
    """Matrix seed 123 #222: the support-bot key's first call in the logs is the thief's (01:27), three addresses
    spend $97 in an hour; the nightly batch ($44) runs in the theft's last minutes. The rest of the proxy's mean
    rate meanwhile is a third of the thieves' (the batch); its rate in the median quarter hour is a few cents."""
    rows = [(f"w{i}", T0 + timedelta(minutes=10 * i), "w" * 64, "10.20.1.11", "success", None, "0.05")
            for i in range(18)]
    for n, ip in enumerate(("203.0.113.13", "192.0.2.108", "192.0.2.165")):
        rows += [(f"t{n}-{i}", T0 + timedelta(minutes=88, seconds=6 * i + n), "s" * 64, ip, "success", None, "0.06")
                 for i in range(550)]
    rows += [(f"b{i}", T0 + timedelta(minutes=131, seconds=5 * i), "b" * 64, "10.20.3.31", "success", None, "0.276")
             for i in range(161)]
    [inc] = find_incidents(_case(rows)).incidents    # (an attack with the thief's client, which these rows lack)
    assert (inc.detector, inc.kind, inc.requests) == ("surge", "leaked_key", 1650)


def test_an_open_proxy_attack_the_logs_begin_with_takes_its_first_minutes_addresses():
    """Matrix seed 7331 #210 (fresh): a proxy without keys whose spend logs begin with the attack: six public
    addresses call gpt-4 in the logs' first minute, 27 more arrive in the next four, all with curl; the proxy's own
    servers call with their SDK, the nightly batch among them. An address calling in the first minute counts as a
    client from before the logs, so the six were the rest of the proxy "meanwhile", and the 27 newcomers spent
    less than four times what the rest did: no incident at all ("nothing abnormal"). They call with the client
    software of the newcomers, which no address the proxy knew uses: they are the surge's, which the logs begin
    with. When one of the proxy's own servers uses that software too, the first minute's addresses stay clients."""
    def case(server_agent: str):
        rows = [(f"s{i}", T0 + timedelta(seconds=20 + 120 * i), None, "10.20.1.11", "success", None, "0.01")
                for i in range(24)]
        rows += [(f"b{i}", T0 + timedelta(minutes=15, seconds=5 * i), None, "10.20.3.31", "success", None, "0.25")
                 for i in range(200)]
        early = [f"203.0.113.{n}" for n in range(1, 7)]
        late = [f"192.0.2.{n}" for n in range(1, 28)]
        for n, ip in enumerate(early + late):
            first = 8 * n if n < 6 else 60 + 8 * n
            rows += [(f"a{n}-{i}", T0 + timedelta(seconds=first + 75 * i), None, ip, "success", None, "0.30")
                     for i in range((2700 - first) // 75)]
        c = _case(rows)
        c.execute("UPDATE llm_requests SET user_agent = CASE WHEN client_ip = '10.20.3.31' THEN 'AsyncOpenAI/1.54.0' "
                  f"WHEN client_ip = '10.20.1.11' THEN '{server_agent}' ELSE 'curl/8.5.0' END")
        return c, early, late

    def addresses(c) -> set:
        return {ip for inc in find_incidents(c).incidents if inc.verdict == "attack" for (ip,) in c.execute(
            f"SELECT DISTINCT client_ip FROM llm_requests JOIN {inc.table} USING (request_id)").fetchall()}
    c, early, late = case("OpenAI/Python 1.51.2")
    [inc] = [i for i in find_incidents(c).incidents if i.verdict == "attack"]
    assert inc.kind == "unauthenticated_proxy" and inc.start == T0
    assert addresses(c) == set(early + late)
    assert any("from the logs' first minute (nothing before them" in e for e in inc.evidence)
    c, early, late = case("curl/8.5.0")
    assert not addresses(c) & set(early)
