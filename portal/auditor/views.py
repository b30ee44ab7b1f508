"""The auditor workspace: read-only pages over the audit trail, and its exports.

Only holders of ``accounts.view_audit`` (the auditor role) get in; anyone else gets 403 and
the refusal is itself written to the trail (``audit.forbidden``). Every page and every
export writes its own event (``audit.view`` / ``audit.export``) before it shows anything:
reading the trail leaves a trace in it. There are only GET views: nothing here changes the
trail. Views translate; the work is in :mod:`~portal.auditor.search`,
:mod:`~portal.auditor.exports`, :mod:`~portal.auditor.sessions` and :mod:`~portal.auditor.recordings`.
Playing a recording writes ``audit.playback`` once per player page (not per range request).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, time
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache

from portal.audit.chain import GENESIS, canonical_content, event_hash, record_request
from portal.audit.models import AuditEvent, ChainVerification, SiemCursor
from portal.audit.panels import workspace_panels
from portal.audit.scheduler import scheduler_wanted
from portal.auditor import sessions as session_log
from portal.auditor.exports import (
    ChainHeadAt,
    chain_head,
    content_digest,
    csv_lines,
    head_at,
    jsonl_lines,
    manifest,
)
from portal.auditor.recordings import recording_path as recording_file_path
from portal.auditor.recordings import recording_response
from portal.auditor.search import (
    KNOWN_ACTIONS,
    KNOWN_OUTCOMES,
    AuditFilter,
    AuditSearchForm,
    TierCount,
    denials_by_tier,
    filter_events,
    search_page,
)
from portal.auditor.status import chain_status
from streaming.desktop.live import format_duration, running_time
from streaming.desktop.models import StreamSession

__all__ = [
    "VIEW_AUDIT", "desktop_session", "event_detail", "events", "export",
    "export_manifest", "proxy_session", "recording", "recording_file", "sessions",
    "workspace",
]

VIEW_AUDIT = "accounts.view_audit"
_EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}
_PAGING = ("before", "after")


def auditor_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Auditors only (403 for everyone else, audited), GET only, never cached."""

    @wraps(view)
    @never_cache
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_perm(VIEW_AUDIT):
            record_request(
                request, "audit.forbidden", outcome="deny",
                reasons=[{"rule": "permission", "message": "Only auditors may read the audit trail.",
                          "values": {"permission": VIEW_AUDIT}, "remedy": "Ask for the auditor role."}],
                detail={"method": request.method, "path": request.path[:300]})
            raise PermissionDenied("The audit workspace is for auditors. Your account does not hold "
                                   "the auditor role.")
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        return view(request, *args, **kwargs)

    return wrapped


def _seen(request: HttpRequest, page: str, **detail: Any) -> None:
    record_request(request, "audit.view", outcome="success", detail={"page": page, **detail})


# --- the front page ------------------------------------------------------------------------

@dataclass(frozen=True)
class Bar:
    """One bar of the server-drawn chart (SVG coordinates)."""

    x: int
    y: int
    width: int
    count: int
    kind: str  # deny | step_up
    text_x: int
    text_y: int


@dataclass(frozen=True)
class ChartRow:
    label: str
    tier: str
    label_y: int
    bars: tuple[Bar, ...]


_CHART_WIDTH, _LABEL_WIDTH, _ROW_HEIGHT, _BAR_HEIGHT = 560, 110, 44, 16


def _chart(counts: list[TierCount]) -> dict[str, Any]:
    top = max([max(c.deny, c.step_up) for c in counts] or [0]) or 1
    room = _CHART_WIDTH - _LABEL_WIDTH - 50
    rows = []
    for i, c in enumerate(counts):
        y = i * _ROW_HEIGHT
        bars = []
        for j, (kind, n) in enumerate((("deny", c.deny), ("step_up", c.step_up))):
            bar_y = y + 4 + j * (_BAR_HEIGHT + 2)
            width = max(2, round(n / top * room)) if n else 0
            bars.append(Bar(_LABEL_WIDTH, bar_y, width, n, kind,
                            _LABEL_WIDTH + width + 6, bar_y + _BAR_HEIGHT - 4))
        rows.append(ChartRow(c.tier or "no tier", c.tier, y + 22, tuple(bars)))
    return {"rows": rows, "width": _CHART_WIDTH, "height": max(1, len(rows)) * _ROW_HEIGHT,
            "label_width": _LABEL_WIDTH, "bar_height": _BAR_HEIGHT, "total_deny": sum(c.deny for c in counts),
            "total_step_up": sum(c.step_up for c in counts)}


