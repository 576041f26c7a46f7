"""The documentation's commands are the CLI's: every ``vpnlab ...``, ``scripts/netns-lab.sh ...``,
``scripts/bench.sh ...`` and ``scripts/meltdown.sh ...`` command line written in README.md,
DESIGN.md, captures/README.md, docs/*.md and the notebooks' text names sub-commands that exist,
options that its sub-command has, and, where an option takes one of a set of values, one of
them; and every repository file they name exists.
Read from inline code that starts with the command and from lines of shell blocks (a ``$ ``
prompt, ``sudo``, ``.venv/bin/`` or an install's ``bin/`` in front are allowed). Each line is
held against vpnlab's own parser (``vpnlab.cli.build_parser``), walked without running anything:
positional values are not checked, since a page often writes a placeholder (``FILE``, ``...``)
or names a command without its arguments. ``scripts/netns-lab.sh VERB`` is ``vpnlab lab VERB``
(the script passes any verb on), except its own ``exec`` and ``notebook``;
``scripts/bench.sh ARGS`` and ``scripts/meltdown.sh ARGS`` are ``vpnlab bench|meltdown ARGS``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpnlab.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
PAGES = [
    REPO / "README.md",
    REPO / "DESIGN.md",
    REPO / "captures/README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "notebooks").glob("[0-9]*.py")),  # the notebooks' text, as jupytext keeps it
]
SHELL_FENCES = ("", "sh", "bash", "shell", "console")
COMMAND = re.compile(
    r"^(?:\$\s+)?(?:[A-Z_]+=\S*\s+)*(?:sudo\s+(?:-u\s+\S+\s+)?(?:[A-Z_]+=\S*\s+)*)?"
    r"(?:\S*/)?(vpnlab|netns-lab\.sh|bench\.sh|meltdown\.sh)(?:\s+(.*))?$"
)
"""A command line: prompt, environment, sudo, a path to the program, then its arguments."""
SHELL_END = re.compile(r"\s(?:#|\||>|2>|&&|;|<)")
"""Where the command's own arguments end: a comment, a pipe, a redirection, the next command."""
OUTPUT = re.compile(r"^[\w-]+(?: [\w-]+)?: error:")
"""A line of output quoted in a page ("vpnlab lab: error: ..."), not a command."""


def written_commands(page: Path) -> Iterator[tuple[str, int, str, list[str]]]:
    """(page, line, program, arguments) for each command line on ``page``."""
    fence: str | None = None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if page.suffix == ".py":  # a markdown cell's line is a comment; code is no page text
            if not line.startswith("#"):
                continue
            line = line.removeprefix("#")
        text = line.strip()
        if text.startswith("```"):
            fence = None if fence is not None else text[3:].strip()
            continue
        if fence is not None:
            candidates = [text] if fence in SHELL_FENCES else []
        else:
            candidates = [span.strip() for span in re.findall(r"`([^`\n]+)`", line)]
        for candidate in candidates:
            match = COMMAND.match(candidate)
            if match is None:
                continue
            rest = SHELL_END.split(" " + (match.group(2) or ""), maxsplit=1)[0].strip()
            if OUTPUT.match(rest):
                continue
            try:
                argv = shlex.split(rest)
            except ValueError:  # an unclosed quote: prose, not a command
                continue
            yield page.name, number, match.group(1), argv


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def _placeholder(token: str) -> bool:
    return token.strip(".") == "" or token.isupper() or token.startswith(("<", "[", "$"))


def _typed(action: argparse.Action, value: str) -> object | None:
    """``value`` as the option's type makes it, if that is one of its choices, else None."""
    try:
        typed = action.type(value) if callable(action.type) else value
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return None
    return typed if typed in (action.choices or ()) else None


def problems(argv: list[str], parser: argparse.ArgumentParser) -> Iterator[str]:
    """What in ``argv`` the parser would refuse as a name: a sub-command, an option, a choice."""
    path = "vpnlab"
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            return
        if token.startswith("-") and not re.fullmatch(r"-\d[\d.]*", token):
            name, _, inline = token.partition("=")
            options = _options(parser)
            if name not in options:
                yield f"{path} has no option {name}"
                continue
            action = options[name]
            if action.nargs == 0:
                continue
            value = inline or next(tokens, "")
            if action.choices and not _placeholder(value) and _typed(action, value) is None:
                yield f"{path} {name}: {value!r} is not one of {sorted(action.choices)}"
            continue
        sub = _subcommands(parser)
        if sub and not _placeholder(token):
            verbs = re.split(r"[|/]", token)  # `lab up|down`, `lab up/status`: each of them
            if missing := [verb for verb in verbs if verb not in sub]:
                yield f"{path} has no sub-command {missing[0]!r}"
                return
            parser, path = sub[verbs[0]], f"{path} {verbs[0]}"
            continue
        if any(a.nargs == argparse.REMAINDER for a in parser._actions):
            return  # `lab exec NODE CMD...`: the rest is the node's command


