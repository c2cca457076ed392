"""What an nginx configuration says about its access logs: every `log_format`, and which `access_log` uses which.

Read from the analyst's nginx.conf or `nginx -T` output (nginx_conf follows the includes); detection then tries the
format an access_log directive names for a file of that name (rotations included) before anything else.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

from forensics.sources.nginx.nginx_conf import NginxConf, load
from forensics.sources.nginx.nginx_formats import COMBINED

# what logrotate and friends append to a log's name: access.log.1, access.log.2.gz, access.log-20250317(.gz)
_ROTATION = re.compile(r"(?:\.\d+|-\d{8}(?:\d{2})?)?(?:\.gz)?")


@dataclass(frozen=True)
class ConfFormat:
    name: str
    text: str                  # the format string, nginx's adjacent quoted strings joined
    escape: str = "default"    # escape=default | json | none
    where: str = "built in"    # FILE line N of the log_format directive

    @property
    def fmt_id(self) -> str:
        """The format id files of this format get in the case."""
        return "nginx.conf." + re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)


@dataclass(frozen=True)
class AccessLog:
    path: str                  # as written (may hold variables)
    format: str                # the log_format name; combined when none is given
    where: str


@dataclass(frozen=True)
class LogConf:
    formats: dict[str, ConfFormat]
    access_logs: tuple[AccessLog, ...]
    sources: tuple[str, ...] = ()      # the configuration files read

    def for_file(self, path: Path | str) -> list[ConfFormat]:
        """The formats of the access_log directives that write a file of this name (or a rotation of it)."""
        name = PurePosixPath(str(path)).name
        out: list[ConfFormat] = []
        for log in self.access_logs:
            base = PurePosixPath(log.path).name
            if "$" not in base and name.startswith(base) and _ROTATION.fullmatch(name[len(base):]):
                fmt = self.formats.get(log.format)
                if fmt is not None and fmt not in out:
                    out.append(fmt)
        return out

    def by_id(self, fmt_id: str) -> ConfFormat | None:
        return next((f for f in self.formats.values() if f.fmt_id == fmt_id), None)


def log_conf(conf: NginxConf, into: LogConf | None = None) -> LogConf:
    formats = dict(into.formats) if into else {"combined": ConfFormat("combined", COMBINED)}
    logs = list(into.access_logs) if into else []
    for d in conf.walk():
        if d.name == "log_format" and len(d.args) >= 2:
            args = list(d.args[1:])
            escape = "default"
            if args and args[0].startswith("escape="):
                escape = args.pop(0).partition("=")[2]
            formats[d.args[0]] = ConfFormat(d.args[0], "".join(args), escape, d.where())
        elif d.name == "access_log" and d.args and d.args[0] != "off" and not d.args[0].startswith("syslog:"):
            logs.append(AccessLog(d.args[0], d.args[1] if len(d.args) > 1 else "combined", d.where()))
    return LogConf(formats, tuple(logs), (*(into.sources if into else ()), *conf.files))


@lru_cache(maxsize=8)
def load_log_conf(paths: tuple[str, ...]) -> LogConf:
    """The log formats and access logs of every configuration given (nginx.conf files or `nginx -T` outputs);
    a later file's log_format of the same name wins. Raises nginx_conf.ConfError on a configuration nginx refuses."""
    out = None
    for p in paths:
        out = log_conf(load(p), out)
    return out or LogConf({"combined": ConfFormat("combined", COMBINED)}, ())