def _verification_interval() -> float | None:
    entry = settings.CELERY_BEAT_SCHEDULE.get("audit-verify-chain")
    schedule = entry.get("schedule") if entry else None
    return float(schedule) if isinstance(schedule, int | float) else None


def _interval_words(seconds: float | None) -> str:
    if not seconds:
        return ""
    if seconds % 60 == 0:
        minutes = int(seconds // 60)
        return ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes}
    whole = int(seconds)
    return ngettext("%(count)d second", "%(count)d seconds", whole) % {"count": whole}


@auditor_view
def workspace(request: HttpRequest) -> HttpResponse:
    """Chain status, today's denials and step-ups by tier, forwarding, the latest events."""
    _seen(request, "workspace")
    verifications = list(ChainVerification.objects.order_by("-time", "-id")[:5])
    latest = verifications[0] if verifications else None
    interval = _verification_interval()
    today = datetime.combine(timezone.now().date(), time.min, tzinfo=timezone.get_current_timezone())
    head = chain_head()
    status = chain_status(latest, head.seq, interval_seconds=interval, now=timezone.now())
    cursors = list(SiemCursor.objects.order_by("destination"))
    sections = [(panel.template, data) for panel in workspace_panels()
                if (data := panel.context(request)) is not None]
    return render(request, "audit/workspace.html", {
        "latest": latest, "verifications": verifications, "status": status,
        "interval": _interval_words(interval), "embedded_scheduler": scheduler_wanted(),
        "head": head, "chart": _chart(denials_by_tier(today)), "today": today,
        "cursors": [(c, max(0, head.seq - c.last_seq)) for c in cursors],
        "siem_configured": bool(settings.PORTAL_SIEM_WEBHOOK_URL or settings.PORTAL_SIEM_SYSLOG),
        "events": AuditEvent.objects.order_by("-seq")[:15], "sections": sections,
    })


# --- search and detail ---------------------------------------------------------------------

def _cursor(request: HttpRequest, name: str) -> int | None:
    raw = request.GET.get(name, "")
    return int(raw) if raw.isdigit() else None


@auditor_view
def events(request: HttpRequest) -> HttpResponse:
    """Search the trail: filters, newest first, keyset pages, the time the query took."""
    form = AuditSearchForm(request.GET)
    valid = form.is_valid()
    criteria = form.to_filter() if valid else None
    _seen(request, "search", filter=criteria.as_params() if criteria else {"invalid": True})
    page = None
    if criteria is not None:
        page = search_page(criteria, before=_cursor(request, "before"), after=_cursor(request, "after"),
                           size=settings.PORTAL_AUDIT_PAGE_SIZE)
    query = urlencode(criteria.as_params()) if criteria else ""
    return render(request, "audit/events.html", {
        "form": form, "page": page, "query": query, "criteria": criteria,
        "known_actions": KNOWN_ACTIONS, "known_outcomes": KNOWN_OUTCOMES,
        "paged": any(request.GET.get(p) for p in _PAGING),
    }, status=200 if valid else 400)


def _recomputed_hash(event: AuditEvent) -> str:
    return event_hash(event.prev_hash, canonical_content(
        seq=event.seq, time=event.time, actor=event.actor, action=event.action, resource=event.resource,
        outcome=event.outcome, reasons=event.reasons, client_address=event.client_address,
        zone=event.zone, device=event.device, request_id=event.request_id, detail=event.detail))


@auditor_view
def event_detail(request: HttpRequest, seq: int) -> HttpResponse:
    """One event: every field, its reasons and detail, and its two links in the chain."""
    event = AuditEvent.objects.filter(seq=seq).first()
    if event is None:
        raise Http404("No event with this number.")
    _seen(request, "event", seq=seq)
    previous = AuditEvent.objects.filter(seq=seq - 1).values_list("hash", flat=True).first()
    expected_prev = GENESIS if seq == 1 else previous
    return render(request, "audit/event_detail.html", {
        "event": event,
        "content_ok": _recomputed_hash(event) == event.hash,
        "link_ok": expected_prev is not None and expected_prev == event.prev_hash,
        "previous_exists": previous is not None,
        "next_exists": AuditEvent.objects.filter(seq=seq + 1).exists(),
        "reasons": [r for r in event.reasons if isinstance(r, dict)]
        if isinstance(event.reasons, list) else [],
        "reasons_json": json.dumps(event.reasons, indent=2, ensure_ascii=False, default=str),
        "detail_json": json.dumps(event.detail, indent=2, ensure_ascii=False, sort_keys=True, default=str),
    })


# --- exports -------------------------------------------------------------------------------

