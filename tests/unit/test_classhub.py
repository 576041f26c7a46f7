"""The class benchmark's arithmetic and report (vpnlab/course/classhub.py): percentiles, the
CPU per student with the hub's share, and every failure printed whole. The benchmark itself
(real users, a real hub) is run by hand: ``vpnlab bench --class-hub`` (docs/performance.md)."""

from __future__ import annotations

import os

from vpnlab.course.classhub import format_class_hub, percentiles, user_cpu_s, user_processes


def student(name: str, spawned: float | None, verified: float | None, failure: str | None):
    return {
        "name": name,
        "spawned_s": spawned,
        "verified_s": verified,
        "pss_idle_mib": 100.0 if spawned else None,
        "pss_lab_mib": 160.0 + (verified or 0) if verified else None,
        "cpu_s": 3.0,
        "failure": failure,
    }


def test_percentiles_p50_p95_max():
    values = [float(v) for v in range(1, 21)]  # 1 .. 20
    assert percentiles(values) == {"p50": 10.5, "p95": 19.0, "max": 20.0}
    assert percentiles([]) is None


def test_the_report_counts_cpu_with_the_hub_share_and_shows_failures_whole():
    failure = "cell: ClassHubError: lab up failed: the VPN client on r1 exited after 0.4 s\nlog"
    document = {
        "date": "2026-12-04 17:00 UTC",
        "students": 3,
        "stagger_s": 60.0,
        "cores": 2,
        "hub_cpu_s": 1.5,
        "wall_s": 120.0,
        "load_before": (1.0, 1.0, 1.0),
        "load_during": [4.0, 6.5],
        "load_after": (2.0, 2.0, 2.0),
        "results": [
            student("a", 10.0, 20.0, None),
            student("b", 12.0, 30.0, None),
            student("c", 11.0, None, failure),
        ],
    }
    text = format_class_hub(document)
    assert "2/3 labs verified, 1 failures" in text
    assert "CPU per student 3.50 s (3.00 s the student's processes + 0.50 s hub" in text
    assert "| login to lab verified (s) | 25.0 | 30.0 | 30.0 |" in text
    assert f"failure of c:\n{failure}" in text  # whole, with its log lines
    assert "memory holds 155 students" in text  # 32 GiB * 0.9 / 190 MiB = 155.2
    assert "CPU lets 137 log in" in text  # 8 cores * 60 s / 3.5 CPU s
    assert "during 4.0-6.5" in text


def test_cpu_and_processes_of_a_user_are_read_from_proc():
    assert os.getpid() in user_processes(os.getuid())
    assert user_cpu_s(os.getuid()) > 0
