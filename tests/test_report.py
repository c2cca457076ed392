"""`report` on sample_logs/: findings.json validates against the contract and matches the simulator's truth."""
import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "forensics" / "outputs" / "findings.schema.json").read_text())


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@pytest.fixture
def report(sample_report):
    return sample_report


def test_findings_validate_against_the_contract(report):
    findings, _ = report
    jsonschema.validate(findings, SCHEMA)
    assert findings["schema"] == "forensics.findings/1"


def test_the_open_proxy_incident_is_found(report, sample_truth):
    findings, _ = report
    [truth] = sample_truth["incidents"]
    attacks = [i for i in findings["incidents"] if i["verdict"] == "attack"]
    assert len(attacks) == 1
    [inc] = attacks
    assert inc["kind"] == "unauthenticated_proxy"
    assert abs((_t(inc["start"]) - _t(truth["start"])).total_seconds()) <= 60
    assert abs((_t(inc["end"]) - _t(truth["end"])).total_seconds()) <= 60
    found, true = {i["ip"] for i in inc["ips"]}, set(truth["attacker_ips"])
    assert len(found & true) / len(found) >= 0.95 and len(found & true) / len(true) >= 0.95
    assert abs(Decimal(str(inc["cost_usd"])) - Decimal(truth["cost_usd"])) <= Decimal(truth["cost_usd"]) * Decimal("0.005")
    assert set(inc["request_ids"]) == set(truth["request_ids"])
    assert [k["key_hash"] for k in inc["keys"]] == [None]


def test_baseline_and_totals(report, sample_truth):
    findings, _ = report
    assert findings["baseline"]["cost_per_hour_usd"] == pytest.approx(
        float(sample_truth["baseline"]["cost_per_hour_usd"]), rel=0.05)
    assert findings["cost"]["total_usd"] == pytest.approx(sum(m["cost_usd"] for m in findings["cost"]["by_model"]))


def test_inputs_add_up(report):
    findings, _ = report
    assert findings["inputs"]
    for f in findings["inputs"]:
        assert f["records"] == f["loaded"] + f["quarantined"]



def test_no_full_key_in_any_output(report):
    """The simulator's full virtual keys appear nowhere: not in findings.json, steps.sql, nor any text in the case."""
    import duckdb

    from forensics.simulate import secret_keys

    _, out = report
    keys = [k for k in secret_keys("open_proxy", 1).values()]
    assert keys and all(k.startswith("sk-") for k in keys)
    for f in out.iterdir():
        if f.suffix in (".json", ".sql", ".md", ".html", ".csv"):
            text = f.read_text(errors="replace")
            assert not any(k in text for k in keys), f.name
    con = duckdb.connect(str(out / "case.duckdb"), read_only=True)
    columns = con.execute("SELECT table_name, column_name FROM information_schema.columns "
                          "WHERE data_type = 'VARCHAR' AND table_schema = 'main'").fetchall()
    for table, column in columns:
        (hits,) = con.execute(f'SELECT count(*) FROM "{table}" WHERE list_has_any([{", ".join("?" for _ in keys)}], '
                              f'regexp_extract_all("{column}", \'sk-[A-Za-z0-9_-]+\'))', keys).fetchone()
        assert hits == 0, f"{table}.{column} holds a full key"
    con.close()
