"""IdPs entered in the Django admin as well as by environment: offered on the sign-in page,
signing in against the real OP; the secret never shown back; the environment wins a name clash."""

from __future__ import annotations

import pytest

from portal.sso import registry
from portal.sso.models import OidcProvider, SsoLink
from portal.sso.sealing import seal
from tests.fixtures.oidc import CLIENT_ID, CLIENT_SECRET
from tests.portal.sso.conftest import sso_sign_in
from tests.tiers.factories import client_for, person

pytestmark = pytest.mark.django_db

ADD = "/admin/sso/oidcprovider/add/"


@pytest.fixture
def root_admin():
    user = person("root", "admin")
    user.is_staff = user.is_superuser = True
    user.save()
    return client_for(user)


def fields(op, **overrides: str) -> dict[str, str]:
    return {"name": "corp", "label": "Corp (from the admin)", "enabled": "on", "issuer": op.issuer,
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "scopes": "openid email profile groups",
            "groups_claim": "groups", "groups": '{"engineering": ["employee", "eng"]}',
            "default_groups": "employee", "mfa_amr": "mfa otp hwk", "mfa_acr": "", **overrides}


def test_an_idp_added_in_the_admin_is_offered_at_sign_in_and_signs_a_person_in(
        root_admin, client, op, idp_browser, settings):
    settings.PORTAL_OIDC_PROVIDERS = ()

    response = root_admin.post(ADD, fields(op))

    assert response.status_code == 302, response.content.decode()[-2000:]
    row = OidcProvider.objects.get(name="corp")
    assert CLIENT_SECRET not in row.client_secret_sealed
    change = root_admin.get(f"/admin/sso/oidcprovider/{row.pk}/change/").content.decode()
    assert CLIENT_SECRET not in change and row.client_secret_sealed not in change
    sign_in_page = client.get("/accounts/login/").content.decode()
    assert "Sign in with Corp (from the admin)" in sign_in_page and "/sso/corp/login/" in sign_in_page

    landed = sso_sign_in(client, idp_browser, "nina")

    assert landed.status_code == 302 and landed["Location"] == "/"
    nina = SsoLink.objects.get(issuer=op.issuer, subject="nina").user
    assert set(nina.groups.values_list("name", flat=True)) == {"employee", "eng"}
    assert client.get("/").status_code == 200


def test_changing_an_idp_without_typing_the_secret_keeps_the_stored_one(root_admin, op, settings):
    settings.PORTAL_OIDC_PROVIDERS = ()
    row = OidcProvider.objects.create(name="corp", issuer=op.issuer, client_id=CLIENT_ID,
                                      client_secret_sealed=seal(CLIENT_SECRET))

    response = root_admin.post(f"/admin/sso/oidcprovider/{row.pk}/change/",
                               fields(op, client_secret="", label="Renamed"))

    assert response.status_code == 302
    assert registry.find_provider("corp").client_secret == CLIENT_SECRET
    assert registry.find_provider("corp").label == "Renamed"


def test_the_admin_refuses_an_idp_the_environment_would_refuse(root_admin, op, settings):
    response = root_admin.post(ADD, fields(op, issuer="http://idp.example.com"))

    assert response.status_code == 200
    assert "issuer must be an https:// URL" in response.content.decode()
    assert not OidcProvider.objects.exists()
    assert "client secret is required" in root_admin.post(ADD, fields(op, client_secret="")).content.decode()


def test_on_a_name_clash_the_environment_wins(client, op, settings):
    settings.PORTAL_OIDC_PROVIDERS = (op.provider(),)
    OidcProvider.objects.create(name="corp", label="Impostor", issuer="https://evil.example",
                                client_id="x", client_secret_sealed=seal("y"))
    OidcProvider.objects.create(name="partner", label="Partner SSO", issuer="https://partner.example",
                                client_id="p", client_secret_sealed=seal("q"))

    page = client.get("/accounts/login/").content.decode()

    assert "Sign in with Corp SSO" in page and "Impostor" not in page and "Sign in with Partner SSO" in page
    assert registry.find_provider("corp").issuer == op.issuer
    assert [p.name for p in registry.configured_providers()] == ["corp", "partner"]


def test_a_disabled_idp_is_not_offered_and_its_sign_in_is_not_found(client, settings):
    settings.PORTAL_OIDC_PROVIDERS = ()
    OidcProvider.objects.create(name="old", label="Old SSO", issuer="https://old.example", client_id="x",
                                client_secret_sealed=seal("y"), enabled=False)

    assert "Old SSO" not in client.get("/accounts/login/").content.decode()
    assert client.get("/sso/old/login/").status_code == 404
