"""ServerConnection under a Hello flood: a token bucket per source address, in bounded memory,
and the "under load" test that turns on cookie replies (WireGuard's ``IsUnderLoad``).

Answering a Hello costs the server an X25519 exchange and (for plain) a tunnel address, so a
source may only start so many handshakes per second. Sans-IO: the time is passed in.

    tokens(source) = min(burst, tokens + rate * elapsed)   one Hello costs one token
    under load     = more than N Hellos (any) in the current second, or the handshake
                     queue a quarter full; it lasts UNDER_LOAD_HOLD_S after the last sign
"""

from __future__ import annotations

from collections import OrderedDict

from vpnlab.core import constants


class HelloRateLimiter:
    """At most ``rate_per_s`` Hellos per second from one source, in bursts of ``burst``.

    The table holds at most ``max_sources`` sources; when full, the least recently seen one is
    forgotten (it starts again with a full bucket, which bounds the memory, not the rate, of a
    flood from very many spoofed addresses: that is bounded by the work per Hello instead).
    """

    def __init__(
        self,
        rate_per_s: float = constants.HELLO_RATE_PER_S,
        burst: int = constants.HELLO_BURST,
        max_sources: int = constants.RATE_LIMIT_SOURCES,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def allow(self, source: str, now: float) -> bool:
        """Take a token for one Hello from ``source``; False if its bucket is empty."""
        tokens, then = self._buckets.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate_per_s)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


class HandshakeLoad:
    """Is the server under load? (wireguard-go ``device.IsUnderLoad``, plus a Hello rate.)

    Args:
        hellos_per_s: Hellos per second (junk ones too) above which it is.
        queue_limit: a handshake queue this long or longer means it is.
        hold_s: how long it stays under load after the last sign.
    """

    def __init__(
        self,
        hellos_per_s: int = constants.UNDER_LOAD_HELLOS_PER_S,
        queue_limit: int = constants.HANDSHAKE_QUEUE // 4,
        hold_s: float = constants.UNDER_LOAD_HOLD_S,
    ) -> None:
        self.hellos_per_s = hellos_per_s
        self.queue_limit = queue_limit
        self.hold_s = hold_s
        self._second = float("-inf")
        self._count = 0
        self._until = float("-inf")

    def hello(self, now: float, queued: int) -> bool:
        """One more Hello arrived (``queued`` wait already); is the server under load now?"""
        return self.hellos(now, 1, queued)

    def hellos(self, now: float, count: int, queued: int) -> bool:
        """``count`` more Hellos arrived (the batch screen's junk too); under load now?"""
        if now >= self._second + 1.0:
            self._second, self._count = now, 0
        self._count += count
        if self._count > self.hellos_per_s or queued >= self.queue_limit:
            self._until = now + self.hold_s
        return now < self._until
