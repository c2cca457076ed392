"""The randomized matrix (issue #12, item 4): the investigation meets its criteria on every drawn deployment.

Each draw is a scenario under a random deployment (which logs exist, in which shape, how much history), simulated,
investigated and checked against truth.json by forensics.simulate.matrix: the attack found within 60 s of its window
(120 s from nginx alone, one bucket from provider data alone), attacker addresses at precision and recall >= 0.95
(0.9 from nginx alone), cost within 0.5 % (10 % from provider data alone), a benign batch never an attack, no attack
in a baseline-only draw. `python bench/matrix.py --draws 500` prints a table of every draw, failure rates per group
and the worst draws; the slow tier runs 50 draws; the default tier checks the checker.
"""
from __future__ import annotations

import pandas as pd
import pytest

from forensics.simulate import matrix

SEED = 0
def test_criteria_on_a_hand_made_finding():
    """The checker itself: a finding that matches truth passes, each criterion fails on its own."""
    truth = {"scenario": "open_proxy", "incidents": [{
        "kind": "unauthenticated_proxy", "verdict": "attack", "start": "2026-11-16T02:00:05Z",
        "end": "2026-11-16T02:45:00Z", "cost_usd": "347.23", "attacker_ips": ["203.0.113.5", "192.0.2.7"],
        "observable_attacker_ips": ["203.0.113.5", "192.0.2.7"],
        "seen_by": {"nginx": {"start": "2026-11-16T02:00:05Z", "end": "2026-11-16T02:45:00Z",
                              "client_ips": ["203.0.113.5", "192.0.2.7"]},
                    "provider": {"start": "2026-11-16T02:00:05Z", "end": "2026-11-16T02:44:00Z",
                                 "cost_usd": "347.23", "bucket": "1h"}}}]}
    good = {"verdict": "attack", "kind": "unauthenticated_proxy", "start": "2026-11-16T02:01:30Z",
            "end": "2026-11-16T02:46:00Z", "cost_usd": 330.0,
            "ips": [{"ip": "203.0.113.5"}, {"ip": "192.0.2.7"}]}
    reasons, metrics = matrix.check(truth, {"incidents": [good]})
    assert reasons == [] and metrics["basis"] == "nginx" and metrics["tolerance_s"] == 120
    late = good | {"start": "2026-11-16T02:03:00Z"}
    assert matrix.check(truth, {"incidents": [late]})[0][0].startswith("start off by +175 s")
    one_ip = good | {"ips": [{"ip": "203.0.113.5"}]}
    assert "recall 0.50" in matrix.check(truth, {"incidents": [one_ip]})[0][0]
    cheap = good | {"cost_usd": 300.0}
    assert "tolerance 10 %" in matrix.check(truth, {"incidents": [cheap]})[0][0]
    extra = good | {"start": "2026-11-13T02:00:00Z", "end": "2026-11-13T03:00:00Z"}
    assert matrix.check(truth, {"incidents": [good, extra]})[0][0].startswith("extra attack incident")
    assert matrix.check(truth, {"incidents": [good | {"verdict": "suspicious"}]})[0][0].startswith("attack not found")
    quiet = {"scenario": "benign_batch", "incidents": [{"kind": "volume_spike", "verdict": "benign"}]}
    assert matrix.check(quiet, {"incidents": [good]})[0][0].startswith("benign batch called an attack")


