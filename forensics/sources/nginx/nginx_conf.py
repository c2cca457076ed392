"""nginx configuration as directives: nginx's own tokenizer rules, `include` followed, `nginx -T` dumps split.

API (stable; the configuration audit builds on it):

    conf = load(path)                 # a file on disk, or a saved `nginx -T` output (detected by its markers)
    conf = parse_text(text, "x.conf") # text; includes resolve against `prefix` (default: the file's folder)
    for d in conf.walk():             # every directive, depth first, includes expanded in place
        d.name, d.args, d.file, d.line, d.parents, d.children
    conf.find("log_format")           # the directives of that name, anywhere
    conf.files                        # the files read, main first;  conf.missing: includes that matched nothing

`args` are unquoted and unescaped as nginx does (`\\"`, `\\'`, `\\\\`, `\\t`, `\\r`, `\\n`); `parents` is the
block path, e.g. ("http", "server", "location"); `children` is () for a directive without a block (`block` tells
an empty block apart). An `include` directive is replaced by the directives of the files it names (sorted, as
nginx's glob does); relative patterns resolve against the prefix, as nginx does, and, when a copied configuration
no longer sits where nginx read it, against the main file's folder. Syntax errors raise ConfError, whose message
is one line: `FILE line N: problem`.
"""
from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Iterator

__all__ = ["ConfError", "Directive", "NginxConf", "load", "parse_text", "split_dump"]

_DUMP_MARKER = re.compile(r"^# configuration file (.+):\r?$", re.M)
_UNESCAPE = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_MAX_INCLUDE_DEPTH = 32


class ConfError(ValueError):
    """A configuration nginx itself would refuse; the message names the file and the line."""


@dataclass(frozen=True)
class Directive:
    name: str
    args: tuple[str, ...]
    file: str
    line: int
    parents: tuple[str, ...] = ()
    children: tuple["Directive", ...] = ()
    block: bool = False                 # written with { ... } (children may still be empty)

    def walk(self) -> Iterator["Directive"]:
        yield self
        for child in self.children:
            yield from child.walk()

    def where(self) -> str:
        return f"{self.file} line {self.line}"


@dataclass(frozen=True)
class NginxConf:
    directives: tuple[Directive, ...]            # the top level, includes expanded in place
    files: tuple[str, ...] = ()                  # every file read, the main one first
    missing: tuple[tuple[str, int, str], ...] = ()   # (file, line, pattern) of includes that matched no file

    def walk(self) -> Iterator[Directive]:
        for d in self.directives:
            yield from d.walk()

    def find(self, name: str) -> list[Directive]:
        return [d for d in self.walk() if d.name == name]


# -- tokens ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Token:
    text: str
    line: int
    kind: str = "word"                  # word | ; | { | }


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    return re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), m.group(0)), raw, flags=re.S)


