"""SetRouting for the kernel's data plane (``--kernel-dataplane``): the session's keys in xfrm.

vpnlab's handshake (PSK or identities) agrees on keys; then, as strongSwan's charon does after
IKE, the daemon gives them to the kernel and keeps only the control plane:

    handshake (userspace)    Hello / Welcome on the UDP socket: non-ESP marker 0x00000000,
                             which the kernel's ESP-in-UDP decapsulation passes to the socket
    hand-off                 ip xfrm state add (both SAs, encap espinudp, the outbound one
                             continuing the sequence numbers userspace used: replay-oseq)
                             ip xfrm policy add (inner selectors: what goes in the tunnel)
                             setsockopt(UDP_ENCAP, UDP_ENCAP_ESPINUDP) on the daemon's socket
    data                     the kernel: a packet routed to tun0 meets the out policy first and
                             leaves as ESP in UDP; ESP arriving on port 4500 is opened by the
                             kernel and never reaches the daemon. tun0 stays (its address and
                             routes) but the daemon no longer reads it
    control plane            RFC 3948 NAT-keepalives (0xFF, which the kernel eats: no ESP from
                             userspace may use the kernel's SA, or GCM nonces would repeat);
                             a rekey installs the new SAs (the kernel sends with the newest)
                             and removes those of two handshakes ago
    CleanUp                  the states and policies removed

The kernel's ESP cannot tell the daemon that the peer is alive (keepalives and data are all
its own), so the peer is run without a liveness timeout, as for ``--kernel-peer``. Done with
``ip xfrm`` (iproute2) in the daemon's namespace; a kernel without ESP is found by adding a
probe state (:func:`kernel_has_esp`), and the daemon then refuses in one line.
"""

from __future__ import annotations

import socket
import subprocess
from ipaddress import IPv4Address

from vpnlab.core.errors import LocalProtocolError, SetupError
from vpnlab.core.session import Session
from vpnlab.wire.crypto import algorithm
from vpnlab.wire.esp import EspSession, KernelPeerSession, SaKeys

UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
"""setsockopt(IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP): ESP on this socket goes to xfrm."""
REPLAY_WINDOW = 64
PROBE_SPI = 0x101
PROBE_SRC, PROBE_DST = "192.0.2.254", "192.0.2.253"


def ip_xfrm(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "xfrm", *argv], capture_output=True, text=True, timeout=10)


def kernel_has_esp(cipher: str) -> str | None:
    """None if this kernel takes a ``cipher`` SA with ESP-in-UDP encapsulation, else why not
    (a probe state is added and removed again: nothing else is as sure)."""
    probe = ["src", PROBE_SRC, "dst", PROBE_DST, "proto", "esp", "spi", hex(PROBE_SPI)]
    transform = algorithm(cipher)
    key = bytes(transform.key_bytes)
    added = ip_xfrm("state", "add", *probe, "mode", "tunnel", *transform.xfrm_args(key),
                    "encap", "espinudp", "4500", "4500", "0.0.0.0")  # fmt: skip
    if added.returncode != 0:
        return added.stderr.strip() or "ip xfrm state add failed"
    ip_xfrm("state", "delete", *probe)
    return None


class KernelHeld(KernelPeerSession):
    """The userspace side of a session whose data the kernel carries: it seals nothing.

    Its keepalive and Bye are NAT-keepalives (``KernelPeerSession``); sealing a packet raises,
    because a datagram sealed here would reuse a sequence number (a GCM nonce) of the kernel's.
    """

    def seal(self, packet: bytes) -> bytes:
        raise LocalProtocolError("the kernel seals this session's packets (--kernel-dataplane)")

    def seal_frame(self, frame: bytes) -> bytes:
        return self.seal(frame)


