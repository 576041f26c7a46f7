"""What every sub-command's parser shares: the parser class (a usage error is one line), and
argument types (argparse ``type=``): a bad value is argparse's one-line usage error, before
anything runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn, TypeAlias, TypeVar

Number = TypeVar("Number", int, float)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and a hint), not the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"
"""What each command module's ``register`` is given: ``vpnlab``'s sub-commands (or a command's
verbs), whose parsers are :class:`Parser` too (argparse makes them of the parent's class)."""


def port_number(text: str) -> int:
    """``--port``'s type: a TCP or UDP port, 1 to 65535 (the socket would refuse any other
    with a traceback, "bind(): port must be 0-65535", or pick one at random for 0)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: 1 to 65535")
    return port


def bounded(kind: Callable[[str], Number], low: Number, high: Number) -> Callable[[str], Number]:
    """A number from ``low`` to ``high`` (both included): what keeps a benchmark or a flood
    bounded in count and time. Text that is no number is argparse's "invalid float value"."""

    def parse(text: str) -> Number:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low:g} to {high:g}")
        return value

    parse.__name__ = kind.__name__
    return parse
