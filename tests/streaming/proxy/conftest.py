"""Fixtures for the proxy: real upstreams, the real portal over HTTPS, catalogued resources."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from django.contrib.auth.models import Group

from streaming.proxy.ratelimit import limiter
from streaming.proxy.records import access_log
from tests.conftest import https_client, sign_in
from tests.factories import UserFactory, enrol_totp
from tests.upstreams.launch import Server, portal_in_thread, run_datasette, run_echo
from tiers.models import ActionRule, Resource, Tier


@pytest.fixture(scope="session")
def echo_upstream() -> Iterator[Server]:
    with run_echo() as server:
        yield server


@pytest.fixture(scope="session")
def datasette_upstream(tmp_path_factory) -> Iterator[Server]:
    with run_datasette(tmp_path_factory.mktemp("datasette"), "/apps/notes/") as server:
        yield server


@pytest.fixture(scope="session")
def datasette_root_upstream(tmp_path_factory) -> Iterator[Server]:
    """Datasette at the root of its origin, as an app is served in host mode."""
    with run_datasette(tmp_path_factory.mktemp("datasette-root"), "/") as server:
        yield server


@pytest.fixture(scope="session")
def portal_url(django_db_setup, tmp_path_factory) -> Iterator[str]:
    with portal_in_thread(tmp_path_factory.mktemp("tls")) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh_buckets_and_keys(settings, tmp_path_factory):
    settings.PORTAL_ASSERTION_KEYS_DIR = tmp_path_factory.getbasetemp() / "assertion_keys"
    limiter().reset()
    yield
    limiter().reset()


def make_web_resource(slug: str, upstream: str, *, groups: tuple[str, ...] = ("employee",),
                      rules: tuple[tuple[str, str, str], ...] = (), **tier: object) -> Resource:
    """A catalogued web app on a tier of its own (``tier`` holds the Tier's fields)."""
    tier_row, _ = Tier.objects.update_or_create(name=f"t-{slug}", defaults={"access_mode": "proxy", **tier})
    resource, _ = Resource.objects.update_or_create(
        slug=slug, defaults={"name": slug.title(), "kind": "web", "upstream": upstream, "tier": tier_row})
    resource.allowed_groups.set([Group.objects.get_or_create(name=g)[0] for g in groups])
    resource.action_rules.all().delete()
    for order, (methods, path, action_class) in enumerate(rules):
        ActionRule.objects.create(resource=resource, order=order, methods=methods, path=path,
                                  action_class=action_class)
    return resource


@pytest.fixture
def web_resource() -> Callable[..., Resource]:
    return make_web_resource


def session_cookie_for(user) -> str:
    """Sign ``user`` in through the real forms; return the session cookie's value."""
    client = https_client()
    sign_in(client, user)
    return client.cookies["sessionid"].value


@pytest.fixture
def worker(transactional_db):
    user = UserFactory(username="wendy", role="employee")
    user.totp = enrol_totp(user)
    return user


@pytest.fixture
def browser_for(portal_url) -> Iterator[Callable[..., httpx.Client]]:
    """httpx clients talking to the live portal as a signed-in user (or anonymous)."""
    clients: list[httpx.Client] = []

    def make(user=None, **cookies: str) -> httpx.Client:
        client = httpx.Client(base_url=portal_url, verify=False, timeout=30)
        if user is not None:
            cookies["sessionid"] = session_cookie_for(user)
        for name, value in cookies.items():
            client.cookies.set(name, value, domain="127.0.0.1")
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    access_log.flush()
