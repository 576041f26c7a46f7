"""The package stands in floors: every import points down, and the folder says the layer.

Read from the source with ``ast`` (nothing is imported), so an import inside a function counts
as much as one at the top of a module. The floors, from the top:

    cli                         the ``vpnlab`` command line, and nothing else parses one
    grader                      the hub's grader service, its store and report
    course                      the notebooks' helpers, the benchmark, the experiments
    instruments                 capture, decode, FTP, who-am-I
    lab                         the namespace lab
    daemons                     client.py, server.py, and the fast data path (fast/)
    shell                       tun, tap, routing, tunnel, transport, report, keys, peers, xfrm
    wire                        the wire formats
    core                        the sans-IO protocol

An import may point to its own floor or below, never up; nothing may import in a circle; the
two pure floors (core, wire) import no I/O module; the simple path never imports fast/; the
daemons never import pyroute2 (their netlink is ``shell/rtnetlink.py``: 14 MiB less each).
Also: no function over 60 lines and no block of six lines written twice. A module ends where
its idea ends: there is no line limit for modules (one used to cut a docstring to fit).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vpnlab"

FLOORS = [  # (floor, the modules on it: a package prefix or a module), top first
    ("cli", ("vpnlab.cli", "vpnlab.__main__")),
    ("grader", ("vpnlab.grader",)),
    ("course", ("vpnlab.course",)),
    ("instruments", ("vpnlab.instruments",)),
    ("lab", ("vpnlab.lab",)),
    ("daemons", ("vpnlab.shell.client", "vpnlab.shell.server", "vpnlab.fast")),
    (
        "shell",
        (
            "vpnlab.shell.tun",
            "vpnlab.shell.tap",
            "vpnlab.shell.rtnetlink",
            "vpnlab.shell.routing",
            "vpnlab.shell.tunnel",
            "vpnlab.shell.transport",
            "vpnlab.shell.report",
            "vpnlab.shell.keys",
            "vpnlab.shell.peers",
            "vpnlab.shell.xfrm",
        ),
    ),
    ("wire", ("vpnlab.wire",)),
    ("core", ("vpnlab.core", "vpnlab")),
]
PURE_FLOORS = ("core", "wire")
IO_MODULES = {"socket", "select", "selectors", "os", "subprocess", "time", "threading", "fcntl"}
SIMPLE_PATH = (
    "vpnlab.shell.tunnel",
    "vpnlab.shell.client",
    "vpnlab.shell.server",
    "vpnlab.shell.tap",
)
MAX_FUNCTION_LINES = 60
LONG_FUNCTIONS: dict[str, str] = {}
"""``module:function`` -> why it may be longer than MAX_FUNCTION_LINES (none today)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def floor_of(module: str) -> int:
    """The floor's index, 0 at the top; the longest matching prefix wins."""
    best, index = "", None
    for i, (_, members) in enumerate(FLOORS):
        for member in members:
            if (module == member or module.startswith(member + ".")) and len(member) > len(best):
                best, index = member, i
    assert index is not None, f"{module} is on no floor: add it to FLOORS"
    return index


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> list[tuple[str, int]]:
    """Every module ``module`` imports (``from x import y`` counts x.y when y is a module)."""
    found = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            found.append((target, node.lineno))
            found += [
                (f"{target}.{alias.name}", node.lineno)
                for alias in node.names
                if f"{target}.{alias.name}" in MODULES
            ]
    return found


def internal_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module in MODULES:
        for target, _ in imports(module):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(MODULES):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_on_a_floor():
    for module in MODULES:
        floor_of(module)


def test_no_import_cycles_not_even_inside_functions():
    assert cycles(internal_graph()) == []


def test_imports_point_down_only():
    upward = [
        f"{module}:{line} imports {target} ({FLOORS[floor_of(target)][0]} is above "
        f"{FLOORS[floor_of(module)][0]})"
        for module in MODULES
        for target, line in imports(module)
        if target in MODULES and floor_of(target) < floor_of(module)
    ]
    assert upward == []


@pytest.mark.parametrize("module", [m for m in MODULES if FLOORS[floor_of(m)][0] in PURE_FLOORS])
def test_the_pure_floors_do_no_io(module):
    bad = [
        f"{module}:{line} imports {target}"
        for target, line in imports(module)
        if target.split(".")[0] in IO_MODULES
        or (target.startswith("vpnlab.") and FLOORS[floor_of(target)][0] not in PURE_FLOORS)
    ]
    assert bad == []


def test_the_simple_path_never_imports_the_fast_one():
    bad = [
        f"{module}:{line} imports {target}"
        for module in SIMPLE_PATH
        for target, line in imports(module)
        if target == "vpnlab.fast" or target.startswith("vpnlab.fast.")
    ]
    assert bad == []


DAEMON_COMMAND = "vpnlab.cli.daemons"
"""The one command module ``python -m vpnlab server`` (or ``client``) imports (cli/__init__.py:
COMMANDS; its ``vpnlab.lab.rootless`` is for other commands, given by an ordinary user)."""


