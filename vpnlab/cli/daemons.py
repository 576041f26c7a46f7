"""``vpnlab server`` and ``vpnlab client``: parse the options, choose the data path, run."""

from __future__ import annotations

import argparse
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path

from vpnlab.cli.arguments import Subparsers, bounded, port_number
from vpnlab.core.constants import (
    LIVENESS_TIMEOUT_S,
    PORT,
    REKEY_AFTER_S,
    SERVER_TUNNEL_ADDRESS,
    TUN_MTU,
    TUN_NAME,
    tun_mtu,
)
from vpnlab.core.errors import SetupError, VpnlabError
from vpnlab.core.formats import Format
from vpnlab.core.session import Timeouts
from vpnlab.fast.datapath import FastDatapath
from vpnlab.shell.client import ClientOptions, run_client
from vpnlab.shell.keys import read_psk, read_static_keys
from vpnlab.shell.peers import read_client_config, read_server_identity
from vpnlab.shell.queues import MIN_QUEUE_BYTES, QUEUE_BYTES
from vpnlab.shell.report import Reporter
from vpnlab.shell.routing import check_interface_name
from vpnlab.shell.server import ServerOptions, run_server
from vpnlab.shell.tap import DEFAULT_MODE, MODES, device_mtu, device_name
from vpnlab.shell.transport import DEFAULT_TRANSPORT, TRANSPORTS
from vpnlab.shell.tun import ifreq
from vpnlab.shell.tunnel import Datapath, SimpleDatapath
from vpnlab.shell.xfrm import kernel_has_esp
from vpnlab.wire.ciphers import CIPHERS, DEFAULT_CIPHER, make_format
from vpnlab.wire.crypto import algorithm
from vpnlab.wire.esp import StaticKeys
from vpnlab.wire.handshake import EspFormat
from vpnlab.wire.identity import IdentityFormat

DATAPATHS: dict[str, type[Datapath]] = {
    datapath.name: datapath for datapath in (SimpleDatapath, FastDatapath)
}
"""``--datapath``: the select loop's two ends, one packet per system call or many."""
MIN_MTU, MAX_MTU = 68, 65535
"""``--mtu``: what Linux lets a tun device have (RFC 791's minimum, the largest IP packet)."""
DEFAULT_DATAPATH = FastDatapath.name
"""The batched ends are the default; ``--mode tap`` and ``--transport tcp`` run the simple ones.
Captures stay exact: the lab turns off ``tx-udp-segmentation`` on its veths (``lab/build.py``),
so the kernel cuts each UDP GSO batch into datagrams before the wire, as a NIC would."""


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=port_number, default=PORT, help="UDP port (default %(default)s)"
    )
    parser.add_argument(
        "--tun", type=tun_name, default=TUN_NAME, help="TUN interface name (default %(default)s)"
    )
    parser.add_argument(
        "--mtu",
        type=bounded(int, MIN_MTU, MAX_MTU),
        help="tun MTU (default: derived from the cipher, 1500 - 28 - its overhead; "
        f"{TUN_MTU} fits every cipher)",
    )
    parser.add_argument(
        "--datapath",
        choices=tuple(DATAPATHS),
        help="simple: the select loop of the design notes; fast: TUN offloads, UDP GSO/GRO "
        f"(default {DEFAULT_DATAPATH}; {SimpleDatapath.name} with --mode tap or --transport tcp)",
    )
    parser.add_argument(
        "--queue-bytes",
        type=int,
        metavar="BYTES",
        help="at most about this much waits for the daemon in each queue: tun0's ring "
        "(its txqueuelen: BYTES over the largest packet a read returns, 65,536 on the fast "
        "path, 4 to 500) and the UDP socket's buffers (receiving: 1 KiB more per session); "
        "less queue is less latency under load, "
        f"a full queue drops (default {QUEUE_BYTES}, at least {MIN_QUEUE_BYTES})",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=DEFAULT_MODE,
        help="tun: IP packets on tun0 (the notes); tap: Ethernet frames on tap0, the server "
        "switches them by MAC, ARP crosses the tunnel (simple data path only) "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=DEFAULT_TRANSPORT,
        help="udp: the notes' tunnel; tcp: length-prefixed frames over one TCP connection, "
        "the TCP-over-TCP counter-example the notes warn about (TCP meltdown; simple data path "
        "only) (default %(default)s)",
    )
    parser.add_argument(
        "--cipher",
        choices=CIPHERS,
        default=DEFAULT_CIPHER,
        help="wire format (default %(default)s)",
    )


