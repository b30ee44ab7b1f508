"""Who enters which area: the same rule for Manage, Live sessions and Audit (decision 0022).

A person may know an area exists; without its role they get 403 and a sentence naming the
role, and the refusal is audited. Inside an area, what they may not see answers 404.
"""

from __future__ import annotations

import pytest

from portal.audit.models import AuditEvent
from tests.tiers.factories import ResourceFactory, client_for, person

pytestmark = pytest.mark.django_db

MANAGE = ["/manage/", "/manage/resources/", "/manage/tiers/", "/manage/simulator/", "/manage/requests/",
          "/manage/changes/", "/manage/people/"]
SESSIONS = ["/desktop/-/live/"]
AUDIT = ["/audit/", "/audit/events/", "/audit/sessions/"]

# role -> (pages answered 200, pages answered 403 with this sentence)
MATRIX = {
    "employee": ([], {**dict.fromkeys(MANAGE + SESSIONS, b"This area is for admins"),
                      **dict.fromkeys(AUDIT, b"The audit workspace is for auditors")}),
    "admin": (MANAGE + SESSIONS, dict.fromkeys(AUDIT, b"The audit workspace is for auditors")),
    "auditor": (AUDIT, dict.fromkeys(MANAGE + SESSIONS, b"This area is for admins")),
}


@pytest.mark.parametrize("role", sorted(MATRIX))
def test_each_role_enters_its_areas_and_is_told_403_with_a_sentence_at_the_others(role):
    ResourceFactory(slug="wiki")
    client = client_for(person(f"someone-{role}", role))
    allowed, refused = MATRIX[role]
    for path in allowed:
        assert client.get(path).status_code == 200, path
    for path, sentence in refused.items():
        response = client.get(path)
        assert response.status_code == 403, path
        assert sentence in response.content, path
        assert b'aria-label="Main"' in response.content, "the refusal keeps the navigation"


def test_a_refused_post_changes_nothing_and_the_refusal_is_audited():
    ResourceFactory(slug="wiki", tier__name="low")
    client = client_for(person("erin"))
    response = client.post("/manage/resources/", {"resources": ["wiki"], "tier": "high"})
    assert response.status_code == 403
    event = AuditEvent.objects.filter(action="manage.forbidden").latest("seq")
    assert (event.actor, event.outcome, event.detail["path"]) == ("erin", "deny", "/manage/resources/")
    assert "accounts.manage_catalog" in event.reasons[0]["values"]["permission"]


def test_someone_not_signed_in_is_sent_to_sign_in_not_told_about_roles(client):
    for path in MANAGE[:1] + SESSIONS + AUDIT[:1]:
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), path


def test_inside_an_area_what_does_not_exist_answers_404_to_its_role():
    client = client_for(person("ada", "admin"))
    assert client.get("/manage/resources/nope/").status_code == 404
    assert client_for(person("audrey", "auditor")).get("/audit/events/999999/").status_code == 404