def daemon_modules() -> set[str]:
    """Every vpnlab module a daemon can import, inside functions too."""
    graph, found = internal_graph(), {DAEMON_COMMAND}
    todo = [DAEMON_COMMAND]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in found:
                found.add(target)
                todo.append(target)
    return found


def test_the_daemons_never_import_pyroute2():
    """Read from the source: no daemon module imports it, not even inside a function."""
    modules = daemon_modules()
    assert "vpnlab.shell.rtnetlink" in modules  # the graph is the daemons' own
    bad = [
        f"{module}:{line} imports {target}"
        for module in sorted(modules)
        for target, line in imports(module)
        if target.split(".")[0] == "pyroute2"
    ]
    assert bad == []


def test_importing_the_daemons_loads_no_pyroute2():
    """Imported for real, in a fresh interpreter: ``sys.modules`` has no pyroute2 (nor a module
    that a daemon's command loads only for other commands: the lab, the course)."""
    code = (
        "import sys, vpnlab.cli.daemons, vpnlab.shell.client, vpnlab.shell.server, "
        "vpnlab.fast.datapath\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('pyroute2')}"
        " | {m for m in sys.modules if m.startswith(('vpnlab.lab', 'vpnlab.course'))}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_python_is_started_only_through_python_argv():
    """Every ``[sys.executable, ...]`` the package starts is ``lab.nodes.python_argv``'s, with
    ``-P``: none imports from the folder it was started in (test_nodes: a planted package)."""
    bad = []
    for path in sorted(set(PACKAGE.rglob("*.py")) - {PACKAGE / "lab" / "nodes.py"}):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.List) and node.elts:
                first = node.elts[0]
                if isinstance(first, ast.Attribute) and ast.unparse(first) == "sys.executable":
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert bad == [], "start Python with lab.nodes.python_argv"


def test_argparse_only_in_cli():
    bad = [
        f"{module}:{line}"
        for module in MODULES
        for target, line in imports(module)
        if target == "argparse" and not module.startswith("vpnlab.cli")
    ]
    assert bad == []


def test_no_function_over_60_lines():
    long = {}
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                key = f"{module}:{node.name}"
                if lines > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS:
                    long[key] = lines
    assert long == {}


# --- repeated code ------------------------------------------------------------------------------

BLOCK_LINES = 6
SKIP = re.compile(r"^(#|from |import |@|\)|\]|\}|\),?$|\]\,?$|\"\"\"$|else:$|try:$|finally:$)")
ARGPARSE = re.compile(r"add_argument|add_parser|set_defaults|add_subparsers")


def significant_lines(path: Path) -> list[tuple[int, str]]:
    """Lines that carry code: not blank, not a comment, an import, a docstring or punctuation."""
    tree = TREES[module_name(path)]
    passed_over: set[int] = set()  # docstrings and whole import statements
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            passed_over.update(range(node.lineno, node.end_lineno + 1))
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                passed_over.update(range(body[0].lineno, body[0].end_lineno + 1))
    out = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = " ".join(raw.split())
        if line and number not in passed_over and not SKIP.match(line):
            out.append((number, line))
    return out


def repeated_blocks() -> list[str]:
    seen: dict[tuple[str, ...], tuple[str, int]] = {}
    found = []
    for name, path in MODULES.items():
        lines = significant_lines(path)
        last_end: dict[tuple[str, ...], int] = {}
        for i in range(len(lines) - BLOCK_LINES + 1):
            window = tuple(text for _, text in lines[i : i + BLOCK_LINES])
            if sum(bool(ARGPARSE.search(text)) for text in window) > 1:
                continue  # argparse boilerplate: one option after another
            where = (name, lines[i][0])
            first = seen.setdefault(window, where)
            if first is not where and last_end.get(window, 0) < lines[i][0]:
                found.append(f"{name}:{lines[i][0]} repeats {first[0]}:{first[1]}")
                last_end[window] = lines[i + BLOCK_LINES - 1][0]
    return found


def test_no_block_of_six_lines_written_twice():
    assert repeated_blocks() == []


CONFLICT_MARKER = re.compile(r"^(# )?(<{7}|>{7}) ", re.MULTILINE)
"""A merge's conflict markers, also inside a notebook's markdown comment (jupytext's ``# ``),
where neither Python nor ruff sees them: one stood in notebook 12 for a session."""


def test_no_merge_conflict_markers_left_in_the_sources():
    root = Path(__file__).resolve().parents[2]
    folders = ("vpnlab", "tests", "docs", "notebooks", "scripts", "deploy")
    files = [root / "README.md", root / "DESIGN.md"]
    for folder in folders:
        files += (root / folder).rglob("*.*")
    text_suffixes = {".py", ".md", ".ipynb", ".sh", ".toml", ".yml", ".yaml", ".json", ".cfg"}
    marked = [
        str(path.relative_to(root))
        for path in files
        if path.is_file()
        and path.suffix in text_suffixes
        and CONFLICT_MARKER.search(path.read_text(errors="replace"))
    ]
    assert marked == []