def _blocks(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


async def _async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # Under ASGI a synchronous iterator would be read into memory whole before the first
    # byte goes out; pull it chunk by chunk on the request's thread instead (the database
    # cursor lives there), so a million-row export streams in bounded memory.
    step = sync_to_async(_blocks, thread_sensitive=True)
    try:
        while (block := await step(chunks)) is not None:
            yield block
    finally:
        await sync_to_async(getattr(chunks, "close", lambda: None), thread_sensitive=True)()


def _streaming(request: HttpRequest, chunks: Iterator[bytes], content_type: str) -> StreamingHttpResponse:
    content = _async_chunks(chunks) if isinstance(request, ASGIRequest) else chunks
    return StreamingHttpResponse(content, content_type=content_type)


def _export_filter(request: HttpRequest) -> AuditFilter | JsonResponse:
    form = AuditSearchForm(request.GET)
    if not form.is_valid():
        return JsonResponse({"error": "invalid_filter", "fields": form.errors.get_json_data()}, status=400)
    return form.to_filter()


def _manifest_url(criteria: AuditFilter, head: ChainHeadAt, export_format: str) -> str:
    params = {**criteria.as_params(), "format": export_format, "head": str(head.seq)}
    return f"{reverse('audit:export_manifest')}?{urlencode(params)}"


@auditor_view
def export(request: HttpRequest, export_format: str) -> HttpResponse:
    """Stream the search as CSV (manifest in ``X-Export-Manifest``) or JSON Lines (manifest last)."""
    criteria = _export_filter(request)
    if isinstance(criteria, JsonResponse):
        return criteria
    head = chain_head()  # pinned first: the export and its manifest describe this very head
    who = request.user.get_username()
    record_request(request, "audit.export", outcome="success",
                   detail={"format": export_format, "filter": criteria.as_params(), "head_seq": head.seq})
    if export_format == "csv":
        rows = filter_events(criteria).filter(seq__lte=head.seq).count()
        header = manifest(criteria, head, export_format="csv", rows=rows, generated_by=who)
        header["manifest_url"] = _manifest_url(criteria, head, "csv")
        response = _streaming(request, csv_lines(criteria, head), _EXPORT_FORMATS["csv"])
        # ASCII-only JSON: a header value cannot carry raw UTF-8 or a line break.
        response["X-Export-Manifest"] = json.dumps(header, sort_keys=True, separators=(",", ":"))
    else:
        response = _streaming(request, jsonl_lines(criteria, head, generated_by=who),
                              _EXPORT_FORMATS["jsonl"])
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}-head{head.seq}.{export_format}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@auditor_view
def export_manifest(request: HttpRequest) -> HttpResponse:
    """The manifest of an export, recomputed: filter + ``head`` + ``format`` give the same rows.

    Reads every matching row once (to hash the export's content), so it costs what the
    export costs; auditors fetch it to check a file they already hold.
    """
    criteria = _export_filter(request)
    if isinstance(criteria, JsonResponse):
        return criteria
    export_format = request.GET.get("format", "csv")
    raw_head = request.GET.get("head", "")
    if export_format not in _EXPORT_FORMATS or not raw_head.isdigit():
        return JsonResponse({"error": "format must be csv or jsonl, and head an event number"}, status=400)
    head = head_at(int(raw_head))
    if head is None or head.seq > chain_head().seq:
        return JsonResponse({"error": "no such chain head"}, status=404)
    record_request(request, "audit.export", outcome="success",
                   detail={"format": f"{export_format}-manifest", "filter": criteria.as_params(),
                           "head_seq": head.seq})
    rows, digest = content_digest(export_format, criteria, head)
    body = manifest(criteria, head, export_format=export_format, rows=rows, content_sha256=digest,
                    generated_by=request.user.get_username())
    return JsonResponse({"manifest": body}, json_dumps_params={"sort_keys": True})


# --- sessions and recordings ---------------------------------------------------------------

_PLAYBACKS_KEY = "audit.playbacks"  # recordings this browser session was shown (audited) lately


def _page_number(request: HttpRequest, name: str) -> int:
    raw = request.GET.get(name, "")
    return int(raw) if raw.isdigit() and 0 < len(raw) < 7 else 1


