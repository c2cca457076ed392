"""nginx configuration parsing: nginx's tokenizer rules, blocks, includes (on disk and in an `nginx -T` dump), errors.

Fixtures: tests/assets/nginx/conf/ is shaped like Debian's /etc/nginx (nginx.conf, mime.types, conf.d/, sites-enabled/);
tests/assets/nginx/nginx-T.txt is the same tree as `nginx -T 2>&1` prints it ("# configuration file PATH:" markers,
the syntax-ok lines first), the shape shown in nginx's docs and in the dumps other projects keep as test data.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from forensics.sources.nginx.nginx_conf import ConfError, load, parse_text, split_dump

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "nginx"
CONF = ASSETS / "conf"


def test_tokens_quotes_escapes_comments_and_blocks():
    conf = parse_text(
        'http { # a comment { ; }\n'
        "  log_format  x  escape=json '{\"a\":\"$a\"}' \"b\\\"c\" 'd\\'e' tab\\tend;\n"
        '  if ($http_user_agent ~* "^(curl|python)") { set $bot 1; }\n'
        '  location ~ ^/v1/(?<p>.*)${p} { return 200 "a#b"; }\n'
        '  add_header X-A "one two" always#notacomment;\n'
        '}\n', "t.conf")
    http, = conf.directives
    assert (http.name, http.args, http.line, http.block) == ("http", (), 1, True)
    fmt, iff, loc, hdr = http.children
    assert fmt.args == ("x", "escape=json", '{"a":"$a"}', 'b"c', "d'e", "tab\tend")
    assert (fmt.line, fmt.parents, fmt.children, fmt.block) == (2, ("http",), (), False)
    assert iff.args == ("($http_user_agent", "~*", "^(curl|python)", ")")     # as nginx: ')' may follow a quote
    assert iff.children[0].args == ("$bot", "1") and iff.children[0].parents == ("http", "if")
    assert loc.args == ("~", "^/v1/(?<p>.*)${p}") and loc.children[0].args == ("200", "a#b")
    assert (hdr.args, hdr.line) == (("X-A", "one two", "always#notacomment"), 5)


def test_quoted_string_must_be_followed_by_a_separator():
    with pytest.raises(ConfError, match=r'^t\.conf line 1: unexpected "b" after a quoted string$'):
        parse_text('return "a"b;\n', "t.conf")


@pytest.mark.parametrize("text, message", [
    ("http {\n  server {\n  }\n", r"^t\.conf line 1: unexpected end of file: the \"\{\" opened here is never closed$"),
    ("events { }\n}\n", r"^t\.conf line 2: unexpected \"\}\" \(no block is open\)$"),
    ("http {\n  gzip on\n}\n", r"^t\.conf line 3: unexpected \"\}\": \"gzip\" \(line 2\) has no \";\"$"),
    ("user nginx;\nlog_format a '$x\n\n",
     r"^t\.conf line 2: unexpected end of file: the ' opened here is never closed$"),
    ("worker_processes 2", r"^t\.conf line 1: unexpected end of file: \"worker_processes\" has no \";\"$"),
    ("http { ; }", r"^t\.conf line 1: unexpected \";\"$"),
])
def test_syntax_errors_are_one_line_naming_file_and_line(text, message):
    with pytest.raises(ConfError, match=message) as e:
        parse_text(text, "t.conf")
    assert "\n" not in str(e.value)


def _summary(conf):
    return [(Path(d.file).name, d.line, d.name, d.args[:1], d.parents) for d in conf.walk()
            if d.name in ("log_format", "access_log", "types", "server_name")]


def test_includes_on_disk_follow_a_copied_etc_nginx(tmp_path):
    # the analyst copied /etc/nginx to a case folder: absolute includes are re-rooted there, sorted as nginx's glob
    copy = tmp_path / "case" / "etc-nginx"
    shutil.copytree(CONF, copy)
    conf = load(copy / "nginx.conf")
    assert [Path(f).relative_to(copy).as_posix() for f in conf.files] == [
        "nginx.conf", "mime.types", "conf.d/json.conf", "sites-enabled/llm"]
    assert conf.missing == ((str(copy / "nginx.conf"), 5, "/etc/nginx/modules-enabled/*.conf"),)
    assert _summary(conf) == [
        ("mime.types", 2, "types", (), ("http",)),
        ("nginx.conf", 26, "log_format", ("main",), ("http",)),
        ("nginx.conf", 30, "log_format", ("timed",), ("http",)),
        ("nginx.conf", 34, "access_log", ("/var/log/nginx/access.log",), ("http",)),
        ("json.conf", 2, "log_format", ("json_analytics",), ("http",)),
        ("llm", 8, "server_name", ("llm.example.com",), ("http", "server")),
        ("llm", 9, "access_log", ("/var/log/nginx/llm.access.log",), ("http", "server")),
        ("llm", 10, "access_log", ("/var/log/nginx/llm.json.log",), ("http", "server")),
        ("llm", 20, "access_log", ("off",), ("http", "server", "location")),
    ]
    timed = conf.find("log_format")[1]
    assert timed.args[1].startswith("$remote_addr - $remote_user [$time_local] ") and len(timed.args) == 4
    assert timed.where() == f"{copy / 'nginx.conf'} line 30"


def test_nginx_T_dump_is_split_and_its_includes_resolved_inside_it():
    text = (ASSETS / "nginx-T.txt").read_text()
    assert list(split_dump(text)) == ["/etc/nginx/nginx.conf", "/etc/nginx/mime.types",
                                      "/etc/nginx/conf.d/json.conf", "/etc/nginx/sites-enabled/llm"]
    dump = load(ASSETS / "nginx-T.txt")
    assert dump.files == tuple(split_dump(text))
    assert dump.missing == (("/etc/nginx/nginx.conf", 5, "/etc/nginx/modules-enabled/*.conf"),)
    on_disk = load(CONF / "nginx.conf")
    # the same directives at the same lines of the same files as the tree on disk
    assert _summary(dump) == _summary(on_disk)
    assert [(d.name, d.args) for d in dump.walk()] == [(d.name, d.args) for d in on_disk.walk()]


def test_relative_includes_resolve_against_the_prefix(tmp_path):
    (tmp_path / "snippets").mkdir()
    (tmp_path / "snippets" / "b.conf").write_text("log_format b '$status';\n")
    (tmp_path / "snippets" / "a.conf").write_text("log_format a '$remote_addr';\ninclude snippets/b.conf;\n")
    (tmp_path / "nginx.conf").write_text("http {\n    include snippets/a.conf;\n    include missing/*.conf;\n}\n")
    conf = load(tmp_path / "nginx.conf")
    assert [(d.args[0], Path(d.file).name, d.line, d.parents) for d in conf.find("log_format")] == [
        ("a", "a.conf", 1, ("http",)), ("b", "b.conf", 1, ("http",))]
    assert conf.missing == ((str(tmp_path / "nginx.conf"), 3, "missing/*.conf"),)


def test_an_include_loop_is_an_error_not_a_hang(tmp_path):
    (tmp_path / "nginx.conf").write_text("include loop.conf;\n")
    (tmp_path / "loop.conf").write_text("include nginx.conf;\n")
    loop = r"nginx\.conf line 1: include \"loop\.conf\" nests deeper than 32 files \(an include loop\?\)$"
    with pytest.raises(ConfError, match=loop):
        load(tmp_path / "nginx.conf")


def test_an_error_in_an_included_file_names_that_file(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "bad.conf").write_text("server {\n  listen 80;\n")
    (tmp_path / "nginx.conf").write_text("http {\n  include conf.d/*.conf;\n}\n")
    with pytest.raises(ConfError, match=r"bad\.conf line 1: unexpected end of file"):
        load(tmp_path / "nginx.conf")


def test_unreadable_file_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfError, match=r"nope\.conf: cannot be read"):
        load(tmp_path / "nope.conf")
