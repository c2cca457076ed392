"""The detector over randomized simulator draws (forensics/detect/matrix.py): the issue's acceptance thresholds.

Per draw with an attack: per-request ROC-AUC >= 0.97 and recall >= 0.9 at the calibrated threshold; normal requests
flagged <= 1 % in every draw; false alerts per held-back quiet day <= 2 in the median draw; no draw crashes. A draw
the incident search misleads (it leaves the attack in the quiet data the detector learns from, or calls normal
traffic an incident so that its like never reaches training) is counted apart: none may fail either.
Draws are short (history capped) so 50 of them take a few minutes; bench/detect_matrix.py runs hundreds with full-
length histories.
"""
from datetime import datetime, timedelta

import numpy as np
import pytest

from forensics.detect import matrix
from forensics.detect import run

SLOW_DRAWS = 50
SLOW_SEED = 1
MAX_HISTORY_S = 6 * 3600
FAST_ESTIMATORS = 100
# draws failing because the incident search missed the attack or made one up (#12): none (draw 4 of seed 1, once
# allowed here, no longer misfires: the search finds no incident in it). The full-length bench's misfires (data-team
# called a leaked key on day after day, benign cost spikes) pass on the detector's own criteria: a network or client
# software a key uses a tenth of the time is its own, a benign incident stays in training
MAX_MISFIRES = 0


def test_one_draw_meets_the_thresholds():
    """Default tier: one short open-proxy draw, end to end (simulate, ingest, search, train, score, measure)."""
    draw = matrix.detect_draws(1, seed=3, scenarios=("open_proxy",), max_history_s=2 * 3600)[0]
    r = matrix.run_detect_draw(draw, n_estimators=FAST_ESTIMATORS)
    assert r.error is None, r.error
    m = r.metrics
    assert m["attack"] > 500 and m["normal"] > 50
    assert m["auc"] >= matrix.MIN_AUC and m["recall"] >= matrix.MIN_RECALL, m
    assert m["normal_flagged_share"] <= matrix.MAX_NORMAL_FLAGGED, m
    assert r.failures == []


@pytest.mark.parametrize("scenario", ["baseline", pytest.param("key_stuffing", marks=pytest.mark.slow)])
def test_too_little_quiet_data_says_so_and_still_scores(scenario):
    """Ten minutes of history (quiet traffic only; a stuffing attack that is most of the case): a one-line note, a
    model from what there is, every request scored."""
    draw = matrix.detect_draws(2, seed=0, scenarios=(scenario,), max_history_s=600)[1]
    r = matrix.run_detect_draw(draw, n_estimators=FAST_ESTIMATORS)
    assert r.error is None, r.error
    assert r.note.startswith("only ") and "\n" not in r.note
    assert r.metrics["requests"] > 0 and r.metrics["normal_flagged_share"] <= matrix.MAX_NORMAL_FLAGGED
    if scenario == "key_stuffing":
        assert r.metrics["attack"] > 0 and r.metrics["recall"] >= matrix.MIN_RECALL


@pytest.mark.parametrize("span", [timedelta(0), timedelta(microseconds=3), timedelta(minutes=7), timedelta(days=9)])
def test_blocks_are_never_empty_or_inverted(span):
    """A case of one instant, of microseconds, of minutes, of days: the blocks the plan cuts cover it in order."""
    first = datetime(2026, 11, 16, 2, 0)
    block = run.block_length(span)
    pieces = run._blocks(first, first + span, block)
    assert pieces and all(a < b for _, a, b in pieces)
    assert pieces[0][1] == first and pieces[-1][2] == first + span + run.TICK
    assert all(p[2] == q[1] for p, q in zip(pieces, pieces[1:]))
    merged = run._merge([(a, b) for _, a, b in pieces])
    assert merged == [(first, first + span + run.TICK)]


