"""Progress on stderr for the analyst waiting on a long run: one line per phase, a heartbeat at least every
HEARTBEAT seconds while a phase runs, terminal or not (a CI log or `2> run.log` shows where it is too).

The library reports through `phase()` and `note()`; they do nothing unless a command turned a reporter on
(`reporting()`), so library callers and tests stay silent.
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

HEARTBEAT = 3.0          # seconds between "still ..." lines (the promise is at least one line every 5 s)

_active: _Reporter | None = None


class _Reporter:
    def __init__(self, stream, redact):
        self.stream, self.redact = stream, redact
        self.t0 = time.monotonic()
        self.current: str | None = None
        self.since = self.t0
        self.timings: list[tuple[str, float]] = []      # (phase, seconds) of each phase ended, in order
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def say(self, text: str) -> None:
        with self.lock:
            self.last = time.monotonic()
            self.stream.write(f"forensics: [{self.last - self.t0:5.1f}s] {self.redact(text)}\n")
            self.stream.flush()

    def _beat(self) -> None:
        self.last = time.monotonic()
        while not self.stop.wait(0.5):
            now = time.monotonic()
            if now - self.last >= HEARTBEAT:
                self.say(f"... still {self.current} ({now - self.since:.0f}s)" if self.current is not None else
                         "... still working")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)


@contextmanager
def reporting(stream=None, redact=lambda s: s):
    """Turn progress lines on for the duration (the CLI's commands)."""
    global _active
    previous, _active = _active, _Reporter(stream or sys.stderr, redact)
    try:
        yield _active
    finally:
        _active.close()
        _active = previous


@contextmanager
def phase(name: str):
    """A phase of the run: announced when it starts; heartbeats while it runs."""
    r = _active
    if r is None:
        yield
        return
    outer, outer_since = r.current, r.since
    r.current, r.since = name, time.monotonic()
    r.say(name)
    try:
        yield
    finally:
        r.timings.append((name, time.monotonic() - r.since))
        r.current, r.since = outer, outer_since


def timings() -> list[tuple[str, float]]:
    """(phase, seconds) of every phase ended so far in this command, in the order they ended (a phase inside
    another ends first); empty when no reporter is on."""
    return list(_active.timings) if _active is not None else []


def active() -> bool:
    """Whether a command turned progress lines on (reporting())."""
    return _active is not None


def note(text: str) -> None:
    """One line now (a result the analyst wants before the run ends, e.g. the incident line)."""
    if _active is not None:
        _active.say(text)
