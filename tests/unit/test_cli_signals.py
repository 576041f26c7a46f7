"""vpnlab/cli/process.py: the PATH of the tools, and SIGTERM turned into a Ctrl-C (Stopped)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vpnlab.cli.process import Stopped, stop_on, with_sbin


def test_with_sbin_adds_the_sbin_folders_an_ordinary_path_lacks():
    assert (
        with_sbin("/usr/local/bin:/usr/bin:/bin") == "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
    )
    assert with_sbin("/usr/sbin:/usr/bin:/sbin:/bin") == "/usr/sbin:/usr/bin:/sbin:/bin"
    assert with_sbin("") == "/usr/sbin:/sbin"


def test_the_command_finds_sbin_tools_with_an_ordinary_users_path(tmp_path):
    """Run as main() is, with Debian's PATH for a user: afterwards sysctl is found."""
    probe = (
        "import shutil, sys\n"
        "from vpnlab.cli import main\n"
        "print(shutil.which('sysctl'))\n"
        f"main(['capture', 'decode', '{tmp_path / 'none.pcapng'}'])\n"
        "print(shutil.which('sysctl'))\n"
    )
    env = {**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    before, after = done.stdout.split()
    assert before == "None", "the ordinary PATH finds sysctl: nothing to prove"
    assert after in ("/usr/sbin/sysctl", "/sbin/sysctl"), done.stderr


def test_sigterm_within_stop_on_raises_stopped_and_the_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as raised, stop_on(signal.SIGTERM):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # never reached: the handler raises at once
    assert raised.value.signum == signal.SIGTERM
    assert isinstance(raised.value, KeyboardInterrupt)  # the same clean-up paths as Ctrl-C
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_forked_child_dies_of_sigterm_as_without_stop_on():
    with stop_on(signal.SIGTERM):
        pid = os.fork()
        if pid == 0:  # the child: waits to be killed
            time.sleep(10)
            os._exit(0)
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


class SignalledOnDelete:
    """Sends SIGTERM to its process when deleted, and gives the handler its chance in there:
    an exception of ``__del__`` is dropped by Python, as in a fork handler of logging."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # the handler runs in this loop, and its Stopped is dropped
            pass


def test_a_sigterm_python_drops_is_handled_at_the_next_step():
    before = sys.unraisablehook
    with pytest.raises(Stopped), stop_on(signal.SIGTERM):
        SignalledOnDelete()  # deleted at once
        time.sleep(5)  # never reached: the signal came again, outside __del__
    assert sys.unraisablehook is before
