"""The response actions `report` writes beside the postmortem (OUT/response/): the nginx snippet passes `nginx -t`
(Debian's nginx) inside a minimal configuration, it denies every attacking address of sample_logs/ (whole networks
only where no legitimate client sits), and the LiteLLM calls name keys by hash only."""
from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture(scope="module")
def response(sample_report) -> Path:
    return sample_report[1] / "response"


def test_the_files_are_written(response):
    assert sorted(p.name for p in response.iterdir()) == ["litellm-keys.sh", "nginx-block.conf", "provider-steps.md"]


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")
def test_nginx_snippet_passes_nginx_t(response, tmp_path):
    # the smallest configuration that includes the snippet where it says it goes: the http block
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""pid {tmp_path}/nginx.pid;
error_log stderr;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    include {response / 'nginx-block.conf'};
    server {{ listen 127.0.0.1:18080; location / {{ return 204; }} }}
}}
""")
    r = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "syntax is ok" in r.stderr and "test is successful" in r.stderr


def test_nginx_snippet_denies_every_attacker(response, sample_truth, sample_report):
    text = (response / "nginx-block.conf").read_text()
    denied = [ipaddress.ip_network(t, strict=False) for t in re.findall(r"^deny (\S+);", text, re.M)]
    attackers = sample_truth["incidents"][0]["attacker_ips"]
    for ip in attackers:
        assert any(ipaddress.ip_address(ip) in n for n in denied), ip
    # no legitimate client of the case is in a denied network
    legit = {i["ip"] for i in sample_report[0]["cost"]["by_ip"]} - set(attackers)
    assert legit
    assert not any(ipaddress.ip_address(ip) in n for ip in legit for n in denied)
    assert "limit_req_zone $binary_remote_addr" in text and re.search(r"^limit_req zone=\S+ burst=\d+", text, re.M)


def test_litellm_calls_and_provider_steps(response, sample_report):
    findings = sample_report[0]
    calls = (response / "litellm-keys.sh").read_text()
    assert "master_key" in calls                       # the open proxy: no key to block would stop it
    assert not re.search(r"sk-[A-Za-z0-9_-]{8,}", calls)
    steps = (response / "provider-steps.md").read_text()
    assert "## OpenAI" in steps and "proj_" in steps and "- [ ] Rotate" in steps
    assert findings["status"] == "attack"


@pytest.mark.slow
def test_a_leaked_key_is_blocked_and_regenerated_by_hash(scenario_case):
    from forensics.analysis.leads import case_owners, owners_map
    from forensics.analysis.response import plan
    from forensics.outputs.response_files import litellm_calls
    from forensics.simulate import secret_keys

    sc = scenario_case("leaked_virtual_key", 1)
    inv = sc.con.investigate()
    findings = sc.findings
    p = plan(sc.con, inv, findings, owners_map(case_owners(sc.con)))
    leaked = {k["key_hash"] for i in findings["incidents"] if i["verdict"] in ("attack", "suspicious")
              for k in i["keys"] if k["key_hash"]}
    assert leaked and {k.key_hash for k in p.keys} == leaked
    calls = litellm_calls(p)
    for h in leaked:
        assert f'"key": "{h}"' in calls and f"/key/{h}/regenerate" in calls
    for secret in secret_keys("leaked_virtual_key", 1).values():
        assert secret not in calls
    assert all(k.owner for k in p.keys)                      # the alias / team / user LiteLLM logged
