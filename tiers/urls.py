"""Routes of the catalog pages: ``/`` (My apps), ``/requests/`` and ``/manage/``."""

from django.urls import include, path

from tiers import views

request_patterns = [
    path("", views.requests_index, name="index"),
    path("<int:pk>/cancel/", views.request_cancel, name="cancel"),
]

manage_patterns = [
    path("", views.manage_index, name="index"),
    path("resources/", views.manage_resources, name="resources"),
    path("resources/<slug:slug>/", views.manage_resource, name="resource"),
    path("tiers/", views.manage_tiers, name="tiers"),
    path("tiers/<slug:name>/", views.manage_tier, name="tier"),
    path("simulator/", views.manage_simulator, name="simulator"),
    path("requests/", views.manage_requests, name="requests"),
    path("requests/<int:pk>/approve/", views.manage_request_decide, {"verdict": "approve"},
         name="approve"),
    path("requests/<int:pk>/deny/", views.manage_request_decide, {"verdict": "deny"}, name="deny"),
    path("changes/", views.manage_changes, name="changes"),
    path("changes/<int:pk>/approve/", views.manage_change_decide, {"verdict": "approve"},
         name="change-approve"),
    path("changes/<int:pk>/reject/", views.manage_change_decide, {"verdict": "reject"},
         name="change-reject"),
    path("grants/<int:pk>/revoke/", views.manage_grant_revoke, name="revoke"),
]

urlpatterns = [
    path("", views.my_apps, name="home"),
    path("requests/", include((request_patterns, "requests"))),
    path("manage/", include((manage_patterns, "manage"))),
]
