"""Throttling of password guesses, per username and per client address.

Counted in the cache (Redis when configured) whether or not the username exists, so the
answer never tells an attacker which accounts are real. After the limit, every further
failure doubles the lock-out.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

__all__ = ["LoginThrottle"]


def _key(kind: str, value: str) -> str:
    return "login-fail:" + kind + ":" + hashlib.sha256(value.lower().encode()).hexdigest()[:32]


@dataclass(frozen=True)
class LoginThrottle:
    """Failure counter for one login attempt's username and client address."""

    username: str
    client_address: str

    def _keys(self) -> list[str]:
        return [_key("user", self.username), _key("addr", self.client_address)]

    def retry_after(self) -> int:
        """Seconds until another attempt is accepted (0 when allowed now)."""
        now = time.time()
        waits = [0]
        for state in cache.get_many(self._keys()).values():
            waits.append(int(state.get("locked_until", 0) - now + 0.999))
        return max(0, *waits)

    def failed(self) -> None:
        """Count one failure; lock when the limit is reached."""
        limit = settings.PORTAL_LOGIN_FAILURE_LIMIT
        window = settings.PORTAL_LOGIN_FAILURE_WINDOW
        now = time.time()
        for key in self._keys():
            state = cache.get(key) or {"count": 0, "locked_until": 0}
            state["count"] += 1
            if state["count"] >= limit:
                state["locked_until"] = now + min(2 ** (state["count"] - limit) * 30, window)
            cache.set(key, state, timeout=window)

    def succeeded(self) -> None:
        """Forget the username's failures (the address's stay: it may be spraying)."""
        cache.delete(_key("user", self.username))
