"""What the proxy remembers about a signed-in session between requests, and how it forgets.

Deciding a request needs the session's user, their groups, their verified device and the
time of their last MFA. Reading those costs a thread hop and three queries (milliseconds)
per request; the decision itself costs microseconds. So after a full admission allows a
request, the proxy keeps a :class:`Snapshot` of those facts for a few seconds, keyed by a
hash of the session key, and later requests of that session are decided from memory —
still by :func:`tiers.decision.decide`, still per request, still with a fresh assertion.

Forgetting is pushed, not waited for (docs/decisions/0011): every change that could turn an
allow into something else — the user saved (locked, password, email), their groups, their
OTP devices, their session saved or deleted (sign-out, MFA, step-up, key rotation) — drops
the snapshots it touches in this process at once and, through the policy change bus
(:mod:`tiers.changes`, whose channel-layer group this cache's listener hears for the whole
process), in every other portal process within milliseconds. The time to
live is only the bound for a lost message. If this process cannot hear that group, the
cache is not used at all: requests take the full path (fail closed, not stale).

Only allows are ever answered from memory; every other outcome (and every tier that needs
a database look-up, like approvals or per-action MFA) goes through the full admission.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import BaseChannelLayer, InMemoryChannelLayer, channel_layers, get_channel_layer
from django.conf import settings

from streaming.proxy.assertion import Identity
from streaming.proxy.facts import Facts
from tiers import changes
from tiers.context import session_hash

__all__ = ["GROUP", "AdmissionCache", "Snapshot", "admission_cache"]

logger = logging.getLogger(__name__)

GROUP = changes.GROUP  # what this process hears: every other process's policy changes
_RESUBSCRIBE_SECONDS = 3600.0  # group membership in channels-redis expires after a day
_SWEEP_FLOOR = 1024  # entries before the first sweep of expired ones
_HASH_MEMO = 4096  # session keys whose hash is remembered


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The facts about one verified session the decision and the assertion need."""

    facts: Facts
    expires_at: float  # time.monotonic()

    @property
    def user_id(self) -> int:
        return self.facts.user_id


