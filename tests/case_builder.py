"""The session's expensive artefacts, built by the same code in the test process or in the helper process conftest
starts so that they are made on the second core while the first runs the other tests: sample_logs/ ingested, the
report on it, and a simulator scenario's case (its logs written, ingested into BASE/case.duckdb, investigated).
Plain values go back; the files are closed, ready to be opened by the test process.
"""
from __future__ import annotations

from pathlib import Path


def simulate_into(base: str | Path, scenario: str, seed: int) -> dict:
    """BASE/logs: the simulator's output; returns its truth."""
    from forensics.simulate import simulate

    return simulate(scenario, Path(base) / "logs", seed=seed)


def ingest_and_investigate(base: str | Path) -> dict:
    """BASE/logs ingested into BASE/case.duckdb, investigated: {"findings", "problems"} (files that did not load
    whole: path, status, quarantined)."""
    from forensics.api import Case
    from forensics.outputs import findings as findings_out

    base = Path(base)
    with Case.open(base / "case.duckdb") as case:
        reports = case.ingest([base / "logs"])
        problems = [(r.path, r.status, r.quarantined) for r in reports
                    if not (r.status == "loaded" and r.quarantined == 0)]
        findings = findings_out.build(case.investigate())
    return {"findings": findings, "problems": problems}


def build(base: str | Path, scenario: str, seed: int) -> dict:
    """Both steps: {"truth", "findings", "problems"}."""
    truth = simulate_into(base, scenario, seed)
    return {"truth": truth, **ingest_and_investigate(base)}


def _ingest_into(path: str | Path, inputs: list[Path]) -> list:
    """INPUTS ingested into a new case at PATH with the library's ingest_paths, the case closed: its reports."""
    from forensics import case as case_db
    from forensics.ingest import ingest_paths

    con = case_db.connect(Path(path))
    try:
        return ingest_paths(con, inputs)
    finally:
        con.close()


def ingest_sample(path: str | Path) -> list:
    """sample_logs/ ingested into a new case at PATH: its reports."""
    from conftest import SAMPLE_LOGS

    return _ingest_into(path, [SAMPLE_LOGS])


def report_sample(out: str | Path):
    """`python -m forensics report sample_logs/ --out OUT --timings`, in process: its CliRun (--timings only adds
    lines at the end of stderr)."""
    from conftest import SAMPLE_LOGS, run_cli

    return run_cli("report", SAMPLE_LOGS, "--out", out, "--timings")


def ingest_hostile_corpus(path: str | Path) -> list:
    """tests/hostile/cases/ ingested together into a new case at PATH, like a responder's folder: its reports."""
    return _ingest_into(path, [Path(__file__).resolve().parent / "hostile" / "cases"])


def merge_parts(base: str | Path) -> None:
    """sample_logs/ split in two cases that overlap, BASE/a.duckdb and BASE/b.duckdb: the same LiteLLM requests
    (spend-log export in one, callback payloads in the other) and the same OpenAI pages in both."""
    from conftest import SAMPLE_LOGS

    for name, parts in (("a", ["litellm/spend_logs.csv.gz", "nginx", "openai"]),
                        ("b", ["litellm/callback_payloads.ndjson.gz", "openai", "anthropic"])):
        _ingest_into(Path(base) / f"{name}.duckdb", [SAMPLE_LOGS / p for p in parts])
