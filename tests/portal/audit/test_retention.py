"""Retention removes what a tier no longer keeps, and says so in the chain."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.audit.chain import verify_chain
from portal.audit.models import AuditEvent
from portal.audit.tasks import apply_retention_policy
from streaming.desktop.models import StreamSession
from streaming.proxy.models import AccessRecord
from tests.factories import UserFactory
from tests.tiers.factories import ResourceFactory, TierFactory

pytestmark = pytest.mark.django_db


def access(resource: str, days_ago: int) -> AccessRecord:
    return AccessRecord.objects.create(time=timezone.now() - timedelta(days=days_ago), actor="erin",
                                       resource=resource, method="GET", path="/", status=200,
                                       decision="allow", duration_ms=1.0)


def test_old_access_records_and_recordings_go_recent_ones_stay(settings, tmp_path):
    settings.PORTAL_RECORDINGS_DIR = tmp_path
    tier = TierFactory(name="short", retention_days=30, access_mode="stream")
    ResourceFactory(slug="wiki-r", tier=tier)
    desk = ResourceFactory(slug="desk-r", tier=tier, kind="vnc", upstream="127.0.0.1:5900")
    old, recent = access("wiki-r", 40), access("wiki-r", 3)
    user = UserFactory(username="erin")
    old_file, new_file = tmp_path / "old-rec", tmp_path / "new-rec"
    old_file.write_bytes(b"4.sync,1.1;")
    new_file.write_bytes(b"4.sync,1.2;")
    ended_long_ago = StreamSession.objects.create(
        user=user, resource=desk, tier_name="short", state="ended",
        ended_at=timezone.now() - timedelta(days=31), recording_path=str(old_file), recording_sha256="ab" * 32)
    ended_lately = StreamSession.objects.create(
        user=user, resource=desk, tier_name="short", state="ended",
        ended_at=timezone.now() - timedelta(days=1), recording_path=str(new_file))

    assert apply_retention_policy.apply().get() == {"access_records": 1, "recordings": 1}

    assert list(AccessRecord.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not old.__class__.objects.filter(pk=old.pk).exists()
    assert not old_file.exists() and new_file.exists()
    ended_long_ago.refresh_from_db()
    ended_lately.refresh_from_db()
    assert ended_long_ago.recording_path == "" and ended_lately.recording_path == str(new_file)
    removal = AuditEvent.objects.get(action="retention.recording")
    assert removal.detail["session"] == str(ended_long_ago.pk) and removal.detail["sha256"] == "ab" * 32
    assert AuditEvent.objects.get(action="retention.access_records").detail["count"] == 1
    assert verify_chain().ok

    assert apply_retention_policy.apply().get() == {"access_records": 0, "recordings": 0}, "idempotent"


def test_a_recording_path_outside_the_recordings_directory_is_never_deleted(settings, tmp_path):
    settings.PORTAL_RECORDINGS_DIR = tmp_path / "recordings"
    (tmp_path / "recordings").mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("not a recording")
    tier = TierFactory(name="short2", retention_days=1, access_mode="stream")
    desk = ResourceFactory(slug="desk-x", tier=tier, kind="vnc", upstream="127.0.0.1:5900")
    StreamSession.objects.create(user=UserFactory(username="erin2"), resource=desk, tier_name="short2",
                                 state="ended", ended_at=timezone.now() - timedelta(days=5),
                                 recording_path=str(precious))
    apply_retention_policy.apply().get()
    assert precious.exists()


def test_an_apps_own_retention_hook_runs_with_the_job_and_its_counts_are_added(monkeypatch):
    from portal.audit import retention

    monkeypatch.setattr(retention, "_HOOKS", dict(retention._HOOKS))
    seen = []

    def widgets(now):
        seen.append(now)
        return {"recordings": 2, "widgets": 1}

    retention.register_retention("test.widgets", widgets)

    assert apply_retention_policy.apply().get() == {"access_records": 0, "recordings": 2, "widgets": 1}
    assert len(seen) == 1


def test_the_proxy_and_the_desktop_register_their_own_retention_hooks():
    from portal.audit.retention import retention_hooks

    assert {"proxy.access_records", "desktop.recordings"} <= set(retention_hooks())
