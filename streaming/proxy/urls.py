"""HTTP routes of the proxy enforcement point.

``/apps/<slug>/...`` itself is served before Django (see :mod:`streaming.proxy.asgi`);
Django only serves the public keys.
"""

from django.urls import URLPattern, path

from streaming.proxy import views

urlpatterns: list[URLPattern] = [
    path(".well-known/jwks.json", views.jwks, name="jwks"),
]
