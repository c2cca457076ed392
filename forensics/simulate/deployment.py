"""What varies between real deployments, drawn per scenario and seed: which logs exist and in what shape.

A `Deployment` fixes everything the writers need beyond the scenario itself: the sources a responder has (LiteLLM,
nginx, provider exports), the LiteLLM sink, the nginx format, time zone and rotation, whether a load balancer sits in
front, whether the proxy uses virtual keys, how much history precedes the incident and how much follows it, and
the providers' usage bucket widths. `draw_deployment(seed, scenario)` draws one that the scenario makes sense in.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from forensics.simulate.nginx_writer import LOG_FORMATS


SOURCES = ("litellm", "nginx", "provider")
SOURCE_SETS = tuple(tuple(s for i, s in enumerate(SOURCES) if mask >> i & 1) for mask in range(1, 8))
LITELLM_SINKS = ("spend_logs_csv", "spend_logs_json", "callback_ndjson", "object_per_file")
OBJECT_STORES = ("s3", "gcs")
NGINX_FORMATS = ("combined", "main", "timings", "ingress", "json", "json_default", "custom")
NGINX_ROTATIONS = ("none", "daily", "weekly")
# server zones: DST switches inside long windows (both hemispheres) and offsets that are not whole hours
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "America/Los_Angeles", "Asia/Kolkata", "Asia/Kathmandu",
             "America/St_Johns", "Australia/Adelaide", "Asia/Tokyo")
PROVIDERS = ("openai", "anthropic")
BUCKETS = ("1m", "1h", "1d")
HISTORY_RANGE_S = (10 * 60, 30 * 24 * 3600)          # log-uniform: window start .. the incident's first request
POSITION_RANGE = (0.5, 1.0)                           # share of the window (incident apart) before the incident
MIN_TAIL_S, MAX_TAIL_S = 5 * 60, 24 * 3600            # incident's last request .. collection

# what each scenario needs of a deployment: keys, and a source that can see its incident at all
NEEDS_KEYS = {"leaked_virtual_key", "key_stuffing"}
NEEDS_OPENAI_USAGE = {"provider_key_outside_proxy", "provider_key_outside_proxy_second_key"}
PROXY_VISIBLE_ONLY = {"leaked_virtual_key"}           # a few dollars an hour: lost in the provider's totals
ATTACKS_ON_OPENAI = {"open_proxy", "key_stuffing", "leaked_virtual_key"} | NEEDS_OPENAI_USAGE


@dataclass(frozen=True)
class Deployment:
    """One deployment's logging set-up; `None` fields belong to a source the deployment does not have."""

    sources: tuple[str, ...]            # non-empty subset of SOURCES: the logs the responder has
    keys: bool                          # virtual keys in the baseline (False: no master key, every call keyless)
    history_s: int                      # from the window's start to the incident's first request
    incident_position: float            # share of the window, the incident apart, that lies before the incident
    behind_lb: bool                     # a load balancer in front: the client is in X-Forwarded-For
    nginx_in_path: bool                 # nginx proxies to LiteLLM (always when its access log is a source)
    litellm_sink: str | None            # how LiteLLM's records reached the responder
    object_store: str | None            # object_per_file: S3 or GCS naming of the tree
    nginx_format: str | None            # one of NGINX_FORMATS
    nginx_log_format: str | None        # its log_format directive (custom: what an analyst passes as --nginx-format)
    nginx_timezone: str | None          # the server's zone: $time_local / $time_iso8601 offsets
    nginx_rotation: str | None          # logrotate: none, daily (14 kept), weekly (4 kept)
    providers: tuple[str, ...]          # provider exports present: usage and costs of each
    openai_usage_bucket: str | None     # bucket_width of the OpenAI usage export (costs are always 1d)
    anthropic_usage_bucket: str | None  # bucket_width of the Anthropic usage report (cost report always 1d)

    @property
    def tail_s(self) -> int:
        """Seconds from the incident's last request to collection."""
        p = self.incident_position
        return int(min(MAX_TAIL_S, max(MIN_TAIL_S, self.history_s * (1 - p) / p)))

    @property
    def use_x_forwarded_for(self) -> bool:
        """LiteLLM's general_settings.use_x_forwarded_for: on whenever a proxy sits in front of it."""
        return self.behind_lb or self.nginx_in_path

    def usage_bucket(self, provider: str) -> str | None:
        return self.openai_usage_bucket if provider == "openai" else self.anthropic_usage_bucket

    def describe(self) -> dict:
        """As written to truth.json."""
        return asdict(self) | {"sources": list(self.sources), "providers": list(self.providers),
                               "tail_s": self.tail_s, "use_x_forwarded_for": self.use_x_forwarded_for}

    @classmethod
    def from_dict(cls, d: dict) -> Deployment:
        fields = {k: d[k] for k in cls.__dataclass_fields__}
        return cls(**fields | {"sources": tuple(d["sources"]), "providers": tuple(d["providers"])})


