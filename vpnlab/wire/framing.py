"""SockSelected, ``--transport tcp``: datagrams as length-prefixed frames of one byte stream.

    stream:  | length (2, big endian) | datagram ... | length (2) | datagram ... | ...

Each frame carries one datagram exactly as UDP would (Hello, Welcome, ESP, keepalive, Bye).
Pure code: bytes in, datagrams out; the connections themselves are ``transport.py``'s.
"""

from __future__ import annotations

from vpnlab.core.errors import LocalProtocolError
from vpnlab.core.reasons import Drop

LENGTH_BYTES = 2
MAX_FRAME_BYTES = 16384
"""Largest datagram a frame may carry; a longer length desynchronises nothing but is refused
(the connection is closed: a byte stream cannot skip a frame it does not trust)."""


def encode_frame(datagram: bytes, max_frame_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """SockSelected, TCP variant (send side): one datagram as a length-prefixed frame.

    Raises:
        LocalProtocolError: empty, or longer than ``max_frame_bytes``.
    """
    if not 0 < len(datagram) <= max_frame_bytes:
        raise LocalProtocolError(f"cannot frame a {len(datagram)}-byte datagram")
    return len(datagram).to_bytes(LENGTH_BYTES, "big") + datagram


class FrameDecoder:
    """SockSelected, TCP variant (receive side): bytes of one stream in, datagrams out.

    Frames may arrive split anywhere or many per read. A length of 0 or above
    ``max_frame_bytes`` breaks the stream: ``error`` says why, ``rejected`` counts it, and
    everything after it is ignored (the shell closes the connection).
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self.error: Drop | None = None
        self.frames = 0
        self.rejected = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every datagram now complete, in order."""
        if self.error is not None:
            return []
        buf = self._buffer
        buf += data
        out: list[bytes] = []
        start = 0
        while len(buf) - start >= LENGTH_BYTES:
            length = int.from_bytes(buf[start : start + LENGTH_BYTES], "big")
            if not 0 < length <= self.max_frame_bytes:
                self.error = Drop.TCP_OVERSIZE_FRAME if length else Drop.TCP_EMPTY_FRAME
                self.rejected += 1
                buf.clear()
                return out
            end = start + LENGTH_BYTES + length
            if end > len(buf):
                break
            out.append(bytes(buf[start + LENGTH_BYTES : end]))
            start = end
        del buf[:start]
        self.frames += len(out)
        return out

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)
