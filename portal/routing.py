"""WebSocket routes: each enforcement point owns its own list."""

from streaming.desktop.routing import websocket_urlpatterns as desktop_routes
from streaming.proxy.routing import websocket_urlpatterns as proxy_routes

websocket_urlpatterns = [*desktop_routes, *proxy_routes]

__all__ = ["websocket_urlpatterns"]
