"""Grant expiry: a just-in-time grant that ran out is written to the trail once (tiers.tasks)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.audit.models import AuditEvent, GrantExpiryNotice
from tests.factories import UserFactory
from tiers.models import AccessGrant, Resource, Tier
from tiers.tasks import expire_due_grants, expire_grants


@pytest.fixture
def grants(db):
    tier = Tier.objects.create(name="critical", rank=3, access_mode="stream", approval_required=True)
    resource = Resource.objects.create(slug="vault", name="Vault", kind="ssh", upstream="10.0.0.9:22", tier=tier)
    user = UserFactory(username="erin")
    now = timezone.now()

    def grant(**times):
        return AccessGrant.objects.create(user=user, resource=resource, granted_by="ada", **times)

    return {
        "ran_out": grant(starts_at=now - timedelta(hours=2), expires_at=now - timedelta(minutes=5)),
        "running": grant(expires_at=now + timedelta(hours=1)),
        "revoked_early": grant(expires_at=now - timedelta(minutes=5), revoked_at=now - timedelta(hours=1)),
    }


def test_expired_grants_are_written_to_the_trail_once(grants):
    assert expire_grants.apply().get() == 1
    assert expire_due_grants() == 0
    event = AuditEvent.objects.get(action="access.expired")
    assert (event.actor, event.resource, event.outcome) == ("erin", "vault", "expired")
    assert event.detail["grant"] == grants["ran_out"].pk and event.detail["tier"] == "critical"
    assert GrantExpiryNotice.objects.get(grant_id=grants["ran_out"].pk).event_seq == event.seq


def test_a_grant_is_noticed_when_its_time_comes(grants):
    expire_due_grants()
    AccessGrant.objects.filter(pk=grants["running"].pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert expire_due_grants() == 1
    assert AuditEvent.objects.filter(action="access.expired").count() == 2
