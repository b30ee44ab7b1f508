"""WebSocket routes of the desktop enforcement point."""

from django.urls import URLPattern, path

from streaming.desktop.consumer import DesktopTunnelConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/desktop/-/watch/<str:watch_id>/", DesktopTunnelConsumer.as_asgi(), name="desktop-watch"),
    path("ws/desktop/<str:session_id>/", DesktopTunnelConsumer.as_asgi(), name="desktop-tunnel"),
]
