"""Where each LiteLLM export keeps each request field, and the SQL that pulls them out as text.

Every format becomes the same text relation (FIELDS); litellm_merge types it once for all formats.
A source path is `col:<name>` (a SpendLogs column), `doc:$.path` (the record's JSON), `meta:$.path`
(inside the metadata JSON, wherever the format keeps it) or `psr:$.path` (inside proxy_server_request).
"""
from __future__ import annotations

from forensics.duck import quote_ident

FIELDS = (
    "request_id", "litellm_call_id", "call_type", "start_raw", "end_raw", "completion_start_raw",
    "api_key", "meta_key", "key_alias", "user_id", "team_id", "team_alias", "org_id", "end_user",
    "requester_ip_raw", "user_agent", "request_tags", "model_group", "model", "model_id", "provider", "api_base",
    "status_raw", "meta_status", "error_class", "error_code", "error_message",
    "prompt_tokens_raw", "completion_tokens_raw", "total_tokens_raw", "cache_read_raw", "cache_write_raw",
    "max_tokens_raw", "stream_raw", "cache_hit_raw", "session_id", "spend_raw",
)

# several usage shapes name the same count; the largest one present is the count (OpenAI leaves the other at 0)
GREATEST = {"cache_read_raw", "cache_write_raw"}

# LiteLLM_SpendLogs columns this loader reads (schema.prisma names); any other column is tolerated and ignored
SPENDLOGS_COLUMNS = (
    "request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens",
    "startTime", "endTime", "completionStartTime", "model", "model_id", "model_group", "custom_llm_provider",
    "api_base", "user", "metadata", "cache_hit", "request_tags", "team_id", "organization_id", "end_user",
    "requester_ip_address", "session_id", "status", "proxy_server_request", "litellm_call_id",
)


def _usage(prefixes: list[str], key: str) -> list[str]:
    return [f"{p}.{key}" for p in prefixes]


_SPEND_USAGE = ["meta:$.usage_object", "meta:$.additional_usage_values"]
SPENDLOGS = {
    "request_id": ["col:request_id"],
    "litellm_call_id": ["col:litellm_call_id"],
    "call_type": ["col:call_type"],
    "start_raw": ["col:startTime"],
    "end_raw": ["col:endTime"],
    "completion_start_raw": ["col:completionStartTime"],
    "api_key": ["col:api_key"],
    "meta_key": ["meta:$.user_api_key"],
    "key_alias": ["meta:$.user_api_key_alias"],
    "user_id": ["col:user", "meta:$.user_api_key_user_id"],
    "team_id": ["col:team_id", "meta:$.user_api_key_team_id"],
    "team_alias": ["meta:$.user_api_key_team_alias"],
    "org_id": ["col:organization_id", "meta:$.user_api_key_org_id"],
    "end_user": ["col:end_user", "meta:$.user_api_key_end_user_id"],
    "requester_ip_raw": ["col:requester_ip_address", "meta:$.requester_ip_address"],
    "user_agent": ["meta:$.user_agent"],
    "request_tags": ["col:request_tags"],
    "model_group": ["col:model_group"],
    "model": ["col:model"],
    "model_id": ["col:model_id"],
    "provider": ["col:custom_llm_provider"],
    "api_base": ["col:api_base"],
    "status_raw": ["col:status"],
    "meta_status": ["meta:$.status"],
    "error_class": ["meta:$.error_information.error_class"],
    "error_code": ["meta:$.error_information.error_code"],
    "error_message": ["meta:$.error_information.error_message"],
    "prompt_tokens_raw": ["col:prompt_tokens"],
    "completion_tokens_raw": ["col:completion_tokens"],
    "total_tokens_raw": ["col:total_tokens"],
    "cache_read_raw": _usage(_SPEND_USAGE, "cache_read_input_tokens")
    + _usage(_SPEND_USAGE, "prompt_tokens_details.cached_tokens"),
    "cache_write_raw": _usage(_SPEND_USAGE, "cache_creation_input_tokens"),
    "max_tokens_raw": ["psr:$.max_tokens", "psr:$.max_completion_tokens"],
    "stream_raw": ["psr:$.stream"],
    "cache_hit_raw": ["col:cache_hit"],
    "session_id": ["col:session_id"],
    "spend_raw": ["col:spend"],
}

