"""The evidence a refund request rests on, computed from the case: which incidents are disputed on whose bill, their
requests and cost over time, the provider's own bill on those days beside our legitimate traffic, the price tables
and account ids. outputs/bundle.py only writes it out."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case

VERDICTS = ("attack",)                              # what a refund request disputes


def requests_step(table: str, provider: str | None) -> Step:
    """The disputed requests: ids the provider can look up, UTC times, model, tokens, cost; keys as hash and hint."""
    where = "WHERE r.provider = ?" if provider else ""
    return Step("export_requests", f"""
        SELECT i.incident, r.request_id, r.litellm_call_id, r.start_time, r.end_time, r.provider,
               coalesce(nullif(r.model_group, ''), r.model) AS requested_model, r.model, r.status, r.error_code,
               r.prompt_tokens, r.completion_tokens, r.cache_read_tokens, r.cache_write_tokens, r.max_tokens,
               r.cost_usd, r.spend_logged, r.client_ip, r.key_hash, r.key_hint, r.user_agent, r.start_time_raw
        FROM llm_requests r JOIN {table} i USING (request_id)
        {where}
        ORDER BY r.start_time, r.request_id
    """)


def minutes_step(table: str, provider: str | None) -> Step:
    """Disputed requests and cost per UTC minute (cost counted at the request's end: when it was billed)."""
    where = "WHERE r.provider = ?" if provider else ""
    return Step("export_cost_per_minute", f"""
        SELECT i.incident, date_trunc('minute', coalesce(r.end_time, r.start_time)) AS minute,
               count(*) AS requests, count(*) FILTER (WHERE r.status = 'success') AS successful,
               CAST(sum(coalesce(r.prompt_tokens, 0)) AS BIGINT) AS prompt_tokens,
               CAST(sum(coalesce(r.completion_tokens, 0)) AS BIGINT) AS completion_tokens,
               coalesce(sum(r.cost_usd) FILTER (WHERE r.status = 'success'), 0) AS cost_usd
        FROM llm_requests r JOIN {table} i USING (request_id)
        {where}
        GROUP BY ALL ORDER BY i.incident, minute
    """)


def provider_days_step(table: str) -> Step:
    """Per UTC day the provider billed: its own cost report (one file per bucket, as the reconciliation reads it)
    beside the proxy's legitimate traffic that day (successful requests of that provider not disputed)."""
    return Step("export_provider_days", f"""
        WITH chosen AS (
            SELECT bucket_start, bucket_end, max(file_id) AS file_id FROM provider_costs WHERE provider = ?
            GROUP BY ALL
        ), billed AS (
            SELECT CAST(c.bucket_start AS DATE) AS day, sum(c.amount_usd) AS provider_cost_usd
            FROM provider_costs c JOIN chosen USING (bucket_start, bucket_end, file_id)
            WHERE c.provider = ? GROUP BY ALL
        ), legit AS (
            SELECT CAST(r.start_time AS DATE) AS day, sum(r.cost_usd) AS legitimate_usd
            FROM llm_requests r ANTI JOIN {table} i USING (request_id)
            WHERE r.provider = ? AND r.status = 'success' GROUP BY ALL
        ), disputed AS (
            SELECT CAST(r.start_time AS DATE) AS day, sum(r.cost_usd) AS disputed_usd
            FROM llm_requests r JOIN {table} i USING (request_id)
            WHERE r.provider = ? AND r.status = 'success' GROUP BY ALL
        )
        SELECT b.day, b.provider_cost_usd, coalesce(l.legitimate_usd, 0) AS legitimate_usd,
               coalesce(d.disputed_usd, 0) AS disputed_usd,
               b.provider_cost_usd - coalesce(l.legitimate_usd, 0) AS billed_beyond_legitimate_usd
        FROM billed b LEFT JOIN legit l USING (day) LEFT JOIN disputed d USING (day)
        ORDER BY b.day
    """)


def minute_reconciliation_step(table: str) -> Step:
    """Per UTC minute of the disputed window where the provider's usage export has 1-minute buckets: the requests it
    counted beside the proxy's served requests, disputed and legitimate (a call is bucketed by its start; failed
    calls are in no usage bucket). Parameters: provider, window start, window end, provider, start, end."""
    return Step("export_minute_reconciliation", f"""
        WITH fine AS (
            SELECT bucket_start AS minute, sum(coalesce(requests, 0)) AS provider_requests,
                   sum(coalesce(input_tokens, 0)) AS provider_input_tokens,
                   sum(coalesce(output_tokens, 0)) AS provider_output_tokens,
                   string_agg(DISTINCT api_key_id, ', ') AS provider_key_ids
            FROM provider_usage
            WHERE provider = ? AND bucket_width = '1m' AND bucket_start >= CAST(? AS TIMESTAMP)
              AND bucket_start <= CAST(? AS TIMESTAMP)
            GROUP BY ALL
        ), proxy AS (
            SELECT date_trunc('minute', r.start_time) AS minute,
                   count(*) FILTER (WHERE i.request_id IS NOT NULL) AS disputed_requests,
                   count(*) FILTER (WHERE i.request_id IS NULL) AS legitimate_requests,
                   CAST(sum(coalesce(r.prompt_tokens, 0)) AS BIGINT) AS proxy_prompt_tokens,
                   CAST(sum(coalesce(r.completion_tokens, 0)) AS BIGINT) AS proxy_completion_tokens
            FROM llm_requests r LEFT JOIN {table} i USING (request_id)
            WHERE r.provider = ? AND r.status = 'success' AND r.start_time >= CAST(? AS TIMESTAMP)
              AND r.start_time < CAST(? AS TIMESTAMP) + INTERVAL 1 MINUTE
            GROUP BY ALL
        )
        SELECT coalesce(f.minute, p.minute) AS minute,
               CAST(coalesce(f.provider_requests, 0) AS BIGINT) AS provider_requests,
               CAST(coalesce(p.disputed_requests, 0) AS BIGINT) AS disputed_requests,
               CAST(coalesce(p.legitimate_requests, 0) AS BIGINT) AS legitimate_requests,
               CAST(coalesce(f.provider_requests, 0) - coalesce(p.disputed_requests, 0)
                    - coalesce(p.legitimate_requests, 0) AS BIGINT) AS difference,
               CAST(coalesce(f.provider_output_tokens, 0) AS BIGINT) AS provider_output_tokens,
               CAST(coalesce(p.proxy_completion_tokens, 0) AS BIGINT) AS proxy_completion_tokens, f.provider_key_ids
        FROM fine f FULL JOIN proxy p USING (minute)
        ORDER BY minute
    """)


def billed_keys_step(table: str) -> Step:
    """The provider key ids and projects whose usage buckets overlap the disputed requests (parameters: provider,
    the disputed window's start and end): what the provider's support looks up."""
    return Step("export_billed_keys", """
        SELECT DISTINCT api_key_id, project_id FROM provider_usage
        WHERE provider = ? AND bucket_end > CAST(? AS TIMESTAMP) AND bucket_start <= CAST(? AS TIMESTAMP)
          AND coalesce(requests, 1) > 0 AND (api_key_id IS NOT NULL OR project_id IS NOT NULL)
        ORDER BY ALL
    """)


@dataclass
class Disputed:
    provider: str | None
    request_cost: Decimal            # the proxy's requests, re-priced at list prices
    outside_cost: Decimal            # usage outside the proxy, priced from the provider's usage data
    provider_days: pd.DataFrame      # the provider's cost report on the incident days, with our legitimate traffic

    @property
    def billed_beyond_legitimate(self) -> Decimal | None:
        """The provider's own bill on the incident days minus what our legitimate traffic cost those days."""
        if not len(self.provider_days):
            return None
        return sum((Decimal(v) for v in self.provider_days["billed_beyond_legitimate_usd"]), Decimal(0))


def choose(case: Case, inv, provider: str | None) -> tuple[str | None, list]:
    """The incidents a refund request disputes (attack verdicts), restricted to one provider's bill."""
    attacks = [f for f in inv.incidents if f.incident.verdict in VERDICTS]
    per_provider: dict[str, Decimal] = {}
    for f in attacks:
        if f.provider:
            per_provider[f.provider] = per_provider.get(f.provider, Decimal(0)) + f.cost_usd
        elif f.request_ids:
            pick = case.load_ids("export_pick", f.request_ids)
            for prov, cost in case.execute(f"""SELECT r.provider, coalesce(sum(r.cost_usd), 0) FROM llm_requests r
                                              JOIN {pick} USING (request_id) GROUP BY ALL""").fetchall():
                if prov:
                    per_provider[prov] = per_provider.get(prov, Decimal(0)) + Decimal(cost)
    if provider is None and per_provider:
        provider = max(sorted(per_provider), key=lambda p: per_provider[p])
    chosen = [f for f in attacks if (f.provider == provider if f.provider else bool(f.request_ids))]
    return provider, chosen


def disputed_ids_step() -> Step:
    """The disputed request ids and their incident (parameters: one list of [request_id, incident] pairs)."""
    return Step("export_ids", """
        SELECT CAST(p[1] AS VARCHAR) AS request_id, CAST(p[2] AS VARCHAR) AS incident
        FROM (SELECT unnest(CAST(? AS VARCHAR[][])) AS p)
    """)


@dataclass
class Evidence:
    provider: str | None
    chosen: list                        # IncidentFindings disputed, in time order
    requests: pd.DataFrame              # export_requests
    minutes: pd.DataFrame               # export_cost_per_minute
    disputed: Disputed
    price_tables: str                   # the price sources used, e.g. "genai-prices 0.0.30"
    accounts: list[str] = field(default_factory=list)    # provider project / API key ids in the case
    files: list[dict] = field(default_factory=list)      # ingest_files rows loaded (path order), for custody
    per_minute: pd.DataFrame | None = None               # export_minute_reconciliation (1-minute buckets only)
    billed_keys: list[str] = field(default_factory=list)  # provider key ids / projects billed in the window


def evidence(case: Case, inv, provider: str | None = None) -> Evidence:
    """Everything the bundle holds, for the attack incidents on `provider`'s bill (default: the costliest)."""
    provider, chosen = choose(case, inv, provider)
    pairs = [[str(i), f.incident.id] for f in chosen for i in f.request_ids]
    table = case.run(disputed_ids_step(), [pairs])
    params = [provider] if provider else []
    reqs = case.query(requests_step(table, provider), params)
    minutes = case.query(minutes_step(table, provider), params)
    request_cost = sum((Decimal(str(c)) for c, s in zip(reqs["cost_usd"], reqs["status"]) if s == "success"
                        and c is not None), Decimal(0))
    outside_cost = sum((Decimal(f.cost_usd) for f in chosen
                        if f.provider_buckets is not None and len(f.provider_buckets)), Decimal(0))
    # the price table the investigation used: the case's, with the provider usage models' (analysis/reconcile.py)
    prices = case.tables.get("usage_prices", "prices")
    price_tables = ", ".join(s for (s,) in case.execute(f"SELECT DISTINCT source FROM {prices} ORDER BY 1"
                                                         ).fetchall())
    accounts = [i for (i,) in case.execute("""
        SELECT DISTINCT 'project ' || project_id FROM provider_costs WHERE provider = ? AND project_id IS NOT NULL
        UNION SELECT DISTINCT 'API key id ' || api_key_id FROM provider_usage WHERE provider = ?
          AND api_key_id IS NOT NULL ORDER BY 1""", [provider, provider]).fetchall()] if provider else []
    files = sorted(inv.files, key=lambda f: (f["path"], f["file_id"]))
    per_minute, billed = None, []
    proxy = [f for f in chosen if f.request_ids]
    if provider and proxy:
        start = min(f.incident.start for f in proxy).replace(second=0, microsecond=0)
        end = max(f.incident.end for f in proxy)
        per_minute = case.query(minute_reconciliation_step(table), [provider, start, end, provider, start, end])
        if not per_minute["provider_key_ids"].notna().any():
            per_minute = None                       # no 1-minute buckets: the daily reconciliation is all there is
        billed = [" / ".join(x for x in (f"API key id {k}" if k else None, f"project {p}" if p else None) if x)
                  for k, p in case.query(billed_keys_step(table), [provider, start, end]).itertuples(index=False)]
    billed += [f"API key id {f.provider_key_id}" for f in chosen if f.provider_key_id
               and f"API key id {f.provider_key_id}" not in billed]
    return Evidence(provider, chosen, reqs, minutes, _disputed(case, provider, chosen, request_cost, outside_cost,
                                                               table), price_tables, accounts, files, per_minute,
                    billed)


def _disputed(case: Case, provider, chosen, request_cost: Decimal, outside_cost: Decimal, table: str) -> Disputed:
    days = pd.DataFrame()
    if provider is not None and chosen:
        days = case.query(provider_days_step(table), [provider] * 4)
        incident_days = {d.date() for f in chosen for d in pd.date_range(f.incident.start.date(), f.incident.end.date())}
        days = days[days["day"].map(lambda d: pd.Timestamp(d).date() in incident_days)].reset_index(drop=True)
    return Disputed(provider, request_cost, outside_cost, days)
