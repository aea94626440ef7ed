"""The docs stay true: README's commands parse and cover the CLI, docs/ covers every module, links resolve, code is documented."""

import ast
import dataclasses
import io
import re
import shlex
import tokenize
from pathlib import Path

import pytest

from doggos.base.config import RunConfig
from doggos.cli import build_parser, config_from_args
from doggos.pipeline.demo import DEMO_IMAGES_DIR, DEMO_MODEL_DIR

ROOT = Path(__file__).resolve().parent.parent
README_PATH = ROOT / "README.md"
README = README_PATH.read_text(encoding="utf-8")
DOCS = [README_PATH, *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 12_288  # bytes: the README is a user's guide; design notes and benchmark logs live in docs/
TEST_COMMAND = "python3 -m pytest"  # the one test command the README gives and CI runs
INSTALL_COMMAND = "pip install -r requirements.txt"
PLACEHOLDERS = {"RUN_ID": "20260101-000000-abcd", "SRC": "src", "DIR": "out", "RUN_DIR": "runs/x"}  # as the docs write them


def _fenced_lines(text: str) -> list[str]:
    """Every line inside a ```bash block: what a reader copies into a terminal."""
    blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", text, flags=re.M | re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def _doggos_commands() -> list[tuple[str, str]]:
    """(doc, arguments) of every `python -m doggos ...` in README and docs/, in code blocks and inline code."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        lines = [m.group(1) for line in _fenced_lines(text) if (m := re.match(r"python3? -m doggos (.+?)(?:\s+#.*)?$", line))]
        inline = re.findall(r"`python3? -m doggos ([^`]+)`", text)
        # "runs …" names the family of runs commands, not one command line.
        found += [(path.name, args) for args in lines + inline if not args.rstrip().endswith("…")]
    return found


COMMANDS = _doggos_commands()


def _help(capsys, *argv: str) -> str:
    """The help text argparse prints for `python -m doggos ARGV --help`: the CLI as a user sees it."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _choices(help_text: str) -> list[str]:
    """Sub-commands listed in a help text (4-space indented names under the positional arguments)."""
    return re.findall(r"^ {4}(\S+)", help_text, flags=re.M)


def _options(help_text: str) -> set[str]:
    """Long options listed in a help text, --help excepted."""
    heads = [re.split(r"\s{2,}", line.strip())[0] for line in help_text.splitlines() if re.match(r"^ {2}-", line)]
    return {option for head in heads for option in re.findall(r"--[\w-]+", head)} - {"--help"}


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README needs a '## {title}' section"
    return match.group(1)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_commands_were_found():
    # Guards the extraction itself: a change of format that hides every command would make the parse test vacuous.
    assert any(doc == "README.md" and args.startswith("embed ") for doc, args in COMMANDS)


@pytest.mark.parametrize(("doc", "command"), COMMANDS)
def test_documented_commands_parse(doc, command, capsys):
    args = [PLACEHOLDERS.get(a, a) for a in shlex.split(command) if a != "[options]"]
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{doc}: `python -m doggos {command}` does not parse: {capsys.readouterr().err.strip()}")
    if hasattr(parsed, "source"):  # embed and runs start: the values must also make a valid RunConfig
        config_from_args(parsed, getattr(parsed, "out", None))


def test_readme_shows_what_a_newcomer_types():
    shown = _fenced_lines(README)
    for command in (INSTALL_COMMAND, "streamlit run app.py", TEST_COMMAND):
        assert command in shown, f"README needs a code block with `{command}`"
    kit = next((shlex.split(line) for line in shown if line.startswith("python -m doggos demo-kit ")), None)
    assert kit, "README needs the offline `python -m doggos demo-kit DIR` command"
    folder = kit[-1]
    embed = f"python -m doggos embed --source {folder}/{DEMO_IMAGES_DIR} --model {folder}/{DEMO_MODEL_DIR} "
    assert any(line.startswith(embed) for line in shown), f"README needs the demo kit's embed command: {embed}--out …"
    assert any(re.match(r"python -m doggos embed --source s3://\S+ --model openai/", line) for line in shown), \
        "README needs the real-data run on the bucket with the real model"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    runs = [line.strip()[len(TEST_COMMAND):] for line in ci if line.strip().startswith(TEST_COMMAND)]
    assert runs, f".ci/run must run the README's test command `{TEST_COMMAND}`"
    assert not any(re.search(r"(^|\s)-[mk](\s|$)", rest) for rest in runs), ".ci/run must not deselect any tier"
    assert any("pip install" in line and "-r requirements.txt" in line for line in ci), ".ci/run must install as README says"


def test_every_cli_command_and_runs_action_is_in_the_readme(capsys):
    commands = _choices(_help(capsys))
    actions = _choices(_help(capsys, "runs"))
    assert "embed" in commands and "list" in actions  # the help format is still the one _choices reads
    for name in commands:
        assert f"python -m doggos {name}" in README, f"README's command table misses `{name}`"
    for action in actions:
        assert f"python -m doggos runs {action}" in README, f"README's command table misses `runs {action}`"


def test_every_option_of_every_command_is_in_the_readme_option_tables(capsys):
    rows = "\n".join(line for line in _section(README, "Command line").splitlines() if line.startswith("|"))
    commands = [[name] for name in _choices(_help(capsys))] + [["runs", action] for action in _choices(_help(capsys, "runs"))]
    documented = set()
    for argv in commands:
        options = _options(_help(capsys, *argv))
        documented |= options
        for option in options:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", rows), \
                f"README's option tables miss `{' '.join(argv)} {option}`"
    assert {"--source", "--out", "--overwrite"} <= documented  # embed's options were read from its help
    for option in set(re.findall(r"(?<![\w-])--[a-z][\w-]*", rows)) - documented:
        pytest.fail(f"README's option tables show {option}, which no command has")


def test_relative_links_point_to_files_and_headings_that_exist():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            assert linked.exists(), f"{path.name}: link to {target} points to nothing"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), flags=re.M)
                assert anchor in {_slug(h) for h in headings}, f"{path.name}: {target} has no such heading"