def test_provider_data_alone_may_say_suspicious_within_one_bucket():
    """Only the provider's hourly export sees it: a `suspicious` spike counts (a planned batch and abuse look alike
    there), judged against the truth at the export's resolution (02:00..03:00 for 02:00:05..02:44), one bucket of
    slack; an hour more each side is still one bucket, two hours are not."""
    truth = {"scenario": "provider_key_outside_proxy", "incidents": [{
        "kind": "provider_key_outside_proxy", "verdict": "attack", "start": "2026-11-16T02:00:05Z",
        "end": "2026-11-16T02:44:00Z", "cost_usd": "100",
        "seen_by": {"provider": {"start": "2026-11-16T02:00:05Z", "end": "2026-11-16T02:44:00Z",
                                 "cost_usd": "100", "bucket": "1h"}}}]}
    spike = {"verdict": "suspicious", "kind": "other", "start": "2026-11-16T02:00:00Z", "end": "2026-11-16T03:00:00Z",
             "cost_usd": 104.0, "ips": []}
    reasons, metrics = matrix.check(truth, {"incidents": [spike]})
    assert reasons == [] and metrics["basis"] == "provider" and metrics["start_err_s"] == 0
    wider = spike | {"start": "2026-11-16T01:00:00Z", "end": "2026-11-16T04:00:00Z"}
    assert matrix.check(truth, {"incidents": [wider]})[0] == []
    too_wide = spike | {"end": "2026-11-16T05:00:00Z"}
    assert matrix.check(truth, {"incidents": [too_wide]})[0][0].startswith("end off by +7200 s")
    # another key's day-long spike listed first covers the attack's hour as fully: the tighter incident is the match
    # (matrix seed 5 #238: the minute-by-minute incident was right, the checker took the day)
    day = spike | {"start": "2026-11-16T00:00:00Z", "end": "2026-11-17T00:00:00Z", "cost_usd": 150.0}
    assert matrix.check(truth, {"incidents": [day, spike]})[0] == []


