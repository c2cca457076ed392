"""Reconcile the provider's bill with what the proxy logged; find provider keys used outside the proxy.

The provider's cost report is authoritative for money (it reconciles to the invoice); its usage report carries the
per-key, per-hour token counts that attribution needs. Where two exports cover the same bucket, the later-loaded file
wins so that overlapping exports never double a bucket.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import duckdb

from forensics.analysis.steps import Step, query_step, run_step

OUTSIDE_OVERLAP = 0.5             # a key whose usage the proxy explains less than this is used outside it
EXCESS_MIN_TOKENS = 10_000        # per bucket: less unexplained usage on a proxy key is rounding, not a leak


@dataclass
class Reconciliation:
    provider: str
    start: object
    end: object
    provider_cost_usd: Decimal
    proxy_cost_usd: Decimal
    unexplained_usd: Decimal
    outside_proxy: list[dict] = field(default_factory=list)
    daily: object = None            # pandas frame: per day provider vs proxy


def provider_costs_step() -> Step:
    """Provider-billed USD per provider and bucket, one file per bucket (the last loaded) so overlaps count once."""
    return Step("provider_cost_buckets", """
        WITH chosen AS (
            SELECT provider, bucket_start, bucket_end, max(file_id) AS file_id
            FROM provider_costs GROUP BY ALL
        )
        SELECT c.provider, c.bucket_start, c.bucket_end, sum(c.amount_usd) AS provider_cost_usd
        FROM provider_costs c JOIN chosen USING (provider, bucket_start, bucket_end, file_id)
        GROUP BY ALL
    """)


def daily_reconciliation_step() -> Step:
    """Per provider and billing bucket: provider cost beside the proxy's re-priced and logged cost."""
    return Step("daily_reconciliation", """
        WITH proxy AS (
            SELECT b.provider, b.bucket_start, coalesce(sum(r.cost_usd), 0) AS proxy_cost_usd,
                   coalesce(sum(r.spend_logged), 0) AS proxy_logged_usd
            FROM __f_provider_cost_buckets b
            LEFT JOIN llm_requests r
              ON r.provider = b.provider AND r.status = 'success'
             AND r.start_time >= b.bucket_start AND r.start_time < b.bucket_end
            GROUP BY ALL
        )
        SELECT b.provider, b.bucket_start, b.bucket_end, b.provider_cost_usd, p.proxy_cost_usd, p.proxy_logged_usd,
               b.provider_cost_usd - p.proxy_cost_usd AS unexplained_usd
        FROM __f_provider_cost_buckets b JOIN proxy p USING (provider, bucket_start)
        ORDER BY b.provider, b.bucket_start
    """)


def usage_by_key_step() -> Step:
    """Provider tokens per key id and bucket (finest width loaded), against the proxy's tokens in that bucket."""
    return Step("usage_by_key", """
        WITH width AS (
            SELECT provider, arg_min(bucket_width, bucket_end - bucket_start) AS finest
            FROM provider_usage WHERE api_key_id IS NOT NULL GROUP BY provider
        ), chosen AS (
            SELECT u.provider, u.bucket_start, u.bucket_end, max(u.file_id) AS file_id
            FROM provider_usage u JOIN width w ON u.provider = w.provider AND u.bucket_width = w.finest
            WHERE u.api_key_id IS NOT NULL GROUP BY ALL
        ), usage AS (
            SELECT u.provider, u.api_key_id, u.bucket_start, u.bucket_end, u.model,
                   sum(coalesce(u.input_tokens, 0) + coalesce(u.output_tokens, 0)) AS tokens,
                   sum(coalesce(u.input_tokens, 0)) AS input_tokens, sum(coalesce(u.output_tokens, 0)) AS output_tokens,
                   sum(coalesce(u.cache_read_tokens, 0)) AS cache_read_tokens,
                   sum(coalesce(u.cache_write_tokens, 0)) AS cache_write_tokens
            FROM provider_usage u JOIN chosen USING (provider, bucket_start, bucket_end, file_id)
            GROUP BY ALL
        ), proxy AS (
            SELECT u.provider, u.bucket_start, sum(coalesce(r.prompt_tokens, 0) + coalesce(r.completion_tokens, 0))
                   AS proxy_tokens
            FROM (SELECT DISTINCT provider, bucket_start, bucket_end FROM usage) u
            JOIN llm_requests r ON r.provider = u.provider AND r.status = 'success'
             AND r.start_time >= u.bucket_start AND r.start_time < u.bucket_end
            GROUP BY ALL
        ), per_bucket AS (
            SELECT provider, api_key_id, bucket_start, any_value(bucket_end) AS bucket_end, sum(tokens) AS tokens
            FROM usage GROUP BY ALL
        )
        SELECT k.*, coalesce(p.proxy_tokens, 0) AS proxy_tokens,
               least(k.tokens, coalesce(p.proxy_tokens, 0)) AS explained_tokens
        FROM per_bucket k LEFT JOIN proxy p USING (provider, bucket_start)
    """)


