"""The README's quickstart is two commands, and CI runs its test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Quickstart section holds exactly one code block"
    return [line for line in blocks[0].splitlines() if line.strip()]


def test_quickstart_has_two_commands():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quickstart_commands()[1] in ci


def test_readme_lists_every_cli_command():
    from typer.main import get_command

    from reidbench.cli.app import _register_commands, app

    _register_commands()
    text = (ROOT / "README.md").read_text()
    for name in get_command(app).commands:
        assert f"`reidbench {name}" in text, f"README's command table lacks {name}"
