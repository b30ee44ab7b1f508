"""Portal-wide pages: health probes and the error pages that say what happened."""

from __future__ import annotations

import logging
import sys

from django.contrib.auth.decorators import login_not_required
from django.db import DataError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.cache import never_cache

from portal.health import DEPENDENCY_ERRORS, readiness_report, unavailable_context

__all__ = ["bad_request", "csrf_failure", "healthz", "page_not_found", "permission_denied",
           "readyz", "server_error"]

logger = logging.getLogger(__name__)


@login_not_required
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@login_not_required
@never_cache
def readyz(request: HttpRequest) -> HttpResponse:
    body, status = readiness_report(getattr(request, "client_address", ""))
    return JsonResponse(body, status=status)


def _render_error(request: HttpRequest, template: str, status: int, **context: object) -> HttpResponse:
    context.setdefault("request_id", getattr(request, "request_id", ""))
    try:
        return render(request, template, context, status=status)
    except Exception:
        return HttpResponse(f"<h1>Error {status}</h1>", status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _render_error(request, "errors/400.html", 400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _render_error(request, "errors/403.html", 403,
                         reason=str(exception) if exception and str(exception) else "")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _render_error(request, "errors/404.html", 404)


def server_error(request: HttpRequest) -> HttpResponse:
    """500, or 503 when a dependency (database, Redis) is down: access then fails closed.

    A value the database refused (a NUL character in text, a number out of range, a string
    too long) is the sender's fault, not an outage: 400, never "security service unreachable".
    Rendered without context processors: they would ask the broken database for the user.
    """
    exc = sys.exc_info()[1]
    context = {"request_id": getattr(request, "request_id", "")}
    if _is_invalid_input(exc):
        logger.warning("request refused: the database could not store its input: %s", exc)
        return HttpResponse(render_to_string("errors/400.html", {**context, "invalid_input": True}),
                            status=400)
    if isinstance(exc, DEPENDENCY_ERRORS):
        context.update(unavailable_context(exc))
        response = HttpResponse(render_to_string("errors/503.html", context), status=503)
        response["Retry-After"] = "30"
        return response
    return HttpResponse(render_to_string("errors/500.html", context), status=500)


def _is_invalid_input(exc: BaseException | None) -> bool:
    import psycopg

    return isinstance(exc, (DataError, psycopg.DataError))


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return _render_error(request, "errors/403_csrf.html", 403)
