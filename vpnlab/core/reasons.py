"""The words the cores report in: states, why a session closed, why a packet was dropped.

Each is a ``str`` enum whose value is the label a student reads in the log and the status
file ("bad icv", "peer lost", ...): the labels stay as they were, and a typo in one is now an
error the type checker (and Python) sees. A drop that carries a detail (an OS error, a seal
that failed) is ``Drop.X.detail(text)``: "tun write: No buffer space available".
"""

from __future__ import annotations

from enum import Enum, unique


class Reason(str, Enum):
    """A label: compares, hashes, prints and serialises as its value."""

    def __str__(self) -> str:
        return str(self.value)


@unique
class State(Reason):
    """Where a core is in the design notes' connection flow, and its daemon around it: the
    status file's "state" and the log's "state A -> B"."""

    STARTING = "starting"
    """A daemon before its core has a say (the socket, tun0 and routes being set up)."""
    LISTENING = "listening"
    """The server with no client (ServerConnection waits for a Hello)."""
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


STATE_LISTENING, STATE_CONNECTING, STATE_CONNECTED, STATE_CLOSED = (
    State.LISTENING,
    State.CONNECTING,
    State.CONNECTED,
    State.CLOSED,
)
"""The states again, as module globals for the code that asks once a datagram or a turn of the
loop: in Python 3.11 reading a member off an Enum class costs about 80 ns
(``EnumType.__getattr__`` keeps the interpreter from caching the lookup), a global about 8
(``formats.KIND_PACKET``: the same for what a datagram carried)."""


@unique
class Opened(Reason):
    """What moves a connecting core on (ClientConnection: the Welcome, or static keys)."""

    WELCOME = "welcome"


@unique
class Close(Reason):
    """Why a session ended (``SessionClosed.reason``, the client's ``close_reason``)."""

    BYE = "bye"
    PEER_LOST = "peer lost"
    KEYS_EXHAUSTED = "keys exhausted"
    SERVER_UNREACHABLE = "server unreachable"
    CLOSED = "closed"
    REVOKED = "revoked"


@unique
class NotLearned(Reason):
    """Why TAP mode's switch did not learn a MAC (``Switch.refused``): its frames still
    pass, replies to it are flooded."""

    TOO_MANY_MACS = "too many macs from one address"
    TABLE_FULL = "mac table full"


@unique
class Drop(Reason):
    """Why a datagram or a packet was refused: its counter key (``Counters.drops``)."""

    # the wire formats: what a datagram is not
    TRUNCATED = "truncated"
    OVERSIZE = "oversize"
    RUNT_FRAME = "runt frame"
    NAT_KEEPALIVE = "nat keepalive"
    NOT_AN_IP_PACKET = "not an ip packet"
    CONTROL_MESSAGE = "control message"
    UNEXPECTED_CONTROL_MESSAGE = "unexpected control message"
    BAD_SPI = "bad spi"
    UNKNOWN_SPI = "unknown spi"
    BAD_ICV = "bad icv"
    BAD_PADDING = "bad padding"
    BAD_NEXT_HEADER = "bad next header"
    REPLAYED = "replayed"
    WRONG_CIPHER = "wrong cipher"
    WRONG_PSK_OR_MUTATED = "wrong psk or mutated"
    # the handshakes
    NOT_A_HANDSHAKE = "not a handshake"
    NOT_A_HELLO = "not a hello"
    NOT_A_WELCOME = "not a welcome"
    BAD_HELLO = "bad hello"
    BAD_WELCOME = "bad welcome"
    BAD_WELCOME_ADDRESS = "bad welcome address"
    UNEXPECTED_WELCOME = "unexpected welcome"
    STALE_HELLO = "stale hello"
    REPLAYED_HELLO = "replayed hello"
    HELLO_CACHE_FULL = "hello cache full"
    BAD_PUBLIC_KEY = "bad public key"
    UNKNOWN_PEER_KEY = "unknown peer key"
    BAD_MAC1 = "bad mac1"
    BAD_COOKIE_REPLY = "bad cookie reply"
    # the server core
    UNKNOWN_PEER = "unknown peer"
    HELLO_RATE_LIMIT = "hello rate limit"
    UNDER_LOAD_COOKIE_SENT = "under load: cookie reply sent"
    HANDSHAKE_QUEUE_FULL = "handshake queue full"
    PEER_ADDRESS_TAKEN = "peer address taken"
    TOO_MANY_SESSIONS = "too many sessions from one address"
    POOL_EXHAUSTED = "address pool exhausted"
    SPOOFED_SOURCE = "spoofed source"
    CLIENT_TO_CLIENT_DENIED = "client to client denied"
    # the client core
    SESSION_CLOSED = "session closed"
    NOT_CONNECTED = "not connected"
    # from the device (tun0 or tap0)
    TUN = "tun"
    """A packet from tun0 that could not be sealed: ``Drop.TUN.detail(why)``."""
    TAP = "tap"
    """A frame from tap0 (or to another client, TAP mode) that could not be sealed."""
    TUN_NOT_IP = "tun: not ip"
    TUN_LINK_SCOPE = "tun: ipv6 link scope"
    """Expected, not a fault: the kernel's own IPv6 link chatter on a fresh tun0."""
    TUN_NO_CLIENT = "tun: no client for destination"
    TAP_RUNT_FRAME = "tap: runt frame"
    # TAP mode's switch
    BAD_SOURCE_MAC = "bad source mac"
    SPOOFED_SOURCE_MAC = "spoofed source mac"
    SPOOFED_ARP_SENDER = "spoofed arp sender"
    FLOOD_RATE_LIMIT = "flood rate limit"
    # the I/O shell and the fast path (each with the OS error as its detail)
    TUN_READ = "tun read"
    TUN_WRITE = "tun write"
    SOCKET = "socket"
    SEND = "send"
    SEND_NO_BUFFER = "send: no buffer space"
    TCP_TOO_MANY = "tcp: too many connections"
    TCP_ACCEPT = "tcp: accept"
    # the TCP transport's connections (each closed, the reason counted once)
    TCP = "tcp"
    """A connection's socket failed: ``Drop.TCP.detail(exc.strerror)``."""
    TCP_CONNECT = "tcp: connect"
    TCP_CLOSED_BY_PEER = "tcp: closed by peer"
    TCP_OVERSIZE_FRAME = "tcp: oversize frame"
    TCP_EMPTY_FRAME = "tcp: empty frame"
    TCP_EVICTED = "tcp: evicted (no session)"
    TCP_NO_FRAME_IN_TIME = "tcp: no frame in time"
    TCP_IDLE = "tcp: idle"
    BUG = "bug"
    """A bug met one packet: ``Drop.BUG.detail(type(exc).__name__)``; in a periodic task
    (reading ``peers.toml``, say), ``Drop.BUG.detail(f"{task}: {type(exc).__name__}")``."""

    def detail(self, text: object) -> Detailed:
        """This reason with what makes it precise: "value: text" (an OS error's
        ``strerror``, an exception)."""
        return Detailed(f"{self.value}: {text}")


class Detailed(str):
    """A drop reason made precise ("tun write: No buffer space available"): the counter key
    and the label, as a ``Drop`` is; only :meth:`Drop.detail` makes one."""

    __slots__ = ()


DropLabel = Drop | Detailed
"""What a drop is counted under (``Counters.drops``): a ``Drop``, or ``Drop.X.detail(...)``."""
