"""The LiteLLM config.yaml checks: authentication, database, budgets, rate limits, model reach, max_tokens,
alerting, spend logs, secrets, routes without auth. Each returns Findings with the line of the setting at fault
(or the section where it belongs, when it is absent)."""
from __future__ import annotations

import re
from typing import Iterator

from forensics.audit.finding import INCIDENT_DAY_USD, Finding
from forensics.audit.litellm_config import LiteLLMConfig
from forensics.audit.money import WRITEUP, Money

PUBLIC_KEYS = {"sk-1234", "sk-12345", "sk-admin", "sk-master", "sk-test", "changeme", "password", "admin"}
MIN_KEY_CHARS = 32
# models whose output costs $30+ per million tokens (the write-up's gpt-4 at $60), by family
EXPENSIVE = re.compile(r"(^|/)(gpt-4(-32k|-0314|-0613)?$|gpt-4-32k|gpt-4\.5|o1(-pro)?($|-)|o3-pro|claude-3-opus|"
                       r"claude-opus|claude-(4|4\.\d)-opus|\*)", re.I)
LLM_ROUTES = re.compile(r"^/?(v1/)?(chat/completions|completions|embeddings|responses|messages|images|audio|"
                        r"\*|.*\*)", re.I)
SECRET_PARAMS = ("api_key", "aws_secret_access_key", "aws_access_key_id", "vertex_credentials", "azure_ad_token")
BUDGET_ALERTS = {"budget_alerts", "spend_reports", "daily_reports", "outage_alerts"}


def _walk(value, path=()) -> Iterator[tuple[tuple, object]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*path, i))


def _has_key(cfg: LiteLLMConfig, names: set[str]) -> tuple | None:
    """The path of the first key among `names` anywhere in the config whose value is set, else None."""
    for path, value in _walk(cfg.data):
        if path and path[-1] in names and value not in (None, "", [], {}, 0, False):
            return path
    return None


def _dotted(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))


def check(cfg: LiteLLMConfig, money: Money) -> list[Finding]:
    out: list[Finding] = []
    for fn in (_auth, _database, _budgets, _rate_limits, _models, _max_tokens, _alerting, _spend_logs, _secrets,
               _routes):
        out += fn(cfg, money)
    return out


def _finding(cfg, path, **kw) -> Finding:
    file, line = cfg.at(*path)
    return Finding(file=file, line=line, **kw)


def _auth(cfg: LiteLLMConfig, money: Money) -> list[Finding]:
    gs = cfg.section("general_settings")
    out = []
    text, usd = money.of("auth_required", WRITEUP + "; requiring a key (auth_required) would have saved all of it")
    fix_key = ("general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY   # sk- + 32+ random characters:\n"
               "  # export LITELLM_MASTER_KEY=\"sk-$(openssl rand -hex 32)\"")
    if gs.get("dangerously_permit_weak_or_unset_master_key") is True:
        out.append(_finding(cfg, ("general_settings", "dangerously_permit_weak_or_unset_master_key"),
                            id="litellm.weak_master_key_permitted", severity="critical",
                            title="the proxy starts without a (strong) master key",
                            setting="general_settings.dangerously_permit_weak_or_unset_master_key: true",
                            why="LiteLLM refuses to start on an unset, empty or public master key unless this is on; "
                                "with it every request is accepted without authentication: an open proxy",
                            money=text, money_usd=usd, checklist="authentication",
                            fix="general_settings:\n  dangerously_permit_weak_or_unset_master_key: false   "
                                "# or delete the line\n" + fix_key.split("\n", 1)[1]))
    kind, key = cfg.resolve(gs.get("master_key"))
    env_key = cfg.env.get("LITELLM_MASTER_KEY")
    misplaced = "master_key" in cfg.section("litellm_settings")
    if gs.get("master_key") in (None, "") or (kind == "env" and key is None and cfg.env):
        if gs.get("master_key") in (None, "") and env_key:
            key, kind = env_key, "env"
        else:
            where = ("general_settings", "master_key") if "master_key" in gs else (
                ("litellm_settings", "master_key") if misplaced else ("general_settings",))
            unresolved = kind == "env" and gs.get("master_key")
            out.append(_finding(cfg, where, id="litellm.no_master_key", severity="critical",
                                title="no master key: every request is accepted without a key",
                                setting=f"general_settings.master_key: {gs.get('master_key')} (not in the env file)"
                                if unresolved else "general_settings.master_key (absent)" +
                                (" — litellm_settings.master_key is never read" if misplaced else ""),
                                why="without a master key LiteLLM checks no key at all: anyone who finds the URL "
                                    "spends on your provider account (the write-up's root cause)",
                                money=text, money_usd=usd, checklist="authentication", fix=fix_key))
            return out
    if key is None:
        return out              # an env reference with no env file given: as it should be
    weak = str(key) in PUBLIC_KEYS or len(str(key)) < MIN_KEY_CHARS or not str(key).startswith("sk-")
    path = ("general_settings", "master_key") if "master_key" in gs else ("general_settings",)
    if weak:
        out.append(_finding(cfg, path, id="litellm.weak_master_key", severity="critical",
                            title="the master key is weak or public",
                            setting="general_settings.master_key" + (" (from the env file)" if kind == "env" else ""),
                            why=f"a key shorter than {MIN_KEY_CHARS} characters, without the sk- prefix, or one the "
                                "docs print (sk-1234) is guessed in minutes: admin access and unlimited spend",
                            money=text, money_usd=usd, checklist="authentication", fix=fix_key))
    if kind == "literal":
        out.append(_finding(cfg, path, id="litellm.master_key_literal", severity="high",
                            title="the master key is written in the config file",
                            setting="general_settings.master_key: <literal>",
                            why="whoever reads the file (a repository, a backup, a container image) holds the admin "
                                "key; rotating it means editing and redeploying the file",
                            money=text, money_usd=usd, checklist="secret handling", fix=fix_key))
    return out


