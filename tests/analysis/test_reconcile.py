"""Reconciliation edges: windows never narrower than their spend; no verdicts without the proxy's logs."""
import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from forensics.analysis.reconcile import _finest_covering

ROOT = Path(__file__).resolve().parents[2]


def _buckets(starts, minutes):
    return pd.DataFrame({"bucket_start": pd.to_datetime(starts), "bucket_minutes": minutes})


def test_finest_export_used_only_when_it_covers_both_ends():
    span = _buckets(["2026-11-14 21:00", "2026-11-15 01:00"], 60)
    whole = _buckets(["2026-11-14 21:51", "2026-11-15 01:18"], 1)
    part = _buckets(["2026-11-14 21:51", "2026-11-14 23:10"], 1)
    assert _finest_covering(whole, span) is whole
    assert _finest_covering(part, span) is span
    assert _finest_covering(whole.iloc[0:0], span) is span


@pytest.mark.slow
def test_provider_data_alone_shows_the_spike_but_accuses_nobody(tmp_path):
    """Without proxy logs the spike is `suspicious` (a planned batch looks the same), never an `attack` (#12)."""
    out = tmp_path / "out"
    r = run_cli("report", str(ROOT / "sample_logs" / "openai"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    findings = json.loads((out / "findings.json").read_text())
    assert [(i["verdict"], i["sources"]) for i in findings["incidents"]] == [("suspicious", ["openai"])]
    assert findings["status"] == "suspicious"
    assert "litellm" in findings["coverage"]["missing"]
    assert findings["baseline"] == {"cost_per_hour_usd": 0.0, "requests_per_hour": 0.0}
