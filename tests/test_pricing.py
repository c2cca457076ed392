"""Re-pricing from tokens: genai-prices per (provider, model, day), overrides, cache tokens, unknown models."""
from decimal import Decimal

import pytest

from forensics import pricing


def _insert(con, request_id, provider, model, prompt, completion, cache_read=0, cache_write=0):
    con.execute(
        "INSERT INTO llm_requests (request_id, start_time, provider, model, prompt_tokens, completion_tokens, "
        "cache_read_tokens, cache_write_tokens) VALUES (?, TIMESTAMP '2026-11-16 02:00:00', ?, ?, ?, ?, ?, ?)",
        [request_id, provider, model, prompt, completion, cache_read, cache_write],
    )


def _cost(con, request_id):
    return con.execute("SELECT cost_usd, price_status FROM llm_requests WHERE request_id = ?", [request_id]).fetchone()


def test_gpt4_snapshot_priced_exactly(con):
    _insert(con, "a", "openai", "gpt-4-0613", 1600, 4000)
    pricing.price_requests(con)
    cost, status = _cost(con, "a")
    assert status == "priced"
    assert cost == Decimal("1600") * 30 / 10**6 + Decimal("4000") * 60 / 10**6  # 0.288 exactly


def test_cache_reads_and_writes_use_their_prices(con):
    # claude-3-5-sonnet: $3 in, $15 out, $0.30 cache read, $3.75 cache write per M; prompt_tokens is inclusive
    _insert(con, "b", "anthropic", "claude-3-5-sonnet-20241022", 1000, 500, cache_read=400, cache_write=100)
    pricing.price_requests(con)
    cost, _ = _cost(con, "b")
    expected = (Decimal(500) * 3 + Decimal(400) * Decimal("0.30") + Decimal(100) * Decimal("3.75") + 500 * 15) / 10**6
    assert cost == expected


def test_unknown_model_is_flagged_never_zero(con):
    _insert(con, "c", "openai", "my-finetune-that-does-not-exist", 10, 10)
    pricing.price_requests(con)
    cost, status = _cost(con, "c")
    assert cost is None and status == "unknown_model"
    (source,) = con.execute("SELECT source FROM prices WHERE model = 'my-finetune-that-does-not-exist'").fetchone()
    assert source == "unknown"


def test_override_file_prices_custom_deployment(con, tmp_path):
    f = tmp_path / "prices.csv"
    f.write_text("provider,model,input_mtok,output_mtok\nopenai,my-finetune,12,48\n")
    _insert(con, "d", "openai", "openai/my-finetune", 1000, 1000)
    pricing.price_requests(con, overrides_path=f)
    cost, status = _cost(con, "d")
    assert status == "override" and cost == Decimal("0.06")


def test_prices_resolved_once_per_model_and_day(con):
    for i in range(50):
        _insert(con, f"e{i}", "openai", "gpt-4o-mini-2024-07-18", 100 + i, 10)
    assert pricing.price_requests(con) == 1
    assert con.execute("SELECT count(*) FROM prices").fetchone()[0] == 1
    assert pricing.price_requests(con) == 0


def test_bad_override_file_names_line(tmp_path):
    f = tmp_path / "prices.csv"
    f.write_text("provider,model,input_mtok,output_mtok\nopenai,x,abc,1\n")
    with pytest.raises(ValueError, match="line 2"):
        pricing.load_overrides(f)


def test_costs_stay_exact_decimals(con):
    # 7 tokens at $0.15/M and 3 at $0.60/M: 0.00000105 + 0.0000018; a DOUBLE would not give this exactly
    _insert(con, "f", "openai", "gpt-4o-mini", 7, 3)
    pricing.price_requests(con)
    (cost, kind) = con.execute("SELECT cost_usd, typeof(cost_usd) FROM llm_requests WHERE request_id = 'f'").fetchone()
    assert cost == Decimal("0.00000285") and kind == "DECIMAL(38,12)"
