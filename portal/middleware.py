"""Request plumbing every enforcement point relies on: client address and request id."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from portal.network import is_trusted, resolve_client_address

__all__ = ["ClientAddressMiddleware", "RequestIdMiddleware"]

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
