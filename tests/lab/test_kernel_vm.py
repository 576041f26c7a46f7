"""The Linux kernel's own ESP as the peer, in a VM: vpnlab's static keys against xfrm.

The host's kernel may have no ESP (the CI machine's has none, and loads no modules), so the
kernel under test is Debian's stock one, booted once for this module in QEMU (TCG) by
``vpnlab.lab.vm`` and joined to the lab's server node r2 by a TAP device:

    r2: vpnlab client or server, tun0 --- vmtap 203.0.113.129/30 === VM eth0 203.0.113.130
                                                                     xfrm states + policies,
                                                                     encap espinudp 4500

Both roles, both ciphers, one boot: the kernel is the server of vpnlab's static-key client,
then the client of vpnlab's static-key server, in esp-aes-gcm (rfc4106(gcm(aes))) and
esp-null (cipher_null + hmac(sha256), truncated to 128 bits), exactly as ``Algorithm.xfrm_args``
spells them from the key file. Each pair pings both ways, idles past the liveness timeout (the
kernel sends nothing while idle; ``--kernel-peer`` sends RFC 3948 NAT-keepalives), pings
again, and the kernel's /proc/net/xfrm_stat stays all zero.

Then the kernel as vpnlab's data plane, in the same boot: ``vpnlab client --kernel-dataplane``
in the VM against vpnlab's server in r2, and ``vpnlab server --kernel-dataplane`` in the VM
against a ``--kernel-peer`` client in r2 (its states and policies gone when it stops).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vpnlab.core.constants import LIVENESS_TIMEOUT_S, PORT
from vpnlab.core.errors import LabError
from vpnlab.course.dataplane import run_client, start_server, stop_client
from vpnlab.instruments.capture import TSHARK_TRUE
from vpnlab.lab.vm import HOST_ADDR, VM_ADDR, KernelVM
from vpnlab.lab.vm_image import build_image, distribution
from vpnlab.wire.crypto import algorithm
from vpnlab.wire.esp import load_static_keys

from .helpers import (
    CLIENT_TUNNEL_IP,
    SERVER,
    SERVER_TUNNEL_IP,
    WEB_IP,
    LabHandle,
    build_lab,
    wait_until,
)
from .test_esp_lab import tshark_rows

pytestmark = pytest.mark.lab

ENCAP_SOCKET = (
    "import signal, socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.setsockopt(socket.IPPROTO_UDP, 100, 2); "  # UDP_ENCAP = UDP_ENCAP_ESPINUDP (linux/udp.h)
    f"s.bind(('0.0.0.0', {PORT})); signal.pause()"
)
"""The kernel takes ESP in UDP only on a socket that asks for it (as strongSwan's charon does)."""


@pytest.fixture(scope="module")
def kernel_vm(tmp_path_factory) -> Iterator[tuple[LabHandle, KernelVM]]:
    """A lab, and Debian's kernel in a VM beside r2 with an ESP-in-UDP socket on port 4500."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("no qemu-system-x86_64: scripts/setup.sh test installs qemu-system-x86")
    started = time.monotonic()
    try:
        image = build_image()
    except LabError as exc:
        if distribution() != "debian":  # Ubuntu: the host kernel's ESP is tested instead
            pytest.skip(str(exc))
        raise
    print(f"\nVM image ready in {time.monotonic() - started:.1f} s: {image.kernel.parent.name}")
    labs = build_lab(vpn=False)
    handle = next(labs)
    try:
        with KernelVM(image, handle.ns(SERVER), tmp_path_factory.mktemp("kernel-vm")) as vm:
            print(f"VM booted in {vm.boot_s:.1f} s: Linux {vm.release}")
            vm.must(f'nohup python3 -c "{ENCAP_SOCKET}" > /tmp/encap.log 2>&1 &')
            listening = f"ss -Huln 'sport = :{PORT}' | grep -q {PORT}"
            vm.must(f"for i in $(seq 100); do {listening} && exit 0; sleep 0.2; done; exit 1")
            yield handle, vm
    finally:
        next(labs, None)  # down, then proven gone (after QEMU stopped)


def kernel_side(vm: KernelVM, keyfile: Path, kernel_is: str) -> None:
    """The VM's xfrm states and policies for the static keys in ``keyfile``.

    ``kernel_is`` "server": the kernel holds the server's tunnel address and receives with
    the client-to-server SA; "client": the other way round.
    """
    keys = load_static_keys(keyfile.read_text())
    transform = algorithm(keys.cipher)
    inbound, outbound = keys.client_to_server, keys.server_to_client
    local, remote = SERVER_TUNNEL_IP, CLIENT_TUNNEL_IP
    if kernel_is == "client":
        inbound, outbound = outbound, inbound
        local, remote = remote, local
    encap = f"encap espinudp {PORT} {PORT} 0.0.0.0"

    def state(src: str, dst: str, sa) -> str:
        algo = " ".join(f"'{arg}'" for arg in transform.xfrm_args(sa.key))
        head = f"ip xfrm state add src {src} dst {dst} proto esp spi {sa.spi}"
        return f"{head} mode tunnel {algo} {encap}"

    def policy(src: str, dst: str, direction: str, outer_src: str, outer_dst: str) -> str:
        template = f"tmpl src {outer_src} dst {outer_dst} proto esp mode tunnel"
        return f"ip xfrm policy add src {src}/32 dst {dst}/32 dir {direction} {template}"

    vm.must(
        "set -e\n"
        "ip xfrm state flush; ip xfrm policy flush\n"
        "ip link del kpeer 2>/dev/null || true\n"
        f"ip link add kpeer type dummy; ip addr add {local}/32 dev kpeer; ip link set kpeer up\n"
        f"ip route replace {remote}/32 dev eth0 src {local}\n"
        f"{state(HOST_ADDR, VM_ADDR, inbound)}\n{state(VM_ADDR, HOST_ADDR, outbound)}\n"
        f"{policy(local, remote, 'out', VM_ADDR, HOST_ADDR)}\n"
        f"{policy(remote, local, 'in', HOST_ADDR, VM_ADDR)}\n"
    )


def xfrm_errors(vm: KernelVM) -> dict[str, int]:
    """The kernel's non-zero xfrm error counters."""
    text = vm.must("cat /proc/net/xfrm_stat")
    counters = {name: int(value) for name, value in (line.split() for line in text.splitlines())}
    return {name: value for name, value in counters.items() if value}


def sa_packets(vm: KernelVM) -> list[int]:
    """Packets each xfrm state has protected or accepted (``ip -s xfrm state``)."""
    return [int(n) for n in re.findall(r"(\d+)\(packets\)", vm.must("ip -s xfrm state"))]


@pytest.mark.parametrize("role", ["client", "server"])
@pytest.mark.parametrize("cipher", ["esp-aes-gcm", "esp-null"])
def test_static_keys_against_the_kernels_esp_in_a_vm(kernel_vm, tmp_path, cipher, role):
    """vpnlab's static-key ``role`` in r2 and the VM kernel's xfrm exchange pings both ways,
    survive an idle spell past the liveness timeout, and the kernel counts no error."""
    handle, vm = kernel_vm
    keyfile = vm.work / f"keys-{cipher}-{role}.json"  # a fresh file: each run claims its own
    make = [sys.executable, "-m", "vpnlab", "keys", "static", str(keyfile), "--cipher", cipher]
    subprocess.run(make, check=True, capture_output=True)
    kernel_side(vm, keyfile, kernel_is="server" if role == "client" else "client")
    ours, theirs = (CLIENT_TUNNEL_IP, SERVER_TUNNEL_IP)[:: 1 if role == "client" else -1]
    argv = [sys.executable, "-m", "vpnlab", role, "--static-keys", str(keyfile), "--kernel-peer"]
    argv += ["--server", VM_ADDR] if role == "client" else []
    log = tmp_path / f"{role}.log"
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", handle.ns(SERVER), *argv],
        stdout=open(log, "wb"),  # noqa: SIM115 (the child keeps it)
        stderr=subprocess.STDOUT,
    )
    try:
        up = wait_until(
            lambda: handle.run(SERVER, "ip", "link", "show", "tun0").returncode == 0, 15
        )
        assert up is not None and daemon.poll() is None, log.read_text()
        # the kernel first (a static-key server learns its client from the first packet)
        ping = vm.run(f"ping -c 3 -i 0.3 -W 5 -I {theirs} {ours}", timeout_s=120)
        assert ping.returncode == 0, ping.output + log.read_text()
        ping = handle.run(SERVER, "ping", "-c", "3", "-i", "0.3", "-W", "5", theirs)
        assert ping.returncode == 0, ping.stdout + log.read_text()
        time.sleep(LIVENESS_TIMEOUT_S + 1)  # the kernel sends nothing while idle
        assert daemon.poll() is None, f"vpnlab gave up on an idle kernel peer: {log.read_text()}"
        ping = handle.run(SERVER, "ping", "-c", "2", "-i", "0.3", "-W", "5", theirs)
        assert ping.returncode == 0, ping.stdout + log.read_text()
        packets = sa_packets(vm)
        assert len(packets) == 2 and min(packets) >= 8, packets  # both SAs: 3 + 3 + 2 each way
        assert xfrm_errors(vm) == {}
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        vm.run("ip xfrm state flush; ip xfrm policy flush; ip link del kpeer")