class AdmissionCache:
    """Per-process snapshots with pushed invalidation.

    ``ticket()`` is taken before a full admission reads the database and handed back to
    :meth:`put`; any drop in between makes the put a no-op, so a snapshot read before a lock
    can never be stored after the lock's invalidation went by.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Snapshot] = {}
        self._by_user: dict[int, set[str]] = {}
        self._changes = 0
        self._sweep_at = _SWEEP_FLOOR
        self._listening_loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Task[None] | None = None
        self._watchers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event, int, str]] = set()
        self._heard = False  # subscribed to the group (or the layer is this process alone)
        self._hashes: dict[str, str] = {}

    # --- reading and writing --------------------------------------------------------

    @staticmethod
    def ttl() -> float:
        return float(getattr(settings, "PORTAL_PROXY_ADMISSION_CACHE_SECONDS", 0) or 0)

    def usable(self) -> bool:
        """Whether answers may come from memory: cache on, and invalidations reach us."""
        return self.ttl() > 0 and self._heard

    def _hash(self, session_key: str) -> str:
        """:func:`session_hash`, remembered for the sessions seen lately (bounded)."""
        hashed = self._hashes.get(session_key)
        if hashed is None:
            if len(self._hashes) >= _HASH_MEMO:
                self._hashes.clear()
            hashed = self._hashes[session_key] = session_hash(session_key)
        return hashed

    def get(self, session_key: str | None) -> Snapshot | None:
        if not session_key or not self.usable():
            return None
        key = self._hash(session_key)
        snapshot = self._entries.get(key)
        if snapshot is None:
            return None
        if time.monotonic() >= snapshot.expires_at:
            with self._lock:
                if self._entries.get(key) is snapshot:
                    self._forget(key, snapshot.user_id)
            return None
        return snapshot

    def ticket(self) -> int:
        return self._changes

    def put(self, session_key: str, ticket: int, *, user_id: int, identity: Identity,
            groups: frozenset[str], mfa_time: float | None) -> bool:
        """Remember a session after a full admission allowed it (unless something changed since
        ``ticket`` was taken). Returns whether it was kept."""
        ttl = self.ttl()
        if ttl <= 0 or not session_key:
            return False
        key = session_hash(session_key)
        now = time.monotonic()
        with self._lock:
            if ticket != self._changes:
                return False
            facts = Facts(user_id, identity, groups, is_active=True, verified=True, mfa_time=mfa_time)
            self._entries[key] = Snapshot(facts, now + ttl)
            self._by_user.setdefault(user_id, set()).add(key)
            if len(self._entries) >= self._sweep_at:
                self._sweep(now)
        return True

    def _sweep(self, now: float) -> None:
        """Forget expired snapshots of sessions that never came back (called under the lock),
        so memory follows the sessions active in the last ``ttl`` seconds, not all time."""
        for key, snapshot in list(self._entries.items()):
            if now >= snapshot.expires_at:
                self._forget(key, snapshot.user_id)
        self._sweep_at = max(_SWEEP_FLOOR, 2 * len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    # --- forgetting -----------------------------------------------------------------

    def drop_user(self, user_id: int) -> None:
        with self._lock:
            self._changes += 1
            for key in self._by_user.pop(user_id, set()):
                self._entries.pop(key, None)

    def drop_session(self, hashed_key: str) -> None:
        with self._lock:
            self._changes += 1
            snapshot = self._entries.get(hashed_key)
            if snapshot is not None:
                self._forget(hashed_key, snapshot.user_id)

    def drop_all(self) -> None:
        with self._lock:
            self._changes += 1
            self._entries.clear()
            self._by_user.clear()

    # --- live sockets that want to hear about changes ----------------------------------

    def watch(self, user_id: int, session_key: str | None) -> asyncio.Event:
        """An event set (from any thread) whenever a change touches this user or session:
        a live proxied WebSocket re-checks at once instead of at its next interval."""
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event, user_id, session_hash(session_key))
        with self._lock:
            self._watchers.add(entry)
        event._portal_watch = entry  # type: ignore[attr-defined]
        return event

    def unwatch(self, event: asyncio.Event) -> None:
        with self._lock:
            self._watchers.discard(getattr(event, "_portal_watch", None))

    def _wake(self, message: dict[str, Any]) -> None:
        user, hashed = message.get("user"), message.get("session")
        everyone = bool(message.get("all") or message.get("catalog"))
        with self._lock:
            watchers = list(self._watchers)
        for loop, event, user_id, session in watchers:
            if everyone or (user is not None and int(user) == user_id) or (hashed and hashed == session):
                with contextlib.suppress(RuntimeError):  # its loop has closed
                    loop.call_soon_threadsafe(event.set)

    def apply(self, message: dict[str, Any]) -> None:
        """Act on an invalidation (user, session, all; ``catalog`` only wakes live sockets)."""
        self._wake(message)
        if message.get("user") is not None:
            self.drop_user(int(message["user"]))
        if message.get("session"):
            self.drop_session(str(message["session"]))
        if message.get("all"):
            self.drop_all()

    def _forget(self, key: str, user_id: int) -> None:
        self._entries.pop(key, None)
        keys = self._by_user.get(user_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[user_id]

    # --- hearing other processes ----------------------------------------------------

    def ensure_listening(self) -> None:
        """Start (once per event loop) the task that hears other processes' invalidations."""
        loop = asyncio.get_running_loop()
        if self._listening_loop is loop and self._listener is not None and not self._listener.done():
            return
        self._listening_loop, self._heard = loop, False
        self._listener = loop.create_task(self._listen(), name="proxy-admission-listener")

    async def stop_listening(self) -> None:
        task, self._listener = self._listener, None
        self._heard = False
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            layer = listener_layer()
            if layer is None:
                self._heard = False
                return
            try:
                channel = await layer.new_channel("policy-changes.")
                await layer.group_add(GROUP, channel)
                # The in-memory layer is this process alone: local drops are the whole story.
                self._heard = True
                backoff = 0.5
                resubscribe_at = time.monotonic() + _RESUBSCRIBE_SECONDS
                while True:
                    timeout = max(1.0, resubscribe_at - time.monotonic())
                    try:
                        message = await asyncio.wait_for(layer.receive(channel), timeout)
                    except TimeoutError:
                        await layer.group_add(GROUP, channel)
                        resubscribe_at = time.monotonic() + _RESUBSCRIBE_SECONDS
                        continue
                    changes.deliver(message)  # this process's subscribers: the proxy's, the zone table's
            except asyncio.CancelledError:
                self._heard = False
                raise
            except Exception:
                # Deaf: stop answering from memory until subscribed again, and forget
                # everything, since a missed message could have been a lock.
                self._heard = False
                self.drop_all()
                logger.warning("proxy admission cache cannot hear invalidations; retrying",
                               exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)



def listener_layer() -> BaseChannelLayer | None:
    """The channel layer the listener receives on: its own instance when it is Redis, so its
    wait never shares channels-redis' one-loop-at-a-time receive with the consumers' layer;
    the shared instance when it is the in-memory layer (whose groups live in the instance)."""
    shared = get_channel_layer()
    if shared is None or isinstance(shared, InMemoryChannelLayer):
        return shared
    return channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)


admission_cache = AdmissionCache()
