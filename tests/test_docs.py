"""The README stays true: its commands parse, it documents every command, option and module, every module has a docstring."""

import ast
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from doggos.cli import build_parser
from doggos.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMMANDS = re.findall(r"^(?:\$ )?python -m doggos (.+)$", README, flags=re.M)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_commands_parse(command):
    args = [a for a in shlex.split(command) if a not in ("[options]",)]
    placeholder = {"RUN_ID": "20260101-000000-abcd", "SRC": "src", "DIR": "out"}
    build_parser().parse_args([placeholder.get(a, a) for a in args])


def test_readme_shows_commands():
    assert len(COMMANDS) >= 3


def test_every_cli_command_is_in_the_readme():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        if name == "drive":  # internal: the detached driver
            continue
        assert f"python -m doggos {name}" in README, name
    for action in commands["runs"]._subparsers._group_actions[0].choices:
        assert f"python -m doggos runs {action}" in README, action


def test_every_run_option_is_in_the_readme():
    options = {a.option_strings[0] for a in build_parser()._subparsers._group_actions[0].choices["embed"]._actions if a.option_strings}
    for option in options - {"-h"}:
        assert f"`{option}`" in README, option


def test_every_config_field_has_a_comment():
    source = (ROOT / "doggos" / "config.py").read_text(encoding="utf-8")
    for field in dataclasses.fields(RunConfig):
        line = next(l for l in source.splitlines() if re.match(rf"\s+{field.name}: ", l))
        assert "#" in line, f"RunConfig.{field.name} needs a comment saying what its default means"


def test_every_module_has_a_docstring_and_a_row_in_the_readme():
    for path in sorted((ROOT / "doggos").glob("*.py")) + sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]:
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), f"{path.name} needs a one-line docstring"
    for path in sorted((ROOT / "doggos").glob("*.py")):
        if path.name not in ("__init__.py", "__main__.py"):
            assert f"`doggos/{path.name}`" in README, f"README's module table misses doggos/{path.name}"