def _database(cfg: LiteLLMConfig, money: Money) -> list[Finding]:
    gs = cfg.section("general_settings")
    if gs.get("database_url") or cfg.env.get("DATABASE_URL"):
        return []
    text, usd = money.of("key_budget_100", "with no database the proxy has no virtual keys, budgets or spend logs: "
                         "the write-up's $347.23 left no record of who spent it")
    return [_finding(cfg, ("general_settings",), id="litellm.no_database", severity="high",
                     title="no database: no virtual keys, budgets or spend logs",
                     setting="general_settings.database_url (absent)",
                     why="virtual keys (/key/generate), per-key budgets and LiteLLM_SpendLogs all need the database; "
                         "without it every client shares the master key and nothing records spend per request",
                     money=text, money_usd=usd, checklist="budgets",
                     fix="general_settings:\n  database_url: os.environ/DATABASE_URL   # postgresql://...")]


def _budgets(cfg: LiteLLMConfig, money: Money) -> list[Finding]:
    names = {"max_budget", "max_internal_user_budget", "max_end_user_budget", "provider_budget_config"}
    found = _has_key(cfg, names)
    if found is None:
        text, usd = money.of("global_budget_1000",
                             f"{WRITEUP}; a $1,000 monthly proxy budget caps the month at $1,000")
        return [_finding(cfg, ("litellm_settings",), id="litellm.no_budget", severity="high",
                         title="no budget at proxy, team, key or user level",
                         setting="litellm_settings.max_budget / budget_duration (absent)",
                         why="nothing stops spend: the proxy keeps forwarding requests whatever they cost",
                         money=text, money_usd=usd, checklist="budgets",
                         fix="litellm_settings:\n  max_budget: 1000          # USD, the whole proxy\n"
                             "  budget_duration: 30d\n  default_key_generate_params:\n    max_budget: 100\n"
                             "    budget_duration: 30d")]
    parent = cfg.get(*found[:-1])
    if isinstance(parent, dict) and "budget_duration" not in parent and found[-1] == "max_budget":
        return [_finding(cfg, found, id="litellm.budget_never_resets", severity="low",
                         title="a budget without budget_duration never resets",
                         setting=f"{_dotted(found)} without budget_duration",
                         why="once spent the budget blocks forever, which pushes operators to raise or drop it",
                         money="", checklist="budgets",
                         fix=f"{_dotted(found[:-1]) or 'litellm_settings'}:\n  budget_duration: 30d")]
    return []


