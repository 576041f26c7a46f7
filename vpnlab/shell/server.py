"""ServerConnection: the VPN server daemon, in the order of the design notes.

    Init(PORT)          UDP socket bound to port 4500
    CreateTunDev        tun0 (IFF_TUN | IFF_NO_PI)
    Ifconfig            10.8.0.1/24, MTU, up
    SetRouting(0)       forwarding on, the NAT rule (nftables) for the tunnel network
    ServerConnection    loop: Hellos from clients are answered with a tunnel address
                        (once 10.8.0.0/24 is used up and tun0 carries IPv6: an IPv6-only
                        one, fd10:8::100 and up); TunSelected / SockSelected carry their
                        packets; a client silent for 6 s is dropped ("peer lost")
    CleanUp             Bye to every client, NAT rule removed, forwarding restored, tun0 and
                        the socket closed (on SIGINT/SIGTERM, or with --once when the client
                        leaves, as in the notes)

With ``--kernel-dataplane`` the kernel's xfrm carries every session's data (``xfrm.py``,
:class:`KernelSessions`): the socket hands ESP to the kernel, each handshake's keys become
xfrm states and policies, and the loop sees only Hellos; tun0 is not read.

The notes' server answers one client and ends with it; ours keeps listening for the next
one unless ``--once`` is given.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Network
from pathlib import Path

from vpnlab.core.constants import (
    IPV6_ONLY_CLIENTS,
    PORT,
    SERVER_TUNNEL_ADDRESS,
    TUN_MTU,
    TUN_NAME,
)
from vpnlab.core.errors import VpnlabError
from vpnlab.core.events import Address, Event, HandshakeCompleted, SessionClosed
from vpnlab.core.formats import Established, Format, Peer
from vpnlab.core.packet import TCP_IP_HEADERS_BYTES, unmapped
from vpnlab.core.pool import tunnel_address6
from vpnlab.core.reasons import Drop, State
from vpnlab.core.server_core import ServerCore
from vpnlab.core.session import DEFAULT_TIMEOUTS, Timeouts
from vpnlab.shell.keys import esp_sa_text, write_secret
from vpnlab.shell.peers import (
    PEERS,
    append_hello_stamps,
    open_hello_stamps_log,
    read_hello_stamps,
    read_peers,
    write_hello_stamps,
)
from vpnlab.shell.queues import QUEUE_BYTES, SERVER_MIN_RING_ENTRIES, ring_entries
from vpnlab.shell.report import Reporter
from vpnlab.shell.routing import ServerRouting, carries_ipv6, refuse_host_changes
from vpnlab.shell.tap import device_flags, mac_address
from vpnlab.shell.transport import Transport, UdpTransport, open_transport
from vpnlab.shell.tun import create_tun_dev, ifconfig
from vpnlab.shell.tunnel import (
    Datapath,
    Periodic,
    SelectLoop,
    SignalPipe,
    SimpleDatapath,
    clean_up,
)
from vpnlab.shell.xfrm import KernelDataplane, KernelHeld, encapsulate, outer_source
from vpnlab.wire.esp import EspSession, StaticKeys, esp_sa_rows
from vpnlab.wire.identity import check_peers


@dataclass(frozen=True)
class ServerOptions:
    """Everything ``vpnlab server`` can be told."""

    format: Format | None
    static_keys: StaticKeys | None = None
    esp_sa_file: Path | None = None
    listen: str = "0.0.0.0"
    port: int = PORT
    tunnel_address: IPv4Interface = IPv4Interface(SERVER_TUNNEL_ADDRESS)
    tun_name: str = TUN_NAME
    mtu: int = TUN_MTU
    external_interface: str | None = None
    nft_file: Path = Path("/run/vpnlab/server-nat.nft")
    status_file: Path | None = None
    once: bool = False
    isolate_clients: bool = False
    client_networks: tuple[tuple[IPv4Address, IPv4Network | IPv6Network], ...] = ()
    allow_host_changes: bool = False
    datapath: type[Datapath] = SimpleDatapath
    """The loop's ends: a packet per system call, or many (``vpnlab/fast/``, the CLI chooses)."""
    queue_bytes: int = QUEUE_BYTES
    """``--queue-bytes``: tun0's ring and the socket's buffers hold about this much each
    (``queues.py``), a bound on the packets waiting for this daemon, hence on latency
    (default ``queues.QUEUE_BYTES``)."""
    transport: str = "udp"
    """udp (the notes), or tcp: the TCP-over-TCP counter-example (``transport.py``)."""
    mode: str = "tun"
    """tun (the notes: IP packets), or tap: Ethernet frames, clients switched by MAC."""
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    """The notes' 6 s liveness (``--liveness-timeout``: 0 for a peer without keepalives)."""
    kernel_peer: bool = False
    """Static keys against Linux's own ESP: NAT-keepalives, no Bye (``esp.KernelPeerSession``)."""
    peers_folder: Path | None = None
    """Identity mode: the folder of ``peers.toml``, read again when it changes (revocations)."""
    kernel_dataplane: bool = False
    """Each handshake's keys go to the kernel's xfrm, which carries the data (``xfrm.py``)."""


