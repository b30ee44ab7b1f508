"""The portal's side of the slot pool: take a ready slot for a session, give it back.

Nothing here starts or stops a process: the session host that owns the slot sees the
assignment in the database and does it (:mod:`streaming.isolation.host`). A slot is taken
with a conditional update, so two portal processes can never take the same one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from streaming.desktop.vault import open_secret
from streaming.isolation.models import SessionHost, Slot

__all__ = ["HostView", "Lease", "NoSlotFree", "PoolState", "acquire", "hosts_for_admins", "pool_state",
           "release"]


@dataclass(frozen=True)
class Lease:
    """Where guacd reaches the session's slot, and its VNC password (never shown to anyone)."""

    slot_id: int
    address: str
    port: int
    password: str


@dataclass(frozen=True)
class PoolState:
    """How busy the pool is, for the busy page and for admins."""

    hosts: int
    total: int
    ready: int
    in_use: int
    warming: int

    @property
    def busy(self) -> bool:
        return self.ready == 0


class NoSlotFree(RuntimeError):
    """Every isolated desktop is taken (or no session host is running)."""

    def __init__(self, state: PoolState) -> None:
        super().__init__(f"no free slot ({state.in_use} of {state.total} in use)")
        self.state = state


def _live_hosts() -> Any:
    since = timezone.now() - timedelta(seconds=settings.PORTAL_SESSION_HOST_STALE_SECONDS)
    return SessionHost.objects.filter(heartbeat_at__gte=since)


def pool_state() -> PoolState:
    counts = Slot.objects.filter(host__in=_live_hosts()).aggregate(
        total=Count("pk"), ready=Count("pk", filter=Q(state=Slot.State.READY)),
        in_use=Count("pk", filter=Q(state=Slot.State.ASSIGNED)),
        warming=Count("pk", filter=Q(state__in=[Slot.State.WARMING, Slot.State.WIPING,
                                                 Slot.State.RELEASED])))
    return PoolState(hosts=_live_hosts().count(), **counts)


def acquire(session_id: str, launch: dict[str, Any]) -> Lease:
    """A ready slot of a live host, now this session's alone; :class:`NoSlotFree` otherwise."""
    for slot in (Slot.objects.filter(state=Slot.State.READY, host__in=_live_hosts())
                 .select_related("host").order_by("updated_at")[:20]):
        taken = Slot.objects.filter(pk=slot.pk, state=Slot.State.READY, generation=slot.generation).update(
            state=Slot.State.ASSIGNED, session_id=session_id, launch=launch, launched=False,
            assigned_at=timezone.now())
        if taken:
            return Lease(slot.pk, slot.host.address, int(slot.port or 0),
                         open_secret(slot.sealed_password).password)
    raise NoSlotFree(pool_state())


def release(session_id: str) -> int:
    """The session is over: its slot goes back to its host to be wiped and made anew."""
    return Slot.objects.filter(session_id=session_id, state=Slot.State.ASSIGNED).update(
        state=Slot.State.RELEASED)


@dataclass(frozen=True)
class HostView:
    """One session host as an admin sees it on Live sessions."""

    name: str
    address: str
    alive: bool
    heartbeat_at: Any
    slots: tuple[Any, ...]


def hosts_for_admins() -> list[HostView]:
    """Every registered session host with its slots (state, session), for Live sessions."""
    hosts = SessionHost.objects.prefetch_related("slots").order_by("name")
    return [HostView(h.name, h.address, h.alive, h.heartbeat_at, tuple(h.slots.all())) for h in hosts]
