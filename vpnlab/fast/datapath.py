"""TunSelected / SockSelected, batched: the fast data path (``--datapath fast``).

The select loop of ``shell/tunnel.py`` unchanged, the same cores, the same ESP-in-UDP bytes;
what changes is how many packets each system call moves, behind the loop's two ends:

    1. TunSelected: one read from tun0 (:class:`VnetTun`) returns a virtio_net_hdr and a TCP
       super-packet of up to 64 KB (TSO); ``segment.split`` cuts it into MSS-sized packets with
       full checksums: the loop hands them to the core as one batch
    2. the loop's send: ``batch.gso_batches`` groups the datagrams (same size, the last no
       longer) and one sendmsg with a UDP_SEGMENT control message sends a whole group
       (:class:`GsoUdp`, UDP GSO)
    3. SockSelected: one recvmsg returns many datagrams of the peer (UDP_GRO, where the device
       runs GRO as a NIC does: the bench's lab; the teaching lab's veths hand over one datagram
       each, so that captures show one ESP datagram per frame); the loop hands each peer's run
       of them to the core at once
    4. the loop's write to tun0: ``segment.coalesce`` joins consecutive TCP segments into
       super-packets, and one writev with a GSO virtio_net_hdr hands each to the kernel

Where the kernel refuses an offload (``offload.py``) the daemon logs it once and does without.
The CLI hands :class:`FastDatapath` to the daemons; the simple path never imports it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections import Counter

from vpnlab.core.constants import MAX_DATAGRAM
from vpnlab.core.errors import LocalProtocolError
from vpnlab.core.events import Address
from vpnlab.core.reasons import Drop, DropLabel
from vpnlab.fast import offload
from vpnlab.fast.batch import (
    SOL_UDP,
    UDP_GRO,
    gro_segment_size,
    gso_batches,
    gso_control,
    split_gro,
)
from vpnlab.fast.segment import (
    NO_OFFLOAD,
    VNET_HDR_LEN,
    Partial,
    Write,
    coalesce,
    complete_checksums,
    split,
)
from vpnlab.shell.report import Reporter
from vpnlab.shell.transport import Run, UdpTransport, add_run

READ_BYTES = VNET_HDR_LEN + MAX_DATAGRAM
"""One read from tun0: the virtio_net_hdr and a super-packet of up to 64 KB."""
RECV_ANCILLARY = socket.CMSG_SPACE(4)
"""Room for the UDP_GRO control message (the segment size, an int)."""
GSO_REFUSED = (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP)
"""What a UDP GSO send fails with where the kernel or the route cannot segment."""


def count_bug(drops: Counter[DropLabel], exc: Exception) -> None:
    """A bug batching packets costs the batching, never the packets (they go one by one)."""
    drops[Drop.BUG.detail(type(exc).__name__)] += 1


class VnetTun:
    """CreateTunDev with offloads: tun0 opened with IFF_VNET_HDR (``tun_flags``), TSO on.

    Args:
        fd: tun0, non-blocking.
        drops: the core's drop counters (a read or write the kernel refused).
        offloads: what the kernel granted (shared with :class:`GsoUdp`, for the status).
        stats: super-packets and tun writes, for the status file.
    """

    def __init__(
        self, fd: int, drops: Counter[DropLabel], offloads: offload.Offloads, stats: Counter[str]
    ) -> None:
        self.fd = fd
        self.drops = drops
        self.offloads = offloads
        self.stats = stats
        self._drained = False
        offload.enable_tun(fd, offloads)

    def fileno(self) -> int:
        return self.fd

    def read(self, limit: int) -> list[bytes]:
        """Reads from tun0 until ``limit`` packets, a super-packet (cut into its segments, the
        last read of the call) or an empty ring; [] when none waits.

        Single packets whose checksum the kernel left to us (a forwarded UDP stream, TCP
        ACKs) have it completed together, and are sealed and sent together: one UDP GSO send,
        where one read at a time meant one ``sendto`` each (``docs/performance.md``, *A
        stream of single packets*).
        """
        if self._drained:  # the last call found the ring empty: no second empty read
            self._drained = False
            return []
        packets: list[bytes | None] = []
        partials: list[tuple[int, Partial]] = []
        while len(packets) < limit:
            try:
                data = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                self._drained = bool(packets)
                break
            except OSError as exc:
                self.drops[Drop.TUN_READ.detail(exc.strerror)] += 1
                break
            if not self.offloads.vnet_hdr:
                packets.append(data)
                continue
            header, packet = data[:VNET_HDR_LEN], data[VNET_HDR_LEN:]
            if header == NO_OFFLOAD:  # a complete packet: no header to unpack
                packets.append(packet)
                continue
            try:
                read = split(header, packet)
            except (LocalProtocolError, IndexError) as exc:
                self.drops[Drop.TUN.detail(exc)] += 1
                continue
            if isinstance(read, tuple):  # a Partial
                partials.append((len(packets), read))
                packets.append(None)
            elif len(read) == 1:
                packets.append(read[0])
            else:
                self.stats["super_packets"] += 1
                self.stats["super_packet_segments"] += len(read)
                packets.extend(read)
                break
        for (index, _), complete in zip(
            partials, complete_checksums([partial for _, partial in partials]), strict=True
        ):
            packets[index] = complete
            if complete is None:
                self.drops[Drop.TUN.detail("checksum offsets outside the packet")] += 1
        return [packet for packet in packets if packet is not None]

    def write(self, packets: list[bytes]) -> None:
        """Coalesced tun writes: one writev per super-packet (or per packet without TSO)."""
        writes: list[Write]
        if not self.offloads.vnet_hdr:
            writes = [[packet] for packet in packets]
        elif self.offloads.tso:
            try:
                writes = coalesce(packets)
            except Exception as exc:  # a bug joining them: write each packet on its own
                count_bug(self.drops, exc)
                writes = [[NO_OFFLOAD, packet] for packet in packets]
        else:
            writes = [[NO_OFFLOAD, packet] for packet in packets]
        for buffers in writes:
            try:
                os.writev(self.fd, buffers)
            except OSError as exc:
                self.drops[Drop.TUN_WRITE.detail(exc.strerror)] += 1
        self.stats["tun_writes"] += len(writes)

    def describe(self) -> dict[str, object]:
        return {
            "datapath": FastDatapath.name,
            "offloads": self.offloads.describe(),
            "fastpath": dict(self.stats),
        }


class GsoUdp(UdpTransport):
    """Init(PORT) with offloads: the UDP socket with UDP_GRO on, sending with UDP_SEGMENT.

    Args:
        sock: the socket of ``transport.init_socket``.
        drops: the core's drop counters (a send the kernel refused, an ICMP error).
        offloads: what the kernel granted (shared with :class:`VnetTun`).
        stats: GRO batches and GSO sends, for the status file.
    """

    def __init__(
        self,
        sock: socket.socket,
        drops: Counter[DropLabel],
        offloads: offload.Offloads,
        stats: Counter[str],
        reporter: Reporter,
    ) -> None:
        super().__init__(sock, drops)
        self.offloads = offloads
        self.stats = stats
        self.reporter = reporter
        offload.enable_socket(sock, offloads)

    def add_hello_lane(self, lane: socket.socket) -> None:
        """The server's Hello lane gets UDP_GRO too. The kernel's GRO looks the socket up
        without the packet, so the lane's steering program cannot run there, and it picks
        one of the port's two sockets by a hash that is random per namespace: without UDP_GRO
        on both, a lab whose hash chose the lane never gave its server a batch. A batch led by
        a Hello may then reach the lane, which is read as the data socket is
        (:meth:`_receive_from`), and the core tells each datagram apart as always."""
        super().add_hello_lane(lane)
        with contextlib.suppress(OSError):  # refused: the lane takes datagrams one by one
            lane.setsockopt(SOL_UDP, UDP_GRO, 1)

    def _receive_from(self, sock: socket.socket, runs: list[Run], limit: int) -> int:
        """Up to ``limit`` recvmsg from ``sock`` (the data socket or the Hello lane) into
        ``runs``: each a UDP_GRO batch of one sender, or one datagram; how many calls
        returned something."""
        received = 0
        for _ in range(limit):
            try:
                data, ancillary, _, sender = sock.recvmsg(MAX_DATAGRAM, RECV_ANCILLARY)
            except BlockingIOError:
                break
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                self.drops[Drop.SOCKET.detail(exc.strerror)] += 1
                continue
            segment_size = gro_segment_size(ancillary)
            self.stats["gro_batches"] += segment_size > 0
            add_run(runs, sender[:2], split_gro(data, segment_size))
            received += 1
        return received

    def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """One sendmsg with UDP_SEGMENT per batch (UDP GSO); one sendto each without it."""
        try:
            batches = gso_batches(datagrams)
        except Exception as exc:  # a bug grouping them: send each datagram on its own
            count_bug(self.drops, exc)
            batches = [(peer, len(datagram), [datagram]) for datagram, peer in datagrams]
        for peer, size, run in batches:
            if len(run) > 1 and self.offloads.udp_gso:
                try:
                    self.sock.sendmsg(run, gso_control(size), 0, peer)
                    self.stats["gso_sends"] += 1
                    continue
                except BlockingIOError:
                    self.drops[Drop.SEND_NO_BUFFER] += len(run)
                    continue
                except OSError as exc:
                    if exc.errno not in GSO_REFUSED:
                        self.drops[Drop.SEND.detail(exc.strerror)] += len(run)
                        continue
                    self.offloads.udp_gso = False
                    self.reporter.log(f"fast path: UDP GSO send refused ({exc.strerror}); off")
            super().send([(datagram, peer) for datagram in run])


class FastDatapath:
    """``--datapath fast``: (:class:`VnetTun`, :class:`GsoUdp`), one :class:`~offload.Offloads`
    shared by both; each offload the kernel refused is logged once."""

    name = "fast"
    tun_flags = offload.IFF_VNET_HDR
    """What this data path adds to IFF_TUN | IFF_NO_PI at CreateTunDev."""
    super_packet_bytes = offload.SUPER_PACKET_BYTES
    """tun0 hands over TCP super-packets shorter than this (its gso_max_size, TSO)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.offloads = offload.Offloads()
        self.stats: Counter[str] = Counter()
        self._logged = 0

    def udp(self, sock: socket.socket, drops: Counter[DropLabel]) -> GsoUdp:
        transport = GsoUdp(sock, drops, self.offloads, self.stats, self.reporter)
        self._log_refusals()
        return transport

    def device(self, fd: int, drops: Counter[DropLabel]) -> VnetTun:
        device = VnetTun(fd, drops, self.offloads, self.stats)
        self._log_refusals()
        self.reporter.log(f"datapath fast: {self.offloads.describe()}")
        return device

    def _log_refusals(self) -> None:
        for refusal in self.offloads.refused[self._logged :]:
            self.reporter.log(f"fast path: kernel refused {refusal}; doing without")
        self._logged = len(self.offloads.refused)
