"""ClientConnection: the VPN client daemon, in the order of the design notes.

Init(PORT)          UDP socket bound to port 4500
ClientConnection    Hello to the server; select() on the socket for up to 2.5 s
                      answer       -> continue
                      no answer    -> "server unreachable", release resources, exit 3
CreateTunDev        tun0 (IFF_TUN | IFF_NO_PI)
Ifconfig            the address the server gave us, MTU, up
SetRouting(1)       everything through tun0, the server via our own gateway
loop                TunSelected / SockSelected; keepalive when idle; 6 s without a word
                    from the server -> "peer lost", exit 4
CleanUp             Bye, routes restored, tun0 and the socket closed (also on SIGINT/SIGTERM)
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass
from enum import IntEnum, unique
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from pathlib import Path

from vpnlab.core.client_core import ClientCore
from vpnlab.core.constants import CONNECT_TIMEOUT_S, PORT, TUN_MTU, TUN_NAME
from vpnlab.core.errors import SetupError
from vpnlab.core.events import Event, HandshakeCompleted
from vpnlab.core.formats import ClientHandshake, Format
from vpnlab.core.packet import TCP_IP_HEADERS_BYTES
from vpnlab.core.pool import TunnelAddress, tunnel_address6
from vpnlab.core.reasons import Close, State
from vpnlab.core.session import DEFAULT_TIMEOUTS, Timeouts
from vpnlab.shell.keys import esp_sa_text, write_secret
from vpnlab.shell.queues import QUEUE_BYTES, ring_entries
from vpnlab.shell.report import Reporter
from vpnlab.shell.routing import ClientRouting, carries_ipv6, refuse_host_changes
from vpnlab.shell.tap import device_flags
from vpnlab.shell.transport import Transport, UdpTransport, open_transport
from vpnlab.shell.tun import create_tun_dev, ifconfig
from vpnlab.shell.tunnel import Datapath, SelectLoop, SignalPipe, SimpleDatapath, clean_up
from vpnlab.shell.xfrm import KernelDataplane, encapsulate, outer_source
from vpnlab.wire.esp import EspSession, StaticKeys, esp_sa_rows


@unique
class Exit(IntEnum):
    """The client's exit code: how its session ended (the ``vpnlab client`` help lists them)."""

    OK = 0
    """Stopped by a signal, or the session ended another way."""
    UNREACHABLE = 3
    """``Close.SERVER_UNREACHABLE``: no Welcome within the 2.5 s connect timeout."""
    PEER_LOST = 4
    """``Close.PEER_LOST``: 6 s without a datagram from the server."""
    SERVER_CLOSED = 5
    """``Close.BYE``: the server said Bye."""
    KEYS_EXHAUSTED = 6
    """``Close.KEYS_EXHAUSTED``: the keys can seal nothing more (static keys used up, or no
    rekey came); with ``--reconnect`` a new handshake gives new keys."""


RETRY_ON = (Exit.UNREACHABLE, Exit.PEER_LOST, Exit.SERVER_CLOSED, Exit.KEYS_EXHAUSTED)
RECONNECT_PAUSE_S = 1.0


@dataclass(frozen=True)
class ClientOptions:
    """Everything ``vpnlab client`` can be told."""

    server: IPv4Address | IPv6Address
    """Reached over IPv4 or IPv6 (the outer packets' family)."""
    format: Format | None
    static_keys: StaticKeys | None = None
    esp_sa_file: Path | None = None
    port: int = PORT
    local_address: str = "0.0.0.0"
    local_port: int = PORT
    tun_name: str = TUN_NAME
    mtu: int = TUN_MTU
    queue_bytes: int = QUEUE_BYTES
    """``--queue-bytes``: tun0's ring and the socket's buffers hold about this much each
    (``queues.py``), a bound on the packets waiting for this daemon, hence on latency
    (default ``queues.QUEUE_BYTES``)."""
    status_file: Path | None = None
    allow_host_changes: bool = False
    reconnect: bool = False
    routes: tuple[IPv4Network | IPv6Network, ...] = ()
    """Site to site: only these networks go through the tunnel (default: everything)."""
    datapath: type[Datapath] = SimpleDatapath
    """The loop's ends: a packet per system call, or many (``vpnlab/fast/``, the CLI chooses)."""
    transport: str = "udp"
    """udp (the notes), or tcp: the TCP-over-TCP counter-example (``transport.py``)."""
    mode: str = "tun"
    """tun (the notes: IP packets), or tap: Ethernet frames on tap0 (``tap.py``)."""
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    """The notes' 2.5 s and 6 s (``--liveness-timeout``: 0 for a peer without keepalives)."""
    kernel_peer: bool = False
    """Static keys against Linux's own ESP: NAT-keepalives, no Bye (``esp.KernelPeerSession``)."""
    kernel_dataplane: bool = False
    """After the handshake the kernel's xfrm carries the data (``xfrm.py``); we keep the rest."""
    fail_closed: bool = False
    """CleanUp leaves the redirected networks unreachable instead of restoring the routes
    (``routing.ClientRouting``): nothing leaves unencrypted while the tunnel is down."""

    @property
    def server_address(self) -> tuple[str, int]:
        return (str(self.server), self.port)

    @property
    def bind_address(self) -> str:
        """Init: the local address, of the server's family (``::`` for a server over IPv6)."""
        if self.server.version == 6 and self.local_address == "0.0.0.0":
            return "::"
        return self.local_address


