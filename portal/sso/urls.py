"""Paths of enterprise sign-in; the callback and back-channel URIs are registered at the IdP."""

from django.urls import path

from portal.sso import views

app_name = "sso"

urlpatterns = [
    path("<slug:name>/login/", views.login_view, name="login"),
    path("<slug:name>/callback/", views.callback_view, name="callback"),
    path("links/<int:link_id>/revoke/", views.revoke_link_view, name="revoke_link"),
    path("<slug:name>/backchannel-logout/", views.backchannel_logout_view, name="backchannel_logout"),
]
