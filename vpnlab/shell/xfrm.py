"""SetRouting for the kernel's data plane (``--kernel-dataplane``): the session's keys in xfrm.

vpnlab's handshake (PSK or identities) agrees on keys; then, as strongSwan's charon does after
IKE, the daemon gives them to the kernel and keeps only the control plane:

    handshake (userspace)    Hello / Welcome on the UDP socket: non-ESP marker 0x00000000,
                             which the kernel's ESP-in-UDP decapsulation passes to the socket
    hand-off                 one ``ip -batch``: xfrm state add (both SAs, encap espinudp, the
                             outbound one continuing the sequence numbers userspace used:
                             replay-oseq; the session's own reqid), xfrm policy update (inner
                             selectors: what goes in the tunnel), the states of two
                             handshakes ago deleted; UDP_ENCAP_ESPINUDP on the daemon's socket
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
from vpnlab.wire.crypto import SaKeys, algorithm
from vpnlab.wire.esp import EspSession, KernelPeerSession

UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
"""setsockopt(IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP): ESP on this socket goes to xfrm."""
REPLAY_WINDOW = 64
PROBE_SPI = 0x101
PROBE_SRC, PROBE_DST = "192.0.2.254", "192.0.2.253"


def ip_xfrm(*argv: str) -> subprocess.CompletedProcess[str]:
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


def reqid_of(inner: IPv4Address) -> int:
    """Each session's own reqid: the client's tunnel address as a number (10.8.0.2 is
    0x0a080002). A policy's template names it, and only that session's states match it: two
    clients behind one NAT share an outer address, and the kernel would otherwise send both
    their traffic with whichever state is newest."""
    return int(inner)


class KernelDataplane:
    """One session's xfrm states and policies, installed at each hand-off, removed at CleanUp.

    Both daemons use it: the client for its one session, the server for each of its clients
    (``vpnlab server --kernel-dataplane``). :meth:`hand_over` is the one step that gives the
    kernel a session's keys, after its first handshake and after each rekey.

    Args:
        inner: the client's tunnel address (ours at a client): the policies' selector, and
            the reqid (:func:`reqid_of`).
        role: "client" or "server" (which side of the selector is ``inner``).
        local, peer: the outer UDP addresses (ours, the peer's).
    """

    def __init__(
        self, inner: IPv4Address, role: str, local: tuple[str, int], peer: tuple[str, int]
    ) -> None:
        self.inner, self.role, self.local, self.peer = inner, role, local, peer
        self.reqid = reqid_of(inner)
        self.states: list[tuple[str, str, int]] = []
        """(src, dst, spi) of every state we added, oldest first."""
        self.policies: list[str] = []
        """The selectors (with direction) of the policies we installed."""
        self.policy_peer: tuple[tuple[str, int], tuple[str, int]] | None = None
        """The outer addresses the installed policies' templates name (None: none yet)."""

    def plan(self, esp: EspSession) -> list[str]:
        """The ``ip -batch`` lines of one hand-off of ``esp``'s keys (pure: runs nothing):
        both states; the policies when there are none yet or the peer moved (``update``
        replaces them in place); last, the states of two handshakes ago deleted. (An ``ip
        xfrm`` line that fails ends the whole batch, ``-force`` or not; ``deleteall``, which
        would not fail on a state already gone, keeps only its first line's filter in a
        batch: iproute2 6.1, seen in the VM.)"""
        (local, lport), (peer, pport) = self.local, self.peer
        lines = [
            self._state(local, peer, esp.outbound, lport, pport, esp.cipher,
                        f"replay-oseq {esp.next_seq - 1}"),
            self._state(peer, local, esp.inbound, pport, lport, esp.cipher,
                        f"replay-window {REPLAY_WINDOW}"),
        ]  # fmt: skip
        if self.policy_peer != (self.local, self.peer):
            lines += [f"xfrm policy update {policy}" for policy in self._policies()]
        lines += [f"xfrm state delete {_state_id(*state)}" for state in self.states[:-2]]
        return lines

    def hand_over(self, session: Session, now: float, peer: tuple[str, int] | None = None) -> None:
        """SetRouting (the kernel's data plane): give the session's current keys to the
        kernel, in one ``ip -batch`` (``ip -b -``); userspace seals nothing after this.

        Args:
            peer: the peer's outer address if it moved (roaming, after an authentic Hello
                from there): the states and policies are installed for it.

        Raises:
            SetupError: not an ESP session (``--cipher plain``), or ``ip`` refused a line
                (also an old state someone else removed); then this hand-off's states are
                deleted again, and the caller ends the session.
        """
        esp = session.protection
        if peer is not None:
            self.peer = peer
        if isinstance(esp, KernelHeld):
            return  # the kernel's already (a move comes with a handshake, hence new keys)
        if not isinstance(esp, EspSession):
            raise SetupError("--kernel-dataplane needs ESP: --cipher esp-null or esp-aes-gcm")
        lines = self.plan(esp)
        (local, _), (remote, _) = self.local, self.peer
        added = [(local, remote, esp.outbound.spi), (remote, local, esp.inbound.spi)]
        done = ip_batch(lines)
        if done.returncode != 0:
            one_by_one([f"xfrm state delete {_state_id(*state)}" for state in added])
            errors = "; ".join(done.stderr.strip().splitlines()) or f"exit {done.returncode}"
            raise SetupError(f"ip -batch (xfrm hand-off): {errors}")
        if self.policy_peer != (self.local, self.peer):
            self.policies = [policy.split(" tmpl ")[0] for policy in self._policies()]
            self.policy_peer = (self.local, self.peer)
        self.states = [*self.states[-2:], *added]
        session.rekey(KernelHeld(esp.cipher, esp.outbound, esp.inbound), now, confirmed=True)

    def _state(
        self, src: str, dst: str, sa: SaKeys, sport: int, dport: int, cipher: str, extra: str
    ) -> str:
        transform = " ".join(f'"{arg}"' for arg in algorithm(cipher).xfrm_args(sa.key))
        return (f"xfrm state add {_state_id(src, dst, sa.spi)} reqid {self.reqid} mode tunnel "
                f"{transform} {extra} encap espinudp {sport} {dport} 0.0.0.0")  # fmt: skip

    def _policies(self) -> list[str]:
        """out: our inner traffic into the tunnel; in (and fwd at a server): what may come out.

        A client sends from its tunnel address to anywhere; a server sends anything to the
        client's tunnel address, and forwards what the client sends (NAT does the rest).
        """
        (local, _), (peer, _) = self.local, self.peer
        one, anywhere = f"{self.inner}/32", "0.0.0.0/0"
        ours, theirs = (one, anywhere) if self.role == "client" else (anywhere, one)
        tmpl = f"proto esp reqid {self.reqid} mode tunnel"
        policies = [f"src {ours} dst {theirs} dir out tmpl src {local} dst {peer} {tmpl}"]
        directions = ["in"] if self.role == "client" else ["in", "fwd"]
        policies += [
            f"src {theirs} dst {ours} dir {d} tmpl src {peer} dst {local} {tmpl}"
            for d in directions
        ]
        return policies

    def remove(self) -> None:
        """CleanUp: every state and policy this session added, in one ``ip -batch``; if a
        line fails (one already gone), the rest one by one."""
        lines = [f"xfrm policy delete {selector}" for selector in self.policies]
        lines += [f"xfrm state delete {_state_id(*state)}" for state in self.states]
        if lines and ip_batch(lines).returncode != 0:
            one_by_one(lines)
        self.policies, self.states, self.policy_peer = [], [], None


def _state_id(src: str, dst: str, spi: int) -> str:
    return f"src {src} dst {dst} proto esp spi {spi:#010x}"


def one_by_one(lines: list[str]) -> None:
    """Each ``ip`` line on its own, whatever the others do (CleanUp after a failed batch)."""
    for line in lines:
        subprocess.run(["ip", *line.split()], capture_output=True, timeout=10)


def ip_batch(lines: list[str]) -> subprocess.CompletedProcess[str]:
    """``ip -batch -``: the lines (``ip`` commands without the ``ip``) in one process, up to
    the first that fails."""
    argv = ["ip", "-batch", "-"]
    text = "".join(line + "\n" for line in lines)
    return subprocess.run(argv, input=text, capture_output=True, text=True, timeout=30)


def encapsulate(sock: socket.socket) -> None:
    """The daemon's UDP socket hands ESP to the kernel (non-ESP-marker messages still come up)."""
    sock.setsockopt(socket.IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)


def outer_source(peer: str) -> str:
    """The address the kernel sends from to reach ``peer`` (a connected UDP socket's name)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((peer, 4500))  # no datagram is sent
        source: str = probe.getsockname()[0]
        return source
