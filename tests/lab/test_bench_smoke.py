"""The benchmark's smoke test: it runs, in a lab of its own, and produces numbers (no targets)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vpnlab.course.bench import HOPS, run_bench
from vpnlab.course.bench_report import format_table
from vpnlab.lab.state import prefix_namespaces

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
    for run in saved["runs"]:  # the bench's lab receives as NICs do: the fast path gets batches
        batches = run.get("gro_batches", {})
        assert set(batches) == ({"client", "server"} if "vpnlab" in run["case"] else set()), run
        if run["case"] == "vpnlab esp-aes-gcm simple":  # its socket asks for no UDP GRO
            assert batches == {"client": 0, "server": 0}, run
        if run["case"] == "vpnlab esp-aes-gcm fast":  # r1 -> web: the client's bursts
            assert batches["server"] > 0, run
    assert any("round 1" in line for line in lines)  # progress was shown
    assert "x OpenVPN" in format_table(document)
    for row in document["summary"]:  # CPU us per packet: the vpnlab cases have both daemons
        per_packet = row["cpu_us_per_packet"]
        assert set(per_packet) == ({"client", "server"} if "vpnlab" in row["case"] else set())
        assert all(value > 0 for value in per_packet.values()), row
        assert row["rtt_ms"] > 0 and row["rtt_load_ms"] > 0, row  # idle and under load
        hops = row["idle_hops_us"]  # where the idle ping waits, per tunnel daemon (tcpdump)
        assert list(hops) == ([] if row["case"] == "routed" else list(HOPS)), row
        assert all(value >= 0 for value in hops.values()), row
    table = format_table(document).splitlines()
    assert table[0].endswith("| CPU % (client / server) | CPU us/packet (client / server) |")
    assert "| ping RTT ms idle / loaded |" in table[0]
    assert "| case | client out | server in | server out | client in | sum |" in table
    for row, line in zip(document["summary"], table[2:], strict=False):
        last = line.split("|")[-2].strip()
        assert (last != "-") == ("vpnlab" in row["case"]), line  # "client / server" or "-"


def test_bench_download_measures_web_to_r1(prefix, tmp_path):
    """``--download``: iperf3 -R, web's data to r1 through both daemons."""
    lines: list[str] = []
    cases = ["vpnlab esp-aes-gcm fast"]
    document = run_bench(cases, 1, 1.0, tmp_path, prefix, progress=lines.append, download=True)
    assert document["settings"]["path"] == "web -> r1"
    (row,) = document["summary"]
    assert row["mbps"] > 0 and set(row["cpu_us_per_packet"]) == {"client", "server"}, row
    assert format_table(document).splitlines()[-1].endswith("iperf3 web -> r1")


@pytest.mark.parametrize("datapath", ["fast", "simple"])
def test_bench_footprint_prints_the_table_and_leaves_nothing(prefix, datapath):
    done = subprocess.run(
        [sys.executable, "-m", "vpnlab", "bench", "--footprint", "--idle-seconds", "2"]
        + ["--prefix", prefix, "--datapath", datapath],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = {
        cells[1].strip(): float(cells[2])
        for cells in (line.split("|") for line in done.stdout.splitlines())
        if len(cells) == 5 and cells[2].strip().replace(".", "").isdigit()
    }
    assert rows[f"lab up (VPN, esp-aes-gcm, {datapath} path)"] > 0 and rows["lab down"] >= 0, rows
    rss = {what: value for what, value in rows.items() if what.startswith("RSS ")}
    assert {"RSS server", "RSS client-r1", "RSS whoami"} <= set(rss), rows
    assert any(what.startswith("RSS whole lab") for what in rss), rows
    assert all(value > 1 for value in rss.values()), rows  # MiB
    assert rows["CPU of the idle lab over 2 s"] >= 0, rows
    assert prefix_namespaces(prefix) == []


def test_bench_clients_connects_a_small_class_and_leaves_nothing(prefix):
    done = subprocess.run(
        [sys.executable, "-m", "vpnlab", "bench", "--clients", "4", "--idle-seconds", "1"]
        + ["--prefix", prefix],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    phases = {
        cells[1].strip(): cells[2:]
        for cells in (line.split("|") for line in done.stdout.splitlines())
        if len(cells) == 8
    }
    for phase in ("one after another", "all at once"):
        connected, ipv6_only, handshake, answered, ping = (c.strip() for c in phases[phase][:5])
        assert connected == "4/4" and answered == "4/4" and ipv6_only == "0", done.stdout
        assert all(float(v) > 0 for v in handshake.split(" / ") + ping.split(" / ")), done.stdout
    assert "KiB per client" in done.stdout and "idle (keepalives)" in done.stdout
    assert "the server's kernel dropped 0 datagrams (full socket buffer) and 0 packets" in (
        done.stdout
    )
    assert prefix_namespaces(prefix) == []


def test_bench_flood_runs_the_three_phases_with_the_ping_by_window(prefix, tmp_path):
    """A small ``bench --flood`` (4 clients, floods of 8 s): every phase connects them all and
    sums up r1's ping over the whole phase, while the clients connect and while only the
    flood runs (issue 27 item 6)."""
    done = subprocess.run(
        [sys.executable, "-m", "vpnlab", "bench", "--flood", "--clients", "4"]
        + ["--flood-seconds", "8", "--prefix", prefix, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    document = json.loads((tmp_path / "flood.json").read_text())
    for phase in ("baseline", "junk", "mac1"):
        result = document[phase]
        windows = (result["ping_connects"], result["ping_flood_only"])
        assert result["clients"]["connected"] == 4, result
        assert result["clients"]["answered"] == 4, result
        assert set(result["kernel_drops"]) == {"socket", "tun_ring"}, result
        assert sum(w["sent"] for w in windows) == result["ping"]["sent"] > 0, result
        assert all(w["sent"] > 0 and w["rtt_ms"] is not None for w in windows), result
    assert document["junk"]["drops"]["bad mac1"] > 0
    assert document["mac1"]["drops"]["under load: cookie reply sent"] > 0
    assert prefix_namespaces(prefix) == []


def test_bench_ab_alternates_two_trees_and_leaves_nothing(prefix, tmp_path):
    """``scripts/bench_ab.py``: two trees (this one and a copy), two rounds of 1 s, the order
    turned in the second; a row per tree with numbers, the rank test of their 2 x 2 runs."""
    root = Path(__file__).resolve().parents[2]
    copy = tmp_path / "copy"
    shutil.copytree(root / "vpnlab", copy / "vpnlab", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "bench_ab.py"), str(root), str(copy)]
        + ["--rounds", "2", "--seconds", "1", "--prefix", prefix],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    turns = [line.split(": ")[1] for line in done.stderr.splitlines() if line.startswith("[ab]")]
    assert turns == [str(root), str(copy), str(copy), str(root)], done.stderr
    rows = {
        cells[1].strip(): cells[2].strip()
        for cells in (line.split("|") for line in done.stdout.splitlines())
        if len(cells) == 6 and cells[1].strip() in (str(root), str(copy))
    }
    assert set(rows) == {str(root), str(copy)}, done.stdout
    assert all(float(mbps.split("(")[1].rstrip(")").replace(",", "")) > 0 for mbps in rows.values())
    assert "Mann-Whitney U = " in done.stdout and " of 4 pairs" in done.stdout
    assert prefix_namespaces(prefix) == []
