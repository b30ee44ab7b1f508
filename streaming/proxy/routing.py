"""WebSocket routes of the proxy enforcement point.

Everything under ``/apps/`` goes to one raw ASGI handler; it re-reads the raw path itself
(:mod:`streaming.proxy.paths`), so the pattern only has to catch the prefix.
"""

from django.urls import URLPattern, re_path

from streaming.proxy.websocket import WebSocketProxy

websocket_urlpatterns: list[URLPattern] = [
    re_path(r"^apps/", WebSocketProxy(), name="proxy-websocket"),
]
