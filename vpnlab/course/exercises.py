"""Every notebook exercise: its answer's type, a hint that does not give it away, and whether
it is **live** (``grading.judge`` reads the answer from the student's lab now) or a **fixed
fact** (graded as a set by the instructor edition's hidden tests; no answer here).

Live exercises compare with what the lab shows (``lab.exec_in``: ``ip``, the daemons' state) or
with values drawn at ``lab up`` (``lab.drawn()``, ``vpnlab/lab/draw.py``), never with anything
the notebook recorded. The fixed facts' answers are only in the instructor edition's
``### BEGIN HIDDEN TESTS`` blocks (``grading.grade_facts``), which nbgrader strips from the
student edition. ``LIVE`` and ``FACTS`` list them (the hub's grader judges ``LIVE`` only).
``tests/notebooks/test_exercises.py`` checks each against the notebooks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from vpnlab.course.labview import LabView
from vpnlab.lab.draw import WHOAMI_TOKEN


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``kind`` of answer (``int``, ``str``, ``bool``), a ``hint``, and ``live``:
    what the lab shows now (None: a fixed fact), within ``tolerance`` for numbers."""

    kind: type
    hint: str
    live: Callable[[LabView], object] | None = None
    tolerance: float = 0.0


def _server_namespace(lab: LabView) -> str | None:
    """The VPN server's namespace, if it exists in this lab now."""
    return lab.prefix + "r2" if lab.exec_in("r2", ["true"], timeout=5).returncode == 0 else None


def _whoami_token(lab: LabView) -> object:
    """The who-am-I token drawn for this lab at ``lab up``."""
    return lab.drawn().get(WHOAMI_TOKEN)


def _tun0_address(family: int, node: str = "r1") -> Callable[[LabView], str | None]:
    """``node``'s tun0 address of IP ``family`` now (the global one), without its length."""

    def live(lab: LabView) -> str | None:
        argv = ["ip", "-j", f"-{family}", "addr", "show", "dev", "tun0", "scope", "global"]
        done = lab.exec_in(node, argv, timeout=5)
        if done.returncode != 0:
            return None
        links = json.loads(done.stdout)  # (`ip -j` adds empty entries for filtered addresses)
        found = [a["local"] for link in links for a in link["addr_info"] if a.get("local")]
        return found[0] if found else None

    return live


