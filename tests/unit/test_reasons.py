"""The reasons are enums whose values are the labels the log and the status file always had."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from vpnlab.core.reasons import Close, Drop, State
from vpnlab.core.session import Counters
from vpnlab.wire.plain import PLAIN

from .helpers import CorePair, ipv4_packet


def test_a_reason_reads_as_its_label_everywhere():
    assert str(Drop.BAD_ICV) == f"{Drop.BAD_ICV}" == "bad icv"
    assert json.dumps({Drop.BAD_ICV: Close.PEER_LOST}) == '{"bad icv": "peer lost"}'
    assert Drop.TUN_WRITE.detail("No buffer space available") == (
        "tun write: No buffer space available"
    )
    assert State("connected") is State.CONNECTED


def test_the_status_file_keeps_its_strings():
    counters = Counters()
    counters.drops[Drop.SPOOFED_SOURCE] += 1
    counters.drops["spoofed source"] += 1  # the same key
    assert json.loads(json.dumps(counters.as_dict()))["drops"] == {"spoofed source": 2}


def test_a_core_reports_enum_reasons():
    pair = CorePair(PLAIN)
    pair.connect()
    events = pair.client.send_packets([ipv4_packet("10.8.0.99", "203.0.113.10")], pair.now)
    assert events == []
    pair.client_to_server()
    (dropped,) = pair.server_events[-1:]
    assert dropped.reason is Drop.SPOOFED_SOURCE
    pair.client.close(pair.now)
    pair.client_to_server()
    assert pair.server_events[-1].reason is Close.BYE
    assert pair.client.describe(pair.now)["close_reason"] is Close.CLOSED


# --- every drop is counted under a member ------------------------------------------------------
# mypy --strict checks the whole package (``Counters.drops`` is a Counter[DropLabel]); the modules
# outside core/ and wire/ are also read here, with ``ast``, for what a looser type lets through
# (a Counter[str] of the shell's own): a drop counted or passed on under a string ("tcp: idle",
# f"send: {why}") instead of ``Drop.X`` or ``Drop.X.detail(why)`` fails.

PACKAGE = Path(__file__).resolve().parents[2] / "vpnlab"
TYPED_STRICTLY = ("core", "wire")
LABEL = re.compile(r"(Drop|DropLabel)( \| None)?")


def mentions_drop(annotation: ast.expr | None) -> bool:
    """An annotation of one label: ``Drop``, ``DropLabel``, either or None."""
    return annotation is not None and bool(LABEL.fullmatch(ast.unparse(annotation)))


def drop_typed_attributes() -> set[str]:
    """Attributes the package annotates as a drop label (``self.error: Drop | None``)."""
    return {
        node.target.attr
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Attribute)
        and mentions_drop(node.annotation)
    }


def is_label(node: ast.expr, names: set[str], attributes: set[str]) -> bool:
    """``Drop.X``, ``Drop.X.detail(...)``, None, a choice of them, or a name or attribute
    that holds one."""
    if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "Drop":
        return node.attr in Drop.__members__
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "detail" and is_label(node.func.value, set(), set())
    if isinstance(node, ast.IfExp):
        return is_label(node.body, names, attributes) and is_label(node.orelse, names, attributes)
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Name):
        return node.id in names
    return isinstance(node, ast.Attribute) and node.attr in attributes


def label_takers(tree: ast.Module) -> dict[str, dict[str, int]]:
    """The module's functions with parameters annotated as a drop label: name -> {parameter:
    position in a call}."""
    takers: dict[str, dict[str, int]] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = [*fn.args.posonlyargs, *fn.args.args]
            skip = 1 if params and params[0].arg in ("self", "cls") else 0
            for position, param in enumerate(params[skip:]):
                if mentions_drop(param.annotation):
                    takers.setdefault(fn.name, {})[param.arg] = position
    return takers


def strings_counted_as_drops(source: str, where: str, attributes: set[str]) -> list[str]:
    """``where:line expression`` for every drop label in ``source`` that is not a member."""
    tree = ast.parse(source)
    takers = label_takers(tree)
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        names = {p.arg for p in fn.args.args if mentions_drop(p.annotation)}
        for node in ast.walk(fn):  # local names bound to a label (key = Drop.BUG.detail(...))
            if isinstance(node, ast.Assign) and is_label(node.value, set(), attributes):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(fn):
            given: list[ast.expr] = []
            if isinstance(node, ast.Subscript):
                counter = node.value
                name = getattr(counter, "id", None) or getattr(counter, "attr", None)
                given = [node.slice] if name == "drops" else []
            elif isinstance(node, ast.Call):
                callee = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                params = takers.get(callee, {})
                given = [node.args[i] for i in params.values() if i < len(node.args)]
                given += [k.value for k in node.keywords if k.arg in params]
            found += [
                f"{where}:{arg.lineno} {ast.unparse(arg)}"
                for arg in given
                if not is_label(arg, names, attributes)
            ]
    return sorted(set(found))  # a nested function is walked with its own and its outer one


def test_no_drop_is_counted_under_a_bare_string():
    attributes = drop_typed_attributes()
    found = [
        where
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in TYPED_STRICTLY
        for where in strings_counted_as_drops(
            path.read_text(), str(path.relative_to(PACKAGE.parent)), attributes
        )
    ]
    assert found == []


def test_the_check_sees_a_bare_string():
    source = (
        "def close(conn, reason: DropLabel | None):\n"
        "    drops[reason] += 1\n"
        "def read(exc):\n"
        "    drops[Drop.TUN_READ.detail(exc.strerror)] += 1\n"
        "    drops[f'tun read: {exc.strerror}'] += 1\n"
        "    close(None, Drop.TCP_IDLE)\n"
        "    close(None, 'tcp: idle')\n"
        "    close(None, Drop.NO_SUCH_REASON)\n"
    )
    assert strings_counted_as_drops(source, "loop.py", set()) == [
        "loop.py:5 f'tun read: {exc.strerror}'",
        "loop.py:7 'tcp: idle'",
        "loop.py:8 Drop.NO_SUCH_REASON",
    ]