def _rate_limits(cfg: LiteLLMConfig, money: Money) -> list[Finding]:
    if _has_key(cfg, {"rpm", "tpm", "rpm_limit", "tpm_limit", "max_parallel_requests",
                      "default_max_parallel_requests", "global_max_parallel_requests"}):
        return []
    text, usd = money.of("key_rpm_20", "the write-up's ~1,200 requests in 45 minutes came in at the proxy's full "
                         "speed; a rate limit turns an hour of abuse into a trickle")
    return [_finding(cfg, ("model_list",), id="litellm.no_rate_limits", severity="high",
                     title="no rpm / tpm limit on any model, key or user",
                     setting="rpm / tpm (absent everywhere)",
                     why="a client (or a script in a loop) sends as fast as the provider answers",
                     money=text, money_usd=usd, checklist="rate limits",
                     fix="model_list:\n  - model_name: gpt-4\n    litellm_params:\n      model: openai/gpt-4\n"
                         "      api_key: os.environ/OPENAI_API_KEY\n      rpm: 100\n      tpm: 100000\n"
                         "litellm_settings:\n  default_key_generate_params:\n    rpm_limit: 20\n    tpm_limit: 20000")]


def _models(cfg: LiteLLMConfig, money: Money) -> list[Finding]:
    allow = _has_key(cfg, {"models"})          # default_key_generate_params.models, team / user model lists
    out = []
    for i, m in enumerate(cfg.get("model_list", default=[]) or []):
        if not isinstance(m, dict):
            continue
        name = str(m.get("model_name", ""))
        model = str((m.get("litellm_params") or {}).get("model", ""))
        if allow is None and (EXPENSIVE.search(name) or EXPENSIVE.search(model)):
            wildcard = "*" in name or "*" in model
            out.append(_finding(cfg, ("model_list", i, "model_name"), id="litellm.expensive_model_open",
                                severity="high" if wildcard else "medium",
                                title=f"{'every model of the provider' if wildcard else name} reachable by any key",
                                setting=f"model_list[{i}].model_name: {name}",
                                why="no key-level model allow-list: any key (or none) can call the dearest model; "
                                    "the write-up's attacker asked for gpt-4 with max_tokens 4000",
                                money=money.of(None, WRITEUP + ", all of it on gpt-4")[0], checklist="authentication",
                                fix="litellm_settings:\n  default_key_generate_params:\n"
                                    "    models: [\"gpt-4o-mini\"]     # keys get the cheap models unless granted"))
    return out


def _max_tokens(cfg: LiteLLMConfig, money: Money) -> list[Finding]:
    if _has_key(cfg, {"max_tokens", "max_output_tokens", "max_completion_tokens"}):
        return []
    text, usd = money.of("max_tokens_1000", "the write-up's requests asked for max_tokens 4000; a cap of 1,000 "
                         "cuts the cost of each such request about four-fold")
    return [_finding(cfg, ("model_list",), id="litellm.no_max_tokens_cap", severity="medium",
                     title="no max_tokens cap: a client sets its own",
                     setting="litellm_params.max_tokens (absent)",
                     why="completion tokens are the dear ones: without a cap one request can cost up to the model's "
                         "limit", money=text, money_usd=usd, checklist="request validation",
                     fix="model_list:\n  - model_name: gpt-4\n    litellm_params:\n      model: openai/gpt-4\n"
                         "      max_tokens: 1000")]


def _alerting(cfg: LiteLLMConfig, money: Money) -> list[Finding]:
    gs = cfg.section("general_settings")
    text, usd = money.of("cost_alert_50h_15m", "the write-up's attack ran 45 minutes before a cost alert fired; "
                         f"without one it runs on at ${INCIDENT_DAY_USD:,.2f} a day")
    fix = ("general_settings:\n  alerting: [\"slack\"]          # SLACK_WEBHOOK_URL in the environment\n"
           "  alert_types: [\"budget_alerts\", \"spend_reports\", \"llm_exceptions\", \"outage_alerts\"]")
    if not gs.get("alerting"):
        return [_finding(cfg, ("general_settings",), id="litellm.no_alerting", severity="medium",
                         title="no alerting configured", setting="general_settings.alerting (absent)",
                         why="nobody is told when spend or errors jump: the bill tells you, a month later",
                         money=text, money_usd=usd, checklist="alerts", fix=fix)]
    types = gs.get("alert_types")
    if isinstance(types, list) and not BUDGET_ALERTS & set(map(str, types)):
        return [_finding(cfg, ("general_settings", "alert_types"), id="litellm.no_spend_alerts", severity="medium",
                         title="alerting without budget or spend alerts",
                         setting=f"general_settings.alert_types: {types}",
                         why="the alerts configured say nothing about spend", money=text, money_usd=usd,
                         checklist="alerts", fix=fix)]
    return []



