"""HTTP routes of the desktop enforcement point."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