def add_keying(parser: argparse.ArgumentParser) -> None:
    """How the tunnel is keyed (identities are the daemons' own options), and the timers."""
    parser.add_argument(
        "--psk-file",
        type=Path,
        help="the notes' simple case: one pre-shared key file (mode 600) for every client",
    )
    parser.add_argument(
        "--static-keys",
        type=Path,
        help="static-key mode: SPIs and keys from this JSON file (mode 600), no handshake",
    )
    parser.add_argument(
        "--esp-sa-file",
        type=Path,
        help="keep tshark esp_sa rows for the live sessions here (mode 600), for decryption",
    )
    parser.add_argument("--status-file", type=Path, help="JSON status, rewritten every second")
    parser.add_argument(
        "--liveness-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="end the session after this long without a datagram from the peer; 0: never "
        f"(for a peer that sends no keepalives, such as the kernel's ESP) (default "
        f"{LIVENESS_TIMEOUT_S}; 0 with --kernel-peer)",
    )
    parser.add_argument(
        "--kernel-peer",
        action="store_true",
        help="the peer is Linux's own ESP (ip xfrm, encap espinudp: static keys, or a vpnlab "
        "daemon with --kernel-dataplane after the handshake): RFC 3948 NAT-keepalives instead "
        "of ESP dummy packets (which the kernel counts as XfrmInStateProtoError), no Bye, "
        "and no liveness timeout unless given",
    )
    parser.add_argument(
        "--rekey-after",
        type=float,
        default=REKEY_AFTER_S,
        metavar="SECONDS",
        help="the client starts a new handshake (fresh keys) this often (default %(default)s)",
    )
    parser.add_argument(
        "--allow-host-changes",
        action="store_true",
        help="allow routes/NAT changes in the host's own network namespace (off: refuse)",
    )


def register(sub: Subparsers) -> None:
    """``vpnlab server`` and ``vpnlab client``."""
    register_server(sub)
    register_client(sub)


def register_server(sub: Subparsers) -> None:
    server = sub.add_parser(
        "server",
        help="run the VPN server (ServerConnection)",
        description="The VPN server: Init, CreateTunDev, Ifconfig, SetRouting(0), the loop.",
    )
    server.add_argument("--listen", default="0.0.0.0", help="address to bind (default: all)")
    server.add_argument(
        "--tunnel-address",
        type=IPv4Interface,
        default=IPv4Interface(SERVER_TUNNEL_ADDRESS),
        help="the server's tun0 address; clients get the others (default %(default)s)",
    )
    server.add_argument(
        "--external-interface",
        type=interface_name,
        help="masquerade tunnel traffic leaving here (omit: no NAT)",
    )
    server.add_argument(
        "--nft-file",
        type=Path,
        default=Path("/run/vpnlab/server-nat.nft"),
        help="where the NAT ruleset file is written before `nft -f` (default %(default)s)",
    )
    server.add_argument(
        "--once", action="store_true", help="exit when the first client leaves (the notes)"
    )
    server.add_argument(
        "--isolate-clients", action="store_true", help="drop traffic from one client to another"
    )
    server.add_argument(
        "--client-network",
        type=client_network,
        action="append",
        default=[],
        metavar="ADDRESS=NETWORK",
        help="site to site: NETWORK is behind the client with tunnel ADDRESS (repeatable)",
    )
    server.add_argument(
        "--kernel-dataplane",
        action="store_true",
        help="after each handshake, the kernel's xfrm carries that client's data (ESP in UDP, "
        "as strongSwan after IKE; each session its own states, policies and reqid); the "
        "daemon keeps the handshakes, rekeys, roaming and CleanUp (needs a kernel with ESP, "
        "a handshake and an ESP cipher; IPv4, TUN, UDP only; no liveness timeout unless "
        "given; docs/kernel.md)",
    )
    server.add_argument(
        "--identity",
        type=Path,
        metavar="DIR",
        help="identity mode: the server's key and its peers, DIR/server.key and "
        "DIR/peers.toml (vpnlab keys server DIR; vpnlab keys add-peer DIR NAME)",
    )
    add_common(server)
    add_keying(server)
    server.set_defaults(func=server_main)


def register_client(sub: Subparsers) -> None:
    client = sub.add_parser(
        "client",
        help="run the VPN client (ClientConnection)",
        description="The VPN client: Init, ClientConnection, CreateTunDev, Ifconfig, "
        "SetRouting(1), the loop. Exit codes: 0 stopped by a signal, 1 error, "
        "3 server unreachable, 4 peer lost (6 s of silence), 5 the server said Bye, "
        "6 keys exhausted (no rekey came).",
    )
    client.add_argument(
        "--server", type=ip_address, help="server address, IPv4 or IPv6 (or from --config)"
    )
    client.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="identity mode: this client's config file (its key, the server's endpoint and "
        "public key, cipher, routes), as vpnlab keys add-peer wrote it",
    )
    client.add_argument("--local-port", type=int, default=PORT, help="local UDP port")
    client.add_argument(
        "--reconnect",
        action="store_true",
        help="when the server is lost or unreachable, start again instead of exiting",
    )
    client.add_argument(
        "--route",
        type=ip_network,
        action="append",
        default=[],
        metavar="NETWORK",
        help="site to site: send only NETWORK through the tunnel (repeatable; default: all)",
    )
    client.add_argument(
        "--kernel-dataplane",
        action="store_true",
        help="after the handshake, the kernel's xfrm carries the data (ESP in UDP, as strongSwan "
        "after IKE); the daemon keeps keepalives, rekeys and CleanUp (needs a kernel with ESP; "
        "no liveness timeout unless given; docs/kernel.md)",
    )
    client.add_argument(
        "--fail-closed",
        action="store_true",
        help="when the tunnel goes down, leave the redirected networks unreachable instead "
        "of restoring the routes (nothing leaves unencrypted)",
    )
    add_common(client)
    add_keying(client)
    client.set_defaults(func=client_main)


