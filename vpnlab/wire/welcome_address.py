"""The tunnel address a Welcome carries (ServerConnection assigns it, ClientConnection takes it).

Both ESP Welcomes (``handshake.py``, ``identity.py``) carry it in five bytes::

    | address (4) | prefix (1) |
      prefix 0..32   an IPv4 address and its prefix length: 10.8.0.5/24 (its twin fd10:8::5
                     goes with it, ``pool.tunnel_address6``)
      prefix 64      IPv6 only (the server's IPv4 pool is used up): the four bytes are the host
                     part in the tunnel's /64, 0.0.1.4 is fd10:8::104/64

So a Welcome without IPv4 has the same length as any other, and every Welcome an older client
reads is still one of these. ``plain.py`` writes the address as text either way.
Pure code: bytes in, bytes out.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Interface

from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError
from vpnlab.core.pool import TUNNEL_NETWORK6_NET, TunnelAddress
from vpnlab.core.reasons import Drop

IPV6_ONLY_PREFIX = TUNNEL_NETWORK6_NET.prefixlen
"""The prefix byte of an IPv6-only Welcome: the tunnel's /64."""


def pack_address(address: TunnelAddress) -> tuple[bytes, int]:
    """The four address bytes and the prefix byte of ``address``.

    Raises:
        LocalProtocolError: an IPv6 address outside the tunnel's /64 or past its first 2**32
            hosts (the server's pool never hands one out).
    """
    if isinstance(address, IPv4Interface):
        return address.ip.packed, address.network.prefixlen
    host = int(address.ip) - int(TUNNEL_NETWORK6_NET.network_address)
    if address.network != TUNNEL_NETWORK6_NET or not 0 < host < 2**32:
        raise LocalProtocolError(f"{address} is not an IPv6-only tunnel address")
    return host.to_bytes(4, "big"), IPV6_ONLY_PREFIX


def unpack_address(ip: bytes, prefix: int) -> TunnelAddress:
    """The address in a Welcome's five bytes.

    Raises:
        RemoteProtocolError: "bad welcome address" (address 0, or a prefix neither 0..32
            nor 64).
    """
    if ip == bytes(4) or (prefix > 32 and prefix != IPV6_ONLY_PREFIX):
        raise RemoteProtocolError(Drop.BAD_WELCOME_ADDRESS)
    if prefix == IPV6_ONLY_PREFIX:
        host = int.from_bytes(ip, "big")
        return IPv6Interface((TUNNEL_NETWORK6_NET.network_address + host, prefix))
    return IPv4Interface((IPv4Address(ip), prefix))
