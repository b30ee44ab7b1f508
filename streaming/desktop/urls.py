"""HTTP routes of the desktop enforcement point.

Admin pages live under ``/desktop/-/``: a resource slug cannot start with a dash, so no
resource can shadow them.
"""

from django.urls import URLPattern, include, path

from streaming.desktop import views

_pages: list[URLPattern] = [
    path("-/live/", views.live_sessions_view, name="live"),
    path("-/sessions/<uuid:session_id>/kill/", views.kill_view, name="kill"),
    path("-/sessions/<uuid:session_id>/watch/", views.watch_view, name="watch"),
    path("<slug:slug>/", views.desktop_view, name="open"),
    path("<slug:slug>/sessions/<uuid:session_id>/step-up/", views.step_up_view, name="step_up"),
]

urlpatterns = [path("desktop/", include((_pages, "desktop")))]