class KernelDataplane:
    """One session's xfrm states and policies, installed at hand-off, removed at CleanUp.

    Args:
        inner: our tunnel address (client) or the client's (server): the policies' selector.
        role: "client" or "server" (which side of the selector is ``inner``).
        local, peer: the outer UDP addresses (ours, the peer's).
    """

    def __init__(
        self, inner: IPv4Address, role: str, local: tuple[str, int], peer: tuple[str, int]
    ) -> None:
        self.inner, self.role, self.local, self.peer = inner, role, local, peer
        self.states: list[tuple[str, str, int]] = []
        """(src, dst, spi) of every state we added, oldest first."""
        self.policies: list[list[str]] = []

    def hand_off(self, session: Session, now: float) -> None:
        """Give the session's current keys to the kernel; userspace seals nothing after this.

        Raises:
            SetupError: not an ESP session (``--cipher plain``), or ``ip xfrm`` refused.
        """
        esp = session.protection
        if isinstance(esp, KernelHeld):
            return
        if not isinstance(esp, EspSession):
            raise SetupError("--kernel-dataplane needs ESP: --cipher esp-null or esp-aes-gcm")
        (local, lport), (peer, pport) = self.local, self.peer
        self.add_state(local, peer, esp.outbound, lport, pport, esp.algorithm.name,
                       ["replay-oseq", str(esp.next_seq - 1)])  # fmt: skip
        self.add_state(peer, local, esp.inbound, pport, lport, esp.algorithm.name,
                       ["replay-window", str(REPLAY_WINDOW)])  # fmt: skip
        if not self.policies:
            self.add_policies()
        for src, dst, spi in self.states[:-4]:  # two handshakes ago: nothing uses them now
            ip_xfrm("state", "delete", "src", src, "dst", dst, "proto", "esp", "spi", hex(spi))
        self.states = self.states[-4:]
        session.rekey(KernelHeld(esp.cipher, esp.outbound, esp.inbound), now, confirmed=True)

    def add_state(
        self, src: str, dst: str, sa: SaKeys, sport: int, dport: int, cipher: str, extra: list[str]
    ) -> None:
        self.run("state", "add", "src", src, "dst", dst, "proto", "esp", "spi", hex(sa.spi),
                 "mode", "tunnel", *algorithm(cipher).xfrm_args(sa.key), *extra,
                 "encap", "espinudp", str(sport), str(dport), "0.0.0.0")  # fmt: skip
        self.states.append((src, dst, sa.spi))

    def add_policies(self) -> None:
        """out: our inner traffic into the tunnel; in (and fwd at a server): what may come out.

        A client sends from its tunnel address to anywhere; a server sends anything to the
        client's tunnel address, and forwards what the client sends (NAT does the rest).
        """
        (local, _), (peer, _) = self.local, self.peer
        one, anywhere = f"{self.inner}/32", "0.0.0.0/0"
        ours, theirs = (one, anywhere) if self.role == "client" else (anywhere, one)
        outbound = ["src", local, "dst", peer, "proto", "esp", "mode", "tunnel"]
        inbound = ["src", peer, "dst", local, "proto", "esp", "mode", "tunnel"]
        wanted = [["src", ours, "dst", theirs, "dir", "out", "tmpl", *outbound]]
        directions = ["in"] if self.role == "client" else ["in", "fwd"]
        wanted += [["src", theirs, "dst", ours, "dir", d, "tmpl", *inbound] for d in directions]
        for policy in wanted:
            self.run("policy", "add", *policy)
            self.policies.append(policy[:6])  # the selector and direction name it

    def run(self, *argv: str) -> None:
        done = ip_xfrm(*argv)
        if done.returncode != 0:
            raise SetupError(f"ip xfrm {argv[0]} {argv[1]}: {done.stderr.strip()}")

    def remove(self) -> None:
        """CleanUp: every state and policy this session added (missing ones are fine)."""
        for selector in self.policies:
            ip_xfrm("policy", "delete", *selector)
        for src, dst, spi in self.states:
            ip_xfrm("state", "delete", "src", src, "dst", dst, "proto", "esp", "spi", hex(spi))
        self.policies, self.states = [], []


def encapsulate(sock: socket.socket) -> None:
    """The daemon's UDP socket hands ESP to the kernel (non-ESP-marker messages still come up)."""
    sock.setsockopt(socket.IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)


def outer_source(peer: str) -> str:
    """The address the kernel sends from to reach ``peer`` (a connected UDP socket's name)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((peer, 4500))  # no datagram is sent
        return probe.getsockname()[0]
