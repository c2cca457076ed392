"""The first look: a preliminary incident line seconds after `report` starts on raw logs, while the full (lossless)
ingest runs beside it.

It reads the LiteLLM logs among INPUT (the proxy's own record of each request: the source the incident search
reads; with none, the nginx access logs), smallest file first, with the project's own loaders into a scratch case in
memory, and runs the same incident search (analysis.incidents.find_incidents; nginx_incidents for nginx) after each
file. The attack found is printed as "first look (preliminary, ...): ..."; when none is found it says "nothing yet —
full analysis running", never all clear: the other logs and the provider's exports may still show one. The full
report then confirms or corrects it (`compare`).
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from forensics.sources import LoadOptions


@dataclass(frozen=True)
class Sighting:
    """An incident as the first look saw it."""

    verdict: str
    kind: str
    start: object          # datetime, UTC
    end: object
    requests: int

    def words(self) -> str:
        return (f"{self.verdict} {self.kind} {self.start:%Y-%m-%d %H:%M:%S} .. {self.end:%Y-%m-%d %H:%M:%S} UTC, "
                f"{self.requests:,} requests")


@dataclass
class Glance:
    """What the first look read and found; `line` is what it printed (None when it was stopped before it spoke)."""

    source: str | None = None             # which logs it read: 'LiteLLM', else 'nginx'
    files: list[str] = field(default_factory=list)
    records: int = 0
    bytes: int = 0
    skipped: int = 0                      # files of that source left unread, past BUDGET_BYTES
    span: tuple | None = None             # (first, last) request time in what it read
    sightings: list[Sighting] = field(default_factory=list)
    line: str | None = None


# bytes on disk the first look reads at most: beyond, it would double a long ingest's work and memory beside the full
# one, for a line that comes no sooner than the full search's
BUDGET_BYTES = 32 << 20
MAX_STEPS = 8                # files read one by one at most; more are read together, then searched once
EARLY = timedelta(hours=1)   # an incident starting this near the start of what was read may have begun before it


def source_files(inputs: list[str | Path], options: LoadOptions | None = None) -> dict[str, list[Path]]:
    """{family: its files} under `inputs` by the sources' own detection (litellm, nginx, ...), smallest first."""
    from forensics.ingest import expand_inputs, read_sample
    from forensics.sources import detect_format

    found: dict[str, list[Path]] = {}
    for path in expand_inputs(inputs):
        try:
            source, _ = detect_format(read_sample(path), path, options)
        except (OSError, EOFError, ValueError):   # a cut or unreadable file: the full ingest reports it
            continue
        if source is not None:
            found.setdefault(source.family, []).append(path)
    return {f: sorted(paths, key=lambda p: (p.stat().st_size, str(p))) for f, paths in found.items()}


def _proxy_search(case) -> list:
    from forensics.analysis.incidents import find_incidents

    return find_incidents(case).incidents


def _nginx_search(case) -> list:
    from forensics.analysis.nginx_incidents import find_nginx_incidents

    return [n.incident for n in find_nginx_incidents(case)]


# what the first look reads, the first family present: LiteLLM (the proxy's record of each request), else nginx
FAMILIES = (("litellm", "LiteLLM", _proxy_search, "SELECT min(start_time), max(coalesce(end_time, start_time)) "
             "FROM llm_requests WHERE start_time IS NOT NULL"),
            ("nginx", "nginx", _nginx_search, "SELECT min(time), max(time) FROM http_requests"))


