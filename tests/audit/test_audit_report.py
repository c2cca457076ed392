"""The audit in the postmortem: `report --config FILE` and the startup warnings of a LiteLLM stdout log in the case
make a configuration section (report.md, report.html) and findings.json's optional `configuration`, and the
recommendations cite the settings at fault."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "sample_logs" / "config"
STDOUT_LOG = ROOT / "tests" / "assets" / "litellm_stdout" / "proxy_stdout_json.log"
SCHEMA = json.loads((ROOT / "forensics" / "outputs" / "findings.schema.json").read_text())


def test_report_with_config_files_and_a_stdout_log(tmp_path):
    out = tmp_path / "out"
    r = run_cli("report", STDOUT_LOG, "--out", out, "--no-detector", "--config", SEED / "config.yaml",
                "--config", SEED / "nginx.conf")
    assert r.returncode == 0, r.stderr
    findings = json.loads((out / "findings.json").read_text())
    jsonschema.validate(findings, SCHEMA)
    conf = findings["configuration"]
    assert [k for _, k in map(dict.values, conf["files"])] == ["litellm_config", "nginx", "litellm_log"]
    ids = {(f["id"], Path(f["file"]).name, f["line"]) for f in conf["findings"] if f["severity"] == "critical"}
    assert ids == {("litellm.no_master_key", "config.yaml", 17), ("litellm.weak_master_key_permitted", "config.yaml", 19),
                   ("nginx.open_to_all", "nginx.conf", 19), ("startup.no_master_key", "proxy_stdout_json.log", 27),
                   ("startup.weak_master_key_permitted", "proxy_stdout_json.log", 31)}
    md = (out / "report.md").read_text()
    assert "## Configuration" in md and "| critical | nginx.open_to_all |" in md
    assert "Settings at fault:" in md and "general\\_settings.master\\_key (absent)" in md
    assert 'id="configuration"' in (out / "report.html").read_text()


def test_an_unreadable_config_fails_the_report_before_any_work(tmp_path):
    bad = ROOT / "tests" / "assets" / "configs" / "litellm" / "broken.yaml"
    r = run_cli("report", STDOUT_LOG, "--out", tmp_path / "out", "--config", bad)
    assert r.returncode == 2 and f"{bad} line 5:" in r.stderr and not (tmp_path / "out").exists()
