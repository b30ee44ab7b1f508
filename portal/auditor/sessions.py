"""The auditor's session log: who was in what, for how long, and what happened meanwhile.

Two kinds of session:

* **Web (proxy) sessions** are not stored anywhere: the proxy keeps one access record per
  request (:class:`streaming.proxy.models.AccessRecord`) and carries no portal-session key,
  so a session is a run of one user's requests to one resource with no gap longer than
  :data:`PROXY_SESSION_GAP`. Grouping is a pure function (:func:`group_proxy_sessions`) over
  rows read in ``(actor, resource, time)`` order; at most :data:`PROXY_SCAN_LIMIT` rows are
  read per listing and the page says so when the filter asks for more.
* **Desktop sessions** are :class:`~streaming.desktop.models.StreamSession` rows; their
  clipboard and file events (``desktop.clipboard.in``, ``desktop.clipboard.out``,
  ``desktop.file.transfer``, written by the tunnel consumer with ``detail.session``) are
  counted from the audit trail.

A session's timeline is the audit events that name it (``detail.session``) plus the access
decisions taken for that user and resource just before it started (the decision to open is
written before the session row exists, so it cannot carry the session id).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from django import forms
from django.conf import settings
from django.db.models import CharField, Count, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.db.models.lookups import Exact

from portal.audit.models import AuditEvent
from streaming.desktop.models import StreamSession
from streaming.proxy.models import AccessRecord

__all__ = [
    "DECISION_WINDOW", "PROXY_SCAN_LIMIT", "PROXY_SESSION_GAP", "TYPESCRIPT_LIMIT", "AccessRow",
    "DesktopCounts", "ProxySession", "ProxySessionDetail", "ProxySessionList", "SessionFilter",
    "SessionFilterForm", "Typescript", "desktop_counts", "desktop_sessions", "desktop_timeline",
    "group_proxy_sessions", "playbacks", "proxy_session", "proxy_sessions",
    "proxy_timeline", "session_events", "strip_terminal_codes", "typescript",
]

PROXY_SESSION_GAP = timedelta(minutes=30)
PROXY_SCAN_LIMIT = 200_000
# The open decision comes moments before the session row; a step-up before it, minutes.
DECISION_WINDOW = timedelta(minutes=5)
TYPESCRIPT_LIMIT = 256 * 1024
PROXY_TIMELINE_LIMIT = 500

_CLIPBOARD_ACTIONS = ("desktop.clipboard.in", "desktop.clipboard.out")
_FILE_ACTIONS = ("desktop.file.transfer",)
_DENIALS = frozenset({"deny"})
_STEP_UPS = frozenset({"step_up"})


# --- filters -------------------------------------------------------------------------------

@dataclass(frozen=True)
class SessionFilter:
    """What the auditor asked for; empty fields do not filter."""

    user: str = ""
    resource: str = ""
    kind: str = ""  # "", "desktop" or "web"
    since: datetime | None = None
    until: datetime | None = None

    def as_params(self) -> dict[str, str]:
        """The non-empty filters as query parameters (times in ISO 8601)."""
        params = {}
        for name in ("user", "resource", "kind", "since", "until"):
            value = getattr(self, name)
            if isinstance(value, datetime):
                params[name] = value.isoformat()
            elif value:
                params[name] = value
        return params


class SessionFilterForm(forms.Form):
    """The session log's filters, as query parameters."""

    user = forms.CharField(required=False, max_length=150, label="User", help_text="Username, exactly.")
    resource = forms.CharField(required=False, max_length=100, label="Resource",
                               help_text="Resource slug, exactly.")
    kind = forms.ChoiceField(required=False, label="Kind", choices=[
        ("", "Desktop and web"), ("desktop", "Desktop only"), ("web", "Web only")])
    since = forms.DateTimeField(required=False, label="From (UTC)",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, label="Until (UTC)",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            raise forms.ValidationError("“From” must be before “Until”.")
        for name in ("user", "resource", "kind"):
            data[name] = (data.get(name) or "").strip()
        return data

    def to_filter(self) -> SessionFilter:
        """The validated filters (call after ``is_valid()``)."""
        data = self.cleaned_data
        return SessionFilter(user=data["user"], resource=data["resource"], kind=data["kind"],
                             since=data.get("since"), until=data.get("until"))


# --- web (proxy) sessions ------------------------------------------------------------------

class AccessRow(NamedTuple):
    """The columns of an access record that sessions are made of (``values_list`` order)."""

    id: int
    time: datetime
    actor: str
    resource: str
    decision: str
    bytes_in: int
    bytes_out: int


_ACCESS_COLUMNS = AccessRow._fields


@dataclass
class ProxySession:
    """A run of one user's requests to one web resource without a long pause."""

    actor: str
    resource: str
    first_id: int
    first: datetime
    last: datetime
    requests: int = 0
    denials: int = 0
    step_ups: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    @property
    def duration(self) -> timedelta:
        return self.last - self.first

    def add(self, row: AccessRow) -> None:
        self.last = max(self.last, row.time)
        self.requests += 1
        self.denials += row.decision in _DENIALS
        self.step_ups += row.decision in _STEP_UPS
        self.bytes_in += row.bytes_in
        self.bytes_out += row.bytes_out


def group_proxy_sessions(rows: Iterable[AccessRow],
                         gap: timedelta = PROXY_SESSION_GAP) -> Iterator[ProxySession]:
    """Sessions from rows ordered by ``(actor, resource, time)``: a new one after a gap > ``gap``."""
    current: ProxySession | None = None
    for row in rows:
        if (current is None or (row.actor, row.resource) != (current.actor, current.resource)
                or row.time - current.last > gap):
            if current is not None:
                yield current
            current = ProxySession(row.actor, row.resource, row.id, row.time, row.time)
        current.add(row)
    if current is not None:
        yield current


@dataclass(frozen=True)
class ProxySessionList:
    """Web sessions matching a filter, newest first; ``truncated`` when the scan hit its limit."""

    sessions: list[ProxySession]
    truncated: bool
    scanned: int


def _access_records(criteria: SessionFilter) -> QuerySet[Any]:
    records = AccessRecord.objects.exclude(actor="")  # anonymous requests belong to nobody's session
    if criteria.user:
        records = records.filter(actor=criteria.user)
    if criteria.resource:
        records = records.filter(resource=criteria.resource)
    if criteria.since:
        records = records.filter(time__gte=criteria.since)
    if criteria.until:
        records = records.filter(time__lt=criteria.until)
    return records


def proxy_sessions(criteria: SessionFilter, *, limit: int = PROXY_SCAN_LIMIT) -> ProxySessionList:
    """Web sessions within the filter (a session crossing ``since``/``until`` is cut there)."""
    rows = (_access_records(criteria).order_by("actor", "resource", "time", "id")
            .values_list(*_ACCESS_COLUMNS)[: limit + 1].iterator(chunk_size=5000))
    seen = 0

    def counted() -> Iterator[AccessRow]:
        nonlocal seen
        for raw in rows:
            seen += 1
            if seen > limit:
                return
            yield AccessRow(*raw)

    sessions = sorted(group_proxy_sessions(counted()), key=lambda s: (s.first, s.first_id), reverse=True)
    return ProxySessionList(sessions, truncated=seen > limit, scanned=min(seen, limit))


@dataclass(frozen=True)
class ProxySessionDetail:
    """One web session and (up to a limit) its access records, oldest first."""

    session: ProxySession
    records: list[Any]
    more_records: bool


def proxy_session(record_id: int, *, gap: timedelta = PROXY_SESSION_GAP,
                  limit: int = PROXY_SCAN_LIMIT) -> ProxySessionDetail | None:
    """The web session holding access record ``record_id`` (walks back to its first request)."""
    anchor = AccessRecord.objects.exclude(actor="").filter(pk=record_id).first()
    if anchor is None:
        return None
    same = AccessRecord.objects.filter(actor=anchor.actor, resource=anchor.resource)
    start_time, start_id = anchor.time, anchor.pk
    earlier = (same.filter(Q(time__lt=anchor.time) | Q(time=anchor.time, id__lt=anchor.pk))
               .order_by("-time", "-id").values_list("id", "time")[:limit].iterator(chunk_size=2000))
    for pk, moment in earlier:
        if start_time - moment > gap:
            break
        start_time, start_id = moment, pk
    later = (same.filter(Q(time__gt=start_time) | Q(time=start_time, id__gte=start_id))
             .order_by("time", "id")[:limit].iterator(chunk_size=2000))
    session: ProxySession | None = None
    records: list[Any] = []
    for record in later:
        row = AccessRow(*(getattr(record, name) for name in _ACCESS_COLUMNS))
        if session is None:
            session = ProxySession(row.actor, row.resource, row.id, row.time, row.time)
        elif row.time - session.last > gap:
            break
        session.add(row)
        if len(records) < PROXY_TIMELINE_LIMIT:
            records.append(record)
    assert session is not None  # the anchor itself is in the run
    return ProxySessionDetail(session, records, session.requests > len(records))


def proxy_timeline(session: ProxySession) -> list[AuditEvent]:
    """Audit events of this user on this resource from just before the session to its end.

    Allowed proxy requests are kept in the access records, not the chain; what the chain
    holds for a web session is its denials, step-ups, rate limits and replays.
    """
    return list(AuditEvent.objects.filter(
        actor=session.actor, resource=session.resource,
        time__gte=session.first - DECISION_WINDOW, time__lte=session.last + timedelta(seconds=1),
    ).order_by("seq")[:PROXY_TIMELINE_LIMIT])


# --- desktop sessions ----------------------------------------------------------------------

def desktop_sessions(criteria: SessionFilter) -> QuerySet[Any]:
    """Stream sessions within the filter, newest first (by when the ticket was issued)."""
    sessions = StreamSession.objects.select_related("user", "resource").order_by("-created_at", "-pk")
    if criteria.user:
        sessions = sessions.filter(user__username=criteria.user)
    if criteria.resource:
        sessions = sessions.filter(resource__slug=criteria.resource)
    if criteria.since:
        sessions = sessions.filter(Q(ended_at__isnull=True) | Q(ended_at__gte=criteria.since))
    if criteria.until:
        sessions = sessions.filter(created_at__lt=criteria.until)
    return sessions


@dataclass
class DesktopCounts:
    """Clipboard and file events of one desktop session, and how many were refused."""

    clipboard: int = 0
    files: int = 0
    denied: int = 0


def session_events(session: Any) -> QuerySet[AuditEvent]:
    """Every audit event that names desktop session ``session`` in ``detail.session``."""
    return (AuditEvent.objects.filter(resource=session.resource.slug,
                                      time__gte=session.created_at - timedelta(minutes=1))
            .filter(Exact(KeyTextTransform("session", "detail"), str(session.pk))))


def desktop_counts(sessions: Iterable[Any]) -> dict[str, DesktopCounts]:
    """Clipboard and file event counts for each of ``sessions`` (one query), by session id."""
    sessions = list(sessions)
    counts = {str(s.pk): DesktopCounts() for s in sessions}
    if not sessions:
        return counts
    rows = (AuditEvent.objects
            .filter(action__in=(*_CLIPBOARD_ACTIONS, *_FILE_ACTIONS),
                    resource__in={s.resource.slug for s in sessions},
                    time__gte=min(s.created_at for s in sessions) - timedelta(minutes=1))
            # Cast: a plain text IN (...), not the JSON-aware IN of a key transform.
            .annotate(session=Cast(KeyTextTransform("session", "detail"), CharField()))
            .filter(session__in=list(counts))
            .values("session", "action", "outcome").annotate(n=Count("id")))
    for row in rows:
        entry = counts[row["session"]]
        if row["action"] in _CLIPBOARD_ACTIONS:
            entry.clipboard += row["n"]
        else:
            entry.files += row["n"]
        if row["outcome"] == "denied":
            entry.denied += row["n"]
    return counts


def desktop_timeline(session: Any) -> list[AuditEvent]:
    """The session's own events plus the decisions (and step-ups) taken just before it opened."""
    opened = session.started_at or session.created_at
    around_start = AuditEvent.objects.filter(
        actor=session.user.get_username(), resource=session.resource.slug,
        action__in=("decision", "mfa.step_up"),
        time__gte=session.created_at - DECISION_WINDOW, time__lte=opened + timedelta(seconds=5),
    )
    own = session_events(session)
    events = {e.seq: e for e in around_start}
    events.update((e.seq, e) for e in own[:2000])
    return [events[seq] for seq in sorted(events)]


def playbacks(session_id: uuid.UUID | str) -> list[AuditEvent]:
    """Who played this session's recording back, and when (newest first)."""
    return list(AuditEvent.objects.filter(action="audit.playback")
                .filter(Exact(KeyTextTransform("recording", "detail"), str(session_id)))
                .order_by("-seq")[:50])


# --- SSH typescripts -----------------------------------------------------------------------

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), two-byte escapes, and other C0 controls
# except tab and newline: what a terminal would interpret rather than show.
_TERMINAL_CODES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]")


def strip_terminal_codes(text: str) -> str:
    """The text a reader needs from terminal output: escape sequences out, CRLF as newlines."""
    return _TERMINAL_CODES.sub("", text.replace("\r\n", "\n"))


@dataclass(frozen=True)
class Typescript:
    """The start of an SSH session's typescript, as plain text."""

    text: str
    size: int
    truncated: bool
    lines: list[str] = field(default_factory=list)


def typescript(session_id: uuid.UUID | str, *, limit: int | None = None) -> Typescript | None:
    """The session's typescript (``<id>.typescript`` in the recordings directory), or None.

    The path comes from the session id alone; at most ``limit`` (default
    :data:`TYPESCRIPT_LIMIT`) bytes are read.
    """
    limit = TYPESCRIPT_LIMIT if limit is None else limit
    directory = Path(settings.PORTAL_RECORDINGS_DIR)
    path = directory / f"{uuid.UUID(str(session_id))}.typescript"
    if path.is_symlink() or not path.is_file():
        return None
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw = handle.read(limit)
    text = strip_terminal_codes(raw.decode("utf-8", errors="replace"))
    return Typescript(text, size, size > limit, text.splitlines())
