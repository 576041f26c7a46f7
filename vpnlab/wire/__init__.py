"""The wire formats on UDP port 4500: what the bytes of a datagram are (pure, like ``core/``).

    plain        the design notes' format: the inner packet as the payload, a text Hello
    esp          ESP (RFC 4303, in UDP as RFC 3948): framing, the two transforms (NULL +
                 HMAC-SHA-256-128, AES-GCM-128), the replay window, static keys, esp_sa rows
    crypto       the key schedule: the algorithms' sizes and names, the SAs, HKDF
    handshake    the PSK-authenticated X25519 Hello/Welcome of the ESP formats
    welcome_address  the tunnel address in a Welcome: IPv4, or IPv6 only once the pool is used up
    ciphers      the factory: ``--cipher NAME`` to a Format (``make_format``)
    framing      ``--transport tcp``: each datagram as a length-prefixed frame of the stream

These modules import the core and each other, never the shell above them.
"""