# --- the kernel as the client's data plane (--kernel-dataplane) ---------------------------------


@contextmanager
def capture(namespace: str, interface: str, pcap: Path) -> Iterator[None]:
    """dumpcap on ``interface`` in ``namespace`` (UDP only) for the ``with`` block."""
    dumpcap = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            "dumpcap",
            "-i",
            interface,
            "-f",
            "udp",
            "-a",
            "duration:120",
            "-w",
            str(pcap),
        ],  # fmt: skip
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in dumpcap.stderr:  # it says so just before the socket is attached...
            if "Capturing on" in line:
                break
        time.sleep(0.5)  # ... so a moment more
        yield
    finally:
        time.sleep(0.3)
        dumpcap.send_signal(signal.SIGINT)  # closes the file cleanly
        dumpcap.wait(timeout=20)


def test_kernel_dataplane_client_in_the_vm(kernel_vm, tmp_path):
    """The client in the VM shakes hands in userspace (PSK), then the VM kernel's xfrm carries
    the data to vpnlab's server in r2 (userspace): pings to the server and, through its NAT, to
    web; tshark opens the kernel's datagrams with the rows the client exported; a rekey adds
    new states and the data goes on; CleanUp removes the states and policies.

    esp-aes-gcm only: the static-key tests cover esp-null's xfrm, and each run of Python in
    the VM (TCG) costs a minute or two.
    """
    cipher = "esp-aes-gcm"
    handle, vm = kernel_vm
    psk = vm.work / f"psk-{cipher}"
    psk.write_text(os.urandom(32).hex() + "\n")
    psk.chmod(0o600)
    rows_file = vm.work / f"esp_sa-{cipher}"
    nat = ("--external-interface", "eth0", "--nft-file", str(tmp_path / "nat.nft"))
    server = start_server(handle.ns(SERVER), psk, cipher, tmp_path / "server.log", nat)
    pcap = tmp_path / "vmtap.pcapng"
    try:
        up = wait_until(
            lambda: handle.run(SERVER, "ip", "link", "show", "tun0").returncode == 0, 15
        )
        assert up is not None, (tmp_path / "server.log").read_text()
        run_client(vm, psk, rows_file, True, cipher, ("--rekey-after", "20"))
        states = vm.must("ip xfrm state")
        assert states.count("proto esp") == 2 and "espinudp" in states
        rows = [r for r in rows_file.read_text().splitlines() if r and not r.startswith("#")]
        with capture(handle.ns(SERVER), "vmtap", pcap):
            for target in (SERVER_TUNNEL_IP, WEB_IP):
                ping = vm.run(f"ping -c 3 -i 0.3 -W 5 {target}", timeout_s=120)
                assert ping.returncode == 0, ping.output + (vm.work / "client.log").read_text()
        assert min(sa_packets(vm)) >= 6  # the kernel sealed and opened them, not vpnlab
        decoded = tshark_rows(pcap, rows, "frame.protocols", "esp.icv_good")
        esp = [(stack, good) for stack, good in decoded if ":esp" in stack]
        pings = [stack for stack, _ in esp if stack.endswith("esp:ip:icmp:data")]
        assert len(pings) == 12, decoded  # 2 targets x 3 requests and 3 replies, opened
        assert all(good in TSHARK_TRUE for _, good in esp), decoded
        # a rekey (--rekey-after 20): new states beside the old, and the data goes on
        log = vm.work / "client.log"
        rekeyed = wait_until(lambda: log.read_text().count("hello from") >= 2, 90, 1.0)
        assert rekeyed is not None, log.read_text()
        time.sleep(2)  # the hand-off of the new keys (ip xfrm under TCG)
        ping = vm.run(f"ping -c 3 -i 0.3 -W 5 {SERVER_TUNNEL_IP}", timeout_s=120)
        assert ping.returncode == 0, ping.output + log.read_text()
        assert vm.must("ip xfrm state").count("proto esp") == 4  # old ones go at the next
        # the server's idle keepalives (ESP next header 59) are all the kernel may count
        assert set(xfrm_errors(vm)) <= {"XfrmInStateProtoError"}, xfrm_errors(vm)
        text = stop_client(vm)
        assert "kernel data plane" in text and "bug:" not in text, text
        assert vm.must("ip xfrm state; ip xfrm policy").strip() == "", "CleanUp left xfrm"
    finally:
        vm.run("kill $(cat /tmp/client.pid) 2>/dev/null; ip xfrm state flush; ip xfrm policy flush")
        server.terminate()
        server.wait(timeout=10)


