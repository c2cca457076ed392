"""The configuration audit over a corpus shaped like real configurations (tests/assets/configs/README.md): each
configuration's findings decided in a table (check id, file, line), the seed's deployment (sample_logs/config/)
yielding the critical findings and their fixes, exit codes, JSON output, and no secret ever shown."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from forensics.audit import ConfigError, audit
from forensics.audit.finding import blocking

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tests" / "assets" / "configs"
LITELLM, NGINX = CONFIGS / "litellm", CONFIGS / "nginx"
SEED = ROOT / "sample_logs" / "config"
STDOUT = ROOT / "tests" / "assets" / "litellm_stdout"

# (files, env file, expected findings as (check id, file name, line)); decided by reading each file
CORPUS = {
    "seed_litellm": ([SEED / "config.yaml"], None, {
        ("litellm.no_master_key", "config.yaml", 17), ("litellm.weak_master_key_permitted", "config.yaml", 19),
        ("litellm.no_rate_limits", "config.yaml", 3), ("litellm.no_budget", "config.yaml", 13),
        ("litellm.no_database", "config.yaml", 17), ("litellm.no_max_tokens_cap", "config.yaml", 3),
        ("litellm.expensive_model_open", "config.yaml", 4), ("litellm.no_alerting", "config.yaml", 17)}),
    "seed_nginx": ([SEED / "nginx.conf"], None, {
        ("nginx.open_to_all", "nginx.conf", 19), ("nginx.no_rate_limit", "nginx.conf", 23),
        ("nginx.log_format_blind", "nginx.conf", 15), ("nginx.long_read_timeout", "nginx.conf", 27)}),
    "documented": ([LITELLM / "proxy_config_documented.yaml"], None, set()),
    "weak_literal_with_include": ([LITELLM / "weak_literal.yaml"], None, {
        ("litellm.weak_master_key", "weak_literal.yaml", 8), ("litellm.master_key_literal", "weak_literal.yaml", 8),
        ("litellm.public_llm_routes", "weak_literal.yaml", 10),
        ("litellm.expensive_model_open", "models.yaml", 2), ("litellm.provider_key_literal", "models.yaml", 5),
        ("litellm.spend_logs_disabled", "weak_literal.yaml", 11),
        ("litellm.database_password_literal", "weak_literal.yaml", 9),
        ("litellm.prompts_kept_forever", "weak_literal.yaml", 12),
        ("litellm.auth_fails_open", "weak_literal.yaml", 13), ("litellm.no_spend_alerts", "weak_literal.yaml", 15),
        ("litellm.budget_never_resets", "weak_literal.yaml", 5)}),
    "env_refs_no_env_file": ([LITELLM / "env_refs.yaml"], None, set()),
    "env_refs_weak_key": ([LITELLM / "env_refs.yaml"], LITELLM / "weak.env",
                          {("litellm.weak_master_key", "env_refs.yaml", 14)}),
    "env_refs_strong_key": ([LITELLM / "env_refs.yaml"], LITELLM / "strong.env", set()),
    "env_refs_key_missing": ([LITELLM / "env_refs.yaml"], LITELLM / "nokey.env",
                             {("litellm.no_master_key", "env_refs.yaml", 14)}),
    "reverse_proxy_open": ([NGINX / "reverse_proxy_open.conf"], None, {
        ("nginx.open_to_all", "reverse_proxy_open.conf", 3), ("nginx.no_rate_limit", "reverse_proxy_open.conf", 7),
        ("nginx.log_format_blind", "reverse_proxy_open.conf", 7)}),
    "hardened_with_include": ([NGINX / "hardened" / "nginx.conf"], None, set()),
    "ingress_nginx_T": ([NGINX / "ingress_nginx_T.txt"], None, {
        ("nginx.no_access_log", "llm.conf", 11), ("nginx.real_ip_any", "nginx.conf", 15),
        ("nginx.no_rate_limit", "llm.conf", 7), ("nginx.body_unbounded", "nginx.conf", 17),
        ("nginx.long_read_timeout", "llm.conf", 12)}),
    "startup_log_json": ([STDOUT / "proxy_stdout_json.log"], None, {
        ("startup.no_master_key", "proxy_stdout_json.log", 27),
        ("startup.weak_master_key_permitted", "proxy_stdout_json.log", 31),
        ("startup.trusted_proxy_ranges_unset", "proxy_stdout_json.log", 26)}),
    "startup_log_plain": ([STDOUT / "proxy_stdout_plain.log"], None, {
        ("startup.no_master_key", "proxy_stdout_plain.log", 3),
        ("startup.weak_master_key_permitted", "proxy_stdout_plain.log", 4),
        ("startup.listens_on_all_addresses", "proxy_stdout_plain.log", 6)}),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_configuration_gives_the_findings_decided_for_it(name):
    files, env, expected = CORPUS[name]
    got = {(f.id, Path(f.file).name, f.line) for f in audit(files, env).findings}
    assert got == expected


def test_the_seeds_deployment_yields_the_critical_findings_and_their_fixes():
    result = audit([SEED])                                  # the folder: config.yaml and nginx.conf
    critical = {f.id: f for f in result.findings if f.severity == "critical"}
    assert set(critical) == {"litellm.no_master_key", "litellm.weak_master_key_permitted", "nginx.open_to_all"}
    assert "master_key: os.environ/LITELLM_MASTER_KEY" in critical["litellm.no_master_key"].fix
    assert "deny all;" in critical["nginx.open_to_all"].fix
    assert "$347.23" in critical["litellm.no_master_key"].money and "$8,333.52 a day" in critical[
        "litellm.no_master_key"].money
    assert [f.severity for f in result.findings][:3] == ["critical"] * 3      # most severe first
    limits = {f.id: f for f in result.findings if f.checklist == "rate limits"}
    assert "limit_req_zone $binary_remote_addr zone=llm:10m rate=10r/s;" in limits["nginx.no_rate_limit"].fix
    assert "rpm: 100" in limits["litellm.no_rate_limits"].fix


def test_an_nginx_in_front_of_a_keyed_proxy_is_no_longer_critical():
    result = audit([LITELLM / "env_refs.yaml", NGINX / "reverse_proxy_open.conf"], LITELLM / "strong.env")
    assert {f.id: f.severity for f in result.findings}["nginx.open_to_all"] == "medium"


def test_exit_codes_and_text_output():
    r = run_cli("audit", SEED)
    assert r.returncode == 1 and "CRITICAL litellm.no_master_key" in r.stdout
    assert "12 findings (3 critical, 4 high, 4 medium, 1 low) in 2 files" in r.stdout
    ok = run_cli("audit", LITELLM / "proxy_config_documented.yaml", NGINX / "hardened" / "nginx.conf")
    assert (ok.returncode, ok.stderr) == (0, "") and "0 findings" in ok.stdout


@pytest.mark.parametrize("path, line", [(LITELLM / "broken.yaml", 5), (NGINX / "bad" / "nginx.conf", 6)],
                         ids=["yaml", "nginx"])
def test_an_unparsable_file_is_exit_2_naming_its_line(path, line):
    r = run_cli("audit", path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and f"{path} line {line}: " in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(ConfigError, match=f"line {line}"):
        audit([path])


def test_usage_errors():
    assert run_cli("audit", CONFIGS / "nope.yaml").returncode == 2
    assert run_cli("audit", SEED, "--env-file", CONFIGS / "nope.env").returncode == 2
    r = run_cli("audit", CONFIGS / "README.md")
    assert r.returncode == 2 and "neither a LiteLLM config.yaml" in r.stderr


def test_json_output_follows_the_documented_schema_and_shows_no_secret():
    r = run_cli("audit", "--json", LITELLM / "weak_literal.yaml", NGINX / "ingress_nginx_T.txt")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["schema"] == "forensics.audit/1" and set(doc) == {"schema", "tool_version", "generated_at", "files",
                                                                 "summary", "findings"}
    assert doc["summary"] == {"critical": 2, "high": 6, "medium": 6, "low": 2}
    assert {tuple(f) for f in [sorted(x) for x in doc["findings"]]} == {tuple(sorted(
        ["id", "severity", "title", "file", "line", "setting", "why", "money", "fix", "checklist", "money_usd"]))}
    for secret in ("FAKEfakeFAKEfake0000111122223333", "hunter2pass", "master_key: sk-1234"):
        assert secret not in r.stdout
    text = run_cli("audit", LITELLM / "weak_literal.yaml").stdout
    assert "FAKEfake" not in text and "hunter2pass" not in text


def test_blocking_is_high_or_critical():
    assert not blocking(audit([NGINX / "hardened" / "nginx.conf"]).findings)
    assert blocking(audit([NGINX / "ingress_nginx_T.txt"]).findings)


@pytest.mark.slow
def test_with_a_case_the_money_comes_from_its_controls_replay(sample_case_copy):
    r = run_cli("audit", "--json", "--case", sample_case_copy, SEED / "config.yaml")
    doc = json.loads(r.stdout)
    key = next(f for f in doc["findings"] if f["id"] == "litellm.no_master_key")
    assert key["money"].startswith("In the case: INC-1 (unauthenticated_proxy) cost $")
    assert "with auth_required it would have cost $0.00" in key["money"] and key["money_usd"] > 300