def tun_name(text: str) -> str:
    """``--tun``: a name TUNSETIFF takes (``tun.ifreq``), checked before the client connects
    (it makes tun0 only after the Welcome)."""
    try:
        ifreq(text, 0)
    except SetupError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def interface_name(text: str) -> str:
    """An interface name Linux accepts and nft can quote (``routing.check_interface_name``)."""
    try:
        return check_interface_name(text)
    except SetupError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def client_network(text: str) -> tuple[IPv4Address, IPv4Network | IPv6Network]:
    """``10.8.0.2=172.16.1.0/24`` (or ``=fd16:1::/64``) -> (client's tunnel address, the network
    behind it, either family)."""
    address, _, network = text.partition("=")
    try:
        return IPv4Address(address), ip_network(network)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc} (want ADDRESS=NETWORK)") from None


def wire(args: argparse.Namespace) -> tuple[Format | None, StaticKeys | None]:
    """The format: identities (``--identity``/``--config``), ``--cipher`` with one PSK, or
    the static keys that replace the handshake.

    Raises:
        VpnlabError: more than one of them, or a key file that cannot be read.
    """
    given = [
        name
        for name in ("identity", "config", "psk_file", "static_keys")
        if getattr(args, name, None) is not None
    ]
    if len(given) > 1:
        options = " and ".join("--" + name.replace("_", "-") for name in given)
        raise VpnlabError(f"{options}: choose one way to key the tunnel")
    if args.static_keys is not None:  # claimed for this run: a second one would repeat nonces
        return None, read_static_keys(args.static_keys, args.command)
    format: Format
    if getattr(args, "identity", None) is not None:
        identity = read_server_identity(args.identity, args.tunnel_address)
        format = IdentityFormat(args.cipher, server=identity)
    elif getattr(args, "config", None) is not None:
        format = IdentityFormat(args.config_file.cipher, client=args.config_file.identity)
    else:
        format = make_format(args.cipher, read_psk(args.psk_file))
    if args.kernel_peer:  # the peer's kernel carries its data after the handshake
        if not isinstance(format, (EspFormat, IdentityFormat)):  # the formats with kernel_peer
            raise VpnlabError("--kernel-peer needs ESP: --cipher esp-null or esp-aes-gcm")
        format.kernel_peer = True  # its sessions: KernelPeerSession
    return format, None


def mtu_of(args: argparse.Namespace, format: Format | None, static: StaticKeys | None) -> int:
    """Ifconfig: ``--mtu``, or the largest that lets the cipher's datagrams fit 1500 bytes
    (in TAP mode 14 bytes less: the Ethernet header travels too; over IPv6, ``--server`` or
    ``--listen`` an IPv6 address, 20 less: the outer header is 40 bytes)."""
    if args.mtu:
        return int(args.mtu)
    if static is not None:
        overhead = algorithm(static.cipher).overhead_bytes
    else:
        assert format is not None  # wire() gives one of the two
        overhead = format.overhead_bytes
    outer = getattr(args, "server", None) or getattr(args, "listen", "")
    return device_mtu(args.mode, tun_mtu(overhead, outer_ipv6=":" in str(outer)))


def datapath_of(args: argparse.Namespace) -> type[Datapath]:
    """``--datapath`` as given; unset, fast, except that TAP mode and the TCP transport (whose
    frames and byte stream have no GSO/GRO) run the simple loop."""
    if getattr(args, "kernel_dataplane", False):
        return SimpleDatapath  # the kernel carries the data: a plain socket (no GRO) for control
    if args.datapath is not None:
        return DATAPATHS[args.datapath]
    if args.mode == "tap" or args.transport == "tcp":
        return SimpleDatapath
    return DATAPATHS[DEFAULT_DATAPATH]