# --- the kernel as the server's data plane (vpnlab server --kernel-dataplane) ------------------

SERVER_PORT = 4502
"""4500 in the VM is the module's ESP-in-UDP socket (the static-key tests)."""


def test_kernel_dataplane_server_in_the_vm(kernel_vm, tmp_path):
    """vpnlab's server in the VM hands each handshake's keys to the VM kernel's xfrm; vpnlab's
    client in r2 (userspace, ``--kernel-peer``: NAT-keepalives, no ESP dummy packets) pings
    through it both ways, across a rekey; the kernel's counters show it carried the data with
    no error; after the server stops, no state and no policy is left."""
    cipher = "esp-aes-gcm"
    handle, vm = kernel_vm
    psk = vm.work / "psk-server"
    psk.write_text(os.urandom(32).hex() + "\n")
    psk.chmod(0o600)
    log = vm.work / "server.log"
    argv = [sys.executable, "-m", "vpnlab", "server", "--psk-file", str(psk), "--cipher", cipher]
    argv += ["--port", str(SERVER_PORT), "--kernel-dataplane", "--allow-host-changes"]
    argv += ["--nft-file", str(vm.work / "nat.nft")]
    vm.must("ip xfrm state flush; ip xfrm policy flush")
    before = xfrm_errors(vm)  # since boot: the client's test before counts the server's dummies
    vm.must(f"nohup {' '.join(argv)} > {log} 2>&1 & echo $! > /tmp/server.pid")
    alive = "kill -0 $(cat /tmp/server.pid) 2>/dev/null"
    wait = (
        f"for i in $(seq 240); do grep -q 'tun0 is not read' {log} && exit 0; {alive} || exit 1; "
    )
    assert vm.run(wait + "sleep 1; done; exit 1", timeout_s=400).returncode == 0, log.read_text()
    client_log = tmp_path / "client.log"
    client = subprocess.Popen(
        ["ip", "netns", "exec", handle.ns(SERVER), sys.executable, "-m", "vpnlab", "client",
         "--server", VM_ADDR, "--port", str(SERVER_PORT), "--psk-file", str(psk),
         "--cipher", cipher, "--kernel-peer", "--rekey-after", "20", "--datapath", "simple"],
        stdout=open(client_log, "wb"),  # noqa: SIM115 (the child keeps it)
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        up = wait_until(lambda: "-> connected" in client_log.read_text(), 60, 0.5)
        assert up is not None and client.poll() is None, client_log.read_text() + log.read_text()
        assert "kernel data plane: xfrm states and policies for 10.8.0.2" in log.read_text()
        states = vm.must("ip xfrm state")
        assert states.count("proto esp") == 2 and "espinudp" in states, states
        assert vm.must("ip xfrm policy").count("dir ") == 3  # out, in, fwd
        ping = handle.run(SERVER, "ping", "-c", "3", "-i", "0.3", "-W", "5", SERVER_TUNNEL_IP)
        assert ping.returncode == 0, ping.stdout + client_log.read_text() + log.read_text()
        ping = vm.run(f"ping -c 3 -i 0.3 -W 5 {CLIENT_TUNNEL_IP}", timeout_s=120)
        assert ping.returncode == 0, ping.output + log.read_text()
        assert min(sa_packets(vm)) >= 6  # the kernel sealed and opened them, not vpnlab
        # a rekey (the client's --rekey-after 20): new states beside the old, the data goes on
        rekeyed = wait_until(lambda: log.read_text().count("xfrm states and policies") >= 2, 90, 1)
        assert rekeyed is not None, log.read_text()
        time.sleep(2)
        ping = handle.run(SERVER, "ping", "-c", "3", "-i", "0.3", "-W", "5", SERVER_TUNNEL_IP)
        assert ping.returncode == 0, ping.stdout + log.read_text()
        assert vm.must("ip xfrm state").count("proto esp") == 4  # old ones go at the next
        assert xfrm_errors(vm) == before  # not one error in this test
        assert client.poll() is None, client_log.read_text()
    finally:
        vm.run("kill $(cat /tmp/server.pid); for i in $(seq 120); do "
               "kill -0 $(cat /tmp/server.pid) || exit 0; sleep 1; done", 240)  # fmt: skip
        left = vm.must("ip xfrm state; ip xfrm policy").strip()
        vm.run("ip xfrm state flush; ip xfrm policy flush")
        client.terminate()
        client.wait(timeout=10)
    text = log.read_text()
    assert "xfrm states and policies removed" in text and "bug:" not in text, text
    assert left == "", f"CleanUp left xfrm: {left}"
