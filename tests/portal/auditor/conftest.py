"""People of the audit tests: an auditor signed in through the real forms, and others by role."""

from __future__ import annotations

import pytest

from tests.conftest import sign_in
from tests.factories import UserFactory, enrol_totp


def person(role: str, username: str):
    """A user of ``role`` with a TOTP device (ready for ``sign_in``)."""
    user = UserFactory(username=username, role=role)
    user.totp = enrol_totp(user)
    return user


@pytest.fixture
def auditor(db):
    return person("auditor", "audrey")


@pytest.fixture
def auditor_client(client, auditor):
    sign_in(client, auditor)
    return client
