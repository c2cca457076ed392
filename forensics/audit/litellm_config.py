"""LiteLLM's config.yaml as the proxy reads it: `include:`d files merged in, `os.environ/NAME` references resolved
from an env file (or kept as references), and the file and line of every value (from YAML's compose nodes).

Errors are one line naming the file and the line: `config.yaml line 12: mapping values are not allowed here`."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ENV_PREFIX = "os.environ/"
_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


class ConfigError(ValueError):
    """A configuration file that cannot be read; the message is one line naming the file and the line."""


@dataclass
class LiteLLMConfig:
    """The merged configuration: `data` as plain Python, `where[path]` = (file, line) of each value."""

    path: str
    data: dict
    where: dict[tuple, tuple[str, int]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def get(self, *path, default=None):
        node = self.data
        for p in path:
            if isinstance(node, dict) and p in node:
                node = node[p]
            elif isinstance(node, list) and isinstance(p, int) and 0 <= p < len(node):
                node = node[p]
            else:
                return default
        return node

    def at(self, *path) -> tuple[str, int]:
        """(file, line) of the value at `path`, else of its nearest parent that is there, else (main file, 0)."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.where:
                return self.where[path[:n]]
        return self.path, 0

    def section(self, name: str) -> dict:
        value = self.data.get(name)
        return value if isinstance(value, dict) else {}

    def resolve(self, value) -> tuple[str, object]:
        """('env', value or None) for an os.environ/ reference (None: not in the env file), ('literal', value)."""
        if isinstance(value, str) and value.startswith(ENV_PREFIX):
            return "env", self.env.get(value[len(ENV_PREFIX):])
        return "literal", value


def read_env_file(path: str | Path) -> dict[str, str]:
    """KEY=VALUE lines (`export`, quotes and # comments allowed), as docker's and LiteLLM's .env files hold them."""
    env: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if not m:
            raise ConfigError(f"{path} line {n}: not a KEY=VALUE line")
        value = m[2]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        env[m[1]] = value
    return env


def _compose(path: Path) -> yaml.Node | None:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from None


def _value(node: yaml.Node, file: str, path: tuple, where: dict):
    """The node as plain Python (SafeLoader's scalars), recording (file, line) for `path` and everything below."""
    where[path] = (file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for k, v in node.value:
            key = _scalar(k) if isinstance(k, yaml.ScalarNode) else str(k.value)
            out[key] = _value(v, file, (*path, key), where)
            where[(*path, key)] = (file, k.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_value(v, file, (*path, i), where) for i, v in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.ScalarNode):
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        return node.value


def load(path: str | Path, env: dict[str, str] | None = None) -> LiteLLMConfig:
    """The configuration at `path` with its `include:` files merged the way LiteLLM merges them (lists extended,
    other keys set), relative to the main file's folder."""
    path = Path(path)
    node = _compose(path)
    where: dict = {}
    data = _value(node, str(path), (), where) if node is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} line 1: a LiteLLM config is a mapping (model_list, litellm_settings, ...), "
                          f"not a {type(data).__name__}")
    cfg = LiteLLMConfig(str(path), data, where, dict(env or {}), [str(path)])
    includes = data.pop("include", None) or []
    for i, name in enumerate(includes if isinstance(includes, list) else [includes]):
        inc = path.parent / str(name)
        file, line = where.get(("include", i), (str(path), 0))
        if not inc.is_file():
            raise ConfigError(f"{file} line {line}: include {name!r}: no such file")
        sub = load(inc, env)
        cfg.files += sub.files
        for key, value in sub.data.items():
            if isinstance(cfg.data.get(key), list) and isinstance(value, list):
                offset = len(cfg.data[key])
                cfg.data[key] = cfg.data[key] + value
                for p, w in sub.where.items():
                    if p[:1] == (key,) and len(p) > 1 and isinstance(p[1], int):
                        cfg.where[(key, p[1] + offset, *p[2:])] = w
            else:
                cfg.data[key] = value
                cfg.where.update({p: w for p, w in sub.where.items() if p[:1] == (key,)})
    return cfg


def looks_like(text: str) -> bool:
    """A LiteLLM config: YAML whose top level names one of its sections."""
    return re.search(r"^(model_list|litellm_settings|general_settings|router_settings|include)\s*:", text,
                     re.M) is not None
