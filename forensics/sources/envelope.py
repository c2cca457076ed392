"""Log lines wrapped by whatever collected them: a prefix before each line that the program itself never wrote.

In the wild the proxy's and nginx's lines are rarely read from the files they wrote. On Kubernetes (LiteLLM's Helm
chart, ingress-nginx, the official nginx image logging to stdout/stderr) the node keeps them in the CRI format, each
line prefixed with the time, the stream and a partial-line tag: `2026-11-16T02:00:04.123456789Z stdout F <line>`
(/var/log/containers/*.log, /var/log/pods/...). `docker logs --timestamps` and `kubectl logs --timestamps` prefix the
time alone. nginx's `access_log syslog:server=...` and journald's short output, as rsyslog or `journalctl` write
them, prefix `Dec  3 04:11:02 host nginx: ` or `2026-12-03T04:11:02.123456+00:00 host nginx[123]: `.

A file whose sample lines all but a few carry one such prefix is read with the prefix cut off each line (by the line
reader, in pyarrow: forensics.sources.lines), and its format detected on what is left; when nothing is recognised
that way the file is read as it is. The program's own line keeps its own time (the collector's time is when it read
the line). Records keep their line numbers, and the quarantine keeps the line as the program wrote it. A CRI line
split in parts (`P` tags, lines over 16 KiB) is not joined again: each part is a line of its own (its loader
quarantines a cut JSON object with its reason).
"""
from __future__ import annotations

import re

# name -> (the prefix, as a regular expression that RE2 (pyarrow) and Python both read; what wrote it)
ENVELOPES: dict[str, tuple[str, str]] = {
    "cri": (r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d) (?:stdout|stderr) [FP] ",
            "a Kubernetes container log (CRI: time, stream and tag before each line)"),
    "syslog": (r"^(?:<\d{1,3}>)?(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?"
               r"(?:Z|[+-]\d\d:\d\d)) [A-Za-z0-9._-]+ [A-Za-z0-9_./-]+(?:\[\d+\])?: ",
               "syslog or journald (time, host and program before each line)"),
    "timestamped": (r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d) ",
                    "`docker logs --timestamps` or `kubectl logs --timestamps` (a time before each line)"),
}
_COMPILED = {name: re.compile(rx.encode()) for name, (rx, _) in ENVELOPES.items()}
SHARE = 0.9            # of a sample's non-blank lines that must carry the prefix
_NEED = 2              # lines, at least, in the sample


def detect(sample: bytes) -> str | None:
    """The envelope nearly every line of `sample` carries (the first of ENVELOPES that fits), or None."""
    lines = [ln for ln in sample.split(b"\n")[:-1] if ln.strip()] or [ln for ln in sample.split(b"\n") if ln.strip()]
    if len(lines) < _NEED:
        return None
    for name, rx in _COMPILED.items():
        if sum(1 for ln in lines if rx.match(ln)) >= SHARE * len(lines):
            return name
    return None


def unwrap(sample: bytes, name: str) -> bytes:
    """`sample` with envelope `name` cut off each line that carries it."""
    rx = _COMPILED[name]
    return b"\n".join(rx.sub(b"", ln, count=1) for ln in sample.split(b"\n"))


def pattern(name: str) -> str:
    return ENVELOPES[name][0]


def description(name: str) -> str:
    return ENVELOPES[name][1]
