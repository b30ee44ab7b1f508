"""HTTP routes of the proxy enforcement point."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