EXERCISES: dict[str, Exercise] = {
    "0.1": Exercise(int, "one namespace per node: count the lines of `ip netns list`"),
    "0.4": Exercise(
        str,
        "ask who-am-I for /token through the tunnel, from r1 (your lab's own token)",
        live=_whoami_token,
    ),
    "0.3": Exercise(
        str,
        "who-am-I shows the source address the web host saw: which node has it (`ip addr`)?",
    ),
    "1.1": Exercise(
        int,
        "the ifreq layout: name, flags, padding (struct.calcsize tells you)",
    ),
    "1.2": Exercise(int, "the version is the high nibble of the packet's first byte"),
    "1.3": Exercise(
        int,
        "the flag for devices that carry Ethernet frames, from linux/if_tun.h (above)",
    ),
    "1.4": Exercise(int, "the proto field of the tun_pi header above, as an integer"),
    "2.1": Exercise(int, "len() of the payload in the hexdump"),
    "2.2": Exercise(
        int,
        "one at once, then one every HELLO_RETRY_S while less than CONNECT_TIMEOUT_S has passed",
    ),
    "2.3": Exercise(int, "`vpnlab client --help` lists the exit codes"),
    "2.4": Exercise(int, "look at the gaps between keepalives in the capture"),
    "3.1": Exercise(
        str,
        "which half of the address space holds 203.0.113.10? Look at its first bit",
    ),
    "3.2": Exercise(int, "a route to one single address: how many bits must match?"),
    "3.3": Exercise(str, "the loop above: `ip route get` showed it"),
    "3.4": Exercise(
        bool,
        "compare prefix lengths: the host route against the new default route",
    ),
    "4.1": Exercise(
        str,
        "without the VPN the packet leaves r1 unchanged: whose address is its source?",
    ),
    "4.2": Exercise(
        str,
        "with the VPN, masquerade rewrites the source as the packet leaves r2",
    ),
    "4.3": Exercise(
        str,
        "the conntrack line's second src=/dst= pair is the reply direction",
    ),
    "4.4": Exercise(
        str,
        "masquerade changes the source after the routing decision, as the packet leaves",
    ),
    "5.1": Exercise(
        int,
        "what does the plain format put in front of the inner packet? Only outer headers",
    ),
    "5.2": Exercise(
        int,
        "add Ethernet, the outer headers and ESP's fields with AES-GCM "
        "(SPI, sequence, IV, padding, trailer, ICV)",
    ),
    "5.3": Exercise(
        str,
        "the layers tshark lists for a packet read on tun0 (no Ethernet there)",
    ),
    "5.4": Exercise(
        str,
        "tshark reads the payload's first 4 bytes as the SPI: "
        "which bytes start an 84-byte IPv4 header?",
    ),
    "6.1": Exercise(int, "the daemons' liveness timeout (vpnlab/core/constants.py)"),
    "6.3": Exercise(str, "which signal lets CleanUp run and send a Bye?"),
    "6.4": Exercise(str, "`nft list tables` in r2"),
    "7.1": Exercise(str, "the heading of the design notes' note on transports"),
    "7.3": Exercise(
        int,
        "the TCP transport frames each datagram with its length: how many bytes? (wire/framing.py)",
    ),
    "8.1": Exercise(
        str,
        "the captures show the answers entering one node and never leaving it",
    ),
    "8.2": Exercise(int, "the ICMP type of an answer to a ping"),
    "8.3": Exercise(str, "without NAT nothing rewrites the source"),
    "8.4": Exercise(str, "the route's `via`: the next hop towards the tunnel network"),
    "9.1": Exercise(str, "`ip route` in r1: the LAN behind the other gateway"),
    "9.2": Exercise(str, "the outer header: which gateway receives the datagrams?"),
    "9.3": Exercise(str, "no NAT anywhere: the source is the asking host itself"),
    "9.4": Exercise(
        int,
        "--isolate-clients: what does the server do with client-to-client packets?",
    ),
    "10.2": Exercise(int, "divide each gap between retransmissions by the one before"),
    "10.3": Exercise(int, "the daemons' liveness timeout"),
    "10.4.1": Exercise(str, "the daemon whose PID the notebook sent the signal to"),
    "10.4.2": Exercise(
        str, "a frozen process runs no timer: which one's 6 s ran out while the other slept?"
    ),
    "11.1": Exercise(
        str, "the kernel fills %d with the first free number (your template, printed above)"
    ),
    "11.2": Exercise(int, "IFNAMSIZ (16) counts the terminating NUL"),
    "11.3": Exercise(int, "the high nibble of those packets' first byte"),
    "11.4": Exercise(str, "errno.errorcode[...] of the error's errno"),
    "0.2": Exercise(str, "the lab's prefix followed by the node's name", live=_server_namespace),
    "6.2": Exercise(
        int,
        "count r1's datagrams after the kill in the timeline",
    ),
    "7.2": Exercise(
        int,
        "what does eth0 carry with the UDP transport? Is there any TCP there to retransmit?",
    ),
    "7.4": Exercise(
        int,
        "compare the two pings above: how often does one round trip cross the delayed link?",
    ),
    "10.1": Exercise(bool, "compare the checksums above"),
    "12.3": Exercise(
        int,
        "the plain format adds nothing of its own: count the headers of a UDP datagram",
    ),
    "12.4": Exercise(
        bool,
        "what does the kernel do with a packet written to tun0, whoever sent it?",
    ),
    "12.5": Exercise(
        int,
        "count what r2's socket received for your pings (Task 4)",
    ),
    "13.1": Exercise(int, "1500, minus the outer headers, minus what plain adds"),
    "13.2": Exercise(
        int,
        "1500 - 28 - esp-aes-gcm's overhead with the worst-case padding (the table)",
    ),
    "13.3": Exercise(bool, "look at the bytes the big fetch received"),
    "13.4": Exercise(int, "the bisection's result"),
    "13.5": Exercise(
        int,
        "the SYN-ACK's MSS on r1's tun0, after the server's daemon clamped it",
    ),
    "14.1": Exercise(
        str,
        "tun0's global IPv6 address on r1 (`ip -6 addr`), without its prefix length",
        live=_tun0_address(6),
    ),
    "14.2": Exercise(
        int,
        "as for IPv4 (notebook 13), with the outer header of the family the server is reached by",
    ),
    "14.3": Exercise(str, "who-am-I's answer over IPv6 while NAT66 was on"),
    "14.4": Exercise(
        int,
        "the IANA protocol number for an IPv6 packet carried inside another",
    ),
    "15.1": Exercise(
        int,
        "the value setsockopt(IPPROTO_UDP, UDP_ENCAP, ...) is given in vpnlab/shell/xfrm.py",
    ),
    "15.2": Exercise(int, "one SA for each direction of one session (`ip xfrm state`)"),
    "15.3": Exercise(
        str,
        "the counter of /proc/net/xfrm_stat that a dummy packet (next header 59) raises",
    ),
    "10.5": Exercise(
        bool,
        "did the line typed during the break come back, and the next one?",
    ),
    "10.6": Exercise(str, "`ip addr` of r1's new tun0", live=_tun0_address(4)),
}

LIVE = sorted(name for name, spec in EXERCISES.items() if spec.live is not None)
"""The exercises :func:`vpnlab.course.grading.judge` judges against a live lab."""
FACTS = sorted(name for name, spec in EXERCISES.items() if spec.live is None)
"""The fixed facts: graded as a set per notebook by the instructor edition's hidden tests."""