class EspSaExport:
    """Key export (``--esp-sa-file``): tshark esp_sa rows for every ESP session that is up
    (both directions), written again whenever a session starts or ends.

    Each set of keys' rows is formatted once and kept while the keys live: formatting every
    session's rows on each of 250 handshakes (and again on each of their 250 ends) held up
    the server's loop for a quarter of a second (``vpnlab bench --flood``).
    """

    def __init__(self, path: Path, listen: str) -> None:
        self.path = path
        self.local = "*" if listen in ("0.0.0.0", "::") else listen
        self._rows: dict[int, tuple[EspSession, str, list[str]]] = {}

    def write(self, core: ServerCore) -> None:
        rows: list[str] = []
        kept: dict[int, tuple[EspSession, str, list[str]]] = {}
        for (peer, _), session in core.sessions.items():
            for protection in session.protections():  # a rekey's new keys, and the old ones
                if not isinstance(protection, EspSession):
                    continue
                entry = self._rows.get(id(protection))
                if entry is None or entry[0] is not protection or entry[1] != peer:
                    entry = (protection, peer, esp_sa_rows(protection, self.local, unmapped(peer)))
                kept[id(protection)] = entry
                rows += entry[2]
        self._rows = kept
        write_secret(self.path, esp_sa_text(rows))


class KernelSessions:
    """``--kernel-dataplane``: every client's session in the kernel's xfrm, by its tunnel
    address (``xfrm.KernelDataplane``, the same hand-off as the client's).

    SetRouting, per session: after each completed handshake (the first, a rekey, or one from
    a new address: roaming, its Hello the proof) its keys go to the kernel in one ``ip
    -batch``, before the Welcome leaves; the states of two handshakes ago go. CleanUp, per
    session: when it ends (``SessionClosed``: revoked, a liveness timeout if one was given)
    and for all of them at exit. A hand-off that fails ends that session only
    (``ServerCore.end_session``); the others go on.
    """

    def __init__(self, options: ServerOptions, core: ServerCore, reporter: Reporter) -> None:
        self.port = options.port
        self.listen = options.listen
        self.core = core
        self.reporter = reporter
        self.held: dict[IPv4Address, KernelDataplane] = {}

    def take_over(self, transport: Transport, loop: SelectLoop, tun_fd: int) -> None:
        """Before the loop: ESP on the socket goes to xfrm (Hellos still come up), and the
        loop leaves tun0 (the kernel routes tun0's traffic into xfrm before tun0)."""
        assert isinstance(transport, UdpTransport)  # the CLI refuses --transport tcp with it
        encapsulate(transport.sock)
        loop.unregister(tun_fd)
        self.reporter.log("kernel data plane: ESP on the socket goes to xfrm; tun0 is not read")

    def handle(self, events: list[Event], now: float) -> None:
        """A batch of the core's events: hand-offs and removals, in their order."""
        for event in events:
            if type(event) is HandshakeCompleted:
                self.hand_over(event.peer, now)
            elif type(event) is SessionClosed:
                self.remove(event.peer)

    def hand_over(self, peer: Address, now: float) -> None:
        session = self.core.sessions.get(peer)
        keys = self.core.keys_in_use(peer)
        if session is None or keys is None or isinstance(keys, KernelHeld):
            return
        address = session.tunnel_address
        try:
            if address is None:
                raise VpnlabError("no IPv4 tunnel address (--kernel-dataplane carries IPv4)")
            dataplane = self.held.get(address.ip)
            if dataplane is None:
                local = self.listen if self.listen != "0.0.0.0" else outer_source(peer[0])
                dataplane = KernelDataplane(address.ip, "server", (local, self.port), peer)
                self.held[address.ip] = dataplane
            moved = dataplane.peer != peer
            dataplane.hand_over(session, now, peer)
        except (VpnlabError, OSError) as exc:
            self.reporter.log(f"kernel data plane: {peer[0]}:{peer[1]}: {exc}; session ended")
            if address is not None:
                self.remove_address(address.ip)
            for event in self.core.end_session(peer):
                self.reporter.event(event)
            return
        where = f"{peer[0]}:{peer[1]}" + (" (moved)" if moved else "")
        self.reporter.log(f"kernel data plane: xfrm states and policies for {address.ip} at "
                          f"{where}, reqid {dataplane.reqid:#010x}")  # fmt: skip

    def remove(self, peer: Address) -> None:
        """CleanUp of the session at ``peer`` (its states and policies)."""
        for address, dataplane in list(self.held.items()):
            if dataplane.peer == peer:
                self.remove_address(address)

    def remove_address(self, address: IPv4Address) -> None:
        dataplane = self.held.pop(address, None)
        if dataplane is not None:
            dataplane.remove()

    def remove_all(self) -> None:
        """CleanUp at exit: every session's states and policies."""
        for address in list(self.held):
            self.remove_address(address)
        if self.held == {}:
            self.reporter.log("kernel data plane: xfrm states and policies removed")


