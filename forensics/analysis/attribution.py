"""Who cost what: requests and cost per key, client address, model and user agent, for an incident or the case."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.steps import Step

if TYPE_CHECKING:
    from forensics.api import Case

DIMENSIONS = {
    "key": ("key_hash", "any_value(key_hint) AS key_hint, any_value(key_alias) AS key_alias"),
    "ip": ("client_ip", "min(start_time) AS first_seen, max(start_time) AS last_seen"),
    "model": ("coalesce(nullif(model_group, ''), model)", "any_value(provider) AS provider"),
    "user_agent": ("user_agent", None),
}


def requests_sql(incident_table: str | None) -> str:
    """The requests in scope: an incident's (by its request-id table) or every request of the case."""
    if incident_table is None:
        return "SELECT * FROM llm_requests"
    return f"SELECT r.* FROM llm_requests r JOIN {incident_table} USING (request_id)"


def cost_by_step(dimension: str, incident_table: str | None, name: str) -> Step:
    """Requests, successes, re-priced and logged cost per value of `dimension`, most expensive first."""
    expr, extra = DIMENSIONS[dimension]
    return Step(name, f"""
        SELECT {expr} AS {dimension}, count(*) AS requests,
               count(*) FILTER (WHERE status = 'success') AS successful,
               coalesce(sum(cost_usd), 0) AS cost_usd, coalesce(sum(spend_logged), 0) AS logged_usd
               {', ' + extra if extra else ''}
        FROM ({requests_sql(incident_table)})
        GROUP BY ALL ORDER BY cost_usd DESC, requests DESC, {dimension} NULLS FIRST
    """)


def cost_by(case: Case, dimension: str, incident_table: str | None = None,
            name: str | None = None) -> pd.DataFrame:
    return case.query(cost_by_step(dimension, incident_table, name or f"cost_by_{dimension}"))


def repricing_difference_step(incident_table: str | None, name: str = "repricing_difference") -> Step:
    """Re-priced cost against LiteLLM's logged spend, per model and price status, to explain any gap."""
    return Step(name, f"""
        SELECT coalesce(nullif(model, ''), model_group) AS model, price_status, count(*) AS requests,
               coalesce(sum(cost_usd), 0) AS repriced_usd, coalesce(sum(spend_logged), 0) AS logged_usd,
               coalesce(sum(cost_usd), 0) - coalesce(sum(spend_logged), 0) AS difference_usd,
               count(*) FILTER (WHERE spend_logged = 0 AND cost_usd > 0) AS logged_zero_but_billable
        FROM ({requests_sql(incident_table)})
        GROUP BY ALL ORDER BY abs(difference_usd) DESC, model
    """)