def test_documented_scripts_exist():
    for path in DOCS:
        for script in re.findall(r"^python3? ([\w/.-]+\.py)\b", "\n".join(_fenced_lines(path.read_text(encoding="utf-8"))), flags=re.M):
            assert (ROOT / script).is_file(), f"{path.name} runs {script}, which does not exist"


def test_readme_fits_its_budget():
    size = len(README.encode("utf-8"))
    assert size < README_LIMIT, f"README.md is {size} bytes (limit {README_LIMIT}): move design or figures to docs/"


def test_every_module_is_in_the_architecture_module_tables():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `((?:doggos|dashboard)/[\w/]+\.py)` \|", text, flags=re.M))
    paths = [*(ROOT / "doggos").rglob("*.py"), *(ROOT / "dashboard").glob("*.py")]
    modules = {p.relative_to(ROOT).as_posix() for p in paths if p.name not in ("__init__.py", "__main__.py")}
    assert not modules - rows, f"docs/architecture.md's module tables miss {sorted(modules - rows)}"
    assert not rows - modules, f"docs/architecture.md's module tables name modules that do not exist: {sorted(rows - modules)}"


def test_every_module_has_a_docstring():
    paths = [*(ROOT / "doggos").rglob("*.py"), *(ROOT / "dashboard").glob("*.py"), *(ROOT / "pages").glob("*.py"),
             *(ROOT / "bench").glob("*.py"), ROOT / "app.py"]
    for path in sorted(paths):
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), f"{path.relative_to(ROOT)} needs a one-line docstring"


def test_every_config_field_has_a_comment():
    source = (ROOT / "doggos" / "base" / "config.py").read_text(encoding="utf-8")
    comments = {token.start[0] for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
    run_config = next(node for node in ast.parse(source).body if isinstance(node, ast.ClassDef) and node.name == "RunConfig")
    fields = {node.target.id: node for node in run_config.body if isinstance(node, ast.AnnAssign)}
    assert set(fields) == {f.name for f in dataclasses.fields(RunConfig)}
    for name, node in fields.items():
        lines = range(node.lineno - 1, node.end_lineno + 1)  # a comment on the line above, or on the field's own lines
        assert comments & set(lines), f"RunConfig.{name} needs a comment saying what its default means"
