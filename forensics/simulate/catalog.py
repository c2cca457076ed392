"""The fixed world of every simulation: models and prices, network layout, time window, virtual keys."""
from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

import numpy as np

from forensics.secrets import key_hash, key_hint

GENERATOR_VERSION = "1.0.0"
US = 1_000_000                      # microseconds per second: every internal time is int64 epoch microseconds
MINUTE = 60 * US
HOUR = 60 * MINUTE


def ts(text: str) -> int:
    """Epoch microseconds of an ISO time written in UTC ('2026-11-16T02:00:00')."""
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()) * US


def iso_z(us: int) -> str:
    """ISO 8601 UTC with Z, millisecond precision when needed."""
    dt = datetime.fromtimestamp(us / US, tz=timezone.utc)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    ms = (us // 1000) % 1000
    return f"{text}.{ms:03d}Z" if ms else f"{text}Z"


WINDOW_START = ts("2026-11-09T00:00:00")       # first log line (Monday)
BASELINE_END = ts("2026-11-16T00:00:00")       # the baseline week is [WINDOW_START, BASELINE_END)
COLLECTED_AT = ts("2026-11-16T06:00:00")       # logs were copied here: nothing finishing later exists
SERVER_TZ = "Europe/Berlin"                    # nginx's local time (+01:00 in November)


@dataclass(frozen=True)
class Window:
    """The logs' time span: [start, collected_at); the quiet baseline is [start, baseline_end)."""

    start: int
    baseline_end: int
    collected_at: int

    @property
    def hours(self) -> float:
        return (self.collected_at - self.start) / HOUR


DEFAULT_WINDOW = Window(WINDOW_START, BASELINE_END, COLLECTED_AT)


@dataclass(frozen=True)
class Model:
    """One deployment behind the proxy; prices in USD per million tokens (genai-prices 0.2.3 agrees)."""

    group: str                 # public model name clients ask for (LiteLLM model_group)
    provider: str              # custom_llm_provider
    provider_model: str        # model LiteLLM sends upstream (SpendLogs.model)
    snapshot: str              # model name the provider's usage API reports
    input_mtok: str
    output_mtok: str
    cache_read_mtok: str = "0"
    cache_write_mtok: str = "0"
    api_base: str = "https://api.openai.com/v1"
    max_input: int = 128000
    max_output: int = 16384
    display: str = ""          # Anthropic cost-report product name
    tokens_per_s: float = 60.0 # generation speed used by the latency model

    @property
    def model_id(self) -> str:
        """LiteLLM router deployment id: a 64-hex hash of the deployment."""
        return hashlib.sha256(f"deployment:{self.group}:{self.provider}/{self.provider_model}".encode()).hexdigest()

    @functools.cache
    def nano(self, kind: str) -> int:
        """Price of one token in 1e-9 USD (exact integers: 1 token of gpt-4 input = 30000)."""
        return int(Decimal(getattr(self, f"{kind}_mtok")) * 1000)

    @functools.cache
    def per_token(self, kind: str) -> float:
        """Price of one token in USD as LiteLLM's price map holds it (float)."""
        return float(Decimal(getattr(self, f"{kind}_mtok")) / 1_000_000)

    def map_entry(self) -> dict:
        """The LiteLLM model_prices_and_context_window.json entry used for `spend`."""
        entry = {
            "key": self.provider_model,
            "max_tokens": self.max_output,
            "max_input_tokens": self.max_input,
            "max_output_tokens": self.max_output,
            "input_cost_per_token": self.per_token("input"),
            "output_cost_per_token": self.per_token("output"),
            "litellm_provider": self.provider,
            "mode": "chat",
        }
        if self.cache_read_mtok != "0":
            entry["cache_read_input_token_cost"] = self.per_token("cache_read")
        if self.cache_write_mtok != "0":
            entry["cache_creation_input_token_cost"] = self.per_token("cache_write")
        return entry


MODELS: dict[str, Model] = {
    m.group: m
    for m in (
        Model("gpt-4o-mini", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "0.15", "0.60", "0.075",
              tokens_per_s=85.0),
        Model("gpt-4o", "openai", "gpt-4o", "gpt-4o-2024-08-06", "2.50", "10", "1.25", tokens_per_s=70.0),
        Model("gpt-4", "openai", "gpt-4", "gpt-4-0613", "30", "60", max_input=8192, max_output=4096,
              tokens_per_s=38.0),
        Model("claude-3-5-sonnet", "anthropic", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022",
              "3", "15", "0.30", "3.75", api_base="https://api.anthropic.com/v1/messages", max_input=200000,
              max_output=8192, display="Claude Sonnet 3.5", tokens_per_s=55.0),
    )
}


@dataclass(frozen=True)
class Network:
    """clients -> load balancer -> nginx -> LiteLLM; app servers inside the VPC may call nginx directly."""

    lb_ip: str = "10.0.0.2"
    nginx_ip: str = "10.0.1.5"
    litellm_upstream: str = "10.0.1.10:4000"
    trusted_proxies: tuple[str, ...] = ("10.0.0.2/32",)
    server_name: str = "llm.example.com"
    openai_project_id: str = "proj_Vq8ZrT3mKd1LwN6bYh4sFe2A"
    openai_api_key_id: str = "key_Xp3RmW8tQz5vLk2N"
    anthropic_api_key_id: str = "apikey_01Hq7ZwK3mRt9XbV2cLnP4sD"

    def describe(self) -> dict:
        """The layout as written to truth.json."""
        return {
            "lb_ip": self.lb_ip,
            "trusted_proxies": list(self.trusted_proxies),
            "nginx_upstream": self.litellm_upstream,
            "nginx_proxy_set_header": "X-Forwarded-For $proxy_add_x_forwarded_for",
            "litellm_use_x_forwarded_for": True,
            "server_name": self.server_name,
            "server_timezone": SERVER_TZ,
            "openai_project_id": self.openai_project_id,
            "openai_api_key_id": self.openai_api_key_id,
            "anthropic_api_key_id": self.anthropic_api_key_id,
        }


NETWORK = Network()

OPENAI_SDK_HEADERS = ("x-stainless-lang", "x-stainless-package-version", "x-stainless-os", "x-stainless-arch",
                      "x-stainless-runtime", "x-stainless-runtime-version", "x-stainless-async",
                      "x-stainless-retry-count")


@dataclass(frozen=True)
class Usage:
    """How one key uses one model: shares, token shapes (lognormal medians) and request parameters."""

    model: str
    share: float
    prompt: int                   # median uncached prompt tokens
    prompt_sigma: float
    completion: int               # median completion tokens
    completion_sigma: float
    max_tokens: int = 0           # sent by the client; 0 = not sent
    cache_prefix: int = 0         # tokens of a shared prefix that provider caching can serve
    cache_hit: float = 0.0        # chance the prefix is served from cache (OpenAI) or TTL-driven (anthropic: -1)
    scalable: bool = True         # part of the cost the baseline calibration may scale


@dataclass(frozen=True)
class Profile:
    """A virtual key's owner, where it calls from and how its traffic is shaped over the week."""

    alias: str
    user_id: str
    team_id: str
    team_alias: str
    rate_per_hour: float          # mean over the baseline week
    pattern: str                  # always_on | business | office | nightly_batch | ci_bursts
    usages: tuple[Usage, ...]
    sources: tuple[str, ...]      # client addresses
    via_lb: bool                  # True: through the load balancer (XFF), False: straight to nginx
    user_agents: tuple[str, ...]
    stream: bool = False
    temperature: float | None = None
    end_users: int = 0            # size of the customer pool sent as the OpenAI `user` field


PROFILES: tuple[Profile, ...] = (
    Profile("web-backend", "svc-web-backend", "7d1c2f0e-4a8b-4c3e-9f21-5b6a7c8d9e01", "product", 34, "always_on",
            (Usage("gpt-4o-mini", 0.70, 1500, 0.55, 220, 0.6, 0, 1280, 0.85, False),
             Usage("gpt-4o", 0.30, 46000, 0.55, 450, 0.5, 0, 1280, 0.80)),
            ("10.20.1.11", "10.20.1.12", "10.20.1.13"), False, ("AsyncOpenAI/Python 1.54.0",),
            stream=True, temperature=0.7, end_users=400),
    Profile("support-bot", "svc-support-bot", "2b9e8a41-6f3d-4e27-8c15-a0d4b3e2f6c7", "support", 20, "business",
            (Usage("claude-3-5-sonnet", 0.85, 66000, 0.45, 480, 0.5, 1024, 26000, -1.0),
             Usage("gpt-4o-mini", 0.15, 600, 0.4, 12, 0.5, 16, 0, 0.0, False)),
            ("10.20.2.21", "10.20.2.22"), True, ("OpenAI/Python 1.51.2",), temperature=0.2),
    Profile("batch-summarizer", "svc-batch-summarizer", "c4f1e3d2-8b7a-4d69-a5e0-1f2e3d4c5b6a", "data", 7,
            "nightly_batch",
            (Usage("gpt-4o", 1.0, 95000, 0.40, 1200, 0.3, 2048, 1152, 0.95),),
            ("10.20.3.31",), False, ("AsyncOpenAI/Python 1.54.0",), temperature=0.0),
    Profile("ci-tests", "svc-ci", "e8a7b6c5-d4e3-4f21-8a09-b8c7d6e5f4a3", "platform", 8, "ci_bursts",
            (Usage("gpt-4o-mini", 1.0, 320, 0.5, 30, 0.5, 64, 0, 0.0, False),),
            ("10.20.4.41", "10.20.4.42"), False, ("python-httpx/0.27.2",), temperature=0.0),
    Profile("data-team", "dana.keller@example.com", "c4f1e3d2-8b7a-4d69-a5e0-1f2e3d4c5b6a", "data", 16, "office",
            (Usage("claude-3-5-sonnet", 0.60, 90000, 0.70, 1400, 0.6, 8192, 40000, -1.0),
             Usage("gpt-4o", 0.30, 80000, 0.70, 900, 0.6, 0, 1024, 0.5),
             Usage("gpt-4o-mini", 0.10, 3000, 0.8, 400, 0.6, 0, 0, 0.0, False)),
            ("198.51.100.23", "198.51.100.24"), True, ("OpenAI/Python 1.54.0", "langchain/0.3.7"),
            temperature=0.3),
)


@dataclass(frozen=True)
class VirtualKey:
    """A LiteLLM virtual key; `secret` is never written to any output file."""

    secret: str
    alias: str | None
    user_id: str | None
    team_id: str | None
    team_alias: str | None
    valid: bool = True
    profile: Profile | None = field(default=None, compare=False)

    @functools.cached_property
    def hash(self) -> str:
        return key_hash(self.secret)

    @functools.cached_property
    def hint(self) -> str:
        return key_hint(self.secret)

    def describe(self) -> dict:
        return {"alias": self.alias, "key_hash": self.hash, "key_hint": self.hint, "user_id": self.user_id,
                "team_id": self.team_id, "team_alias": self.team_alias}


def make_keys(seed: int) -> list[VirtualKey]:
    """The proxy's virtual keys (sk- + token_urlsafe(16)) plus one mistyped copy of the human key."""
    rng = np.random.default_rng([seed, 0x6B657973])
    keys = []
    for p in PROFILES:
        raw = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        secret = "sk-" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        keys.append(VirtualKey(secret, p.alias, p.user_id, p.team_id, p.team_alias, True, p))
    human = next(k for k in keys if k.profile.pattern == "office")
    pos = 3 + int(rng.integers(4, 18))
    swapped = human.secret[pos + 1] + human.secret[pos]
    typo = human.secret[:pos] + (swapped if swapped != human.secret[pos:pos + 2] else "xQ") + human.secret[pos + 2:]
    keys.append(VirtualKey(typo, None, None, None, None, False, human.profile))
    return keys