def outside_proxy_step() -> Step:
    """Key ids the proxy does not explain, and on the proxy's own keys the buckets with unexplained usage."""
    return Step("outside_proxy", f"""
        WITH overlap AS (
            SELECT provider, api_key_id, sum(explained_tokens) / nullif(sum(tokens), 0) AS overlap
            FROM __f_usage_by_key GROUP BY ALL
        ), flagged AS (
            SELECT u.*, o.overlap,
                   CASE WHEN o.overlap < {OUTSIDE_OVERLAP} THEN u.tokens
                        ELSE greatest(u.tokens - u.proxy_tokens, 0) END AS outside_tokens
            FROM __f_usage_by_key u JOIN overlap o USING (provider, api_key_id)
        )
        SELECT * FROM flagged
        WHERE (overlap < {OUTSIDE_OVERLAP} AND tokens > 0) OR outside_tokens >= {EXCESS_MIN_TOKENS}
    """)


def outside_cost_step() -> Step:
    """Price the outside usage per key, bucket and model from the provider's own token counts."""
    return Step("outside_proxy_cost", """
        WITH usage AS (
            SELECT u.provider, u.api_key_id, u.bucket_start, u.bucket_end, u.model,
                   sum(coalesce(u.input_tokens, 0)) AS input_tokens, sum(coalesce(u.output_tokens, 0)) AS output_tokens,
                   sum(coalesce(u.cache_read_tokens, 0)) AS cache_read_tokens,
                   sum(coalesce(u.cache_write_tokens, 0)) AS cache_write_tokens
            FROM provider_usage u JOIN (SELECT DISTINCT provider, api_key_id, bucket_start FROM __f_outside_proxy) f
              USING (provider, api_key_id, bucket_start)
            WHERE u.bucket_width = (SELECT arg_min(bucket_width, bucket_end - bucket_start) FROM provider_usage x
                                    WHERE x.provider = u.provider AND x.api_key_id IS NOT NULL)
            GROUP BY ALL
        )
        SELECT u.*, o.outside_tokens, o.tokens AS key_tokens,
               CAST((greatest(u.input_tokens - u.cache_read_tokens - u.cache_write_tokens, 0) * p.input_mtok
                     + u.cache_read_tokens * coalesce(p.cache_read_mtok, p.input_mtok)
                     + u.cache_write_tokens * coalesce(p.cache_write_mtok, p.input_mtok)
                     + u.output_tokens * p.output_mtok) * 0.000001
                    * CASE WHEN o.outside_tokens = o.tokens THEN 1    -- a whole bucket outside: exact
                           ELSE o.outside_tokens / nullif(o.tokens, 0) END AS DECIMAL(38,12)) AS cost_usd,
               p.input_mtok IS NULL AS unpriced
        FROM usage u JOIN __f_outside_proxy o USING (provider, api_key_id, bucket_start)
        LEFT JOIN prices p ON p.provider = u.provider AND p.model = u.model AND p.day = CAST(u.bucket_start AS DATE)
    """)


def _ensure_usage_prices(con: duckdb.DuckDBPyConnection) -> None:
    """Provider usage models (dated snapshots) priced once per day into the same price table."""
    from forensics import pricing

    keys = con.execute("""
        SELECT DISTINCT provider, model, CAST(bucket_start AS DATE) FROM provider_usage u
        WHERE model IS NOT NULL AND NOT EXISTS (SELECT 1 FROM prices p WHERE p.provider = u.provider
              AND p.model = u.model AND p.day = CAST(u.bucket_start AS DATE))
    """).fetchall()
    pricing.insert_prices(con, [pricing.resolve_price(p, m, d, {}, "") for p, m, d in keys])


def reconcile(con: duckdb.DuckDBPyConnection) -> list[Reconciliation]:
    """One reconciliation per provider that has cost or usage data in the case."""
    run_step(con, provider_costs_step())
    daily = query_step(con, daily_reconciliation_step())
    run_step(con, usage_by_key_step())
    run_step(con, outside_proxy_step())
    _ensure_usage_prices(con)
    outside = query_step(con, outside_cost_step())
    providers = sorted(set(daily["provider"]) | set(outside["provider"]))
    out = []
    for provider in providers:
        d = daily[daily["provider"] == provider]
        o = outside[outside["provider"] == provider]
        keys = []
        for key_id, g in o.groupby("api_key_id", sort=True):
            keys.append({
                "api_key_id": key_id, "start": g["bucket_start"].min(), "end": g["bucket_end"].max(),
                "cost_usd": sum((Decimal(str(c)) for c in g["cost_usd"].dropna()), Decimal(0)),
                "tokens": int(g["outside_tokens"].sum()), "unpriced_buckets": int(g["unpriced"].sum()),
            })
        provider_cost = sum((Decimal(str(v)) for v in d["provider_cost_usd"]), Decimal(0))
        proxy_cost = sum((Decimal(str(v)) for v in d["proxy_cost_usd"]), Decimal(0))
        out.append(Reconciliation(
            provider, d["bucket_start"].min() if len(d) else None, d["bucket_end"].max() if len(d) else None,
            provider_cost, proxy_cost, provider_cost - proxy_cost, keys, d))
    return out
