"""URL map. Paths are part of the product (DESIGN.md section 3): keep them stable."""

from django.contrib import admin
from django.urls import include, path

from portal import landing, views
from portal.accounts import people
from portal.accounts import views as account_views
from portal.metrics import metrics_view

urlpatterns = [
    path("accounts/", include("portal.accounts.urls")),
    path("accounts/", include("portal.passkeys.urls")),  # passkeys next to the forms they serve
    path("accounts/", include("portal.idp_stepup.urls")),  # step-up at the IdP (SSO sessions)
    path("sso/", include("portal.sso.urls")),  # enterprise sign-in (OpenID Connect)
    # Before the admin's own URLs: its password form would bypass the second factor,
    # the throttle and the audit trail.
    path("admin/login/", account_views.admin_login_view, name="admin_login"),
    path("admin/", admin.site.urls),
    path("audit/", include("portal.auditor.urls")),
    path("manage/people/", people.people_view, name="people"),
    path("manage/people/<int:user_id>/lock/", people.lock_view, name="people_lock"),
    path("manage/people/<int:user_id>/unlock/", people.unlock_view, name="people_unlock"),
    path("manage/people/<int:user_id>/authenticators/<str:kind>/<int:device_id>/revoke/",
         people.revoke_authenticator_view, name="people_revoke_authenticator"),
    path("manage/people/<int:user_id>/reset/", people.reset_request_view, name="people_reset"),
    path("manage/people/resets/<int:reset_id>/approve/", people.reset_approve_view,
         name="people_reset_approve"),
    path("manage/people/resets/<int:reset_id>/cancel/", people.reset_cancel_view,
         name="people_reset_cancel"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("", landing.home, name="home"),  # each role's landing page; My apps for employees
    path("", include("streaming.proxy.urls")),
    path("", include("streaming.desktop.urls")),
    path("", include("tiers.urls")),
]

handler400 = "portal.views.bad_request"
handler403 = "portal.views.permission_denied"
handler404 = "portal.views.page_not_found"
handler500 = "portal.views.server_error"
