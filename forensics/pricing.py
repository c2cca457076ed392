"""Re-price every LLM request from its tokens: prices resolved once per (provider, model, day) into the `prices` table.

Prices come from genai-prices' bundled snapshot (offline), or from an override CSV for custom deployments
(columns: provider,model,input_mtok,output_mtok[,cache_read_mtok,cache_write_mtok]; $ per million tokens).
An unknown model gets price_status 'unknown_model' and a NULL cost: never a silent 0.
"""
from __future__ import annotations

import csv
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import duckdb
import pandas as pd

from forensics.duck import query_with

# LiteLLM custom_llm_provider -> genai-prices provider id
PROVIDER_IDS = {
    "openai": "openai", "text-completion-openai": "openai", "azure": "azure", "azure_ai": "azure",
    "anthropic": "anthropic", "bedrock": "aws", "bedrock_converse": "aws", "vertex_ai": "google",
    "vertex_ai_beta": "google", "gemini": "google", "mistral": "mistral", "groq": "groq",
    "deepseek": "deepseek", "openrouter": "openrouter", "together_ai": "together", "cohere": "cohere",
    "xai": "x-ai", "fireworks_ai": "fireworks",
}
PRICE_COLUMNS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


@lru_cache(maxsize=1)
def genai_prices_version() -> str:
    """The installed genai-prices, once per process (the metadata search costs ~7 ms a call, a call per price)."""
    return f"genai-prices {version('genai-prices')}"


