"""WebSocket routes. Each enforcement point adds its consumers here."""

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []

__all__ = ["websocket_urlpatterns"]
