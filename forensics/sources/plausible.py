"""The times a record of ours can hold, and the SQL that reads epoch numbers and refuses the rest.

LLM gateways did not exist before 2015, and no log is written more than a day ahead of when it is ingested: a time
outside [2015-01-01, ingest wall clock + 1 day] is a broken or forged record (Go's zero time 0001-01-01, an unset
epoch 0, year 9999). Such a record is quarantined at load, with its raw text, the reason naming the field and value,
instead of stretching every per-minute series of the investigation over thousands of years.

An epoch number carries no unit: it is read in the unit (seconds, milliseconds, microseconds, nanoseconds) that makes
it a plausible time. The window is under a factor of 1000 wide, so at most one unit fits; a number that is plausible
in none is quarantined, its reading in seconds shown in the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

EARLIEST = datetime(2015, 1, 1)
FUTURE_SLACK = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1)
_UNITS = ((1, 1_000_000), (1_000, 1_000), (1_000_000, 1), (1_000_000_000, "0.001"))  # per second, to microseconds


def _utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class TimeWindow:
    """[earliest, latest] in naive UTC: the times a record may carry."""

    earliest: datetime
    latest: datetime

    @classmethod
    def at(cls, now: datetime | None = None) -> TimeWindow:
        """The window of an ingest whose wall clock (naive UTC) reads `now`."""
        return cls(EARLIEST, (now or _utc_now()) + FUTURE_SLACK)

    def _us(self, t: datetime) -> int:
        return (t - _EPOCH) // timedelta(microseconds=1)

    @property
    def text(self) -> str:
        return f"{self.earliest:%Y-%m-%d} .. {self.latest:%Y-%m-%d %H:%M:%S} UTC"

    def lo_sql(self) -> str:
        return f"TIMESTAMP '{self.earliest:%Y-%m-%d %H:%M:%S}'"

    def hi_sql(self) -> str:
        return f"TIMESTAMP '{self.latest:%Y-%m-%d %H:%M:%S.%f}'"

    def outside_sql(self, ts: str) -> str:
        """SQL: true when the TIMESTAMP `ts` is outside the window (NULL when `ts` is NULL)."""
        return f"({ts} NOT BETWEEN {self.lo_sql()} AND {self.hi_sql()})"

    def outside_us_sql(self, us: str) -> str:
        """SQL: true when `us` (microseconds since the epoch) is outside the window."""
        return f"({us} NOT BETWEEN {self._us(self.earliest)} AND {self._us(self.latest)})"

    def epoch_us_sql(self, num: str) -> str:
        """SQL: microseconds since the epoch from the epoch number `num` (a DECIMAL), in the one unit that makes it a
        plausible time; a number plausible in none is read as seconds (for the reason), NULL when that is no time."""
        lo, hi = (self._us(self.earliest) + 999_999) // 1_000_000, self._us(self.latest) // 1_000_000
        branches = " ".join(f"WHEN {num} BETWEEN {lo * per} AND {(hi + 1) * per - 1} THEN {num} * {to_us}"
                            for per, to_us in _UNITS)
        # seconds beyond +-9e12 are past DuckDB's timestamps (year 294247): no time at all
        return f"CASE {branches} WHEN abs({num}) < 9000000000000 THEN {num} * 1000000 END"

    def epoch_sql(self, num: str) -> str:
        """SQL: the TIMESTAMP of the epoch number `num` (see epoch_us_sql), NULL when it is no time."""
        return f"try(make_timestamp(CAST({self.epoch_us_sql(num)} AS BIGINT)))"

    def reason_sql(self, field: str, raw: str, ts: str, numeric: str) -> str:
        """SQL: why a record whose `field` (raw text `raw`, read as the TIMESTAMP `ts`) is outside the window cannot
        load, NULL when it is inside (or no time at all: the caller says so). `numeric` is SQL true when `raw` is an
        epoch number (then one no unit makes a time is outside the window too)."""
        shown = f"strftime({ts}, '%Y-%m-%d %H:%M:%S')"
        value = f"'{field} \"' || left({raw}, 80) || '\"'"
        units = "milliseconds, microseconds or nanoseconds"
        return (f"CASE WHEN {numeric} AND {ts} IS NULL "
                f"THEN {value} || ' is not a plausible time in epoch seconds, {units}: outside {self.text}' "
                f"WHEN {self.outside_sql(ts)} THEN CASE WHEN {numeric} "
                f"THEN {value} || ' is not a plausible time in epoch seconds (' || {shown} || '), {units}: "
                f"outside {self.text}' "
                f"ELSE {value} || ' is ' || {shown} || ' UTC: outside the plausible range {self.text}' END END")
