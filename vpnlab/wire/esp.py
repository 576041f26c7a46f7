"""ESP (RFC 4303) inside UDP (RFC 3948): the ``esp-null`` and ``esp-aes-gcm`` datagrams.

One UDP datagram to or from port 4500 (the outer IPv4 and UDP headers are the kernel's)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  -+-        -+-
    |         Security Parameters Index (SPI): never 0, >= 256      |   |          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   |          |
    |          Sequence Number: 1, 2, 3 ... (never wraps)           |   |          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  -+-         |
    |  explicit IV, 8 bytes (esp-aes-gcm only): the 64-bit counter  |              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  -+-         |
    |  Payload Data: the inner IP packet from tun0 (empty if dummy) |   |          |
    ~                                                               ~   |          |
    |               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   |          |
    |               |    Padding 1, 2, 3 ... (to 4-byte alignment)  |   |          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   |          |
    |                               |  Pad Length   | Next Header   |   |          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  -+-        -+-
    |     Integrity Check Value (ICV): 16 bytes (GCM tag or HMAC)   |
    ~                                                               ~
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Left bracket (esp-aes-gcm): the AAD (SPI, sequence number), then the plaintext that GCM
encrypts (payload to next header); the IV only goes into the nonce (salt || IV). Right bracket
(esp-null): what the HMAC covers; nothing is encrypted, so captures show the inner packet.

A datagram's whole walk through the wire layer is in this module: TunSelected frames the
packet and has the outbound SA's transform protect it; SockSelected has the inbound SA's
transform check the ICV, then the padding, then the anti-replay window (RFC 4303 section
3.4.3). The transforms are ``NullHmacSha256`` (esp-null: RFC 2410 NULL encryption, RFC 4868
HMAC-SHA-256-128) and ``AesGcm128`` (esp-aes-gcm: RFC 4106). ``crypto.py`` names the
algorithms and derives their keys (the handshakes' key schedule), once per session.

Next Header: 4 an IPv4 packet, 41 an IPv6 packet, 59 a dummy packet (our keepalive, empty),
253 (RFC 3692 experimental) with payload ``BYE`` (CleanUp), 143 an Ethernet frame (``--mode
tap``: ``seal_frame``/``open_frame``; tshark decodes it as ``esp:eth``). A datagram that
starts with four zero bytes is a control message (RFC 3948 non-ESP marker: see
``handshake.py``), the single byte 0xFF an RFC 3948 NAT-keepalive: neither is ESP.

Static keys (manual keying, as ``ip xfrm state add`` does) come from a JSON file::

    {"cipher": "esp-aes-gcm", "client_address": "10.8.0.2/24",
     "client_to_server": {"spi": "0x0000c001", "key": "0x<40 hex digits: key || salt>"},
     "server_to_client": {"spi": "0x0000c002", "key": "0x<40 hex digits>"}}

(``esp-null`` keys are 64 hex digits: the HMAC-SHA-256 key.) A static key must never be used
by two senders, nor again after a restart: the counter restarts at 1 and GCM would reuse its
nonces. Pure code: no socket, no clock, no os.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from ipaddress import IPv4Interface

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vpnlab.core.constants import MAX_DATAGRAM, NAT_KEEPALIVE
from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError, VpnlabError
from vpnlab.core.formats import (
    KIND_BYE,
    KIND_KEEPALIVE,
    KIND_PACKET,
    Established,
    Kind,
    RandomBytes,
)
from vpnlab.core.packet import ETHERNET_HEADER_BYTES
from vpnlab.core.reasons import Drop
from vpnlab.wire.crypto import ESP_HEADER, ICV_BYTES, MAX_SEQ, SaKeys, algorithm

ESP_HEADER_IV = struct.Struct("!IIQ")
"""SPI, sequence number, 8-byte explicit IV (RFC 4106 section 3.1): one pack per packet."""

REPLAY_WINDOW_BITS = 1024
"""Anti-replay window (RFC 4303 section 3.4.3 asks for at least 64)."""

NH_IPV4 = 4
NH_IPV6 = 41
NH_NONE = 59
"""RFC 4303 section 2.6: a dummy packet; ours is the keepalive."""
NH_BYE = 253
"""RFC 3692 experimental protocol number, used for the authenticated Bye."""
NH_ETHERNET = 143
"""``--mode tap``: the payload is a whole Ethernet frame (IANA protocol 143 "Ethernet", RFC 8986).