@pytest.mark.slow
def test_fifty_randomized_draws_meet_the_acceptance_thresholds():
    results = matrix.run(SLOW_DRAWS, SLOW_SEED, max_history_s=MAX_HISTORY_S, n_estimators=FAST_ESTIMATORS)
    assert len(results) == SLOW_DRAWS
    errors = [r for r in results if r.error and "nothing to score" not in r.error]
    assert not errors, matrix.draw_table(errors)
    # the detector's own side: every draw the incident search did not mislead meets the thresholds (draw 31, a
    # nightly batch key first seen in the held-back time, is judged against the case's keys)
    bad = [r for r in results if r.failures and not r.search_misfire and not r.error]
    assert not bad, matrix.summary(results) + "\n" + matrix.draw_table(bad)
    # among them attacks by a key or group the quiet data never shows (an open proxy's keyless requests, a stuffed
    # key's, a leaked key whose every request the search claimed): judged against the case's keys, still caught
    attacked = {r.draw.scenario for r in results if not r.error and r.metrics["attack"]}
    assert {"open_proxy", "key_stuffing", "leaked_virtual_key"} <= attacked
    # the search's misses and false incidents (issue #12): counted apart, and none fails either
    misfires = [r for r in results if r.failures and r.search_misfire]
    assert len(misfires) <= MAX_MISFIRES, matrix.draw_table(misfires)
    per_day = [r.metrics["heldout_alerts_per_day"] for r in results
               if not r.error and not np.isnan(r.metrics["heldout_alerts_per_day"])]
    assert per_day and np.median(per_day) <= matrix.MAX_MEDIAN_HELDOUT_ALERTS_PER_DAY, matrix.summary(results)


# full-length draws where the incident search misfired and the detector once followed it (bench/detect_matrix.py):
# (draws, seed, index) -> what the search did
MISFIRES = {
    (200, 0, 131): "benign cost spikes over the data team's big requests, left out of training",
    (200, 0, 108): "the data team's key called a leaked key on day after day from its own office network",
    (200, 0, 6): "a benign cost spike, and a held-back block that took the office key's one busy morning",
    (500, 7, 68): "a keyless proxy's office clients called an open proxy over the whole case",
    (500, 7, 194): "the data team's whole day called a leaked key by a surge no faster than the office's traffic",
    (500, 7, 2): "a leaked key whose only own traffic, a CI burst from a private runner, was called a rate incident: "
                 "judged against the case's keys, its short prompts' long answers are no outlier on a log scale",
    (500, 7, 53): "a stuffed key's owner, calling from its own servers during the attack, caught in the incident: "
                  "its pace is its own network's, not the attacker's (22 quiet requests to learn from)",
    (500, 7, 186): "an office's second address called a leaked key's day after day: the key's cheap model's long "
                   "answers are no outlier on a log scale",
}


@pytest.mark.slow
@pytest.mark.parametrize("where", list(MISFIRES), ids=[f"seed{s}-draw{i}" for _, s, i in MISFIRES])
def test_a_misfiring_incident_search_does_not_make_the_detector_flag_normal_traffic(where):
    r = _quiet_enough(where, MISFIRES[where])
    if r.metrics["attack"]:
        assert r.metrics["recall"] >= matrix.MIN_RECALL, r.metrics


def _quiet_enough(where: tuple[int, int, int], why: str) -> matrix.DrawScore:
    """Draw `where` (draws, seed, index) run alone: no error, at most MAX_NORMAL_FLAGGED of its normal requests
    flagged."""
    n, seed, index = where
    r = matrix.run_detect_draw(matrix.detect_draws(n, seed)[index])
    assert r.error is None, r.error
    assert r.metrics["normal_flagged_share"] <= matrix.MAX_NORMAL_FLAGGED, (why, r.metrics)
    return r


# full-length draws where the detector alone flagged over 1 % of normal traffic (bench/detect_matrix.py)
DETECTOR_SIDE = {
    (500, 7, 74): "under an hour, a benign batch three quarters of the training: an office key's few cheap-model "
                  "requests with long answers topped the largest training score by chance",
    (500, 7, 148): "the same in a keyless proxy",
}


@pytest.mark.slow
@pytest.mark.parametrize("where", list(DETECTOR_SIDE), ids=[f"seed{s}-draw{i}" for _, s, i in DETECTOR_SIDE])
def test_a_short_training_time_does_not_make_the_detector_flag_normal_traffic(where):
    r = _quiet_enough(where, DETECTOR_SIDE[where])
    assert r.metrics["train_hours"] < 24                # a budget of less than one alert on the training time
