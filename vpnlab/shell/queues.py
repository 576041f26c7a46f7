"""Bounded queues: how many bytes may wait for a daemon (issue 29 item 1, latency under load).

A packet waits for a daemon in one of two places, and a ping sent during a bulk transfer
waits behind everything queued there:

    tun0's ring    what the kernel routed into tun0 and the daemon has not read yet
                   (TunSelected); ``txqueuelen`` entries, and on the fast path each entry
                   can be a 64 KB TCP super-packet (TSO), so the kernel's 500 hold 32 MB
    the socket     datagrams from the peer the daemon has not received yet (SockSelected);
                   SO_RCVBUF bytes of the kernel's accounting (each datagram's ``truesize``,
                   more than its bytes; the kernel doubles what is asked)

tun does not stop its queue when the ring is full (it drops, so a qdisc on tun0 never holds
packets), and it orphans each packet, so TCP Small Queues does not limit a sender either. A
sender that fills whatever buffer there is (Linux's BBR, CUBIC) keeps that buffer full: the
slower daemon's queue is then the tunnel's standing queue, milliseconds of it. Bounding both
to ``--queue-bytes`` (as BQL bounds a NIC's ring in bytes) makes a full queue drop, which the
sender's TCP repairs, instead of holding a ping behind megabytes. Ifconfig sets the ring
(``tun.ifconfig``), Init(PORT) the buffers (``transport.init_socket``; the server's receive
buffer grows by :data:`SESSION_ROOM_BYTES` per session). The default, :data:`QUEUE_BYTES`, is
256 KiB on both data paths: on the fast path the client's tun0 ring holds 4 super-packets, on
the simple one 187 packets of a 1,400-byte MTU (the server's ring at least 128 entries,
:data:`SERVER_MIN_RING_ENTRIES`).
"""

from __future__ import annotations

QUEUE_BYTES = 256 * 1024
"""The default per queue (tun0's ring, the socket's receive and send buffers), on both data
paths: about 2 ms at 1 Gbit/s. On the fast path, with TunSelected's batch counted in packets
(``tunnel.BATCH``), it gave a loaded ping at or below OpenVPN's at about the throughput of
4 MiB. 128 KiB costs no throughput on a quiet machine but a tenth to a fifth on a busy one (a
class's shared server), so it is only an option (``--queue-bytes``). On the simple path
(4 MiB until 2026-12-07) 256 KiB halved the loaded ping at the same throughput, with BBR and
with CUBIC as the inner TCP (``docs/performance.md``)."""
MIN_QUEUE_BYTES = 64 * 1024
"""Less would not hold one super-packet (or one UDP GSO batch)."""
MIN_RING_ENTRIES = 4
"""A client's tun0 ring never shorter than this: a few small packets (pings, ACKs) may arrive
at once."""
SERVER_MIN_RING_ENTRIES = 128
"""The server's tun0 ring never shorter than this, two wake-ups' worth (2 x ``tunnel.BATCH``):
its SockSelected writes up to BATCH packets of many clients to tun0 and the kernel may answer
each at once (an echo reply, an ACK) into the ring, while answers of the wake-up before that
TunSelected (which runs first, ``SelectLoop._drain_first``, and reads up to BATCH) left may
still wait there. With 4, a class of 8 load clients pinging at once lost replies; with 64, 250
got 161 replies (``bench --clients``, 2026-12-05); with 128, 250 and 1,000 got every one, and
with TunSelected first also the flood bench's identity-mode class (6-10 lost before). The price: a
download's standing queue at the server may reach 128 super-packets (``bench.sh``'s loaded
ping is an upload: its super-packets wait in the client's ring of 4)."""
MAX_RING_ENTRIES = 500
"""Nor longer than the kernel's own default."""
SESSION_ROOM_BYTES = 1024
"""What the server's data socket grows by per session (asked of SO_RCVBUF, which the kernel
doubles: room for one small datagram of each client at once, as a class told to ping together
sends them). With the fast path's 256 KiB alone, 1,000 clients' echo requests sent at once
overflowed it: 873 of 1,000 answered (``bench --clients 1000``, 2026-12-06). A bulk transfer's
queue stays the budget: one session adds 1 KiB (``transport.UdpTransport.session_opened``)."""


def ring_entries(queue_bytes: int, entry_bytes: int, floor: int = MIN_RING_ENTRIES) -> int:
    """tun0's ``txqueuelen`` for a byte budget: ``queue_bytes`` over the largest entry,
    within ``floor`` (the server's: :data:`SERVER_MIN_RING_ENTRIES`) and
    :data:`MAX_RING_ENTRIES`.

    Args:
        queue_bytes: the budget (``--queue-bytes``).
        entry_bytes: the largest packet one entry holds: the MTU, or on the fast path the
            largest super-packet tun0 hands over (``offload.SUPER_PACKET_BYTES``).
    """
    return min(MAX_RING_ENTRIES, max(floor, queue_bytes // entry_bytes))
