"""Step-up at the IdP, under /accounts/step-up/ next to the other ways to confirm."""

from django.urls import path

from portal.idp_stepup import views

app_name = "idp_stepup"

urlpatterns = [
    path("step-up/idp/<slug:name>/", views.start_view, name="start"),
    path("step-up/idp/<slug:name>/done/", views.finish_view, name="finish"),
]
