"""The benchmark's smoke test: it runs, in a lab of its own, and produces numbers (no targets)."""

from __future__ import annotations

import json
import shutil

import pytest

from vpnlab.course.bench import format_table, run_bench

pytestmark = pytest.mark.lab


def test_bench_quick_runs_and_produces_numbers(prefix, tmp_path):
    cases = ["routed", "vpnlab esp-aes-gcm simple", "vpnlab esp-aes-gcm fast"]
    if shutil.which("openvpn"):
        cases.insert(1, "openvpn")
    lines: list[str] = []
    document = run_bench(cases, 1, 1.0, tmp_path, prefix=prefix, progress=lines.append)
    assert [row["case"] for row in document["summary"]] == cases
    assert all(row["mbps"] > 0 for row in document["summary"]), document["runs"]
    assert (tmp_path / "bench.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["runs"]) == len(cases)
    assert any("round 1" in line for line in lines)  # progress was shown
    assert "x OpenVPN" in format_table(document)