Networks = tuple[tuple[IPv4Address, IPv4Network | IPv6Network], ...]


def networks_by_client(
    pairs: Networks,
) -> dict[IPv4Address, list[IPv4Network | IPv6Network]]:
    """Site to site: (client tunnel address, network) pairs as the core takes them."""
    networks: dict[IPv4Address, list[IPv4Network | IPv6Network]] = {}
    for client, network in pairs:
        networks.setdefault(client, []).append(network)
    return networks


def peer_networks(peers: tuple[Peer, ...]) -> Networks:
    return tuple((peer.tunnel_address.ip, net) for peer in peers for net in peer.networks)


class PeersWatch:
    """Identity mode: read ``peers.toml`` again when it changes (``vpnlab keys add-peer``,
    ``revoke``), validate all of it, then apply all of it: new peers are answered, revoked or
    changed ones lose their session at once, and the networks behind the peers (site to
    site) are routed as the new file says, in the core and in the server's routing table.
    A file that fails any check changes nothing: the reason goes to the log and the status
    (``peers_error``), and the running peers stay.

    Args:
        fixed_networks: the ``--client-network`` pairs of the command line (they stay).
        routing: the server's routing (None: the core only, as in the unit tests).
    """

    def __init__(
        self,
        folder: Path | None,
        address: IPv4Interface,
        core: ServerCore,
        reporter: Reporter,
        *,
        fixed_networks: Networks = (),
        routing: ServerRouting | None = None,
    ) -> None:
        self.path = folder / PEERS if folder else None
        self.address = address
        self.core = core
        self.reporter = reporter
        self.fixed_networks = fixed_networks
        self.routing = routing
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat() if self.path else None
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size) if stat else None

    def check(self, now: float) -> list[Event]:
        stamp = self._stamp()
        if stamp == self.stamp or self.path is None:
            return []
        self.stamp = stamp
        try:
            peers = read_peers(self.path.parent)
            check_peers(peers, self.address)
        except VpnlabError as exc:  # a half-edited or wrong file: keep the peers we have
            error = f"{exc}; keeping the previous peers"
            self.reporter.log(f"peers: {error}")
            self.reporter.update(peers_error=error)
            return []
        self.reporter.update(peers_error=None)
        self.reporter.log(f"peers: {self.path} changed: {len(peers)} peers")
        pairs = self.fixed_networks + peer_networks(peers)
        events = self.core.update_peers(peers)
        self.core.set_client_networks(networks_by_client(pairs))
        if self.routing is not None:
            self.routing.set_client_networks(tuple(network for _, network in pairs))
        return events


