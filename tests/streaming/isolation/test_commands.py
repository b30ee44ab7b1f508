"""``manage.py isolated_desktop``: an admin turns a desktop resource into a per-session desktop."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from portal.audit.models import AuditEvent
from streaming.isolation.launches import is_slot_backed
from streaming.isolation.models import IsolatedDesktop
from tests.tiers.factories import ResourceFactory

pytestmark = pytest.mark.django_db


def test_a_desktop_resource_runs_an_image_per_session_and_back(capsys):
    resource = ResourceFactory(slug="ops", kind="vnc", upstream="127.0.0.1:5900")
    call_command("isolated_desktop", "ops", "terminal")
    assert IsolatedDesktop.objects.get(resource=resource).image == "terminal"
    assert is_slot_backed(resource)
    call_command("isolated_desktop", "ops", "none")
    assert not is_slot_backed(resource)
    assert AuditEvent.objects.filter(action="isolation.desktop_image", resource="ops").count() == 2


def test_an_unknown_image_or_a_web_app_is_a_clear_error():
    ResourceFactory(slug="ops", kind="vnc", upstream="127.0.0.1:5900")
    ResourceFactory(slug="wiki", kind="web", upstream="http://127.0.0.1:8000/")
    with pytest.raises(CommandError, match="no image 'doom'; known: terminal"):
        call_command("isolated_desktop", "ops", "doom")
    with pytest.raises(CommandError, match="isolated by their tier"):
        call_command("isolated_desktop", "wiki", "terminal")
