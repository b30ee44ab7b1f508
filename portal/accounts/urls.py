from django.urls import path

from portal.accounts import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("mfa/", views.mfa_view, name="mfa"),
    path("mfa/verify/", views.mfa_verify_view, name="mfa_verify"),
    path("step-up/", views.step_up_view, name="step_up"),
]
