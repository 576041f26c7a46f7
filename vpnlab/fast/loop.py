"""TunSelected / SockSelected, batched: the fast data path (``--datapath fast``).

The same loop, the same cores, the same ESP-in-UDP bytes as ``tunnel.py``; what changes is how
many packets each system call moves:

    1. TunSelected: one read from tun0 returns a virtio_net_hdr and a TCP super-packet of up to
       60 KB (TSO); ``segment.split`` cuts it into MSS-sized packets with full checksums
    2. the core's batch entry (``send_packets``) routes them once and seals each into its own
       ESP datagram, exactly as on the simple path
    3. ``batch.gso_batches`` groups the datagrams (same size, the last no longer) and one
       sendmsg with a UDP_SEGMENT control message sends a whole group (UDP GSO)
    4. SockSelected: one recvmsg returns many datagrams of the peer (UDP_GRO; where the lab's
       kernel cut the batches before the veth, one each); each peer's run of them goes to the
       core's batch entry ``receive_datagrams`` at once; a bad one is dropped and counted on
       its own
    5. ``segment.coalesce`` joins consecutive TCP segments into super-packets, and one writev
       with a GSO virtio_net_hdr hands each to the kernel (coalesced tun writes)

Where the kernel refuses an offload (``offload.py``) the daemon logs it once and does without.
Read ``tunnel.py`` first: this module only overrides its four I/O methods. The CLI hands
:class:`FastTunnel` to the daemons as their data path; the simple path never imports it.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import Counter

from vpnlab.core.constants import MAX_DATAGRAM
from vpnlab.core.errors import LocalProtocolError
from vpnlab.core.events import Address, Event, PacketReceived
from vpnlab.core.packet import clamp_mss
from vpnlab.fast import offload
from vpnlab.fast.batch import gso_batches, split_gro
from vpnlab.fast.segment import NO_OFFLOAD, VNET_HDR_LEN, coalesce, split
from vpnlab.shell.tunnel import BATCH, Tunnel

READ_BYTES = VNET_HDR_LEN + MAX_DATAGRAM
RECV_BYTES = MAX_DATAGRAM
RECV_ANCILLARY = socket.CMSG_SPACE(4)
GSO_REFUSED = (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP)


class FastTunnel(Tunnel):
    """``--datapath fast``: the select loop of ``tunnel.py`` with batched I/O (see the module
    docstring). Arguments as for ``Tunnel``; tun0 must have been opened with ``tun_flags``.

    Switches the offloads on at once and logs each one the kernel refused.
    """

    name = "fast"
    tun_flags = offload.IFF_VNET_HDR
    read_bytes = READ_BYTES

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.offloads = offload.Offloads()
        offload.enable_tun(self.tun_fd, offload.device_name(self.tun_fd), self.offloads)
        offload.enable_socket(self.sock, self.offloads)
        for refusal in self.offloads.refused:
            self.reporter.log(f"fast path: kernel refused {refusal}; doing without")
        self.reporter.log(f"datapath fast: {self.offloads.describe()}")
        self.stats: Counter[str] = Counter()

    def tun_read(self, data: bytes, now: float) -> None:
        """TunSelected for one read: cut a super-packet into segments, hand them to the core
        (its batch entry), and send their datagrams at once (UDP GSO)."""
        if not self.offloads.vnet_hdr:
            packets = [data]
        elif data[:VNET_HDR_LEN] == NO_OFFLOAD:
            packets = [data[VNET_HDR_LEN:]]
        else:
            try:
                packets = split(data[:VNET_HDR_LEN], data[VNET_HDR_LEN:])
            except (LocalProtocolError, IndexError) as exc:
                self.core.counters.drops[f"tun: {exc}"] += 1
                return
            self.stats["super_packets"] += len(packets) > 1
        if self.mss_clamp and len(packets) == 1:
            packets[0] = clamp_mss(packets[0], self.mss_clamp)
        events = self.core.send_packets(packets, now)
        if events:
            self.dispatch(events)
        self.flush()

    def sock_selected(self, now: float) -> None:
        """SockSelected: datagrams in (a UDP_GRO batch per recvmsg, or one where the kernel
        made none), each peer's run of them opened by one call of the core's batch entry,
        coalesced super-packets out to tun0."""
        runs: list[tuple[Address, list[bytes]]] = []
        for _ in range(BATCH):
            try:
                data, ancillary, _, sender = self.sock.recvmsg(RECV_BYTES, RECV_ANCILLARY)
            except BlockingIOError:
                break
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                self.core.counters.drops[f"socket: {exc.strerror}"] += 1
                continue
            segment_size = offload.gro_segment_size(ancillary)
            self.stats["gro_batches"] += segment_size > 0
            datagrams, peer = split_gro(data, segment_size), sender[:2]
            if runs and runs[-1][0] == peer:
                runs[-1][1].extend(datagrams)
            else:
                runs.append((peer, datagrams))
        packets: list[bytes] = []
        for peer, datagrams in runs:
            opened, events = self.core.receive_datagrams(datagrams, peer, now, self.count_bug)
            packets += opened
            if events:
                try:
                    self.dispatch(events)
                except Exception as exc:  # e.g. in on_event: never the daemon
                    self.count_bug(exc)
        if packets:
            self.write_packets(packets)

    def write_packets(self, packets: list[bytes]) -> None:
        """Coalesced tun writes: one writev per super-packet (or per packet without offloads)."""
        if not self.offloads.vnet_hdr:
            writes = [[packet] for packet in packets]
        elif self.offloads.tso:
            try:
                writes = coalesce(packets)
            except Exception as exc:  # a bug joining them: write each packet on its own
                self.count_bug(exc)
                writes = [[NO_OFFLOAD, packet] for packet in packets]
        else:
            writes = [[NO_OFFLOAD, packet] for packet in packets]
        for buffers in writes:
            try:
                os.writev(self.tun_fd, buffers)
            except OSError as exc:
                self.core.counters.drops[f"tun write: {exc.strerror}"] += 1
        self.stats["tun_writes"] += len(writes)

    def dispatch(self, events: list[Event]) -> None:
        """Packets go to tun0 (with a header), everything else to the log."""
        packets = [event.packet for event in events if type(event) is PacketReceived]
        if packets:
            self.write_packets(packets)
        others = [event for event in events if type(event) is not PacketReceived]
        if others:
            super().dispatch(others)

    def flush(self) -> None:
        """Send what the core queued: one sendmsg with UDP_SEGMENT per batch (UDP GSO)."""
        queued = self.core.datagrams_to_send()
        if not queued:
            return
        drops = self.core.counters.drops
        try:
            batches = gso_batches(queued)
        except Exception as exc:  # a bug grouping them: send each datagram on its own
            self.count_bug(exc)
            batches = [(peer, len(datagram), [datagram]) for datagram, peer in queued]
        for peer, size, run in batches:
            if len(run) > 1 and self.offloads.udp_gso:
                try:
                    self.sock.sendmsg(run, offload.gso_control(size), 0, peer)
                    self.stats["gso_sends"] += 1
                    continue
                except BlockingIOError:
                    drops["send: no buffer space"] += len(run)
                    continue
                except OSError as exc:
                    if exc.errno not in GSO_REFUSED:
                        drops[f"send: {exc.strerror}"] += len(run)
                        continue
                    self.offloads.udp_gso = False
                    self.reporter.log(f"fast path: UDP GSO send refused ({exc.strerror}); off")
            for datagram in run:
                try:
                    self.sock.sendto(datagram, peer)
                except OSError as exc:
                    drops[f"send: {exc.strerror}"] += 1

    def report_status(self, now: float) -> None:
        self.reporter.update(datapath="fast", offloads=self.offloads.describe())
        self.reporter.update(fastpath=dict(self.stats))
        super().report_status(now)
