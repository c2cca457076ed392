"""The audit over any mix of files: each is recognised (LiteLLM config.yaml, nginx configuration or `nginx -T`
output, LiteLLM's stdout), read, and checked; a file that cannot be read is a ConfigError naming file and line."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from forensics.audit import checks_litellm, checks_nginx, checks_startup
from forensics.audit import litellm_config
from forensics.audit.finding import Finding, rank
from forensics.audit.litellm_config import ConfigError
from forensics.audit.money import Money
from forensics.sources.litellm import stdout

_NGINX = re.compile(r"^\s*(http|server|events|upstream|location\s+\S+)\s*\{|^# configuration file .+:$|"
                    r"^\s*(listen|proxy_pass|server_name|worker_processes)\s", re.M)
SUFFIXES = (".yaml", ".yml", ".conf", ".log", ".txt")

__all__ = ["AuditResult", "ConfigError", "audit", "expand", "for_report", "kind_of"]


@dataclass
class AuditResult:
    findings: list[Finding]
    files: list[tuple[str, str]] = field(default_factory=list)     # (path, litellm_config | nginx | litellm_log)

    def to_json(self) -> dict:
        from forensics.audit.finding import SEVERITIES

        return {"files": [{"path": p, "kind": k} for p, k in self.files],
                "summary": {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES},
                "findings": [f.to_json() for f in self.findings]}


def expand(inputs) -> list[Path]:
    """Files named, and the configuration files a folder holds (recursively, sorted)."""
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def kind_of(path: Path) -> str:
    try:
        text = path.read_bytes()[:65536].decode("utf-8", "replace")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    if stdout.detect(text):
        return "litellm_log"
    if path.suffix.lower() in (".yaml", ".yml") or litellm_config.looks_like(text):
        return "litellm_config"
    if path.suffix.lower() == ".conf" or _NGINX.search(text):
        return "nginx"
    raise ConfigError(f"{path}: neither a LiteLLM config.yaml, an nginx configuration nor LiteLLM's log")


def audit(inputs, env_file: str | Path | None = None, money: Money | None = None) -> AuditResult:
    """Every finding for the files under `inputs`, most severe first."""
    from forensics.sources.nginx import nginx_conf

    money = money or Money()
    env = litellm_config.read_env_file(env_file) if env_file else {}
    files = expand(inputs)
    kinds = [(f, kind_of(f)) for f in files]
    configs = [litellm_config.load(f, env) for f, k in kinds if k == "litellm_config"]
    confs, included = [], set()
    for f, k in kinds:
        if k != "nginx" or str(f) in included:
            continue
        try:
            conf = nginx_conf.load(f)
        except nginx_conf.ConfError as e:
            raise ConfigError(str(e)) from None
        included |= set(conf.files[1:])
        confs.append(conf)
    findings: list[Finding] = []
    for cfg in configs:
        findings += checks_litellm.check(cfg, money)
    has_key = bool(configs) and not any(f.id in ("litellm.no_master_key", "litellm.weak_master_key",
                                                 "litellm.weak_master_key_permitted") for f in findings)
    for conf in confs:
        findings += checks_nginx.check(conf, money, proxy_has_key=has_key)
    for f, k in kinds:
        if k == "litellm_log":
            findings += checks_startup.check(f, money)
    used = [(str(f), k) for f, k in kinds if k != "nginx" or str(f) not in included or
            any(c.files and c.files[0] == str(f) for c in confs)]
    return AuditResult(sorted(findings, key=rank), used)


def for_report(case, inv, configs=()) -> AuditResult | None:
    """The report's configuration section: the audit of `configs` priced with the investigation's controls replay,
    and the startup warnings of every LiteLLM stdout log in the case (litellm_log); None when there is neither."""
    from forensics.audit.money import from_investigation

    money = from_investigation(inv)
    result = audit(configs, money=money) if configs else AuditResult([], [])
    present = case.has_table("litellm_log")
    logs: dict[str, list[dict]] = {}
    if present:
        for path, line_no, level, cls, message in case.execute(
                "SELECT f.path, l.line_no, l.level, l.message_class, l.message FROM litellm_log l "
                "JOIN ingest_files f USING (file_id) WHERE l.message_class IN ('no_master_key', "
                "'weak_master_key_permitted', 'startup', 'other') AND (l.message_class <> 'other' OR "
                "l.message LIKE '%trusted_proxy_ranges is not set%') ORDER BY f.path, l.line_no").fetchall():
            logs.setdefault(path, []).append({"line_no": line_no, "level": level, "message_class": cls,
                                              "message": message})
    for path, rows in logs.items():
        result.findings += checks_startup.check_rows(rows, path, money)
        result.files.append((path, "litellm_log"))
    if not result.files:
        return None
    result.findings.sort(key=rank)
    return result
