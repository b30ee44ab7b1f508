"""Write actions behind a step-up: the form post is held, then replayed exactly once (Datasette)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from portal.audit.models import AuditEvent
from tests.factories import totp_code

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def notes(web_resource, datasette_upstream):
    # Writes need a code for each action (freshness 0); reads need nothing extra.
    return web_resource("notes", datasette_upstream.url, mfa_write=0, mfa_read=None)


def _count(datasette_upstream) -> int:
    response = httpx.get(f"{datasette_upstream.url}notes.json",
                         params={"sql": "select count(*) as n from notes", "_shape": "array"})
    return response.json()[0]["n"]


def _form_post(client: httpx.Client, body: str) -> httpx.Response:
    page = client.get("/apps/notes/notes/add_note")
    assert page.status_code == 200, page.text[:300]
    token = re.search(r'name="csrftoken" value="([^"]+)"', page.text).group(1)
    return client.post("/apps/notes/notes/add_note", data={"body": body, "csrftoken": token},
                       headers={"Origin": str(client.base_url)})


def _step_up(client: httpx.Client, location: str, user, *, steps: int = 1) -> httpx.Response:
    page = client.get(location)
    assert page.status_code == 200
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    query = parse_qs(urlsplit(location).query)
    form = {"otp_token": totp_code(user.totp, offset_steps=steps), "next": query["next"][0],
            "csrfmiddlewaretoken": csrf, "challenge": query.get("challenge", [""])[0]}
    return client.post(location, data=form, headers={"Referer": f"{client.base_url}{location}"})


def test_a_form_post_survives_the_step_up_and_lands_exactly_once(notes, browser_for, worker,
                                                                 datasette_upstream):
    client = browser_for(worker)
    before = _count(datasette_upstream)
    held = _form_post(client, "Quarterly numbers are in")
    assert held.status_code == 303
    assert held.headers["location"].startswith("/accounts/step-up/?next=%2Fapps%2Fnotes%2F.portal%2Freplay%2F")
    assert _count(datasette_upstream) == before, "nothing may reach the app before the step-up"

    stepped = _step_up(client, held.headers["location"], worker)
    assert stepped.status_code == 302, stepped.text[:500]
    replay_url = stepped.headers["location"]
    assert replay_url.startswith("/apps/notes/.portal/replay/")

    landed = client.get(replay_url)
    assert landed.status_code == 302  # Datasette's own redirect after a write, into the prefix
    assert landed.headers["location"].startswith("/apps/notes/")
    assert _count(datasette_upstream) == before + 1

    again = client.get(replay_url)
    assert again.status_code == 410
    assert "already sent" in again.text
    assert _count(datasette_upstream) == before + 1
    assert AuditEvent.objects.filter(action="decision", outcome="step_up", resource="notes").exists()
    assert AuditEvent.objects.filter(action="proxy.replay", resource="notes").count() == 1


def test_a_held_post_cannot_be_replayed_by_someone_else(notes, browser_for, worker, datasette_upstream):
    from tests.factories import UserFactory, enrol_totp

    client = browser_for(worker)
    held = _form_post(client, "mine")
    replay = parse_qs(urlsplit(held.headers["location"]).query)["next"][0]
    other = UserFactory(username="oscar", role="employee")
    other.totp = enrol_totp(other)
    before = _count(datasette_upstream)
    assert browser_for(other).get(replay).status_code == 410
    assert _count(datasette_upstream) == before


def test_a_form_too_large_to_hold_gets_a_clear_page(notes, browser_for, worker, settings,
                                                    datasette_upstream):
    settings.PORTAL_PROXY_HOLD_MAX_BYTES = 1024
    before = _count(datasette_upstream)
    response = _form_post(browser_for(worker), "x" * 5000)
    assert response.status_code == 413
    assert "was too large" in response.text and "not sent" in response.text
    assert "/accounts/step-up/?next=%2Fapps%2Fnotes%2F" in response.text
    assert _count(datasette_upstream) == before


def test_reads_pass_without_a_step_up(notes, browser_for, worker):
    response = browser_for(worker).get("/apps/notes/notes/notes")
    assert response.status_code == 200
    assert "Seed note 1" in response.text
    assert 'href="/apps/notes/' in response.text


def test_the_rate_limit_answers_429_with_retry_after_and_is_audited(web_resource, echo_upstream,
                                                                     browser_for, worker):
    web_resource("echo", echo_upstream.url, rate_limit_per_minute=3)
    client = browser_for(worker)
    statuses = [client.get("/apps/echo/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.get("/apps/echo/")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 20
    assert AuditEvent.objects.filter(action="proxy.rate_limited", actor="wendy", resource="echo").exists()


def test_a_locked_user_is_denied_on_the_next_request(web_resource, echo_upstream, browser_for, worker):
    web_resource("echo", echo_upstream.url)
    client = browser_for(worker)
    assert client.get("/apps/echo/").status_code == 200
    worker.is_active = False
    worker.save(update_fields=["is_active"])
    denied = client.get("/apps/echo/")
    assert denied.status_code == 403
    assert "Your account is locked" in denied.text
    assert AuditEvent.objects.filter(action="decision", outcome="deny", actor="wendy").exists()


def test_a_one_time_grant_confirmed_for_one_held_post_does_not_release_another(
        notes, browser_for, worker, datasette_upstream):
    """Two posts of the same form wait for a step-up each; confirming the first must not let
    the second (same method and path, another body) ride on its one-time grant."""
    client = browser_for(worker)
    before = _count(datasette_upstream)
    first = _form_post(client, "Pay Alice 10")
    second = _form_post(client, "Pay Mallory 99999")
    assert first.status_code == second.status_code == 303
    second_replay = parse_qs(urlsplit(second.headers["location"]).query)["next"][0]

    stepped = _step_up(client, first.headers["location"], worker)
    assert stepped.status_code == 302, stepped.text[:500]

    refused = client.get(second_replay)
    assert refused.status_code == 302
    assert refused.headers["location"].startswith("/accounts/step-up/"), "it needs its own confirmation"
    assert _count(datasette_upstream) == before, "the second post never reached the app"

    landed = client.get(stepped.headers["location"])
    assert landed.status_code == 302 and landed.headers["location"].startswith("/apps/notes/")
    assert _count(datasette_upstream) == before + 1
