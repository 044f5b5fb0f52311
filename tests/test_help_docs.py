"""--help and the docs agree: every command and flag the README and docs show exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweeper.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = ["run", "plan", "status", "report", "emulator serve"]


def _help(command: str) -> str:
    result = CliRunner().invoke(cli, [*command.split(), "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def _flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text)) | set(
        re.findall(r"(?<![\w-])-[a-z](?![\w-])", text)
    )


def test_the_readme_command_table_matches_the_help() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `sweeper ([a-z ]+?)(?: [A-Z|\\]+)?` \| (.*) \|$", readme, re.M)
    assert {name for name, _ in rows} == set(COMMANDS)
    for name, text in rows:
        usage = _help(name).splitlines()[0]
        table_usage = re.search(rf"`sweeper {name}( [A-Z|\\]+)?`", readme)
        assert table_usage is not None
        argument = (table_usage.group(1) or "").strip().replace("\\|", "|")
        assert usage.endswith(argument), (usage, argument)
        missing = _flags(text) - _flags(_help(name))
        assert not missing, f"README's row for {name} names {missing}, which --help lacks"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_flag_the_docs_show_for_a_command_is_in_its_help(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    # An inline code span of a command may wrap over several lines: read it as one line.
    text = re.sub(r"`sweeper [^`]+`", lambda m: m.group(0).replace("\n", " "), text)
    pattern = re.compile(r"sweeper (emulator serve|run|plan|status|report)\b([^\n`|;]*)")
    for command, rest in pattern.findall(text):
        rest = rest.split("#")[0].split("&&")[0].split(">")[0]
        missing = _flags(rest) - _flags(_help(command))
        assert not missing, f"{doc.name}: `sweeper {command}{rest}` uses {missing}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_range_notation_and_consistent_output_flags(command: str) -> None:
    text = _help(command)
    assert not re.search(r"\[\d*\.?\d*<?=?x|x>=|x<=", text), text
    if command in ("run", "status", "plan"):
        for flag in ("--format", "--json", "-q, --quiet"):
            assert flag in text, (command, flag)
    if command in ("run", "status"):
        assert "-v, --verbose" in text


def test_time_scale_says_which_way_is_faster() -> None:
    text = " ".join(_help("emulator serve").split())
    assert "2 makes jobs take half as long" in text
