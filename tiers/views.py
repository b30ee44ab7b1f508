"""Pages of the catalog: "My apps"."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

__all__ = ["my_apps"]


def my_apps(request: HttpRequest) -> HttpResponse:
    """The resources the signed-in user may see."""
    return render(request, "tiers/my_apps.html", {"groups": []})
