"""Provider spikes on series shaped like the simulator's exports (forensics/simulate/provider_writer.py): a per-minute
usage export of a few hours, and a daily one whose last day is the day the evidence was collected."""
from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest

from forensics.analysis.provider_spikes import covered_share, series_spikes

MINUTE = pd.Timedelta(minutes=1)
T0 = pd.Timestamp("2026-11-14 21:45")


def minutes(costs: list[float]) -> dict:
    return {T0 + i * MINUTE: Decimal(str(c)) for i, c in enumerate(costs)}


def test_a_spike_filling_most_of_a_short_export_is_found_whole():
    """22 quiet minutes, then a leaked key's script spends for 3.5 hours: the spike is most of the export, so the
    median of its busy buckets is the spike itself. The preceding window is the usual; the spike starts and ends
    at its own minutes."""
    quiet, attack, after = [0.05] * 22, [0.6 + 0.3 * ((i // 30) % 3) for i in range(210)], [0.05] * 16
    _, spans = series_spikes(minutes(quiet + attack + after), MINUTE)
    assert spans == [(T0 + 22 * MINUTE, T0 + (22 + 209) * MINUTE)]


def test_a_spike_rising_inside_a_short_exports_first_quarter_hour_is_found():
    """Matrix seed 2222 #181 (per-minute usage, the key's first row 5 minutes before a leak): the key's gpt-4o-mini
    calls for five minutes, then a leak's gpt-4o calls for 3.5 hours, then the key's own again. The first quarter
    hour held the leak's first ten minutes and was the preceding window of every other: nothing was found at all.
    Its minutes before the rise are its usual. A key spending steadily, its minutes varying, shows no rise."""
    t0 = pd.Timestamp("2026-11-14 22:15")
    costs = [0.0001, 0.0, 0.0002, 0.0, 0.0001] + [0.55 + 0.2 * (i % 3) for i in range(209)] + [0.0001, 0.0] * 2
    _, spans = series_spikes({t0 + i * MINUTE: Decimal(str(c)) for i, c in enumerate(costs)}, MINUTE)
    assert spans == [(t0 + 5 * MINUTE, t0 + 213 * MINUTE)]
    steady = [0.3 if i % 5 == 0 else 0.55 + 0.2 * (i % 3) for i in range(220)]
    assert series_spikes({t0 + i * MINUTE: Decimal(str(c)) for i, c in enumerate(steady)}, MINUTE)[1] == []


def test_a_quiet_stretch_ends_a_spike_and_what_follows_is_another():
    """A spike, half an hour with nothing, then a nightly batch: the refined spike stops at its last minute and never
    reaches the batch, which is a spike of its own."""
    costs = [0.05] * 60 + [2.0] * 90 + [0.0] * 30 + [3.0] * 6 + [0.05] * 30
    _, spans = series_spikes(minutes(costs), MINUTE)
    assert spans[0] == (T0 + 60 * MINUTE, T0 + 149 * MINUTE)
    assert all(first >= T0 + 180 * MINUTE for first, _ in spans[1:])


def test_a_spike_is_refined_inside_its_own_window_not_the_larger_one_beside_it():
    """Matrix seed 55 #336 (per-minute usage of 19 hours): a stolen key used through the proxy for 36 minutes ($52),
    then 26 quiet minutes with the key's odd small call, then the proxy's nightly batch for 16 minutes ($53). Each
    coarse spike was refined within its length on either side, and the attack's window reached the batch: both
    refined to the batch, and the attack was never found. Each is its own."""
    quiet = [0.02 if i % 3 else 0.0 for i in range(60)]
    gap = [0.02 if i in (2, 22) else 0.0 for i in range(26)]
    costs = quiet * 3 + [1.45] * 36 + gap + [3.3] * 16 + quiet[:20]
    _, spans = series_spikes(minutes(costs), MINUTE)
    assert spans == [(T0 + 180 * MINUTE, T0 + 215 * MINUTE), (T0 + 242 * MINUTE, T0 + 257 * MINUTE)]


def test_a_spike_thinning_out_past_a_quarter_hour_that_did_not_stand_out_ends_with_its_last_call():
    """Matrix seed 2026 #49 (per-minute use of a second key outside the proxy, nothing before it): five hours of
    attack, a quarter hour that dipped under the bar, a quarter hour over it, then its last calls every few minutes
    for twenty. Two coarse spikes; bounded by each other, the second's window ended a quarter hour after it and its
    last calls were left out (end -20 min). A refinement that meets its own coarse spike may reach over the other."""
    tail = [0.1 if m in (4, 5, 7, 8, 9, 11, 15, 19) else 0.0 for m in range(20)]
    costs = [0.0] * 480 + [0.25] * 300 + [0.03 if m % 3 == 0 else 0.0 for m in range(15)] + [0.25] * 15 + tail
    _, spans = series_spikes(minutes(costs + [0.0] * 200), MINUTE, against_busy=False)
    assert spans == [(T0 + 480 * MINUTE, T0 + (480 + 300 + 30 + 19) * MINUTE)]


def test_the_day_the_evidence_was_collected_counts_only_its_covered_part():
    """A daily series whose last day a finer export (or nginx) ends at 09:00: that day's usual is 9/24 of a whole
    day's; every other day is whole, and nothing is cut when nothing finer ends inside a bucket."""
    day = pd.Timedelta(days=1)
    first, last = pd.Timestamp("2026-11-03"), pd.Timestamp("2026-11-16")
    spans = pd.DataFrame({"width": [day, pd.Timedelta(hours=1)],
                          "first": [first, pd.Timestamp("2026-11-03 01:00")],
                          "last": [last + day, pd.Timestamp("2026-11-16 09:00")]})
    share = covered_share(spans, day, first, last)
    assert share(last) == Decimal("0.375") and share(pd.Timestamp("2026-11-10")) == 1
    assert share(first) == Decimal(str(23 / 24))
    assert covered_share(spans[spans["width"] == day], day, first, last) is None


HOUR = pd.Timedelta(hours=1)


def test_a_model_new_to_its_key_in_a_spike_is_a_series_of_its_own():
    """An hourly usage export of the proxy's one key (the shape of the simulator's openai usage pages): gpt-4o-mini
    and gpt-4o all evening, then in one hour gpt-4 in volume (an open proxy) beside the nightly gpt-4o batch. gpt-4
    is new to the key: it is searched on its own, so its whole spend is the spike's and the batch is not
    (matrix seed 3 #179 and six others)."""
    from forensics.analysis.provider_spikes import new_models, split_new_models

    t0 = pd.Timestamp("2026-11-15 16:00")
    rows = [("openai", "key_A", t0 + h * HOUR, m, c) for h in range(10)
            for m, c in (("gpt-4o-mini", 0.1), ("gpt-4o", 1.5))]
    rows += [("openai", "key_A", t0 + 10 * HOUR, "gpt-4o", 58.0), ("openai", "key_A", t0 + 10 * HOUR, "gpt-4", 347.0)]
    frame = pd.DataFrame(rows, columns=["provider", "series", "bucket_start", "model", "cost_usd"])
    frame["bucket_end"] = frame["bucket_start"] + HOUR
    assert new_models(frame, [(t0 + 10 * HOUR, t0 + 10 * HOUR)]) == {"gpt-4"}
    assert new_models(frame, [(t0 + 2 * HOUR, t0 + 10 * HOUR)]) == {"gpt-4"}
    split = split_new_models(frame, "openai", "key_A", {"gpt-4"})
    assert set(split["series"]) == {"key_A", "key_A gpt-4"}
    assert split.loc[split["series"] == "key_A gpt-4", "cost_usd"].tolist() == [347.0]
    alone = frame[frame["model"] != "gpt-4"]         # no new model: the key's own spike, nothing split
    assert new_models(alone, [(t0 + 10 * HOUR, t0 + 10 * HOUR)]) == set()
    # per minute (matrix seed 31 #316): gpt-4's first thin minutes at 02:00 and 02:01, the spike found from 02:02
    t1 = pd.Timestamp("2026-11-16 01:00")
    rows = [("openai", "key_A", t1 + m * MINUTE, "gpt-4o", 0.05) for m in range(0, 60, 3)]
    rows += [("openai", "key_A", t1 + m * MINUTE, "gpt-4", 0.6 if m < 62 else 8.0) for m in range(60, 105)]
    rows += [("openai", "key_A", t1 + m * MINUTE, "gpt-4o", 3.3) for m in range(75, 91)]
    frame = pd.DataFrame(rows, columns=["provider", "series", "bucket_start", "model", "cost_usd"])
    frame["bucket_end"] = frame["bucket_start"] + MINUTE
    assert new_models(frame, [(t1 + 62 * MINUTE, t1 + 104 * MINUTE)]) == {"gpt-4"}
    # an export of 12 minutes before the spike (matrix seed 777 #282, #20): a gpt-4o-mini call, a gpt-4o one, then
    # gpt-4 beside the nightly gpt-4o batch, the spike found from the export's first minute; every model's first
    # minute was within the 15 before it, none counted as new, and the batch was the spike's (+17 %). Its main model
    # is new: the key called another before it
    t2 = pd.Timestamp("2026-11-16 01:53")
    rows = [("openai", "key_A", t2, "gpt-4o-mini", 0.0004), ("openai", "key_A", t2 + 3 * MINUTE, "gpt-4o", 0.13)]
    rows += [("openai", "key_A", t2 + m * MINUTE, "gpt-4", 8.0) for m in range(7, 52)]
    rows += [("openai", "key_A", t2 + m * MINUTE, "gpt-4o", 3.5) for m in range(33, 41)]
    frame = pd.DataFrame(rows, columns=["provider", "series", "bucket_start", "model", "cost_usd"])
    frame["bucket_end"] = frame["bucket_start"] + MINUTE
    assert new_models(frame, [(t2, t2 + 51 * MINUTE)]) == {"gpt-4"}
    # matrix seed 4242 #189: the key's own gpt-4o calls 9 and 5 minutes before a leak on gpt-4o, no ramp of it: the
    # key's, and gpt-4o not new (split off, its whole spend was the leak's: start -9 min)
    t3 = pd.Timestamp("2026-11-14 22:37")
    rows = [("openai", "key_A", t3 + m * MINUTE, "gpt-4o-mini", 0.0005) for m in (0, 1, 2, 6, 15, 16, 18)]
    rows += [("openai", "key_A", t3 + m * MINUTE, "gpt-4o", 0.07 if m < 17 else 1.0)
             for m in [8, 12, *range(17, 60)]]
    frame = pd.DataFrame(rows, columns=["provider", "series", "bucket_start", "model", "cost_usd"])
    frame["bucket_end"] = frame["bucket_start"] + MINUTE
    assert new_models(frame, [(t3 + 17 * MINUTE, t3 + 59 * MINUTE)]) == set()
    first = frame[frame["model"] != "gpt-4o-mini"]      # the spike's model in the export's first minute: not new
    assert new_models(first.assign(model=first["model"].where(first["bucket_start"] != t2 + 3 * MINUTE, "gpt-4")),
                      [(t2 + 3 * MINUTE, t2 + 51 * MINUTE)]) == set()


def test_a_weekdays_office_hours_are_held_against_the_other_weekdays_hours():
    """Hourly usage of a key the office uses, from a Thursday evening to early Tuesday (matrix seed 99 #156's
    Anthropic key; in 100k input tokens an hour at $0.30 each): its weekdays' office hours spend five times its
    weekend's. Each hour's usual was the median of that hour on the other days, the weekend two of three: the
    Friday's and the Monday's office hours were each a spike ($67 "above the usual"), on a key nobody attacked. An
    hour's usual is that hour on the other days of its kind (weekday, weekend) where there is one."""
    day, t0 = pd.Timedelta(days=1), pd.Timestamp("2026-11-13")
    hours = [[0, 1, 0, 0, 3, 3, 9, 25, 25, 29, 38, 24, 33, 20, 29, 18, 24, 19, 10, 8, 0, 1, 0, 0],
             [0, 0, 0, 0, 0, 3, 3, 1, 2, 6, 9, 5, 2, 3, 5, 6, 1, 0, 3, 1, 0, 0, 0, 0],
             [0, 0, 0, 0, 0, 1, 4, 7, 3, 5, 4, 4, 4, 8, 1, 6, 5, 2, 1, 1, 0, 0, 0, 1],
             [0, 0, 0, 0, 1, 6, 9, 17, 26, 33, 33, 30, 36, 27, 31, 29, 22, 18, 3, 5, 4, 4, 1, 0]]
    costs = {t0 - 3 * HOUR + h * HOUR: Decimal("0.3") for h in range(3)}       # the Thursday evening
    costs |= {t0 + d * day + h * HOUR: Decimal(str(x)) * Decimal("0.3") for d, row in enumerate(hours)
              for h, x in enumerate(row)}
    costs |= {t0 + 4 * day + h * HOUR: Decimal("0.3") * (h % 2) for h in range(2)}     # the Tuesday's first hours
    assert series_spikes(costs, HOUR)[1] == []


def test_a_key_that_spent_nothing_before_keeps_the_thin_tail_of_its_spike():
    """A second key only the attacker uses: quiet for an hour, a script for three hours, then two minutes of one
    small call each as it stops. Nothing before it was usual, so the thin tail is the spike's (matrix seed 3 #114)."""
    quiet, attack, tail, after = [0.0] * 60, [0.6] * 180, [0.02, 0.03], [0.0] * 40
    _, spans = series_spikes(minutes(quiet + attack + tail + after), MINUTE)
    assert spans == [(T0 + 60 * MINUTE, T0 + (60 + 180 + 1) * MINUTE)]


def test_a_spike_whose_rate_sags_without_going_back_to_usual_is_one_spike():
    """A leaked key's script over five hours whose rate sags for an hour and a half in the middle (still above the
    proxy's usual, never quiet for a quarter of an hour): one spike from its first minute to its last, and the sag
    is not the usual of what follows (matrix seed 3 #14)."""
    quiet, high, sag, after = [0.05] * 20, [0.5] * 90, [0.12] * 90, [0.05] * 30
    _, spans = series_spikes(minutes(quiet + high + sag + high + after), MINUTE)
    assert spans == [(T0 + 20 * MINUTE, T0 + (20 + 270 - 1) * MINUTE)]


def test_buckets_where_nginx_shows_the_proxy_surging_are_taken_at_the_spike_level_around_them():
    """Hourly provider spend of a key used outside the proxy for five hours; in the fourth hour nginx shows the
    proxy's own nightly batch (its calls five times their usual in a 15-minute slot): that hour counts at the
    mean of the hours either side, and a surge hour at the spike's edge is cut off. With most hours surging
    (nginx shows the spike itself), nothing changes."""
    from forensics.analysis.proxy_load import proxy_adjusted

    t0 = pd.Timestamp("2026-11-14 22:00")
    spend = [20, 22, 24, 70, 26, 30]
    costs = {t0 + i * HOUR: Decimal(c) for i, c in enumerate(spend)}
    usual = dict.fromkeys(costs, Decimal(1))
    run = sorted(costs)
    kept, excess, adjusted = proxy_adjusted(costs, usual, run, HOUR, {t0 + 3 * HOUR + pd.Timedelta(minutes=15)})
    assert (kept, adjusted) == (run, 1) and excess == Decimal(19 + 21 + 23 + 24 + 25 + 29)
    kept, excess, adjusted = proxy_adjusted(costs, usual, run, HOUR, {t0 + 5 * HOUR})
    assert (kept, adjusted) == (run[:5], 1) and excess == Decimal(19 + 21 + 23 + 69 + 25)
    everywhere = {t + pd.Timedelta(minutes=15) for t in run[:4]}
    assert proxy_adjusted(costs, usual, run, HOUR, everywhere) == (run, Decimal(sum(spend) - 6), 0)


def test_a_bucket_split_by_output_keeps_its_part_where_nginx_shows_the_proxy_surging():
    """Hourly spend of a key used outside the proxy 22:15-02:32 (matrix seed 11 #190); the proxy's nightly batch
    starts at 02:00 and nginx shows it. The output split already set the attack's part of 02:00 apart ($13.70 of
    $34.31): cut off as a surge at the spike's edge, the attack came out 17 % short. A settled bucket keeps its
    part."""
    from forensics.analysis.proxy_load import proxy_adjusted

    t0 = pd.Timestamp("2026-11-14 22:00")
    costs = {t0 + i * HOUR: Decimal(c) for i, c in enumerate(["10.64", "15.08", "24.66", "29.48", "14.99"])}
    usual = dict.fromkeys(costs, Decimal("1.29"))
    run = sorted(costs)
    batch = {t0 + 4 * HOUR + pd.Timedelta(minutes=15)}
    assert proxy_adjusted(costs, usual, run, HOUR, batch)[:2] == (run[:4], Decimal("74.70"))
    assert proxy_adjusted(costs, usual, run, HOUR, batch, settled={run[4]}) == (run, Decimal("88.40"), 0)


def test_a_spike_whose_every_bucket_holds_another_workload_is_levelled_by_its_settled_ones_alone():
    """Hourly spend (matrix seed 9001 #187, a crash: "no median for empty data"): every bucket of a three-hour spike
    holds another workload, its first and last split by output. No bucket is free of that workload to hold the split
    ones to their level around them; the one unsplit bucket is held to the level of its settled neighbours."""
    from forensics.analysis.proxy_load import proxy_adjusted

    t0 = pd.Timestamp("2026-11-16 00:00")
    costs = {t0 + i * HOUR: Decimal(c) for i, c in enumerate(["10", "30", "12"])}
    usual = dict.fromkeys(costs, Decimal("2"))
    run = sorted(costs)
    settled = {run[0], run[2]}
    assert proxy_adjusted(costs, usual, run, HOUR, set(), set(run), settled, {t: costs[t] for t in settled}) == \
        (run, Decimal("27"), 1)


def test_a_bucket_inside_a_spike_split_to_nothing_where_a_batch_runs_keeps_the_spikes_level():
    """Per-minute spend of the proxy's key used outside it, two calls a minute for five hours (matrix seed 123
    #218); the nightly batch runs six minutes in the middle (nginx shows it). Split by output, those minutes hold
    none of the spike's calls: the batch's long documents write thinner output than the key's usual, and the
    spike's two calls are lost in its noise. A spike does not stop while the batch runs: the minutes keep the
    spike's level around them (never more than their excess); a split at the spike's edge keeps its part."""
    from forensics.analysis.proxy_load import proxy_adjusted

    t0 = pd.Timestamp("2026-11-15 02:00")
    raw = [Decimal("0.30")] * 5 + [Decimal("3.50")] * 6 + [Decimal("0.30")] * 5
    costs = {t0 + i * MINUTE: c for i, c in enumerate(raw)}
    usual = dict.fromkeys(costs, Decimal("0.02"))
    run = sorted(costs)
    batch = set(run[5:11])
    spent = costs | dict.fromkeys(batch, Decimal("0.02"))            # split by output: none of the spike's
    assert proxy_adjusted(spent, usual, run, MINUTE, set(), batch, batch)[1] == Decimal("2.80")
    kept, excess, _ = proxy_adjusted(spent, usual, run, MINUTE, set(), batch, batch, costs)
    assert kept == run and excess == Decimal("2.80") + 6 * Decimal("0.28")
    edge = run[:11]                                                   # the batch at the spike's end: its split stays
    assert proxy_adjusted(spent, usual, edge, MINUTE, set(), batch, batch, costs)[1] == Decimal("1.40") \
        + 5 * Decimal("0.28")


def test_a_spike_starts_at_its_ramp():
    """A stolen key's script starting slowly: one minute at a twelfth of its rate, then the full rate for 40
    minutes, over the proxy's quiet night. The slow first minute is above twice its usual and above a twentieth of
    the spike's mean excess: the spike starts there (matrix seed 3 #498); the minute before it, at its usual, not."""
    costs = [0.01, 0.0] * 30 + [0.14] + [1.7] * 40 + [0.01, 0.0] * 10
    _, spans = series_spikes(minutes(costs), MINUTE)
    assert spans == [(T0 + 60 * MINUTE, T0 + 100 * MINUTE)]


def _nginx_lines(rows):
    """A case holding only nginx lines on /v1/chat/completions: (time, client_ip), all answered 200."""
    from forensics.api import Case

    c = Case.memory()
    frame = pd.DataFrame(rows, columns=["time", "client_ip"])
    c.con.register("lines_in", frame)
    c.con.execute("""INSERT INTO http_requests (file_id, line_no, time, client_ip, status, method, path)
                     SELECT 1, row_number() OVER (ORDER BY time), time, client_ip, 200, 'POST', '/v1/chat/completions'
                     FROM lines_in""")
    c.con.unregister("lines_in")
    return c


def test_nginxs_served_calls_count_in_the_minute_they_began_as_a_providers_do():
    """nginx writes a line when the call ends; a provider counts the call in the minute it began (matrix seed 1357
    #42: the nightly batch's last call, logged at 02:21:03 after 19.6 s, is the provider's 02:20; counted at 02:21 it
    "explained" a leak's last call there, the end 7 minutes early). A line without $request_time or
    $upstream_response_time counts where it was logged; the span of the lines is still where they were logged."""
    from forensics.analysis.proxy_load import served_calls

    c = _nginx_lines([(pd.Timestamp("2026-11-15 02:20:52.451"), "10.20.3.31"),
                      (pd.Timestamp("2026-11-15 02:21:03.381"), "10.20.3.31"),
                      (pd.Timestamp("2026-11-15 02:24:08.641"), "10.20.1.11"),
                      (pd.Timestamp("2026-11-15 02:26:30"), "10.20.1.12")])
    c.con.execute("""UPDATE http_requests SET request_time = CASE line_no WHEN 1 THEN 11.347 WHEN 2 THEN 19.584
                     ELSE NULL END, upstream_time = CASE line_no WHEN 3 THEN 4.925 ELSE NULL END""")
    calls, span = served_calls(c, MINUTE, {"10.20.1.12"})
    assert {t: n for t, n in calls.items() if n} == {pd.Timestamp("2026-11-15 02:20"): 2,
                                                     pd.Timestamp("2026-11-15 02:24"): 1}
    assert span == (pd.Timestamp("2026-11-15 02:20:52.451"), pd.Timestamp("2026-11-15 02:26:30"))


def test_the_proxys_nightly_batch_is_a_surge_in_nginx_only_where_no_other_night_shows_it():
    """App servers calling every 3 minutes, and a batch client 60 times from 02:15 each night. With one night in the
    lines its slot surges; with three nights the batch is that slot's usual, as a provider usual of the same hour
    on other days already holds it (matrix seed 3 #373)."""
    from forensics.analysis.proxy_load import surge_slots

    def lines(days):
        t0 = pd.Timestamp("2026-11-14 16:00") - pd.Timedelta(days=days - 1)
        rows = [(t0 + i * 3 * MINUTE, "10.0.0.5") for i in range(days * 480)]
        rows += [(t0.normalize() + pd.Timedelta(days=d, hours=2, minutes=15) + i * 10 * pd.Timedelta(seconds=1),
                  "10.0.0.31") for d in range(1, days + 1) for i in range(60)]
        return _nginx_lines(rows)
    assert surge_slots(lines(1)) == {pd.Timestamp("2026-11-15 02:15")}
    assert surge_slots(lines(3)) == set()


def test_a_series_that_usually_spends_nothing_is_not_adjusted_for_the_proxys_load():
    """A second key only the attacker uses: the proxy's batch cannot be in it, whatever nginx shows (#471)."""
    from forensics.analysis.proxy_load import proxy_adjusted

    t0 = pd.Timestamp("2026-11-14 22:00")
    costs = {t0 + i * HOUR: Decimal(c) for i, c in enumerate([20, 22, 24, 26, 30])}
    run = sorted(costs)
    assert proxy_adjusted(costs, dict.fromkeys(costs, Decimal(0)), run, HOUR, {t0 + 4 * HOUR}) == (run, Decimal(122), 0)


def test_a_series_nginx_shows_carrying_the_proxys_surge_is_adjusted_though_it_usually_spends_nothing():
    """Matrix seed 2026 #427: per-minute usage beginning 12 minutes before the proxy's key is used outside it (so its
    usual is nothing), nginx's log beginning with the attack. The proxy's nightly batch runs inside the attack from
    02:15; nginx shows it (75 served calls) and the key's calls rise by 86 there: the series carries the proxy's
    calls, and the batch's minutes are taken at the spike's level around them (they were counted whole, +10.5 %).
    Where the key's calls do not rise with nginx's, it is another key and nothing is adjusted."""
    from forensics.analysis.provider_spikes import carries_proxy
    from forensics.analysis.proxy_load import proxy_adjusted

    t0 = pd.Timestamp("2026-11-15 01:30")
    calls = [14] * 45 + [20, 33, 21, 27, 30, 34, 19] + [14] * 23
    rows = _usage([(t0 + m * MINUTE, "gpt-4o", n, n * 27_000, n * 2_400, n * 0.09) for m, n in enumerate(calls)])
    run = [t0 + m * MINUTE for m in range(len(calls))]
    surged = {t0 + m * MINUTE for m in range(45, 60)}
    served = {t0 + m * MINUTE: n for m, n in zip(range(45, 53), (1, 13, 10, 11, 14, 13, 8, 5))}
    assert carries_proxy(rows, run, served, surged)
    flat = _usage([(t, "gpt-4o", 14, 378_000, 33_600, 1.26) for t in run])
    assert not carries_proxy(flat, run, served, surged)
    costs = {t: Decimal(str(round(n * 0.09, 6))) for t, n in zip(run, calls)}
    nothing = dict.fromkeys(costs, Decimal(0))
    slots = {t0 + 45 * MINUTE}
    _, whole, _ = proxy_adjusted(costs, nothing, run, MINUTE, slots)
    _, excess, adjusted = proxy_adjusted(costs, nothing, run, MINUTE, slots, proxys=True)
    assert whole == sum(costs.values()) and adjusted == 15
    assert excess == pytest.approx(Decimal(str(round(14 * 0.09, 6))) * len(calls), abs=Decimal("0.01"))


def test_a_spike_starting_inside_the_first_quarter_of_a_short_export_is_not_its_own_usual():
    """19 minutes of history, one proxy call of $0.14 in them, then a leaked key's script from the 15th minute of
    the export (inside its first 15-minute quarter, the whole preceding window). That quarter's spend was mostly the
    spike's first minute: taken whole it made the usual four times the key's rate and the spike $10 cheaper
    (matrix seed 3 #14). The usual is what the quarter spent before the spike, at a whole quarter's length."""
    quiet = [0.0] * 5 + [0.14] + [0.0] * 8
    _, spans = series_spikes(minutes(quiet + [0.5] * 200 + [0.0] * 20), MINUTE)
    usual, _ = series_spikes(minutes(quiet + [0.5] * 200 + [0.0] * 20), MINUTE)
    assert spans == [(T0 + 14 * MINUTE, T0 + 213 * MINUTE)]
    assert usual[T0 + 100 * MINUTE] == Decimal("0.01")


def _rows(buckets: list[tuple]) -> pd.DataFrame:
    """A series' usage rows: (bucket_start, model, requests, input_tokens, cost_usd) each."""
    return pd.DataFrame(buckets, columns=["bucket_start", "model", "requests", "input_tokens", "cost_usd"])


def test_a_tiny_call_just_before_a_spike_on_a_key_that_never_sends_one_opens_it():
    """Credential stuffing's hit: one 14-token gpt-4o call at 01:05, the script spending the key from 01:07 (matrix
    seed 3 #388). The key's own calls carry thousands of tokens: the call is a test that the key works, and the
    incident starts there. A key whose own work sends calls that small (health checks) shows them elsewhere: no
    test is read into it."""
    from forensics.analysis.provider_spikes import key_test

    t0 = pd.Timestamp("2026-11-16 00:00")
    usual = [(t0 + i * 7 * MINUTE, "gpt-4o-mini", 1, 3000 + 10 * i, 0.0005) for i in range(9)]
    probe = [(t0 + 65 * MINUTE, "gpt-4o", 1, 14, 0.0001)]
    spike = [(t0 + (67 + i) * MINUTE, "gpt-4o", 30, 400_000, 2.0) for i in range(30)]
    rows = _rows(usual + probe + spike)
    costs = {t0 + i * MINUTE: Decimal(0) for i in range(120)} | {
        t: Decimal(str(c)) for t, *_, c in usual + probe + spike}
    run = [t0 + (67 + i) * MINUTE for i in range(30)]
    assert key_test(rows, costs, run, MINUTE) == [t0 + 65 * MINUTE]
    checks = [(t0 + 3 * MINUTE + i * 7 * MINUTE, "gpt-4o-mini", 1, 10, 0.00001) for i in range(5)]
    assert key_test(_rows(usual + checks + probe + spike), costs, run, MINUTE) == []
    # matrix seed 777 #45: the test call (12 tokens, gpt-4o) in a minute with the key's own gpt-4o-mini call (2,650
    # tokens): 1,331 a call in all, above the bar of the key's smallest (its gpt-4o-mini calls of 1,700). On the
    # spike's model alone, against the key's own gpt-4o calls (19k and more), it is a test (start +3 min)
    mixed = _rows(usual + [(t0 + i * 7 * MINUTE, "gpt-4o", 1, 19_000 + 10 * i, 0.05) for i in range(9)]
                  + [(t0 + 65 * MINUTE, "gpt-4o-mini", 1, 2650, 0.0004)] + probe + spike)
    assert key_test(mixed, costs, run, MINUTE) == [t0 + 65 * MINUTE]
    # matrix seed 55 #365: the export begins 16 minutes before the spike (nothing else to compare with) and holds the
    # key's own gpt-4o-mini calls of 1,900 to 2,900 tokens; the spike's calls are 27k, its bar 2.7k: not tests
    t1 = pd.Timestamp("2026-11-14 23:10")
    own = [(t1, "gpt-4o-mini", 1, 2926, 0.0005), (t1 + MINUTE, "gpt-4o", 1, 114_990, 0.29),
           (t1 + 2 * MINUTE, "gpt-4o-mini", 1, 1997, 0.0004), (t1 + 6 * MINUTE, "gpt-4o-mini", 1, 1932, 0.0004),
           (t1 + 7 * MINUTE, "gpt-4o", 1, 127_289, 0.33)]
    spike = [(t1 + (15 + i) * MINUTE, "gpt-4o", 11, 297_000, 0.95) for i in range(60)]
    costs = {t1 + i * MINUTE: Decimal(0) for i in range(75)} | {t: Decimal(str(c)) for t, *_, c in own + spike}
    run = [t1 + (15 + i) * MINUTE for i in range(60)]
    assert key_test(_rows(own + spike), costs, run, MINUTE) == []
    assert key_test(_rows(own + [(t1 + 12 * MINUTE, "gpt-4o", 1, 12, 0.0001)] + spike), costs, run,
                    MINUTE) == [t1 + 12 * MINUTE]      # a 12-token call there is one


def test_an_edge_hour_holding_the_spike_and_another_workload_counts_only_the_spikes_calls():
    """Hourly usage of the proxy's own key used outside it (matrix seed 3 #144): the attack's calls carry ~27k input
    tokens, the key's own ~58k; the spike's last hour holds 334 gpt-4o calls at 44k a call, the attack's tail and a
    batch. Solving calls = n_a + n_b, tokens = 27k n_a + 58k n_b gives the attack ~154 of them, at its cost a call.
    An edge hour whose calls are larger still (seed 21 #68: the batch alone, 109k a call) is none of the spike's."""
    from forensics.analysis.provider_spikes import mixed_edges

    t0 = pd.Timestamp("2026-11-14 22:00")
    rows = _rows([(t0, "gpt-4o", 4, 234_000, 0.6), (t0 + HOUR, "gpt-4o", 200, 5_400_000, 17.6),
                  (t0 + 2 * HOUR, "gpt-4o", 250, 6_750_000, 22.0), (t0 + 3 * HOUR, "gpt-4o", 790, 21_330_000, 70.0),
                  (t0 + 4 * HOUR, "gpt-4o", 334, 14_690_000, 43.2)])
    costs = {t: Decimal(str(c)) for t, *_, c in rows.itertuples(index=False)}
    usual = dict.fromkeys(costs, Decimal("0.6"))
    run = [t0 + h * HOUR for h in range(1, 5)]
    (edge,) = mixed_edges(rows, costs, usual, run, HOUR)
    assert edge.bucket == t0 + 4 * HOUR and 150 < edge.spike_calls < 160
    assert edge.cost == (Decimal("109.6") / 1240 * Decimal(str(round(edge.spike_calls, 6))))
    batch = rows.assign(input_tokens=rows["input_tokens"].where(rows["bucket_start"] != t0 + 4 * HOUR, 36_300_000))
    (edge,) = mixed_edges(batch, costs, usual, run, HOUR)
    assert edge.spike_calls == 0


def test_a_day_the_spike_began_late_in_is_the_spikes_by_its_calls():
    """Daily usage (matrix seed 21 #451): a key's usual days hold ~95 gpt-4o calls of 87k input tokens; a script
    started at 23:23 on the 14th and ran into the 15th, its calls ~29k. The 14th's spend stayed under twice a day's
    usual, but it held 174 calls at 36k a call: about 153 of them are the spike's, and the spike starts that day."""
    from forensics.analysis.provider_spikes import mixed_neighbours

    day = pd.Timedelta(days=1)
    t0 = pd.Timestamp("2026-11-10")
    rows = _rows([(t0 + i * day, "gpt-4o", 95, 8_265_000, 21.5) for i in range(4)]
                 + [(t0 + 4 * day, "gpt-4o", 174, 6_220_000, 18.8), (t0 + 5 * day, "gpt-4o", 1219, 34_970_000, 113.4)])
    costs = {t: Decimal(str(c)) for t, *_, c in rows.itertuples(index=False)}
    (day_before,) = mixed_neighbours(rows, costs, [t0 + 5 * day], day)
    assert day_before.bucket == t0 + 4 * day and 145 < day_before.spike_calls < 160
    quiet = rows.assign(requests=rows["requests"].where(rows["bucket_start"] != t0 + 4 * day, 60))
    assert mixed_neighbours(quiet, costs, [t0 + 5 * day], day) == []     # fewer calls than a usual day: not its


def test_an_hour_a_script_started_or_stopped_in_is_its_spikes_though_under_the_floor():
    """A second key only the attacker uses, hourly (matrix seed 21 #256): $0.13 an hour before, the script from
    21:31 ($4.11 that hour) to 03:08 ($2.72). Both part hours spend far above the key's usual but under the $5 an
    hour floor: they are the spike's start and end, not a trickle beside it."""
    t0 = pd.Timestamp("2026-11-14 12:00")
    spend = [0.13] * 9 + [4.11, 5.26, 8.56, 14.65, 17.61, 16.46, 2.72] + [0.13] * 5
    costs = {t0 + i * HOUR: Decimal(str(c)) for i, c in enumerate(spend)}
    _, spans = series_spikes(costs, HOUR, against_busy=False)
    assert spans == [(t0 + 9 * HOUR, t0 + 15 * HOUR)]


def test_a_thin_first_minute_outside_a_minute_of_large_calls_is_the_spikes_ramp():
    """A script's first minute (one call) then a minute of two large calls, then its full rate (matrix seed 21 #8):
    not a batch apart from the spike, which starts at its first minute. A batch after the spike went quiet (large
    calls beyond a thin minute) is still cut off."""
    from forensics.analysis.provider_spikes import _trimmed

    run = [T0 + i * MINUTE for i in range(12)]
    costs = dict(zip(run, [Decimal("0.07"), Decimal("0.39")] + [Decimal("0.5")] * 10))
    usual = dict.fromkeys(run, Decimal(0))
    assert _trimmed(run, set(), (25_000, 72_000, {run[1]}), costs, usual) == run
    late = dict(zip(run, [Decimal("0.5")] * 9 + [Decimal("0.01"), Decimal("3"), Decimal("3")]))
    assert _trimmed(run, set(), (25_000, 110_000, {run[10], run[11]}), late, usual) == run[:9]


def _usage(buckets: list[tuple]) -> pd.DataFrame:
    """A series' usage rows with output tokens: (bucket_start, model, requests, input_tokens, output_tokens,
    cost_usd) each."""
    return pd.DataFrame(buckets, columns=["bucket_start", "model", "requests", "input_tokens", "output_tokens",
                                          "cost_usd"])


HOURLY_458 = [  # matrix seed 21 #458: the proxy's key used outside it from 21:46 to 03:04; its nightly batch at 02:00
    *((h, 10, 520_000, 3_400, 1.33) for h in range(7, 19)), (19, 12, 830_895, 5_328, 2.11),
    (20, 7, 337_347, 3_533, 0.87), (21, 20, 821_144, 33_664, 2.34),
    (22, 156, 4_326_444, 379_314, 14.06), (23, 216, 5_910_265, 480_546, 18.82), (24, 389, 10_463_817, 936_629, 34.17),
    (25, 479, 12_804_854, 1_190_687, 42.25), (26, 408, 16_743_648, 933_958, 49.87), (27, 19, 605_246, 43_196, 1.88),
    (28, 5, 372_662, 1_932, 0.94), (29, 4, 244_521, 1_266, 0.62)]


def test_an_edge_hour_holding_a_batch_of_long_documents_is_split_by_output_tokens():
    """The attack's last full hour (02:00) also holds the proxy's nightly batch, its calls twice the key's usual
    size: split by call size (the other calls at the usual 52k) it gave the attack 177 of 408 calls, $17 short.
    The attack's calls write 9 output tokens per 100 of input, the key's own under 1: input = I_a + I_b, output =
    0.09 I_a + 0.007 I_b give the attack ~345 calls (the truth: ~373). Without output tokens, the call-size split
    is all there is."""
    from forensics.analysis.provider_spikes import mixed_edges

    t0 = pd.Timestamp("2026-11-14")
    rows = _usage([(t0 + h * HOUR, "gpt-4o", n, i, o, c) for h, n, i, o, c in HOURLY_458])
    costs = {t: Decimal(str(c)) for t, *_, c in rows.itertuples(index=False)}
    usual = dict.fromkeys(costs, Decimal("1.24"))
    run = [t0 + h * HOUR for h in range(22, 27)]
    (edge,) = mixed_edges(rows, costs, usual, run, HOUR)
    assert edge.bucket == t0 + 26 * HOUR and edge.by == "output" and 330 < edge.spike_calls < 390
    (edge,) = mixed_edges(rows.drop(columns="output_tokens"), costs, usual, run, HOUR)
    assert edge.by == "calls" and edge.spike_calls < 200


def test_a_two_hour_spike_splits_only_its_thinner_hour():
    """Two hours of spike (matrix seed 21 #109): 1,196 attack calls at 01:00, then its last 35 minutes beside the
    nightly batch at 02:00. Each hour is the other's 'rest of the spike': split against 02:00's mixed calls, the
    pure hour 01:00 came out half the attack's ($14 short). Only the thinner hour can hold another workload."""
    from forensics.analysis.provider_spikes import mixed_edges

    t0 = pd.Timestamp("2026-11-16")
    rows = _usage([(t0 - h * HOUR, "gpt-4o", 1, 60_000, 700, 0.16) for h in range(1, 30, 3)]
                  + [(t0 + HOUR, "gpt-4o", 1196, 15_841_139, 3_110_085, 70.70),
                     (t0 + 2 * HOUR, "gpt-4o", 195, 4_625_680, 487_893, 16.41),
                     (t0 + 3 * HOUR, "gpt-4o", 1, 41_164, 950, 0.11)])
    costs = {t: Decimal(str(c)) for t, *_, c in rows.itertuples(index=False)}
    usual = dict.fromkeys(costs, Decimal(0)) | {t0 + 2 * HOUR: Decimal("5.04")}
    edges = mixed_edges(rows, costs, usual, [t0 + HOUR, t0 + 2 * HOUR], HOUR)
    assert [e.bucket for e in edges] == [t0 + 2 * HOUR]
    # matrix seed 55 #25: the two hours hold about as many calls (1,083 and 1,109); the mixed one is the hour whose
    # calls drifted towards the key's own size (29k against the attack's 13.6k and the key's 64k), not the fewer
    rows = _usage([(t0 - h * HOUR, "gpt-4o", 4, 255_000, 1_500, 0.65) for h in range(1, 30, 3)]
                  + [(t0 + HOUR, "gpt-4o", 1083, 14_765_834, 2_788_668, 64.80),
                     (t0 + 2 * HOUR, "gpt-4o", 1109, 32_235_511, 2_638_759, 106.98),
                     (t0 + 3 * HOUR, "gpt-4o", 3, 226_744, 968, 0.58)])
    costs = {t: Decimal(str(c)) for t, *_, c in rows.itertuples(index=False)}
    usual = dict.fromkeys(costs, Decimal("0.6"))
    [edge] = mixed_edges(rows, costs, usual, [t0 + HOUR, t0 + 2 * HOUR], HOUR)
    assert edge.bucket == t0 + 2 * HOUR and 800 < edge.spike_calls < 1050      # of its 1,109


def test_a_weekend_spikes_usual_follows_the_keys_other_models():
    """Daily usage, three weekdays of history, the attack over Saturday night (matrix seed 21 #141): a weekday's
    usual ($34) taken for the Saturday and the Sunday made the attack $42 short. The key's gpt-4o-mini calls, which
    the attack did not use, fell to 88 and 94 from ~200 a day: its own work ran at 42-45 % of a whole weekday there
    (the part days at the export's ends left out). An attacker calling gpt-4o-mini as well leaves the usual alone."""
    from forensics.analysis.provider_spikes import quiet_levels

    day = pd.Timedelta(days=1)
    t0 = pd.Timestamp("2026-11-10")
    days = [(21, 3.51, 38), (166, 37.13, 209), (152, 34.12, 308), (157, 34.91, 203), (762, 73.03, 88),
            (1206, 114.90, 94), (4, 0.48, 4)]
    rows = _rows([r for i, (n, c, mini) in enumerate(days) for r in (
        (t0 + i * day, "gpt-4o", n, 86_000 * n, c), (t0 + i * day, "gpt-4o-mini", mini, 2_500 * mini, 0.0004 * mini))])
    costs = {t0 + i * day: Decimal(str(c + 0.0004 * mini)) for i, (_, c, mini) in enumerate(days)}
    run = [t0 + 4 * day, t0 + 5 * day]
    levels = quiet_levels(rows, costs, run, day)
    assert set(levels) == set(run) and abs(levels[run[0]] - 88 / 209) < 1e-9 and abs(levels[run[1]] - 94 / 209) < 1e-9
    busy = rows.assign(requests=rows["requests"].where(rows["model"] != "gpt-4o-mini", 400))
    assert quiet_levels(busy, costs, run, day) == {}


def test_a_mondays_usual_is_the_other_weekdays():
    """Daily usage, Monday to Sunday of history, the attack on the next Monday, the export collected early on the
    Tuesday (matrix seed 11 #278): the median of all days (a week two-sevenths weekend) and the key's gpt-4o-mini
    calls at 136 % of it (the Tuesday's five calls among them) raised the Monday's usual and took $8 off the attack
    (-18 %). Its usual is the other weekdays' ($24), the part days at the export's ends left out, and with a
    usual of its own kind of day the other models' level does not move it. A Saturday's is the one whole Sunday's;
    in a series' first search, which asks two days of a kind, the weekdays' (not a median of weekdays and the one
    Sunday, which may be the attack's other day: matrix seed 2468 #184)."""
    from forensics.analysis.provider_spikes import _usual, quiet_levels

    day = pd.Timedelta(days=1)
    t0 = pd.Timestamp("2026-11-09")
    days = [(112, 23.9, 132), (88, 20.5, 180), (105, 27.2, 157), (105, 23.0, 183), (112, 25.0, 148),
            (35, 7.3, 70), (38, 7.3, 75), (1302, 90.6, 207), (1, 0.1, 5)]
    rows = _rows([r for i, (n, c, mini) in enumerate(days) for r in (
        (t0 + i * day, "gpt-4o", n, 80_000 * n, c), (t0 + i * day, "gpt-4o-mini", mini, 2_300 * mini, 0.0004 * mini))])
    costs = {t0 + i * day: Decimal(str(c)) for i, (_, c, _) in enumerate(days)}
    monday = t0 + 7 * day
    usual = _usual(costs, day, frozenset({monday}))[0]
    assert usual[monday] == Decimal("24.0") and usual[t0 + 5 * day] == Decimal("7.3")
    assert _usual(costs, day, frozenset({monday}), kind_days=2)[0][t0 + 5 * day] == Decimal("24.0")
    assert quiet_levels(rows, costs, [monday], day) == {}


def test_the_part_days_at_a_daily_exports_ends_are_not_its_usual():
    """Daily usage from a Thursday evening to early Sunday (matrix seed 99 #203): the key used outside the proxy on
    Saturday night. The Saturday's usual was the median of the Thursday's few hours, the Friday and the Sunday's
    first hours ($48): $97 was not twice it, and the key's gpt-4o-mini calls (173) were above the median of theirs,
    the Thursday's 50 among them. Without the part days, the Friday is the usual ($61), the other model ran at half
    its Friday, and the Saturday is the spike."""
    from forensics.analysis.provider_spikes import _spikes

    day, t0 = pd.Timedelta(days=1), pd.Timestamp("2026-11-12")
    frame, exports = _daily_export(t0, [(27, 1_651_126, 14_936, 4.28, 50), (263, 23_225_831, 246_179, 60.53, 338),
                                        (920, 30_284_004, 2_087_440, 96.58, 173),
                                        (400, 15_935_410, 846_992, 48.31, 131)], mini_input=2_800)
    [(_, _, _, _, usual, spans)] = _spikes(frame, exports)[1]
    assert spans[0][0] == t0 + 2 * day and usual[t0 + 2 * day] == Decimal("60.699")     # the Friday, both models


def _daily_export(t0, days: list[tuple], mini_input: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The proxy's key's daily usage (the frame `_spikes` searches) and the export's span: per day (gpt-4o calls,
    input, output, cost, gpt-4o-mini calls), the mini calls of `mini_input` tokens each."""
    day = pd.Timedelta(days=1)
    rows = [r for i, (n, inp, out, c, mini) in enumerate(days) for r in (
        (t0 + i * day, "gpt-4o", n, inp, out, c), (t0 + i * day, "gpt-4o-mini", mini, mini_input * mini, 230 * mini,
                                                    0.0005 * mini))]
    frame = _usage(rows).assign(provider="openai", series="key_1", bucket_end=lambda f: f["bucket_start"] + day)
    return frame, pd.DataFrame({"width": [day], "first": [t0], "last": [t0 + len(days) * day]})


def test_a_weekend_attacks_first_day_is_not_the_usual_of_its_second():
    """Daily usage of a week (matrix seed 77 #80): an attack over Saturday night and Sunday. The first search found
    only the Sunday; the second, the Sunday left out, found the Saturday too, but the Sunday's usual was still the
    median of the other weekend days, the Sunday before ($9) and the attacked Saturday ($90): $50, and the attack
    $23 short (-10.9 %). Days are searched a third time with both left out: the Sunday's usual is the Sunday
    before's ($9.31, one whole day of its kind; $24, the weekdays', when two were asked), not $50."""
    day = pd.Timedelta(days=1)
    t0 = pd.Timestamp("2026-11-07")
    spend = ["0.69", "9.31", "24.14", "24.49", "23.85", "25.19", "22.36", "89.85", "137.33", "11.35"]
    costs = {t0 + i * day: Decimal(c) for i, c in enumerate(spend)}
    usual, spans = series_spikes(costs, day)
    assert spans == [(t0 + 7 * day, t0 + 8 * day)]
    assert usual[t0 + 8 * day] == usual[t0 + 7 * day] == Decimal("9.31")


def test_a_weekend_attack_after_weekday_history_is_found_in_daily_buckets():
    """Daily usage of the proxy's key, Thursday to Sunday (matrix seed 11 #363): the key used outside the proxy from
    Saturday 22:06 to Sunday 01:35. The Sunday spent $90 against a usual of $53 (the median of the other days, two
    of them weekdays): under twice it, no spike, and the report said nothing was wrong. The key's gpt-4o-mini calls
    ran at 43 % of their usual that day: its own work was a weekend's, and the Sunday is five times its usual at
    that level. The Saturday, its other model at half a weekday's, spent $64 against $23 at that level: $41 above
    it, under the median busy day ($53), the bar a spike must clear, but the attack's first two hours (514 calls) are
    there; at the Saturday's level the bar is $23 too (matrix seed 7 #208: an attack on a Saturday after a Friday
    of long documents, not found at all). Without the other model, nothing is found, as before."""
    from forensics.analysis.provider_spikes import _spikes

    day, t0 = pd.Timedelta(days=1), pd.Timestamp("2026-11-12")
    frame, exports = _daily_export(t0, [(177, 13_519_971, 128_045, 35.08, 274), (232, 20_246_883, 219_069, 52.81, 355),
                                        (588, 20_071_752, 1_376_731, 63.95, 153),
                                        (847, 28_128_708, 1_960_147, 89.92, 118)], mini_input=2_500)
    spikes = _spikes(frame, exports)[1]
    assert [s[5] for s in spikes] == [[(t0 + 2 * day, t0 + 3 * day)]]
    assert _spikes(frame[frame["model"] == "gpt-4o"], exports)[1] == []


def test_a_monday_attack_after_a_friday_and_a_weekend_is_held_against_the_friday():
    """Daily usage from a Thursday evening to early Tuesday, the key used outside the proxy on the Monday (matrix seed
    99 #156): one whole weekday before it, the Friday ($41), and a weekend at half that. A usual of its own kind of
    day needed two such days, so the Monday's was the weekend's and the Friday's too; the Friday, twice a weekend day,
    came out a spike joined to the Monday over the weekend (cost +79 %). One day of its kind is the usual of a day;
    a day with none is held at its other models' level against the days it is compared with, busier as well as
    quieter (the Friday's gpt-4o-mini calls at 2.7 times the weekend's). The Monday alone is the spike, against the
    Friday."""
    from forensics.analysis.provider_spikes import _spikes

    day, t0 = pd.Timedelta(days=1), pd.Timestamp("2026-11-12")
    frame, exports = _daily_export(t0, [(2, 118_860, 535, 0.30, 6), (179, 15_922_793, 165_144, 41.46, 325),
                                        (89, 7_131_670, 71_546, 18.55, 122), (97, 8_360_612, 81_224, 21.71, 115),
                                        (1228, 31_522_931, 2_900_225, 107.81, 378), (1, 43_303, 289, 0.11, 8)],
                                   mini_input=2_100)
    [(_, _, _, _, usual, spans)] = _spikes(frame, exports)[1]
    assert spans == [(t0 + 4 * day, t0 + 4 * day)] and usual[t0 + 4 * day] == Decimal("41.6225")   # the Friday's
    # matrix seed 99 #266: a week from a Sunday evening, the attack over Saturday night and Sunday ($97, $88): the
    # two days of the weekend are each other's usual, and with one day of a kind enough nothing was found. The first
    # search asks two, and finds the weekend against the weekdays
    t1 = pd.Timestamp("2026-11-08")
    frame, exports = _daily_export(t1, [(17, 829_280, 10_738, 2.16, 53), (109, 9_064_915, 80_709, 23.34, 186),
                                        (128, 11_122_335, 114_677, 28.80, 168), (125, 11_155_245, 110_533, 28.84, 161),
                                        (98, 8_375_576, 77_154, 21.60, 143), (113, 9_744_865, 101_096, 25.25, 177),
                                        (1024, 30_135_851, 2_479_750, 96.62, 58),
                                        (940, 27_236_631, 2_327_836, 88.14, 83),
                                        (3, 272_012, 915, 0.69, 2)], mini_input=2_700)
    [(_, _, _, _, usual, spans)] = _spikes(frame, exports)[1]
    assert spans == [(t1 + 6 * day, t1 + 7 * day)]


def test_a_weekend_attack_after_one_weekday_is_held_against_the_weekday_at_its_level():
    """Daily usage from a Thursday evening to early Monday, the proxy's key used outside it from Saturday 21:48 to
    Sunday 02:59 (matrix seed 2468 #184): one whole weekday, the Friday ($57), and the attack's two days ($68, $73).
    The first search asks two days of a kind; the weekend has one other, so the Saturday's usual was the median of
    the Friday and the Sunday ($65), and its other model's level against that mix (58 %): $38, and $68 was not twice
    it: the Saturday was missed (in the draw, the key's own weekend a little busier, the Sunday too, and the report
    had "suspicious" on the other key only). Against the weekday alone, its gpt-4o-mini calls at 40 % of the
    Friday's, both weekend days are the spike; a weekday with too few of its kind is not held against weekend days
    alone."""
    from forensics.analysis.provider_spikes import _spikes

    day, t0 = pd.Timedelta(days=1), pd.Timestamp("2026-11-12")
    frame, exports = _daily_export(t0, [(17, 1_307_667, 8_518, 3.33, 32), (249, 22_138_456, 227_959, 57.29, 444),
                                        (674, 22_178_749, 1_496_298, 68.23, 179),
                                        (700, 23_948_127, 1_546_873, 73.07, 175),
                                        (67, 6_865_279, 82_207, 17.89, 11)], mini_input=2_700)
    [(_, _, _, _, usual, spans)] = _spikes(frame, exports)[1]
    assert spans == [(t0 + 2 * day, t0 + 3 * day)]
    # not the other way round (2468 #279): a support key's business days, Thursday and Friday ($112, $109), beside
    # one Saturday ($19) and no call counts to scale it: the weekdays held against the Saturday alone were a spike
    t1 = pd.Timestamp("2026-11-11")
    spend = ["2.56", "111.62", "109.45", "19.34", "16.27"]
    assert series_spikes({t1 + i * day: Decimal(c) for i, c in enumerate(spend)}, day)[1] == []


def test_a_saturday_attack_after_a_friday_of_long_documents_clears_the_bar_at_its_level():
    """Daily usage, a part Thursday, a Friday of long documents ($71), the attack from Saturday 21:33 to Sunday 02:54
    (matrix seed 7 #208): the Saturday spent $76, its other model at 46 % of the Friday's, so its own work at about
    $33; $43 above that, more than twice it, but under the median busy day ($60) a spike had to clear: not found,
    "inconclusive". On a quiet whole day the bar is at its level too: the Saturday is the spike (the Sunday, the
    export's last and part day, is held to the whole bar as before)."""
    from forensics.analysis.provider_spikes import _spikes

    day, t0 = pd.Timedelta(days=1), pd.Timestamp("2026-11-12")
    frame, exports = _daily_export(t0, [(31, 1_907_667, 16_368, 4.92, 88), (325, 27_443_911, 286_209, 71.34, 509),
                                        (702, 24_964_977, 1_528_183, 75.58, 235),
                                        (422, 15_859_325, 1_026_122, 48.56, 19)], mini_input=2_400)
    [(*_, spans)] = _spikes(frame, exports)[1]
    assert spans == [(t0 + 2 * day, t0 + 2 * day)]


def _minute_usage(t0, spec: list[tuple]) -> pd.DataFrame:
    """Per-minute gpt-4o usage from (first minute, minutes, calls, input a call, output a call) stretches; the
    calls of stretches that share a minute add up."""
    per: dict = {}
    for first, count, n, i, o in spec:
        for m in range(first, first + count):
            c = per.setdefault(t0 + m * MINUTE, [0, 0, 0])
            c[0] += n
            c[1] += n * i
            c[2] += n * o
    return _usage([(t, "gpt-4o", n, i, o, (2.5 * i + 10 * o) / 1e6) for t, (n, i, o) in sorted(per.items())])


def test_a_batch_starting_before_the_attack_stops_is_split_off_by_output_tokens():
    """Per-minute usage (matrix seed 77 #97): the attack's calls (14k input, 2.5k output) at 40 a minute until
    minute 59; the proxy's nightly batch (110k input, 1.2k output, 12 a minute) from minute 50 to 64. The spike's
    last ten minutes are mixed and were cut off with the batch (the end 4 minutes early), and the batch's minutes
    inside a spike were counted whole. By output tokens each mixed minute holds ~40 of the attack's calls; the
    batch alone holds none, so the spike ends at minute 59."""
    from forensics.analysis.provider_spikes import _trimmed, other_workload, split_by_output

    t0 = pd.Timestamp("2026-11-16 01:00")
    rows = _minute_usage(t0, [(m, 1, 1, 70_000, 700) for m in range(0, 10, 2)]
                         + [(10, 50, 40, 14_000, 2_500), (50, 15, 12, 110_000, 1_200)])
    costs = {t0 + m * MINUTE: Decimal(0) for m in range(70)} | {
        t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    usual = dict.fromkeys(costs, Decimal("0.02"))
    found = [t0 + m * MINUTE for m in range(10, 65)]
    run = _trimmed(found, *other_workload(rows, costs, usual, found), costs, usual)
    assert run[-1] == t0 + 49 * MINUTE
    tails = split_by_output(rows, costs, usual, found, run)
    assert [m.bucket for m in tails] == [t0 + m * MINUTE for m in range(50, 60)]
    assert all(39 < m.spike_calls < 41 for m in tails)
    # matrix seed 2026 #464: the batch's calls vary in size and output; where they alone run, the splits give a call
    # or two of the spike's, noise beside the 40 a minute it ran at: the spike still ends at minute 59
    rows = _minute_usage(t0, [(m, 1, 1, 70_000, 700) for m in range(0, 10, 2)]
                         + [(10, 50, 40, 14_000, 2_500), (50, 10, 12, 110_000, 1_200), (60, 3, 12, 100_000, 1_800),
                            (63, 2, 12, 110_000, 1_200)])
    costs = costs | {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    tails = split_by_output(rows, costs, usual, found, run)
    assert [m.bucket for m in tails] == [t0 + m * MINUTE for m in range(50, 60)]


def test_an_hour_of_the_attack_beside_the_nightly_batch_is_split_though_its_calls_drifted_little():
    """Hourly usage (matrix seed 8 #15): the key's own evening, then the proxy's key used outside it from 23:19 to
    03:13; the nightly batch of long documents runs at 02:00 beside it, on the first night of the export (no usual
    for it). 02:00's calls are 1.37 times the spike's size and write 1.49 times less a token of input, both under
    MIXED_FACTOR: the whole hour was the attack's, $24 too much (+12.9 %). Both drifted towards the key's own calls,
    and by output a third of its input is not the attack's: split, the attack gets ~650 of its 741 calls. The same
    hour with the spike's own profile stays whole."""
    from forensics.analysis.provider_spikes import split_by_output

    t0 = pd.Timestamp("2026-11-14 16:00")
    own = [(t0 + h * HOUR, "gpt-4o", n, i, o, c) for h, (n, i, o, c) in enumerate(
        [(13, 976_529, 8_223, 2.52), (7, 377_360, 3_485, 0.98), (9, 443_230, 4_451, 1.15), (3, 189_980, 881, 0.48),
         (7, 466_276, 3_740, 1.20), (4, 232_870, 2_892, 0.61), (1, 31_451, 580, 0.08)])]
    spike = [(404, 11_079_679, 953_347, 37.23), (494, 12_947_879, 1_242_388, 44.79),
             (456, 12_931_246, 1_111_532, 43.44), (741, 27_588_069, 1_679_408, 85.76), (167, 4_370_843, 423_388, 15.16)]
    rows = _usage(own + [(t0 + (7 + h) * HOUR, "gpt-4o", *x) for h, x in enumerate(spike)])
    costs = {t: Decimal(str(c)) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    usual = dict.fromkeys(costs, Decimal("1.1"))
    run = [t0 + h * HOUR for h in range(7, 12)]
    [m] = split_by_output(rows, costs, usual, run, run)
    assert m.bucket == t0 + 10 * HOUR and 620 < m.spike_calls < 680 and m.by == "output"
    alike = rows.assign(input_tokens=rows["input_tokens"].where(rows["bucket_start"] != m.bucket, 20_000_000),
                        output_tokens=rows["output_tokens"].where(rows["bucket_start"] != m.bucket, 1_800_000))
    assert split_by_output(alike, costs, usual, run, run) == []


def test_a_batch_after_the_attack_went_quiet_is_cut_off_however_long():
    """The batch started ten quiet minutes after the attack stopped and ran 18 minutes (matrix seed 77 #45): a third
    of the spike's buckets held its calls, more than the share allowed inside a spike, so none were taken for
    another workload and the incident ended 28 minutes late at +67 % of its cost. A stretch of them at the spike's
    end is another workload whatever its length."""
    from forensics.analysis.provider_spikes import _trimmed, other_workload

    t0 = pd.Timestamp("2026-11-16 01:28")
    rows = _minute_usage(t0, [(m, 1, 1, 70_000, 700) for m in range(-20, 0, 4)]
                         + [(0, 38, 42, 13_000, 2_600), (48, 18, 12, 105_000, 1_300)])
    costs = {t0 + m * MINUTE: Decimal(0) for m in range(-20, 70)} | {
        t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    usual = dict.fromkeys(costs, Decimal("0.02"))
    found = [t0 + m * MINUTE for m in range(0, 66)]
    assert _trimmed(found, *other_workload(rows, costs, usual, found), costs, usual)[-1] == t0 + 37 * MINUTE


def test_a_batch_inside_a_leak_on_a_model_new_to_the_key_is_levelled_when_it_writes_apart():
    """Per-minute usage (matrix seed 6007 #89, fresh): a quarter hour of history in which the key called only
    gpt-4o-mini, then a leak on gpt-4o (27k input, 9 % output, six calls a minute) for hours; the key's nightly
    batch inside it (83k, 1.8 %, 18 a minute, five minutes). The series usually spends nothing, so no other
    workload was looked for and the batch counted whole (+11.8 %). Calls three times the spike's size that write a
    fifth of its output a token of input are another kind of calls: those minutes are taken at the spike's level
    around them. Larger calls that write like the spike's are its own (an attacker's longer prompts), and so are
    such calls in its first minutes, on a key with no past (matrix seed 3 #20: cut off, the start 2 minutes late)."""
    from forensics.analysis.provider_spikes import other_workload
    from forensics.analysis.proxy_load import proxy_adjusted

    t0 = pd.Timestamp("2026-11-15 02:00")
    leak = [(0, 40, 6, 27_000, 2_430)]

    def levelled(batch_output: int, first: int = 16) -> tuple[set, Decimal, Decimal]:
        rows = _minute_usage(t0, leak + [(first, 5, 18, 83_000, batch_output)])
        costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
        usual = dict.fromkeys(costs, Decimal(0))
        run = sorted(costs)
        other, _ = other_workload(rows, costs, usual, run)
        return other, sum(costs.values(), Decimal(0)), proxy_adjusted(costs, usual, run, MINUTE, set(), other)[1]
    other, whole, excess = levelled(1_500)
    assert other == {t0 + m * MINUTE for m in range(16, 21)}
    leak_cost = 40 * 6 * Decimal(str((2.5 * 27_000 + 10 * 2_430) / 1e6))
    assert abs(excess - leak_cost) < Decimal("0.01") < whole - leak_cost
    other, whole, excess = levelled(7_470)
    assert other == set() and excess == whole
    assert levelled(1_500, first=0)[0] == set()



def test_a_spikes_first_calls_before_it_stands_out_open_it():
    """A stuffing script's hit (matrix seed 77 #97): two gpt-4o calls of the attack's size (11k input) four minutes
    before it spends the key at 40 calls a minute; the key's own calls carry 70k (in 134 minutes of the draw's
    day; here 20). They are its first calls: the incident starts there, not when the spend stood out. A key whose own
    calls are that size shows nothing apart."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-16 01:00")
    spec = [(m, 1, 1, 70_000, 700) for m in range(-40, 20, 3)] + [(25, 1, 2, 10_700, 170), (29, 30, 40, 14_000, 2_500)]
    rows = _minute_usage(t0, spec)
    costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    run = [t0 + m * MINUTE for m in range(29, 59)]
    assert lead_in(rows, costs, run, MINUTE) == [t0 + 25 * MINUTE]
    same = _minute_usage(t0, [(m, 1, 1, 15_000, 150) for m in range(-40, 20, 3)] + spec[-2:])
    assert lead_in(same, costs, run, MINUTE) == []


def test_a_call_of_a_spikes_size_after_it_that_writes_as_the_keys_own_is_not_its_last():
    """Per-minute usage (matrix seed 7777 #61): a script's calls (13k input, 19 % output) at 35 a minute, then five
    minutes after its last one call of 18.9k writing 1.2 %, as the key's own calls do (their 70k, 1 %). Its size is
    the script's, its output the key's; a script's last calls write as its others did: it is not the spike's last,
    and the incident ends with the script (end +5 min). The same call writing as the script did is its last; before
    the spike, a call of its size is its first whatever it writes (a test of the key, test above)."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-16 01:00")
    spec = [(m, 1, 1, 70_000, 700) for m in range(-60, 0, 3)] + [(0, 30, 35, 13_000, 2_500)]
    run = [t0 + m * MINUTE for m in range(30)]
    for output, last in ((220, []), (3_600, [t0 + 34 * MINUTE])):
        rows = _minute_usage(t0, spec + [(34, 1, 1, 18_900, output)])
        costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
        assert lead_in(rows, costs, run, MINUTE, after=True) == last


def test_a_leaks_last_calls_alone_are_taken_by_its_calls_alone_not_by_its_minutes_mean():
    """Per-minute usage (matrix seed 1234 #115): a leak's calls (9 % output) in minutes of one call (13k to 73k
    input) and of four (25k); the key's own calls (9k to 128k, 0.8 %) of the leak's size in a quarter of their
    minutes, so size alone tells nothing. Its last calls: one of 42k writing 6.3 %, two minutes after its others,
    larger than 1.5 times its median minute; eight minutes later one of 26k writing 3.9 %, 0.36 of a call by the
    split of its output (a mix of the two kinds), and one of 32.5k writing 7.2 %. The incident ended at the first of
    them (-10 min). A call alone is one kind or the other: its size is held against the leak's calls alone, and one
    of the leak's size writing nearer the leak's way (in logs) is the leak's, where the key's own seldom do both.
    Where a fifth of the key's calls of the leak's size write 4 %, or the call writes 2 %, the chain stops at 42k."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-15 01:00")
    sizes = [9_000, 20_000, 30_000, 45_000, 60_000, 80_000, 100_000, 128_000]
    own = [(m, 1, 1, sizes[k % 8], sizes[k % 8] * 8 // 1000) for k, m in enumerate(range(-120, 0, 3))]
    own[5] = (own[5][0], 1, 1, 19_000, 880)                                         # one of the key's own, 4.6 %
    alone = [13_000, 18_000, 22_000, 25_000, 30_000, 35_000, 42_000, 50_000, 60_000, 73_000]
    leak = [(m, 1, 4, 25_000, 2_250) for m in range(0, 60, 2)]
    leak += [(m, 1, 1, alone[k % 10], alone[k % 10] * 9 // 100) for k, m in enumerate(range(1, 60, 2))]
    run = [t0 + m * MINUTE for m in range(60)]

    def last(third_output: int, own_calls: list = own) -> list:
        tail = [(61, 1, 1, 42_000, 2_650), (69, 1, 1, 26_000, third_output), (70, 1, 1, 32_500, 2_350)]
        rows = _minute_usage(t0, own_calls + leak + tail)
        costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
        return [int((t - t0) / MINUTE) for t in lead_in(rows, costs, run, MINUTE, after=True)]
    assert last(1_010) == [61, 69, 70]
    assert last(520) == [61]
    assert last(1_010, [(x[0], 1, 1, 30_000, 1_200) if k % 5 == 2 else x for k, x in enumerate(own)]) == [61]


def test_a_thinning_leaks_minutes_of_two_calls_six_minutes_apart_are_its_last():
    """Per-minute usage (matrix seed 8642 #113): the key's own calls (80k input, 1 % output) every few minutes, a
    leak's (26k, 9.5 %) two to four a minute, then thinning out: two minutes after its last a minute of the key's own
    call beside two of its calls (47k a call, larger than the chain takes), then two of its calls writing 11.7 % six
    minutes after its last, and two writing 8.8 % six minutes later. A step of six minutes was a link only with
    another link within five minutes beyond it (end -12 min); a minute holding two of its calls by output is that
    much. One such call alone six minutes out, or two writing the key's way, is no last call of the leak."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-15 00:00")
    own = [(m, 1, 1, 80_000, 800) for m in range(-90, 0, 4)]
    leak = [(m, 1, 2 + m % 3, 26_000, 2_470) for m in range(60)]
    run = [t0 + m * MINUTE for m in range(60)]

    def last(tail: list) -> list:
        rows = _minute_usage(t0, own + leak + [(63, 1, 1, 80_000, 800), (63, 1, 2, 30_500, 1_800)] + tail)
        costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
        return [int((t - t0) / MINUTE) for t in lead_in(rows, costs, run, MINUTE, after=True)]
    assert last([(65, 1, 2, 16_800, 1_960), (71, 1, 2, 26_300, 2_310)]) == [65, 71]
    assert last([(65, 1, 1, 16_800, 1_960)]) == []
    assert last([(65, 1, 2, 16_800, 170), (71, 1, 2, 26_300, 260)]) == []


def test_a_call_of_a_spikes_size_is_no_first_call_when_the_keys_own_calls_are_too_few_to_say():
    """Per-minute usage of half an hour before a leak (matrix seed 31 #438): the key's own gpt-4o calls in four of
    its minutes (49k to 177k input tokens, thin output), one more of 25k two minutes before a script's 27k calls,
    writing as little as the key's own. Two minutes of the key's own calls outside the stretch next to the spike do
    not show that it never sends calls of that size: the call is not taken as the spike's first (start -2 min). With
    an hour of them it is."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-14 22:49")
    own = [(9, 1, 1, 127_000, 700), (13, 1, 2, 88_000, 540), (16, 1, 1, 126_000, 550), (21, 1, 1, 49_000, 850)]
    spec = own + [(29, 1, 1, 24_500, 207), (31, 60, 14, 27_000, 2_400)]
    rows = _minute_usage(t0, spec)
    costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    run = [t0 + m * MINUTE for m in range(31, 91)]
    assert lead_in(rows, costs, run, MINUTE) == []
    longer = _minute_usage(t0, [(m, 1, 1, 90_000, 600) for m in range(-60, 0, 4)] + spec)
    assert lead_in(longer, costs, run, MINUTE) == [t0 + 29 * MINUTE]


def test_a_script_starting_slowly_is_followed_back_past_a_quarter_hour():
    """Per-minute usage (matrix seed 31 #20): the key's own 70k-token calls every few minutes, the script's calls
    (14k, thick output) one to three a minute for 25 minutes, then 40 a minute. The chain of its first calls stopped
    at the quarter hour searched before the spike (start +11 min); it goes on while each is within five minutes of the
    next, an hour at most."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-14 23:00")
    spec = [(m, 1, 1, 70_000, 700) for m in range(0, 28, 3)]
    spec += [(30 + m, 1, 1 + m % 3, 14_000, 2_500) for m in range(26) if m % 7 != 6]
    spec += [(56, 40, 40, 14_000, 2_500)]
    rows = _minute_usage(t0, spec)
    costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    run = [t0 + m * MINUTE for m in range(56, 96)]
    first = lead_in(rows, costs, run, MINUTE)
    assert first[0] == t0 + 30 * MINUTE and len(first) == 23


def test_a_slow_scripts_last_calls_go_on_past_the_nightly_batch():
    """Per-minute usage (matrix seed 8 #355): the key's own 70k-token calls every few minutes, a slow script's calls
    (27k, 9 output tokens per 100 of input) one or two a minute until 02:12, the nightly batch (111k, thin output)
    11 a minute from 02:15 to 02:18, the script's calls again from 02:21 to 02:28. Its last calls stopped at the
    batch (end -16 min); the chain goes on through the batch's minutes, which are none of its."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-15 00:00")
    spec = [(m, 1, 1, 70_000, 700) for m in range(0, 60, 4)]
    spec += [(60 + m, 1, 1 + m % 2, 27_000, 2_400) for m in range(73)]          # 01:00 to 02:12
    spec += [(135, 4, 11, 111_000, 1_200)]                                      # the batch, 02:15 to 02:18
    spec += [(141 + m, 1, 1, 27_000, 2_400) for m in (0, 1, 4, 5, 6, 7)]        # 02:21 to 02:28
    rows = _minute_usage(t0, spec)
    costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    run = [t0 + m * MINUTE for m in range(60, 133)]
    last = lead_in(rows, costs, run, MINUTE, after=True)
    assert last[-1] == t0 + 148 * MINUTE and not set(last) & {t0 + m * MINUTE for m in range(135, 139)}
    # the batch alone after the script: nothing of it is the script's
    assert lead_in(_minute_usage(t0, spec[:-6]), costs, run, MINUTE, after=True) == []


def test_a_slow_leaks_last_calls_in_the_nightly_batchs_first_minute_end_it():
    """Per-minute usage (matrix seed 11 #19): a slow leak's calls (27k input, 9 % output) until 02:13, its last three
    in 02:15 beside four of the nightly batch (115k, 1.1 % output), which ran at 02:15 the night before too. Its
    last calls stopped at 02:13 (end -2 min): the batch's minute was passed through as another workload's. Split by
    its calls' size and by output, with the batch's own from the night before, both give three of the leak's calls:
    the leak ends there. The batch's minute alone holds none of them; without the batch's other night nothing says
    how it writes, and the minute is passed through as before."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-15 00:00")
    night_before = [(m - 1440, 1, 5, 115_000, 1_265) for m in range(135, 139)]
    spec = [(m, 1, 1, 70_000, 700) for m in range(0, 60, 4)]
    spec += [(60 + m, 1, 1 + m % 2, 27_000, 2_430) for m in range(73)]          # 01:00 to 02:12
    batch = [(135, 4, 5, 115_000, 1_265)]
    rows = _minute_usage(t0, night_before + spec + batch + [(135, 1, 3, 27_000, 2_430)])
    costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    run = [t0 + m * MINUTE for m in range(60, 133)]
    assert lead_in(rows, costs, run, MINUTE, after=True) == [t0 + 135 * MINUTE]
    assert lead_in(_minute_usage(t0, night_before + spec + batch), costs, run, MINUTE, after=True) == []
    assert lead_in(_minute_usage(t0, spec + batch + [(135, 1, 3, 27_000, 2_430)]), costs, run, MINUTE,
                   after=True) == []


def test_a_nightly_batch_minute_after_a_leak_holds_none_of_its_calls_within_the_noise_of_its_own_sizes():
    """Per-minute usage (matrix seed 6161 #347): a leak's calls (27k input, 9 % output) until 02:11, the key's own
    large calls one at a time (75k to 128k, under 1 % output), its nightly batch at 02:15 the night before (six
    calls, 93k a call, 1.5 %), and at 02:16 five of its calls (86k a call, 1.5 %). Split by size against the key's
    101k a call, the minute holds 1.02 of the leak's calls, by output 1.10: they agreed, and the leak ended at 02:17
    (+5 min). Calls of 75k to 128k make a five-call minute's count by size uncertain by 0.7 of a call: 1.02 is not
    one of the leak's calls. Two of the leak's calls in that minute are (3.0 by size, its standard error 0.8)."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-15 01:11")
    own = [(m, 1, 1, i, i // 150) for m, i in ((-1000, 74_506), (-960, 117_855), (-570, 127_560), (-518, 127_582),
                                               (480, 106_869), (540, 76_551), (830, 127_288))]
    night_before = [(65 - 1440, 1, 6, 93_459, 1_418)]
    leak = [(m, 1, 1 + m % 2, 27_000, 2_450) for m in range(61)]
    batch = (65, 1, 5, 86_266, 1_332)
    run = [t0 + m * MINUTE for m in range(61)]
    for extra, last in (([], []), ([(65, 1, 2, 27_000, 2_450)], [t0 + 65 * MINUTE])):
        rows = _minute_usage(t0, own + night_before + leak + [batch] + extra)
        costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
        assert lead_in(rows, costs, run, MINUTE, after=True) == last


def test_a_weekday_spikes_usual_rises_with_the_keys_other_models_as_far_as_they_went_before():
    """Daily usage, history of a part day, a Friday and a weekend, the attack on the Monday (matrix seed 77 #487):
    the usual ($16) came from the weekend, and the attack's cost out 38 % high. The key's gpt-4o-mini calls on the
    Monday (293) were 2.4 times their usual, as on the Friday (286): its own work ran at a weekday's level, and the
    usual rises with it (in the first search, which asks two days of a kind; after it the one Friday is the
    Monday's usual, and the level is not needed). Calls far beyond anything the key made before (an attacker on
    gpt-4o-mini too) do not raise it."""
    from forensics.analysis.provider_spikes import quiet_levels

    day = pd.Timedelta(days=1)
    t0 = pd.Timestamp("2026-11-12")
    days = [(30, 5.36, 99), (185, 41.86, 286), (86, 16.35, 121), (82, 17.49, 122), (1307, 108.21, 293)]
    rows = _rows([r for i, (n, c, mini) in enumerate(days) for r in (
        (t0 + i * day, "gpt-4o", n, 80_000 * n, c), (t0 + i * day, "gpt-4o-mini", mini, 2_300 * mini, 0.0004 * mini))])
    costs = {t0 + i * day: Decimal(str(c + 0.0004 * mini)) for i, (_, c, mini) in enumerate(days)}
    monday = t0 + 4 * day
    assert quiet_levels(rows, costs, [monday], day, kind_days=2) == {monday: 293 / 122}   # the part Thursday left out
    assert quiet_levels(rows, costs, [monday], day) == {}
    flooded = rows.assign(requests=rows["requests"].where(
        (rows["model"] != "gpt-4o-mini") | (rows["bucket_start"] != monday), 1293))
    assert quiet_levels(flooded, costs, [monday], day, kind_days=2) == {}


def test_an_hour_whose_usual_is_a_nightly_batch_does_not_split_a_spike():
    """Hourly usage over days, the proxy's batch at 02:00 every night ($18.50): the attack from 22:00 to 03:59 spent
    $17.90 more at 02:00 (matrix seed 77 #381), under twice that hour's usual. It split the spike in two, the
    second with 02:00's attack left out (-44 % of its cost, the end two hours early). Two runs with no quiet hour
    between are one spike."""
    t0 = pd.Timestamp("2026-11-11")
    costs = {t0 + h * HOUR: Decimal("18.5") if h % 24 == 2 else Decimal("1.0") for h in range(4 * 24 + 8)}
    attack = {22: 10, 23: 11, 24: 13, 25: 15, 26: 17.9, 27: 13}
    for h, extra in attack.items():
        costs[t0 + (3 * 24 + h) * HOUR] += Decimal(str(extra))
    _, spans = series_spikes(costs, HOUR)
    assert spans == [(t0 + (3 * 24 + 22) * HOUR, t0 + (3 * 24 + 27) * HOUR)]


def test_a_second_key_that_starts_minutes_into_a_short_export_has_no_usual_of_its_own():
    """Per-minute usage (matrix seed 13 #74): the export of ten minutes' history begins at 21:00, a second key the
    attacker alone uses starts at 21:08 and spends every minute for six hours, its rate sagging after two. Searched
    by quarter hours, its first quarter held spend and it looked like a key in use before: its first minutes were
    its usual, the spike only the hours above twice that (end 3.5 hours early, -69 %). Silent for eight minutes,
    four times longer than any pause in its first hour, it started there: the whole six hours are the spike. A key
    calling every few minutes whose first minutes were quiet is no newcomer."""
    from forensics.analysis.provider_spikes import starts_late

    t0 = pd.Timestamp("2026-11-14 21:00")
    costs = {t0 + m * MINUTE: Decimal(0) for m in range(8)}
    costs |= {t0 + (8 + m) * MINUTE: Decimal("1.10" if m < 150 else "0.35") if (m + 1) % 29 else Decimal(0)
              for m in range(358)}
    _, spans = series_spikes(costs, MINUTE)
    assert spans == [(t0 + 8 * MINUTE, t0 + 365 * MINUTE)]
    assert starts_late(costs, MINUTE)
    slow = {t0 + m * MINUTE: Decimal("0.3") if m % 4 == 3 else Decimal(0) for m in range(120)}
    assert not starts_late(slow, MINUTE)
    # matrix seed 4242 #438: the export's first minute 22:03, the key's own calls from 22:11 at 22:13, 22:17, 22:19,
    # 22:21 (three quiet minutes at most), a leak from 22:25. Eight quiet minutes are not twice three by enough to
    # say the key began there: its own calls of the quarter hour before the leak were taken as the leak's (-8 min)
    t1 = pd.Timestamp("2026-11-14 22:03")
    own = {t1 + m * MINUTE: Decimal(0) for m in range(120)} | {t1 + m * MINUTE: Decimal("0.25") for m in (8, 10, 14, 16,
                                                                                                          18)}
    assert not starts_late(own | {t1 + m * MINUTE: Decimal("0.8") for m in range(22, 120)}, MINUTE)


def test_a_key_whose_own_calls_came_before_an_attack_on_it_did_not_start_with_it():
    """Matrix seed 8086 #161: per-minute usage from 22:20, the key silent for eight minutes, then its own calls every
    minute or two ($0.2 or less each) for a quarter hour, then a leak spending every minute for hours. Eight quiet
    minutes are more than three times its longest pause (two), but its first quarter hour spent a tenth of the
    leak's: its own calls were its usual, not nothing (as nothing, its nightly batch inside the leak was the leak's)."""
    from forensics.analysis.provider_spikes import starts_late

    t0 = pd.Timestamp("2026-11-14 22:20")
    costs = {t0 + m * MINUTE: Decimal(0) for m in range(240)}
    costs |= {t0 + m * MINUTE: Decimal("0.2") for m in (8, 9, 10, 13, 16, 18, 21)}
    costs |= {t0 + m * MINUTE: Decimal("0.8") for m in range(23, 240)}
    assert not starts_late(costs, MINUTE)
    # the same minutes the leak's own, as dense as the rest of it: it started there
    assert starts_late(costs | {t0 + m * MINUTE: Decimal("0.8") for m in range(8, 23)}, MINUTE)


def test_an_attack_at_night_and_the_mornings_ramp_are_two_spikes():
    """Hourly usage (matrix seed 42 #5): three days of a key spending ~$1.50 an hour, nothing at 04:00; a stuffed
    key's $89 and $113 at 01:00-02:00, then a night of a few calls and the office's morning above twice its usual
    from 07:00. 04:00 and 05:00 spent cents over their usual (nothing on other nights): no quiet hour between by
    the letter, the attack ran on to 09:00 (+7 h, +52 % of its cost). A bucket a twentieth of the larger run's
    mean excess above its usual is quiet: the attack ends at 02:00."""
    t0 = pd.Timestamp("2026-11-13")
    costs = {t0 + h * HOUR: Decimal(0) if h % 24 == 4 else Decimal("1.5") for h in range(3 * 24 + 12)}
    night = {25: "89.9", 26: "113.8", 27: "0.28", 28: "0.94", 29: "1.6", 30: "2.6", 31: "5.2", 32: "9.0", 33: "3.0"}
    for h, c in night.items():
        costs[t0 + (2 * 24 + h) * HOUR] = Decimal(c)
    _, spans = series_spikes(costs, HOUR)
    assert spans[0] == (t0 + (3 * 24 + 1) * HOUR, t0 + (3 * 24 + 2) * HOUR)


def test_a_slow_scripts_spike_does_not_start_at_the_keys_own_calls_before_it():
    """Per-minute usage (matrix seed 77 #326): the key's own gpt-4o calls, one a minute at 50k input and 1 %
    output, then a script at three calls a minute (25k input, 10 % output). Its ramp took in the two minutes of
    the key's own calls before it: by their output they are the key's, and the spike starts at the script's first
    minute. Without output tokens nothing is said."""
    from forensics.analysis.provider_spikes import own_edges

    t0 = pd.Timestamp("2026-11-14 23:00")
    rows = _minute_usage(t0, [(m, 1, 1, 50_000, 500) for m in range(6)] + [(6, 60, 3, 25_000, 2_500)])
    run = [t0 + m * MINUTE for m in range(4, 66)]
    assert own_edges(rows, run, MINUTE) == run[2:]
    assert own_edges(rows.drop(columns="output_tokens"), run, MINUTE) == run
    # matrix seed 11 #116: a model new to its key (no call of it outside the spike to compare with); the proxy's own
    # gpt-4o call three minutes after the attack writes 0.7 output tokens per 100 of input against the attack's 9
    rows = _minute_usage(t0, [(0, 60, 4, 27_000, 2_500), (62, 1, 1, 57_877, 389)])
    run = [t0 + m * MINUTE for m in range(63)]
    assert own_edges(rows, run, MINUTE) == run[:60]
    thin = _minute_usage(t0, [(0, 60, 4, 27_000, 2_500), (62, 1, 1, 27_000, 1_400)])   # an attack call writing less
    assert own_edges(thin, run, MINUTE) == run


def test_a_bucket_under_its_usual_inside_a_spike_takes_nothing_off_it():
    """A spike over the minutes of last night's batch (matrix seed 77 #326): the usual of those minutes is the
    batch's $3.39, tonight's batch started five minutes later. Those minutes spent under their usual: the spike
    has none of its spend there, not a negative part (-10.4 % of its cost that way)."""
    from forensics.analysis.proxy_load import proxy_adjusted

    run = [T0 + m * MINUTE for m in range(10)]
    costs = dict(zip(run, [Decimal("0.3")] * 10))
    usual = dict.fromkeys(run, Decimal("0.03")) | {run[4]: Decimal("3.39"), run[5]: Decimal("3.39")}
    assert proxy_adjusted(costs, usual, run, MINUTE, set())[1] == Decimal("0.27") * 8


def test_a_spikes_first_calls_are_told_from_the_keys_by_their_output_tokens():
    """A slow script (three calls a minute, 27k input, 10 % output) whose first calls came at 22:19 and 22:22, the
    spike standing out from 22:24 (matrix seed 21 #202). The key's own calls are of every size (25k and 75k), so
    size says nothing; their output is 1 % of their input. By output, 22:19's three calls hold one of the
    script's, 22:22's is one: the spike opens at 22:19. The key's own calls just before stay out, and so does one
    of its calls that wrote 6 % six minutes before (matrix seed 77 #425: the start ten minutes early that way)."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-14 22:00")
    rows = _usage([(t0 + m * MINUTE, "gpt-4o", 1, 25_000 if m % 4 else 75_000, 250 if m % 4 else 750, 0.1)
                   for m in range(0, 18, 2)]
                  + [(t0 + 13 * MINUTE, "gpt-4o", 1, 26_840, 1_600, 0.08),
                     (t0 + 19 * MINUTE, "gpt-4o", 3, 106_319, 3_077, 0.28),
                     (t0 + 22 * MINUTE, "gpt-4o", 1, 28_965, 2_865, 0.10)]
                  + [(t0 + m * MINUTE, "gpt-4o", 3, 81_000, 8_100, 0.28) for m in range(24, 60)])
    costs = {t: Decimal(str(c)) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    run = [t0 + m * MINUTE for m in range(24, 60)]
    assert lead_in(rows, costs, run, MINUTE) == [t0 + 19 * MINUTE, t0 + 22 * MINUTE]


def test_a_slow_scripts_last_call_after_a_quiet_minute_ends_it():
    """A slow script (three calls a minute, 10 % output) whose refined spike ended at 02:49; its last call came at
    02:51 after a quiet minute (matrix seed 5 #420: the end two minutes early). By its output it is the script's:
    the spike ends with it. The key's own call four minutes later (1 % output) is not."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-15 02:00")
    rows = _minute_usage(t0, [(m, 1, 1, 60_000, 600) for m in range(-40, -20, 3)] + [(0, 50, 3, 27_000, 2_700),
                                                                                   (51, 1, 2, 20_000, 2_400),
                                                                                   (55, 1, 1, 60_000, 600)])
    costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    run = [t0 + m * MINUTE for m in range(50)]
    assert lead_in(rows, costs, run, MINUTE, after=True) == [t0 + 51 * MINUTE]


def test_a_slow_leak_among_the_keys_own_calls_is_followed_back_to_its_first_call():
    """Per-minute usage of 13 minutes before a slow leak (matrix seed 2718 #215): the key's own calls (60k input,
    1 % output) every five minutes, the leak's (25k, 9 % output) three or four a minute for 37 minutes with a pause
    of seven, then four a minute. The leak's early minutes were most of the key's calls outside the spike, so the
    key's own calls seemed to write like the spike's and output told nothing (start +37 min). Its own calls are the
    buckets that write apart from the spike's (two means); the chain then bridges the pause (eight minutes at most,
    the leak going on beyond it) and ends where the key's own calls went on without it. When the leak is there from
    the export's first minute nothing shows where it began: no first calls. A key whose own calls are the spike's
    kind, their output spread, has no such two kinds."""
    import random

    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-14 21:53")
    own = [(m, 1, 1, 60_000 + 2_000 * (m % 9), 500 + 60 * (m % 7)) for m in range(3, 175, 5)]
    leak = [(m, 1, 3 + m % 2, 25_000, 1_800 + 300 * (m % 4)) for m in range(13, 50) if not 21 <= m <= 27]
    spike = [(50, 120, 4, 25_000, 2_500)]
    run = [t0 + m * MINUTE for m in range(50, 170)]

    def first_calls(spec) -> list[int]:
        rows = _minute_usage(t0, spec)
        costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
        return [int((t - t0) / MINUTE) for t in lead_in(rows, costs, run, MINUTE)]
    assert first_calls(own + leak + spike) == [*range(13, 21), *range(28, 50)]
    assert first_calls(own[2:] + leak + spike) == []
    draw = random.Random(1)
    same = [(m, 1, 1, 25_000, int(2_500 * draw.lognormvariate(0, 0.6))) for m in range(0, 50, 2)]
    same += [(m, 1, 4, 25_000, int(2_500 * draw.lognormvariate(0, 0.3))) for m in range(50, 170)]
    assert first_calls(same) == []


def test_a_leaks_first_minutes_in_the_quarter_hour_before_it_stood_out_leave_the_usual():
    """Per-minute usage of a key (matrix seed 6007 #319, fresh; its nginx shows only the proxy's own calls): an
    export from 23:19, the key's own gpt-4o-mini calls every four minutes and a gpt-4o call at 23:20; a leak from
    23:27, three calls a minute, then four, then ten from 02:00, until 04:58. The export's first quarter hour is the
    short history's usual, and three of its minutes were the leak's first: its usual $1.55 a quarter hour against the
    key's own cents (-15.8 %). The leak's first calls are found (`lead_in`) in that quarter, before the one it stood
    out in: that quarter is the spike's, and the usual is the rest's. The search itself now sees the leak rise inside
    that first quarter (`_first_rise`, matrix seed 2222 #181) and starts it at 23:27 against the key's own cents;
    `slow_start_usual` still mends a usual taken from such a quarter."""
    from forensics.analysis.provider_spikes import slow_start_usual

    t0 = pd.Timestamp("2026-11-14 23:19")

    def call(m: int, model: str, n: int, i: int, o: int) -> tuple:
        per_m = (0.15, 0.6) if model == "gpt-4o-mini" else (2.5, 10)
        return t0 + m * MINUTE, model, n, n * i, n * o, n * (per_m[0] * i + per_m[1] * o) / 1e6
    own = [call(m, "gpt-4o-mini", 1, 3_000, 300) for m in range(0, 346, 4)]
    own += [call(1, "gpt-4o", 1, 34_616, 405), call(346, "gpt-4o", 1, 127_676, 324)]
    leak = [call(m, "gpt-4o", 3 if m < 48 else 4 if m < 161 else 10, 27_000, 2_700) for m in range(8, 340)]
    rows = _usage(own + leak)
    per = rows.groupby("bucket_start")["cost_usd"].sum()
    fine = {t0 + m * MINUTE: Decimal(str(round(per.get(t0 + m * MINUTE, 0), 6))) for m in range(347)}
    usual, [(first, last)] = series_spikes(fine, MINUTE)
    run = [t for t in fine if first <= t <= last]
    assert first == t0 + 8 * MINUTE and sum((usual[t] for t in run), Decimal(0)) < 8
    # the usual the search took before: the first quarter's $1.55 spread over the export
    inflated = dict.fromkeys(fine, Decimal("1.55") / 15)
    run = [t for t in fine if t0 + 11 * MINUTE <= t <= last]
    before = sum((inflated[t] for t in run), Decimal(0))
    after = sum((slow_start_usual(rows, fine, inflated, run, MINUTE, {})[t] for t in run), Decimal(0))
    assert before > 15 and after < before / 2 and after < 8



def test_a_leaks_first_calls_are_followed_back_past_minutes_that_wrote_like_the_keys_own():
    """Per-minute usage (matrix seed 5151 #335, fresh): the key's own gpt-4o calls (46k-70k input, under 1 % output)
    every eight minutes; a leak from minute 120, one to three calls a minute (25k-41k, 8-14 % output) with quiet
    minutes, three of its minutes on end writing like the key's own (40k, 1.5 %); then eight calls a minute from
    minute 178. The spike's first calls were a chain back from it with links five minutes apart at most: the six
    minutes around those three ended it 26 minutes after the leak began. A link up to eight minutes away bridges
    them when the chain goes on beyond it (another within five minutes): the chain reaches the leak's first minute.
    A lone call six minutes out stays no link (matrix seed 77 #425, above)."""
    from forensics.analysis.provider_spikes import lead_in

    t0 = pd.Timestamp("2026-11-14 20:24")
    own = [(m, 1, 1, 46_000 + 3_000 * (m % 9), 300 + 40 * (m % 5)) for m in range(3, 400, 8)]
    quiet = (2, 3, 4, 6, 8, 14, 15, 16, 17, 21, 22, 23, 24, 25, 27, 30, 36, 41, 42, 43, 45, 51, 53, 55, 57)
    leak = [(120 + m, 1, 1 + m % 3, 25_000 + 1_000 * (m % 17), 2_000 + 250 * (m % 7))
            for m in range(57) if m not in quiet]
    leak += [(120 + m, 1, 1, 40_000, 600) for m in (21, 24, 25)]
    rows = _minute_usage(t0, own + leak + [(178, 200, 8, 27_000, 2_600)])
    costs = {t: Decimal(str(round(c, 6))) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    run = [t0 + m * MINUTE for m in range(178, 378)]
    first = lead_in(rows, costs, run, MINUTE)
    assert first[0] == t0 + 120 * MINUTE and first[-1] == t0 + 176 * MINUTE


def test_the_attacks_peak_hour_where_nginx_shows_the_proxys_batch_is_split_by_output():
    """Hourly usage (matrix seed 123 #482): the proxy's key used outside it from 22:41 to 02:47, accelerating; its
    peak hour 02:00 (906 of the attack's calls) also holds the proxy's nightly batch (88 calls, which nginx shows).
    Its calls are 1.24 times the spike's size and a quarter of its input the batch's by output, under every
    threshold of a mixed bucket: the spike ended at 02:00, the hour cut off whole as the proxy's surge (-41 %).
    nginx says another workload is there: split by output, the attack gets ~900 of its 993 calls."""
    from forensics.analysis.provider_spikes import split_by_output

    t0 = pd.Timestamp("2026-11-14 16:00")
    own = [(t0 + h * HOUR, "gpt-4o", n, i, o, c) for h, (n, i, o, c) in enumerate(
        [(11, 700_000, 6_000, 1.81), (9, 520_000, 5_100, 1.35), (12, 810_000, 7_400, 2.10), (10, 640_000, 5_900, 1.66),
         (8, 500_000, 4_300, 1.29), (11, 690_000, 6_500, 1.79)])]
    spike = [(71, 1_900_000, 170_000, 6.45), (282, 7_574_796, 678_384, 25.72), (505, 13_466_979, 1_281_457, 46.48),
             (534, 14_721_672, 1_316_595, 49.97), (985, 32_613_942, 2_337_997, 104.91)]
    after = [(1, 49_997, 531, 0.13), (3, 291_847, 2_488, 0.75)]
    rows = _usage(own + [(t0 + (6 + h) * HOUR, "gpt-4o", *x) for h, x in enumerate(spike + after)])
    costs = {t: Decimal(str(c)) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    usual = dict.fromkeys(costs, Decimal("1.6"))
    run = [t0 + h * HOUR for h in range(6, 11)]
    peak = t0 + 10 * HOUR
    assert split_by_output(rows, costs, usual, run, run) == []
    [m] = split_by_output(rows, costs, usual, run, run, {peak})
    assert m.bucket == peak and m.by == "output" and 850 < m.spike_calls < 960


def test_a_keys_quiet_start_the_export_listed_is_its_past():
    """Per-minute usage of the proxy's key (matrix seed 123 #469): the export's pages list every minute from 21:37,
    the key used outside the proxy from 21:53 for four and a half hours, fastest in its first minutes (the proxy's own
    calls a few cents an hour). Usage rows begin at 21:53: without the empty minutes the attack's first hours were
    its own usual, and only its later surge stood out (start +2.6 h, -82 %). With them the key spent nothing for 16
    minutes: the spike starts at 21:53."""
    from forensics.analysis.provider_spikes import _spikes

    t0, minute = pd.Timestamp("2026-11-14 21:53"), pd.Timedelta(minutes=1)
    spend = [1.2] * 7 + [0.95] * 53 + [0.55 if m % 3 else 0.45 for m in range(180)] + [1.25] * 30
    rows = _usage([(t0 + m * minute, "gpt-4o", 10, 200_000, 18_000, c) for m, c in enumerate(spend)])
    frame = rows.assign(provider="openai", series="key_1", bucket_end=lambda f: f["bucket_start"] + minute)
    exports = pd.DataFrame({"width": [minute], "first": [t0], "last": [t0 + len(spend) * minute]})
    listed = pd.DataFrame({"provider": ["openai"], "width": [minute], "first": [t0 - 16 * minute],
                           "last": [t0 + (len(spend) - 1) * minute]})
    [(*_, spans)] = _spikes(frame, exports.assign(first=t0 - 16 * minute), listed)[1]
    assert spans == [(t0, t0 + (len(spend) - 1) * minute)]
    assert all(first > t0 + 60 * minute for first, _ in _spikes(frame, exports)[1][0][5])
    # 123 #319: the pages list five quiet minutes before a key that calls every few minutes (pauses up to eight),
    # its attack 50 minutes later (the five minutes a quarter hour of their own): no late start, the key's own calls
    # are its usual
    t1 = pd.Timestamp("2026-11-14 22:01")
    own = [(t1 + m * minute, "gpt-4o", 1, 30_000, 300, 0.08 if m % 8 else 0.4) for m in range(0, 48, 4)]
    attack = [(t1 + (50 + m) * minute, "gpt-4o", 8, 200_000, 18_000, 0.9) for m in range(120)]
    frame = _usage(own + attack).assign(provider="openai", series="key_1",
                                        bucket_end=lambda f: f["bucket_start"] + minute)
    listed = listed.assign(first=t1 - 5 * minute)
    [(*_, spans)] = _spikes(frame, exports.assign(first=t1 - 5 * minute), listed)[1]
    assert spans[0][0] == t1 + 50 * minute


def test_a_call_before_a_spike_that_nginx_shows_the_proxy_serving_is_not_its_first():
    """Per-minute usage of the proxy's key beside nginx (matrix seed 123 #218): the proxy's own calls at 22:32 and
    22:37, of the size a slow leak from 22:40 sends, were taken as the leak's first calls (start -3 min). nginx
    shows the proxy serving exactly those calls: the series carries the proxy's calls (it holds calls wherever nginx
    served some outside the spike), and none of those buckets is the spike's. Another key's series, quiet where the
    proxy served, is not explained by it."""
    from forensics.analysis.provider_spikes import lead_in, proxy_explained

    t0 = pd.Timestamp("2026-11-14 22:00")
    own = [(t0 + m * MINUTE, "gpt-4o", 1, 60_000, 400, 0.16) for m in (0, 7, 13, 20)]
    own += [(t0 + 32 * MINUTE, "gpt-4o", 2, 54_000, 4_800, 0.18), (t0 + 37 * MINUTE, "gpt-4o", 1, 27_500, 2_400, 0.09)]
    spike = [(t0 + (40 + m) * MINUTE, "gpt-4o", 5, 135_000, 12_000, 0.46) for m in range(60)]
    rows = _usage(own + spike)
    costs = {t: Decimal(str(c)) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    run = [t0 + (40 + m) * MINUTE for m in range(60)]
    served = {t0 + m * MINUTE: n for m, n in ((0, 1), (7, 1), (13, 1), (20, 1), (32, 2), (37, 1))}
    assert lead_in(rows, costs, run, MINUTE) == [t0 + 32 * MINUTE, t0 + 37 * MINUTE]
    explained = proxy_explained(rows, run, MINUTE, served)
    assert explained == set(served)
    assert lead_in(rows, costs, run, MINUTE, explained=explained) == []
    foreign = rows[rows["bucket_start"] >= t0 + 37 * MINUTE]
    assert proxy_explained(foreign, run, MINUTE, served) == set()


def test_an_hour_of_the_attack_beside_a_smaller_nightly_batch_than_usual_counts_the_batch_it_holds():
    """Hourly usage (matrix seed 55 #4): the proxy's key used outside it from Saturday 22:05 to Sunday 03:15; the
    nightly batch of long documents (~105k input tokens a call) runs at 02:00, 68 and 71 calls on weekdays, 27 on
    Saturday. 02:00's usual was the median night's (68 calls, $18): the Sunday batch ran ~21 and the attack's hour
    came out $12 short (-15 %). The hour's own calls and tokens say how much of the batch ran: by output (the
    attack writes 9 output tokens per 100 of input, the batch 1), ~245 of its 271 calls are the attack's."""
    from forensics.analysis.provider_spikes import mixed_usual

    t0, day = pd.Timestamp("2026-11-12"), pd.Timedelta(days=1)
    batch = [(0, 68, 7_003_278, 78_161, 18.29), (1, 71, 7_305_882, 84_866, 19.11), (2, 27, 2_947_194, 34_532, 7.71)]
    spike = [(-2, 136, 3_589_678, 333_711, 12.31), (-1, 178, 4_889_050, 453_539, 16.76),
             (0, 152, 4_035_667, 344_625, 13.53), (1, 168, 4_634_855, 409_060, 15.68),
             (2, 271, 8_932_329, 633_716, 28.67), (3, 82, 2_252_504, 228_190, 7.91)]
    rows = _usage([(t0 + d * day + 2 * HOUR, "gpt-4o", *x) for d, *x in batch]
                  + [(t0 + d * day + h * HOUR, "gpt-4o", 5, 150_000, 1_800, 0.39) for d in range(3)
                     for h in (-2, -1, 0, 1, 3)]
                  + [(t0 + 3 * day + h * HOUR, "gpt-4o", *x) for h, *x in spike])
    costs = {t: Decimal(str(c)) for t, c in zip(rows["bucket_start"], rows["cost_usd"])}
    usual = dict.fromkeys(costs, Decimal("0.39")) | {t0 + 3 * day + 2 * HOUR: Decimal("18.29")}
    run = [t0 + 3 * day + h * HOUR for h in range(-2, 4)]
    [m] = mixed_usual(rows, costs, usual, run, HOUR)
    assert m.bucket == t0 + 3 * day + 2 * HOUR and m.by == "output" and 235 < m.spike_calls < 260
    assert Decimal(21) < m.cost < Decimal(23)            # against $10.38 above the median night's batch
    # the same night with the attack's calls in that hour alone: all of them its (no batch ran)
    alone = rows.assign(input_tokens=rows["input_tokens"].where(rows["bucket_start"] != m.bucket, 7_436_000),
                        output_tokens=rows["output_tokens"].where(rows["bucket_start"] != m.bucket, 691_000))
    [m] = mixed_usual(alone, costs, usual, run, HOUR)
    assert m.spike_calls > 265
    # a usual of the attack's own size (an office's calls at that hour) is not another workload's
    office = rows["requests"].isin([68, 71, 27])
    assert mixed_usual(rows.assign(input_tokens=rows["input_tokens"].where(~office, rows["requests"] * 27_000)),
                       costs, usual, run, HOUR) == []


def test_a_dozen_minutes_of_two_sizes_are_told_in_one_line():
    """Matrix seed 55 #336: fourteen minutes of the nightly batch, each split by output, made fourteen evidence lines
    in the report. More than MIXED_LINES are told in one line with their totals; a few, one line each."""
    from forensics.analysis.provider_spikes import MIXED_LINES, MixedEdge, _mixed_evidence

    t0 = pd.Timestamp("2026-11-16 02:16")
    mixed = [MixedEdge(t0 + i * MINUTE, 13, 100_000 + 1_000 * i, 110_416, 19_840, 12.5, Decimal("3.50"), "output")
             for i in range(14)]
    [line] = _mixed_evidence(mixed, [], MINUTE)
    assert line.startswith("14 of its buckets from 2026-11-16 02:16 to 02:30 UTC hold calls of two sizes: 182 call(s)")
    assert "100,000 to 113,000 input tokens" in line and "about 175 of them" in line and "$49.00" in line
    assert len(_mixed_evidence(mixed[:MIXED_LINES], [], MINUTE)) == MIXED_LINES
