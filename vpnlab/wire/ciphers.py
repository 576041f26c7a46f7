"""The format factory: ``--cipher NAME`` to a :class:`~vpnlab.core.formats.Format`.

plain         the design notes' format: raw IP in UDP, a text Hello (``plain.py``)
esp-null      ESP (RFC 4303) in UDP, NULL encryption + HMAC-SHA-256-128 (``handshake.py``)
esp-aes-gcm   ESP in UDP, AES-GCM-128 (RFC 4106): the default
"""

from __future__ import annotations

from vpnlab.core.errors import VpnlabError
from vpnlab.core.formats import Format
from vpnlab.wire.handshake import esp_format
from vpnlab.wire.plain import PLAIN

CIPHERS = ("plain", "esp-null", "esp-aes-gcm")
DEFAULT_CIPHER = "esp-aes-gcm"


def make_format(name: str, psk: bytes | None = None) -> Format:
    """Return the Format for ``--cipher name``; the ESP formats need the pre-shared key.

    Raises:
        VpnlabError: an unknown name, or an ESP format without a key.
    """
    if name == "plain":
        return PLAIN
    if name in ("esp-null", "esp-aes-gcm"):
        if not psk:
            raise VpnlabError(f"cipher {name} needs a pre-shared key (--psk-file)")
        return esp_format(name, psk)
    raise VpnlabError(f"unknown cipher {name!r}; choose one of: {', '.join(CIPHERS)}")