_PAYLOAD_USAGE = ["doc:$.metadata.usage_object", "doc:$.hidden_params.usage_object", "doc:$.response.usage"]
PAYLOAD = {
    "request_id": ["doc:$.id"],
    "litellm_call_id": ["doc:$.litellm_call_id"],
    "call_type": ["doc:$.call_type"],
    "start_raw": ["doc:$.startTime"],
    "end_raw": ["doc:$.endTime"],
    "completion_start_raw": ["doc:$.completionStartTime"],
    "api_key": ["doc:$.metadata.user_api_key_hash"],
    "meta_key": ["doc:$.metadata.user_api_key"],
    "key_alias": ["doc:$.metadata.user_api_key_alias"],
    "user_id": ["doc:$.metadata.user_api_key_user_id"],
    "team_id": ["doc:$.metadata.user_api_key_team_id", "doc:$.metadata.team_id"],
    "team_alias": ["doc:$.metadata.user_api_key_team_alias", "doc:$.metadata.team_alias"],
    "org_id": ["doc:$.metadata.user_api_key_org_id"],
    "end_user": ["doc:$.end_user", "doc:$.metadata.user_api_key_end_user_id"],
    "requester_ip_raw": ["doc:$.requester_ip_address", "doc:$.metadata.requester_ip_address"],
    "user_agent": ["doc:$.user_agent", "doc:$.metadata.user_agent"],
    "request_tags": ["doc:$.request_tags"],
    "model_group": ["doc:$.model_group"],
    "model": ["doc:$.model"],
    "model_id": ["doc:$.model_id", "doc:$.hidden_params.model_id"],
    "provider": ["doc:$.custom_llm_provider"],
    "api_base": ["doc:$.api_base", "doc:$.hidden_params.api_base"],
    "status_raw": ["doc:$.status"],
    "meta_status": ["doc:$.metadata.status"],
    "error_class": ["doc:$.error_information.error_class"],
    "error_code": ["doc:$.error_information.error_code"],
    "error_message": ["doc:$.error_information.error_message", "doc:$.error_str"],
    "prompt_tokens_raw": ["doc:$.prompt_tokens"],
    "completion_tokens_raw": ["doc:$.completion_tokens"],
    "total_tokens_raw": ["doc:$.total_tokens"],
    "cache_read_raw": _usage(_PAYLOAD_USAGE, "cache_read_input_tokens")
    + _usage(_PAYLOAD_USAGE, "prompt_tokens_details.cached_tokens"),
    "cache_write_raw": _usage(_PAYLOAD_USAGE, "cache_creation_input_tokens"),
    "max_tokens_raw": ["doc:$.model_parameters.max_tokens", "doc:$.model_parameters.max_completion_tokens"],
    "stream_raw": ["doc:$.stream", "doc:$.model_parameters.stream"],
    "cache_hit_raw": ["doc:$.cache_hit"],
    # SpendLogs.session_id is the payload's trace_id (spend_tracking_utils); keep them equal so rows merge cleanly
    "session_id": ["doc:$.trace_id", "doc:$.session_id"],
    "spend_raw": ["doc:$.response_cost", "doc:$.hidden_params.response_cost"],
}

