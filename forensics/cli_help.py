"""What `--help` says beyond the options: what INPUT is, the scenario names, examples for each command."""
from __future__ import annotations

# forensics.simulate.SCENARIOS, written out so `--help` does not import the simulator (tests/test_cli.py checks)
SCENARIO_NAMES = ("open_proxy", "benign_batch", "leaked_virtual_key", "provider_key_outside_proxy",
                  "provider_key_outside_proxy_second_key", "key_stuffing", "baseline")
INPUT_HELP = ("log files (plain or .gz), folders (searched recursively, rotated logs included) and/or case databases "
              "(*.duckdb); formats are detected from content. A case folder written by export-case --parquet is "
              "read in place, named alone")
EXAMPLES = {
    "ingest": ["python -m forensics ingest sample_logs/ --case case.duckdb",
               "python -m forensics ingest /var/log/nginx/access.log* spend_logs.csv.gz --case case.duckdb --json"],
    "report": ["python -m forensics report sample_logs/ --out out/",
               "python -m forensics report case.duckdb --out out/ --no-detector",
               "python -m forensics report logs/ --out out/ --control key_rpm_35 --control cost_alert_20h_5m"],
    "export": ["python -m forensics export sample_logs/ --out evidence/ --zip",
               "python -m forensics export case.duckdb --out evidence-anthropic/ --provider anthropic"],
    "export-case": ["python -m forensics export-case sample_logs/ --parquet case-parquet/",
                    "python -m forensics report case-parquet/ --out out/"],
    "verify": ["python -m forensics verify evidence/"],
    "detect": ["python -m forensics detect sample_logs/ --out scores.csv",
               "python -m forensics detect case.duckdb --out scores.csv --alerts-per-day 0.5 --save detector.joblib"],
    "simulate": ["python -m forensics simulate --scenario open_proxy --out /tmp/open_proxy",
                 "python -m forensics simulate --scenario leaked_virtual_key --seed 7 --out /tmp/leak --randomize"],
}


def examples(command: str) -> str:
    """The epilog of COMMAND's --help."""
    return "examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES[command])