def make_core(options: ClientOptions) -> ClientCore:
    """The sans-IO client: with the format's handshake, or with static keys (none)."""
    layer2 = options.mode == "tap"
    mss_clamp = None if layer2 else options.mtu - TCP_IP_HEADERS_BYTES  # TCP SYNs from tun0
    if options.static_keys is not None:
        established = options.static_keys.client(kernel_peer=options.kernel_peer)
        return ClientCore(
            options.server_address,
            None,
            established=established,
            timeouts=options.timeouts,
            layer2=layer2,
            mss_clamp=mss_clamp,
        )
    format = options.format
    assert format is not None

    def new_handshake() -> ClientHandshake:  # each rekey: a fresh ephemeral key
        return format.client_handshake(os.urandom)

    return ClientCore(
        options.server_address,
        format.client_handshake(os.urandom),
        timeouts=options.timeouts,
        clock_offset_s=time.time() - time.monotonic(),
        layer2=layer2,
        mss_clamp=mss_clamp,
        new_handshake=None
        if format.name == "plain"
        else lambda: format.client_handshake(os.urandom),
    )


def client_connection(
    core: ClientCore, transport: Transport, signals: SignalPipe, reporter: Reporter
) -> bool:
    """ClientConnection: send Hello and wait (select with a timeout) for the server's answer.

    The select loop of ``tunnel.py`` runs without tun0 until the core leaves CONNECTING: the
    Welcome arrived, or the 2.5 s connect timeout (Hello retried every 0.5 s) ran out.

    Returns:
        True once the handshake completed; False on the 2.5 s timeout or a signal.
    """
    reporter.state(State.CONNECTING, f"server {core.server[0]}:{core.server[1]}")
    core.connect(time.monotonic())
    SelectLoop(core, None, transport, reporter, signals).run(until=State.CONNECTING)
    return core.state is State.CONNECTED


def run_client(options: ClientOptions, reporter: Reporter) -> Exit:
    """The client daemon: one session from Init to CleanUp, or (``--reconnect``) one after
    another while the server is lost or unreachable. Returns the process exit code.

    Raises:
        SetupError: a local step (socket, tun0, routes) failed; CleanUp has run.
    """
    refuse_host_changes(options.allow_host_changes)
    if options.reconnect and options.static_keys is not None:
        raise SetupError("--reconnect needs the handshake: static keys must not be reused")
    signals = SignalPipe()
    try:
        while True:
            code = one_session(options, reporter, signals)
            if not options.reconnect or signals.received is not None or code not in RETRY_ON:
                return code
            reporter.log(f"reconnecting in {RECONNECT_PAUSE_S} s (--reconnect)")
            if select.select([signals.reader], [], [], RECONNECT_PAUSE_S)[0]:
                return Exit.OK
    finally:
        signals.close()


def one_session(options: ClientOptions, reporter: Reporter, signals: SignalPipe) -> Exit:
    """Init, ClientConnection, CreateTunDev, Ifconfig, SetRouting(1), the loop, CleanUp."""
    server = options.server_address
    core = make_core(options)
    datapath = options.datapath(reporter)
    transport = tun_fd = routing = dataplane = None
    try:
        transport = open_transport(
            options.transport,
            options.bind_address,
            options.local_port,
            datapath=datapath,
            server=server,
            drops=core.counters.drops,
            buffer_bytes=options.queue_bytes,
        )
        if not client_connection(core, transport, signals, reporter):
            if signals.received is not None:
                return Exit.OK
            reporter.log(
                f"{Close.SERVER_UNREACHABLE}: no answer from {server[0]}:{server[1]} "
                f"within {CONNECT_TIMEOUT_S} s"
            )
            return Exit.UNREACHABLE
        tun_fd, routing = bring_up(options, datapath, core, reporter)
        if options.kernel_dataplane:  # the kernel's ESP from here on; tun0 is not read
            dataplane = hand_to_kernel(options, core, transport, reporter)

        def on_event(event: Event) -> None:  # a rekey: export the new keys too
            if isinstance(event, HandshakeCompleted):
                export_keys(options, core)
                if dataplane is not None and core.session is not None:
                    dataplane.hand_over(core.session, time.monotonic())

        device = datapath.device(tun_fd, core.counters.drops)
        loop = SelectLoop(core, device, transport, reporter, signals, on_event)
        if dataplane is not None:  # tun0 is not read; a late datagram may still be written
            loop.unregister(tun_fd)
        core.tunnel_up(time.monotonic())  # the keepalive and liveness clocks start here
        loop.run()
        return exit_code(core, reporter)
    finally:
        if dataplane is not None:
            dataplane.remove()
        clean_up(core, transport, tun_fd, routing, reporter, f"cleaned up ({core.close_reason})")


