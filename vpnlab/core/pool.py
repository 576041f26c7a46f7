"""ServerConnection's address pool: the tunnel addresses clients get without an identity."""

from __future__ import annotations

from ipaddress import IPv4Interface


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
