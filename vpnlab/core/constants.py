"""Every number the design notes name, in one place (as wireguard-go's device/constants.go)."""

PORT = 4500
"""UDP port of the tunnel (RFC 3948's NAT-T port, hence Wireshark's ``udpencap`` label)."""

CONNECT_TIMEOUT_S = 2.5
"""ClientConnection: how long the client waits for the server's Hello before giving up."""

HELLO_RETRY_S = 0.5
"""ClientConnection: the Hello is sent again this often within the connect timeout."""

LIVENESS_TIMEOUT_S = 6.0
"""Both sides: no datagram from the peer for this long ends the session."""

KEEPALIVE_INTERVAL_S = 2.0
"""Both sides: after this long without sending anything, send a keepalive."""

REKEY_AFTER_S = 120.0
"""A session's keys are replaced by a new handshake this often (WireGuard: 2 minutes)..."""

REKEY_AFTER_PACKETS = 2**31
"""... or after this many datagrams, half of ESP's 32-bit sequence space."""

KEEP_OLD_KEYS_S = 15.0
"""After a switch to new keys, the old ones still open late datagrams this long."""

TUN_NAME = "tun0"
TUN_MTU = 1400
"""A tun0 MTU that fits every format; the daemons derive their own with ``tun_mtu``."""

EXTERNAL_MTU = 1500
"""MTU of the path between the peers (Ethernet): the outer packets must fit it."""
OUTER_HEADERS_BYTES = 28
"""Outer IPv4 (20) + UDP (8) in front of every datagram."""
OUTER_HEADERS_BYTES_V6 = 48
"""Outer IPv6 (40) + UDP (8): a server reached over IPv6 leaves 20 bytes less for tun0."""


def tun_mtu(overhead_bytes: int, external_mtu: int = EXTERNAL_MTU, outer_ipv6: bool = False) -> int:
    """Ifconfig: the largest inner packet whose datagram still fits ``external_mtu``.

    esp-aes-gcm: 1500 - 28 - 37 = 1435; esp-null: 1443; plain: 1472. Over an IPv6 path
    (``outer_ipv6``) each is 20 less: esp-aes-gcm 1415.
    """
    outer = OUTER_HEADERS_BYTES_V6 if outer_ipv6 else OUTER_HEADERS_BYTES
    return external_mtu - outer - overhead_bytes


TUNNEL_NETWORK = "10.8.0.0/24"
SERVER_TUNNEL_ADDRESS = "10.8.0.1/24"
TUNNEL_NETWORK6 = "fd10:8::/64"
"""The tunnel's IPv6 network beside 10.8.0.0/24: a ULA (RFC 4193, fd00::/8, global ID
10:0008:0000 chosen for 10.8). Every tunnel address has its twin here with the same host
part: 10.8.0.1 is fd10:8::1, 10.8.0.5 is fd10:8::5 (``pool.tunnel_address6``)."""

IPV6_ONLY_CLIENTS = 65_280
"""Clients a server takes beyond its IPv4 pool, each with an IPv6-only address of
fd10:8::/64 (``pool.Ipv6OnlyPool``): beside a /24 that is fd10:8::100 to fd10:8::ffff."""

MAX_DATAGRAM = 65535
"""Largest UDP payload we ever read (and the largest read from tun0)."""

NAT_KEEPALIVE = b"\xff"
"""RFC 3948 NAT-keepalive: one 0xFF byte; accepted and ignored, never counted as liveness."""

NAT_TABLE = "vpnlab"
"""Name of the nftables table that holds the server's NAT rule (inside r2's namespace)."""

HELLO_RATE_PER_S = 10.0
"""ServerConnection: Hellos answered per second from one source address (a token bucket)..."""

HELLO_BURST = 20
"""... with bursts of this many (a classroom behind one NAT starting at once)."""

RATE_LIMIT_SOURCES = 4096
"""Source addresses the Hello rate limiter remembers; the least recently seen go first."""

UNDER_LOAD_HELLOS_PER_S = 50
"""ServerConnection: more Hellos than this in one second (junk ones too: a flood is a flood)
put the server under load, as does a handshake queue a quarter full: then only a Hello whose
mac2 carries its source's cookie costs a Diffie-Hellman; the rest with a valid mac1 get a
cookie reply (``core/cookie.py``)."""

UNDER_LOAD_HOLD_S = 1.0
"""... and the server stays under load this long after the last sign of it (WireGuard: 1 s)."""

HANDSHAKE_QUEUE = 128
"""ServerConnection: Hellos waiting for their Diffie-Hellman; one more is dropped."""

SERVER_TIMER_STEP_S = 0.1
"""ServerConnection: the sessions' timers (keepalives, liveness) are looked at no more often
than this. Each look visits every session: with 1,000 clients and their deadlines spread over
the 2 s keepalive interval, looking at every deadline as it came cost the idle server most of
its CPU; a keepalive 0.1 s late changes nothing."""

HANDSHAKES_PER_WAKEUP = 2
"""ServerConnection: Hellos answered per wake-up of the loop (per ``now``); the rest wait in
the queue, so the data that arrived in the same wake-up is never held up by more."""

SESSION_TIMERS_PER_WAKEUP = 32
"""ServerConnection: sessions whose timer is due handled per wake-up (a keepalive sealed and
sent, or the session ended); the rest in the next ones, after their data. A class that
connected together falls due together: 250 keepalives in one wake-up cost 3-4 ms of CPU."""
