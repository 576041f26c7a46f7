"""lab up's waits follow progress (vpnlab/lab/vpn.py ``wait_started``): a daemon that is alive
and still starting is waited for; one that exits or gives up fails at once, and the error
names it, the cause and its log's last lines. Real child processes, no lab (no root needed)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from vpnlab.cli.lab import RELAY_DEVICE
from vpnlab.core.errors import LabError
from vpnlab.course.notebook import CourseError, CourseLab
from vpnlab.lab import delay
from vpnlab.lab.vpn import wait_started


def start(tmp_path: Path, script: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "daemon.log"
    with open(log, "ab") as out:
        out.write(b"--- 12:00:00 an earlier start\nstate connecting -> closed  (old)\n")
        out.write(b"--- 12:00:05 this start\n")
        out.flush()
        proc = subprocess.Popen(["sh", "-c", script], stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def test_a_slow_start_is_waited_for_while_the_daemon_lives(tmp_path):
    ready = tmp_path / "ready"
    proc, log = start(tmp_path, f"echo starting; sleep 1.5; touch {ready}; sleep 30")
    try:
        began = time.monotonic()
        wait_started("the test daemon on r1", proc.pid, str(log), ready.exists, deadline_s=60)
        assert 1.4 < time.monotonic() - began < 30
    finally:
        proc.kill()
        proc.wait()


def test_a_daemon_that_exits_fails_at_once_with_its_log(tmp_path):
    proc, log = start(tmp_path, "echo 'vpnlab client: error: no such key file' ; exit 2")
    began = time.monotonic()
    with pytest.raises(LabError) as info:
        wait_started("the VPN client on r1", proc.pid, str(log), lambda: False)
    assert time.monotonic() - began < 10
    message = str(info.value)
    assert message.startswith("lab up failed: the VPN client on r1 exited after")
    assert "no such key file" in message and str(log) in message


def test_a_client_that_gave_up_is_not_waited_for(tmp_path):
    proc, log = start(tmp_path, "echo 'state connecting -> closed  server unreachable'; sleep 30")
    try:

        def gave_up() -> str | None:
            this_start = log.read_text().split("this start")[-1]
            return "did not connect" if "-> closed" in this_start else None

        time.sleep(0.5)
        with pytest.raises(LabError, match="client on r1 did not connect"):
            wait_started("the VPN client on r1", proc.pid, str(log), lambda: False, gave_up)
    finally:
        proc.kill()
        proc.wait()


def test_the_deadline_names_a_daemon_still_starting(tmp_path):
    proc, log = start(tmp_path, "echo 'still loading'; sleep 30")
    try:
        with pytest.raises(LabError, match="(?s)was still starting after 1 s .*still loading"):
            wait_started("who-am-I on web", proc.pid, str(log), lambda: False, deadline_s=1.0)
    finally:
        proc.kill()
        proc.wait()


def test_a_failed_lab_command_shows_the_notebook_its_whole_output():
    lab = CourseLab("test", "zz-")
    with pytest.raises(CourseError) as info:
        lab.vpnlab("lab", "status", "--no-such-option", show=False)
    message = str(info.value)
    assert "failed (exit 2)" in message
    assert "unrecognized arguments: --no-such-option" in message


def test_the_relay_default_device_is_the_delay_modules():
    assert RELAY_DEVICE == delay.DEVICE
