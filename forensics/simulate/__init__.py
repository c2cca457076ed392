"""Synthetic LLM-gateway incidents written in the real log formats (LiteLLM, nginx, OpenAI, Anthropic) + truth.

`simulate(scenario, out_dir, seed)` writes the files and returns the truth dict (also written as truth.json);
`simulate(..., deployment=draw_deployment(seed, scenario))` writes the logs of a randomly drawn deployment instead.
"""
from forensics.simulate.catalog import GENERATOR_VERSION
from forensics.simulate.deployment import Deployment, draw_deployment
from forensics.simulate.scenarios import SCENARIOS, secret_keys
from forensics.simulate.simulation import simulate

__all__ = ["GENERATOR_VERSION", "SCENARIOS", "Deployment", "draw_deployment", "secret_keys", "simulate"]