class HelloStamps:
    """Identity mode: the handshake's latest Hello timestamp per peer, on disk in the
    server's identity folder (read at start), so a recorded Hello is not answered again
    after a restart.

    Two files: ``hello-stamps.json``, whole, and ``hello-stamps.log``, a line appended for
    each answered Hello before its Welcome leaves (one write of a few dozen bytes; rewriting
    the whole file for each of 250 handshakes held up the tunnel's packets while the clients
    connected, ``vpnlab bench --flood``). A server that is killed and started again finds
    them, since the kernel keeps what was written. On the disk itself (fdatasync of the log)
    once a second, in a thread of its own so that the loop never waits for the disk (an
    fsync costs 3-6 ms here): only a crash of the whole machine can lose the last second of
    timestamps. At start, at CleanUp and when the log passes ``LOG_LINES`` lines, the log is
    merged into the whole file (durable: fsync, rename, fsync of the folder) and emptied.
    """

    LOG_LINES = 10_000

    def __init__(self, folder: Path | None, core: ServerCore) -> None:
        self.folder = folder
        self.latest: dict[bytes, int] | None = getattr(core.handshake, "latest", None)
        self.saved: dict[bytes, int] = {}
        self.log: int | None = None
        self.lines = 0
        self.unsynced = False
        self._syncing: threading.Thread | None = None
        if folder is not None and self.latest is not None:
            self.latest.update(read_hello_stamps(folder))
            self._merge()

    def _merge(self) -> None:
        """The whole file written (durable), then the log emptied."""
        assert self.folder is not None and self.latest is not None
        if self._syncing is not None:
            self._syncing.join()
        write_hello_stamps(self.folder, self.latest, durable=True)
        if self.log is not None:
            os.close(self.log)
        self.log = open_hello_stamps_log(self.folder)
        self.saved, self.lines, self.unsynced = dict(self.latest), 0, False

    def save(self) -> None:
        """A line in the log for each timestamp a handshake changed."""
        if self.log is None or self.latest is None or self.latest == self.saved:
            return
        changed = {k: v for k, v in self.latest.items() if self.saved.get(k) != v}
        append_hello_stamps(self.log, changed)
        self.saved.update(changed)
        self.lines += len(changed)
        self.unsynced = True

    def sync(self, now: float = 0.0) -> list[Event]:
        """Once a second: the log onto the disk, in a thread (or merged, when it is long)."""
        if not self.unsynced or self.log is None:
            return []
        if self.lines > self.LOG_LINES:
            self._merge()
        elif self._syncing is None or not self._syncing.is_alive():
            self.unsynced = False
            self._syncing = threading.Thread(
                target=os.fdatasync, args=(self.log,), name="hello stamps", daemon=True
            )
            self._syncing.start()
        return []

    def close(self) -> None:
        """CleanUp: the log merged into the whole file, on the disk."""
        if self.log is None:
            return
        self._merge()
        os.close(self.log)
        self.log = None


def guarded(
    name: str, task: Periodic, core: ServerCore, reporter: Reporter, then: Periodic | None = None
) -> Periodic:
    """A periodic task that a bug cannot end: counted ("bug: NAME: Type") and logged once;
    ``then``, another, guarded the same way and run after it whatever happened."""

    def run(now: float) -> list[Event]:
        events: list[Event] = []
        for part in (task, then) if then is not None else (task,):
            try:
                events += part(now)
            except Exception as exc:
                key = Drop.BUG.detail(f"{name}: {type(exc).__name__}")
                core.counters.drops[key] += 1
                if core.counters.drops[key] == 1:
                    reporter.log(f"{key} ({exc!r}); the server goes on, later ones are counted")
        return events

    return run


def peers_watch(
    options: ServerOptions, core: ServerCore, reporter: Reporter, routing: ServerRouting
) -> PeersWatch:
    """The reload of ``peers.toml``; the command line's own ``--client-network`` pairs stay."""
    initial = getattr(options.format, "server", None)
    from_peers = peer_networks(initial.peers if initial else ())
    return PeersWatch(
        options.peers_folder,
        options.tunnel_address,
        core,
        reporter,
        fixed_networks=tuple(p for p in options.client_networks if p not in from_peers),
        routing=routing,
    )


def server_routing(options: ServerOptions) -> ServerRouting:
    """SetRouting(0)'s forwarding and NAT, applied at bring-up, restored at CleanUp."""
    return ServerRouting(
        options.tunnel_address.network,
        options.external_interface,
        options.nft_file,
        client_networks=tuple(network for _, network in options.client_networks),
    )


def server_transport(options: ServerOptions, datapath: Datapath, core: ServerCore) -> Transport:
    """Init(PORT): the socket (or TCP listener) the clients reach."""
    return open_transport(
        options.transport,
        options.listen,
        options.port,
        datapath=datapath,
        drops=core.counters.drops,
        buffer_bytes=options.queue_bytes,
    )


def make_core(options: ServerOptions) -> ServerCore:
    """The sans-IO server: the format's handshake (or static keys), the address pool, limits."""
    static = options.static_keys
    return ServerCore(
        options.format,
        options.tunnel_address,
        os.urandom,
        once=options.once,
        timeouts=options.timeouts,
        clock_offset_s=time.time() - time.monotonic(),
        static=(
            Established(static.server(options.kernel_peer), static.client_address)
            if static
            else None
        ),
        isolate_clients=options.isolate_clients,
        client_networks=networks_by_client(options.client_networks),
        layer2=options.mode == "tap",
        mss_clamp=None if options.mode == "tap" else options.mtu - TCP_IP_HEADERS_BYTES,
        ipv6_only_clients=(  # once 10.8.0.0/24 is used up: fd10:8::100 and up
            IPV6_ONLY_CLIENTS
            if static is None
            and carries_ipv6(options.mode, options.mtu)
            and not options.kernel_dataplane  # its policies select IPv4 addresses
            else 0
        ),
        kernel_dataplane=options.kernel_dataplane,
    )