def _decimal(value) -> Decimal | None:
    """A price attribute as Decimal; tiered prices use their base tier (noted in the source column)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    base = getattr(value, "base", None)
    return Decimal(str(base)) if base is not None else Decimal(str(value))


def load_overrides(path: Path | None) -> dict[tuple[str, str], dict]:
    """Read the override CSV; keys are (provider, model) as the proxy logged them."""
    if path is None:
        return {}
    out: dict[tuple[str, str], dict] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"provider", "model", "input_mtok", "output_mtok"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for n, row in enumerate(reader, start=2):
            if None in row or any(row.get(c) is None for c in ("provider", "model")):
                raise ValueError(f"{path} line {n}: wrong number of fields")
            try:
                prices = {c: (Decimal(row[c]) if row.get(c) not in (None, "") else None) for c in PRICE_COLUMNS}
            except InvalidOperation:
                raise ValueError(f"{path} line {n}: a price is not a number") from None
            if prices["input_mtok"] is None or prices["output_mtok"] is None:
                raise ValueError(f"{path} line {n}: input_mtok and output_mtok are required")
            out[(row["provider"].strip(), row["model"].strip())] = prices
    return out


def resolve_price(provider: str | None, model: str, day, overrides: dict, override_name: str) -> dict:
    """One (provider, model, day) -> a prices row; 'unknown' source when nothing matches."""
    row = {"provider": provider or "", "model": model, "day": day, "matched_model": None}
    key = (provider or "", model)
    bare = model.split("/", 1)[1] if "/" in model else model
    for candidate in (key, (provider or "", bare), ("*", model), ("*", bare)):
        if candidate in overrides:
            return {**row, **overrides[candidate], "source": f"override:{override_name}", "matched_model": candidate[1]}
    from genai_prices import data_snapshot

    provider_id = PROVIDER_IDS.get((provider or "").lower())
    if provider_id is None and "/" in model:
        provider_id = PROVIDER_IDS.get(model.split("/", 1)[0].lower())
    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(bare, None, provider_id, None)
        when = datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc)
        mp = info.get_prices(when)
    except (LookupError, ValueError):
        return {**row, **{c: None for c in PRICE_COLUMNS}, "source": "unknown"}
    prices = {c: _decimal(getattr(mp, c, None)) for c in PRICE_COLUMNS}
    return {**row, **prices, "source": genai_prices_version(), "matched_model": info.id}


def resolve_prices_sql(where: str) -> str:
    """The (provider, model, day) keys of requests needing a price that the price table lacks."""
    return f"""
        SELECT DISTINCT coalesce(r.provider, '') AS provider, coalesce(nullif(r.model, ''), r.model_group) AS model,
               CAST(r.start_time AS DATE) AS day
        FROM llm_requests r
        WHERE ({where}) AND coalesce(nullif(r.model, ''), r.model_group) IS NOT NULL AND r.start_time IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM prices p WHERE p.provider = coalesce(r.provider, '')
                          AND p.model = coalesce(nullif(r.model, ''), r.model_group)
                          AND p.day = CAST(r.start_time AS DATE))
    """


def token_cost_sql(inp: str, out: str, cache_read: str, cache_write: str, p: str = "p", net: bool = False) -> str:
    """The list-price cost of token counts (SQL expressions) at price row `p`, a DECIMAL(38,12): uncached input
    (input less cache reads and writes, at least 0 unless `net`, a signed difference) + cache reads + cache writes
    + output, $/M tokens. A cache price the table lacks falls back to the input price, as LiteLLM does. Scaling is a
    multiplication by 0.000001: in DuckDB a DECIMAL divided by anything is a DOUBLE, which would lose the exact
    cents."""
    uncached = f"{inp} - {cache_read} - {cache_write}"
    uncached = f"({uncached})" if net else f"greatest({uncached}, 0)"
    return (f"CAST(({uncached} * {p}.input_mtok + {cache_read} * coalesce({p}.cache_read_mtok, {p}.input_mtok)"
            f" + {cache_write} * coalesce({p}.cache_write_mtok, {p}.input_mtok) + {out} * {p}.output_mtok)"
            f" * 0.000001 AS DECIMAL(38,12))")


def repriced_cost_sql(where: str) -> str:
    """Set cost_usd from tokens: uncached input + cache reads + cache writes + output, $/M tokens.

    prompt_tokens is inclusive of cache reads and writes (LiteLLM's convention), so the uncached part is the rest.
    A cache price the table lacks falls back to the input price, as LiteLLM does. Scaling is a multiplication by
    0.000001: in DuckDB a DECIMAL divided by anything is a DOUBLE, which would lose the exact cents.
    """
    return f"""
        UPDATE llm_requests AS r SET
            cost_usd = CASE WHEN p.input_mtok IS NULL THEN NULL ELSE {token_cost_sql(
                "coalesce(r.prompt_tokens, 0)", "coalesce(r.completion_tokens, 0)",
                "coalesce(r.cache_read_tokens, 0)", "coalesce(r.cache_write_tokens, 0)")} END,
            price_status = CASE
                WHEN p.input_mtok IS NULL THEN 'unknown_model'
                WHEN r.prompt_tokens IS NULL AND r.completion_tokens IS NULL THEN 'no_tokens'
                WHEN p.source LIKE 'override:%' THEN 'override'
                ELSE 'priced' END
        FROM prices AS p
        WHERE ({where}) AND p.provider = coalesce(r.provider, '')
          AND p.model = coalesce(nullif(r.model, ''), r.model_group) AND p.day = CAST(r.start_time AS DATE)
    """


def insert_prices(con: duckdb.DuckDBPyConnection, rows: list[dict]) -> None:
    """Add resolved price rows (from resolve_price) to the case's price table."""
    if not rows:
        return
    frame = pd.DataFrame(rows, columns=["provider", "model", "day", *PRICE_COLUMNS, "source", "matched_model"])
    for c in PRICE_COLUMNS:
        frame[c] = frame[c].map(lambda v: None if v is None else str(v)).astype("object")
    query_with(con, "_new_prices", frame,
               "INSERT INTO prices SELECT provider, model, CAST(day AS DATE), "
               + ", ".join(f"CAST({c} AS DECIMAL(38,12))" for c in PRICE_COLUMNS)
               + ", source, matched_model FROM _new_prices")


def price_requests(
    con: duckdb.DuckDBPyConnection, where: str = "price_status IS NULL", overrides_path: Path | None = None
) -> int:
    """Fill cost_usd / price_status for the requests selected by `where`; returns how many new price rows."""
    overrides = load_overrides(overrides_path)
    keys = con.execute(resolve_prices_sql(where)).fetchall()
    rows = [resolve_price(p, m, d, overrides, overrides_path.name if overrides_path else "") for p, m, d in keys]
    insert_prices(con, rows)
    con.execute(repriced_cost_sql(where))
    # requests with neither model nor start time cannot be priced at all
    con.execute(f"UPDATE llm_requests SET price_status = 'unpriceable' WHERE ({where}) AND price_status IS NULL")
    return len(rows)


def reprice_all(con: duckdb.DuckDBPyConnection, overrides_path: Path | None) -> int:
    """Forget every resolved price and re-price the whole case (after the analyst gave a new override file)."""
    con.execute("DELETE FROM prices")
    con.execute("UPDATE llm_requests SET cost_usd = NULL, price_status = NULL")
    return price_requests(con, "price_status IS NULL", overrides_path)
