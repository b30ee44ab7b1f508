"""Live desktop sessions: the admins' list, the auditor's front-page panel, how long each ran.

A kill is pushed to the consumer holding the session, which ends it a moment later; until
then the row is still ``live``. The audit trail already says who killed it, so the list shows
such a session as ending (without Kill or Watch) instead of as if nothing had happened.
The auditor's panel is registered here (:mod:`portal.audit.panels`), not by the workspace.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.audit.panels import register_panel
from streaming.desktop.models import StreamSession

__all__ = [
    "LiveSession", "auditor_panel", "format_duration", "live_desktop_sessions", "live_sessions",
    "running_time",
]


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


def live_desktop_sessions() -> QuerySet[StreamSession]:
    """Sessions connected right now, the longest-running first."""
    return (StreamSession.objects.filter(state=StreamSession.State.LIVE)
            .select_related("user", "resource").order_by("started_at", "created_at"))


def running_time(stream: StreamSession) -> timedelta | None:
    """How long the session ran (so far, while live); None before it started."""
    began = stream.started_at
    if began is None:
        return None
    return (stream.ended_at or timezone.now()) - began


def format_duration(duration: timedelta | None) -> str:
    """``2 h 05 min``, ``3 min 07 s``, ``12 s`` (an em dash for none)."""
    if duration is None:
        return "—"
    seconds = max(0, int(duration.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


def auditor_panel(request: HttpRequest) -> dict[str, Any] | None:
    """The auditor's front-page "Live desktop sessions" panel; shown only while someone is connected."""
    live = list(live_desktop_sessions()[:50])
    if not live:
        return None
    return {"sessions": [(s, format_duration(running_time(s))) for s in live]}


register_panel("live_desktop_sessions", "audit/_live_sessions.html", auditor_panel)