def allowed_source_sets(scenario: str) -> tuple[tuple[str, ...], ...]:
    """The source sets in which the scenario's incident shows at all."""
    if scenario in PROXY_VISIBLE_ONLY:
        return tuple(s for s in SOURCE_SETS if "litellm" in s or "nginx" in s)
    if scenario in NEEDS_OPENAI_USAGE:
        return tuple(s for s in SOURCE_SETS if "provider" in s)
    return SOURCE_SETS


def _pick(rng: np.random.Generator, options, weights=None):
    if weights is None:
        return options[int(rng.integers(0, len(options)))]
    p = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def draw_deployment(seed: int, scenario: str) -> Deployment:
    """A deployment the scenario makes sense in, the same for the same (seed, scenario)."""
    rng = np.random.default_rng([seed, 0x6465706C, zlib.crc32(scenario.encode())])
    sources = _pick(rng, allowed_source_sets(scenario))
    keys = True if scenario in NEEDS_KEYS else bool(rng.random() < 0.5)
    lo, hi = HISTORY_RANGE_S
    history_s = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
    position = float(round(rng.uniform(*POSITION_RANGE), 4))
    behind_lb = bool(rng.random() < 0.6)
    has_nginx = "nginx" in sources
    nginx_in_path = has_nginx or bool(rng.random() < 0.5)
    sink = store = None
    if "litellm" in sources:
        # one object per request costs the ingest ~0.2 s a file: drawn rarely, or the matrix takes hours
        sink = _pick(rng, LITELLM_SINKS, (6, 6, 6, 1))
        store = _pick(rng, OBJECT_STORES) if sink == "object_per_file" else None
    fmt = directive = tz = rotation = None
    if has_nginx:
        fmt = _pick(rng, NGINX_FORMATS)
        directive = custom_log_format(rng) if fmt == "custom" else LOG_FORMATS[fmt]
        tz = _pick(rng, TIMEZONES)
        rotation = _pick(rng, NGINX_ROTATIONS, (5, 2, 3))          # daily: up to 14 files, each one costs
    providers: tuple[str, ...] = ()
    oa_bucket = an_bucket = None
    if "provider" in sources:
        providers = _pick(rng, (("openai",), ("anthropic",), ("openai", "anthropic")))
        if scenario in NEEDS_OPENAI_USAGE or (sources == ("provider",) and scenario in ATTACKS_ON_OPENAI):
            providers = tuple(p for p in PROVIDERS if p == "openai" or p in providers)
        oa_bucket = _pick(rng, BUCKETS) if "openai" in providers else None
        an_bucket = _pick(rng, BUCKETS) if "anthropic" in providers else None
    return Deployment(sources, keys, history_s, position, behind_lb, nginx_in_path, sink, store, fmt, directive,
                      tz, rotation, providers, oa_bucket, an_bucket)


# --- a custom nginx log_format ------------------------------------------------------------------------------------

_TIME_FIELDS = ("[$time_local]", "$time_iso8601", "$msec")
_EXTRAS = ("$request_time", "rt=$request_time", "urt=\"$upstream_response_time\"", "$request_length",
           "$upstream_addr", "$upstream_status", "cid=$upstream_http_x_litellm_call_id",
           "\"$upstream_http_x_litellm_call_id\"", "$request_id", "$bytes_sent")


def custom_log_format(rng: np.random.Generator) -> str:
    """An operator's own log_format: a vhost in front or not, its time field first or after the address, the
    X-Forwarded-For header logged or not, and a few extra fields in any order."""
    head = _pick(rng, ("", "$host ", "$server_name:$server_port "))
    time = _pick(rng, _TIME_FIELDS)
    addr = "$remote_addr - $remote_user" if rng.random() < 0.5 else "$remote_addr"
    first = f"{head}{addr} {time}" if rng.random() < 0.7 else f"{time} {head}{addr}"
    parts = [first, '"$request"', "$status", "$body_bytes_sent"]
    if rng.random() < 0.6:
        parts.append('"$http_referer"')
    parts.append('"$http_user_agent"')
    if rng.random() < 0.7:
        parts.append('"$http_x_forwarded_for"')
    extras = [e for e in _EXTRAS if rng.random() < 0.35]
    seen = set()
    for e in (extras[i] for i in rng.permutation(len(extras))):
        var = e.split("$")[1].strip('"')
        if var not in seen:                      # one field per variable
            seen.add(var)
            parts.append(e)
    body = " ".join(parts)
    return f"log_format custom_{zlib.crc32(body.encode()) % 1000:03d} '{body}';"


def history_bucket(history_s: int) -> str:
    """The matrix's grouping of history lengths."""
    if history_s < 3600:
        return "<1h"
    if history_s < 24 * 3600:
        return "1h-1d"
    if history_s < 7 * 24 * 3600:
        return "1d-7d"
    return "7d-30d"

