"""Passkey URLs, under /accounts/ next to the forms they belong to.

Sign-in under ``login/`` and the second factor under ``mfa/`` are reachable before the second
factor (``MFARequiredMiddleware``); step-up and enrolment need a verified session.
"""

from django.urls import path

from portal.passkeys import views

app_name = "passkeys"

urlpatterns = [
    path("login/passkey/options/", views.signin_options, name="signin_options"),
    path("login/passkey/", views.signin_finish, name="signin"),
    path("mfa/passkey/options/", views.mfa_options, name="mfa_options"),
    path("mfa/passkey/", views.mfa_finish, name="mfa"),
    path("mfa/passkeys/new/options/", views.register_options, name="register_options"),
    path("mfa/passkeys/new/", views.register_finish, name="register"),
    path("mfa/passkeys/<int:device_id>/remove/", views.remove_view, name="remove"),
    path("step-up/passkey/options/", views.step_up_options, name="step_up_options"),
    path("step-up/passkey/", views.step_up_finish, name="step_up"),
]
