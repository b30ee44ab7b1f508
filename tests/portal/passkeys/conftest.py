"""Passkey helpers: ceremonies through the portal's real endpoints with a software authenticator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from tests.portal.passkeys.authenticator import SoftAuthenticator


def post_json(client: Client, url: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(url, json.dumps(body or {}), content_type="application/json")


def enrol(client: Client, authenticator: SoftAuthenticator, name: str = "Laptop") -> Any:
    """Add a passkey from Security, as the page's script does; returns the finishing response."""
    options = post_json(client, "/accounts/mfa/passkeys/new/options/")
    assert options.status_code == 200, options.content[:300]
    return post_json(client, "/accounts/mfa/passkeys/new/",
                     {"name": name, "credential": authenticator.create(options.json())})


def passkey_sign_in(client: Client, authenticator: SoftAuthenticator, next_url: str = "") -> Any:
    """Passwordless: options for any discoverable passkey, then the assertion."""
    options = post_json(client, "/accounts/login/passkey/options/")
    assert options.status_code == 200
    return post_json(client, "/accounts/login/passkey/",
                     {"credential": authenticator.get(options.json()), "next": next_url})


@pytest.fixture
def authenticator() -> SoftAuthenticator:
    return SoftAuthenticator()
