"""The shared draw runner (forensics/simulate/pool.py): the same results in draw order, here or in spawned
processes, each reported as it comes; the matrix benches' common arguments."""
import argparse
import operator
from functools import partial

import pytest

from forensics.simulate.pool import add_draw_arguments, run_each
from forensics.simulate.scenarios import SCENARIOS


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_and_progress_in_draw_order(jobs):
    seen = []
    out = run_each(partial(operator.mul, 3), range(7), jobs, seen.append)
    assert out == seen == [0, 3, 6, 9, 12, 15, 18]


def test_a_failing_draw_function_is_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        run_each(partial(operator.truediv, 1), [1, 0], jobs=1)


def test_the_common_arguments():
    parser = argparse.ArgumentParser()
    add_draw_arguments(parser, draws=20)
    args = parser.parse_args(["--seed", "4", "--scenarios", "open_proxy", "--jobs", "2"])
    assert (args.draws, args.seed, args.scenarios, args.jobs) == (20, 4, ["open_proxy"], 2)
    assert parser.parse_args([]).scenarios == list(SCENARIOS)
