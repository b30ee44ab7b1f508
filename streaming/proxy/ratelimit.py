"""Per user and resource token buckets: in Redis when ``REDIS_URL`` is set, else in memory.

A bucket holds ``rate`` tokens (a minute's worth, so short bursts pass) and refills at
``rate / 60`` per second. Redis runs the whole take as one Lua script, so replicas share
one bucket per user and resource and two takes can never both spend the last token.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any, Protocol

from django.conf import settings

__all__ = ["MemoryBuckets", "RateLimiter", "RedisBuckets", "limiter"]

_LUA = """
local key = KEYS[1]
local capacity = tonumber(ARGV[1])
local per_second = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', key, 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_second)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / per_second
end
redis.call('HSET', key, 'tokens', tokens, 'at', now)
redis.call('EXPIRE', key, math.ceil(capacity / per_second) + 1)
return tostring(wait)
"""


class RateLimiter(Protocol):
    def take(self, key: str, rate_per_minute: int) -> int:
        """Spend a token; 0 when allowed, else the seconds until one is available."""

    async def atake(self, key: str, rate_per_minute: int) -> int:
        """:meth:`take` without blocking the event loop."""


class MemoryBuckets:
    """One process's buckets (the demo without Redis)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, rate_per_minute: int) -> int:
        capacity, per_second = float(rate_per_minute), rate_per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - at) * per_second)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / per_second))

    async def atake(self, key: str, rate_per_minute: int) -> int:
        return self.take(key, rate_per_minute)

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


class RedisBuckets:
    """Buckets shared by every replica."""

    def __init__(self, url: str) -> None:
        import redis

        self._url = url
        self._client = redis.Redis.from_url(url)
        self._async: tuple[asyncio.AbstractEventLoop, Any] | None = None
        self._script = self._client.register_script(_LUA)

    def take(self, key: str, rate_per_minute: int) -> int:
        wait = float(self._script(keys=[f"portal:proxy:bucket:{key}"],
                                  args=[rate_per_minute, rate_per_minute / 60.0, time.time()]))
        return 0 if wait <= 0 else max(1, math.ceil(wait))

    async def atake(self, key: str, rate_per_minute: int) -> int:
        """:meth:`take` on the event loop (one asyncio Redis client per loop)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(self._url)
            self._async = (loop, client.register_script(_LUA))
        wait = float(await self._async[1](keys=[f"portal:proxy:bucket:{key}"],
                                          args=[rate_per_minute, rate_per_minute / 60.0, time.time()]))
        return 0 if wait <= 0 else max(1, math.ceil(wait))

    def reset(self) -> None:
        for key in self._client.scan_iter("portal:proxy:bucket:*"):
            self._client.delete(key)


_lock = threading.Lock()
_limiter: MemoryBuckets | RedisBuckets | None = None


def limiter() -> MemoryBuckets | RedisBuckets:
    """The process's limiter, chosen by ``REDIS_URL``."""
    global _limiter
    if _limiter is None:
        with _lock:
            if _limiter is None:
                url = getattr(settings, "PORTAL_PROXY_RATE_LIMIT_REDIS", None)
                _limiter = RedisBuckets(url) if url else MemoryBuckets()
    return _limiter
