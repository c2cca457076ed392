"""Run one function over many draws, in this process or in `jobs` spawned processes, reporting each result as it
comes (in draw order): the randomized matrices (forensics/simulate/matrix.py, forensics/detect/matrix.py) share it.

Spawned, not forked: a draw opens DuckDB and sklearn's thread pools, which a fork would copy mid-state. The function
and its arguments must be picklable (a module-level function; bind extra arguments with functools.partial).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

D = TypeVar("D")
R = TypeVar("R")


def run_each(work: Callable[[D], R], todo: Iterable[D], jobs: int = 1,
             progress: Callable[[R], None] | None = None) -> list[R]:
    """[work(d) for d in todo], `jobs` at a time (1: here, in order); `progress(result)` after each, in order."""
    todo = list(todo)
    if jobs <= 1:
        results = (work(d) for d in todo)
        return [_report(r, progress) for r in results]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [_report(r, progress) for r in pool.map(work, todo)]


def _report(result, progress):
    if progress:
        progress(result)
    return result


def add_draw_arguments(parser, draws: int) -> None:
    """The arguments every matrix bench takes: --draws, --seed, --scenarios, --jobs."""
    from forensics.simulate.scenarios import SCENARIOS

    parser.add_argument("--draws", type=int, default=draws)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--jobs", type=int, default=1, help="draws run at once (processes)")
