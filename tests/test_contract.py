"""docs/contract.md (the interfaces other programs rely on) against the command line as `--help` shows it.

The contract's "Command line" section is a table, a row per command: `name ARGS [--flag]...` in the first cell, and
flags the other cells name (`with --json`); flags named in the section's prose (`--debug`) hold for every command.
Every command and flag the contract lists is in `python -m forensics <command> --help`; every command of the CLI is
in the contract; every flag of the CLI is in the contract or, when the contract leaves it out (it promises only what
other programs rely on), documented in the README's "Commands" section.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "docs" / "contract.md"
README = ROOT / "README.md"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
NOT_YET: dict[str, str] = {}


def _section(text: str, title: str) -> str:
    start = re.search(rf"^## {re.escape(title)}\b.*$", text, re.M)
    assert start, f"no '## {title}' section"
    end = re.search(r"^## ", text[start.end():], re.M)
    return text[start.end():start.end() + end.start()] if end else text[start.end():]


def contract() -> tuple[dict[str, set[str]], set[str]]:
    """(flags of each command the contract lists, flags it names for every command)."""
    section = _section(CONTRACT.read_text(), "Command line")
    commands, prose = {}, []
    for line in section.splitlines():
        row = re.match(r"\|\s*`([a-z][\w-]*)\b[^`]*`\s*\|", line)
        if row:
            commands[row.group(1)] = set(FLAG.findall(line))
        elif not line.startswith("|"):
            prose.append(line)
    return commands, set(FLAG.findall("\n".join(prose)))


def cli_commands() -> set[str]:
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    return set(re.findall(r"^ {4}([a-z][\w-]*)\s", r.stdout, re.M))


def cli_flags(command: str) -> set[str]:
    """The options `python -m forensics COMMAND --help` lists."""
    r = run_cli(command, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage:"), r.stdout + r.stderr
    return set(re.findall(r"^ {2}(?:-\w, )?(--[a-z][a-z0-9-]*)", r.stdout, re.M))


COMMANDS, FOR_EVERY_COMMAND = contract()


def test_the_contract_is_parsed():
    assert {"ingest", "report", "detect", "export", "verify", "simulate"} <= set(COMMANDS)
    assert COMMANDS["ingest"] == {"--case", "--json"} and COMMANDS["simulate"] == {"--scenario", "--out", "--seed"}
    assert FOR_EVERY_COMMAND == {"--help", "--debug"}      # "Every command has `--help`", "unless `--debug`"


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=NOT_YET[c]))
                                     if c in NOT_YET else c for c in sorted(COMMANDS)])
def test_every_command_and_flag_of_the_contract_is_on_the_command_line(command):
    assert command in cli_commands(), f"{command} is in docs/contract.md, not in `python -m forensics --help`"
    missing = (COMMANDS[command] | FOR_EVERY_COMMAND) - cli_flags(command)
    assert not missing, f"docs/contract.md gives `{command}` {sorted(missing)}, which its --help does not have"


def test_every_command_of_the_command_line_is_in_the_contract():
    assert cli_commands() - set(COMMANDS) == set()


@pytest.mark.parametrize("command", sorted(cli_commands()))
def test_every_flag_of_the_command_line_is_in_the_contract_or_the_readme(command):
    readme = set(FLAG.findall(_section(README.read_text(), "Commands")))
    undocumented = cli_flags(command) - COMMANDS.get(command, set()) - FOR_EVERY_COMMAND - readme
    assert not undocumented, f"`{command}` has {sorted(undocumented)}: neither docs/contract.md nor the README has it"
