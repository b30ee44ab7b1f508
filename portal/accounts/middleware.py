"""Password alone reaches nothing: until the second factor is verified, only the sign-in
and MFA pages answer."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse

__all__ = ["MFARequiredMiddleware"]

_OPEN_PREFIXES = ("/accounts/login/", "/accounts/logout/", "/accounts/mfa/", "/healthz",
                  "/readyz", "/metrics", "/static/")


class MFARequiredMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(_OPEN_PREFIXES):
            return self.get_response(request)  # decided without loading the session
        user = request.user
        if user.is_authenticated and not user.is_verified():
            target = reverse("accounts:mfa_verify")
            if request.headers.get("Accept", "").startswith("application/json"):
                return JsonResponse(
                    {"error": "mfa_required", "detail": "Verify your second factor first.",
                     "location": target}, status=401)
            return HttpResponseRedirect(f"{target}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)
