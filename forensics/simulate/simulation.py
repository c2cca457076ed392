"""The simulator's entry point: the default set of logs, or the logs of a drawn deployment."""
from __future__ import annotations

from pathlib import Path

from forensics.simulate import randomized, scenarios
from forensics.simulate.deployment import Deployment


def simulate(scenario: str, out_dir: Path, seed: int = 1, nginx_format: str = "json",
             deployment: Deployment | None = None) -> dict:
    """Write a synthetic incident's logs in the real formats into out_dir and return its truth (truth.json).

    deployment: the logs a drawn deployment has (`draw_deployment(seed, scenario)`) instead of the default set (a
    week of keyed baseline, every source, `nginx_format`), which stays byte for byte what it always was."""
    if deployment is None:
        return scenarios.simulate(scenario, out_dir, seed, nginx_format)
    return randomized.simulate_deployment(scenario, Path(out_dir), seed, deployment)
