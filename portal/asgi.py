"""The one ASGI application: Django for HTTP, Channels' router for WebSockets."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from portal.audit.scheduler import with_embedded_scheduler  # noqa: E402
from portal.routing import websocket_urlpatterns  # noqa: E402
from streaming.proxy.asgi import ProxyDispatch, WebSocketDispatch  # noqa: E402

# /apps/ and every app origin bypass Django's request handling so bodies stream
# (docs/decisions/0005, 0019).
http_app = ProxyDispatch(django_asgi_app)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        # Without a broker no beat runs: the lifespan starts the audit jobs in-process.
        "lifespan": with_embedded_scheduler(http_app.lifespan),
        # A socket to an app's own origin goes to the proxy whatever its path; the portal's
        # own routes (the desktop tunnel) answer on the portal's origin only.
        "websocket": WebSocketDispatch(AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        )),
    }
)