Tested with tshark 4.0: after decryption it shows ``...:esp:eth:ethertype:arp``. EtherIP (97,
RFC 3378) decodes too (``esp:etherip:eth``) but needs a 2-byte header in front of the frame."""
BYE_PAYLOAD = b"BYE"
NON_ESP_MARKER = b"\x00\x00\x00\x00"

PADDING = tuple(bytes(range(1, n + 1)) for n in range(256))
"""RFC 4303 section 2.4: the default padding bytes 1, 2, 3 ... for each pad length."""
_TRAILERS = {
    (pad, nh): PADDING[pad] + bytes((pad, nh))
    for pad in range(4)
    for nh in (NH_IPV4, NH_IPV6, NH_NONE, NH_BYE, NH_ETHERNET)
}


class NullHmacSha256:
    """RFC 2410 NULL encryption with RFC 4868 HMAC-SHA-256-128 over the whole ESP packet.

    Args:
        key: the 32-byte HMAC key.
    """

    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def protect(self, spi: int, seq: int, plaintext: bytes) -> bytes:
        """ESP packet: ``SPI || seq || plaintext || ICV``; the plaintext stays readable."""
        header = ESP_HEADER.pack(spi, seq)
        mac = self._mac.copy()
        mac.update(header)
        mac.update(plaintext)
        return b"".join((header, plaintext, mac.digest()[:ICV_BYTES]))

    def unprotect(self, datagram: bytes) -> bytes:
        """Check the ICV and return the plaintext after the 8-byte header.

        Raises:
            RemoteProtocolError: "bad icv".
        """
        mac = self._mac.copy()
        mac.update(datagram[:-ICV_BYTES])
        if not hmac.compare_digest(mac.digest()[:ICV_BYTES], datagram[-ICV_BYTES:]):
            raise RemoteProtocolError(Drop.BAD_ICV)
        return datagram[ESP_HEADER.size : -ICV_BYTES]


class AesGcm128:
    """RFC 4106 AES-GCM: nonce = salt || explicit IV, AAD = SPI || seq (32-bit, no ESN).

    The explicit IV is the sequence number as 64 bits, so it never repeats under one key while
    the sender refuses to wrap the counter.

    Args:
        key: 20 bytes of key material: the 16-byte AES key, then the 4-byte salt.
    """

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key[:16])
        self._salt = key[16:]

    def protect(self, spi: int, seq: int, plaintext: bytes) -> bytes:
        """ESP packet: ``SPI || seq || IV || ciphertext || ICV``."""
        header = ESP_HEADER_IV.pack(spi, seq, seq)
        return header + self._aead.encrypt(self._salt + header[8:], plaintext, header[:8])

    def unprotect(self, datagram: bytes) -> bytes:
        """Verify and decrypt; the explicit IV is whatever the sender put after ``seq``.

        Raises:
            RemoteProtocolError: "bad icv".
        """
        try:
            return self._aead.decrypt(self._salt + datagram[8:16], datagram[16:], datagram[:8])
        except InvalidTag:
            raise RemoteProtocolError(Drop.BAD_ICV) from None


Transform = NullHmacSha256 | AesGcm128


def make_transform(name: str, key: bytes) -> Transform:
    """The transform of ``--cipher name`` keyed with ``key``.

    Raises:
        VpnlabError: unknown cipher, or a key of the wrong length.
    """
    algo = algorithm(name)
    if len(key) != algo.key_bytes:
        raise VpnlabError(f"{name} needs a {algo.key_bytes}-byte key, got {len(key)}")
    return AesGcm128(key) if name == "esp-aes-gcm" else NullHmacSha256(key)


class ReplayWindow:
    """RFC 4303 section 3.4.3 anti-replay window: wireguard-go replay.go's rules (its test
    table is ours), kept as one sliding bitmap.

    Bit ``i`` of the bitmap says ``highest - i`` was received. wireguard-go keeps a ring of
    64-bit blocks instead, so that moving forward clears a block rather than shifting the
    window; in Python one int shifted in C is the faster (0.25 against 0.33 us an in-order
    packet, 1,024 bits, measured 2026-12-08). Call :meth:`accept` only after the ICV
    verified, so forged packets never move the window.

    Args:
        size_bits: how far behind the highest sequence number a packet may arrive.
    """

    def __init__(self, size_bits: int = REPLAY_WINDOW_BITS) -> None:
        if size_bits < 64:
            raise LocalProtocolError("RFC 4303 asks for a window of at least 64")
        self.size_bits = size_bits
        self.highest = 0
        self._mask = (1 << size_bits) - 1
        self._bitmap = 0

    def accept(self, seq: int) -> bool:
        """Record ``seq`` and return True, or return False for a duplicate or a too-old one."""
        if seq <= 0:
            return False
        shift = seq - self.highest
        if shift > 0:
            if shift < self.size_bits:
                self._bitmap = ((self._bitmap << shift) | 1) & self._mask
            else:
                self._bitmap = 1
            self.highest = seq
            return True
        if -shift >= self.size_bits:
            return False
        bit = 1 << -shift
        if self._bitmap & bit:
            return False
        self._bitmap |= bit
        return True


class EspSession:
    """TunSelected/SockSelected: one session's two SAs, implementing ``formats.Protection``.

    Args:
        cipher: ``esp-null`` or ``esp-aes-gcm``.
        outbound: the SA we send with (our peer's inbound SA).
        inbound: the SA we receive with.
        replay_window_bits: size of the inbound anti-replay window.

    Raises:
        VpnlabError: unknown cipher or wrong key length.
    """

    def __init__(
        self,
        cipher: str,
        outbound: SaKeys,
        inbound: SaKeys,
        *,
        replay_window_bits: int = REPLAY_WINDOW_BITS,
    ) -> None:
        algo = algorithm(cipher)
        self.cipher = cipher
        self.algorithm = algo
        self.outbound = outbound
        self.inbound = inbound
        self.overhead_bytes = algo.overhead_bytes
        self.max_packet_bytes = MAX_DATAGRAM - algo.overhead_bytes
        self.window = ReplayWindow(replay_window_bits)
        self._next_seq = 1
        self._out_spi = outbound.spi
        self._in_spi = inbound.spi
        self._protect = make_transform(cipher, outbound.key).protect
        self._unprotect = make_transform(cipher, inbound.key).unprotect
        self._min_datagram = ESP_HEADER.size + algo.iv_bytes + 2 + ICV_BYTES

    @property
    def next_seq(self) -> int:
        """The sequence number the next sealed datagram will carry."""
        return self._next_seq

    def _seal(self, payload: bytes, nh: int) -> bytes:
        seq = self._next_seq
        if seq > MAX_SEQ:
            raise LocalProtocolError("sequence number exhausted: a new SA is needed")
        self._next_seq = seq + 1
        return self._protect(self._out_spi, seq, payload + _TRAILERS[-(len(payload) + 2) & 3, nh])

    def seal(self, packet: bytes) -> bytes:
        """TunSelected: one inner IP packet into one ESP datagram.

        Args:
            packet: an IPv4 or IPv6 packet read from tun0.

        Returns:
            The UDP payload to send to the peer.

        Raises:
            LocalProtocolError: not an IP packet, too large, or the counter would wrap.
        """
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            nh = NH_IPV4
        elif version == 6:
            nh = NH_IPV6
        else:
            raise LocalProtocolError(Drop.NOT_AN_IP_PACKET)
        if len(packet) > self.max_packet_bytes:
            raise LocalProtocolError(Drop.OVERSIZE)
        return self._seal(packet, nh)

    def seal_frame(self, frame: bytes) -> bytes:
        """TunSelected in TAP mode: one Ethernet frame from tap0 (next header 143).

        Raises:
            LocalProtocolError: shorter than an Ethernet header, too large, or the counter
                would wrap.
        """
        if len(frame) < ETHERNET_HEADER_BYTES:
            raise LocalProtocolError(Drop.RUNT_FRAME)
        if len(frame) > self.max_packet_bytes:
            raise LocalProtocolError(Drop.OVERSIZE)
        return self._seal(frame, NH_ETHERNET)

    def seal_keepalive(self) -> bytes:
        """Keepalive when idle: an authenticated dummy packet (next header 59, no payload)."""
        return self._seal(b"", NH_NONE)

    def seal_bye(self) -> bytes:
        """CleanUp: an authenticated Bye (next header 253, payload ``BYE``)."""
        return self._seal(BYE_PAYLOAD, NH_BYE)

    def open(self, datagram: bytes) -> tuple[Kind, bytes]:
        """SockSelected: check one ESP datagram and return what it carries.

        Checks run in this order: shape, SPI, ICV, padding, anti-replay window (only for
        authentic datagrams, so forgeries never move it), next header.

        Args:
            datagram: one UDP payload from the peer.

        Returns:
            ``(Kind.PACKET, inner packet)``, ``(Kind.KEEPALIVE, b"")`` or ``(Kind.BYE, b"")``.

        Raises:
            RemoteProtocolError: "nat keepalive", "control message", "oversize", "truncated",
                "unknown spi", "bad icv", "bad padding", "replayed", "bad next header".
        """
        plaintext, end = self._authentic(datagram)
        nh = plaintext[-1]
        if nh in (NH_IPV4, NH_IPV6):
            if end == 0 or plaintext[0] >> 4 != (4 if nh == NH_IPV4 else 6):
                raise RemoteProtocolError(Drop.BAD_NEXT_HEADER)
            return KIND_PACKET, plaintext[:end]
        return self._control(nh, plaintext[:end])

    def open_frame(self, datagram: bytes) -> tuple[Kind, bytes]:
        """SockSelected in TAP mode: as :meth:`open`, but the payload must be an Ethernet frame
        (next header 143, at least 14 bytes); it is returned as ``(Kind.PACKET, frame)``."""
        plaintext, end = self._authentic(datagram)
        nh = plaintext[-1]
        if nh == NH_ETHERNET:
            if end < ETHERNET_HEADER_BYTES:
                raise RemoteProtocolError(Drop.BAD_NEXT_HEADER)
            return KIND_PACKET, plaintext[:end]
        return self._control(nh, plaintext[:end])

    @staticmethod
    def _control(nh: int, payload: bytes) -> tuple[Kind, bytes]:
        if nh == NH_NONE:
            return KIND_KEEPALIVE, b""
        if nh == NH_BYE and payload == BYE_PAYLOAD:
            return KIND_BYE, b""
        raise RemoteProtocolError(Drop.BAD_NEXT_HEADER)

    def _authentic(self, datagram: bytes) -> tuple[bytes, int]:
        """Shape, SPI, ICV, padding, replay window: the plaintext and where its payload ends."""
        size = len(datagram)
        if size < self._min_datagram:
            if datagram == NAT_KEEPALIVE:
                raise RemoteProtocolError(Drop.NAT_KEEPALIVE)
            if datagram[:4] == NON_ESP_MARKER:
                raise RemoteProtocolError(Drop.CONTROL_MESSAGE)
            raise RemoteProtocolError(Drop.TRUNCATED)
        if size > MAX_DATAGRAM:
            raise RemoteProtocolError(Drop.OVERSIZE)
        spi, seq = ESP_HEADER.unpack_from(datagram)
        if spi != self._in_spi:
            if spi == 0:
                raise RemoteProtocolError(Drop.CONTROL_MESSAGE)
            raise RemoteProtocolError(Drop.UNKNOWN_SPI)
        plaintext = self._unprotect(datagram)
        pad = plaintext[-2]
        end = len(plaintext) - 2 - pad
        if end < 0 or plaintext[end:-2] != PADDING[pad]:
            raise RemoteProtocolError(Drop.BAD_PADDING)
        if not self.window.accept(seq):
            raise RemoteProtocolError(Drop.REPLAYED)
        return plaintext, end


class KernelPeerSession(EspSession):
    """Static keys against Linux's own ESP (``--kernel-peer``): nothing it counts as an error.

    Linux drops an ESP dummy packet (next header 59, our keepalive) as RFC 4303 asks, but
    counts each one as XfrmInStateProtoError (``esp_input_done2`` turns IPPROTO_NONE into
    -EINVAL), and our Bye (253) is no inner protocol of a tunnel-mode SA. So this session
    keeps the path's NAT binding alive with RFC 3948's NAT-keepalive (one 0xFF byte, which the
    kernel's UDP encapsulation drops without a count) and says no Bye: the kernel has no
    session to end. The kernel sends nothing while idle, so run it with liveness off.
    """

    def seal_keepalive(self) -> bytes:
        return NAT_KEEPALIVE

    def seal_bye(self) -> bytes:
        return NAT_KEEPALIVE


def esp_spi(datagram: bytes) -> int | None:
    """The SPI of an ESP datagram (None for a control message, a NAT-keepalive or a runt)."""
    if len(datagram) < ESP_HEADER.size:
        return None
    spi = ESP_HEADER.unpack_from(datagram)[0]
    return spi or None


def esp_sa_rows(session: EspSession, local: str = "*", peer: str = "*") -> list[str]:
    """Key export: Wireshark's ``esp_sa`` UAT rows that decrypt both directions of a session.

    Write them, one per line, to ``<config dir>/esp_sa`` (or pass each with
    ``tshark -o "uat:esp_sa:<row>"``) and enable ``esp.enable_encryption_decode``.

    Args:
        session: the session, seen from the side whose addresses are ``local``.
        local: this side's outer IP address, or ``*`` for any.
        peer: the peer's outer IP address, or ``*`` for any.

    Returns:
        Two rows: our outbound SA (local -> peer), then our inbound SA (peer -> local).
    """
    algo = session.algorithm
    family = "IPv6" if ":" in local + peer else "IPv4"

    def row(src: str, dst: str, sa: SaKeys) -> str:
        if algo.name == "esp-aes-gcm":
            keys = ("0x" + sa.key.hex(), algo.tshark_authentication, "")
        else:
            keys = ("", algo.tshark_authentication, "0x" + sa.key.hex())
        fields = (family, src, dst, f"0x{sa.spi:08x}", algo.tshark_encryption, *keys)
        return ",".join(f'"{field}"' for field in fields)

    return [row(local, peer, session.outbound), row(peer, local, session.inbound)]


@dataclass(frozen=True)
class StaticKeys:
    """Static-key mode: both SAs and the client's tunnel address, read from a key file."""

    cipher: str
    client_address: IPv4Interface
    client_to_server: SaKeys
    server_to_client: SaKeys

    def client(self, kernel_peer: bool = False) -> Established:
        """ClientConnection without a handshake: a fresh client session (call once per run).

        ``kernel_peer``: the server is Linux's own ESP (:class:`KernelPeerSession`).
        """
        kind = KernelPeerSession if kernel_peer else EspSession
        session = kind(self.cipher, self.client_to_server, self.server_to_client)
        return Established(session, self.client_address)

    def server(self, kernel_peer: bool = False) -> EspSession:
        """ServerConnection without a handshake: a fresh server session (call once per run)."""
        kind = KernelPeerSession if kernel_peer else EspSession
        return kind(self.cipher, self.server_to_client, self.client_to_server)

    def to_json(self) -> str:
        """The key file's text (write it with mode 0600)."""

        def sa(keys: SaKeys) -> dict[str, str]:
            return {"spi": f"0x{keys.spi:08x}", "key": "0x" + keys.key.hex()}

        document = {
            "cipher": self.cipher,
            "client_address": str(self.client_address),
            "client_to_server": sa(self.client_to_server),
            "server_to_client": sa(self.server_to_client),
        }
        return json.dumps(document, indent=2) + "\n"


def generate_static_keys(
    cipher: str, random_bytes: RandomBytes, client_address: str = "10.8.0.2/24"
) -> StaticKeys:
    """Fresh random SPIs and keys for a static-key run (write them with ``to_json``).

    Raises:
        VpnlabError: unknown cipher.
    """
    size = algorithm(cipher).key_bytes
    c2s_spi, s2c_spi = (0, 0)
    while c2s_spi < 256 or s2c_spi < 256 or c2s_spi == s2c_spi:
        c2s_spi = int.from_bytes(random_bytes(4), "big")
        s2c_spi = int.from_bytes(random_bytes(4), "big")
    return StaticKeys(
        cipher,
        IPv4Interface(client_address),
        SaKeys(c2s_spi, random_bytes(size)),
        SaKeys(s2c_spi, random_bytes(size)),
    )


def load_static_keys(text: str) -> StaticKeys:
    """Static-key mode: parse a key file (JSON, see the module docstring).

    Args:
        text: the file's content.

    Returns:
        The keys; ``.client()`` gives the client's Established, ``.server()`` the server's
        Protection.

    Raises:
        VpnlabError: malformed file, unknown cipher, bad SPI, address or key length, or one
            SPI or key for both directions.
    """
    try:
        document = json.loads(text)
        cipher = document["cipher"]
        algo = algorithm(cipher)
        sas = []
        for direction in ("client_to_server", "server_to_client"):
            entry = document[direction]
            key = bytes.fromhex(entry["key"].removeprefix("0x"))
            if len(key) != algo.key_bytes:
                raise VpnlabError(f"{direction}: {cipher} needs a {algo.key_bytes}-byte key")
            sas.append(SaKeys(int(entry["spi"], 0), key))
        address = IPv4Interface(document.get("client_address", "10.8.0.2/24"))
    except VpnlabError:
        raise
    except KeyError as exc:
        raise VpnlabError(f"bad static key file: no {exc.args[0]!r}") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise VpnlabError(f"bad static key file: {exc!r}") from None
    same = "SPI" if sas[0].spi == sas[1].spi else "key" if sas[0].key == sas[1].key else ""
    if same:  # a reflected datagram would open; the two senders' GCM nonces would collide
        raise VpnlabError(f"one {same} for both directions; fresh keys: vpnlab keys static FILE")
    return StaticKeys(cipher, address, sas[0], sas[1])
