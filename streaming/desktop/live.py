"""The admins' list of live desktop sessions, and which of them are already being ended.

A kill is pushed to the consumer holding the session, which ends it a moment later; until
then the row is still ``live``. The audit trail already says who killed it, so the list shows
such a session as ending (without Kill or Watch) instead of as if nothing had happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from portal.audit.models import AuditEvent
from streaming.desktop.models import StreamSession

__all__ = ["LiveSession", "live_sessions"]


@dataclass(frozen=True)
class LiveSession:
    """One row of the list: the session and, once killed, who killed it."""

    stream: StreamSession
    killed_by: str = ""

    @property
    def ending(self) -> bool:
        return bool(self.killed_by)


def live_sessions(limit: int = 500) -> list[LiveSession]:
    """Every live session, newest first, each marked ending if an admin has killed it."""
    streams = list(StreamSession.objects.filter(state=StreamSession.State.LIVE)
                   .select_related("user", "resource").order_by("-started_at")[:limit])
    kills = dict(AuditEvent.objects.filter(action="desktop.kill",
                                           detail__session__in=[str(s.pk) for s in streams])
                 .values_list("detail__session", "actor"))
    return [LiveSession(stream, kills.get(str(stream.pk), "")) for stream in streams]