def queue_bytes_of(args: argparse.Namespace) -> int:
    """``--queue-bytes`` (default :data:`~vpnlab.shell.queues.QUEUE_BYTES`), refused below
    :data:`~vpnlab.shell.queues.MIN_QUEUE_BYTES`."""
    if args.queue_bytes is None:
        return QUEUE_BYTES
    if args.queue_bytes < MIN_QUEUE_BYTES:
        raise VpnlabError(
            f"--queue-bytes {args.queue_bytes}: at least {MIN_QUEUE_BYTES} (one super-packet)"
        )
    return int(args.queue_bytes)


def timeouts(args: argparse.Namespace) -> Timeouts:
    """The timers the options change; the notes' 2.5 s connect timeout stays."""
    liveness = args.liveness_timeout
    if liveness is None:  # a kernel's ESP says nothing while idle, and ours cannot see it
        quiet = args.kernel_peer or getattr(args, "kernel_dataplane", False)
        liveness = 0.0 if quiet else LIVENESS_TIMEOUT_S
    if liveness < 0 or args.rekey_after < 10:
        raise VpnlabError("--liveness-timeout must be >= 0 (0: never), --rekey-after >= 10 s")
    return Timeouts(liveness_s=liveness, rekey_s=args.rekey_after)


def server_main(args: argparse.Namespace) -> int:
    format, static = wire(args)
    if args.kernel_dataplane:
        if static is not None:
            raise VpnlabError(
                "--kernel-dataplane needs the handshake: a static-key server learns its "
                "client from the first ESP datagram, which the kernel keeps"
            )
        assert format is not None  # wire() gives one of the two
        require_kernel_esp(args, format.name)
    networks = tuple(args.client_network)
    if isinstance(format, IdentityFormat) and format.server is not None:
        networks += tuple(
            (peer.tunnel_address.ip, net) for peer in format.server.peers for net in peer.networks
        )
    options = ServerOptions(
        format=format,
        static_keys=static,
        esp_sa_file=args.esp_sa_file,
        listen=args.listen,
        port=args.port,
        tunnel_address=args.tunnel_address,
        tun_name=device_name(args.mode, args.tun),
        mtu=mtu_of(args, format, static),
        queue_bytes=queue_bytes_of(args),
        mode=args.mode,
        datapath=datapath_of(args),
        transport=args.transport,
        external_interface=args.external_interface,
        nft_file=args.nft_file,
        status_file=args.status_file,
        once=args.once,
        isolate_clients=args.isolate_clients,
        client_networks=networks,
        allow_host_changes=args.allow_host_changes,
        timeouts=timeouts(args),
        kernel_peer=args.kernel_peer,
        peers_folder=args.identity,
        kernel_dataplane=args.kernel_dataplane,
    )
    return run_server(options, Reporter("server", args.status_file))


def client_main(args: argparse.Namespace) -> int:
    config = args.config_file = read_client_config(args.config) if args.config else None
    format, static = wire(args)
    server = args.server = args.server or (config.server if config else None)
    if server is None:
        raise VpnlabError("no server: give --server ADDRESS (or --config FILE)")
    if args.kernel_dataplane:
        if static is not None:
            require_kernel_esp(args, static.cipher)
        else:
            assert format is not None  # wire() gives one of the two
            require_kernel_esp(args, format.name)
    options = ClientOptions(
        server=server,
        format=format,
        static_keys=static,
        esp_sa_file=args.esp_sa_file,
        port=config.port if config and args.port == PORT else args.port,
        local_port=args.local_port,
        reconnect=args.reconnect,
        routes=tuple(args.route) or (config.routes if config else ()),
        tun_name=device_name(args.mode, args.tun),
        mtu=mtu_of(args, format, static),
        mode=args.mode,
        datapath=datapath_of(args),
        transport=args.transport,
        queue_bytes=queue_bytes_of(args),
        status_file=args.status_file,
        allow_host_changes=args.allow_host_changes,
        timeouts=timeouts(args),
        kernel_peer=args.kernel_peer,
        kernel_dataplane=args.kernel_dataplane,
        fail_closed=args.fail_closed,
    )
    return run_client(options, Reporter("client", args.status_file))


def require_kernel_esp(args: argparse.Namespace, cipher: str) -> None:
    """``--kernel-dataplane`` (either daemon): refuse at once, in one line, what it cannot
    carry (TAP, TCP, IPv6 outside, a cipher that is not ESP) and a kernel without ESP."""
    outer = getattr(args, "server", None) or getattr(args, "listen", "")
    if args.mode == "tap" or args.transport == "tcp" or ":" in str(outer):
        raise VpnlabError("--kernel-dataplane carries IP packets in UDP over IPv4 only")
    if cipher not in ("esp-null", "esp-aes-gcm"):
        raise VpnlabError("--kernel-dataplane needs ESP: --cipher esp-null or esp-aes-gcm")
    why = kernel_has_esp(cipher)
    if why is not None:
        raise VpnlabError(f"--kernel-dataplane: this kernel has no ESP for {cipher} ({why})")
