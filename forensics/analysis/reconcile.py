"""Reconcile the provider's bill with what the proxy logged; find provider keys used outside the proxy.

The provider's cost report is authoritative for money (it reconciles to the invoice); its usage report carries the
per-key, per-hour token counts that attribution needs. Where two exports cover the same bucket, the later-loaded file
wins so that overlapping exports never double a bucket.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.steps import Step
from forensics.pricing import token_cost_sql
from forensics.schema import MONEY

if TYPE_CHECKING:
    from forensics.api import Case

OUTSIDE_OVERLAP = 0.5             # a key whose usage the proxy explains less than this is used outside it
EXCESS_MIN_TOKENS = 1_000         # per bucket and model: less unexplained usage is noise, not a leak
FIRST_BUCKET_SLACK = 20           # logs beginning within 1/20 of a bucket's width still cover that bucket


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
    logs_start: object = None       # the proxy's logs: first request start and last request end (what they cover)
    logs_end: object = None


LOG_WINDOW_SQL = """(SELECT min(start_time) AS first, max(coalesce(end_time, start_time)) AS last
                      FROM llm_requests)"""


def inside_logs_sql(alias: str) -> str:
    """Buckets the proxy's logs cover (at the bucket's own width): elsewhere silence is not evidence. A bucket the
    logs begin in counts only when they begin in its first twentieth (a log that starts at 01:50 says nothing of
    01:00-01:50); the last bucket is cut where both sources end, at collection time."""
    width = f"({alias}.bucket_end - {alias}.bucket_start)"
    return (f"{alias}.bucket_start >= (SELECT first FROM {LOG_WINDOW_SQL}) - {width} / {FIRST_BUCKET_SLACK} "
            f"AND {alias}.bucket_start <= (SELECT last FROM {LOG_WINDOW_SQL})")


def provider_costs_step() -> Step:
    """Provider-billed USD per provider and bucket inside the proxy's log window, one file per bucket (the last
    loaded) so overlaps count once."""
    return Step("provider_cost_buckets", f"""
        WITH chosen AS (
            SELECT provider, bucket_start, bucket_end, max(file_id) AS file_id
            FROM provider_costs c WHERE {inside_logs_sql('c')} GROUP BY ALL
        )
        SELECT c.provider, c.bucket_start, c.bucket_end, sum(c.amount_usd) AS provider_cost_usd
        FROM provider_costs c JOIN chosen USING (provider, bucket_start, bucket_end, file_id)
        GROUP BY ALL
    """)


def daily_reconciliation_step(buckets: str) -> Step:
    """Per provider and billing bucket: provider cost beside the proxy's re-priced and logged cost."""
    return Step("daily_reconciliation", f"""
        WITH proxy AS (
            SELECT b.provider, b.bucket_start, coalesce(sum(r.cost_usd), 0) AS proxy_cost_usd,
                   coalesce(sum(r.spend_logged), 0) AS proxy_logged_usd
            FROM {buckets} b
            LEFT JOIN llm_requests r
              ON r.provider = b.provider AND r.status = 'success'
             AND r.start_time >= b.bucket_start AND r.start_time < b.bucket_end
            GROUP BY ALL
        )
        SELECT b.provider, b.bucket_start, b.bucket_end, b.provider_cost_usd, p.proxy_cost_usd, p.proxy_logged_usd,
               b.provider_cost_usd - p.proxy_cost_usd AS unexplained_usd
        FROM {buckets} b JOIN proxy p USING (provider, bucket_start)
        ORDER BY b.provider, b.bucket_start
    """)


def usage_width_sql(which: str) -> str:
    """Per provider, the usage bucket width to read: 'span' = the one covering the longest time (complete totals),
    'finest' = the narrowest one that has data (precise windows)."""
    order = "max(bucket_end) - min(bucket_start) DESC, min(bucket_end - bucket_start)" if which == "span" \
        else "min(bucket_end - bucket_start), max(bucket_end) - min(bucket_start) DESC"
    return f"""
        SELECT provider, bucket_width FROM provider_usage WHERE bucket_width IS NOT NULL GROUP BY provider, bucket_width
        QUALIFY row_number() OVER (PARTITION BY provider ORDER BY {order}) = 1
    """


PRICE_FIELDS = ("provider", "model", "day", "input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok",
                "source", "matched_model")