WRAPPERS = {"bench.sh": "bench", "meltdown.sh": "meltdown"}
"""The scripts that install what is missing and then run ``vpnlab COMMAND "$@"``."""


def as_vpnlab(program: str, argv: list[str]) -> list[str] | None:
    """The ``vpnlab`` arguments a command line amounts to, or None for the script's own verbs
    (and for ``vpnlab`` or a script alone, which a page writes as the program's name)."""
    if program == "vpnlab":
        return argv or None
    if program in WRAPPERS:  # alone, it names the script: `bench` exists, nothing to hold
        return [WRAPPERS[program], *argv] if argv else None
    verb, rest = (argv[0], argv[1:]) if argv else ("up", [])
    if verb in ("-h", "--help", "help", "exec", "notebook"):
        return None  # the script's own (tests/unit/test_script_usage.py, tests/lab/test_scripts.py)
    return ["lab", verb, *rest]


WRITTEN = [c for page in PAGES for c in written_commands(page)]
COMMANDS = [
    (f"{page}:{line}", f"{program} {shlex.join(argv)}", vpnlab_argv)
    for page, line, program, argv in WRITTEN
    if (vpnlab_argv := as_vpnlab(program, argv)) is not None
]
"""What each written command amounts to as vpnlab's arguments (the script's own verbs left out)."""


def test_the_pages_have_commands_to_check():
    programs = {program for _, _, program, _ in WRITTEN}
    assert programs == {"vpnlab", "netns-lab.sh", *WRAPPERS} and len(COMMANDS) > 100, programs


@pytest.mark.parametrize(("where", "written", "argv"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_written_command_is_one_vpnlab_has(where, written, argv):
    wrong = list(problems(argv, build_parser()))
    assert not wrong, f"{where}: {written}: {'; '.join(wrong)}"


REPOSITORY_PATH = re.compile(r"`((?:vpnlab|scripts|deploy|docs|notebooks|tests|captures)/[\w./-]*)")
"""A file or folder of this repository written in inline code (up to a ``:line`` or a space)."""
PACKAGE_PATH = re.compile(r"`((?:cli|core|course|fast|grader|instruments|lab|shell|wire)/[\w./-]*)")
"""A module or folder of the package, as pages write them (``shell/tunnel.py``, ``wire/esp``)."""


def _exists(path: Path) -> bool:
    """A file or folder, a module without its ``.py``, or a module's name (``core/pool.Pool``)."""
    if path.exists() or path.with_name(path.name + ".py").exists():
        return True
    module, _, names = path.name.partition(".")
    source = path.with_name(module + ".py")
    if not names or not source.is_file() or REPO / "vpnlab" not in source.parents:
        return False
    dotted = ".".join(source.relative_to(REPO).with_suffix("").parts)
    found: object = importlib.import_module(dotted)
    for name in names.removesuffix("()").split("."):
        if not hasattr(found, name):
            return False
        found = getattr(found, name)
    return True


def _outputs() -> list[Path]:
    """The folders git ignores (``notebooks/work/``, ``build/``): what the tools write, which a
    page names as where to look, and which a fresh clone does not have yet."""
    folders = []
    for ignore in [REPO / ".gitignore", *REPO.glob("*/.gitignore")]:
        for line in ignore.read_text().splitlines():
            if line.endswith("/") and not line.startswith("#") and "*" not in line:
                folders.append(ignore.parent / line.strip("/"))
    return folders


def test_every_file_a_page_names_exists():
    """A page that names ``vpnlab/shell/tunnel.py``, ``wire/esp``, ``core/pool.Pool`` or
    ``scripts/bench.sh`` names a real one (after a file or a name moved, the pages that still
    name it are found here); ``...`` in a path makes it a pattern, and a folder git ignores
    is an output the tools make."""
    named = {
        (page.name, REPO / path)
        for page in PAGES
        for path in REPOSITORY_PATH.findall(page.read_text())
        if "..." not in path
    } | {
        (page.name, REPO / "vpnlab" / path)
        for page in PAGES
        for path in PACKAGE_PATH.findall(page.read_text())
        if "..." not in path
    }
    assert len(named) > 100, len(named)
    outputs = _outputs()
    missing = sorted(
        f"{page}: {path.relative_to(REPO)}"
        for page, path in named
        if not _exists(path) and not any(path.is_relative_to(folder) for folder in outputs)
    )
    assert not missing, missing


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["lab", "upp"], "vpnlab lab has no sub-command 'upp'"),
        (["lab", "up", "--ciper", "esp-null"], "vpnlab lab up has no option --ciper"),
        (["lab", "up", "--cipher", "rot13"], "vpnlab lab up --cipher: 'rot13' is not one of"),
        (["bench", "--runs", "2", "--bogus"], "vpnlab bench has no option --bogus"),
        (["nosuch"], "vpnlab has no sub-command 'nosuch'"),
    ],
)
def test_the_check_refuses_what_the_parser_refuses(argv, said):
    """The walk itself can fail: a misspelt verb, option or value is found, as argparse would."""
    parser = build_parser()
    found = list(problems(argv, parser))
    assert any(said in problem for problem in found), found
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