def tokenize(text: str, file: str) -> Iterator[_Token]:
    """nginx's ngx_conf_read_token: words, quoted strings, `;` `{` `}`, `#` comments at the start of a word."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in ";{}":
            yield _Token(c, line, c)
            i += 1
        elif c in "\"'":
            start_line, j = line, i + 1
            while j < n and text[j] != c:
                if text[j] == "\\":
                    j += 1
                j += 1
            if j >= n:
                raise ConfError(f"{file} line {start_line}: unexpected end of file: the {c} opened here is "
                                f"never closed")
            raw = text[i + 1:j]
            line += raw.count("\n")
            yield _Token(_unescape(raw), start_line, "word")
            i = j + 1
            if i < n and text[i] not in " \t\r\n;{)":       # nginx lets ')' follow: if ($a = "b")
                raise ConfError(f"{file} line {line}: unexpected \"{text[i]}\" after a quoted string")
        else:
            j, variable = i, False
            while j < n:
                ch = text[j]
                if ch == "\\" and j + 1 < n:
                    j += 2
                    continue
                if ch == "{" and j > i and text[j - 1] == "$":
                    variable = True            # ${name}: not a block
                elif ch == "}" and variable:
                    variable = False
                elif ch in " \t\r\n;{}":
                    break
                j += 1
            raw = text[i:j]
            line_at = line
            line += raw.count("\n")
            yield _Token(_unescape(raw), line_at, "word")
            i = j


# -- directives ------------------------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, files: dict[str, str] | None, prefix: str | None, main_dir: str | None):
        self.files = files                     # an nginx -T dump: path -> text; None = read from disk
        self.prefix = prefix
        self.main_dir = main_dir
        self.read: list[str] = []
        self.missing: list[tuple[str, int, str]] = []

    def parse(self, text: str, file: str, parents: tuple[str, ...], depth: int = 0) -> list[Directive]:
        self.read.append(file)
        return self._block(tokenize(text, file), file, parents, depth, top=True)

    def _block(self, tokens, file: str, parents: tuple[str, ...], depth: int, top: bool,
               opened_at: int = 0) -> list[Directive]:
        out: list[Directive] = []
        words: list[_Token] = []
        for tok in tokens:
            if tok.kind == "word":
                words.append(tok)
                continue
            if tok.kind == "}":
                if words:
                    raise ConfError(f"{file} line {tok.line}: unexpected \"}}\": \"{words[0].text}\" (line "
                                    f"{words[0].line}) has no \";\"")
                if top:
                    raise ConfError(f"{file} line {tok.line}: unexpected \"}}\" (no block is open)")
                return out
            if not words:
                raise ConfError(f"{file} line {tok.line}: unexpected \"{tok.kind}\"")
            name, args, at = words[0].text, tuple(w.text for w in words[1:]), words[0].line
            words = []
            if tok.kind == "{":
                children = self._block(tokens, file, parents + (name,), depth, top=False, opened_at=tok.line)
                out.append(Directive(name, args, file, at, parents, tuple(children), True))
            elif name == "include" and len(args) == 1:
                out.extend(self._include(args[0], file, at, parents, depth))
            else:
                out.append(Directive(name, args, file, at, parents))
        if words:
            raise ConfError(f"{file} line {words[0].line}: unexpected end of file: \"{words[0].text}\" has no \";\"")
        if not top:
            raise ConfError(f"{file} line {opened_at}: unexpected end of file: the \"{{\" opened here is never "
                            f"closed")
        return out

    def _include(self, pattern: str, file: str, line: int, parents, depth: int) -> list[Directive]:
        if depth >= _MAX_INCLUDE_DEPTH:
            raise ConfError(f"{file} line {line}: include \"{pattern}\" nests deeper than {_MAX_INCLUDE_DEPTH} "
                            f"files (an include loop?)")
        paths = self._resolve(pattern)
        if not paths:
            self.missing.append((file, line, pattern))
        out: list[Directive] = []
        for path in paths:
            out.extend(self.parse(self._text(path), path, parents, depth + 1))
        return out

    def _resolve(self, pattern: str) -> list[str]:
        candidates = []
        p = PurePosixPath(pattern)
        if p.is_absolute():
            candidates.append(str(p))
        elif self.prefix:
            candidates.append(str(PurePosixPath(self.prefix) / p))
        if self.files is None and self.main_dir:
            # a configuration copied elsewhere: /etc/nginx/conf.d/*.conf -> <main folder>/conf.d/*.conf, ...
            # (never a bare glob in the main folder: /etc/nginx/sites/*.conf must not read nginx.conf itself)
            parts = p.parts[1:] if p.is_absolute() else p.parts
            rerooted = [str(Path(self.main_dir, *parts[k:])) for k in range(len(parts) if p.is_absolute() else 1)
                        if len(parts) - k >= 2 or not glob.has_magic(parts[-1])]
            rerooted = [c for c in rerooted if c not in candidates]
            candidates = rerooted + candidates if p.is_absolute() else candidates + rerooted
        for candidate in candidates:
            if self.files is not None:
                found = sorted(f for f in self.files if fnmatchcase(f, candidate))
            elif glob.has_magic(candidate):
                found = sorted(f for f in glob.glob(candidate) if Path(f).is_file())
            else:
                found = [candidate] if Path(candidate).is_file() else []
            if found:
                return found
        return []

    def _text(self, path: str) -> str:
        if self.files is not None:
            return self.files[path]
        try:
            return Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise ConfError(f"{path}: cannot be read ({e.strerror or e})") from None


def split_dump(text: str) -> dict[str, str]:
    """An `nginx -T` output as {path: text}, in the order nginx wrote them (the main file first); {} if none."""
    marks = list(_DUMP_MARKER.finditer(text))
    out: dict[str, str] = {}
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        out.setdefault(m.group(1), text[m.end() + 1:end])
    return out


def parse_text(text: str, file: str = "<string>", *, prefix: str | None = None) -> NginxConf:
    """A configuration held in `text` (a single file, or a whole `nginx -T` dump)."""
    dump = split_dump(text)
    if dump:
        main = next(iter(dump))
        parser = _Parser(dump, prefix or str(PurePosixPath(main).parent), None)
        directives = parser.parse(dump[main], main, ())
    else:
        main_dir = str(Path(file).parent) if file != "<string>" else None
        parser = _Parser(None, prefix or main_dir, main_dir)
        directives = parser.parse(text, file, ())
    return NginxConf(tuple(directives), tuple(dict.fromkeys(parser.read)), tuple(parser.missing))


def load(path: str | Path, *, prefix: str | None = None) -> NginxConf:
    """The configuration in `path`: an nginx.conf (its includes read from disk) or a saved `nginx -T` output."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ConfError(f"{path}: cannot be read ({e.strerror or e})") from None
    return parse_text(text, str(path), prefix=prefix)
