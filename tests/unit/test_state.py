"""The lab's state (vpnlab/lab/state.py) without root: which prefixes are allowed, and one
command at a time changing a lab."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vpnlab.core.errors import LabError
from vpnlab.lab import state


@pytest.mark.parametrize("bad", ["", "vpnlab", "Vpn-", "a-b-", "x" * 30 + "-", "../x-"])
def test_check_prefix_rejects(bad):
    with pytest.raises(LabError, match="bad prefix"):
        state.check_prefix(bad)


# --- one change at a time (state.changing): real processes, real locks ------------------------

HOLD = """
import sys, time
from vpnlab.lab import state
with state.changing(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def labs(tmp_path, monkeypatch):
    """A state folder of our own (``VPNLAB_STATE_DIR``), inherited by the processes we start."""
    monkeypatch.setenv("VPNLAB_STATE_DIR", str(tmp_path))
    return tmp_path


def hold(prefix: str, seconds: float) -> subprocess.Popen[str]:
    """Another process changing lab ``prefix`` for ``seconds``, once it says so."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, prefix, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_second_changer_waits_for_the_first_and_says_for_whom(labs, capfd):
    holder = hold("vwait-", 1.0)
    start = time.monotonic()
    with state.changing("vwait-"):
        waited = time.monotonic() - start
        assert (labs / ".vwait-lock").read_text() == f"{os.getpid()}\n"
    holder.wait(timeout=10)
    assert waited > 0.5
    err = capfd.readouterr().err
    assert err.count("waiting for another vpnlab command") == 1
    assert f"(PID {holder.pid})" in err
    assert list(labs.iterdir()) == []  # no lab was made: its lock went too


def test_a_changer_gives_up_after_its_wait(labs, monkeypatch):
    monkeypatch.setattr(state, "CHANGE_WAIT_S", 0.3)
    holder = hold("vlong-", 3.0)
    try:
        with (
            pytest.raises(LabError, match="has been changing it for 0 s; let it finish"),
            state.changing("vlong-"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_changing_is_reentrant_and_keeps_its_lock_while_the_lab_is_there(labs):
    with state.changing("vkeep-"), state.changing("vkeep-"):  # up starts the VPN within
        (labs / "vkeep-").mkdir()  # the lab's state folder: it is up
    assert (labs / ".vkeep-lock").exists()
    holder = hold("vkeep-", 0)  # and the next changer takes it at once
    holder.wait(timeout=10)
    (labs / "vkeep-").rmdir()
    with state.changing("vkeep-"):  # the lab gone (down): its lock goes with it
        pass
    assert list(labs.iterdir()) == []


def test_a_child_the_changer_forked_does_not_hold_the_lab(labs):
    """pyroute2 forks while building a namespace: its child outliving the change must not
    keep the next command waiting (a POSIX lock is its process's own)."""
    with state.changing("vfork-"):
        (labs / "vfork-").mkdir()
        child = os.fork()
        if child == 0:
            time.sleep(3)
            os._exit(0)
    try:
        start = time.monotonic()
        hold("vfork-", 0).wait(timeout=10)
        assert time.monotonic() - start < 2.5
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
