"""The auditor workspace (read-only: every route answers GET only)."""

from django.urls import path

from portal.auditor import views

app_name = "audit"

urlpatterns = [
    path("", views.workspace, name="workspace"),
    path("events/", views.events, name="events"),
    path("events/<int:seq>/", views.event_detail, name="event"),
    path("export.csv", views.export, {"export_format": "csv"}, name="export_csv"),
    path("export.jsonl", views.export, {"export_format": "jsonl"}, name="export_jsonl"),
    path("export/manifest.json", views.export_manifest, name="export_manifest"),
    path("sessions/", views.sessions, name="sessions"),
    path("sessions/desktop/<uuid:session_id>/", views.desktop_session, name="desktop_session"),
    path("sessions/proxy/<int:record_id>/", views.proxy_session, name="proxy_session"),
    path("recordings/<uuid:session_id>/", views.recording, name="recording"),
    path("recordings/<uuid:session_id>/file", views.recording_file, name="recording_file"),
]