def glance(inputs: list[str | Path], options: LoadOptions | None = None, say: Callable[[str], None] = print,
           stop: threading.Event | None = None) -> Glance:
    """Load the LiteLLM files of `inputs` (none: the nginx ones) one at a time into a scratch case and search it
    after each; say one line.

    It stops at the first file after which the search finds an attack and names the attacks (a session judged on
    part of the history only is not worth a word yet: suspicious or benign ones wait for every file). With none, once
    every file is read: what the search found, or "nothing yet". With `stop` set, it returns without a word between
    two files."""
    from forensics.api import Case

    stop = stop or threading.Event()
    g = Glance()
    present = source_files(inputs, options)
    family, g.source, search, span_sql = next((f for f in FAMILIES if f[0] in present), (None, None, None, None))
    files = present.get(family, [])
    chosen = []
    for path in files:
        g.bytes += path.stat().st_size
        if g.bytes > BUDGET_BYTES:
            break
        chosen.append(path)
    g.skipped = len(files) - len(chosen)
    # a search after each file, or after all of them when there are many (an object store's one file per request)
    steps = [[p] for p in chosen] if len(chosen) <= MAX_STEPS else [chosen]
    with Case.memory(options) as case:
        for step in steps:
            if stop.is_set():
                return g
            reports = case.ingest(step)
            g.files += [p.name for p in step]
            g.records += sum(r.loaded for r in reports)
            found = [Sighting(i.verdict, i.kind, i.start, i.end, int(i.requests or 0)) for i in search(case)]
            g.sightings = [s for s in found if s.verdict == "attack"] or found
            if any(s.verdict == "attack" for s in found):
                break
        g.span = case.execute(span_sql).fetchone() if g.files else None
    if stop.is_set():
        return g
    g.line = _line(g)
    say(g.line)
    return g


def _line(g: Glance) -> str:
    if not g.sightings:
        read = (f"{len(g.files)} {g.source} file(s), {g.records:,} records" if g.files else
                f"no {g.source} file" if g.skipped else "no LiteLLM or nginx log among INPUT")
        left = (f"; {g.skipped} {g.source} file(s) too large for a first look left to the full analysis"
                if g.skipped else "")
        return f"first look: nothing yet — full analysis running ({read} searched{left})"
    first, last = g.span
    names = ", ".join(g.files) if len(g.files) <= MAX_STEPS else f"{len(g.files):,} files"
    read = (f"{g.source} {names}: {g.records:,} records, {first:%Y-%m-%d %H:%M} .. "
            f"{last:%Y-%m-%d %H:%M} UTC")
    found = "; ".join(s.words() + (" (it starts near the beginning of what was read: it may have begun earlier)"
                                   if s.start - first < EARLY else "") for s in g.sightings)
    return f"first look (preliminary, from {read}): {found}; full analysis running"


class FirstLook:
    """`glance` in a thread beside the full ingest: start(), then finish() once the full search has run."""

    def __init__(self, inputs: list[str | Path], options: LoadOptions | None, say: Callable[[str], None]):
        self.stop = threading.Event()
        self.result: Glance | None = None
        self.error: BaseException | None = None

        def run():
            try:
                self.result = glance(inputs, options, say, self.stop)
            except Exception as e:    # a preliminary look never fails the run: the full ingest reports bad files
                self.error = e

        self.thread = threading.Thread(target=run, name="first-look", daemon=True)

    def start(self) -> FirstLook:
        self.thread.start()
        return self

    def finish(self) -> Glance | None:
        """Stop it (between two files) and wait for it; what it saw, or None when it said nothing."""
        self.stop.set()
        self.thread.join()
        return self.result if self.result is not None and self.result.line is not None else None


def compare(g: Glance, incidents: list[dict]) -> str:
    """One line: does the full analysis (findings.json's incidents) confirm the first look, or correct it, and how."""
    full = [Sighting(i["verdict"], i["kind"], _time(i["start"]), _time(i["end"]), int(i["requests"]))
            for i in incidents]
    ids = [i["id"] for i in incidents]
    if not g.sightings:
        return (f"first look had found nothing yet; the full analysis found {len(full)} incident(s)" if full else
                "first look had found nothing yet; the full analysis found no incident either")
    out, matched = [], set()
    for s in g.sightings:
        near = [n for n, f in enumerate(full) if f.start <= s.end and s.start <= f.end]
        alike = [n for n in near if (full[n].verdict, full[n].kind) == (s.verdict, s.kind)]
        if not near:
            out.append(f"corrected: the full analysis has no incident at that time (first look: {s.words()})")
            continue
        n = (alike or near)[0]
        matched.add(n)
        if full[n].words() == s.words():
            out.append(f"confirmed by {ids[n]}")
        else:
            out.append(f"corrected by {ids[n]}: {full[n].words()} (first look: {s.words()})")
    others = len(full) - len(matched)
    return "first look " + "; ".join(out) + (f"; and {others} more incident(s)" if others else "")


def _time(iso: str) -> datetime:
    """findings.json's '2026-11-16T02:00:08.621Z' as a naive UTC datetime (the first look's times)."""
    return datetime.fromisoformat(iso.replace("Z", ""))
