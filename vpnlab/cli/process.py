"""How a ``vpnlab`` command runs as a process: the PATH its tools are found on, and SIGTERM.

Init: some of the lab's tools (``nft``, ``sysctl``, ``conntrack``) live in /usr/sbin only,
which an ordinary user's PATH on Debian lacks: :func:`with_sbin` adds /usr/sbin and /sbin.

CleanUp: a command that builds something (a lab, a benchmark's lab, a capture) removes it again
when it is stopped. Ctrl-C raises KeyboardInterrupt and the ``finally`` blocks run; :func:`stop_on`
makes SIGTERM (``kill PID``, a CI's timeout, JupyterHub stopping a server) do the same, and the
command exits 128 + the signal's number, as a shell reports a process killed by it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

SBIN = ("/usr/sbin", "/sbin")
"""Where Debian keeps the tools meant for root (nft, sysctl, conntrack)."""
RESEND_S = 0.01
"""A stop Python dropped (:func:`stop_on`) is sent again after this long."""


def with_sbin(path: str) -> str:
    """``path`` (a PATH value) with the :data:`SBIN` folders it lacks added at its end."""
    folders = [folder for folder in path.split(os.pathsep) if folder]
    return os.pathsep.join(folders + [folder for folder in SBIN if folder not in folders])


class Stopped(KeyboardInterrupt):
    """A signal asked the command to stop: handled as Ctrl-C, exit status 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on(*signums: int) -> Iterator[None]:
    """CleanUp: within the block, each of ``signums`` raises :class:`Stopped` in this process.

    Python drops an exception raised where nothing can catch it (a fork handler of the
    logging module, a ``__del__``): a signal that lands there is sent again, so it is handled
    a moment later instead of being lost. A child forked inside the block (not exec'd: exec
    resets the handler by itself) keeps the signal's default action, so a SIGTERM sent to it
    ends it as before. The previous handlers are put back on the way out.
    """
    owner = os.getpid()

    def stop(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked child: die of the signal, as without us
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Stopped(signum)

    def again(unraisable: sys.UnraisableHookArgs) -> None:
        stopped = unraisable.exc_value
        if isinstance(stopped, Stopped) and os.getpid() == owner:
            # raised where Python drops it: sent again from a thread, handled after this hook
            threading.Timer(RESEND_S, os.kill, (owner, stopped.signum)).start()
        else:
            hook(unraisable)

    hook = sys.unraisablehook
    previous = {signum: signal.signal(signum, stop) for signum in signums}
    sys.unraisablehook = again
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)
