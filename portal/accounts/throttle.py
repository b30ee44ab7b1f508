"""Throttling of password guesses, per username and per client address.

Counted in the cache (Redis when configured) whether or not the username exists, so the
answer never tells an attacker which accounts are real.

The rule:

- An attempt is *reserved* before its password is checked, with an atomic increment
  (``cache.add`` + ``cache.incr``; Redis ``SET NX`` + ``INCR``), never read-then-write. So
  however many guesses arrive at once, at most ``PORTAL_LOGIN_FAILURE_LIMIT`` of them are
  checked for one username inside the window.
- The attempt that reaches a limit closes a *gate* for 30 s; once it opens again, one later
  attempt may check one password (it wins a ``cache.add`` claim on that opening) and closes
  it for twice as long as before (capped at the window).
  A refused attempt gives its reservation back: waiting out a pause is not punished.
- Per username: ``PORTAL_LOGIN_FAILURE_LIMIT`` (5) failures.
- Per client address: ``PORTAL_LOGIN_ADDRESS_FAILURE_LIMIT`` (default ten times the
  username limit) failures *not redeemed by a success*. A successful sign-in clears the
  username's failures and takes back from the address's count the failures that this
  username made from this address (the person mistyped, then got it right). What is left
  on an address is guesses against accounts nobody proved to own: password spraying. So
  many people behind one address (the demo: everyone is 127.0.0.1; an office NAT) do not
  lock each other out, while spraying many usernames from one address still stops.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

__all__ = ["LoginThrottle", "address_failure_limit", "first_pause"]

def first_pause() -> int:
    """Seconds of the first pause after a limit is reached (then doubled each time)."""
    return int(getattr(settings, "PORTAL_LOGIN_FIRST_PAUSE_SECONDS", 30))


def address_failure_limit() -> int:
    """Failures (not redeemed by a success) one client address may make inside the window."""
    return int(getattr(settings, "PORTAL_LOGIN_ADDRESS_FAILURE_LIMIT",
                       10 * settings.PORTAL_LOGIN_FAILURE_LIMIT))


def _key(kind: str, *values: str) -> str:
    digest = hashlib.sha256("\0".join(v.lower() for v in values).encode()).hexdigest()[:32]
    return f"login-fail:{kind}:{digest}"


def _increment(key: str, window: int) -> int:
    """Atomically add one to ``key`` (created with the window as its lifetime)."""
    for _ in range(3):
        cache.add(key, 0, timeout=window)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr: create it again
            continue
        if count == 1:
            # Redis INCR on a key that expired just before creates it without a lifetime.
            cache.touch(key, window)
        return count
    raise RuntimeError("the login throttle counter could not be incremented")


def _decrement(key: str, by: int = 1) -> int | None:
    try:
        return cache.decr(key, by)
    except ValueError:  # already expired: nothing to give back
        return None


@dataclass(frozen=True)
class LoginThrottle:
    """Failure counters for one login attempt's username and client address."""

    username: str
    client_address: str

    def _limited(self) -> list[tuple[str, int]]:
        return [(_key("user", self.username), settings.PORTAL_LOGIN_FAILURE_LIMIT),
                (_key("addr", self.client_address), address_failure_limit())]

    def _pair_key(self) -> str:
        return _key("pair", self.client_address, self.username)

    def reserve(self) -> int:
        """Reserve one password check: 0 when it may go ahead, else the seconds to wait.

        A reserved check counts as a failure until :meth:`succeeded` says otherwise.
        """
        window = settings.PORTAL_LOGIN_FAILURE_WINDOW
        taken: list[str] = []
        wait = 0
        for key, limit in self._limited():
            count = _increment(key, window)
            taken.append(key)
            if count >= limit:
                wait = max(wait, self._pass_gate(key + ":gate", count, limit, window))
        if wait:
            for key in taken:
                _decrement(key)
            return wait
        _increment(self._pair_key(), window)
        return 0

    @staticmethod
    def _pass_gate(gate: str, count: int, limit: int, window: int) -> int:
        """0 if attempt number ``count`` may go through the gate (closing it behind itself),
        else the seconds to wait.

        The gate holds the time it opens again. No gate yet means the attempt that reached
        the limit has not closed it: that is closed too. Once open, one attempt wins the
        ``cache.add`` claim on that opening; every other one finds it taken. A gate closed
        here and then refused by the other counter stays closed: erring towards a longer
        pause never lets an extra guess through.
        """
        now = time.time()
        if count == limit:
            cache.set(gate, (now + first_pause(), first_pause()), timeout=window)
            return 0
        opens_at, pause = cache.get(gate) or (None, 0)
        if opens_at is None:
            # Not closed yet by the attempt that reached the limit (or evicted): close it
            # and wait; nobody passes an unclosed gate, and nobody stays locked for good.
            cache.add(gate, (now + first_pause(), first_pause()), timeout=window)
            return first_pause()
        if opens_at > now or not cache.add(f"{gate}:{opens_at!r}", 1, timeout=window):
            return max(1, int(opens_at - now + 0.999))
        # Doubled per guess let through, not per count: racing refusals must not lengthen it.
        pause = min(pause * 2, window)
        cache.set(gate, (now + pause, pause), timeout=window)
        return 0

    def retry_after(self) -> int:
        """Seconds until another attempt would be accepted (0 when allowed now); changes nothing."""
        now = time.time()
        waits = [0]
        gates = cache.get_many([key + ":gate" for key, _ in self._limited()])
        waits.extend(int(until - now + 0.999) for until, _ in gates.values())
        return max(waits)

    def succeeded(self) -> None:
        """The password was right: forget this username's failures, and redeem on the address
        the failures this username made from it (see the module docstring)."""
        user_key, address_key = (key for key, _ in self._limited())
        cache.delete_many([user_key, user_key + ":gate"])
        redeemed = cache.get(self._pair_key()) or 0
        cache.delete(self._pair_key())
        left = _decrement(address_key, redeemed) if redeemed else cache.get(address_key)
        if left is not None and left <= 0:
            cache.delete(address_key)
        if left is None or left < address_failure_limit():
            cache.delete(address_key + ":gate")
