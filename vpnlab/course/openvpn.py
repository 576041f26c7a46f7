"""OpenVPN 2.6 for the benchmark's comparison: p2p over UDP, TLS, AES-256-GCM, over tun.

Two config files in the lab's state folder (server in r2, client in r1), with self-signed
certificates pinned by fingerprint (``peer-fingerprint``: no CA to make), and the NAT rule that
lets r1 reach web through the OpenVPN tunnel as through vpnlab's.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from vpnlab.lab.topology import DEFAULT_TOPOLOGY

SERVER = DEFAULT_TOPOLOGY.server_ip
WEB = DEFAULT_TOPOLOGY.web_ip
OPENVPN_PORT = 1194
NAT_RULES = """table ip vbench {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.8.0.0/24 ip daddr != 10.8.0.0/24 oifname "eth0" masquerade
  }
}
"""
"""The server's masquerade rule for the OpenVPN case (vpnlab's server makes its own)."""


def _self_signed(name: str, folder: Path) -> str:
    """A P-256 key and self-signed certificate for ``name``; returns the SHA-256 fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = folder / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def openvpn_configs(folder: Path, mtu: int) -> tuple[Path, Path]:
    """The two p2p config files (server in r2, client in r1) in the lab's state folder."""
    prints = {name: _self_signed(name, folder) for name in ("ovpn-server", "ovpn-client")}
    common = [
        "dev tun",
        "proto udp",
        "topology p2p",
        f"tun-mtu {mtu}",
        "data-ciphers AES-256-GCM",
        "cipher AES-256-GCM",
        "verb 3",
    ]
    server = [
        *common,
        f"local {SERVER}",
        f"lport {OPENVPN_PORT}",
        "float",
        "ifconfig 10.8.0.1 10.8.0.2",
        "tls-server",
        "dh none",
        f"cert {folder / 'ovpn-server.crt'}",
        f"key {folder / 'ovpn-server.key'}",
        f"peer-fingerprint {prints['ovpn-client']}",
    ]
    client = [
        *common,
        f"remote {SERVER} {OPENVPN_PORT}",
        "nobind",
        "ifconfig 10.8.0.2 10.8.0.1",
        "tls-client",
        f"cert {folder / 'ovpn-client.crt'}",
        f"key {folder / 'ovpn-client.key'}",
        f"peer-fingerprint {prints['ovpn-server']}",
        f"route {WEB} 255.255.255.255",
    ]
    paths = folder / "openvpn-server.conf", folder / "openvpn-client.conf"
    for path, lines in zip(paths, (server, client), strict=True):
        path.write_text("\n".join(lines) + "\n")
    return paths
