"""The Hello rate limiter: a token bucket per source, bounded memory, time passed in."""

from vpnlab.core.ratelimit import HelloRateLimiter


def test_HelloRateLimiter_allows_a_burst_then_the_rate():
    limiter = HelloRateLimiter(rate_per_s=10, burst=20)
    assert sum(limiter.allow("192.0.2.2", 0.0) for _ in range(100)) == 20
    assert not limiter.allow("192.0.2.2", 0.05)  # half a token so far
    assert limiter.allow("192.0.2.2", 0.1)  # one token after 0.1 s
    allowed = sum(limiter.allow("192.0.2.2", 1.0 + i / 1000) for i in range(1000))
    assert allowed == 18  # 0.9 s of refill (9 tokens) at 1.0, then 10/s for 0.999 s


def test_HelloRateLimiter_sources_are_independent():
    limiter = HelloRateLimiter(rate_per_s=1, burst=2)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert [limiter.allow("b", 0.0) for _ in range(3)] == [True, True, False]


def test_HelloRateLimiter_memory_is_bounded():
    limiter = HelloRateLimiter(max_sources=100)
    for n in range(10_000):
        limiter.allow(f"198.51.100.{n % 250}:{n}", float(n))
    assert len(limiter) == 100
