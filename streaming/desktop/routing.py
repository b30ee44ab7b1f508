"""WebSocket routes of the desktop enforcement point."""

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