def run_server(options: ServerOptions, reporter: Reporter) -> int:
    """The server daemon from Init to CleanUp; returns the process exit code.

    Raises:
        SetupError: a local step (socket, tun0, forwarding, nftables) failed; CleanUp has run.
    """
    refuse_host_changes(options.allow_host_changes)
    signals = SignalPipe()
    transport = tun_fd = None
    datapath = options.datapath(reporter)
    routing = server_routing(options)
    core = make_core(options)
    stamps = HelloStamps(options.peers_folder, core)
    export = EspSaExport(options.esp_sa_file, options.listen) if options.esp_sa_file else None
    kernel = KernelSessions(options, core, reporter) if options.kernel_dataplane else None

    def on_events(events: list[Event]) -> None:
        """Once per batch of events, not per event: 250 Byes arriving together rewrote the
        key export once each, 137 ms in one wake-up (``vpnlab bench --flood``)."""
        kinds = {type(event) for event in events}
        if HandshakeCompleted in kinds:
            stamps.save()  # before the Welcomes leave (the loop sends after the events)
        if export and kinds & {HandshakeCompleted, SessionClosed}:
            export.write(core)
        if kernel is not None:
            kernel.handle(events, time.monotonic())  # before the Welcomes leave

    watch = peers_watch(options, core, reporter, routing)
    try:
        transport = server_transport(options, datapath, core)
        tun_fd = bring_up(options, datapath, core, routing, reporter)
        loop = SelectLoop(
            core,
            datapath.device(tun_fd, core.counters.drops),
            transport,
            reporter,
            signals,
            on_events=on_events,
            every_second=guarded("peers", watch.check, core, reporter, then=stamps.sync)
            if options.peers_folder
            else None,
        )
        if kernel is not None:
            kernel.take_over(transport, loop, tun_fd)
        loop.run()
        return 0
    finally:
        if kernel is not None:
            kernel.remove_all()
        stamps.close()
        summary = "cleaned up: NAT rule removed, forwarding restored"
        clean_up(core, transport, tun_fd, routing, reporter, summary)
        signals.close()


def bring_up(
    options: ServerOptions,
    datapath: Datapath,
    core: ServerCore,
    routing: ServerRouting,
    reporter: Reporter,
) -> int:
    """CreateTunDev, Ifconfig, SetRouting(0); returns tun0's fd."""
    flags = device_flags(options.mode, datapath.tun_flags)
    tun_fd, tun_name = create_tun_dev(options.tun_name, flags)
    address6 = None
    if carries_ipv6(options.mode, options.mtu):  # dual stack: fd10:8::1/64 beside 10.8.0.1/24
        address6 = tunnel_address6(options.tunnel_address)
        routing.network6 = address6.network
    try:
        budget = options.queue_bytes
        entry = datapath.super_packet_bytes or options.mtu
        ring = ring_entries(budget, entry, SERVER_MIN_RING_ENTRIES)
        ifconfig(tun_name, options.tunnel_address, options.mtu, address6, txqueuelen=ring)
        if options.mode == "tap":
            core.set_local_mac(mac_address(tun_name))
        routing.tun_name = tun_name
        routing.apply()
    except BaseException:
        os.close(tun_fd)
        raise
    nat66 = " (and NAT66)" if routing.network6 else ""
    nat = f"NAT{nat66} out of {options.external_interface}" if routing.nat_applied else "no NAT"
    if options.static_keys is not None:
        cipher = f"static keys, {options.static_keys.cipher}"
    else:
        assert options.format is not None  # one of the two, or ServerCore had refused
        cipher = f"cipher {options.format.name}"
    reporter.update(
        tun=tun_name,
        tunnel_address=str(options.tunnel_address),
        tunnel_address6=str(address6 or ""),
        queues={"tun_txqueuelen": ring, "socket_buffer_bytes": budget},
    )
    both = f"{options.tunnel_address} and {address6}" if address6 else str(options.tunnel_address)
    reporter.state(
        State.LISTENING,
        f"{options.transport} {options.listen}:{options.port}, "
        f"{tun_name} {both}, {cipher}, forwarding on, {nat}",
    )
    return tun_fd