def usage_prices_step() -> Step:
    """The case's price table plus the prices of provider usage models it lacks (dated snapshots), resolved in
    Python and given as one parameter: rows of text, in PRICE_FIELDS order. A temp table: the case is not written."""
    cast = {"day": "DATE", "input_mtok": MONEY, "output_mtok": MONEY, "cache_read_mtok": MONEY,
            "cache_write_mtok": MONEY}
    columns = ", ".join(f"CAST(r[{i}] AS {cast[c]}) AS {c}" if c in cast else f"r[{i}] AS {c}"
                        for i, c in enumerate(PRICE_FIELDS, start=1))
    return Step("usage_prices", f"""
        SELECT {", ".join(PRICE_FIELDS)} FROM prices
        UNION ALL
        SELECT {columns} FROM (SELECT unnest(CAST(? AS VARCHAR[][])) AS r)
    """)


def usage_price_rows(case: Case) -> list[list[str | None]]:
    """Prices for the provider usage models the case's price table lacks (per provider, model, day), as text."""
    from forensics import pricing

    keys = case.execute("""
        SELECT DISTINCT provider, model, CAST(bucket_start AS DATE) FROM provider_usage u
        WHERE model IS NOT NULL AND NOT EXISTS (SELECT 1 FROM prices p WHERE p.provider = u.provider
              AND p.model = u.model AND p.day = CAST(u.bucket_start AS DATE))
        ORDER BY ALL
    """).fetchall()
    rows = []
    for p, m, d in keys:
        price = pricing.resolve_price(p, m, d, {}, "")
        rows.append([None if price[c] is None else format(price[c], "f") if isinstance(price[c], Decimal)
                     else str(price[c]) for c in PRICE_FIELDS])
    return rows


def usage_vs_proxy_step(which: str, prices: str, whole: bool = False) -> Step:
    """Per provider, bucket, key id and canonical model: the provider's tokens by type beside the proxy's.

    Models are compared by genai-prices' canonical id (usage reports dated snapshots, the proxy often the alias).
    The proxy's successful requests are bucketed by start time at the same width. `prices`: usage_prices_step's.
    Only the buckets the proxy's logs cover; `whole`: every bucket of the provider's export (the period of a key
    the proxy did not use while it logged: its use is outside the proxy whether or not the proxy logged then).
    """
    return Step(f"usage_vs_proxy_{which}{'_whole' if whole else ''}", f"""
        WITH width AS ({usage_width_sql(which)}),
        chosen AS (   -- one file per bucket: overlapping exports never double; only where the proxy logged
            SELECT u.provider, u.bucket_start, max(u.file_id) AS file_id
            FROM provider_usage u JOIN width w USING (provider, bucket_width)
            WHERE {"true" if whole else inside_logs_sql('u')} GROUP BY ALL
        ), usage AS (
            SELECT u.provider, u.bucket_start, any_value(u.bucket_end) AS bucket_end,
                   coalesce(u.api_key_id, '(no key id)') AS api_key_id,
                   coalesce(p.matched_model, u.model) AS model, any_value(u.model) AS provider_model,
                   sum(coalesce(u.input_tokens, 0)) AS input_tokens, sum(coalesce(u.output_tokens, 0)) AS output_tokens,
                   sum(coalesce(u.cache_read_tokens, 0)) AS cache_read_tokens,
                   sum(coalesce(u.cache_write_tokens, 0)) AS cache_write_tokens, sum(u.requests) AS requests
            FROM provider_usage u JOIN width w USING (provider, bucket_width)
            JOIN chosen c USING (provider, bucket_start, file_id)
            LEFT JOIN {prices} p
              ON p.provider = u.provider AND p.model = u.model AND p.day = CAST(u.bucket_start AS DATE)
            GROUP BY ALL
        ), buckets AS (SELECT DISTINCT provider, bucket_start, bucket_end FROM usage),
        proxy AS (
            SELECT b.provider, b.bucket_start, coalesce(p.matched_model, r.model) AS model,
                   sum(coalesce(r.prompt_tokens, 0)) AS input_tokens, sum(coalesce(r.completion_tokens, 0)) AS output_tokens,
                   sum(coalesce(r.cache_read_tokens, 0)) AS cache_read_tokens,
                   sum(coalesce(r.cache_write_tokens, 0)) AS cache_write_tokens, count(*) AS requests
            FROM buckets b JOIN llm_requests r ON r.provider = b.provider AND r.status = 'success'
             AND r.start_time >= b.bucket_start AND r.start_time < b.bucket_end
            LEFT JOIN {prices} p ON p.provider = r.provider AND p.model = r.model AND p.day = CAST(r.start_time AS DATE)
            GROUP BY ALL
        )
        SELECT u.*, coalesce(x.input_tokens, 0) AS proxy_input_tokens, coalesce(x.output_tokens, 0) AS proxy_output_tokens,
               coalesce(x.cache_read_tokens, 0) AS proxy_cache_read_tokens,
               coalesce(x.cache_write_tokens, 0) AS proxy_cache_write_tokens, coalesce(x.requests, 0) AS proxy_requests
        FROM usage u LEFT JOIN proxy x USING (provider, bucket_start, model)
    """)


