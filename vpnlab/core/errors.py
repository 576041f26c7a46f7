"""The exception tree: one root, then who is at fault (as in h11's _util.py)."""

from __future__ import annotations

from vpnlab.core.reasons import Drop


class VpnlabError(Exception):
    """Root of every error vpnlab raises on purpose."""


class LocalProtocolError(VpnlabError):
    """Our caller misused the protocol core: a bug in vpnlab, raise it."""


class RemoteProtocolError(VpnlabError):
    """The peer (or an attacker) sent something we cannot accept: drop it and count it.

    ``reason`` is a short, stable label (``Drop.BAD_ICV``: "bad icv") used as a counter key.
    """

    def __init__(self, reason: Drop) -> None:
        super().__init__(reason)
        self.reason = reason


class LabError(VpnlabError):
    """The namespace lab could not be built, inspected or removed."""


class SetupError(VpnlabError):
    """The local system refused something a daemon needs (tun0, routes, nftables)."""
