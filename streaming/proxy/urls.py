"""HTTP routes of the proxy enforcement point.

``/apps/<slug>/...`` itself is served before Django (see :mod:`streaming.proxy.asgi`);
Django serves the public keys and the hand-off to an app's own origin.
"""

from django.urls import URLPattern, path

from streaming.proxy import views

urlpatterns: list[URLPattern] = [
    path(".well-known/jwks.json", views.jwks, name="jwks"),
    path("handoff/<slug:slug>/", views.handoff, name="handoff"),
]