def proxy_keys_step(src: str) -> Step:
    """The provider key ids the proxy uses: those whose usage (over the widest-spanning export) the proxy's own
    requests explain at least half of, bucket by bucket and model by model, and per provider the key it explains
    most of (its own key, when an attacker using that key outside it spent more than the proxy did)."""
    return Step("proxy_keys", f"""
        WITH key_totals AS (
            SELECT provider, api_key_id, sum(input_tokens + output_tokens) AS tokens FROM {src} GROUP BY ALL
        ), model_bucket AS (   -- how much of each bucket and model the proxy explains, shared over key ids
            SELECT provider, bucket_start, model, sum(input_tokens + output_tokens) AS tokens,
                   any_value(proxy_input_tokens + proxy_output_tokens) AS proxy_tokens
            FROM {src} GROUP BY ALL
        ), overlap AS (
            SELECT s.provider, s.api_key_id,
                   sum((s.input_tokens + s.output_tokens) * least(m.proxy_tokens / nullif(m.tokens, 0), 1))
                     / nullif(any_value(k.tokens), 0) AS explained_share
            FROM {src} s JOIN model_bucket m USING (provider, bucket_start, model)
            JOIN key_totals k USING (provider, api_key_id) GROUP BY ALL
        )
        SELECT provider, api_key_id, explained_share FROM overlap
        WHERE explained_share >= {OUTSIDE_OVERLAP}
           OR (explained_share > 0   -- the proxy's requests went through some key: the best explained one
               AND explained_share = (SELECT max(o.explained_share) FROM overlap o WHERE o.provider = overlap.provider))
    """)


def outside_usage_step(which: str, src: str, whole: str, proxy_keys: str, prices: str, net: bool = False) -> Step:
    """Usage the proxy does not explain: all of a key id the proxy never used (it explains under half of its
    tokens), and on the proxy's own key ids the tokens above the proxy's, per type, model and bucket.

    `src`: usage_vs_proxy_step's rows where the proxy's logs cover, `whole`: its rows over the provider's whole
    export. The proxy's own key ids are compared only where its logs cover (elsewhere its silence is not evidence:
    the export may have been taken earlier, or the proxy was down); a key id that was used while the proxy logged and
    that the proxy did not use is counted over the whole export, before the proxy's logs begin and after they end
    (`beyond_logs` marks those buckets): its use never went through the proxy. A key id seen only outside the logs
    is not judged (the proxy's own key before a rotation looks just like that). `net`: the
    signed difference in every bucket (a request the proxy logged at 10:00:59 and the provider counted at 10:01 is
    +1 in one minute and -1 in the next), what a window's outside-proxy cost is summed from."""
    def diff(col: str) -> str:
        d = f"sum({col}) - any_value(proxy_{col})"
        return d if net else f"greatest({d}, 0)"

    return Step(f"outside_usage_{which}{'_net' if net else ''}", f"""
        WITH proxy_keys AS (SELECT provider, api_key_id FROM {proxy_keys}),
        own AS (   -- the proxy's key ids summed: their usage minus the proxy's, per type
            SELECT provider, bucket_start, any_value(bucket_end) AS bucket_end, model, any_value(provider_model) AS provider_model,
                   string_agg(DISTINCT api_key_id, ',' ORDER BY api_key_id) AS api_key_id,
                   {diff("input_tokens")} AS input_tokens, {diff("output_tokens")} AS output_tokens,
                   {diff("cache_read_tokens")} AS cache_read_tokens, {diff("cache_write_tokens")} AS cache_write_tokens,
                   {diff("requests")} AS requests, false AS beyond_logs, true AS own_key
            FROM {src} JOIN proxy_keys USING (provider, api_key_id) GROUP BY provider, bucket_start, model
        ), foreign_keys AS (
            SELECT provider, bucket_start, bucket_end, model, provider_model, api_key_id, input_tokens, output_tokens,
                   cache_read_tokens, cache_write_tokens, requests,
                   (provider, bucket_start) NOT IN (SELECT (provider, bucket_start) FROM {src}) AS beyond_logs, false AS own_key
            FROM {whole} WHERE (provider, api_key_id) NOT IN (SELECT (provider, api_key_id) FROM proxy_keys)
              AND (provider, api_key_id) IN (SELECT (provider, api_key_id) FROM {src})
        )
        SELECT o.*, date_diff('minute', o.bucket_start, o.bucket_end) AS bucket_minutes,
               {token_cost_sql("o.input_tokens", "o.output_tokens", "o.cache_read_tokens", "o.cache_write_tokens",
                               net=net)} AS cost_usd,
               p.input_mtok IS NULL AS unpriced
        FROM (SELECT * FROM own UNION ALL BY NAME SELECT * FROM foreign_keys) o
        LEFT JOIN {prices} p ON p.provider = o.provider AND p.model = o.provider_model
                          AND p.day = CAST(o.bucket_start AS DATE)
        {"" if net else f"WHERE o.input_tokens + o.output_tokens >= {EXCESS_MIN_TOKENS}"}
    """)


