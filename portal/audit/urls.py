"""The auditor workspace (read-only: every route answers GET only)."""

from django.urls import path

from portal.audit import views

app_name = "audit"

urlpatterns = [
    path("", views.workspace, name="workspace"),
    path("events/", views.events, name="events"),
    path("events/<int:seq>/", views.event_detail, name="event"),
    path("export.csv", views.export, {"export_format": "csv"}, name="export_csv"),
    path("export.jsonl", views.export, {"export_format": "jsonl"}, name="export_jsonl"),
    path("export/manifest.json", views.export_manifest, name="export_manifest"),
]
