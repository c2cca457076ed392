"""Input paths as they may leave the machine (in findings.json and in a bundle)."""
from __future__ import annotations

import os


def shareable_paths(paths: list[str], absolute: bool = False) -> dict[str, str]:
    """Each path as it may leave the machine: relative paths as given; absolute ones relative to the folder the
    inputs share, prefixed with that folder's name (/home/ana/case/logs/x.log -> logs/x.log)."""
    if absolute:
        return {p: p for p in paths}
    absolute_paths = [p for p in paths if os.path.isabs(p)]
    out = {p: p for p in paths if not os.path.isabs(p)}
    if absolute_paths:
        common = os.path.commonpath([os.path.dirname(p) for p in absolute_paths])
        base = os.path.dirname(common)
        for p in absolute_paths:
            out[p] = os.path.relpath(p, base)
    return out