def own_after_logs_step(whole: str, proxy_keys: str, prices: str) -> Step:
    """Per provider and bucket of `whole` (usage_vs_proxy_step's rows over the whole export): the proxy's own key
    ids' usage at list prices and the proxy's logged part of it, and whether the bucket is past the proxy's logs'
    end. Past it the proxy's silence is not evidence (its spend logs were exported earlier), but a spike of use
    outside it that was running when they ended may run on there (`investigate._past_logs_end`)."""
    def priced(prefix: str) -> str:
        return token_cost_sql(*(f"{prefix}{c}_tokens" for c in ("input", "output", "cache_read", "cache_write")))
    return Step("own_after_logs", f"""
        WITH per_model AS (   -- the proxy's key ids summed; its logged tokens once per model
            SELECT provider, bucket_start, any_value(bucket_end) AS bucket_end, model,
                   any_value(provider_model) AS provider_model,
                   sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                   sum(cache_read_tokens) AS cache_read_tokens, sum(cache_write_tokens) AS cache_write_tokens,
                   any_value(proxy_input_tokens) AS proxy_input_tokens,
                   any_value(proxy_output_tokens) AS proxy_output_tokens,
                   any_value(proxy_cache_read_tokens) AS proxy_cache_read_tokens,
                   any_value(proxy_cache_write_tokens) AS proxy_cache_write_tokens
            FROM {whole} JOIN {proxy_keys} USING (provider, api_key_id) GROUP BY provider, bucket_start, model
        )
        SELECT m.provider, m.bucket_start,
               date_diff('minute', m.bucket_start, any_value(m.bucket_end)) AS bucket_minutes,
               CAST(sum({priced("m.")}) AS DECIMAL(38,12)) AS cost_usd,
               CAST(sum({priced("m.proxy_")}) AS DECIMAL(38,12)) AS proxy_cost_usd,
               m.bucket_start > (SELECT last FROM {LOG_WINDOW_SQL}) AS after_logs
        FROM per_model m LEFT JOIN {prices} p ON p.provider = m.provider AND p.model = m.provider_model
                                            AND p.day = CAST(m.bucket_start AS DATE)
        GROUP BY m.provider, m.bucket_start
    """)


def _finest_covering(fine: pd.DataFrame, span: pd.DataFrame) -> pd.DataFrame:
    """The finest export's buckets when they reach both ends of what the widest export shows, else the widest's:
    a window is never narrower than the spend it carries."""
    if fine.empty:
        return span
    width = pd.Timedelta(minutes=int(span["bucket_minutes"].iloc[0]))
    first, last = span["bucket_start"].min(), span["bucket_start"].max()
    covers = fine["bucket_start"].min() < first + width and fine["bucket_start"].max() >= last
    return fine if covers else span


def _per_bucket(frame: pd.DataFrame) -> pd.DataFrame:
    """bucket_start, cost_usd summed over models (Decimal)."""
    return frame.groupby("bucket_start", as_index=False)["cost_usd"].agg(
        lambda c: sum((Decimal(str(v)) for v in c.dropna()), Decimal(0)))


