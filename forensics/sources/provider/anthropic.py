"""Anthropic Admin API usage and cost reports -> provider_usage / provider_costs.

Formats: anthropic.usage_report (pages of GET /v1/organizations/usage_report/messages, and the analytics usage
report, which adds `requests`) and anthropic.cost_report (GET /v1/organizations/cost_report and the analytics cost
report). Cost `amount` is a decimal string in CENTS: "123.78912" is $1.2378912. An amount written as a JSON number
is not what the API returns (someone converted the file, maybe to dollars): it is still read as cents, as the API
defines, and the load notes how many rows did this so the analyst checks the file. Usage: input_tokens is derived as
uncached + cache read + 5m + 1h cache writes; requests stays NULL (the legacy report has no count); workspace_id goes
to project_id (NULL = default workspace), account_id to user_id, description to line_item.
"""
from __future__ import annotations

import re
from pathlib import Path

from forensics.sources.interface import LoadContext, LoadResult
from forensics.sources.provider.provider_pages import PageFormat, field_sql, load_pages, rfc3339_us_sql
from forensics.sources.provider.provider_stage import json_keys

USAGE_FIELD_MAP = (
    ("model", "model"), ("api_key_id", "api_key_id"), ("project_id", "workspace_id"), ("user_id", "account_id"),
    ("service_tier", "service_tier"), ("context_window", "context_window"),
    ("uncached_input_tokens", "uncached_input_tokens"), ("cache_read_tokens", "cache_read_input_tokens"),
    ("output_tokens", "output_tokens"), ("requests", "requests"),
    ("cache_write_5m_tokens", "cache_creation.ephemeral_5m_input_tokens"),
    ("cache_write_1h_tokens", "cache_creation.ephemeral_1h_input_tokens"),
    ("web_search_requests", "server_tool_use.web_search_requests"),
)
COST_FIELD_MAP = (
    ("project_id", "workspace_id"), ("line_item", "description"), ("cost_type", "cost_type"),
    ("token_type", "token_type"), ("model", "model"), ("service_tier", "service_tier"),
    ("context_window", "context_window"), ("currency_raw", "currency"), ("amount_raw", "amount"),
)
# grouping dimensions with no canonical column: rows differing only in these are different usage, never merged
USAGE_EXTRA = ("inference_geo", "speed", "service_account_id")
COST_EXTRA = ("inference_geo", "speed", "product", "rbac_group_id", "list_amount")
FLAGS = {
    "numeric_amount": ("json_type(raw, '$.amount') IN ('BIGINT', 'UBIGINT', 'DOUBLE')",
                       "{n} cost rows have a JSON number as amount where the API writes a decimal string: read as "
                       "cents per the API; check the file was not converted to dollars"),
    "list_amount": ("json_exists(raw, '$.list_amount')",
                    "{n} cost rows carry list_amount (analytics API): amount (post-discount) is loaded, "
                    "list_amount is kept in raw"),
}

_STARTING_AT = re.compile(r'"starting_at"\s*:')
_RESULTS = re.compile(r'"results"\s*:')
_USAGE = re.compile(r'"uncached_input_tokens"\s*:')
_AMOUNT = re.compile(r'"amount"\s*:')
_CURRENCY = re.compile(r'"currency"\s*:')


class AnthropicSource:
    family = "anthropic"

    def detect(self, sample: bytes, path: Path, options=None) -> str | None:
        text = sample.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
        if text[:1] not in ("{", "[") or not (_STARTING_AT.search(text) and _RESULTS.search(text)):
            return None
        if _USAGE.search(text):
            return "anthropic.usage_report"
        if _AMOUNT.search(text) and _CURRENCY.search(text):
            return "anthropic.cost_report"
        # only empty buckets in the sample: the file name is the tie-breaker
        name = path.name.lower()
        if "cost" in name:
            return "anthropic.cost_report"
        if "usage" in name:
            return "anthropic.usage_report"
        return None

    def load(self, ctx: LoadContext, fmt: str) -> LoadResult:
        if fmt not in ("anthropic.usage_report", "anthropic.cost_report"):
            raise ValueError(f"unknown Anthropic format {fmt}")
        return load_pages(ctx, page_format(fmt))


def page_format(fmt: str) -> PageFormat:
    """Anthropic report pages; a result is a cost row when it has an amount, usage when it has token counts."""
    default = "costs" if fmt == "anthropic.cost_report" else "usage"
    cache_not_object = ("cache_write_5m_tokens IS NULL AND cache_write_1h_tokens IS NULL "
                        "AND coalesce(json_type(raw, '$.cache_creation'), 'NULL') NOT IN ('OBJECT', 'NULL')")
    tools_not_object = ("web_search_requests IS NULL "
                        "AND coalesce(json_type(raw, '$.server_tool_use'), 'NULL') NOT IN ('OBJECT', 'NULL')")
    usage_reason = f"""CASE
        WHEN {cache_not_object} THEN 'cache_creation is not an object'
        WHEN {tools_not_object} THEN 'server_tool_use is not an object'
        WHEN uncached_input_tokens IS NULL THEN 'result has no uncached_input_tokens'
        WHEN output_tokens IS NULL THEN 'result has no output_tokens' END"""
    return PageFormat(
        provider="anthropic",
        default_table=default,
        start_key="starting_at", end_key="ending_at", time_us=rfc3339_us_sql, time_kind="an RFC 3339 time",
        table_sql=f"CASE WHEN {field_sql('amount')} IS NOT NULL THEN 'costs' "
                  f"WHEN {field_sql('uncached_input_tokens')} IS NOT NULL THEN 'usage' ELSE '{default}' END",
        paths={"usage": {**dict(USAGE_FIELD_MAP), **{f"_{k}": k for k in USAGE_EXTRA}},
               "costs": {**dict(COST_FIELD_MAP), **{f"_{k}": k for k in COST_EXTRA}}},
        constants={"costs": {"amount_in_cents": "'true'"}},
        reason_sql={"usage": usage_reason, "costs": "NULL"},
        extra={"usage": json_keys(USAGE_EXTRA), "costs": json_keys(COST_EXTRA)},
        flags=FLAGS,
    )


SOURCE = AnthropicSource()