FLAT = {
    "request_id": ["doc:$.request_id"],
    "litellm_call_id": ["doc:$.litellm_call_id"],
    "call_type": ["doc:$.call_type"],
    "start_raw": ["doc:$.start_time"],
    "end_raw": ["doc:$.end_time"],
    "completion_start_raw": ["doc:$.completion_start_time"],
    "api_key": ["doc:$.api_key"],
    "meta_key": ["meta:$.user_api_key_hash", "meta:$.user_api_key"],
    "key_alias": ["doc:$.key_alias", "meta:$.user_api_key_alias"],
    "user_id": ["doc:$.user", "meta:$.user_api_key_user_id"],
    "team_id": ["doc:$.team_id", "meta:$.user_api_key_team_id"],
    "team_alias": ["doc:$.team_alias", "meta:$.user_api_key_team_alias"],
    "org_id": ["doc:$.organization_id", "meta:$.user_api_key_org_id"],
    "end_user": ["doc:$.end_user"],
    "requester_ip_raw": ["doc:$.requester_ip_address", "meta:$.requester_ip_address"],
    "user_agent": ["doc:$.user_agent", "meta:$.user_agent"],
    "request_tags": ["doc:$.request_tags"],
    "model_group": ["doc:$.model_group"],
    "model": ["doc:$.model"],
    "model_id": ["doc:$.model_id"],
    "provider": ["doc:$.custom_llm_provider"],
    "api_base": ["doc:$.api_base"],
    "status_raw": ["doc:$.status"],
    "meta_status": ["meta:$.status"],
    "error_class": ["meta:$.error_information.error_class"],
    "error_code": ["meta:$.error_information.error_code"],
    "error_message": ["doc:$.error_str", "meta:$.error_information.error_message"],
    "prompt_tokens_raw": ["doc:$.prompt_tokens"],
    "completion_tokens_raw": ["doc:$.completion_tokens"],
    "total_tokens_raw": ["doc:$.total_tokens"],
    "cache_read_raw": ["doc:$.cache_read_tokens"],
    "cache_write_raw": ["doc:$.cache_write_tokens"],
    "max_tokens_raw": [],
    "stream_raw": [],
    "cache_hit_raw": ["doc:$.cache_hit"],
    "session_id": ["doc:$.session_id", "doc:$.trace_id"],
    "spend_raw": ["doc:$.spend"],
}


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def fields_sql(spec: dict[str, list[str]], relation: str, docs: dict[str, str], columns: set[str],
               keep: tuple[str, ...] = ()) -> str:
    """SELECT record_no, bad and every FIELDS column (VARCHAR, '' as NULL) from `relation`, and its columns `keep`.

    `docs` maps a source prefix (doc, meta, psr) to the SQL giving that JSON value per row; each is parsed once,
    extracting all its paths in one json_extract_string call. `columns` are the relation's text columns for `col:`.
    """
    paths: dict[str, list[str]] = {d: [] for d in docs}
    for sources in spec.values():
        for src in sources:
            prefix, path = src.split(":", 1)
            if prefix != "col" and path not in paths[prefix]:
                paths[prefix].append(path)

    def value(src: str) -> str:
        prefix, path = src.split(":", 1)
        if prefix == "col":
            return f"nullif(trim({quote_ident(path)}), '')" if path in columns else "NULL::VARCHAR"
        return f"_v_{prefix}[{paths[prefix].index(path) + 1}]"

    select = []
    for name in FIELDS:
        values = [value(s) for s in spec.get(name, [])]
        if not values:
            expr = "NULL::VARCHAR"
        elif name in GREATEST:
            expr = f"CAST(greatest({', '.join(f'try_cast({v} AS BIGINT)' for v in values)}) AS VARCHAR)"
        else:
            expr = values[0] if len(values) == 1 else f"coalesce({', '.join(values)})"
        select.append(f"{expr} AS {name}")
    parsed = ", ".join(f"{sql} AS _d_{d}" for d, sql in docs.items())
    extracts = ", ".join(
        # '' is no value; done once on the list, as one nullif per field makes the statement slow to start
        f"list_transform(json_extract_string(_d_{d}, [{', '.join(_sql_str(p) for p in ps)}]), "
        f"lambda v: nullif(v, '')) AS _v_{d}"
        for d, ps in paths.items() if ps
    )
    return (
        f"WITH _p AS (SELECT *{', ' + parsed if parsed else ''} FROM {relation}),\n"
        f"_x AS (SELECT *{', ' + extracts if extracts else ''} FROM _p)\n"
        f"SELECT record_no, bad,\n  " + ",\n  ".join([*select, *keep]) + "\nFROM _x"
    )


def spendlogs_sql(relation: str, columns: set[str]) -> str:
    """Fields from SpendLogs rows: a relation whose columns are the export's columns, as text."""
    docs = {
        "meta": f"try(json({quote_ident('metadata')}))" if "metadata" in columns else "NULL::JSON",
        "psr": "try(json(proxy_server_request))" if "proxy_server_request" in columns else "NULL::JSON",
    }
    return fields_sql(SPENDLOGS, relation, docs, columns)


def spendlogs_columns_sql(relation: str) -> str:
    """SpendLogs rows kept as JSON objects (/spend/logs output, NDJSON) as a relation of text columns."""
    paths = ", ".join(_sql_str(f'$."{c}"') for c in SPENDLOGS_COLUMNS)
    cols = ", ".join(f"_c[{i + 1}] AS {quote_ident(c)}" for i, c in enumerate(SPENDLOGS_COLUMNS))
    return (
        f"SELECT record_no, bad, {cols} FROM "
        f"(SELECT record_no, bad, json_extract_string(doc, [{paths}]) AS _c FROM {relation})"
    )


def payload_sql(relation: str, keep: tuple[str, ...] = ()) -> str:
    """Fields from StandardLoggingPayload objects; a cache hit gets SpendLogs' `<id>_cache_hit<time>` id form."""
    inner = fields_sql(PAYLOAD, relation, {"doc": "doc"}, set(), keep)
    base = "coalesce(CASE WHEN request_id NOT IN ('None', 'null') THEN request_id END, litellm_call_id)"
    # the payload of a cache hit repeats the cached response's id: keep it apart from the original request
    hit = "try_cast(cache_hit_raw AS BOOLEAN) AND request_id NOT LIKE '%\\_cache\\_hit%' ESCAPE '\\'"
    return (
        f"SELECT * REPLACE (CASE WHEN {hit} THEN {base} || '_cache_hit' || start_raw ELSE {base} END AS request_id) "
        f"FROM ({inner})"
    )


def flat_sql(relation: str) -> str:
    """Fields from the flat ClickHouse-style spend rows (epoch-millisecond times, metadata as a JSON string)."""
    docs = {"doc": "doc", "meta": "try(json(json_extract_string(doc, '$.metadata')))"}
    return fields_sql(FLAT, relation, docs, set())