def reconcile(case: Case) -> list[Reconciliation]:
    """One reconciliation per provider that has cost or usage data in the case."""
    buckets = case.run(provider_costs_step())
    daily = case.query(daily_reconciliation_step(buckets))
    prices = case.run(usage_prices_step(), [usage_price_rows(case)])
    usage = {which: case.run(usage_vs_proxy_step(which, prices)) for which in ("span", "finest")}
    whole = {which: case.run(usage_vs_proxy_step(which, prices, whole=True)) for which in ("span", "finest")}
    proxy_keys = case.run(proxy_keys_step(usage["span"]))
    outside = case.query(outside_usage_step("span", usage["span"], whole["span"], proxy_keys, prices))
    fine = case.query(outside_usage_step("finest", usage["finest"], whole["finest"], proxy_keys, prices))
    net = {which: case.query(outside_usage_step(which, usage[which], whole[which], proxy_keys, prices, net=True))
           for which in ("span", "finest")}
    logs = case.execute(f"SELECT first, last FROM {LOG_WINDOW_SQL}").fetchone()
    own_after = case.query(own_after_logs_step(whole["finest"], proxy_keys, prices))
    providers = sorted(set(daily["provider"]) | set(outside["provider"]))
    out = []
    for provider in providers:
        d = daily[daily["provider"] == provider]
        o = outside[outside["provider"] == provider]
        keys = []
        f = fine[fine["provider"] == provider]
        for key_id, g in o.groupby("api_key_id", sort=True):
            foreign = not g["own_key"].any()
            w = _finest_covering(f[f["api_key_id"] == key_id], g)
            nets = {which: x[(x["provider"] == provider) & (x["api_key_id"] == key_id)] for which, x in net.items()}
            n = nets["finest" if w is not g else "span"]
            keys.append({
                "api_key_id": key_id, "start": w["bucket_start"].min(), "end": w["bucket_start"].max(),
                "cost_usd": sum((Decimal(str(c)) for c in g["cost_usd"].dropna()), Decimal(0)),
                "tokens": int(g["input_tokens"].sum() + g["output_tokens"].sum()),
                "requests": int(g["requests"].fillna(0).sum()), "unpriced_buckets": int(g["unpriced"].sum()),
                "models": sorted(set(g["model"].dropna())),
                "by_model": pd.DataFrame([
                    {"model": m, "requests": int(x["requests"].fillna(0).sum()),
                     "cost_usd": sum((Decimal(str(v)) for v in x["cost_usd"].dropna()), Decimal(0))}
                    for m, x in g.groupby("model", sort=True)]),
                # cost per bucket at the finest width that has it: what the projection resamples
                "buckets": w.groupby("bucket_start", as_index=False)["cost_usd"].agg(
                    lambda c: sum((Decimal(str(v)) for v in c.dropna()), Decimal(0))),
                "bucket_minutes": int(w["bucket_minutes"].iloc[0]),
                # the signed difference per bucket, every bucket: a window's cost outside the proxy is its sum
                "net_buckets": _per_bucket(n),
                "net_span": (_per_bucket(nets["span"]), int(g["bucket_minutes"].iloc[0])),  # the longest past
                # the first and last bucket of the provider's exports (a key the proxy did not use: all of them;
                # the proxy's own: those its logs cover): a key used only in a spike is quiet there
                "export_range": {which: _range(x[(x["provider"] == provider) & (foreign | ~x["beyond_logs"])])
                                 for which, x in net.items()},
                "finest": w is not g,
                "beyond_logs_usd": sum((Decimal(str(c)) for c in g.loc[g["beyond_logs"], "cost_usd"].dropna()),
                                       Decimal(0)),
                # the proxy's own key ids: their usage per finest bucket over the whole export, the proxy's part
                # beside it, and which buckets lie past its logs' end
                "after_logs": None if foreign else own_after[own_after["provider"] == provider].sort_values(
                    "bucket_start").reset_index(drop=True),
            })
        provider_cost = sum((Decimal(str(v)) for v in d["provider_cost_usd"]), Decimal(0))
        proxy_cost = sum((Decimal(str(v)) for v in d["proxy_cost_usd"]), Decimal(0))
        out.append(Reconciliation(
            provider, d["bucket_start"].min() if len(d) else None, d["bucket_end"].max() if len(d) else None,
            provider_cost, proxy_cost, provider_cost - proxy_cost, keys, d, logs_start=logs[0], logs_end=logs[1]))
    return out


def _range(frame: pd.DataFrame) -> tuple:
    return frame["bucket_start"].min(), frame["bucket_start"].max()