@auditor_view
def sessions(request: HttpRequest) -> HttpResponse:
    """Desktop sessions and web (proxy) sessions, filterable by user, resource and time."""
    form = session_log.SessionFilterForm(request.GET)
    valid = form.is_valid()
    criteria = form.to_filter() if valid else None
    _seen(request, "sessions", filter=criteria.as_params() if criteria else {"invalid": True})
    context: dict[str, Any] = {"form": form, "criteria": criteria,
                               "query": urlencode(criteria.as_params()) if criteria else "",
                               "gap_minutes": int(session_log.PROXY_SESSION_GAP.total_seconds() // 60)}
    size = settings.PORTAL_AUDIT_PAGE_SIZE
    if criteria is not None and criteria.kind in ("", "desktop"):
        desktop_page = Paginator(session_log.desktop_sessions(criteria), size).get_page(
            _page_number(request, "dpage"))
        counts = session_log.desktop_counts(desktop_page.object_list)
        context["desktop_page"] = desktop_page
        context["desktop_rows"] = [(s, counts[str(s.pk)], format_duration(running_time(s)))
                                   for s in desktop_page.object_list]
    if criteria is not None and criteria.kind in ("", "web"):
        listing = session_log.proxy_sessions(criteria)
        context["proxy_list"] = listing
        context["proxy_page"] = Paginator(listing.sessions, size).get_page(_page_number(request, "ppage"))
    return render(request, "audit/sessions.html", context, status=200 if valid else 400)


def _stream_session(session_id: Any) -> Any:
    stream = StreamSession.objects.select_related("user", "resource").filter(pk=session_id).first()
    if stream is None:
        raise Http404("No desktop session with this id.")
    return stream


@auditor_view
def desktop_session(request: HttpRequest, session_id: Any) -> HttpResponse:
    """One desktop session: its facts, timeline, recording and (SSH) typescript."""
    stream = _stream_session(session_id)
    _seen(request, "desktop_session", target=str(stream.pk))
    path = recording_file_path(stream.pk)
    return render(request, "audit/desktop_session.html", {
        "stream": stream, "counts": session_log.desktop_counts([stream])[str(stream.pk)],
        "timeline": session_log.desktop_timeline(stream), "recording": path,
        "recording_size": path.stat().st_size if path else None,
        "typescript": session_log.typescript(stream.pk), "typescript_limit": session_log.TYPESCRIPT_LIMIT,
        "playbacks": session_log.playbacks(stream.pk),
        "duration": format_duration(running_time(stream)),
    })


@auditor_view
def proxy_session(request: HttpRequest, record_id: int) -> HttpResponse:
    """One web session (found from any of its access records): its requests and decisions."""
    found = session_log.proxy_session(record_id)
    if found is None:
        raise Http404("No web session holds this access record.")
    session = found.session
    _seen(request, "proxy_session", target=session.first_id, user=session.actor, resource=session.resource)
    return render(request, "audit/proxy_session.html", {
        "session": session, "records": found.records, "more_records": found.more_records,
        "timeline": session_log.proxy_timeline(session),
        "gap_minutes": int(session_log.PROXY_SESSION_GAP.total_seconds() // 60),
    })


def _granted_playbacks(request: HttpRequest) -> list[str]:
    granted = request.session.get(_PLAYBACKS_KEY, [])
    return granted if isinstance(granted, list) else []


def _note_playback(request: HttpRequest, stream: Any, via: str) -> None:
    """Write ``audit.playback`` and remember it, so the player's range requests add nothing."""
    record_request(request, "audit.playback", outcome="success", resource=stream.resource.slug,
                   detail={"recording": str(stream.pk), "user": stream.user.get_username(),
                           "sha256": stream.recording_sha256, "via": via})
    granted = [g for g in _granted_playbacks(request) if g != str(stream.pk)][-19:]
    request.session[_PLAYBACKS_KEY] = [*granted, str(stream.pk)]


@auditor_view
def recording(request: HttpRequest, session_id: Any) -> HttpResponse:
    """The recording player (guacamole-common-js's SessionRecording); one audit event per view."""
    stream = _stream_session(session_id)
    path = recording_file_path(stream.pk)
    if path is None:
        raise Http404("This session has no recording (not recorded, or not found on disk).")
    _note_playback(request, stream, via="player")
    return render(request, "audit/recording.html", {
        "stream": stream, "size": path.stat().st_size,
        "duration": format_duration(running_time(stream)),
    })


@auditor_view
def recording_file(request: HttpRequest, session_id: Any) -> HttpResponse:
    """The recording's bytes, whole or by range (206/416); audited unless the player page was."""
    stream = _stream_session(session_id)
    path = recording_file_path(stream.pk)
    if path is None:
        raise Http404("This session has no recording.")
    if str(stream.pk) not in _granted_playbacks(request):
        _note_playback(request, stream, via="file")
    etag = f'"{stream.recording_sha256}"' if stream.recording_sha256 else ""
    return recording_response(path, request.headers.get("Range", ""), etag=etag,
                              if_range=request.headers.get("If-Range", ""))
