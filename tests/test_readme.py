"""README is a contract: every `vaediff` command and flag it names exists, every file and link it points
to is there, the two commands come first, and it stays short enough to read in five minutes."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from vaediff.cli import build_parser
from vaediff.families import FAMILIES

ROOT = Path(__file__).parent.parent
READMES = ("README.md", "README.zh-CN.md")


def subcommand_flags() -> dict[str, set[str]]:
    """Each `vaediff` command's flags, as the parser (with every registered family) knows them."""
    parser = build_parser(FAMILIES)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {flag for action in sub._actions for flag in action.option_strings}
            for name, sub in commands.choices.items()}


def named_commands(text: str) -> list[str]:
    """Every `vaediff ...` command line in inline code or a code block (up to a comment or the cell's end)."""
    spans = re.findall(r"`([^`\n]*vaediff [^`\n]*)`", text)
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in block.splitlines() if "vaediff " in line]
    return [re.split(r"\s#\s", span)[0] for span in spans + lines]


@pytest.mark.parametrize("readme", READMES)
def test_every_command_and_flag_readme_names_exists(readme):
    text = (ROOT / readme).read_text()
    flags = subcommand_flags()
    commands = named_commands(text)
    assert len(commands) >= 5, commands
    for line in commands:
        words = line.split("vaediff ", 1)[1].split()
        command = words[0]
        assert command in flags or command.startswith("-"), f"{readme}: `{line}` names no command {command!r}"
        if command in flags:
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(words[1:])):
                assert flag in flags[command], f"{readme}: `{line}`: {command} has no flag {flag}"


@pytest.mark.parametrize("readme", READMES)
def test_every_file_and_link_readme_names_exists(readme):
    text = (ROOT / readme).read_text()
    links = [link.split("#")[0] for link in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in link]
    paths = re.findall(r"`((?:src|tests|benchmarks|docs|notebooks)/[\w./-]+)`", text)
    assert links and paths
    for name in links + paths:
        if name:
            assert (ROOT / name).exists(), f"{readme} names {name}, which does not exist"


@pytest.mark.parametrize("readme", READMES)
def test_readme_is_short_and_gives_the_two_commands_first(readme):
    text = (ROOT / readme).read_text()
    assert len(text.splitlines()) < 250
    assert not re.search(r"\bXX", text), "a placeholder is left"
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert "uv run vaediff quickstart" in first_block and "uv run pytest" in first_block
