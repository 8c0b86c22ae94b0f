"""A per-number send rate shared by every worker process, kept in Redis on Redis's own clock.

The Cloud API lets a business number send 80 messages a second by default (up to 1,000 on higher
tiers) and answers 429 / code 130429 above that. Each worker process counting on its own would let
``processes x rate`` through; this limiter keeps one schedule per number in Redis instead, so a
burst of callbacks queues for slots rather than collecting 429s and retries.

The algorithm is GCRA (a token bucket kept as one timestamp, the "theoretical arrival time"), in a
Lua script on Redis's ``TIME``: one round trip per send, no client clocks compared, no polling.
A caller does not wait inside Redis: it *reserves* the next slot and is told how long to sleep
before using it, and it reserves nothing when that wait would exceed what it may spend (its
budget), so an abandoned reservation never holds up the others.

The script writes after reading ``TIME``, which needs Redis 5 or later (scripts replicate their
effects, not themselves). It is inline rather than a ``.lua`` file so the package needs no package
data for it. Keys: ``<prefix>:rate:<number>``, a string holding the next free slot in microseconds, expiring
once it is in the past (an idle number costs nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..keys import rate_key

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["DEFAULT_RATE", "AsyncRateLimiter", "RateLimiter"]

#: Meta's default throughput of one business number, messages per second.
DEFAULT_RATE = 80.0

# KEYS[1]: the number's key. ARGV: interval (µs per message), burst (messages), max wait (µs).
# Returns the wait in µs (>= 0) with the slot reserved, or -(wait) when it would exceed max wait
# and nothing was reserved. Numbers are formatted with %.0f: Lua 5.1's tostring would switch to
# exponent notation and drop digits of a microsecond timestamp.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local wait = tat - now - (burst - 1) * interval
if wait < 0 then wait = 0 end
if wait > max_wait then return -math.max(1, math.floor(wait)) end
local nxt = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor((nxt - now) / 1000) + 1000)
return math.floor(wait)
"""


class _Limits:
    def __init__(self, *, per_second: float, burst: int, per_number: Mapping[str, float] | None, prefix: str) -> None:
        for rate in [per_second, *(per_number or {}).values()]:
            if not rate > 0:
                raise ConfigurationError("a rate limit must be a positive number of messages per second")
        if burst < 1:
            raise ConfigurationError("burst must be at least 1")
        self.per_second = float(per_second)
        self.burst = int(burst)
        self.per_number = dict(per_number or {})
        self.prefix = prefix

    def key(self, number: str) -> str:
        return rate_key(self.prefix, number)

    def args(self, number: str, max_wait: float) -> tuple[int, int, int]:
        rate = self.per_number.get(number, self.per_second)
        return (max(1, round(1_000_000 / rate)), self.burst, max(0, int(max_wait * 1_000_000)))

    @staticmethod
    def answer(value: Any) -> float | None:
        wait = int(value)
        return None if wait < 0 else wait / 1_000_000

    def __repr__(self) -> str:
        return f"{type(self).__name__}(per_second={self.per_second:g}, burst={self.burst}, prefix={self.prefix!r})"


class RateLimiter(_Limits):
    """The shared rate limit, for the sync `Client`.

    :param redis: a Redis client (the worker's broker connection will do).
    :param per_second: messages a second per number.
    :param burst: messages a number may send back to back before the spacing applies.
    :param per_number: other rates for some numbers (those on a higher tier).
    :param prefix: the key prefix (the webhook's ``<namespace>:<name>``).
    """

    def __init__(
        self,
        redis: redis.Redis,
        *,
        per_second: float = DEFAULT_RATE,
        burst: int = 1,
        per_number: Mapping[str, float] | None = None,
        prefix: str = "wa",
    ) -> None:
        super().__init__(per_second=per_second, burst=burst, per_number=per_number, prefix=prefix)
        self._script = redis.register_script(_SCRIPT)

    def reserve(self, number: str, *, max_wait: float) -> float | None:
        """Reserve the number's next slot: the seconds to sleep before sending, or None (nothing reserved)
        when the slot is more than ``max_wait`` seconds away."""
        return self.answer(self._script(keys=[self.key(number)], args=list(self.args(number, max_wait))))


class AsyncRateLimiter(_Limits):
    """The shared rate limit, for `AsyncClient` (same keys and script as `RateLimiter`)."""

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        *,
        per_second: float = DEFAULT_RATE,
        burst: int = 1,
        per_number: Mapping[str, float] | None = None,
        prefix: str = "wa",
    ) -> None:
        super().__init__(per_second=per_second, burst=burst, per_number=per_number, prefix=prefix)
        self._script = redis.register_script(_SCRIPT)

    async def reserve(self, number: str, *, max_wait: float) -> float | None:
        """As `RateLimiter.reserve`."""
        return self.answer(await self._script(keys=[self.key(number)], args=list(self.args(number, max_wait))))
