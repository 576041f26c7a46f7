"""``scripts/cpu_split.py``: reading ``perf script`` and sorting each sample's stack into where
the daemon's CPU went (the perf runs themselves need perf, which CI does not install: the
script is a developer's tool, as ``perpacket.py`` is)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cpu_split.py"
cpu_split = load_script("cpu_split")

K = "[kernel.kallsyms]"
LIBPYTHON = "/usr/lib/libpython3.11.so.1.0"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
SOCKET_MODULE = "/usr/lib/python3.11/lib-dynload/_socket.cpython-311-x86_64-linux-gnu.so"
RUST = "/venv/lib/python3.11/site-packages/cryptography/hazmat/bindings/_rust.abi3.so"

# Three samples as `perf script -F pid,tid,ip,sym,dso` printed them for the lab's server
PERF_SCRIPT = f"""\
 8702/8702  
\tffffffff8204f105 ip_forward ({K})
\tffffffff81eb0c4d __netif_receive_skb_one_core ({K})
\tffffffff81eb0f33 process_backlog ({K})
\tffffffff81eb1bfe net_rx_action ({K})
\tffffffff81369f44 __local_bh_enable_ip ({K})
\tffffffff8209e140 udp_sendmsg ({K})
\tffffffff81e78840 __x64_sys_sendto ({K})
\t          10acb3 __libc_sendto ({LIBC})
\t               0 [unknown] ([unknown])

 8702/8702  
\t          1aee4d _PyObject_Free ({LIBPYTHON})
\t    7f081205e380 [unknown] ([unknown])

 8703/8703  
\t          2f1a00 aes_gcm_decrypt ({RUST})
"""  # noqa: W291 (perf pads the header line)


def stack(*symbols: str, obj: str = K) -> list[tuple[str, str]]:
    return [(symbol, obj) for symbol in symbols]


def test_perf_script_is_read_sample_by_sample_with_pid_symbol_and_object():
    samples = cpu_split.parse_perf_script(PERF_SCRIPT)
    assert [pid for pid, _ in samples] == [8702, 8702, 8703]
    assert samples[0][1][0] == ("ip_forward", K)
    assert samples[0][1][-2] == ("__libc_sendto", LIBC)
    assert samples[0][1][-1] == ("[unknown]", "[unknown]")
    assert samples[1][1] == [("_PyObject_Free", LIBPYTHON), ("[unknown]", "[unknown]")]
    assert samples[2][1] == [("aes_gcm_decrypt", RUST)]


def test_the_softirq_inside_a_send_is_other_nodes_work():
    """A datagram the server sends is forwarded by isp into r1 before sendto returns."""
    frames = cpu_split.parse_perf_script(PERF_SCRIPT)[0][1]
    assert cpu_split.bucket(frames) == "other nodes: forwarding and delivery (isp, r1, web)"


def test_a_tcp_receive_counts_first_wherever_it_runs():
    tcp = stack("tcp_data_queue", "tcp_v4_rcv", "ip_local_deliver", "process_backlog",
                "net_rx_action", "tun_get_user", "tun_chr_write_iter")  # fmt: skip
    assert cpu_split.bucket(tcp) == "TCP of the transfer's ends (iperf3's on web and r1)"
    ipv6 = stack("tcp_v6_rcv", "ipv6_rcv", "netif_receive_skb", "tun_chr_write_iter")
    assert cpu_split.bucket(ipv6) == cpu_split.BUCKETS[0]


def test_a_tun_write_splits_into_this_nodes_routing_and_the_call_itself():
    """tun0 hands a written packet straight to the node's own IP input (no softirq)."""
    routed = stack("nf_conntrack_in", "ip_rcv", "__netif_receive_skb_one_core",
                   "netif_receive_skb", "tun_get_user", "tun_chr_write_iter")  # fmt: skip
    assert cpu_split.bucket(routed) == "tun0 write: this node's routing and NAT"
    copy = stack("_copy_from_iter", "tun_get_user", "tun_chr_write_iter", "ksys_write")
    assert cpu_split.bucket(copy) == "tun0 write: the system call"


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (stack("skb_copy_datagram_iter", "tun_chr_read_iter"), "tun0 read"),
        (stack("ip_output", "udp_sendmsg", "__sys_sendmsg"), "UDP send"),
        (stack("__skb_recv_udp", "udp_recvmsg", "__sys_recvmsg"), "UDP receive"),
        (stack("ep_poll", "do_epoll_wait"), "epoll / select"),
        (stack("finish_task_switch", "exit_to_user_mode_loop"), cpu_split.BUCKETS[8]),
        (stack("aes_gcm_decrypt", obj=RUST), "cipher (OpenSSL, cryptography's bindings)"),
        (stack("ossl_aes_gcm_encrypt", obj="/usr/lib/libcrypto.so.3"), cpu_split.BUCKETS[9]),
        (stack("_PyEval_EvalFrameDefault", obj=LIBPYTHON), "Python (the interpreter)"),
        (stack("sock_recvfrom", obj=SOCKET_MODULE), "Python (the interpreter)"),
        (stack("[unknown]", obj="[unknown]"), "Python (the interpreter)"),
        (stack("__memmove_avx512", obj=LIBC), "other user space (libc, malloc)"),
    ],
)  # fmt: skip
def test_system_calls_by_their_kernel_function_user_space_by_its_object(frames, expected):
    assert cpu_split.bucket(frames) == expected


def test_shares_are_per_process_and_sum_to_one():
    samples = cpu_split.parse_perf_script(PERF_SCRIPT)
    server = cpu_split.shares(samples, 8702)
    assert list(server) == list(cpu_split.BUCKETS)
    assert server["other nodes: forwarding and delivery (isp, r1, web)"] == 0.5
    assert server["Python (the interpreter)"] == 0.5
    assert sum(server.values()) == pytest.approx(1)
    assert cpu_split.shares(samples, 8703)["cipher (OpenSSL, cryptography's bindings)"] == 1
    assert cpu_split.shares(samples, 1) == {}


def test_the_table_turns_shares_into_microseconds_where_packets_were_counted():
    half = dict.fromkeys(cpu_split.BUCKETS, 0.0)
    half["Python (the interpreter)"] = half["UDP send"] = 0.5
    text = cpu_split.table([("vpnlab esp-aes-gcm simple", "server", half, 12.0, 100),
                            ("openvpn", "server", half, None, 80)])  # fmt: skip
    rows = {line.split(" | ")[0]: line for line in text.splitlines()}
    assert rows["| Python (the interpreter)"].endswith("| 6.00 (50 %) | 50.0 % |")
    assert rows["| whole (the bench's us/packet)"].endswith("| 12.00 us/packet | - |")
    assert rows["| samples"].endswith("| 100 | 80 |")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--cases", "routed"], "not a tunnel case: 'routed'"),
        (["--cases", "vpnlab rot13 fast"], "not a tunnel case"),
        (["--seconds", "0"], "--seconds must be above 0"),
        (["--frequency", "0"], "--frequency 1 to 10000"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(argv, words):
    done = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True)
    assert done.returncode == 2
    assert words in done.stderr
    assert "Traceback" not in done.stderr
