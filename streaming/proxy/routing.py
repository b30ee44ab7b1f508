"""WebSocket routes of the proxy enforcement point."""

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