def _spend_logs(cfg: LiteLLMConfig, money: Money) -> list[Finding]:
    gs = cfg.section("general_settings")
    out = []
    if gs.get("disable_spend_logs") is True:
        out.append(_finding(cfg, ("general_settings", "disable_spend_logs"), id="litellm.spend_logs_disabled",
                            severity="high", title="spend logs disabled",
                            setting="general_settings.disable_spend_logs: true",
                            why="LiteLLM_SpendLogs is the record an investigation and a refund request rest on "
                                "(which key, which address, what it cost)", money="", checklist="monitoring",
                            fix="general_settings:\n  disable_spend_logs: false"))
    if gs.get("store_prompts_in_spend_logs") is True and not gs.get("maximum_spend_logs_retention_period"):
        out.append(_finding(cfg, ("general_settings", "store_prompts_in_spend_logs"),
                            id="litellm.prompts_kept_forever", severity="medium",
                            title="prompts stored in spend logs with no retention",
                            setting="general_settings.store_prompts_in_spend_logs: true",
                            why="every prompt and response is kept forever: personal data and secrets pasted into "
                                "prompts accumulate in the database", money="", checklist="secret handling",
                            fix="general_settings:\n  maximum_spend_logs_retention_period: \"30d\""))
    return out


def _secrets(cfg: LiteLLMConfig, money: Money) -> list[Finding]:
    out = []
    for path, value in _walk(cfg.data):
        if not path or path[-1] not in SECRET_PARAMS or not isinstance(value, str) or not value:
            continue
        if value.startswith("os.environ/") or path[-1] == "master_key":
            continue
        out.append(_finding(cfg, path, id="litellm.provider_key_literal", severity="high",
                            title="a provider key is written in the config file",
                            setting=f"{_dotted(path)}: <literal, not shown>",
                            why="whoever reads the file spends on your provider account directly, outside the proxy "
                                "and every control it has (the write-up rotated its keys for this reason)",
                            money="", checklist="secret handling",
                            fix=f"{path[-1]}: os.environ/{_env_name(cfg, path)}"))
    url = cfg.section("general_settings").get("database_url")
    if isinstance(url, str) and re.match(r"^\w+://[^/:@]+:[^@]+@", url):
        out.append(_finding(cfg, ("general_settings", "database_url"), id="litellm.database_password_literal",
                            severity="medium", title="the database password is written in the config file",
                            setting="general_settings.database_url: <literal with password, not shown>",
                            why="the database holds every virtual key's hash, budgets and spend", money="",
                            checklist="secret handling", fix="general_settings:\n  database_url: os.environ/DATABASE_URL"))
    return out


def _env_name(cfg: LiteLLMConfig, path: tuple) -> str:
    """OPENAI_API_KEY, ANTHROPIC_API_KEY, ... after the deployment's provider prefix."""
    model = str(cfg.get(*path[:-1], "model", default="") or "")
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    return f"{re.sub(r'[^A-Za-z0-9]', '_', provider).upper()}_{path[-1].upper()}"


def _routes(cfg: LiteLLMConfig, money: Money) -> list[Finding]:
    gs = cfg.section("general_settings")
    out = []
    public = gs.get("public_routes")
    if isinstance(public, list):
        llm = [r for r in map(str, public) if LLM_ROUTES.match(r)]
        if llm:
            text, usd = money.of("auth_required", WRITEUP)
            out.append(_finding(cfg, ("general_settings", "public_routes"), id="litellm.public_llm_routes",
                                severity="critical", title="LLM routes served without authentication",
                                setting=f"general_settings.public_routes: {llm}",
                                why="public_routes skips key checks: these routes spend on your account for anyone",
                                money=text, money_usd=usd, checklist="authentication",
                                fix="general_settings:\n  public_routes: [\"/health/liveliness\", \"/health/readiness\"]"))
    if gs.get("allow_requests_on_db_unavailable") is True:
        out.append(_finding(cfg, ("general_settings", "allow_requests_on_db_unavailable"),
                            id="litellm.auth_fails_open", severity="medium",
                            title="requests are let through when the database is down",
                            setting="general_settings.allow_requests_on_db_unavailable: true",
                            why="keys cannot be checked while the database is unreachable: an outage (or one "
                                "provoked) opens the proxy", money="", checklist="authentication",
                            fix="general_settings:\n  allow_requests_on_db_unavailable: false"))
    return out
