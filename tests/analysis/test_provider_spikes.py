"""Provider spikes on series shaped like the simulator's exports (forensics/simulate/provider_writer.py): a per-minute
usage export of a few hours, and a daily one whose last day is the day the evidence was collected."""
from __future__ import annotations

from decimal import Decimal

import pandas as pd

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


def test_a_quiet_stretch_ends_a_spike_and_what_follows_is_another():
    """A spike, half an hour with nothing, then a nightly batch: the refined spike stops at its last minute and never
    reaches the batch, which is a spike of its own."""
    costs = [0.05] * 60 + [2.0] * 90 + [0.0] * 30 + [3.0] * 6 + [0.05] * 30
    _, spans = series_spikes(minutes(costs), MINUTE)
    assert spans[0] == (T0 + 60 * MINUTE, T0 + 149 * MINUTE)
    assert all(first >= T0 + 180 * MINUTE for first, _ in spans[1:])


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
