"""The command line contract: commands, --help, --json fields, exit codes, one-line errors."""
import json
import re

import pytest

from conftest import run_cli as run, run_process
from forensics.cli import build_parser, main

COMMANDS = ["ingest", "report", "simulate"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    r = run(command, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


def test_commands_documented_in_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"`{name}" in readme, f"command {name} is not documented in README.md"


def test_missing_input_is_a_usage_error(tmp_path):
    # a real `python -m forensics` process: the entry point works and nothing but the one line reaches stderr
    r = run_process("ingest", str(tmp_path / "nope.log"), "--case", str(tmp_path / "c.duckdb"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "nope.log" in r.stderr and "Traceback" not in r.stderr


def test_bad_flag_is_a_usage_error(capsys):
    assert main(["ingest", "--no-such-flag"]) == 2


def test_ingest_json_has_contract_fields(tmp_path):
    log = tmp_path / "access.log"
    log.write_text('198.51.100.4 - - [16/Nov/2026:03:00:04 +0100] "GET / HTTP/1.1" 200 5 "-" "x"\n')
    case = tmp_path / "c.duckdb"
    r = run("ingest", str(log), "--case", str(case), "--json")
    assert r.returncode == 0, r.stderr
    [obj] = json.loads(r.stdout)
    assert set(obj) == {"path", "sha256", "format", "records", "loaded", "quarantined", "skipped"}
    assert obj["records"] == obj["loaded"] == 1 and obj["skipped"] is False
    again = json.loads(run("ingest", str(log), "--case", str(case), "--json").stdout)
    assert again[0]["skipped"] is True


def test_failed_file_exits_1_with_one_line(tmp_path):
    bad = tmp_path / "broken.log.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    r = run("ingest", str(bad), "--case", str(tmp_path / "c.duckdb"))
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if "broken.log.gz" in line]
    assert len(errors) == 1 and "Traceback" not in r.stderr


def test_a_case_database_is_not_ingested_as_a_log(tmp_path):
    case = tmp_path / "old.duckdb"
    case.write_bytes(b"not really a database")
    r = run("ingest", str(case), "--case", str(tmp_path / "c.duckdb"))
    assert r.returncode == 2 and "case database" in r.stderr


def test_report_reads_an_existing_case(tmp_path):
    log = tmp_path / "access.log"
    log.write_text('198.51.100.4 - - [16/Nov/2026:03:00:04 +0100] "GET / HTTP/1.1" 200 5 "-" "x"\n')
    case = tmp_path / "c.duckdb"
    assert run("ingest", str(log), "--case", str(case)).returncode == 0
    r = run("report", str(case), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    findings = json.loads((tmp_path / "out" / "findings.json").read_text())
    assert findings["incidents"] == [] and findings["inputs"][0]["records"] == 1
    assert "no incident found" in r.stdout


def test_price_file_is_checked_once_and_reprices_the_case(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,input_mtok\nx,1\n")
    log = tmp_path / "access.log"
    log.write_text('198.51.100.4 - - [16/Nov/2026:03:00:04 +0100] "GET / HTTP/1.1" 200 5 "-" "x"\n')
    r = run("ingest", str(log), "--case", str(tmp_path / "c.duckdb"), "--prices", str(bad))
    assert r.returncode == 2 and "missing column" in r.stderr and r.stderr.count("\n") == 1


def test_missing_case_folder_is_a_usage_error(tmp_path):
    log = tmp_path / "access.log"
    log.write_text('198.51.100.4 - - [16/Nov/2026:03:00:04 +0100] "GET / HTTP/1.1" 200 5 "-" "x"\n')
    r = run("ingest", str(log), "--case", str(tmp_path / "no" / "such" / "c.duckdb"))
    assert r.returncode == 2 and "no such folder" in r.stderr


def test_unrecognised_file_is_tried_again_with_a_custom_format(tmp_path):
    log = tmp_path / "odd.log"
    log.write_text('203.0.113.7 <16/Nov/2026:03:00:04 +0100> "POST /chat/completions HTTP/1.1" 200\n')
    case = tmp_path / "c.duckdb"
    first = run("ingest", str(log), "--case", str(case), "--json")
    assert first.returncode == 1 and json.loads(first.stdout)[0]["format"] == "unrecognised"
    again = run("ingest", str(log), "--case", str(case), "--json",
                "--nginx-format", '$remote_addr <$time_local> "$request" $status')
    assert again.returncode == 0, again.stderr
    [obj] = json.loads(again.stdout)
    assert obj["format"] == "nginx.custom" and obj["loaded"] == 1 and not obj["skipped"]


def test_trusted_proxy_given_later_recomputes_client_addresses(tmp_path):
    log = tmp_path / "access.log"
    log.write_text('203.0.113.50 - - [16/Nov/2026:03:00:04 +0100] "POST /chat/completions HTTP/1.1" 200 5 "-" "x" '
                   '"198.51.100.7"\n')
    case = tmp_path / "c.duckdb"
    assert run("ingest", str(log), "--case", str(case)).returncode == 0
    import duckdb

    def client():
        c = duckdb.connect(str(case), read_only=True)
        try:
            return c.execute("SELECT client_ip FROM http_requests").fetchone()[0]
        finally:
            c.close()

    assert client() == "203.0.113.50"            # a public peer is not trusted by default: it is the client
    r = run("ingest", str(log), "--case", str(case), "--trusted-proxy", "203.0.113.0/24")
    assert r.returncode == 0, r.stderr
    assert client() == "198.51.100.7"            # behind the balancer now named, the forwarded client


@pytest.mark.parametrize("command", ["ingest", "report", "export", "verify", "detect", "simulate"])
def test_help_describes_inputs_and_shows_examples(command):
    r = run(command, "--help")
    assert r.returncode == 0
    examples = r.stdout.split("examples:\n")[1].splitlines()
    assert examples and all(e.startswith(f"  python -m forensics {command} ") for e in examples)
    if command in ("report", "export", "detect"):
        assert re.search(r"^  INPUT\s+log files", r.stdout, re.M) and re.search(r"^  --out \S+\s+\w", r.stdout, re.M)


def test_simulate_help_lists_every_scenario():
    from forensics.cli import SCENARIO_NAMES
    from forensics.simulate import SCENARIOS

    assert SCENARIO_NAMES == SCENARIOS
    text = " ".join(run("simulate", "--help").stdout.split())
    assert "one of: " + ", ".join(SCENARIOS) in text
