"""Request plumbing every enforcement point relies on: client address, request id, the
areas each role enters, and input no database could store."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from portal.network import is_trusted, resolve_client_address

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

__all__ = ["AREAS", "Area", "AreaMiddleware", "ClientAddressMiddleware", "InvalidInputMiddleware",
           "RequestIdMiddleware", "area_of", "refused_area"]

_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                  "HTTP_X_FORWARDED_PORT", "HTTP_X_REAL_IP", "HTTP_FORWARDED")


class ClientAddressMiddleware:
    """Set ``request.client_address``; drop forwarding headers an untrusted peer sent.

    Must run first: SecurityMiddleware's HTTPS redirect reads ``X-Forwarded-Proto`` through
    ``SECURE_PROXY_SSL_HEADER``, which is only safe once untrusted copies are gone.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        peer = request.META.get("REMOTE_ADDR", "") or ""
        trusted = settings.PORTAL_TRUSTED_PROXIES
        if is_trusted(peer, trusted):
            request.client_address = resolve_client_address(
                peer, request.META.get("HTTP_X_FORWARDED_FOR"), trusted
            )
        else:
            for header in _PROXY_HEADERS:
                request.META.pop(header, None)
            request.client_address = peer
        return self.get_response(request)


class RequestIdMiddleware:
    """Give each request an id that logs and audit events share, and echo it to the client."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request.request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response


@dataclass(frozen=True)
class Area:
    """A whole section of the portal that only some roles enter (docs/decisions/0022).

    Everyone may know an area exists (the sign-in page and the docs name them), so a person
    without the role is told 403 and why; what lies inside an area follows convention 8.
    """

    name: str
    prefix: str
    permissions: tuple[str, ...]  # any one of them lets a person in
    refusal: str
    remedy: str


ADMIN_AREA = "This area is for admins. Your account does not hold the admin role."
AREAS: tuple[Area, ...] = (
    Area("manage", "/manage/",
         ("accounts.manage_catalog", "accounts.approve_access", "accounts.manage_sessions"),
         ADMIN_AREA, "Ask an admin for the admin role if your work needs it."),
    Area("sessions", "/desktop/-/", ("accounts.manage_sessions",),
         ADMIN_AREA, "Ask an admin for the admin role if your work needs it."),
    Area("audit", "/audit/", ("accounts.view_audit",),
         "The audit workspace is for auditors. Your account does not hold the auditor role.",
         "Ask for the auditor role."),
)


def area_of(path: str) -> Area | None:
    """The area ``path`` lies in, if any."""
    return next((area for area in AREAS if path.startswith(area.prefix)), None)


def refused_area(path: str, user: AbstractBaseUser | AnonymousUser) -> Area | None:
    """The area ``user`` may not enter at ``path``; None when the path is in no area or they may."""
    area = area_of(path)
    if area is None or not user.is_authenticated or any(user.has_perm(p) for p in area.permissions):
        return None
    return area


class AreaMiddleware:
    """Answer 403 with the area's sentence to a signed-in person without its role (audited).

    Runs as ``process_view``, after the sign-in and second-factor checks: a person not signed
    in is sent to sign in first, and an unknown path stays a 404 for everyone.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view: Callable[..., HttpResponse],
                     args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        area = refused_area(request.path_info, request.user)
        if area is None:
            return
        from portal.audit.chain import record_request  # the audit app loads after this module

        record_request(
            request, f"{area.name}.forbidden", outcome="deny",
            reasons=[{"rule": "permission", "message": area.refusal,
                      "values": {"permission": " or ".join(area.permissions)}, "remedy": area.remedy}],
            detail={"method": request.method, "path": _storable(request.path)[:300]})
        raise PermissionDenied(area.refusal)


class InvalidInputMiddleware:
    """Refuse a query or form field the database could not store, before any view runs.

    A NUL character passes Django's forms in places (a choice, a lookup, a field read from
    ``request.GET`` directly) and reached PostgreSQL half-way through a step: the portal
    answered it as an outage (503). Here it is a 400 that says so, with nothing changed, on
    every database alike. The sign-in pages refuse it themselves, audited under their step.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view: Callable[..., HttpResponse],
                     args: tuple[object, ...], kwargs: dict[str, object]) -> HttpResponse | None:
        from portal.accounts.inputs import invalid_fields, refuses_invalid_input
        from portal.audit.chain import record_request

        if refuses_invalid_input(view):
            return None
        bad = sorted(invalid_fields(request))
        if not bad:
            return None
        record_request(request, "request.invalid_input", outcome="invalid_input",
                       detail={"method": request.method, "path": _storable(request.path)[:300],
                               "fields": bad})
        return render(request, "accounts/invalid_input.html",
                      {"fields": bad, "request_id": getattr(request, "request_id", "")}, status=400)


def _storable(text: str) -> str:
    return text.replace("\x00", "\N{REPLACEMENT CHARACTER}").encode("utf-8", "replace").decode()
