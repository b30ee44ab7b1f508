"""PORTAL_OIDC_PROVIDERS: a wrong IdP list stops the portal at start with a message that says why."""

from __future__ import annotations

import json

import pytest

from portal.config import ConfigError, load_config

BASE = {"PORTAL_SECRET_KEY": "k" * 20 + "abcdefghijklmnopqrstuvwxyz0123456789"}


def config_with(*providers: dict, **env: str):
    return load_config({**BASE, "PORTAL_OIDC_PROVIDERS": json.dumps(list(providers)), **env})


def idp(**changes: object) -> dict:
    return {"name": "corp", "issuer": "https://login.corp.example/", "client_id": "portal",
            "client_secret": "s3cret", **changes}


def test_an_idp_is_read_with_its_secret_from_another_variable_or_a_file(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")

    config = config_with(idp(client_secret="env://CORP_SECRET", groups={"eng": ["employee", "eng"]}),
                         idp(name="lab", client_secret=f"file://{secret_file}"), CORP_SECRET="from-env")

    corp, lab = config.oidc_providers
    assert corp.issuer == "https://login.corp.example" and corp.client_secret == "from-env"
    assert corp.groups == {"eng": ("employee", "eng")} and corp.managed_groups == {"employee", "eng"}
    assert lab.client_secret == "from-a-file"
    assert "s3cret" not in repr(corp) and "from-env" not in repr(corp), "secrets stay out of logs"


def test_no_variable_means_no_idp():
    assert load_config(BASE).oidc_providers == ()


@pytest.mark.parametrize(("provider", "named"), [
    (idp(issuer="http://login.corp.example"), "issuer must be an https:// URL"),
    (idp(client_secret=""), "client_secret is required"),
    (idp(groupz={}), "unknown keys ['groupz']"),
    (idp(name="Corp SSO"), "name must be lower-case"),
    (idp(scopes=["email"]), "scopes must include openid"),
    (idp(link_by_email="yes"), "link_by_email must be true or false"),
])
def test_a_wrong_idp_stops_the_portal_naming_what_is_wrong(provider, named):
    with pytest.raises(ConfigError) as stopped:
        config_with(provider)
    assert named in str(stopped.value)


def test_two_idps_with_one_name_stop_the_portal():
    with pytest.raises(ConfigError, match="unique"):
        config_with(idp(), idp())


def test_json_that_is_not_json_stops_the_portal():
    with pytest.raises(ConfigError, match="PORTAL_OIDC_PROVIDERS"):
        load_config({**BASE, "PORTAL_OIDC_PROVIDERS": "[{"})


def test_in_ci_a_missing_node_fails_the_sso_tests_instead_of_skipping_them(monkeypatch):
    from tests.fixtures import oidc

    monkeypatch.setattr("tests.conftest.IN_CI", True)
    monkeypatch.setattr(oidc.shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="CI must not skip"):
        oidc.require_op()
