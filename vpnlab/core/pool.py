"""ServerConnection's address pool: the tunnel addresses clients get without an identity, and
the IPv6 twin of each (``tunnel_address6``)."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface, IPv6Network

from vpnlab.core.constants import TUNNEL_NETWORK6


class AddressPool:
    """Tunnel addresses for clients: every host of the server's network but its own.

    Handed out lazily, lowest first (a /14 is 262,142 addresses: none is listed up
    front); an address given back is the next one taken, so a client that reconnects alone
    gets its address again.
    """

    def __init__(self, server_address: IPv4Interface) -> None:
        self.server_address = server_address
        network = server_address.network
        self._hosts = (h for h in network.hosts() if h != server_address.ip)
        self._returned: list[IPv4Interface] = []
        hosts = network.num_addresses - 2 if network.prefixlen < 31 else network.num_addresses
        is_host = network.prefixlen >= 31 or server_address.ip not in (
            network.network_address,
            network.broadcast_address,
        )
        self._left = hosts - is_host

    def take(self) -> IPv4Interface | None:
        if self._returned:
            return self._returned.pop()
        host = next(self._hosts, None)
        if host is None:
            return None
        self._left -= 1
        return IPv4Interface((host, self.server_address.network.prefixlen))

    def give_back(self, address: IPv4Interface) -> None:
        self._returned.append(address)

    def __len__(self) -> int:
        return self._left + len(self._returned)


TUNNEL_NETWORK6_NET = IPv6Network(TUNNEL_NETWORK6)


def tunnel_address6(
    address: IPv4Interface, network6: IPv6Network = TUNNEL_NETWORK6_NET
) -> IPv6Interface:
    """ServerConnection, IPv6: a tunnel address's twin in the tunnel's ULA /64, same host part.

    The handshake assigns the IPv4 address (the Welcome carries it) and with it the IPv6 one,
    so the wire format is the same for both families: 10.8.0.5/24 -> fd10:8::5/64 (the host
    part is the offset in the IPv4 network, which always fits the /64's 64 bits).
    """
    host = int(address.ip) - int(address.network.network_address)
    return IPv6Interface((network6.network_address + host, network6.prefixlen))
