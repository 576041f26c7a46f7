"""scripts/netns-lab.sh as a user runs it: output, progress and every ``vpnlab lab`` verb.

Progress lines (``[vpnlab] ...``) go to stderr, bold only when stderr is a terminal, so that
``scripts/netns-lab.sh exec r1 ip route > routes.txt`` holds the routes and nothing else. Every
verb of ``vpnlab lab`` works through the script (``stop-vpn``, then the daemons by hand as the
README shows them, then ``start-vpn``); a verb vpnlab does not know is one line and exit 2.

One lab for the whole module, built by the script itself under a fresh prefix (VPNLAB_PREFIX)
and removed in ``finally``; the tests that stop and start its daemons come last.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vpnlab import lab
from vpnlab.lab import state

from .helpers import (
    CLIENT_GATEWAY,
    SERVER_IP,
    WEB_URL,
    built,
    wait_until,
)

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "scripts/netns-lab.sh"
ESC = "\x1b"


def script(prefix: str, *args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``bash scripts/netns-lab.sh ARGS...`` from the repository, as the README runs it."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(
        ["bash", SCRIPT, *args],
        cwd=ROOT,
        env={**os.environ, "VPNLAB_PREFIX": prefix},
        text=True,
        timeout=timeout,
        **kwargs,
    )


def assert_progress_only(stderr: str) -> None:
    """Every line is a plain ``[vpnlab] ...`` progress line: no escape codes (not a terminal)."""
    assert ESC not in stderr
    lines = stderr.splitlines()
    assert lines, "no progress lines at all"
    assert all(line.startswith("[vpnlab] ") for line in lines), lines


def vpn_pids(prefix: str) -> dict[str, int]:
    record = state.load(prefix)
    daemons = record.daemons if record else {}
    return {n: d.pid for n, d in daemons.items() if n == "server" or n.startswith("client-")}


@dataclass
class ScriptedLab:
    prefix: str
    up: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def scripted_lab() -> Iterator[ScriptedLab]:
    """``scripts/netns-lab.sh up`` (the default cipher), torn down and proven gone after."""

    def up(prefix: str) -> subprocess.CompletedProcess:
        done = script(prefix, "up")
        assert done.returncode == 0, done.stderr
        return done

    for prefix, done in built(up):
        yield ScriptedLab(prefix, done)


def test_up_progress_on_stderr_verify_and_summary_on_stdout(scripted_lab):
    up, prefix = scripted_lab.up, scripted_lab.prefix
    assert_progress_only(up.stderr)
    assert up.stderr.splitlines()[-1].startswith("[vpnlab] Lab: replacing any previous lab;")
    assert up.stderr.splitlines()[-1].endswith("; verifying")
    assert ESC not in up.stdout
    assert "[vpnlab]" not in up.stdout
    assert up.stdout.startswith("verify: all checks passed (vpn on)\n")
    assert f"The lab is up (namespaces {prefix}r1, {prefix}isp" in up.stdout
    # the summary's commands work as printed for this prefix
    assert f"sudo VPNLAB_PREFIX={prefix} {SCRIPT} stop-vpn" in up.stdout


def test_exec_into_a_file_holds_only_the_command_output(scripted_lab, tmp_path):
    prefix = scripted_lab.prefix
    routes = tmp_path / "routes.txt"
    with routes.open("w") as out:
        run = script(prefix, "exec", "r1", "ip", "route", stdout=out)
    assert run.returncode == 0, run.stderr
    direct = lab.exec_in(prefix, "r1", ["ip", "route"], capture_output=True, text=True)
    assert routes.read_text() == direct.stdout
    assert "dev tun0" in routes.read_text()  # SetRouting(1): 0/1 and 128/1 via tun0
    assert_progress_only(run.stderr)


def test_exec_passes_the_exit_status_on(scripted_lab):
    run = script(scripted_lab.prefix, "exec", "r1", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert run.returncode == 3
    assert run.stdout == "out\n"
    assert run.stderr.splitlines()[-1] == "err"


def test_progress_is_bold_only_on_a_terminal(scripted_lab):
    prefix = scripted_lab.prefix
    master, slave = pty.openpty()
    try:
        run = script(prefix, "status", stderr=slave)
        os.close(slave)
        slave = -1
        tty = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            tty += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert run.returncode == 0
    assert b"\x1b[1m[vpnlab]\x1b[0m Debian packages" in tty
    assert ESC not in run.stdout
    assert run.stdout.startswith(f"lab {prefix}: up")


def lab_verbs() -> list[str]:
    """The verbs ``vpnlab lab --help`` lists (hidden ones are not listed)."""
    vpnlab = ROOT / ".venv" / "bin" / "vpnlab"
    text = subprocess.run(
        [vpnlab, "lab", "--help"], capture_output=True, text=True, check=True
    ).stdout
    listed = text.split("positional arguments:")[1].split("options:")[0]
    return re.findall(r"^ {4}([a-z][a-z-]*)", listed, flags=re.M)


def test_usage_lists_every_lab_verb():
    run = script("unused-", "--help")
    assert run.returncode == 0
    verbs = lab_verbs()
    assert {"up", "down", "status", "exec", "verify", "start-vpn", "stop-vpn"} <= set(verbs)
    for verb in [*verbs, "notebook"]:  # "netns-lab.sh VERB", or "[up" (the default)
        assert re.search(rf"{SCRIPT} \[?{verb} ", run.stdout), verb


def test_unknown_verb_is_one_line_and_exit_2(scripted_lab):
    run = script(scripted_lab.prefix, "stpo-vpn")
    assert run.returncode == 2
    assert run.stdout == ""
    error, hint = run.stderr.splitlines()
    assert error == "[vpnlab] error: unknown command 'stpo-vpn'"
    assert "--help" in hint
    assert lab.status(scripted_lab.prefix)["vpn"], "the lab changed"


def test_a_known_verb_gets_vpnlabs_own_usage_error(scripted_lab):
    run = script(scripted_lab.prefix, "impair", "--bogus")
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if not line.startswith("[vpnlab] ")]
    assert len(errors) == 1 and "unrecognized arguments: --bogus" in errors[0], errors


@pytest.mark.parametrize("port", [[], ["abc"], ["0"], ["65536"]])
def test_a_notebook_port_that_is_none_is_one_line(scripted_lab, port):
    run = script(scripted_lab.prefix, "notebook", "--port", *port)
    errors = [line for line in run.stderr.splitlines() if "Debian packages" not in line]
    errors = [line for line in errors if "Python environment" not in line]
    assert run.returncode == 1 and errors == [
        f"[vpnlab] error: usage: {SCRIPT} notebook [--port N] (N: a port, 1 to 65535)"
    ], run.stderr


def test_stop_vpn_then_the_daemons_by_hand_then_start_vpn(scripted_lab):
    """The README's "by hand (after stop-vpn)", as written, in the lab of this module."""
    prefix = scripted_lab.prefix
    before = vpn_pids(prefix)
    assert set(before) == {"server", "client-r1"}

    stop = script(prefix, "stop-vpn")
    assert stop.returncode == 0, stop.stderr
    assert_progress_only(stop.stderr)
    assert all(not state.alive(pid) for pid in before.values())
    assert vpn_pids(prefix) == {}
    route = lab.exec_in(prefix, "r1", ["ip", "route"], capture_output=True, text=True).stdout
    assert f"default via {CLIENT_GATEWAY} dev eth0" in route
    assert "tun0" not in route
    listening = lab.exec_in(prefix, "r2", ["ss", "-Hlun"], capture_output=True, text=True)
    assert ":4500" not in listening.stdout, "port 4500 still taken after stop-vpn"

    # by hand, as the README shows it, each in its node; Ctrl-C (SIGINT) ends each
    v, keys = ".venv/bin/vpnlab", state.state_dir(prefix) / "identity"
    server_argv = ["exec", "r2", v, "server", "--listen", SERVER_IP]
    server_argv += ["--external-interface", "eth0", "--identity", str(keys)]
    client_argv = ["exec", "r1", v, "client", "--config", str(keys / "r1.conf")]
    env = {**os.environ, "VPNLAB_PREFIX": prefix}
    nft_file = Path("/run/vpnlab/server-nat.nft")  # the server's default --nft-file
    nft_was_there = nft_file.exists()
    daemons = []
    try:
        for argv in (server_argv, client_argv):
            daemons.append(
                subprocess.Popen(
                    ["bash", SCRIPT, *argv],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            )
            if argv is server_argv:
                assert wait_until(lambda: ":4500" in ss_udp(prefix), 10), "no server by hand"

        def whoami() -> str:
            run = script(prefix, "exec", "r1", "curl", "-s", "--max-time", "2", f"{WEB_URL}/")
            return run.stdout.strip()

        assert wait_until(lambda: whoami() == f"you are {SERVER_IP}", 15, 0.3), whoami()
    finally:
        for proc in reversed(daemons):  # the client first, then the server: CleanUp each
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        if not nft_was_there:
            nft_file.unlink(missing_ok=True)
    for proc in daemons:
        assert proc.returncode is not None

    start = script(prefix, "start-vpn")
    assert start.returncode == 0, start.stderr
    after = vpn_pids(prefix)
    assert set(after) == {"server", "client-r1"}
    assert all(state.alive(pid) for pid in after.values())
    verify = script(prefix, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("verify: all checks passed (vpn on)")


def ss_udp(prefix: str) -> str:
    return lab.exec_in(prefix, "r2", ["ss", "-Hlun"], capture_output=True, text=True).stdout


def test_two_runs_at_once_both_prove_the_lab(prefix):
    """The README's command in two terminals at once: each builds and verifies in one turn
    (``lab up --verify``), so neither's verify meets the other's lab half built or gone."""
    argv = ["bash", SCRIPT, "up"]
    env = {**os.environ, "VPNLAB_PREFIX": prefix}
    runs = [
        subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    ]
    time.sleep(1.0)
    runs.append(
        subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    )
    outputs = [run.communicate(timeout=180) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    for out, _ in outputs:
        assert out.startswith("verify: all checks passed (vpn on)\n")


def test_setup_waits_for_another_setup_of_the_checkout():
    """Two first runs in a fresh clone both made .venv, and one found it without pip: setup
    holds the checkout (flock(1) on its folder) while it works; here we hold it for a second."""
    folder = os.open(ROOT, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        waiting = subprocess.Popen(
            ["bash", SCRIPT, "status"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        assert waiting.poll() is None, "setup went on while another held the checkout"
    finally:
        os.close(folder)  # lets the waiting setup go
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert f"[vpnlab] Setup: waiting for another command's setup of {ROOT}" in err.splitlines()