def test_daily_totals_without_a_whole_day_of_the_attacks_kind_are_judged_by_window_not_cost():
    """A Monday attack in an export of daily buckets whose history is a part Friday and a weekend (matrix seeds 5
    #163, #245, 11 #200): the key's own Monday is in no total the export holds (its work ran at two or three times
    the weekend's level). The truth says so (`cost_determined`, whole days of each kind the attack touches outside
    it); the checker still asks for the spike within a day and measures its cost, but does not fail it on cost.
    A whole Friday makes the cost judged again; finer buckets always are."""
    from forensics.simulate.catalog import Window
    from forensics.simulate.randomized import provider_cost_determined

    def us(iso: str) -> int:
        return int(pd.Timestamp(iso).value // 1000)
    attack = us("2026-11-16T00:52:00Z"), us("2026-11-16T02:09:00Z")
    part_friday = Window(us("2026-11-13T12:00:00Z"), attack[0], us("2026-11-17T02:00:00Z"))
    assert not provider_cost_determined(part_friday, "1d", *attack)
    assert provider_cost_determined(part_friday, "1h", *attack)
    whole_friday = Window(us("2026-11-12T18:00:00Z"), attack[0], us("2026-11-17T02:00:00Z"))
    assert provider_cost_determined(whole_friday, "1d", *attack)
    saturday = us("2026-11-14T22:06:00Z"), us("2026-11-15T01:35:00Z")    # weekdays alone before a weekend attack
    assert not provider_cost_determined(Window(us("2026-11-12T00:00:00Z"), saturday[0], us("2026-11-16T00:00:00Z")),
                                        "1d", *saturday)

    seen = {"start": "2026-11-16T00:52:00Z", "end": "2026-11-16T02:09:00Z", "cost_usd": "54.59", "bucket": "1d"}
    truth = {"scenario": "key_stuffing", "incidents": [{
        "kind": "credential_stuffing", "verdict": "attack", "start": seen["start"], "end": seen["end"],
        "cost_usd": "54.59", "seen_by": {"provider": seen | {"cost_determined": False}}}]}
    spike = {"verdict": "suspicious", "kind": "other", "start": "2026-11-16T00:00:00Z", "end": "2026-11-17T00:00:00Z",
             "cost_usd": 166.68, "ips": []}
    reasons, metrics = matrix.check(truth, {"incidents": [spike]})
    assert reasons == [] and metrics["cost_undetermined"] and round(metrics["cost_err_pct"]) == 205
    wide = spike | {"start": "2026-11-14T00:00:00Z"}
    assert matrix.check(truth, {"incidents": [wide]})[0] == ["start off by -172800 s (tolerance 86400 s, provider)"]
    truth["incidents"][0]["seen_by"]["provider"]["cost_determined"] = True
    assert matrix.check(truth, {"incidents": [spike]})[0][0].startswith("cost $166.68 vs $54.59")
    # the bench lists those draws with their measured error
    draw = matrix.draws(1, 0)[0]
    table = matrix.undetermined_table([matrix.Result(draw, metrics=metrics), matrix.Result(draw)])
    assert table.count("\n") == 2 and "| +205.3 % | yes |" in table


@pytest.mark.slow
def test_the_randomized_matrix_meets_the_criteria_on_50_draws():
    """Issue #12's acceptance in CI: 50 randomized draws (scenario, seed, deployment), simulated, investigated and
    checked against truth. `python bench/matrix.py --draws 500` runs the same over more draws."""
    results = matrix.run(50, seed=SEED, jobs=2)
    assert all(r.ok for r in results), matrix.failure_message(results)


# Draws of seeds nobody had tuned against that failed at the start of session 6 (seed 1: 55/60, seed 2: 48/60), each
# for its own cause: a partly covered last daily bucket, a spike filling most of a short export, the proxy's own key
# outspent by its attacker, a nightly batch after a spike, a slow leak's second part after a pause, the first
# minutes of an open proxy, remote employees at the start of a short log, a balancer calling on after a 401 burst.
# Seed 3's 500-draw bench at the start of session 7 (468/500): a model new to the key beside the nightly batch in
# one hour, a batch through the proxy nginx shows inside a spike of use outside it, a new key's thin tail, a spike
# whose rate sagged, a script's ramp, an office address arriving just before a slow leak, a keyless office starting
# its day, a key's later session from an address it had used (373, 471: the batch a usual of its slot on other
# nights, and a key the proxy never uses, found by the first bench of the fixes).
# Issue #12's provider-export failures after session 7 (seed 3: 496/500; seed 21, never tuned against: 483/500): a
# spike's first minute in the short export's only preceding quarter (14), a key test before a stuffed key's script
# (388; 21: 275, 288, 330), an hour or a day holding the spike's calls beside a batch or the key's own (144; 21: 68,
# 440, 451), a thin first minute beside two large calls (21: 8), a second key's part hours under the floor (21: 256),
# an nginx incident priced by the provider's calls per model (21: 274, 382); 310 a usual call taken for a key test
# by a first version of the rule.
# Session 10 (seed 21: 492/500; seed 77, fresh: 481/500): an edge hour beside the nightly batch (21: 458) and its
# two-hour spike (21: 109), split by output tokens; weekend days after weekday history, and a Monday after weekend
# history, by the key's other models (21: 141, 234, 307, 433; 77: 80, 487); a batch at or after the spike's end (77:
# 26, 45, 97, 173, 204; 21: 292); a spike split at the batch's hour (77: 381); the key's own calls or first calls at
# a spike's start (77: 202, 326; 21: 202); the export opening inside a spike (77: 295); nginx-priced calls capped per
# minute (77: 302); a key's new internal replica, its office's other address, an office arriving after the logs'
# first minute (77: 91, 141, 160, 422, 360, 419); a stolen key from four addresses with a new client (21: 166).
# Seed 5 (fresh: 493/500): a surge session emptied by an earlier one's continuation (126), a slow script's last
# call after a quiet minute (178, 420), the export ending while a spike runs down (329), the checker's tie between
# a day-long spike of another key and the attack's own incident (238). Seed 11 (fresh: 488/500): a 401 burst behind a
# balancer stretched by the users behind it (246, 330, 431, 494).
# Session 11 (seed 42, fresh: 497/500): a leak already running when the logs begin (103), an attack at night joined
# to the office's morning by hours of cents over a usual of nothing (5). Seed 11: a bucket split by output cut as the
# proxy's surge (190), a Monday's usual from a whole week (278), a weekend attack under twice the weekday usual in
# daily buckets (363), the proxy's own key used past the end of its logs (194, 205); Mondays after a part Friday and
# a weekend, whose cost daily totals do not determine (11: 200; 5: 163, 245). Seed 13 (fresh: 497/500): a second key
# starting minutes into a short export searched by quarter hours (74), an office address calling once hours later
# counted among a slow leak's newcomers in nginx (152), a slow leak already running when the nginx log begins (259),
# the leak's last address arriving an hour and a half after the others (50).
# A stuffing script's probe in the minute of the key's own call, which the provider's totals cannot show (the
# truth's provider start is the first call they show: 21: 233; 42: 451). Seed 77 again: a weekend's first day in the
# usual of its second (80), the probe's minute taken by the tool (97). Seed 8 (fresh: 497/500): an hour of the
# attack beside the nightly batch whose calls drifted less than MIXED_FACTOR (15). Seed 99 (fresh: 496/500): a stolen key's addresses found by two detectors (208), an office's afternoon
# addresses in a slow leak's wave at night and a pace from a leak's random calls (181), a weekend attack's Saturday
# against a usual of part days (203).
# Session 13 (seed 55 on session 12's code: 496/500; seed 2026, fresh: 497/500): a Sunday's nightly batch beside the
# attack's hour against a weekday's (55: 4), an attack refined to the larger batch half an hour later (336), the key's
# own small calls read as a key test (365), a slow leak's first calls before its nginx surge (440); a slow script's
# last calls after the nightly batch (8: 355); a second key's thinning tail cut at a neighbouring quarter hour (2026:
# 49), the batch's minutes after a stuffing script split into a call or two of it (464); the proxy's own call of a
# model new to its key minutes after the attack (11: 116; 8: 198); the nightly batch inside an attack on an export
# of minutes before it, nginx showing the batch (2026: 427); the nightly batch's minutes after an attack, split to a
# call or two of it by a rule tried and dropped the same session (55: 271; 2026: 31, 32, 276).
# Session 15 (seed 4242 #297 on session 14's code; seeds 31337 and 8086, fresh: 498 and 497/500): an hour 94.9 % the
# attack's by nginx's line times, 100 % by its calls' start (4242: 297); behind a balancer, the guessers' calls
# counted by their client software (31337: 435); the attack's tail after its spike taken as the key's own output
# (305); a key's own calls a quarter hour before a leak taken for its start (8086: 161); the batch's hour split by
# output though not on top of the spike (217) or not towards it by size (490); a day of the key's own calls nearly
# all the attack's, the rest priced in its calls (4242: 162, a regression of the balancer rule, found by re-running).
# Sessions 16-17 (seeds 2718, 9001, 5151 and 7331, fresh: 499/500 each; 6007, fresh: 498/500): a slow leak among
# the key's own calls, which seemed to write like it, found 37 minutes late (2718: 215); a crash on an empty median
# (9001: 187); a leak's first calls linked back five minutes at most, ended by three minutes that wrote like the
# key's own (5151: 335); the key's nightly batch inside a leak on a model new to it (6007: 89); a leak's first
# minutes in the quarter hour before it stood out taken as the usual (319); a keyless proxy's logs beginning with
# the attack, its first minute's addresses taken for clients from before them: no incident (7331: 210).
UNTUNED_DRAWS = {0: (148,), 1: (14, 29, 34, 59), 2: (0, 5, 8, 23, 24, 34, 38, 41, 47, 48, 50),
                 3: (42, 62, 70, 77, 88, 93, 101, 111, 114, 147, 179, 209, 273, 318, 341, 387, 407, 451, 461, 463,
                     484, 498, 373, 471, 14, 144, 388, 310),
                 21: (8, 68, 256, 274, 275, 288, 330, 382, 440, 451, 109, 141, 166, 202, 234, 292, 307, 433, 458,
                      233),
                 77: (26, 45, 80, 91, 97, 141, 160, 173, 202, 204, 295, 302, 326, 360, 381, 419, 422, 425, 487),
                 5: (126, 178, 238, 329, 420, 163, 245),
                 11: (246, 330, 431, 494, 190, 194, 200, 205, 278, 363, 116, 19),
                 42: (5, 103, 451),
                 13: (74, 152, 259, 50),
                 8: (15, 355, 198),
                 99: (181, 203, 208, 156, 266),
                 123: (5, 92, 218, 222, 319, 416, 469, 482),
                 7: (208,),
                 31: (20, 316, 438),
                 55: (25, 4, 336, 365, 440, 271),
                 2026: (49, 464, 427, 31, 32, 276),
                 777: (20, 45, 282),
                 4242: (189, 438, 145, 297, 162),
                 31337: (305, 435),
                 8086: (161, 217, 490),
                 2718: (215,),
                 9001: (187,),
                 5151: (335,),
                 6007: (89, 319),
                 7331: (210,),
                 8888: (474,),
                 2468: (184, 240),
                 7777: (61,),
                 6161: (347,),
                 1234: (115,),
                 1357: (42,),
                 8642: (113,),
                 2222: (181,)}


@pytest.mark.slow
@pytest.mark.parametrize("seed", sorted(UNTUNED_DRAWS))
def test_draws_that_failed_on_untuned_seeds_meet_the_criteria(seed):
    todo = matrix.draws(max(UNTUNED_DRAWS[seed]) + 1, seed)
    results = [matrix.run_draw(todo[i]) for i in UNTUNED_DRAWS[seed]]
    assert all(r.ok for r in results), matrix.failure_message(results)


def _investigated(seed: int, index: int, tmp_path) -> tuple[dict, dict]:
    """One matrix draw simulated into tmp_path and investigated as run_draw does: (truth, findings)."""
    from forensics.api import Case
    from forensics.outputs import findings as findings_out
    from forensics.simulate.simulation import simulate
    from forensics.sources.interface import LoadOptions

    draw = matrix.draws(index + 1, seed)[index]
    dep = draw.deployment
    truth = simulate(draw.scenario, tmp_path / "logs", seed=draw.seed, deployment=dep)
    options = LoadOptions(nginx_format=dep.nginx_log_format if dep.nginx_format == "custom" else None)
    with Case.from_inputs([tmp_path / "logs"], tmp_path / "out", options) as case:
        return truth, findings_out.build(case.investigate())


def test_a_key_the_proxy_never_used_is_followed_past_the_end_of_its_logs(tmp_path):
    """Seed 3, draw 349: a second OpenAI key used outside the proxy until 03:17, the proxy's last logged request at
    03:09 (its spend logs simply end). The reconciliation stopped at the proxy's last log, so the incident ended at
    03:10 and missed $4.45; a key the proxy did not use while it logged is outside it whether or not the proxy logged,
    so its use is counted to the end of the provider's export, and the evidence says where the proxy's logs end."""
    truth, findings = _investigated(3, 349, tmp_path)
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [] and metrics["end_err_s"] == 0 and abs(metrics["cost_err_pct"]) < 0.01
    (inc,) = [i for i in findings["incidents"] if i["verdict"] == "attack"]
    assert inc["end"] == "2026-11-15T03:18:00Z"
    assert any("after the proxy's logs end (its last request, 2026-11-15 03:09:" in e for e in inc["evidence"])


@pytest.mark.parametrize("index", [127, pytest.param(390, marks=pytest.mark.slow)])
def test_nginx_without_request_time_dates_requests_from_the_pace_of_their_answers(index, tmp_path):
    """Seed 3, draws 127 and 390: an open proxy in nginx `main` / `combined` format (no $request_time), each line
    written when a 4,000-token answer ended, 1-2 minutes after its request began: the window ran 111-126 s late.
    Addresses that send each request when the previous answer arrived time their requests: the window is set back by
    each answer's bytes at that pace, an estimate the evidence states."""
    truth, findings = _investigated(3, index, tmp_path)
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [], reasons
    assert abs(metrics["start_err_s"]) < 60 and abs(metrics["end_err_s"]) < 60
    (inc,) = [i for i in findings["incidents"] if i["verdict"] == "attack"]
    assert any("logs no $request_time" in e and "an estimate" in e for e in inc["evidence"])


def test_an_address_joining_a_slow_leak_later_with_its_client_software_is_one_of_its_addresses(tmp_path):
    """Seed 3, draw 277: a leaked key used from 9 new public addresses over 7 hours, nginx only (with the provider's
    hourly export); the 9th first called 75 minutes in, after a 10-minute pause had ended the surge's first session,
    and was left out (recall 0.89). A public address never seen before that joins during the campaign with the
    campaign's own client software, never refused, is one of its addresses."""
    truth, findings = _investigated(3, 277, tmp_path)
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [] and metrics["recall"] == 1.0 and metrics["precision"] == 1.0


@pytest.mark.parametrize("index", [23, pytest.param(323, marks=pytest.mark.slow)])
def test_a_batch_of_long_documents_on_the_attacked_key_is_not_the_attack(index, tmp_path):
    """Seed 3, draws 23 and 323: the proxy's own OpenAI key used outside it for hours, provider data alone
    (per-minute usage), the proxy's nightly batch on the same key and model at 02:15, no earlier night in the export
    to call it usual. Inside the spike (23) it added $25 (+11.5 %); just after it (323) it stretched the spike by 22
    minutes (+13 %). Its calls carry ~110k input tokens each against the attacker's ~26k: another workload, cut off
    at the spike's edges and taken at the spike's level inside it, as the evidence says."""
    truth, findings = _investigated(3, index, tmp_path)
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [], reasons
    assert abs(metrics["cost_err_pct"]) < 5 and metrics["end_err_s"] == 0
    (inc,) = [i for i in findings["incidents"] if i["sources"] == ["openai"]]
    assert any("hold calls of another size" in e for e in inc["evidence"])


@pytest.mark.slow
def test_a_daily_spike_beside_an_nginx_attack_leaves_the_proxy_its_own_calls(tmp_path):
    """Seed 3, draw 224: credential stuffing through the proxy on a Monday, nginx (combined) plus the provider's
    daily buckets, from a Saturday evening on. The day's usual was the other days' spend (a partial Saturday, a
    Sunday), so the Monday's office traffic counted as the attack's: +68.8 %. The proxy's other served calls that day
    (nginx, the attackers' addresses left out) at the spend per call of the whole day nginx covers were its usual:
    -13.6 %. Now the provider's own calls per model price it: the key's gpt-4o calls that day less the 1,489 nginx
    served the attackers, and its gpt-4o-mini calls, at each model's spend per call on the other days. +10.9 %, still
    outside the matrix's 10 %: the Monday's other gpt-4o calls cost $0.218 each, the other days' $0.191."""
    truth, findings = _investigated(3, 224, tmp_path)
    _, metrics = matrix.check(truth, findings)
    assert abs(metrics["cost_err_pct"]) < 12
    (inc,) = [i for i in findings["incidents"] if i["verdict"] == "attack"]
    assert any("served call(s) nginx shows are taken as gpt-4o's" in e for e in inc["evidence"])


@pytest.mark.slow
def test_large_first_calls_on_a_key_only_the_attacker_uses_are_the_attack(tmp_path):
    """Seed 3, draw 20: a second OpenAI key used only outside the proxy, whose first minutes hold a few calls of
    ~75k input tokens. On a key that usually spends nothing nobody else's workload shares the spike, and a few large
    calls where it is thin are its own: its start stays (the other-workload rule once cut two minutes off it)."""
    truth, findings = _investigated(3, 20, tmp_path)
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [] and metrics["start_err_s"] == 0


def test_an_attacks_served_calls_count_in_the_hour_they_began(tmp_path):
    """Matrix seed 4242 #297: credential stuffing through the proxy from 00:57 to 02:25, nginx (ingress format, with
    $request_time) and the provider's hourly export; the nightly batch (~120k-token gpt-4o calls) through the proxy
    from 02:00. nginx writes a line when a call ends, 38 s on average here, and the provider counts the call when
    it began: by nginx's times 557 of the 587 gpt-4o calls of 01:00 were the attack's (94.9 %), so no hour was nearly
    all the attack's and the batch's calls were priced at the key's average call: +24.6 %. Counted in the hour each
    call began (its line's time less $request_time), 01:00 is the attack's and prices its calls: +1.1 %."""
    truth, findings = _investigated(4242, 297, tmp_path)
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [] and abs(metrics["cost_err_pct"]) < 3, (reasons, metrics)
    (inc,) = [i for i in findings["incidents"] if i["verdict"] == "attack"]
    assert any("where they were nearly all the incident's (1 bucket(s)" in e for e in inc["evidence"])


def test_the_keys_own_calls_in_a_day_nearly_all_the_attacks_are_priced_as_its_own(tmp_path):
    """Matrix seed 4242 #162: credential stuffing behind a balancer (nginx `combined`: the balancer's address, no
    $request_time), the provider's daily export. Counted by the guessers' own lines, 2,209 of the day's 2,289 gpt-4o
    calls were the attack's: nearly all, so the day priced its calls, the key's own 80 (three times the attack's
    size) in that price (+10.6 %). They are priced at the key's usual call on the other days and left out (+1.2 %)."""
    truth, findings = _investigated(4242, 162, tmp_path)
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [] and abs(metrics["cost_err_pct"]) < 3, (reasons, metrics)
    (inc,) = [i for i in findings["incidents"] if i["verdict"] == "attack"]
    assert any("(1 bucket(s), 2,289 calls; the other 80 at $" in e for e in inc["evidence"])


def test_guessed_keys_calls_behind_a_balancer_are_counted_by_their_client_software(tmp_path):
    """Matrix seed 31337 #435 (fresh): credential stuffing through the proxy behind a balancer whose nginx log
    ("timings") keeps only the balancer's address, and the provider's hourly export. The guessers' lines are told by
    their client software (the auth-burst rule), but the provider's spend was only prorated by time: the attack's
    served calls began half an hour after its 401s, so its hour of spend was cut to the minutes nginx shows the
    campaign in (-33.5 %). Its own lines' served calls per hour price it as an attack's from public addresses is."""
    truth, findings = _investigated(31337, 435, tmp_path)
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [] and abs(metrics["cost_err_pct"]) < 2, (reasons, metrics)
    (inc,) = [i for i in findings["incidents"] if i["verdict"] == "attack"]
    assert any("nearly all the incident's" in e for e in inc["evidence"])


def test_a_slow_leak_found_late_starts_at_its_first_call_and_leaves_the_usual(tmp_path):
    """Matrix seed 2718 #215 (fresh): a provider key used outside the proxy from 22:06, one or two calls a minute
    among the key's own for 37 minutes, then faster until 02:29; per-minute export alone, from 21:53. The spike stood
    out at 22:43 (start +37 min), and its usual was the median quarter hour of a history that was mostly the leak:
    $0.07 a minute against the key's own $0.017 (-23 %). The key's own calls write apart from the leak's (1-3 % output
    against 9 %): its first calls are followed back to 22:06, and those quarter hours leave the usual."""
    truth, findings = _investigated(2718, 215, tmp_path)
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [] and metrics["start_err_s"] == 0 and abs(metrics["cost_err_pct"]) < 2, (reasons, metrics)
    (inc,) = findings["incidents"]
    assert any("its first calls come in 18 bucket(s) from 22:06 UTC" in e for e in inc["evidence"])


def test_an_attacks_tail_after_its_spike_is_not_the_keys_own_output(tmp_path):
    """Matrix seed 31337 #305 (fresh): a provider key used outside the proxy from 22:10 to 04:04, the hourly export
    alone from 20:46, the nightly batch at 02:00. The spike's buckets ended at 03:00; the hour after it (the attack's
    last 15 calls) and the one hour before were the key's own calls' reference: their output a token of input came
    out near the spike's, so the batch's hour could not be split by output and counted whole (+17.7 %). The bucket
    next to the spike that writes like it is its tail, not the key's reference: 251 of the 313 calls of 02:00 are
    the attack's by output (+2.3 %)."""
    truth, findings = _investigated(31337, 305, tmp_path)
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [] and abs(metrics["cost_err_pct"]) < 5, (reasons, metrics)
    (inc,) = findings["incidents"]
    assert any("its bucket at 2026-11-15 02:00 holds calls of two sizes" in e for e in inc["evidence"])


@pytest.mark.parametrize("index, bucket", [(217, "2026-11-15 02:00"), (490, "2026-11-15 02:00")])
def test_the_attacks_hour_beside_the_nightly_batch_is_split_by_output(index, bucket, tmp_path):
    """Matrix seed 8086 (fresh), hourly provider exports alone, the proxy's nightly batch at 02:00 beside the leak.
    #217: the leak slowing as the batch started, 343 calls against its median hour's 386, so not "on top" of the
    spike and not split: the batch counted whole (+10.7 %). #490: the leak's last quarter hour in the batch's hour
    after its spike, the hour's calls 57k tokens against the leak's 27k and the key's usual 69k, not "towards" the
    leak by size: missed (-10.8 %). Their output a token of input (half the leak's) splits both."""
    truth, findings = _investigated(8086, index, tmp_path)
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [] and abs(metrics["cost_err_pct"]) < 3, (reasons, metrics)
    (inc,) = [i for i in findings["incidents"] if "openai" in i["evidence"][0]]
    assert any(f"its bucket at {bucket} holds calls of two sizes" in e and "split by their output tokens" in e
               for e in inc["evidence"])


def test_a_monday_spike_after_a_weekend_of_daily_history_says_its_cost_is_an_estimate(tmp_path):
    """Matrix seed 5 #163: daily buckets from a part Saturday to a part Tuesday, a stuffed key spent on the Monday.
    No other whole weekday in the export: the report says the spike's cost is an estimate and what would settle it
    (the truth says the cost is not determined there). Seed 11 #278, five weekdays of history before the Monday:
    no such line, and the cost within 10 %."""
    truth, findings = _investigated(5, 163, tmp_path / "a")
    assert not truth["incidents"][0]["seen_by"]["provider"]["cost_determined"]
    (monday,) = [i for i in findings["incidents"] if i["start"].startswith("2026-11-15")
                 and "openai" in i["evidence"][0]]
    assert any("Monday 2026-11-16 with" in e and "an estimate, not a measurement" in e for e in monday["evidence"])
    truth, findings = _investigated(11, 278, tmp_path / "b")
    reasons, metrics = matrix.check(truth, findings)
    assert reasons == [] and "cost_undetermined" not in metrics
    assert not any("an estimate, not a measurement" in e for i in findings["incidents"] for e in i["evidence"])


def test_a_probe_beside_the_keys_own_call_in_one_minute_is_not_what_the_provider_shows_first():
    """Matrix seeds 21 #233, 42 #451: the stuffing script's hit (a 12-token gpt-4o call) at 01:23:01 in the minute
    of one of the key's own 62,503-token calls, the script's spending from 01:25. The per-minute totals hold two
    calls and the own call's tokens: nothing there shows the probe, and the provider's view of the attack starts at
    01:25 (or at the probe, where the key's own calls there look like the attack's: the checker takes either). Alone
    in its minute, or beside a call of another model, it is shown (the key test the tool finds)."""
    from forensics.simulate.randomized import provider_hidden

    def us(iso: str) -> int:
        return int(pd.Timestamp(iso).value // 1000)
    billed = pd.DataFrame({"t_start": [us("2026-11-16T01:23:01Z"), us("2026-11-16T01:25:10Z")],
                           "provider": "openai", "model": "gpt-4o", "prompt": [12, 24_000]})
    own = pd.DataFrame({"t_start": [us("2026-11-16T01:23:40Z"), us("2026-11-16T01:25:30Z")], "outcome": "ok",
                        "provider": "openai", "model": "gpt-4o", "prompt": [62_503, 50_000]})
    assert provider_hidden(billed, own, "1m").tolist() == [True, False]
    assert provider_hidden(billed, own.assign(model="gpt-4o-mini"), "1m").tolist() == [False, False]
    assert provider_hidden(billed, own.iloc[1:], "1m").tolist() == [False, False]

    seen = {"start": "2026-11-16T01:23:01Z", "shown_start": "2026-11-16T01:25:10Z", "end": "2026-11-16T02:09:00Z",
            "cost_usd": "63.72", "bucket": "1m"}
    truth = {"scenario": "key_stuffing", "incidents": [{
        "kind": "credential_stuffing", "verdict": "attack", "start": seen["start"], "end": seen["end"],
        "cost_usd": "63.72", "seen_by": {"provider": seen}}]}
    spike = {"verdict": "suspicious", "kind": "other", "start": "2026-11-16T01:25:00Z", "end": "2026-11-16T02:10:00Z",
             "cost_usd": 64.39, "ips": []}
    assert matrix.check(truth, {"incidents": [spike]})[0] == []
    assert matrix.check(truth, {"incidents": [spike | {"start": "2026-11-16T01:23:00Z"}]})[0] == []
    assert matrix.check(truth, {"incidents": [spike | {"start": "2026-11-16T01:28:00Z"}]})[0] == [
        "start off by +180 s (tolerance 60 s, provider)"]
