"""ServerConnection's address pool: the tunnel addresses clients get without an identity, the
IPv6 twin of each (``tunnel_address6``), and the IPv6-only addresses handed out once the IPv4
pool is used up (``Ipv6OnlyPool``: a /24 holds 253 clients, the /64 beside it many more)."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface, IPv6Network

from vpnlab.core.constants import IPV6_ONLY_CLIENTS, TUNNEL_NETWORK6

TunnelAddress = IPv4Interface | IPv6Interface
"""The address a Welcome gives: IPv4 (dual stack: its twin fd10:8::N goes with it), or IPv6
only (the IPv4 pool was used up: an address of fd10:8::/64 and no IPv4 at all)."""


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


class Ipv6OnlyPool:
    """ServerConnection, pool used up: IPv6-only tunnel addresses, no IPv4 twin.

    Their host parts start where the IPv4 network's hosts end (fd10:8::100 and up beside a /24),
    so they never meet a twin of an IPv4 address; ``count`` of them at most, handed out lazily
    as ``AddressPool`` does, an address given back the next one taken.
    """

    def __init__(
        self,
        server_address: IPv4Interface,
        count: int = IPV6_ONLY_CLIENTS,
        network6: IPv6Network = TUNNEL_NETWORK6_NET,
    ) -> None:
        self.network6 = network6
        self._next = int(network6.network_address) + server_address.network.num_addresses
        self._end = self._next + count
        self._returned: list[IPv6Interface] = []

    def take(self) -> IPv6Interface | None:
        if self._returned:
            return self._returned.pop()
        if self._next >= self._end:
            return None
        self._next += 1
        return IPv6Interface((self._next - 1, self.network6.prefixlen))

    def give_back(self, address: IPv6Interface) -> None:
        self._returned.append(address)

    def __len__(self) -> int:
        return self._end - self._next + len(self._returned)