def hand_to_kernel(
    options: ClientOptions, core: ClientCore, transport: Transport, reporter: Reporter
) -> KernelDataplane:
    """``--kernel-dataplane``: the session's keys into xfrm states and policies (``xfrm.py``)."""
    assert core.session is not None
    assert isinstance(transport, UdpTransport)  # the CLI refuses --transport tcp with it
    address = core.session.tunnel_address
    if address is None:
        raise SetupError("--kernel-dataplane needs an IPv4 tunnel address; the server gave "
                         f"only {core.session.tunnel_address6}")  # fmt: skip
    server = str(options.server)
    local = (outer_source(server), options.local_port)
    dataplane = KernelDataplane(address.ip, "client", local, (server, options.port))
    try:
        dataplane.hand_over(core.session, time.monotonic())
        encapsulate(transport.sock)
    except BaseException:
        dataplane.remove()  # what was added before the step that failed
        raise
    reporter.log(f"kernel data plane: xfrm states {local[0]} <-> {server}, policies for "
                 f"{address.ip}; tun0 is no longer read")  # fmt: skip
    return dataplane


def bring_up(
    options: ClientOptions, datapath: Datapath, core: ClientCore, reporter: Reporter
) -> tuple[int, ClientRouting]:
    """After the Welcome: the key export, CreateTunDev, Ifconfig, SetRouting(1).

    Returns:
        tun0's fd, and the routing that CleanUp restores.
    """
    assert core.session is not None
    address, address6 = tunnel_addresses(options, core.session.client_address)
    export_keys(options, core)
    tun_fd, tun_name = create_tun_dev(
        options.tun_name, device_flags(options.mode, datapath.tun_flags)
    )
    try:
        budget = options.queue_bytes
        ring = ring_entries(budget, datapath.super_packet_bytes or options.mtu)
        ifconfig(tun_name, address, options.mtu, address6, txqueuelen=ring)
        # tap: routes via the server's tap0 address, the first host (10.8.0.1), found by ARP
        gateway = next(address.network.hosts()) if options.mode == "tap" and address else None
        routing = ClientRouting(
            options.server,
            tun_name,
            options.routes,
            gateway=gateway,
            ipv6=address6 is not None,
            fail_closed=options.fail_closed,
        )
        routing.apply()
    except BaseException:
        os.close(tun_fd)
        raise
    both = " and ".join(str(a) for a in (address, address6) if a)
    reporter.update(
        tunnel_address=str(address or ""), tunnel_address6=str(address6 or ""), tun=tun_name
    )
    reporter.update(queues={"tun_txqueuelen": ring, "socket_buffer_bytes": budget})
    reporter.state(State.CONNECTED, f"tunnel {both} on {tun_name}, routes via {tun_name}")
    return tun_fd, routing


def tunnel_addresses(
    options: ClientOptions, given: TunnelAddress
) -> tuple[IPv4Interface | None, IPv6Interface | None]:
    """Ifconfig's addresses: the Welcome's IPv4 one and its twin fd10:8::N (dual stack), or
    the IPv6-only one alone (the server's IPv4 pool was used up; IPv4 then still goes into
    tun0, whose server drops it, rather than around the tunnel in the clear).

    Raises:
        SetupError: an IPv6-only address, but this tun0 carries no IPv6 (TAP mode, an MTU
            below 1280, IPv6 off).
    """
    six = carries_ipv6(options.mode, options.mtu)
    if isinstance(given, IPv4Interface):
        return given, tunnel_address6(given) if six else None
    if not six:
        raise SetupError(
            f"the server gave only the IPv6 address {given}, and this tun0 carries no IPv6 "
            "(--mode tap, an MTU below 1280, or IPv6 off)"
        )
    return None, given


def export_keys(options: ClientOptions, core: ClientCore) -> None:
    """Key export (``--esp-sa-file``): tshark esp_sa rows of every ESP SA that is up."""
    if options.esp_sa_file is None or core.session is None:
        return
    rows = [
        row
        for protection in core.session.protections()
        if isinstance(protection, EspSession)
        for row in esp_sa_rows(protection, "*", str(options.server))
    ]
    if rows:
        write_secret(options.esp_sa_file, esp_sa_text(rows))


def exit_code(core: ClientCore, reporter: Reporter) -> Exit:
    """How the session ended, as the process exit code (the ``vpnlab client`` help lists them)."""
    if core.close_reason is Close.PEER_LOST:
        reporter.log(f"{Close.PEER_LOST}: no datagram from the server for 6 s")
        return Exit.PEER_LOST
    if core.close_reason is Close.BYE:
        reporter.log("the server closed the session (Bye)")
        return Exit.SERVER_CLOSED
    if core.close_reason is Close.KEYS_EXHAUSTED:
        reporter.log(f"{Close.KEYS_EXHAUSTED}: the sequence numbers are used up, no new keys came")
        return Exit.KEYS_EXHAUSTED
    return Exit.OK
